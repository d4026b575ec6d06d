//! Replica configuration, validated as a whole.

use crate::error::ConfigError;
use crate::log::entry;
use crate::types::{NodeId, MAX_NODES};

/// Default ring size: 64 MiB holds thousands of maximum-size entries and
/// hundreds of thousands of small ones, so recycling is rare and cheap.
pub const DEFAULT_RING_CAPACITY: u64 = 64 << 20;
/// Default largest payload: 1 MiB, the same bound as the original Mu.
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;

/// How a replica starts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StartMode {
    /// The whole group starts together with empty logs: this replica may vote
    /// and lead at once.
    Bootstrap,
    /// This replica was a member before and lost its memory (a restart). It
    /// accepts entries from the current leader but neither votes in a prepare
    /// nor leads until a leader has brought it up to date, because a replica
    /// that forgot what it accepted could otherwise let a decided value be
    /// overwritten.
    Rejoin,
}

/// Pull-score failure detector settings (mu-reference §4.1). A peer's score
/// rises by `score_up` when its heartbeat moved since the previous read and
/// falls by one when it did not; it is declared dead at or below
/// `fail_threshold` and alive again at or above `recover_threshold`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DetectorConfig {
    /// Upper bound of the score.
    pub max_score: u8,
    /// At or below this a live peer becomes dead.
    pub fail_threshold: u8,
    /// At or above this a dead peer becomes alive (hysteresis).
    pub recover_threshold: u8,
    /// Score gained per observed heartbeat change.
    pub score_up: u8,
    /// Score lost when a read of the peer fails outright.
    pub score_down_on_error: u8,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        // The paper's settings: scores 0..15, failure at 2, recovery at 6.
        DetectorConfig {
            max_score: 15,
            fail_threshold: 2,
            recover_threshold: 6,
            score_up: 2,
            score_down_on_error: 4,
        }
    }
}

/// Test-only protocol mutations that the simulator must catch.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PlantedBug {
    /// A follower grants log access without revoking the previous holder.
    GrantWithoutRevoke,
    /// The leader commits an entry as soon as one follower completed,
    /// whatever the group size.
    CommitBeforeMajority,
    /// The prepare adopts the lowest accepted proposal instead of the highest.
    PrepareIgnoresHigherProposal,
    /// Ring recycling considers only the leader's own progress.
    RecycleUnappliedSpace,
}

/// Configuration of one replica. Every field is documented with its unit.
#[derive(Clone, Debug)]
pub struct Config {
    /// This replica's id, `0..group_size`.
    pub id: NodeId,
    /// Number of replicas in the group (1 to 7).
    pub group_size: u8,
    /// Bytes of the log ring; a multiple of 64, at least four maximum-size
    /// entries.
    pub ring_capacity: u64,
    /// Largest accepted payload in bytes.
    pub max_payload: u32,
    /// How the replica starts (see [`StartMode`]).
    pub start: StartMode,
    /// Distinguishes this run of the replica from earlier ones; part of every
    /// [`crate::EntryId`] it creates. Use a random or time-derived value.
    pub incarnation: u16,
    /// Interval between heartbeats and peer reads, in nanoseconds.
    pub heartbeat_interval_ns: u64,
    /// Failure detector settings.
    pub detector: DetectorConfig,
    /// How long a candidate waits for permission grants before asking again.
    pub permission_timeout_ns: u64,
    /// How long the prepare phase may take before the attempt is abandoned.
    pub prepare_timeout_ns: u64,
    /// Idle time after which the leader writes the commit index to followers
    /// so the last entry becomes visible without a next one.
    pub commit_flush_delay_ns: u64,
    /// Idle time after which an applier re-reads its log from the apply
    /// cursor (a new leader may have rewritten entries it had parsed).
    pub rescan_idle_ns: u64,
    /// Bound on operations in flight to one peer.
    pub max_inflight_per_peer: u16,
    /// Planted bug to run with (simulator tests only).
    #[cfg(feature = "planted-bugs")]
    pub planted: Option<PlantedBug>,
}

impl Config {
    /// A configuration with production defaults for replica `id` of `group_size`.
    pub fn new(id: NodeId, group_size: u8) -> Self {
        Config {
            id,
            group_size,
            ring_capacity: DEFAULT_RING_CAPACITY,
            max_payload: DEFAULT_MAX_PAYLOAD,
            start: StartMode::Bootstrap,
            incarnation: 0,
            // 20 µs between heartbeats: with the default detector a silent
            // leader is declared dead after about 13 reads, well under 1 ms.
            heartbeat_interval_ns: 20_000,
            detector: DetectorConfig::default(),
            permission_timeout_ns: 2_000_000,
            prepare_timeout_ns: 50_000_000,
            commit_flush_delay_ns: 20_000,
            rescan_idle_ns: 200_000,
            max_inflight_per_peer: 256,
            #[cfg(feature = "planted-bugs")]
            planted: None,
        }
    }

    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let n = usize::from(self.group_size);
        if n == 0 || n >= MAX_NODES {
            problems.push(format!(
                "group_size is {n}; it must be 1 to {}",
                MAX_NODES - 1
            ));
        }
        if self.id.idx() >= n {
            problems.push(format!("id {} is outside the group (0..{n})", self.id.0));
        }
        if !self.ring_capacity.is_multiple_of(64) {
            problems.push(format!(
                "ring_capacity {} is not a multiple of 64",
                self.ring_capacity
            ));
        }
        let largest = entry::total_len(self.max_payload);
        if self.ring_capacity < 4 * largest {
            problems.push(format!(
                "ring_capacity {} must hold at least four maximum-size entries ({} bytes each)",
                self.ring_capacity, largest
            ));
        }
        if self.max_payload == 0 || self.max_payload > entry::MAX_PAYLOAD_LIMIT {
            problems.push(format!(
                "max_payload {} must be 1..={}",
                self.max_payload,
                entry::MAX_PAYLOAD_LIMIT
            ));
        }
        if self.heartbeat_interval_ns == 0 {
            problems.push("heartbeat_interval_ns must be positive".into());
        }
        let d = self.detector;
        if !(d.fail_threshold < d.recover_threshold && d.recover_threshold <= d.max_score) {
            problems.push(format!(
                "detector thresholds must satisfy fail ({}) < recover ({}) <= max ({})",
                d.fail_threshold, d.recover_threshold, d.max_score
            ));
        }
        if d.score_up == 0 {
            problems.push("detector score_up must be positive".into());
        }
        if self.max_inflight_per_peer < 4 {
            problems.push("max_inflight_per_peer must be at least 4".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    pub(crate) fn n(&self) -> usize {
        usize::from(self.group_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        for n in 1..=7u8 {
            Config::new(NodeId(n - 1), n).validate().unwrap();
        }
    }

    #[test]
    fn all_problems_are_reported_together() {
        let mut c = Config::new(NodeId(9), 8);
        c.ring_capacity = 1000;
        c.heartbeat_interval_ns = 0;
        let err = c.validate().unwrap_err();
        assert!(err.problems.len() >= 4, "{err}");
        assert!(err.to_string().contains("group_size"));
    }
}
