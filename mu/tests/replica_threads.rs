//! The production driver end to end: three replicas on their own
//! busy-polling threads over the in-process fabric. Proposals through the
//! `Replica` API commit and arrive in the same order on every replica; when
//! the leader dies another takes over and nothing acknowledged is lost.

use mu::driver::replica::{propose_to_group, Committed, DriverOptions, Replica};
use mu::fabric::local::LocalNetwork;
use mu::{Config, NodeId};
use std::sync::mpsc::Receiver;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

fn configs() -> Vec<Config> {
    (0..3u8)
        .map(|i| {
            let mut c = Config::new(NodeId(i), 3);
            c.ring_capacity = 1 << 20;
            c.max_payload = 4096;
            // Threads share two cores here: a slower heartbeat keeps the
            // detector from mistaking scheduling delays for failures.
            c.heartbeat_interval_ns = 200_000;
            c.permission_timeout_ns = 5_000_000;
            c
        })
        .collect()
}

/// Proposes on whichever replica leads.
fn propose(replicas: &[Option<Replica>], payload: &[u8]) -> u64 {
    propose_to_group(replicas, payload, DEADLINE).expect("the group commits the proposal")
}

fn collect(rx: &Receiver<Committed>, count: usize) -> Vec<Committed> {
    let mut out = Vec::new();
    while out.len() < count {
        let c = rx.recv_timeout(DEADLINE).expect("committed entries arrive");
        out.push(c);
    }
    out
}

#[test]
fn three_threaded_replicas_agree_and_survive_a_leader_failure() {
    let cfgs = configs();
    let net = LocalNetwork::new(&cfgs);
    let options = DriverOptions {
        idle_sleep: Some(Duration::from_micros(50)),
        idle_spins: 50,
    };
    let mut replicas = Vec::new();
    let mut receivers = Vec::new();
    for c in cfgs {
        let id = c.id;
        let (r, rx) = Replica::start(c, net.endpoint(id), options).expect("starts");
        replicas.push(Some(r));
        receivers.push(rx);
    }

    // Phase 1: 50 proposals commit and every replica applies the same list.
    let mut acked = Vec::new();
    for i in 0..50u32 {
        acked.push((propose(&replicas, &i.to_le_bytes()), i));
    }
    let logs: Vec<Vec<Committed>> = receivers.iter().map(|rx| collect(rx, 50)).collect();
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[0], logs[2]);
    for (index, i) in &acked {
        let entry = logs[0]
            .iter()
            .find(|c| c.index == *index)
            .expect("acked entry applied");
        assert_eq!(entry.payload, i.to_le_bytes());
    }

    // Phase 2: the leader dies; the others elect a new one and go on.
    let leader = replicas
        .iter()
        .flatten()
        .find_map(|r| r.status().filter(|s| s.role == mu::core::RoleKind::Leader))
        .map(|s| s.id)
        .expect("a leader");
    net.set_up(leader, false);
    replicas[leader.idx()].take().expect("running").stop();
    for i in 50..80u32 {
        acked.push((propose(&replicas, &i.to_le_bytes()), i));
    }
    let survivors: Vec<usize> = (0..3).filter(|&n| n != leader.idx()).collect();
    let tails: Vec<Vec<Committed>> = survivors
        .iter()
        .map(|&n| collect(&receivers[n], 30))
        .collect();
    assert_eq!(tails[0], tails[1]);
    // Nothing acknowledged is lost: every acked index holds its value.
    let all: Vec<&Committed> = logs[0].iter().chain(tails[0].iter()).collect();
    for (index, i) in &acked {
        let entry = all
            .iter()
            .find(|c| c.index == *index)
            .expect("acked entry applied");
        assert_eq!(entry.payload, i.to_le_bytes());
    }
}
