//! The Prometheus metrics a sidecar exports on `/metrics`.
//!
//! Labels take a handful of fixed values each (command class, outcome,
//! role, error kind); no key, value or client address ever becomes a label.

use crate::dump::Samples;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Every metric, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Client requests by command class and outcome.
    pub requests: IntCounterVec,
    /// Time from a write's arrival to its reply being ready (replicated and
    /// applied locally), seconds.
    pub replication_latency: Histogram,
    /// The same figures as `replication_latency`, each in ns, kept for the
    /// SIGUSR1 dump (see [`crate::dump`]).
    pub latency_samples: std::sync::Arc<Samples>,
    /// Replicated writes by outcome.
    pub write_outcomes: IntCounterVec,
    /// Log index up to which entries are known committed.
    pub commit_index: IntGauge,
    /// Last log index applied to the local backend.
    pub applied_index: IntGauge,
    /// Committed entries not yet applied to the local backend.
    pub apply_lag: IntGauge,
    /// 1 for the role this node plays now, 0 for the others.
    pub role: IntGaugeVec,
    /// The leader's node id as this node sees it (0: none).
    pub leader: IntGauge,
    /// Times the leader this node sees changed.
    pub leader_changes: IntCounter,
    /// Time without a known leader around each leader change, seconds.
    pub failover: Histogram,
    /// Times this node granted its log to a new leader.
    pub permission_switches: IntGauge,
    /// Failed fabric operations of this node's replica.
    pub fabric_errors: IntGauge,
    /// Backend errors by kind (connect, io, protocol, reply).
    pub backend_errors: IntCounterVec,
    /// 1 while the local backend is connected and in step with the log.
    pub backend_up: IntGauge,
    /// 1 while this node serves clients (see `/readyz`).
    pub ready: IntGauge,
    /// Writes this node forwarded to the leader, by outcome.
    pub forwarded: IntCounterVec,
    /// Writes other nodes forwarded to this one, by outcome.
    pub forward_served: IntCounterVec,
    /// Open client connections.
    pub connections: IntGauge,
    /// Client connections accepted since start.
    pub connections_total: IntCounter,
    /// Replicated entries whose backend reply was an error (the same on
    /// every replica for a deterministic command).
    pub apply_error_replies: IntCounter,
    /// Other group members this node's failure detector considers alive.
    pub peers_alive: IntGauge,
    /// Log ranges (per peer) whose reply digest on this node differed from
    /// a peer's.
    pub divergence: IntCounter,
    /// State transfers by side (donor, receiver) and outcome.
    pub transfers: IntCounterVec,
    /// Times this node found it needed a state transfer, by reason.
    pub transfers_needed: IntCounterVec,
    /// Records (keys, deletes) moved by state transfers, by side.
    pub transfer_records: IntCounterVec,
    /// Bytes moved by state transfers, by side.
    pub transfer_bytes: IntCounterVec,
    /// 1 while this node loads a copy of a peer's data.
    pub transferring: IntGauge,
    /// Duration of the last completed transfer into this node, s.
    pub transfer_seconds: Gauge,
    /// 1 when this node's data were found to differ from the majority's.
    pub diverged: IntGauge,
    /// Log ranges whose digests were compared with at least one peer.
    pub digest_ranges_checked: IntCounter,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    /// Creates and registers every metric; `id` becomes a constant label.
    pub fn new(id: u8) -> Metrics {
        let registry = Registry::new_custom(
            Some("mu_sidecar".into()),
            Some([("node".to_string(), id.to_string())].into()),
        )
        .expect("valid registry");
        let r = &registry;
        // 5 µs .. 2.6 s, doubling.
        let latency = prometheus::exponential_buckets(5e-6, 2.0, 20).expect("valid buckets");
        let failover = prometheus::exponential_buckets(1e-4, 2.0, 16).expect("valid buckets");
        let role = IntGaugeVec::new(
            Opts::new(
                "role",
                "1 for the role this node plays now, 0 for the others",
            ),
            &["role"],
        )
        .expect("valid metric");
        r.register(Box::new(role.clone())).expect("unique metric");
        let m = Metrics {
            requests: counter_vec(
                r,
                "requests_total",
                "Client requests by command class (read, write, local, refused) and outcome",
                &["class", "outcome"],
            ),
            replication_latency: histogram(
                r,
                "replication_latency_seconds",
                "Time from a write's arrival to its reply: replicated, committed and applied locally",
                latency,
            ),
            latency_samples: std::sync::Arc::new(Samples::default()),
            write_outcomes: counter_vec(
                r,
                "write_outcomes_total",
                "Replicated writes by outcome (ok, tryagain, unknown, refused, backend)",
                &["outcome"],
            ),
            commit_index: gauge(r, "commit_index", "Log index up to which entries are committed"),
            applied_index: gauge(
                r,
                "applied_index",
                "Last log index applied to the local backend",
            ),
            apply_lag: gauge(
                r,
                "apply_lag_entries",
                "Committed entries not yet applied to the local backend",
            ),
            role,
            leader: gauge(r, "leader", "The leader's node id as this node sees it (0: none)"),
            leader_changes: counter(
                r,
                "leader_changes_total",
                "Times the leader this node sees changed",
            ),
            failover: histogram(
                r,
                "failover_seconds",
                "Time without a known leader around each leader change",
                failover,
            ),
            permission_switches: gauge(
                r,
                "permission_switches",
                "Times this node granted its log to a new leader (since start)",
            ),
            fabric_errors: gauge(
                r,
                "fabric_errors",
                "Failed fabric operations of this node's replica (since start)",
            ),
            backend_errors: counter_vec(
                r,
                "backend_errors_total",
                "Errors talking to the local backend, by kind (connect, io, protocol, lost)",
                &["kind"],
            ),
            backend_up: gauge(
                r,
                "backend_up",
                "1 while the local backend is connected and in step with the log",
            ),
            ready: gauge(r, "ready", "1 while this node serves clients (see /readyz)"),
            forwarded: counter_vec(
                r,
                "forwarded_writes_total",
                "Writes this node forwarded to the leader, by outcome",
                &["outcome"],
            ),
            forward_served: counter_vec(
                r,
                "forward_served_total",
                "Writes other nodes forwarded to this one, by outcome",
                &["outcome"],
            ),
            connections: gauge(r, "connections", "Open client connections"),
            connections_total: counter(
                r,
                "connections_total",
                "Client connections accepted since start",
            ),
            apply_error_replies: counter(
                r,
                "apply_error_replies_total",
                "Replicated entries whose backend reply was an error",
            ),
            peers_alive: gauge(
                r,
                "peers_alive",
                "Other group members this node's failure detector considers alive",
            ),
            divergence: counter(
                r,
                "divergence_total",
                "Log ranges (counted per peer) whose backend replies on this node differed \
                 from a peer's",
            ),
            transfers: counter_vec(
                r,
                "transfers_total",
                "State transfers by side (donor or receiver) and outcome",
                &["side", "outcome"],
            ),
            transfers_needed: counter_vec(
                r,
                "transfers_needed_total",
                "Times this node needed a state transfer, by reason (behind_ring: its replica \
                 fell behind the recycled log; backend_out_of_step: its backend restarted, \
                 held data at start or lost a batch in flight; diverged: its data differ from \
                 the group's and --on-divergence resync is set)",
                &["reason"],
            ),
            transfer_records: counter_vec(
                r,
                "transfer_records_total",
                "Keys and deletes moved by state transfers, by side",
                &["side"],
            ),
            transfer_bytes: counter_vec(
                r,
                "transfer_bytes_total",
                "Bytes moved by state transfers, by side",
                &["side"],
            ),
            transferring: gauge(
                r,
                "transferring",
                "1 while this node loads a copy of a peer's data (state transfer)",
            ),
            transfer_seconds: {
                let g = Gauge::new(
                    "transfer_last_seconds",
                    "Duration of the last completed state transfer into this node",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            diverged: gauge(
                r,
                "diverged",
                "1 when this node's backend answered a range of log entries differently from \
                 the majority of the group (its data differ); cleared by a state transfer",
            ),
            digest_ranges_checked: counter(
                r,
                "digest_ranges_checked_total",
                "Log ranges whose reply digests were compared with at least one peer's",
            ),
            registry,
        };
        for role in ["leader", "follower", "candidate"] {
            m.role.with_label_values(&[role]).set(0);
        }
        // Known label values start at 0, so the first error shows up in
        // `increase()` / `rate()` (a series that appears at 1 does not).
        for kind in ["connect", "io", "lost"] {
            m.backend_errors.with_label_values(&[kind]);
        }
        for outcome in ["ok", "tryagain", "unknown", "refused", "not_applied"] {
            m.write_outcomes.with_label_values(&[outcome]);
        }
        for outcome in ["sent", "unreachable"] {
            m.forwarded.with_label_values(&[outcome]);
        }
        for outcome in ["committed", "not_committed", "rejected"] {
            m.forward_served.with_label_values(&[outcome]);
        }
        for side in ["donor", "receiver"] {
            for outcome in ["ok", "failed"] {
                m.transfers.with_label_values(&[side, outcome]);
            }
            m.transfer_records.with_label_values(&[side]);
            m.transfer_bytes.with_label_values(&[side]);
        }
        for reason in ["behind_ring", "backend_out_of_step", "diverged"] {
            m.transfers_needed.with_label_values(&[reason]);
        }
        m
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of gathered metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Counts of one batch of requests by their label values, added to a
/// counter vector at once: one label lookup per distinct outcome in the
/// batch instead of one per request. The first few distinct outcomes are
/// kept inline, so a batch allocates nothing.
#[derive(Debug)]
pub struct Tally<const N: usize> {
    inline: [([&'static str; N], u64); INLINE],
    used: usize,
    /// Distinct outcomes beyond the inline ones (rare).
    more: Vec<([&'static str; N], u64)>,
}

/// Distinct outcomes a [`Tally`] keeps without allocating.
const INLINE: usize = 4;

impl<const N: usize> Default for Tally<N> {
    fn default() -> Self {
        Tally {
            inline: [([""; N], 0); INLINE],
            used: 0,
            more: Vec::new(),
        }
    }
}

impl<const N: usize> Tally<N> {
    /// Counts one request with these label values.
    pub fn add(&mut self, labels: [&'static str; N]) {
        let (inline, more) = (&mut self.inline[..self.used], &mut self.more);
        match inline
            .iter_mut()
            .chain(more.iter_mut())
            .find(|(l, _)| *l == labels)
        {
            Some((_, n)) => *n += 1,
            None if self.used < INLINE => {
                self.inline[self.used] = (labels, 1);
                self.used += 1;
            }
            None => self.more.push((labels, 1)),
        }
    }

    /// Adds the counts to `into`.
    pub fn add_to(self, into: &IntCounterVec) {
        for (labels, n) in self.inline[..self.used].iter().chain(&self.more) {
            into.with_label_values(labels).inc_by(*n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_adds_every_outcome_inline_or_beyond() {
        let vec = IntCounterVec::new(Opts::new("t", "t"), &["class", "outcome"]).unwrap();
        let mut tally = Tally::default();
        let outcomes = [
            "ok",
            "error",
            "tryagain",
            "unknown",
            "refused",
            "not_applied",
        ];
        for (i, o) in outcomes.iter().enumerate() {
            for _ in 0..=i {
                tally.add(["write", o]);
            }
        }
        tally.add(["read", "ok"]);
        tally.add_to(&vec);
        for (i, o) in outcomes.iter().enumerate() {
            assert_eq!(
                vec.with_label_values(&["write", o]).get(),
                i as u64 + 1,
                "{o}"
            );
        }
        assert_eq!(vec.with_label_values(&["read", "ok"]).get(), 1);
    }
}
