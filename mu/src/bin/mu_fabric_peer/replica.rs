//! The `replica` role: one replica of a group on any fabric, driven
//! through stdin, for multi-process group tests and the fail-over and
//! commit-latency figures of a fabric.
//!
//! Commands, one per line on stdin:
//! - `propose <payload>`: proposes the payload once; answers
//!   `proposed <payload> ok <index>` or `proposed <payload> err <reason>`;
//! - `bench <count> <size>`: proposes `count` payloads of `size` bytes one
//!   after the other (this replica must lead) and answers
//!   `bench <size> <count> p50 <ns> p99 <ns>` (propose to commit).
//!
//! Reports on stdout: `status <role> <leader>` when either changes
//! (leader as a node id, `-` if none) and `applied <index> <payload>` for
//! every committed entry in log order (`#<bytes>` instead of payloads
//! longer than 64 bytes). Exits when stdin closes.

use mu::core::RoleKind;
use mu::driver::replica::{DriverOptions, Replica};
use mu::fabric::conformance::{SUITE_MAX_PAYLOAD, SUITE_RING};
use mu::fabric::Fabric;
use mu::{Config, NodeId};
use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longer payloads are reported by length (`#<bytes>`).
const SHOWN_PAYLOAD: usize = 64;
/// How long one proposal may take before it is reported as failed.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(2);

#[allow(
    clippy::disallowed_methods,
    reason = "the latency figures read the clock"
)]
fn now() -> Instant {
    Instant::now()
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    // A closed stdout means the parent is gone; stdin closes too.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs replica `node` of a group of `n` on `fabric` until stdin closes.
pub fn run<F: Fabric + Send + 'static>(fabric: F, node: NodeId, n: u8) -> io::Result<()> {
    let mut cfg = Config::new(node, n);
    cfg.ring_capacity = SUITE_RING;
    cfg.max_payload = SUITE_MAX_PAYLOAD;
    // Several processes share few (possibly emulated) cores: a slower
    // heartbeat keeps scheduling delays from looking like failures.
    cfg.heartbeat_interval_ns = 2_000_000;
    cfg.permission_timeout_ns = 100_000_000;
    cfg.prepare_timeout_ns = 100_000_000;
    let options = DriverOptions {
        idle_sleep: Some(Duration::from_micros(50)),
        idle_spins: 50,
        ..DriverOptions::default()
    };
    let (replica, committed) = Replica::start(cfg, fabric, options).map_err(io::Error::other)?;
    // Ends when the replica stops and drops its sender.
    std::thread::Builder::new()
        .name("applied".into())
        .spawn(move || {
            for c in committed {
                if c.payload.len() <= SHOWN_PAYLOAD {
                    say(&format!(
                        "applied {} {}",
                        c.index,
                        String::from_utf8_lossy(&c.payload)
                    ));
                } else {
                    say(&format!("applied {} #{}", c.index, c.payload.len()));
                }
            }
        })?;
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            let mut last = None;
            while !done.load(Ordering::Acquire) {
                if let Some(st) = replica.status() {
                    let now = (st.role, st.leader);
                    if last != Some(now) {
                        last = Some(now);
                        let leader = st.leader.map_or("-".to_string(), |l| l.0.to_string());
                        say(&format!("status {:?} {leader}", st.role));
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let result = commands(&replica);
        done.store(true, Ordering::Release);
        result
    });
    replica.stop();
    result
}

fn commands(replica: &Replica) -> io::Result<()> {
    for line in io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("propose"), Some(p), None) => {
                match replica.propose(p.as_bytes().to_vec(), PROPOSE_TIMEOUT) {
                    Ok(index) => say(&format!("proposed {p} ok {index}")),
                    Err(e) => say(&format!("proposed {p} err {e}")),
                }
            }
            (Some("bench"), Some(count), Some(size)) => {
                let (Ok(count), Ok(size)) = (count.parse::<usize>(), size.parse::<usize>()) else {
                    say("bench err bad arguments");
                    continue;
                };
                say(&bench(replica, count, size));
            }
            _ => say(&format!("unknown command {line:?}")),
        }
    }
    Ok(())
}

/// Proposes `count` payloads of `size` bytes one at a time; the
/// propose-to-commit distribution.
fn bench(replica: &Replica, count: usize, size: usize) -> String {
    if replica.status().map(|s| s.role) != Some(RoleKind::Leader) {
        return "bench err not the leader".into();
    }
    let mut samples = Vec::with_capacity(count);
    let payload = vec![b'b'; size];
    for _ in 0..count {
        let t = now();
        if let Err(e) = replica.propose(payload.clone(), PROPOSE_TIMEOUT) {
            return format!("bench err {e}");
        }
        samples.push(t.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    format!("bench {size} {count} p50 {} p99 {}", at(0.5), at(0.99))
}
