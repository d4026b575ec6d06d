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
    // Unknown commands and subcommands, and wrong arities, are answered
    // in the server's own words.
    let mut direct = RespClient::connect(c.nodes[1].backend).expect("backend connects");
    for req in [
        &["FROBNICATE", "x", "y"][..],
        &["frobnicate"],
        &["CONFIG", "FROB"],
        &["CONFIG"],
        &["SET", "only-key"],
        &["get"],
    ] {
        assert_eq!(cl.cmd(req), direct.cmd(req), "{req:?}");
    }
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

/// A pipeline of `cmds` through `cl`, as text replies.
fn pipeline_texts(cl: &mut RespClient, cmds: &[&[&str]]) -> Vec<String> {
    let cmds: Vec<Vec<String>> = cmds
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    cl.pipeline(&cmds)
        .expect("pipeline answered")
        .iter()
        .map(text)
        .collect()
}

/// ACL users keep their permissions through the sidecar: the writes and
/// transactions it runs on every node as its own user are refused when
/// the client's user may not run them (checked before anything is
/// replicated), on the leader and on a follower that forwards writes; a
/// user with every permission writes as before; nothing refused reaches
/// any backend.
#[test]
fn acl_users_keep_their_permissions() {
    let users: &[&str] = &[
        "--user",
        "reader",
        "on",
        ">rpw",
        "~*",
        "+@read",
        "+@transaction", //
        "--user",
        "app",
        "on",
        ">apw",
        "~app:*",
        "&*",
        "+@all",
    ];
    let servers = common::Servers {
        via: common::Via::Tcp,
        args: users,
    };
    let c = Cluster::start_with(
        Kind::Redis,
        3,
        "tcp",
        &[],
        |_| Vec::new(),
        Duration::from_secs(30),
        servers,
    );
    let leader = c.wait_leader(&[0, 1, 2], Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    for (i, node) in [leader, follower].into_iter().enumerate() {
        let k = |s: &str| format!("{s}{i}");
        let mut cl = RespClient::connect(c.nodes[node].listen).expect("connects");
        // The default user has every permission.
        assert_eq!(text(&cl.cmd(&["SET", &k("a"), "1"])), "OK");
        assert_eq!(
            text(&cl.cmd(&["AUTH", "reader", "wrong"]))
                .split(' ')
                .next(),
            Some("WRONGPASS")
        );
        assert_eq!(text(&cl.cmd(&["AUTH", "reader", "rpw"])), "OK");
        assert_eq!(text(&cl.cmd(&["GET", &k("a")])), "1");
        let set = text(&cl.cmd(&["SET", &k("a"), "2"]));
        assert_eq!(
            set, "NOPERM this user has no permissions to run the 'set' command",
            "node {}",
            c.nodes[node].id
        );
        // A transaction with a refused command is aborted, as by Redis.
        let tx = pipeline_texts(
            &mut cl,
            &[&["MULTI"], &["INCR", &k("a")], &["GET", &k("a")], &["EXEC"]],
        );
        assert!(tx[1].starts_with("NOPERM"), "{tx:?}");
        assert_eq!(tx[2], "QUEUED", "{tx:?}");
        assert!(tx[3].starts_with("EXECABORT"), "{tx:?}");
        // The user changes within one pipeline; each request is checked
        // against the user it runs as.
        let mixed = pipeline_texts(
            &mut cl,
            &[
                &["SET", &k("app:1"), "r"],
                &["AUTH", "app", "apw"],
                &["SET", &format!("app:{i}"), "x"],
                &["SET", &k("other"), "x"],
                &["MULTI"],
                &["GET", &k("a")],
                &["EXEC"],
                &["PUBLISH", "news", "hi"],
                &["AUTH", "default", "anything"],
                &["SET", &k("b"), "1"],
            ],
        );
        assert!(mixed[0].starts_with("NOPERM"), "{mixed:?}");
        assert_eq!(mixed[1..3], ["OK", "OK"], "{mixed:?}");
        assert_eq!(
            mixed[3],
            format!(
                "NOPERM this user has no permissions to access the '{}' key",
                k("other")
            ),
            "{mixed:?}"
        );
        assert!(
            mixed[5].starts_with("NOPERM") && mixed[6].starts_with("EXECABORT"),
            "{mixed:?}"
        );
        assert_eq!(mixed[7], "0", "{mixed:?}");
        // The default user has no password: AUTH default succeeds.
        assert_eq!(mixed[8..], ["OK", "OK"], "{mixed:?}");
        assert_eq!(text(&cl.cmd(&["GET", &k("a")])), "1");
    }
    // A permission taken through the sidecar (ACL is per server, as in
    // Redis replication: this node's) applies to the next write at once.
    let mut admin = RespClient::connect(c.nodes[leader].listen).expect("connects");
    let mut app = RespClient::connect(c.nodes[leader].listen).expect("connects");
    assert_eq!(text(&app.cmd(&["AUTH", "app", "apw"])), "OK");
    assert_eq!(text(&app.cmd(&["SET", "app:late", "1"])), "OK");
    assert_eq!(text(&admin.cmd(&["ACL", "SETUSER", "app", "-set"])), "OK");
    let late = text(&app.cmd(&["SET", "app:late", "2"]));
    assert!(late.starts_with("NOPERM"), "{late}");

    let live = [0, 1, 2];
    c.wait_applied(&live, c.commit_index(&live), Duration::from_secs(10));
    let snaps: Vec<_> = c.nodes.iter().map(|n| redis_snapshot(n.backend)).collect();
    let keys: Vec<(u32, String, String, Vec<String>, i64)> = [
        ("a0", "1"),
        ("a1", "1"),
        ("app:0", "x"),
        ("app:1", "x"),
        ("app:late", "1"),
        ("b0", "1"),
        ("b1", "1"),
    ]
    .iter()
    .map(|(k, v)| (0, k.to_string(), "string".into(), vec![v.to_string()], -1))
    .collect();
    for (n, s) in c.nodes.iter().zip(&snaps) {
        assert_eq!(s, &keys, "node {} holds exactly the allowed writes", n.id);
    }
}

/// A server with a password: the sidecar's own connections authenticate
/// with `--backend-password`; a client that has not authenticated is
/// answered NOAUTH for writes and reads, and nothing is replicated; once
/// it has, its writes reach every backend.
#[test]
fn a_password_protected_server_needs_auth_through_the_sidecar() {
    let servers = common::Servers {
        via: common::Via::Tcp,
        args: &["--requirepass", "s3cret"],
    };
    let c = Cluster::start_with(
        Kind::Redis,
        3,
        "tcp",
        &["--backend-password", "s3cret"],
        |_| Vec::new(),
        Duration::from_secs(30),
        servers,
    );
    let mut cl = RespClient::connect(c.nodes[1].listen).expect("connects");
    let r = pipeline_texts(
        &mut cl,
        &[
            &["SET", "k", "early"],
            &["GET", "k"],
            &["AUTH", "wrong"],
            &["SET", "k", "early"],
            &["AUTH", "s3cret"],
            &["SET", "k", "v"],
            &["GET", "k"],
        ],
    );
    assert!(
        r[0].starts_with("NOAUTH") && r[1].starts_with("NOAUTH"),
        "{r:?}"
    );
    assert!(
        r[2].starts_with("WRONGPASS") && r[3].starts_with("NOAUTH"),
        "{r:?}"
    );
    assert_eq!(r[4..], ["OK", "OK", "v"], "{r:?}");
    let live = [0, 1, 2];
    c.wait_applied(&live, c.commit_index(&live), Duration::from_secs(10));
    for n in &c.nodes {
        let mut b = RespClient::connect(n.backend).expect("backend connects");
        assert_eq!(text(&b.cmd(&["AUTH", "s3cret"])), "OK");
        assert_eq!(b.cmd(&["DBSIZE"]), Frame::Integer(1), "node {}", n.id);
        assert_eq!(text(&b.cmd(&["GET", "k"])), "v", "node {}", n.id);
    }
    // A refused HELLO changes no protocol: writes pipelined after it are
    // still answered in the one the connection speaks.
    let mut cl = RespClient::connect(c.nodes[2].listen).expect("connects");
    let hello = cl.cmd(&["HELLO", "3", "AUTH", "default", "s3cret"]);
    assert!(matches!(hello, Frame::Map(_)), "{hello:?}");
    let mut out = bytes::BytesMut::new();
    for cmd in [
        &["HELLO", "2", "AUTH", "default", "wrong"][..],
        &["ZINCRBY", "z", "1.5", "m"],
    ] {
        mu_protocols::resp::encode_request(cmd, &mut out);
    }
    cl.send_raw(&out).expect("sent");
    let refused = cl.read().expect("HELLO's reply");
    assert!(text(&refused).starts_with("WRONGPASS"), "{refused:?}");
    assert_eq!(
        cl.read().expect("ZINCRBY's reply"),
        Frame::Double(bytes::Bytes::from_static(b"1.5"))
    );
    assert_eq!(
        cl.cmd(&["ZINCRBY", "z", "1", "m"]),
        Frame::Double(bytes::Bytes::from_static(b"2.5"))
    );
}

/// `CLIENT REPLY OFF|SKIP|ON` through the sidecar: the unwanted replies
/// are dropped, every request still runs (writes reach every backend), and
/// later replies stay in step with their requests.
#[test]
fn client_reply_off_and_skip_drop_replies_in_step() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", &[]);
    let live = [0, 1, 2];
    let leader = c.wait_leader(&live, Duration::from_secs(30));
    for i in [leader, (leader + 1) % 3] {
        let mut cl = RespClient::connect(c.nodes[i].listen).expect("connects");
        let key = |k: &str| format!("reply:{i}:{k}");
        let (a, b, n) = (key("a"), key("b"), key("n"));
        let cmds: Vec<Vec<String>> = [
            vec!["CLIENT", "REPLY", "OFF"],
            vec!["SET", &a, "1"],
            vec!["GET", &a],
            vec!["CLIENT", "REPLY", "SKIP"],
            vec!["INCR", &n],
            vec!["CLIENT", "REPLY", "ON"],
            vec!["GET", &a],
            vec!["CLIENT", "REPLY", "SKIP"],
            vec!["SET", &b, "2"],
            vec!["GET", &b],
            vec!["CLIENT", "REPLY", "maybe"],
            vec!["INCR", &n],
        ]
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
        let mut out = bytes::BytesMut::new();
        for cmd in &cmds {
            mu_protocols::resp::encode_request(cmd, &mut out);
        }
        cl.send_raw(&out).expect("sent");
        let got: Vec<String> = (0..5).map(|_| text(&cl.read().expect("reply"))).collect();
        assert_eq!(got, ["OK", "1", "2", "ERR syntax error", "2"], "node {i}");
        // Nothing more was sent: the next reply is the next request's.
        assert_eq!(text(&cl.cmd(&["PING"])), "PONG", "node {i}");
    }
    c.wait_applied(&live, c.commit_index(&live), Duration::from_secs(10));
    let snaps: Vec<_> = c.nodes.iter().map(|n| redis_snapshot(n.backend)).collect();
    assert_eq!(snaps[0].len(), 6, "{:?}", snaps[0]);
    assert!(snaps.iter().all(|s| *s == snaps[0]), "{snaps:?}");
}

/// The id of the backend's client connection whose last command was
/// `cmd` (read with `CLIENT LIST` on the backend itself).
fn backend_client_with_last(backend: std::net::SocketAddr, cmd: &str) -> String {
    let mut b = RespClient::connect(backend).expect("backend connects");
    let list = text(&b.cmd(&["CLIENT", "LIST"]));
    let line = list
        .lines()
        .find(|l| l.split(' ').any(|f| f == format!("cmd={cmd}")))
        .unwrap_or_else(|| panic!("no client ran {cmd}: {list}"));
    line.split(' ')
        .find_map(|f| f.strip_prefix("id="))
        .expect("an id")
        .to_string()
}

/// RESP3 client-side caching through a follower: the server's
/// invalidations reach the client at once while it is idle, in their
/// place among replies (before the reply of the client's own write that
/// caused one), and replies stay in step. When the backend connection
/// that held the tracking breaks, the client is disconnected (its cache
/// would go stale silently otherwise); a client without such state just
/// goes on over a new one.
#[test]
fn client_tracking_invalidations_reach_the_client_in_order() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", &[]);
    let live = [0, 1, 2];
    let leader = c.wait_leader(&live, Duration::from_secs(30));
    let f = (leader + 1) % 3;
    let mut t = RespClient::connect(c.nodes[f].listen).expect("connects");
    assert!(matches!(t.cmd(&["HELLO", "3"]), Frame::Map(_)));
    assert_eq!(text(&t.cmd(&["CLIENT", "TRACKING", "ON"])), "OK");
    assert_eq!(t.cmd(&["GET", "cached"]), Frame::Null);
    let invalidate = |key: &str| {
        Frame::Push(vec![
            Frame::Bulk("invalidate".into()),
            Frame::Array(vec![Frame::Bulk(key.to_string().into())]),
        ])
    };
    // Another client writes through the leader; the follower applies it
    // and its server tells the tracking client, which sends nothing.
    let mut w = RespClient::connect(c.nodes[leader].listen).expect("connects");
    assert_eq!(text(&w.cmd(&["SET", "cached", "v1"])), "OK");
    assert_eq!(t.read().expect("a push"), invalidate("cached"));
    // Replies stay in step after the push.
    assert_eq!(text(&t.cmd(&["GET", "cached"])), "v1");
    // The client's own write: the invalidation comes before its reply.
    let own: Vec<Vec<String>> = vec![
        vec!["GET".into(), "own".into()],
        vec!["SET".into(), "own".into(), "x".into()],
        vec!["PING".into()],
    ];
    let mut out = bytes::BytesMut::new();
    for cmd in &own {
        mu_protocols::resp::encode_request(cmd, &mut out);
    }
    t.send_raw(&out).expect("sent");
    let got: Vec<Frame> = (0..4).map(|_| t.read().expect("reply")).collect();
    assert_eq!(
        got,
        [
            Frame::Null,
            invalidate("own"),
            Frame::Simple("OK".into()),
            Frame::Simple("PONG".into())
        ]
    );

    // A client with no state on its backend connection: the connection
    // is killed under it, and it goes on.
    let mut plain = RespClient::connect(c.nodes[f].listen).expect("connects");
    assert_eq!(text(&plain.cmd(&["ECHO", "plain"])), "plain");
    let backend = c.nodes[f].backend;
    let id = backend_client_with_last(backend, "echo");
    let mut b = RespClient::connect(backend).expect("backend connects");
    assert_eq!(b.cmd(&["CLIENT", "KILL", "ID", &id]), Frame::Integer(1));
    assert_eq!(text(&plain.cmd(&["GET", "cached"])), "v1");

    // The tracking client's backend connection is killed: it is told by
    // its own connection closing.
    assert_eq!(text(&t.cmd(&["ECHO", "tracked"])), "tracked");
    let id = backend_client_with_last(backend, "echo");
    assert_eq!(b.cmd(&["CLIENT", "KILL", "ID", &id]), Frame::Integer(1));
    let closed = t.read();
    assert!(
        closed.is_err(),
        "the tracking client was not disconnected: {closed:?}"
    );
}

/// Writes and transactions through the sidecar are answered in the
/// client's protocol with the types a plain redis-server gives: under
/// RESP3 doubles, maps, sets and nulls (also inside an EXEC reply), under
/// RESP2 their flat forms, with clients of both protocols writing in turn.
#[test]
fn replies_have_the_types_of_the_clients_protocol() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", &[]);
    let live = [0, 1, 2];
    let leader = c.wait_leader(&live, Duration::from_secs(30));
    let (_reference_proc, reference) = common::start_backend(Kind::Redis);
    let corpus: &[&[&str]] = &[
        &["ZADD", "z", "1", "a", "2", "b", "3", "c"],
        &["ZADD", "z", "INCR", "1.5", "a"],
        &["ZINCRBY", "z", "2", "c"],
        &["ZPOPMIN", "z"],
        &["ZMPOP", "1", "z", "MAX", "COUNT", "1"],
        &["ZMPOP", "1", "missing", "MIN"],
        &["HSET", "h", "f", "1", "g", "2"],
        &["HINCRBYFLOAT", "h", "f", "0.5"],
        &["SADD", "s", "x"],
        &["RPUSH", "l", "a", "b"],
        &["LPOP", "missing", "2"],
        &["LMPOP", "1", "missing", "LEFT"],
        &["GETDEL", "missing"],
        &["SET", "k", "v", "GET"],
        &["GEOADD", "g", "13.361389", "38.115556", "p"],
        &["MULTI"],
        &["HGETALL", "h"],
        &["ZSCORE", "z", "b"],
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["SMEMBERS", "s"],
        &["GET", "missing"],
        &["LPOP", "missing", "2"],
        &["GEOPOS", "g", "p", "nowhere"],
        &["INCRBYFLOAT", "n", "1.25"],
        &["EXEC"],
        &["SET", "plain", "1"],
    ];
    // Clients of both protocols through a follower and the leader, in
    // turn, so that the backends' apply connections switch back and forth.
    for (round, (node, proto)) in [
        (leader, "3"),
        ((leader + 1) % 3, "2"),
        (leader, "2"),
        ((leader + 2) % 3, "3"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut via = RespClient::connect(c.nodes[node].listen).expect("connects");
        let mut direct = RespClient::connect(reference).expect("reference connects");
        // The same keys in a database of each round's own.
        let db = round.to_string();
        for cl in [&mut via, &mut direct] {
            assert!(!cl.cmd(&["HELLO", proto]).is_error(), "HELLO {proto}");
            assert_eq!(text(&cl.cmd(&["SELECT", &db])), "OK");
        }
        for cmd in corpus {
            let (got, want) = (via.cmd(cmd), direct.cmd(cmd));
            assert_eq!(got, want, "RESP{proto} through node {node}: {cmd:?}");
        }
    }
    c.wait_applied(&live, c.commit_index(&live), Duration::from_secs(10));
    let snaps: Vec<_> = c.nodes.iter().map(|n| redis_snapshot(n.backend)).collect();
    assert!(snaps.iter().all(|s| *s == snaps[0]), "{snaps:?}");
}

/// The elements of an array or push, as text, joined by spaces.
fn words(f: &Frame) -> String {
    match f {
        Frame::Array(v) | Frame::Push(v) => v.iter().map(text).collect::<Vec<_>>().join(" "),
        f => text(f),
    }
}

/// Sends `cmds` at once, then `PING <mark>`, and returns every frame that
/// came before the PING's reply: whatever the commands were answered,
/// confirmed or sent (published messages) until then.
fn frames_until_mark(cl: &mut RespClient, cmds: &[&[&str]], mark: &str) -> Vec<Frame> {
    let mut out = bytes::BytesMut::new();
    for c in cmds.iter().copied().chain([&["PING", mark][..]]) {
        mu_protocols::resp::encode_request(c, &mut out);
    }
    cl.send_raw(&out).expect("sends");
    let is_mark = |f: &Frame| match f {
        // RESP2's subscribed mode answers PING with an array.
        Frame::Array(v) if v.len() == 2 => text(&v[0]) == "pong" && text(&v[1]) == mark,
        f => matches!(f, Frame::Bulk(_)) && text(f) == mark,
    };
    let mut frames = Vec::new();
    loop {
        let f = cl
            .read()
            .unwrap_or_else(|e| panic!("{cmds:?}: {e}; so far {frames:?}"));
        if is_mark(&f) {
            return frames;
        }
        frames.push(f);
    }
}

/// Pub/Sub through a follower and the leader, in RESP2 and RESP3, frame
/// for frame as a plain redis-server answers it: confirmations, messages
/// published through another node, the commands RESP2's subscribed mode
/// refuses (a refused write changes no node), a pipeline that subscribes,
/// writes and leaves; then subscribers on every node get a message
/// published through any one.
#[test]
fn subscribers_get_what_is_published_through_any_node() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", &[]);
    let live = [0, 1, 2];
    let leader = c.wait_leader(&live, Duration::from_secs(30));
    let (_reference_proc, reference) = common::start_backend(Kind::Redis);
    // A step: commands sent together to the subscriber, or (first word
    // "publish") a message published through another node.
    let corpus: &[&[&[&str]]] = &[
        &[&["UNSUBSCRIBE"]],
        &[&["SUBSCRIBE"]],
        &[&["SUBSCRIBE", "a", "a", "b"]],
        &[&["PING"]],
        &[&["publish", "a", "hello"]],
        &[&["SET", "k", "v"]],
        &[&["GET", "k"]],
        &[&["SET", "k"]],
        &[&["NOSUCHCOMMAND"]],
        &[&["MULTI"], &["EXEC"]],
        &[&["PSUBSCRIBE", "a*"]],
        &[&["publish", "ab", "pattern"]],
        &[&["UNSUBSCRIBE", "b", "a"]],
        &[&["publish", "a", "pattern only"]],
        &[&["PUNSUBSCRIBE"]],
        &[&["SET", "k", "v2"]],
        &[&["GET", "k"]],
        &[
            &["SUBSCRIBE", "x"],
            &["SET", "k", "v3"],
            &["UNSUBSCRIBE"],
            &["GET", "k"],
        ],
        &[&["SSUBSCRIBE", "s"]],
        &[&["spublish", "s", "sharded"]],
        &[&["SUNSUBSCRIBE"]],
        &[&["SUBSCRIBE", "q"]],
        &[&["RESET"]],
        &[&["SET", "k", "v4"], &["GET", "k"]],
    ];
    for (round, (node, proto)) in [((leader + 1) % 3, "2"), (leader, "3"), (leader, "2")]
        .into_iter()
        .enumerate()
    {
        let publisher_node = (node + 2) % 3;
        let mut via = RespClient::connect(c.nodes[node].listen).expect("connects");
        let mut direct = RespClient::connect(reference).expect("reference connects");
        let mut publisher = RespClient::connect(c.nodes[publisher_node].listen).unwrap();
        let mut direct_publisher = RespClient::connect(reference).unwrap();
        let db = round.to_string();
        for cl in [&mut via, &mut direct] {
            assert!(!cl.cmd(&["HELLO", proto]).is_error(), "HELLO {proto}");
            assert_eq!(text(&cl.cmd(&["SELECT", &db])), "OK");
        }
        for cl in [&mut publisher, &mut direct_publisher] {
            assert_eq!(text(&cl.cmd(&["SELECT", &db])), "OK");
        }
        for (i, step) in corpus.iter().enumerate() {
            let mark = format!("mark-{i}");
            let is_publish = |c: &[&str]| ["publish", "spublish"].contains(&c[0]);
            if is_publish(step[0]) {
                let cmd = step[0];
                // Counts the subscribers of each server: the publisher's
                // node has none.
                assert_eq!(publisher.cmd(cmd), Frame::Integer(0), "{cmd:?}");
                assert_eq!(direct_publisher.cmd(cmd), Frame::Integer(1), "{cmd:?}");
                // Applied on the subscriber's node: its server sent the
                // message before it reads the PING below.
                c.wait_applied(&[node], c.commit_index(&live), Duration::from_secs(10));
            }
            let cmds: Vec<&[&str]> = step.iter().copied().filter(|c| !is_publish(c)).collect();
            let got = frames_until_mark(&mut via, &cmds, &mark);
            let want = frames_until_mark(&mut direct, &cmds, &mark);
            assert_eq!(got, want, "RESP{proto} through node {node}: {step:?}");
        }
    }
    c.wait_applied(&live, c.commit_index(&live), Duration::from_secs(10));
    // The writes refused in the subscribed mode changed no node: every
    // backend holds what the reference holds.
    let want = redis_snapshot(reference);
    for n in &c.nodes {
        assert_eq!(redis_snapshot(n.backend), want);
    }

    // A subscriber on every node; a message published through each node
    // reaches all three, with nothing sent by them meanwhile.
    let mut subs: Vec<RespClient> = c
        .nodes
        .iter()
        .map(|n| RespClient::connect(n.listen).expect("connects"))
        .collect();
    for s in &mut subs {
        let confirmed = s.cmd(&["SUBSCRIBE", "everywhere"]);
        assert_eq!(words(&confirmed), "subscribe everywhere 1");
    }
    for from in live {
        let mut p = RespClient::connect(c.nodes[from].listen).unwrap();
        let payload = format!("from node {}", from + 1);
        // Each server counts its own subscriber.
        assert_eq!(
            p.cmd(&["PUBLISH", "everywhere", &payload]),
            Frame::Integer(1)
        );
        for (i, s) in subs.iter_mut().enumerate() {
            let got = s
                .read()
                .unwrap_or_else(|e| panic!("subscriber on node {}: {e}", i + 1));
            assert_eq!(words(&got), format!("message everywhere {payload}"));
        }
    }

    // A subscriber whose server connection breaks (the server kills it)
    // loses its subscriptions with it, so it is disconnected too, as a
    // direct subscriber would be, and its library subscribes again.
    let mut b = RespClient::connect(c.nodes[1].backend).unwrap();
    assert_eq!(
        b.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]),
        Frame::Integer(1)
    );
    let closed = subs[1].read();
    assert!(
        matches!(&closed, Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
        "the subscriber was not disconnected: {closed:?}"
    );
    let mut p = RespClient::connect(c.nodes[0].listen).unwrap();
    assert_eq!(
        p.cmd(&["PUBLISH", "everywhere", "after"]),
        Frame::Integer(1)
    );
    assert_eq!(words(&subs[2].read().unwrap()), "message everywhere after");
}
