//! The operator pause (the Mu artifact's fifo `p` / `c`): pausing the
//! leader stops its heartbeat, the others detect it and elect a new leader,
//! the paused replica keeps applying; resuming lets it lead again (it has
//! the lowest id) without losing anything committed meanwhile.

use mu::core::RoleKind;
use mu::sim::Scenario;

const MS: u64 = 1_000_000;

#[test]
fn pausing_the_leader_forces_a_leader_change_and_resuming_loses_nothing() {
    let mut sc = Scenario::new(3, 64 * 1024, 256, 5);
    assert!(
        sc.run_until(20 * MS, |s| s.leader() == Some(0)),
        "node 0 leads first"
    );
    sc.propose(0, b"before").unwrap();
    sc.run(MS);

    sc.operator_pause(0, true);
    let t0 = sc.now();
    assert!(
        sc.run_until(20 * MS, |s| s.leader().is_some_and(|l| l != 0)),
        "no new leader after pausing the leader"
    );
    let took = sc.now() - t0;
    let new = sc.leader().unwrap();
    assert_eq!(sc.status(0).unwrap().role, RoleKind::Follower);
    let p = sc.propose(new, b"while paused").unwrap();
    assert!(sc.run_until(20 * MS, |s| s
        .applied(0)
        .iter()
        .any(|(i, id, _)| *i == p.index && *id == p.id)));
    println!("leader change after the pause took {took} ns of simulated time");

    sc.operator_pause(0, false);
    assert!(
        sc.run_until(20 * MS, |s| s.leader() == Some(0)),
        "node 0 leads again"
    );
    let q = sc.propose(0, b"after resume").unwrap();
    assert!(sc.run_until(20 * MS, |s| (0..3).all(|n| s
        .applied(n)
        .iter()
        .any(|(i, id, _)| *i == q.index && *id == q.id))));
    for n in 0..3 {
        let payloads: Vec<&[u8]> = sc.applied(n).iter().map(|(_, _, p)| &p[..]).collect();
        assert_eq!(
            payloads,
            [&b"before"[..], b"while paused", b"after resume"],
            "node {n}"
        );
    }
}
