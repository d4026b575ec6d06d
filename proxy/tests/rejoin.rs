//! A node that comes back: its backend restarted empty, its sidecar
//! restarted in front of the data it left, or its replica fell behind the
//! part of the log the group recycled. Each time it loads a copy of a
//! peer's data (a state transfer) while the group keeps serving, refuses
//! reads until the copy is complete, and then holds exactly what the
//! others hold.

mod common;

use common::load::{check_logs, create_log, Load};
use common::{
    http_get, redis_snapshot, spawn_sidecar, start_backend_on, text, wait_explained, wait_for,
    Cluster, Kind, McClient, RespClient,
};
use mu_protocols::memcached::McReply;
use mu_protocols::resp::Frame;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(40);
const ALL: [usize; 3] = [0, 1, 2];

/// The value of a counter or gauge line of node `i`'s /metrics that
/// contains every one of `parts`.
fn metric(c: &Cluster, i: usize, name: &str, parts: &[&str]) -> Option<f64> {
    let (_, body) = http_get(c.nodes[i].http, "/metrics")?;
    body.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits until node `i` is ready again after a transfer and returns its
/// /status.
fn wait_transferred(c: &Cluster, i: usize) -> serde_json::Value {
    wait_explained(
        LIMIT,
        || {
            let s = c.status(i)?;
            let detail = s["backend"]["detail"].as_str()?;
            (s["ready"] == true && detail.contains("state transfer")).then_some(s)
        },
        || {
            format!(
                "node {} did not complete a state transfer:\n{}",
                i + 1,
                c.logs()
            )
        },
    )
}

/// Every node applied what was committed; the backends hold the same data.
fn settle_and_compare(c: &Cluster) {
    c.wait_applied(&ALL, c.commit_index(&ALL), LIMIT);
    match c.kind {
        Kind::Redis => {
            let first = redis_snapshot(c.nodes[0].backend);
            for n in &c.nodes[1..] {
                assert_eq!(
                    redis_snapshot(n.backend),
                    first,
                    "node {} holds other data than node 1\n{}",
                    n.id,
                    c.logs()
                );
            }
        }
        Kind::Memcached => {
            let get = |i: usize| {
                let mut m = McClient::connect(c.nodes[i].backend).unwrap();
                m.call(b"get a b c log\r\n").unwrap()
            };
            let first = get(0);
            for i in 1..3 {
                assert_eq!(get(i), first, "node {} holds other data", i + 1);
            }
        }
    }
}

/// A restarted sidecar in front of the backend it left (which holds data)
/// cannot know which entries that data reflects: instead of applying the
/// log onto it a second time, it replaces it with a peer's copy.
#[test]
fn restarted_sidecar_replaces_kept_data_with_a_copy() {
    let mut c = Cluster::start(Kind::Redis, 3, "tcp", &[]);
    let leader = c.wait_leader(&ALL, LIMIT);
    let f = (leader + 1) % 3;
    let mut w = RespClient::connect(c.nodes[leader].listen).unwrap();
    assert_eq!(w.cmd(&["INCR", "n"]), Frame::Integer(1));
    c.wait_applied(&ALL, c.commit_index(&ALL), LIMIT);
    let node = &mut c.nodes[f];
    node.proc.kill();
    node.proc = spawn_sidecar(&node.args, &node.log, node.id);
    let status = wait_transferred(&c, f);
    assert_eq!(
        metric(
            &c,
            f,
            "mu_sidecar_transfers_needed_total",
            &["backend_out_of_step"]
        ),
        Some(1.0),
        "{status}"
    );
    // Not applied twice: the copy holds 1, and the next INCR makes 2.
    let mut b = RespClient::connect(c.nodes[f].backend).unwrap();
    assert_eq!(text(&b.cmd(&["GET", "n"])), "1");
    assert_eq!(w.cmd(&["INCR", "n"]), Frame::Integer(2));
    settle_and_compare(&c);
    let mut r = RespClient::connect(c.nodes[f].listen).unwrap();
    assert_eq!(text(&r.cmd(&["GET", "n"])), "2");
}

/// A follower's redis-server dies: the node reports not ready and the
/// group goes on. It comes back empty: the node refuses reads and says why
/// until a peer's copy is loaded (the peers are stopped meanwhile, so the
/// state can be seen), then serves the same data as the others.
#[test]
fn emptied_backend_refuses_reads_until_refilled() {
    let mut c = Cluster::start(Kind::Redis, 3, "tcp", &[]);
    let leader = c.wait_leader(&ALL, LIMIT);
    let f = (leader + 1) % 3;
    let mut w = RespClient::connect(c.nodes[leader].listen).unwrap();
    assert_eq!(text(&w.cmd(&["SET", "before", "1"])), "OK");
    // Killed while idle: nothing in flight, so the node waits for it (a
    // kill in the middle of applying makes the backend out of step at once).
    c.wait_applied(&ALL, c.commit_index(&ALL), LIMIT);
    c.nodes[f].backend_proc.kill();
    let http = c.nodes[f].http;
    let why = wait_for(
        LIMIT,
        &format!("node {} to report its backend down", f + 1),
        || {
            let (code, body) = http_get(http, "/readyz")?;
            (code == 503 && body.contains("backend down")).then_some(body)
        },
    );
    assert!(why.contains("cannot connect"), "{why}");
    // The group keeps committing without that node's backend.
    assert_eq!(text(&w.cmd(&["SET", "during", "2"])), "OK");
    c.wait_applied(&[leader], c.commit_index(&[leader]), LIMIT);
    let others: Vec<usize> = ALL.iter().copied().filter(|&i| i != f).collect();
    for &o in &others {
        c.nodes[o].proc.signal("STOP");
    }
    // The server comes back on the same port, empty; no donor answers.
    let backend = c.nodes[f].backend;
    c.nodes[f].backend_proc = start_backend_on(Kind::Redis, backend);
    let status = wait_for(LIMIT, "the backend to be marked for a transfer", || {
        let s = c.status(f)?;
        (s["backend"]["state"] == "transferring").then_some(s)
    });
    assert!(
        status["backend"]["detail"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{status}"
    );
    assert_eq!(status["ready"], false);
    let mut r = RespClient::connect(c.nodes[f].listen).unwrap();
    let refused = r.cmd(&["GET", "before"]);
    assert!(
        text(&refused).starts_with("LOADING mu-sidecar"),
        "a read from an emptied backend must be refused: {refused:?}"
    );
    let (code, _) = http_get(http, "/readyz").unwrap();
    assert_eq!(code, 503);
    for &o in &others {
        c.nodes[o].proc.signal("CONT");
    }
    wait_transferred(&c, f);
    assert_eq!(text(&r.cmd(&["GET", "before"])), "1");
    assert_eq!(text(&r.cmd(&["GET", "during"])), "2");
    settle_and_compare(&c);
}

/// The backend restarts empty under a live sidecar while a client keeps
/// writing through another node: the node refills it and nothing
/// acknowledged is lost anywhere.
fn emptied_backend_is_refilled_under_load(kind: Kind) {
    let mut c = Cluster::start(kind, 3, "tcp", &[]);
    create_log(kind, c.nodes[0].listen);
    let leader = c.wait_leader(&ALL, LIMIT);
    let f = (leader + 1) % 3;
    let via = 3 - leader - f;
    let load = Load::start(kind, c.nodes[via].listen);
    load.grow(300, "writes before the fault");
    c.nodes[f].backend_proc.kill();
    let backend = c.nodes[f].backend;
    c.nodes[f].backend_proc = start_backend_on(kind, backend);
    load.grow(300, "writes while the backend is refilled");
    wait_transferred(&c, f);
    load.grow(300, "writes after the transfer");
    let seen = load.stop();
    c.wait_applied(&ALL, c.commit_index(&ALL), LIMIT);
    let backends: Vec<_> = c.nodes.iter().map(|n| n.backend).collect();
    check_logs(kind, &backends, &seen, &|| c.logs());
    settle_and_compare(&c);
    assert!(
        metric(&c, f, "mu_sidecar_transfers_total", &["receiver", "\"ok\""]).unwrap_or(0.0) >= 1.0
    );
}

#[test]
fn emptied_redis_is_refilled_under_load() {
    emptied_backend_is_refilled_under_load(Kind::Redis);
}

#[test]
fn emptied_memcached_is_refilled_under_load() {
    emptied_backend_is_refilled_under_load(Kind::Memcached);
}

/// How a node leaves the group for a while.
#[derive(Debug, Clone, Copy)]
enum Away {
    /// Its sidecar is SIGKILLed, and restarted later (fresh replica memory,
    /// kept backend).
    Killed,
    /// Its sidecar is SIGSTOPped and continued (the replica keeps its
    /// memory, but the group recycled the log it had not applied).
    Stopped,
}

/// While away, the node misses more of the log than the ring holds (1 MiB
/// rings); it comes back and rejoins through a state transfer while a
/// client keeps writing.
fn rejoins_after_missing_more_than_the_ring(away: Away) {
    let mut c = Cluster::start(
        Kind::Redis,
        3,
        "tcp",
        &["--ring-mib", "1", "--max-entry", "65536"],
    );
    let leader = c.wait_leader(&ALL, LIMIT);
    let f = (leader + 1) % 3;
    let via = 3 - leader - f;
    let load = Load::start(Kind::Redis, c.nodes[via].listen);
    load.grow(200, "writes before the node leaves");
    match away {
        Away::Killed => c.nodes[f].proc.kill(),
        Away::Stopped => c.nodes[f].proc.signal("STOP"),
    }
    // 2 MiB of values through the leader: twice the ring.
    let mut w = RespClient::connect(c.nodes[leader].listen).unwrap();
    let value = "v".repeat(4096);
    for i in 0..512 {
        let r = w.cmd(&["SET", &format!("big:{i}"), &value]);
        assert_eq!(text(&r), "OK", "write {i} while node {} is away", f + 1);
    }
    load.grow(100, "writes while the node is away");
    match away {
        Away::Killed => {
            let node = &mut c.nodes[f];
            node.proc = spawn_sidecar(&node.args, &node.log, node.id);
        }
        Away::Stopped => c.nodes[f].proc.signal("CONT"),
    }
    wait_transferred(&c, f);
    let reason = match away {
        Away::Killed => "backend_out_of_step",
        Away::Stopped => "behind_ring",
    };
    let needed = metric(&c, f, "mu_sidecar_transfers_needed_total", &[reason]);
    assert!(
        needed.unwrap_or(0.0) >= 1.0,
        "transfers needed for {reason}: {needed:?}"
    );
    load.grow(300, "writes after the node rejoined");
    let seen = load.stop();
    // The rejoined node keeps applying the log after the copy.
    assert_eq!(text(&w.cmd(&["SET", "after", "1"])), "OK");
    settle_and_compare(&c);
    let backends: Vec<_> = c.nodes.iter().map(|n| n.backend).collect();
    check_logs(Kind::Redis, &backends, &seen, &|| c.logs());
}

#[test]
fn killed_node_rejoins_after_the_ring_moved_on() {
    rejoins_after_missing_more_than_the_ring(Away::Killed);
}

#[test]
fn stopped_node_rejoins_after_the_ring_moved_on() {
    rejoins_after_missing_more_than_the_ring(Away::Stopped);
}

/// A memcached item's flags and absolute expiry travel with the copy.
#[test]
fn memcached_copy_keeps_flags_and_expiry() {
    let mut c = Cluster::start(Kind::Memcached, 3, "tcp", &[]);
    let leader = c.wait_leader(&ALL, LIMIT);
    let f = (leader + 1) % 3;
    let mut m = McClient::connect(c.nodes[leader].listen).unwrap();
    assert_eq!(m.call(b"set a 42 0 1\r\nx\r\n").unwrap(), McReply::Stored);
    assert_eq!(
        m.call(b"set b 7 3600 2\r\nyy\r\n").unwrap(),
        McReply::Stored
    );
    c.wait_applied(&ALL, c.commit_index(&ALL), LIMIT);
    c.nodes[f].backend_proc.kill();
    let backend = c.nodes[f].backend;
    c.nodes[f].backend_proc = start_backend_on(Kind::Memcached, backend);
    wait_transferred(&c, f);
    let mut b = McClient::connect(c.nodes[f].backend).unwrap();
    match b.call(b"mg b v f t\r\n").unwrap() {
        McReply::Meta(r) => {
            let tokens: Vec<String> = r
                .tokens
                .iter()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .collect();
            assert!(tokens.contains(&"f7".to_string()), "{tokens:?}");
            let ttl: i64 = tokens
                .iter()
                .find_map(|t| t.strip_prefix('t')?.parse().ok())
                .expect("a ttl");
            assert!((3500..=3601).contains(&ttl), "ttl {ttl}");
            assert_eq!(r.data.as_deref(), Some(&b"yy"[..]));
        }
        other => panic!("mg b answered {other:?}"),
    }
    settle_and_compare(&c);
}

/// Keys the node's backend holds (Redis DBSIZE of database 0).
fn dbsize(addr: std::net::SocketAddr) -> i64 {
    match RespClient::connect(addr).unwrap().cmd(&["DBSIZE"]) {
        Frame::Integer(n) => n,
        other => panic!("DBSIZE answered {other:?}"),
    }
}

/// The donor dies in the middle of a transfer: the node starts again from
/// an empty backend with the other donor, serves nothing while half
/// loaded, and ends with the whole data set.
#[test]
fn transfer_starts_over_when_its_donor_dies_midway() {
    let mut c = Cluster::start(Kind::Redis, 3, "tcp", &[]);
    let leader = c.wait_leader(&ALL, LIMIT);
    // 300 000 keys, through the log in 1000-key MSETs.
    let mut w = RespClient::connect(c.nodes[leader].listen).unwrap();
    let value = "v".repeat(100);
    for chunk in 0..300 {
        let mut cmd = vec!["MSET".to_string()];
        for k in 0..1000 {
            cmd.push(format!("key:{chunk}:{k}"));
            cmd.push(value.clone());
        }
        let r = w.pipeline(&[cmd]).unwrap();
        assert_eq!(text(&r[0]), "OK");
    }
    c.wait_applied(&ALL, c.commit_index(&ALL), LIMIT);
    let f = (leader + 1) % 3;
    c.nodes[f].backend_proc.kill();
    let backend = c.nodes[f].backend;
    c.nodes[f].backend_proc = start_backend_on(Kind::Redis, backend);
    // Wait until keys arrive from a donor, then kill that donor.
    let donor = wait_explained(
        LIMIT,
        || {
            let s = c.status(f)?;
            let detail = s["backend"]["detail"].as_str()?.to_string();
            let n: usize = detail
                .split("loading a copy of node ")
                .nth(1)?
                .split('\'')
                .next()?
                .parse()
                .ok()?;
            let got = metric(&c, f, "mu_sidecar_transfer_records_total", &["receiver"])?;
            (got > 0.0).then_some(n - 1)
        },
        || format!("no transfer in progress on node {}\n{}", f + 1, c.logs()),
    );
    assert!(
        metric(&c, f, "mu_sidecar_transferring", &[]) == Some(1.0),
        "the transfer ended before its donor could be stopped (a faster machine needs more data)"
    );
    c.nodes[donor].proc.kill();
    // Until it is complete the node is not ready.
    let other = 3 - f - donor;
    wait_explained(
        LIMIT,
        || {
            let s = c.status(f)?;
            let ready = s["ready"] == true;
            let loaded = s["backend"]["detail"]
                .as_str()?
                .contains("state transfer at");
            assert!(!ready || loaded, "node ready while half loaded: {s}");
            (ready && loaded).then_some(())
        },
        || format!("node {} did not complete the transfer\n{}", f + 1, c.logs()),
    );
    let failed = metric(
        &c,
        f,
        "mu_sidecar_transfers_total",
        &["receiver", "\"failed\""],
    );
    assert!(
        failed.unwrap_or(0.0) >= 1.0,
        "the first attempt did not fail: {failed:?}"
    );
    assert_eq!(dbsize(c.nodes[f].backend), 300_000);
    assert_eq!(dbsize(c.nodes[f].backend), dbsize(c.nodes[other].backend));
    // The killed sidecar comes back (its server kept its data) and loads a
    // copy too; then every node holds the same data.
    let node = &mut c.nodes[donor];
    node.proc = spawn_sidecar(&node.args, &node.log, node.id);
    wait_transferred(&c, donor);
    assert_eq!(text(&w.cmd(&["SET", "after", "1"])), "OK");
    c.wait_applied(&ALL, c.commit_index(&ALL), LIMIT);
    let (code, report) = c.verify(f);
    assert_eq!(code, 200, "{report}");
    assert_eq!(
        report["keys"],
        serde_json::json!([300_001, 300_001, 300_001])
    );
}

/// A node away for less than the ring holds catches up from the log: no
/// state transfer, and it ends with the same data.
#[test]
fn briefly_stopped_node_catches_up_from_the_log() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", &[]);
    let leader = c.wait_leader(&ALL, LIMIT);
    let f = (leader + 1) % 3;
    let mut w = RespClient::connect(c.nodes[leader].listen).unwrap();
    c.nodes[f].proc.signal("STOP");
    for i in 0..300 {
        assert_eq!(text(&w.cmd(&["SET", &format!("k{i}"), "v"])), "OK");
    }
    let commit = c.commit_index(&[leader]);
    c.nodes[f].proc.signal("CONT");
    c.wait_applied(&[f], commit, LIMIT);
    c.wait_ready(f, LIMIT);
    for reason in ["behind_ring", "backend_out_of_step", "diverged"] {
        assert_eq!(
            metric(&c, f, "mu_sidecar_transfers_needed_total", &[reason]),
            Some(0.0),
            "node {} needed a transfer ({reason})",
            f + 1
        );
    }
    settle_and_compare(&c);
}
