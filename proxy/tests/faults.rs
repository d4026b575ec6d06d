//! Faults under load: while a client writes continuously through one
//! sidecar, the leader's sidecar is SIGKILLed, then the new leader is
//! SIGSTOPped and continued. Every acknowledged write must be on every
//! surviving backend, none twice, and the client sees only clear errors.

mod common;

use common::load::{check_logs, create_log, Load};
use common::{Cluster, Kind};
use std::time::Duration;

fn clear_error(kind: Kind, e: &str) -> bool {
    match kind {
        Kind::Redis => e.starts_with("TRYAGAIN mu-sidecar") || e.starts_with("ERR mu-sidecar"),
        Kind::Memcached => e.starts_with("mu-sidecar"),
    }
}

fn fault_under_load(kind: Kind, fabric: &str) {
    let c = Cluster::start(kind, 3, fabric, &["--write-deadline-ms", "1500"]);
    create_log(kind, c.nodes[0].listen);
    let all = [0usize, 1, 2];
    let leader = c.wait_leader(&all, Duration::from_secs(10));
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    // The new leader will be the lowest live id; write through the other.
    let (next, via) = (others[0], others[1]);
    let load = Load::start(kind, c.nodes[via].listen);
    load.grow(200, "writes before the faults");
    let mut c = c;
    c.nodes[leader].proc.signal("KILL");
    c.nodes[leader].proc.kill();
    let new = c.wait_leader(&others, Duration::from_secs(10));
    assert_eq!(new, next, "the lowest live id leads");
    load.grow(200, "writes after the leader's SIGKILL");
    // With one node dead and one stopped there is no majority: writes fail
    // clearly until the stopped one continues.
    c.nodes[next].proc.signal("STOP");
    let e0 = load.errors();
    let limit = Duration::from_secs(20);
    common::wait_explained(
        limit,
        || (load.errors() > e0).then_some(()),
        || {
            // Whether the writer's node still publishes its replica's
            // state (it changes within a second), and where its threads
            // wait.
            let first = c.status(via);
            let next_status = common::poll_until(Duration::from_secs(1), || {
                c.status(via).filter(|s| Some(s) != first.as_ref())
            });
            format!(
                "timed out after {limit:?} waiting for an error while no majority is up \
                 (node {} stopped); status of the writer's node {}: {:?}\n\
                 its next different status within a second: {:?}\n{}\n{}",
                c.nodes[next].id,
                c.nodes[via].id,
                first,
                next_status,
                common::thread_stacks(c.nodes[via].proc.pid()),
                c.logs()
            )
        },
    );
    c.nodes[next].proc.signal("CONT");
    c.wait_leader(&others, Duration::from_secs(10));
    load.grow(200, "writes after SIGCONT");
    let seen = load.stop();
    let commit = c.commit_index(&others);
    c.wait_applied(&others, commit, Duration::from_secs(10));
    let mut kinds: Vec<&str> = seen.errors.iter().map(|e| &e[..e.len().min(60)]).collect();
    kinds.sort();
    kinds.dedup();
    eprintln!(
        "{kind:?}/{fabric}: {} acknowledged, {} errors, kinds: {kinds:#?}",
        seen.acked.len(),
        seen.errors.len()
    );
    let backends: Vec<_> = others.iter().map(|&i| c.nodes[i].backend).collect();
    check_logs(kind, &backends, &seen, &|| c.logs());
    let unclear: Vec<&String> = seen
        .errors
        .iter()
        .filter(|e| !clear_error(kind, e) && !e.starts_with("connection to the sidecar"))
        .collect();
    assert!(unclear.is_empty(), "unclear errors: {unclear:?}");
    assert!(
        !seen.errors.is_empty(),
        "the faults produced no error at all"
    );
}

#[test]
fn redis_fault_under_load_tcp() {
    fault_under_load(Kind::Redis, "tcp");
}

#[test]
fn redis_fault_under_load_shm() {
    fault_under_load(Kind::Redis, "shm");
}

#[test]
fn memcached_fault_under_load_tcp() {
    fault_under_load(Kind::Memcached, "tcp");
}
