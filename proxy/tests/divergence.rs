//! Divergence detection: replicas compare digests of their backends'
//! replies per range of log entries. A healthy group never differs, even
//! under every kind of write; a backend changed behind its sidecar's back
//! is found at the next range, and the odd one out is fenced.

mod common;

use common::{http_get, text, wait_explained, Cluster, Kind, McClient, RespClient};
use mu_protocols::memcached::McReply;
use mu_protocols::resp::Frame;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);
const ALL: [usize; 3] = [0, 1, 2];
const FLAGS: &[&str] = &[
    "--digest-every",
    "8",
    "--digest-interval-ms",
    "20",
    "--on-divergence",
    "fence",
];

/// The value of the metric line of node `i` that starts with `name`.
fn metric(c: &Cluster, i: usize, name: &str) -> Option<f64> {
    let (_, body) = http_get(c.nodes[i].http, "/metrics")?;
    body.lines()
        .filter(|l| l.starts_with(name))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits until every node compared at least `ranges` ranges with a peer,
/// and checks that none found a difference.
fn no_divergence_after(c: &Cluster, ranges: f64) {
    for i in ALL {
        wait_explained(
            LIMIT,
            || (metric(c, i, "mu_sidecar_digest_ranges_checked_total")? >= ranges).then_some(()),
            || format!("node {} compared too few ranges\n{}", i + 1, c.logs()),
        );
        assert_eq!(
            metric(c, i, "mu_sidecar_divergence_total"),
            Some(0.0),
            "node {} found a divergence in a healthy group\n{}",
            i + 1,
            c.logs()
        );
        assert_eq!(metric(c, i, "mu_sidecar_diverged"), Some(0.0));
    }
}

#[test]
fn healthy_redis_group_never_diverges() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", FLAGS);
    let mut cl = RespClient::connect(c.nodes[1].listen).unwrap();
    for i in 0..20 {
        let k = format!("k{i}");
        cl.cmd(&["SET", &k, "1", "EX", "100"]);
        cl.cmd(&["INCR", &k]);
        cl.cmd(&["APPEND", &k, "x"]);
        cl.cmd(&["RPUSH", "list", &k]);
        cl.cmd(&["HSET", "h", &k, "v"]);
        cl.cmd(&["ZADD", "z", &i.to_string(), &k]);
        cl.cmd(&["SETNX", &k, "2"]);
        cl.cmd(&["DEL", &format!("k{}", i / 2)]);
    }
    cl.cmd(&["MULTI"]);
    cl.cmd(&["INCR", "n"]);
    cl.cmd(&["LPOP", "list"]);
    assert!(matches!(cl.cmd(&["EXEC"]), Frame::Array(_)));
    no_divergence_after(&c, 10.0);
}

/// Replies that differ between healthy servers, which order a big set or
/// hash by their own hash seeds and pick random members on their own,
/// are not taken for a divergence.
#[test]
fn replies_in_each_servers_own_order_are_no_divergence() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", FLAGS);
    let mut cl = RespClient::connect(c.nodes[1].listen).unwrap();
    let members: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    let mut sadd = vec!["SADD", "big"];
    sadd.extend(members.iter().map(String::as_str));
    cl.cmd(&sadd);
    let mut hset = vec!["HSET", "bigh"];
    for m in &members {
        hset.extend([m.as_str(), "v"]);
    }
    cl.cmd(&hset);
    for i in 0..12 {
        cl.cmd(&["MULTI"]);
        for cmd in [
            &["SMEMBERS", "big"][..],
            &["HGETALL", "bigh"],
            &["SRANDMEMBER", "big", "3"],
            &["HRANDFIELD", "bigh"],
        ] {
            cl.cmd(cmd);
        }
        cl.cmd(&["SET", &format!("k{i}"), "v"]);
        assert!(matches!(cl.cmd(&["EXEC"]), Frame::Array(_)));
    }
    no_divergence_after(&c, 2.0);
}

/// PUBLISH is answered with the number of subscribers of each server,
/// which differ between healthy nodes: a subscriber on one node only is
/// no divergence.
#[test]
fn publish_counts_of_each_servers_subscribers_are_no_divergence() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", FLAGS);
    let mut sub = RespClient::connect(c.nodes[2].listen).unwrap();
    let confirmed = sub.cmd(&["SUBSCRIBE", "news"]);
    assert!(
        matches!(&confirmed, Frame::Array(v) if v.len() == 3),
        "{confirmed:?}"
    );
    let mut publisher = RespClient::connect(c.nodes[0].listen).unwrap();
    for i in 0..24 {
        let n = publisher.cmd(&["PUBLISH", "news", &i.to_string()]);
        assert!(matches!(n, Frame::Integer(0 | 1)), "{n:?}");
        publisher.cmd(&["SET", &format!("k{i}"), "v"]);
    }
    // Node 3's server has the subscriber, so its PUBLISH replies differ.
    let got = sub.read().unwrap();
    assert!(matches!(&got, Frame::Array(v) if v.len() == 3), "{got:?}");
    no_divergence_after(&c, 4.0);
}

#[test]
fn healthy_memcached_group_never_diverges() {
    let c = Cluster::start(Kind::Memcached, 3, "tcp", FLAGS);
    let mut m = McClient::connect(c.nodes[2].listen).unwrap();
    for i in 0..20 {
        let k = format!("k{i}");
        m.call(format!("set {k} 3 100 1\r\n1\r\n").as_bytes())
            .unwrap();
        m.call(format!("incr {k} 5\r\n").as_bytes()).unwrap();
        m.call(format!("append {k} 0 0 1\r\nx\r\n").as_bytes())
            .unwrap();
        m.call(format!("add {k} 0 0 1\r\ny\r\n").as_bytes())
            .unwrap();
        // Meta replies with per-server parts (CAS, TTL left) asked for.
        m.call(format!("ms m{k} 2 T90 c t\r\nab\r\n").as_bytes())
            .unwrap();
        m.call(format!("delete k{}\r\n", i / 2).as_bytes()).unwrap();
    }
    no_divergence_after(&c, 10.0);
}

/// Sets `c` through the sidecars, changes it directly in one follower's
/// backend, then has `expose` write it through the sidecars (so that
/// backend answers differently) and writes enough to close the range.
/// Returns the changed node.
fn change_one_backend_then(c: &Cluster, expose: impl FnOnce(&mut RespClient)) -> usize {
    let leader = c.wait_leader(&ALL, LIMIT);
    let odd = (leader + 1) % 3;
    let mut cl = RespClient::connect(c.nodes[leader].listen).unwrap();
    assert_eq!(text(&cl.cmd(&["SET", "c", "1"])), "OK");
    c.wait_applied(&ALL, c.commit_index(&ALL), LIMIT);
    let mut direct = RespClient::connect(c.nodes[odd].backend).unwrap();
    assert_eq!(text(&direct.cmd(&["SET", "c", "100"])), "OK");
    expose(&mut cl);
    for i in 0..16 {
        cl.cmd(&["SET", &format!("pad{i}"), "x"]);
    }
    odd
}

/// [`change_one_backend_then`] with an `INCR` of the changed key.
fn change_one_backend(c: &Cluster) -> usize {
    change_one_backend_then(c, |cl| {
        assert_eq!(cl.cmd(&["INCR", "c"]), Frame::Integer(2))
    })
}

/// Waits until node `odd` finds itself diverged.
fn wait_diverged(c: &Cluster, odd: usize) {
    wait_explained(
        LIMIT,
        || (metric(c, odd, "mu_sidecar_diverged")? == 1.0).then_some(()),
        || format!("node {} was not found diverged\n{}", odd + 1, c.logs()),
    );
}

/// A key changed directly in one backend: the next write to it gets
/// another reply there, the range's digests differ, and that node (the
/// odd one out) is fenced while the others only report it.
#[test]
fn a_backend_changed_behind_its_sidecar_is_found_and_fenced() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", FLAGS);
    let odd = change_one_backend(&c);
    wait_diverged(&c, odd);
    for i in ALL {
        // Each node counts it at its own next comparison.
        wait_explained(
            LIMIT,
            || (metric(&c, i, "mu_sidecar_divergence_total")? >= 1.0).then_some(()),
            || format!("node {} did not count the divergence\n{}", i + 1, c.logs()),
        );
        if i != odd {
            assert_eq!(metric(&c, i, "mu_sidecar_diverged"), Some(0.0));
            assert_eq!(http_get(c.nodes[i].http, "/readyz").unwrap().0, 200);
        }
    }
    let (code, why) = http_get(c.nodes[odd].http, "/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(why.contains("answered differently"), "{why}");
    let mut r = RespClient::connect(c.nodes[odd].listen).unwrap();
    let refused = r.cmd(&["GET", "c"]);
    assert!(
        text(&refused).contains("answered differently"),
        "{refused:?}"
    );
    let log = std::fs::read_to_string(&c.nodes[odd].log).unwrap();
    assert!(log.contains("DIVERGENCE"), "{log}");
}

/// A transaction that holds a read is still compared by its writes: the
/// read's result is left out (it may differ between healthy servers), the
/// INCR's is not.
#[test]
fn a_transaction_with_a_read_is_compared_by_its_writes() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", FLAGS);
    let odd = change_one_backend_then(&c, |cl| {
        for cmd in [&["MULTI"][..], &["SRANDMEMBER", "nosuch"], &["INCR", "c"]] {
            cl.cmd(cmd);
        }
        let got = cl.cmd(&["EXEC"]);
        assert!(
            matches!(&got, Frame::Array(v) if v.get(1) == Some(&Frame::Integer(2))),
            "{got:?}"
        );
    });
    wait_diverged(&c, odd);
}

/// memcached replies that differ by value count too.
#[test]
fn memcached_divergence_is_found() {
    let c = Cluster::start(Kind::Memcached, 3, "tcp", FLAGS);
    let leader = c.wait_leader(&ALL, LIMIT);
    let odd = (leader + 2) % 3;
    let mut m = McClient::connect(c.nodes[leader].listen).unwrap();
    assert_eq!(m.call(b"set n 0 0 1\r\n1\r\n").unwrap(), McReply::Stored);
    c.wait_applied(&ALL, c.commit_index(&ALL), LIMIT);
    let mut direct = McClient::connect(c.nodes[odd].backend).unwrap();
    assert_eq!(
        direct.call(b"set n 0 0 2\r\n50\r\n").unwrap(),
        McReply::Stored
    );
    assert_eq!(m.call(b"incr n 1\r\n").unwrap(), McReply::Number(2));
    for i in 0..16 {
        m.call(format!("set pad{i} 0 0 1\r\nx\r\n").as_bytes())
            .unwrap();
    }
    wait_diverged(&c, odd);
}

/// With `--on-divergence resync` the odd one out replaces its data with a
/// peer's copy and serves again.
#[test]
fn a_diverged_node_resyncs_when_asked_to() {
    let mut flags = FLAGS.to_vec();
    *flags.last_mut().unwrap() = "resync";
    let c = Cluster::start(Kind::Redis, 3, "tcp", &flags);
    let odd = change_one_backend(&c);
    let mut direct = RespClient::connect(c.nodes[odd].backend).unwrap();
    wait_explained(
        LIMIT,
        || {
            let needed = metric_with(&c, odd, "mu_sidecar_transfers_needed_total", "diverged")?;
            let ready = http_get(c.nodes[odd].http, "/readyz")?.0 == 200;
            (needed >= 1.0 && ready).then_some(())
        },
        || format!("node {} did not resync\n{}", odd + 1, c.logs()),
    );
    assert_eq!(text(&direct.cmd(&["GET", "c"])), "2");
    assert_eq!(metric(&c, odd, "mu_sidecar_diverged"), Some(0.0));
    // The copy holds the same data (its encodings may differ).
    let (code, body) = c.verify(odd);
    assert_eq!(code, 200, "{body}");
}

/// Values of every type, written through the sidecars; one replica's copy
/// of one key is changed directly. `/verify` on any node names exactly
/// that key, while writes go on.
#[test]
fn verify_names_the_key_that_differs() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", &[]);
    let leader = c.wait_leader(&ALL, LIMIT);
    let mut cl = RespClient::connect(c.nodes[leader].listen).unwrap();
    for i in 0..300 {
        let k = format!("k{i}");
        cl.cmd(&["SET", &format!("s:{k}"), &k, "PX", "1000000"]);
        cl.cmd(&["SADD", "set", &k]);
        cl.cmd(&["HSET", "hash", &k, &i.to_string()]);
        cl.cmd(&["ZADD", "zset", &i.to_string(), &k]);
        cl.cmd(&["RPUSH", "list", &k]);
    }
    cl.cmd(&["XADD", "stream", "1-1", "f", "v"]);
    cl.cmd(&["SELECT", "3"]);
    cl.cmd(&["SET", "in-db-3", "x"]);
    c.wait_applied(&ALL, c.commit_index(&ALL), LIMIT);
    let (code, report) = c.verify(0);
    assert_eq!(code, 200, "{report}");
    assert_eq!(
        report["keys"],
        serde_json::json!([306, 306, 306]),
        "{report}"
    );
    let odd = (leader + 2) % 3;
    let mut direct = RespClient::connect(c.nodes[odd].backend).unwrap();
    direct.cmd(&["SELECT", "3"]);
    assert_eq!(text(&direct.cmd(&["SET", "in-db-3", "tampered"])), "OK");
    // Writes go on during the check, through every node.
    let loads: Vec<_> = ALL
        .iter()
        .map(|&i| common::load::Load::start(Kind::Redis, c.nodes[i].listen))
        .collect();
    loads[0].grow(50, "writes before the check");
    let (code, report) = c.verify((leader + 1) % 3);
    for l in loads {
        l.stop();
    }
    assert_eq!(code, 409, "{report}");
    let diffs = report["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "{report}");
    assert_eq!(diffs[0]["db"], 3);
    assert_eq!(diffs[0]["key"], "in-db-3");
    let digests = diffs[0]["digests"].as_array().unwrap();
    let agree = |a: usize, b: usize| digests[a] == digests[b];
    let others: Vec<usize> = ALL.iter().copied().filter(|&i| i != odd).collect();
    assert!(
        agree(others[0], others[1]) && !agree(odd, others[0]),
        "{report}"
    );
}

#[test]
fn verify_compares_memcached_items() {
    let c = Cluster::start(Kind::Memcached, 3, "tcp", &[]);
    let mut m = McClient::connect(c.nodes[0].listen).unwrap();
    for i in 0..100 {
        let req = format!("set k{i} {i} 0 2\r\nv{}\r\n", i % 10);
        assert_eq!(m.call(req.as_bytes()).unwrap(), McReply::Stored);
    }
    c.wait_applied(&ALL, c.commit_index(&ALL), LIMIT);
    let (code, report) = c.verify(1);
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["keys"], serde_json::json!([100, 100, 100]));
    let mut direct = McClient::connect(c.nodes[2].backend).unwrap();
    assert_eq!(direct.call(b"delete k7\r\n").unwrap(), McReply::Deleted);
    let (code, report) = c.verify(0);
    assert_eq!(code, 409, "{report}\n{}", c.logs());
    let diffs = report["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "{report}");
    assert_eq!(diffs[0]["key"], "k7");
    assert_eq!(diffs[0]["digests"][2], serde_json::Value::Null, "{report}");
}

fn metric_with(c: &Cluster, i: usize, name: &str, part: &str) -> Option<f64> {
    let (_, body) = http_get(c.nodes[i].http, "/metrics")?;
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(part))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}
