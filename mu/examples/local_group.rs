//! A local replicated group in one command: three Mu replicas on their own
//! threads (in-process fabric) replicate a stream of entries; then the
//! leader is killed and another takes over without losing an acknowledged
//! entry. Prints what happens and checks that every replica applied the
//! same log.
//!
//! ```text
//! cargo run --release -p mu --example local_group
//! ```

use mu::core::RoleKind;
use mu::driver::replica::{propose_to_group, Committed, DriverOptions, Replica};
use mu::fabric::local::LocalNetwork;
use mu::{Config, NodeId};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

fn main() {
    let configs: Vec<Config> = (0..3u8)
        .map(|i| {
            let mut c = Config::new(NodeId(i), 3);
            c.ring_capacity = 4 << 20;
            c.max_payload = 4096;
            c.heartbeat_interval_ns = 100_000;
            c
        })
        .collect();
    let net = LocalNetwork::new(&configs);
    let options = DriverOptions {
        idle_sleep: Some(Duration::from_micros(20)),
        idle_spins: 50,
        ..DriverOptions::default()
    };
    let mut replicas = Vec::new();
    let mut logs = Vec::new();
    for c in configs {
        let id = c.id;
        let (r, rx) = Replica::start(c, net.endpoint(id), options).expect("valid configuration");
        replicas.push(Some(r));
        logs.push(rx);
    }
    println!("started 3 replicas (ids 0, 1, 2) on the in-process fabric");

    let leader = wait_for_leader(&replicas);
    println!("replica {leader} leads");
    let started = now();
    for i in 0..1_000u32 {
        propose(&replicas, format!("SET key{i} value{i}").into_bytes());
    }
    let elapsed = started.elapsed();
    println!(
        "1000 entries committed in {:.1} ms ({:.1} µs each, one at a time)",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / 1000.0
    );

    net.set_up(leader, false);
    replicas[leader.idx()].take().expect("running").stop();
    println!("killed the leader (replica {leader})");
    let started = now();
    propose(&replicas, b"SET after failover".to_vec());
    println!(
        "replica {} leads; first entry after the failure committed {:.2} ms after the kill",
        wait_for_leader(&replicas),
        started.elapsed().as_secs_f64() * 1e3
    );
    for i in 0..99u32 {
        propose(&replicas, format!("SET more{i} x").into_bytes());
    }

    let full: Vec<Committed> = drain(&logs[(leader.idx() + 1) % 3], 1_100);
    let other: Vec<Committed> = drain(&logs[(leader.idx() + 2) % 3], 1_100);
    assert_eq!(full, other, "the surviving replicas disagree");
    let dead: Vec<Committed> = drain(&logs[leader.idx()], 0);
    assert!(
        full.starts_with(&dead),
        "the dead leader applied something the others did not"
    );
    println!(
        "both survivors applied the same 1100 entries; the dead leader had applied a prefix of {}",
        dead.len()
    );
    println!(
        "last entry: index {} {:?}",
        full[1099].index,
        String::from_utf8_lossy(&full[1099].payload)
    );
}

fn now() -> Instant {
    #[allow(clippy::disallowed_methods, reason = "the example reports wall time")]
    Instant::now()
}

fn wait_for_leader(replicas: &[Option<Replica>]) -> NodeId {
    let started = now();
    loop {
        for r in replicas.iter().flatten() {
            if let Some(s) = r.status() {
                if s.role == RoleKind::Leader {
                    return s.id;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no leader elected"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn propose(replicas: &[Option<Replica>], payload: Vec<u8>) {
    propose_to_group(replicas, &payload, Duration::from_secs(10)).expect("the group commits");
}

fn drain(rx: &Receiver<Committed>, at_least: usize) -> Vec<Committed> {
    let mut out: Vec<Committed> = rx.try_iter().collect();
    while out.len() < at_least {
        out.push(
            rx.recv_timeout(Duration::from_secs(10))
                .expect("entries arrive"),
        );
    }
    out
}
