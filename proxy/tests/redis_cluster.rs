//! Three sidecars in front of three real redis-servers: writes through any
//! node reach every backend identically; refused, malformed and oversized
//! requests change nothing anywhere.

mod common;

use common::{redis_snapshot, text, Cluster, Kind, RespClient};
use mu_protocols::resp::Frame;
use std::time::Duration;

/// Writes of many kinds through every node, then the three backends hold
/// the same keys, types, values and absolute expirations.
fn writes_reach_every_backend(fabric: &str) {
    let c = Cluster::start(Kind::Redis, 3, fabric, &[]);
    let mut clients: Vec<RespClient> = c
        .nodes
        .iter()
        .map(|n| RespClient::connect(n.listen).expect("sidecar accepts"))
        .collect();
    for (i, cl) in clients.iter_mut().enumerate() {
        let k = |s: &str| format!("{s}-{i}");
        assert_eq!(text(&cl.cmd(&["SET", &k("str"), "v", "EX", "1000"])), "OK");
        assert_eq!(
            cl.cmd(&["INCRBY", "counter", "5"]),
            Frame::Integer(5 * (i as i64 + 1))
        );
        cl.cmd(&["HSET", &k("hash"), "f1", "a", "f2", "b"]);
        cl.cmd(&["RPUSH", &k("list"), "x", "y", "z"]);
        cl.cmd(&["SADD", &k("set"), "m1", "m2"]);
        cl.cmd(&["ZADD", &k("zset"), "1", "one", "2", "two"]);
        cl.cmd(&["EXPIRE", &k("hash"), "500"]);
        // A transaction, and a write in another database.
        assert_eq!(text(&cl.cmd(&["MULTI"])), "OK");
        assert_eq!(text(&cl.cmd(&["SET", &k("tx"), "1"])), "QUEUED");
        assert_eq!(text(&cl.cmd(&["INCR", &k("tx")])), "QUEUED");
        assert_eq!(
            cl.cmd(&["EXEC"]),
            Frame::Array(vec![Frame::Simple("OK".into()), Frame::Integer(2)])
        );
        assert_eq!(text(&cl.cmd(&["SELECT", "3"])), "OK");
        cl.cmd(&["SET", &k("db3"), "in-three"]);
        // Read your own write, in the selected database.
        assert_eq!(text(&cl.cmd(&["GET", &k("db3")])), "in-three");
        cl.cmd(&["SELECT", "0"]);
        assert_eq!(cl.cmd(&["GET", &k("db3")]), Frame::NullBulk);
    }
    // Pipelined writes then a read on the same connection.
    let cmds: Vec<Vec<String>> = (0..50)
        .map(|j| vec!["RPUSH".into(), "piped".into(), j.to_string()])
        .chain(std::iter::once(vec!["LLEN".into(), "piped".into()]))
        .collect();
    let replies = clients[2].pipeline(&cmds).expect("pipeline");
    assert_eq!(replies[49], Frame::Integer(50));
    assert_eq!(
        replies[50],
        Frame::Integer(50),
        "the read sees the pipelined writes"
    );
    // Pipelined plain SETs, which every node's applier sends to its
    // backend as MSETs: over a list and over a key with a TTL, in two
    // databases, with other writes between, through every node.
    for (i, cl) in clients.iter_mut().enumerate() {
        let set = |k: String| vec!["SET".to_string(), k, format!("from-{i}")];
        let cmds: Vec<Vec<String>> = [set(format!("list-{i}")), set(format!("str-{i}"))]
            .into_iter()
            .chain((0..40).map(|j| set(format!("joined-{i}-{j}"))))
            .chain(std::iter::once(vec!["SELECT".into(), "3".into()]))
            .chain((0..20).map(|j| set(format!("joined3-{i}-{j}"))))
            .chain(std::iter::once(vec!["SELECT".into(), "0".into()]))
            .chain(std::iter::once(vec!["INCR".into(), "counter".into()]))
            .chain(std::iter::once(set(format!("joined-{i}-0"))))
            .collect();
        let replies = cl.pipeline(&cmds).expect("pipeline");
        for (cmd, reply) in cmds.iter().zip(&replies) {
            if cmd[0] != "INCR" {
                assert_eq!(text(reply), "OK", "{cmd:?}");
            }
        }
        assert_eq!(replies[cmds.len() - 2], Frame::Integer(15 + i as i64 + 1));
    }
    let live = [0, 1, 2];
    let commit = c.commit_index(&live);
    c.wait_applied(&live, commit, Duration::from_secs(10));
    let first = redis_snapshot(c.nodes[0].backend);
    assert_eq!(
        first.len(),
        3 * 7 + 2 + 3 * 60,
        "snapshot holds the writes: {first:?}"
    );
    for i in 0..3 {
        let key = |k: String| first.iter().find(|e| e.1 == k).expect("key").clone();
        let list = key(format!("list-{i}"));
        assert_eq!(
            (&list.2[..], list.4),
            ("string", -1),
            "SET replaced the list"
        );
        let s = key(format!("str-{i}"));
        assert_eq!(s.4, -1, "SET dropped the TTL of {s:?}");
    }
    for n in &c.nodes {
        let mut b = RespClient::connect(n.backend).expect("backend connects");
        let stats = text(&b.cmd(&["INFO", "commandstats"]));
        assert!(
            stats.contains("cmdstat_mset:calls="),
            "node {}: the pipelined SETs reached its backend without MSET:\n{stats}",
            n.id
        );
    }
    for n in &c.nodes[1..] {
        assert_eq!(
            redis_snapshot(n.backend),
            first,
            "backend of node {} differs",
            n.id
        );
    }
    let counter = first.iter().find(|k| k.1 == "counter").expect("counter");
    assert_eq!(counter.2, "string");
}

#[test]
fn writes_reach_every_backend_tcp() {
    writes_reach_every_backend("tcp");
}

#[test]
fn writes_reach_every_backend_shm() {
    writes_reach_every_backend("shm");
}

/// Refused, unknown, oversized and malformed requests: each gets a clear
/// error, the connection stays usable where Redis keeps it open, and no
/// backend changes.
#[test]
fn bad_requests_get_errors_and_change_nothing() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", &["--max-entry", "4096"]);
    let mut cl = RespClient::connect(c.nodes[1].listen).expect("connects");
    cl.cmd(&["SET", "keep", "1"]);
    // Every replica holds the write before the snapshot is taken.
    let live = [0, 1, 2];
    c.wait_applied(&live, c.commit_index(&live), Duration::from_secs(10));
    let before: Vec<_> = c.nodes.iter().map(|n| redis_snapshot(n.backend)).collect();
    let refused = cl.cmd(&["SPOP", "keep"]);
    assert!(
        text(&refused).starts_with("ERR mu-sidecar refuses 'spop'"),
        "{refused:?}"
    );
    let unknown = cl.cmd(&["FROBNICATE", "x"]);
    assert!(
        text(&unknown)
            .to_lowercase()
            .starts_with("err unknown command 'frobnicate'"),
        "{unknown:?}"
    );
    // A setting that shapes what one backend stores is refused (a local
    // maxmemory would make that node alone refuse writes); a node-local
    // one reaches this node's backend only.
    let config = cl.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    assert!(
        text(&config).starts_with("ERR mu-sidecar refuses 'config set'"),
        "{config:?}"
    );
    assert_eq!(
        text(&cl.cmd(&["CONFIG", "SET", "slowlog-max-len", "77"])),
        "OK"
    );
    for n in &c.nodes {
        let mut b = RespClient::connect(n.backend).expect("backend connects");
        let get = |b: &mut RespClient, p: &str| match b.cmd(&["CONFIG", "GET", p]) {
            Frame::Array(v) if v.len() == 2 => text(&v[1]),
            other => panic!("CONFIG GET {p}: {other:?}"),
        };
        assert_eq!(get(&mut b, "maxmemory"), "0", "node {}", n.id);
        let slowlog = get(&mut b, "slowlog-max-len");
        assert_eq!(
            slowlog == "77",
            n.id == c.nodes[1].id,
            "node {}: {slowlog}",
            n.id
        );
    }
    let big = "x".repeat(10_000);
    let too_big = cl.cmd(&["SET", "big", &big]);
    assert!(
        text(&too_big).contains("over the limit"),
        "oversized write: {too_big:?}"
    );
    let arity = cl.cmd(&["SET", "only-key"]);
    assert!(text(&arity).starts_with("ERR"), "{arity:?}");
    // The connection still works, in order.
    assert_eq!(text(&cl.cmd(&["GET", "keep"])), "1");
    // A malformed frame: an error, then the connection closes.
    let mut bad = RespClient::connect(c.nodes[0].listen).expect("connects");
    bad.send_raw(b"*1\r\n$abc\r\n").unwrap();
    let e = bad.read().expect("an error reply");
    assert!(text(&e).starts_with("ERR Protocol error"), "{e:?}");
    assert!(bad.read().is_err(), "the connection closes");
    c.wait_applied(&live, c.commit_index(&live), Duration::from_secs(10));
    let after: Vec<_> = c.nodes.iter().map(|n| redis_snapshot(n.backend)).collect();
    assert_eq!(
        before, after,
        "a refused or failed request changed a backend"
    );
}
