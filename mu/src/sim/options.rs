//! Every knob of a simulator run, derived from its seed.

use crate::fabric::sim::LinkParams;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt;

/// A planted bug selected for a run (only with feature `planted-bugs`).
#[cfg(feature = "planted-bugs")]
pub use crate::config::PlantedBug;

/// The knobs of one run. Print it to see what a seed does.
#[derive(Clone, Debug)]
pub struct Options {
    /// The seed everything comes from.
    pub seed: u64,
    /// Group size.
    pub nodes: usize,
    /// Ring bytes per replica (small, so recycling happens often).
    pub ring_capacity: u64,
    /// Largest payload.
    pub max_payload: u32,
    /// Link timing and tearing.
    pub link: LinkParams,
    /// Closed-loop clients proposing concurrently.
    pub clients: usize,
    /// Expected crashes per simulated millisecond during the safety phase.
    pub crash_per_ms: f64,
    /// Expected pauses per simulated millisecond.
    pub pause_per_ms: f64,
    /// Expected partitions per simulated millisecond.
    pub partition_per_ms: f64,
    /// Length of the safety phase (faults on).
    pub safety_ms: u64,
    /// Budget of the liveness phase (faults off).
    pub liveness_ms: u64,
    /// Once the faults stop, a fresh proposal must commit within this many
    /// nanoseconds (the liveness bound: failure detection, permissions,
    /// prepare and a commit, with a wide margin).
    pub recovery_bound_ns: u64,
    /// Simulation step.
    pub tick_ns: u64,
    /// Heartbeat interval of the replicas.
    pub heartbeat_ns: u64,
    /// How long a candidate or leader waits for a permission ack before
    /// asking again. Half the seeds use the production ratio to the
    /// heartbeat (2 intervals, as `Config::new`), where a link spike or a
    /// stalled peer easily outlasts it.
    pub permission_timeout_ns: u64,
    /// How long a prepare may take (production ratio: 50 heartbeats; else
    /// 200).
    pub prepare_timeout_ns: u64,
    /// Expected scheduler stalls per node per simulated millisecond during
    /// the safety phase: every node, leader or not, stops for a few
    /// heartbeat intervals at random, as processes on a busy host do. Their
    /// failure detectors misfire and leadership flaps.
    pub stall_per_ms: f64,
    /// Longest such stall, in nanoseconds.
    pub stall_max_ns: u64,
    /// The planted bug, if any.
    #[cfg(feature = "planted-bugs")]
    pub planted: Option<PlantedBug>,
}

impl Options {
    /// Derives every knob from `seed`; `nodes` overrides the group size.
    pub fn from_seed(seed: u64, nodes: Option<usize>) -> Options {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x6d75_5f73_696d);
        let drawn = rng.gen_range(3..=5);
        let nodes = nodes.unwrap_or(drawn);
        let max_payload = [64u32, 256, 1024, 2048][rng.gen_range(0..4)];
        let ring_capacity =
            (crate::log::entry::total_len(max_payload) * rng.gen_range(8..64)).next_multiple_of(64);
        let min_delay = rng.gen_range(200..1_000);
        Options {
            seed,
            nodes,
            ring_capacity,
            max_payload,
            link: LinkParams {
                min_delay_ns: min_delay,
                max_delay_ns: min_delay + rng.gen_range(0..3_000),
                spike_prob: [0.0, 0.001, 0.01, 0.05][rng.gen_range(0..4)],
                spike_ns: rng.gen_range(5_000..100_000),
                tear_prob: rng.gen_range(0.0..0.6),
                fail_ns: 20_000,
            },
            clients: rng.gen_range(1..=4),
            crash_per_ms: rng.gen_range(0.0..0.6),
            pause_per_ms: rng.gen_range(0.0..0.8),
            partition_per_ms: rng.gen_range(0.0..0.4),
            safety_ms: rng.gen_range(4..12),
            liveness_ms: 60,
            recovery_bound_ns: 3_000_000,
            tick_ns: 2_000,
            heartbeat_ns: 10_000,
            permission_timeout_ns: 200_000,
            prepare_timeout_ns: 2_000_000,
            stall_per_ms: 0.0,
            stall_max_ns: 0,
            #[cfg(feature = "planted-bugs")]
            planted: None,
        }
        .with_timing(&mut rng)
    }

    /// The same run with the production timing ratio and stall storms on
    /// every node (`mu-sim --flapping`): failure detectors misfire and
    /// leadership flaps throughout the safety phase.
    pub fn flapping(mut self) -> Options {
        self.permission_timeout_ns = 2 * self.heartbeat_ns;
        self.prepare_timeout_ns = 50 * self.heartbeat_ns;
        self.stall_per_ms = 4.0;
        self.stall_max_ns = 30 * self.heartbeat_ns;
        self
    }

    /// Draws the timing profile and the stall storms (after every other
    /// knob, so those keep their values for a seed).
    fn with_timing(mut self, rng: &mut SmallRng) -> Options {
        let hb = self.heartbeat_ns;
        if rng.gen_bool(0.5) {
            // `Config::new`: permission timeout 2 heartbeats, prepare 50.
            self.permission_timeout_ns = 2 * hb;
            self.prepare_timeout_ns = 50 * hb;
        }
        if rng.gen_bool(0.5) {
            self.stall_per_ms = rng.gen_range(0.5..8.0);
            self.stall_max_ns = hb * rng.gen_range(2..40);
        }
        self
    }
}

impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed={} nodes={} ring={}B max_payload={}B delay={}..{}ns spikes={}@{}ns tear={:.2} \
             clients={} crash/ms={:.2} pause/ms={:.2} partition/ms={:.2} stall/ms={:.2}<={}ns \
             permission_timeout={}ns prepare_timeout={}ns safety={}ms",
            self.seed,
            self.nodes,
            self.ring_capacity,
            self.max_payload,
            self.link.min_delay_ns,
            self.link.max_delay_ns,
            self.link.spike_prob,
            self.link.spike_ns,
            self.link.tear_prob,
            self.clients,
            self.crash_per_ms,
            self.pause_per_ms,
            self.partition_per_ms,
            self.stall_per_ms,
            self.stall_max_ns,
            self.permission_timeout_ns,
            self.prepare_timeout_ns,
            self.safety_ms
        )?;
        #[cfg(feature = "planted-bugs")]
        if let Some(b) = self.planted {
            write!(f, " planted={b:?}")?;
        }
        Ok(())
    }
}
