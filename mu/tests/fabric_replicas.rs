//! Three replicas on busy-polling threads over each backend (`tcp` on
//! loopback, `shm` in /dev/shm, and the in-process fabric): proposals commit and arrive in the same
//! order everywhere; when the leader stops (its endpoint closes, so the
//! others see it die) a new leader takes over and nothing acknowledged is
//! lost.

use mu::driver::replica::{propose_to_group, Committed, DriverOptions, Replica};
use mu::fabric::shm::{ShmConfig, ShmEndpoint, DEFAULT_LEASE_TIMEOUT};
use mu::fabric::tcp::{TcpConfig, TcpEndpoint, TcpOptions};
use mu::fabric::Fabric;
use mu::log::layout::Layout;
use mu::{Config, NodeId};
use std::net::TcpListener;
use std::sync::mpsc::Receiver;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

fn configs() -> Vec<Config> {
    (0..3u8)
        .map(|i| {
            let mut c = Config::new(NodeId(i), 3);
            c.ring_capacity = 1 << 20;
            c.max_payload = 4096;
            // Three replicas and their fabric threads share two cores: a
            // slower heartbeat keeps scheduling delays from looking like
            // failures.
            c.heartbeat_interval_ns = 1_000_000;
            c.permission_timeout_ns = 50_000_000;
            c.prepare_timeout_ns = 50_000_000;
            c
        })
        .collect()
}

fn layout(c: &Config) -> Layout {
    Layout::new(c.ring_capacity, c.max_payload, usize::from(c.group_size))
}

/// Proposes on whichever replica leads.
fn propose(replicas: &[Option<Replica>], payload: &[u8]) -> u64 {
    propose_to_group(replicas, payload, DEADLINE).expect("the group commits the proposal")
}

fn collect(rx: &Receiver<Committed>, count: usize) -> Vec<Committed> {
    (0..count)
        .map(|_| rx.recv_timeout(DEADLINE).expect("committed entries arrive"))
        .collect()
}

fn agree_and_survive_leader_failure<F: Fabric + Send + 'static>(
    cfgs: Vec<Config>,
    fabrics: Vec<F>,
) {
    let options = DriverOptions {
        idle_sleep: Some(Duration::from_micros(50)),
        idle_spins: 50,
        ..DriverOptions::default()
    };
    let mut replicas = Vec::new();
    let mut receivers = Vec::new();
    let mut changes = Vec::new();
    for (c, f) in cfgs.into_iter().zip(fabrics) {
        let (r, rx) = Replica::start(c, f, options).expect("starts");
        let (tx, changed) = std::sync::mpsc::channel();
        assert!(r.on_status_change(move || {
            let _ = tx.send(());
        }));
        assert!(!r.on_status_change(|| {}), "a second hook is refused");
        replicas.push(Some(r));
        receivers.push(rx);
        changes.push(changed);
    }
    let mut acked = Vec::new();
    for i in 0..50u32 {
        acked.push((propose(&replicas, &i.to_le_bytes()), i));
    }
    let logs: Vec<Vec<Committed>> = receivers.iter().map(|rx| collect(rx, 50)).collect();
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[0], logs[2]);

    let leader = replicas
        .iter()
        .flatten()
        .find_map(|r| r.status().filter(|s| s.role == mu::core::RoleKind::Leader))
        .map(|s| s.id)
        .expect("a leader");
    // What the hooks told of the first election is taken now.
    for c in &changes {
        while c.try_recv().is_ok() {}
    }
    // Stopping the replica drops its endpoint: to the others it is dead.
    replicas[leader.idx()].take().expect("running").stop();
    for i in 50..80u32 {
        acked.push((propose(&replicas, &i.to_le_bytes()), i));
    }
    let survivors: Vec<usize> = (0..3).filter(|&n| n != leader.idx()).collect();
    // Each survivor's hook told of the change to the new leader.
    for &n in &survivors {
        let r = replicas[n].as_ref().expect("running");
        loop {
            changes[n]
                .recv_timeout(DEADLINE)
                .expect("the status change hook is called");
            if r.status()
                .and_then(|s| s.leader)
                .is_some_and(|l| l != leader)
            {
                break;
            }
        }
    }
    let tails: Vec<Vec<Committed>> = survivors
        .iter()
        .map(|&n| collect(&receivers[n], 30))
        .collect();
    assert_eq!(tails[0], tails[1]);
    let all: Vec<&Committed> = logs[0].iter().chain(tails[0].iter()).collect();
    for (index, i) in &acked {
        let entry = all
            .iter()
            .find(|c| c.index == *index)
            .expect("acked entry applied");
        assert_eq!(entry.payload, i.to_le_bytes(), "acked entry {index} lost");
    }
}

#[test]
fn three_replicas_over_tcp_agree_and_survive_a_leader_failure() {
    let cfgs = configs();
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
        .collect();
    let peers: Vec<_> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    let fabrics = listeners
        .into_iter()
        .zip(&cfgs)
        .map(|(l, c)| {
            let config = TcpConfig {
                id: c.id,
                peers: peers.clone(),
                secret: b"replica test secret".to_vec(),
                layout: layout(c),
                options: TcpOptions::default(),
            };
            TcpEndpoint::start_with_listener(config, l).expect("tcp endpoint")
        })
        .collect();
    agree_and_survive_leader_failure(cfgs, fabrics);
}

#[test]
fn three_replicas_over_shm_agree_and_survive_a_leader_failure() {
    let cfgs = configs();
    let dir = std::path::PathBuf::from(format!("/dev/shm/mu-replicas-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a directory in /dev/shm");
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let fabrics = cfgs
        .iter()
        .map(|c| {
            ShmEndpoint::create(ShmConfig {
                dir: dir.clone(),
                group: "r".into(),
                id: c.id,
                layout: layout(c),
                lease_timeout: DEFAULT_LEASE_TIMEOUT,
            })
            .expect("shm endpoint")
        })
        .collect();
    agree_and_survive_leader_failure(cfgs, fabrics);
}

#[test]
fn three_replicas_in_one_process_agree_and_survive_a_leader_failure() {
    // The in-process fabric: the stopped leader's region stays, but it
    // stops heartbeating, so the others elect a new leader.
    let cfgs = configs();
    let net = mu::fabric::local::LocalNetwork::new(&cfgs);
    let fabrics = (0..3).map(|i| net.endpoint(NodeId(i))).collect();
    agree_and_survive_leader_failure(cfgs, fabrics);
}
