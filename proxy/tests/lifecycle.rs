//! A node's life: clean shutdown on SIGTERM, linearizable reads, and
//! memcached through every node (rejoining after a loss: `rejoin.rs`).

mod common;

use common::{text, wait_for, Cluster, Kind, McClient, RespClient};
use mu_protocols::memcached::McReply;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// SIGTERM: the sidecar steps down, exits, and the others go on.
#[test]
fn sigterm_steps_down_cleanly() {
    let mut c = Cluster::start(Kind::Redis, 3, "shm", &[]);
    let all = [0, 1, 2];
    let leader = c.wait_leader(&all, LIMIT);
    c.nodes[leader].proc.signal("TERM");
    let proc = &mut c.nodes[leader].proc;
    let status = wait_for(LIMIT, "the sidecar to exit", || {
        proc.child.as_mut().unwrap().try_wait().ok().flatten()
    });
    assert!(status.success(), "exit status {status:?}");
    let others: Vec<usize> = all.into_iter().filter(|&i| i != leader).collect();
    let new = c.wait_leader(&others, LIMIT);
    assert_ne!(new, leader);
    let mut w = RespClient::connect(c.nodes[others[1]].listen).unwrap();
    assert_eq!(text(&w.cmd(&["SET", "after", "1"])), "OK");
}

/// With `--reads leader`, a read anywhere sees every write acknowledged
/// before it, wherever that write was sent.
#[test]
fn leader_reads_see_every_acknowledged_write() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", &["--reads", "leader"]);
    let mut conns: Vec<RespClient> = c
        .nodes
        .iter()
        .map(|n| RespClient::connect(n.listen).unwrap())
        .collect();
    for i in 0..300usize {
        let (w, r) = (i % 3, (i + 1) % 3);
        assert_eq!(text(&conns[w].cmd(&["SET", "k", &i.to_string()])), "OK");
        let got = conns[r].cmd(&["GET", "k"]);
        assert_eq!(
            text(&got),
            i.to_string(),
            "read {i} on node {} is stale",
            r + 1
        );
    }
}

/// memcached through every node: storage, arithmetic, touch, delete, meta
/// and noreply commands reach every backend; CAS is refused.
#[test]
fn memcached_writes_reach_every_backend() {
    let c = Cluster::start(Kind::Memcached, 3, "tcp", &[]);
    let mut m: Vec<McClient> = c
        .nodes
        .iter()
        .map(|n| McClient::connect(n.listen).unwrap())
        .collect();
    assert_eq!(m[0].call(b"set a 5 0 1\r\nx\r\n").unwrap(), McReply::Stored);
    assert_eq!(
        m[1].call(b"add b 0 0 2\r\n10\r\n").unwrap(),
        McReply::Stored
    );
    assert_eq!(
        m[2].call(b"add b 0 0 2\r\n99\r\n").unwrap(),
        McReply::NotStored
    );
    assert_eq!(m[2].call(b"incr b 5\r\n").unwrap(), McReply::Number(15));
    assert_eq!(
        m[0].call(b"append a 0 0 1\r\ny\r\n").unwrap(),
        McReply::Stored
    );
    assert_eq!(
        m[1].call(b"set gone 0 0 1\r\nz\r\n").unwrap(),
        McReply::Stored
    );
    assert_eq!(m[2].call(b"delete gone\r\n").unwrap(), McReply::Deleted);
    assert_eq!(m[0].call(b"touch a 1000\r\n").unwrap(), McReply::Touched);
    // noreply, then a read on the same connection sees it.
    m[1].stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let r = m[1]
        .call(b"set quiet 0 0 2 noreply\r\nqq\r\nget quiet\r\n")
        .unwrap();
    assert!(
        matches!(&r, McReply::Values(v) if &v[0].data[..] == b"qq"),
        "{r:?}"
    );
    let meta = m[2].call(b"ms metakey 2 T0\r\nmv\r\n").unwrap();
    assert!(matches!(meta, McReply::Meta(_)), "{meta:?}");
    let cas = m[0].call(b"cas a 0 0 1 1\r\nq\r\n").unwrap();
    assert!(
        matches!(&cas, McReply::ClientError(e) if String::from_utf8_lossy(e).contains("CAS")),
        "{cas:?}"
    );
    // A line memcached rejects is answered CLIENT_ERROR (nothing with
    // noreply), and the connection goes on, as memcached's own does.
    for (i, raw) in [
        &b"incr b abc\r\n"[..],
        b"touch a soon\r\n",
        b"get\r\n",
        b"mg a 5\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        let r = m[i % 3].call(raw).unwrap();
        assert!(matches!(r, McReply::ClientError(_)), "{raw:?}: {r:?}");
    }
    let r = m[1].call(b"incr b abc noreply\r\nincr b 1\r\n").unwrap();
    assert_eq!(r, McReply::Number(16), "the noreply error is not sent");
    let live = [0, 1, 2];
    c.wait_applied(&live, c.commit_index(&live), LIMIT);
    let expect = [
        ("a", Some("xy")),
        ("b", Some("16")),
        ("gone", None),
        ("quiet", Some("qq")),
        ("metakey", Some("mv")),
    ];
    for n in &c.nodes {
        let mut b = McClient::connect(n.backend).unwrap();
        for (key, want) in expect {
            let got = match b.call(format!("get {key}\r\n").as_bytes()).unwrap() {
                McReply::Values(v) => v
                    .first()
                    .map(|v| String::from_utf8_lossy(&v.data).into_owned()),
                other => panic!("get answered {other:?}"),
            };
            assert_eq!(got.as_deref(), want, "key {key} on node {}", n.id);
        }
    }
    // Reads are local and see the writes too.
    let r = m[2].call(b"get a b\r\n").unwrap();
    assert!(matches!(&r, McReply::Values(v) if v.len() == 2), "{r:?}");
}

/// The test harness's ports: each one handed out stays reserved for this
/// process (its lock file cannot be locked again, even from another open
/// file, as another test process would), and none is handed out twice.
#[test]
fn test_ports_are_reserved_for_the_process() {
    let ports: Vec<u16> = (0..20).map(|_| common::free_port()).collect();
    let mut seen = ports.clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen.len(),
        ports.len(),
        "a port handed out twice: {ports:?}"
    );
    for p in ports {
        assert!(
            (20_000..32_000).contains(&p),
            "port {p} outside 20000..32000"
        );
        let path = common::port_lock_path(p);
        let other = std::fs::File::open(&path).unwrap();
        assert!(
            other.try_lock().is_err(),
            "port {p}: its lock file {} is not held",
            path.display()
        );
    }
}
