//! Stock clients through the sidecar, unchanged: redis-cli, redis-benchmark
//! and redis-py in front of real redis-servers; pymemcache and memcslap in
//! front of real memcacheds. Each checks the client's own view, then that
//! every node's backend holds the same data.

mod common;

use common::{
    python_with, redis_snapshot, run_ok, sidecar_program, tool, wait_for, Cluster, Kind, McClient,
};
use mu_protocols::memcached::McReply;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const ALL: [usize; 3] = [0, 1, 2];
/// Bound on one client run: generous for a debug build on a shared machine.
const CLIENT_LIMIT: Duration = Duration::from_secs(60);

/// A follower (0-based) of a started cluster, so writes take the
/// forwarding path as well.
fn follower(c: &Cluster) -> usize {
    (c.wait_leader(&ALL, Duration::from_secs(10)) + 1) % 3
}

/// Waits until every node applied everything committed so far.
fn settle(c: &Cluster) {
    let commit = c.commit_index(&ALL);
    c.wait_applied(&ALL, commit, Duration::from_secs(20));
}

/// The three Redis backends hold identical data; returns node 1's.
fn redis_backends_agree(c: &Cluster) -> Vec<(u32, String, String, Vec<String>, i64)> {
    settle(c);
    let first = redis_snapshot(c.nodes[0].backend);
    for n in &c.nodes[1..] {
        assert_eq!(
            redis_snapshot(n.backend),
            first,
            "backend of node {} differs from node 1's\n{}",
            n.id,
            c.logs()
        );
    }
    first
}

/// redis-cli against node `i` with `args`, feeding `stdin`; its stdout.
fn cli(c: &Cluster, i: usize, args: &[&str], stdin: &[u8]) -> String {
    let port = c.nodes[i].listen.port().to_string();
    run_ok(
        Command::new(tool("redis-cli", "redis-tools"))
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args),
        stdin,
        CLIENT_LIMIT,
    )
}

/// redis-cli's one-shot commands, its -n/-x/-r options, RESP3 (-3),
/// commands read from stdin (a transaction), --pipe mass insertion and
/// --scan, through every node.
#[test]
fn redis_cli_works_through_every_node() {
    let c = Cluster::start(Kind::Redis, 3, "tcp", &[]);
    assert_eq!(cli(&c, 0, &["SET", "cli:k", "v"], b""), "OK\n");
    assert_eq!(cli(&c, 0, &["GET", "cli:k"], b""), "v\n");
    wait_for(Duration::from_secs(10), "node 3 to read cli:k", || {
        (cli(&c, 2, &["GET", "cli:k"], b"") == "v\n").then_some(())
    });
    assert_eq!(
        cli(&c, 1, &["-r", "3", "INCR", "cli:ctr"], b""),
        "1\n2\n3\n"
    );
    assert_eq!(cli(&c, 2, &["-n", "2", "SET", "cli:db2", "y"], b""), "OK\n");
    assert_eq!(cli(&c, 2, &["-n", "2", "GET", "cli:db2"], b""), "y\n");
    assert_eq!(
        cli(&c, 1, &["-x", "SET", "cli:blob"], b"from stdin"),
        "OK\n"
    );
    assert_eq!(cli(&c, 1, &["GET", "cli:blob"], b""), "from stdin\n");
    // Errors reach redis-cli as errors: the server's, and the sidecar's
    // refusals.
    let err = cli(&c, 0, &["INCR", "cli:blob"], b"");
    assert!(err.contains("ERR value is not an integer"), "{err}");
    let refused = cli(&c, 0, &["EVAL", "return 1", "0"], b"");
    assert!(refused.contains("refuses 'eval'"), "{refused}");
    // RESP3: HELLO 3 and a map reply.
    let hello = cli(&c, 1, &["-3", "HELLO", "3"], b"");
    assert!(hello.lines().any(|l| l == "proto 3"), "{hello}");
    assert_eq!(
        cli(&c, 1, &["-3", "HSET", "cli:h", "a", "1"], b""),
        "1\n",
        "HSET over RESP3"
    );
    // A map prints as "field value" (RESP2's flat array would print two lines).
    assert_eq!(cli(&c, 1, &["-3", "HGETALL", "cli:h"], b""), "a 1\n");
    // Commands from stdin share one connection: a transaction.
    let tx = cli(&c, 2, &[], b"MULTI\nINCR cli:tx\nINCR cli:tx\nEXEC\n");
    assert_eq!(tx, "OK\nQUEUED\nQUEUED\n1\n2\n");
    // Mass insertion in the raw protocol (--pipe), then --scan.
    let mut mass = Vec::new();
    for i in 0..1000 {
        let key = format!("cli:mass:{i}");
        write!(
            mass,
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n",
            key.len()
        )
        .unwrap();
    }
    let piped = cli(&c, 1, &["--pipe"], &mass);
    assert!(piped.contains("errors: 0, replies: 1000"), "{piped}");
    let scanned = cli(&c, 1, &["--scan", "--pattern", "cli:mass:99*"], b"");
    assert_eq!(scanned.lines().count(), 11, "{scanned}");

    let data = redis_backends_agree(&c);
    assert_eq!(data.len(), 1000 + 6, "{:?}", &data[..6.min(data.len())]);
}

/// redis-benchmark (50 connections) and redis-py, in RESP2 (Debian's) and
/// in RESP3 (redis-py 5), through a follower over the shm fabric.
#[test]
fn redis_benchmark_and_redis_py_work_through_a_follower() {
    let c = Cluster::start(Kind::Redis, 3, "shm", &[]);
    let f = follower(&c);
    let port = c.nodes[f].listen.port().to_string();
    let out = redis_benchmark(&port, &["-t", "set,get,incr,lpush", "-n", "2000", "-q"]);
    for test in ["SET", "GET", "INCR", "LPUSH"] {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("{test}: ")) && l.contains("requests per second")),
            "redis-benchmark did not finish {test}:\n{out}"
        );
    }
    assert!(
        !out.contains("rror") && !out.contains("WARN"),
        "redis-benchmark reported a problem:\n{out}"
    );
    let data = redis_backends_agree(&c);
    let value = |key: &str| {
        data.iter()
            .find(|k| k.1 == key)
            .unwrap_or_else(|| panic!("{key} missing: {data:?}"))
            .3
            .clone()
    };
    assert_eq!(value("counter:__rand_int__"), vec!["2000"]);
    assert_eq!(value("mylist").len(), 2000);
    assert_eq!(value("key:__rand_int__").len(), 1);

    let mut cmd = Command::new(python_with("redis", "python3-redis"));
    cmd.arg(script("redis_client.py")).arg(&port);
    cmd.args(c.nodes.iter().map(|n| n.backend.port().to_string()));
    let out = run_ok(&mut cmd, b"", CLIENT_LIMIT);
    assert!(out.contains("redis-py: all checks passed"), "{out}");
    redis_backends_agree(&c);

    // RESP3: typed write replies, a transaction and client-side caching.
    let mut cmd = Command::new(common::python_resp3());
    cmd.arg(script("redis_resp3_client.py")).arg(&port);
    cmd.args(c.nodes.iter().map(|n| n.backend.port().to_string()));
    let out = run_ok(&mut cmd, b"", CLIENT_LIMIT);
    assert!(out.contains("redis-py RESP3: all checks passed"), "{out}");
    redis_backends_agree(&c);
}

/// pymemcache (every storage and arithmetic command, noreply, get_many)
/// and memcslap (sets and gets from two threads) through a follower.
#[test]
fn pymemcache_and_memcslap_work_through_a_follower() {
    let c = Cluster::start(Kind::Memcached, 3, "tcp", &[]);
    let f = follower(&c);
    let port = c.nodes[f].listen.port().to_string();
    let mut cmd = Command::new(python_with("pymemcache", "python3-pymemcache"));
    cmd.arg(script("memcached_client.py")).arg(&port);
    cmd.args(c.nodes.iter().map(|n| n.backend.port().to_string()));
    let out = run_ok(&mut cmd, b"", CLIENT_LIMIT);
    assert!(out.contains("pymemcache: all checks passed"), "{out}");

    settle(&c);
    let before = memcached_stat(c.nodes[0].backend, "cmd_set");
    let server = format!("127.0.0.1:{port}");
    for test in ["set", "get"] {
        let out = run_ok(
            Command::new(tool("memcslap", "libmemcached-tools")).args([
                &format!("--servers={server}"),
                "--concurrency=2",
                "--execute-number=300",
                &format!("--test={test}"),
            ]),
            b"",
            CLIENT_LIMIT,
        );
        assert!(out.contains(&format!("Time to {test}")), "{out}");
    }
    settle(&c);
    let sets = memcached_stat(c.nodes[0].backend, "cmd_set") - before;
    // The set test stores 300 keys from each thread; the get test loads
    // its keys with sets first.
    assert!(sets >= 600, "memcslap's sets reached node 1: {sets}");
    for stat in ["cmd_set", "curr_items"] {
        let first = memcached_stat(c.nodes[0].backend, stat);
        for n in &c.nodes[1..] {
            assert_eq!(
                memcached_stat(n.backend, stat),
                first,
                "{stat} of node {}'s memcached differs from node 1's",
                n.id
            );
        }
    }
}

/// Servers reached over Unix sockets (`--backend unix:PATH`): redis-benchmark
/// pipelines through a follower and every redis-server ends up with the
/// same data; memcached (which then listens on nothing else) serves every
/// node's reads with what was written through a follower. A malformed
/// `--backend` stops the sidecar with a message that shows both forms.
#[test]
fn servers_on_unix_sockets_work_behind_every_node() {
    let c = Cluster::start_unix(Kind::Redis, 3, "shm");
    let port = c.nodes[follower(&c)].listen.port().to_string();
    let out = redis_benchmark(&port, &["-t", "set,incr", "-n", "2000", "-P", "16", "-q"]);
    assert!(
        !out.contains("rror"),
        "redis-benchmark reported a problem:\n{out}"
    );
    let data = redis_backends_agree(&c);
    let counter = data.iter().find(|k| k.1 == "counter:__rand_int__");
    assert_eq!(
        counter.map(|k| k.3.clone()),
        Some(vec!["2000".to_string()]),
        "{data:?}"
    );
    drop(c);

    let c = Cluster::start_unix(Kind::Memcached, 3, "tcp");
    let f = follower(&c);
    let mut w = McClient::connect(c.nodes[f].listen).unwrap();
    for i in 0..50 {
        let set = format!("set k{i} {i} 0 2\r\n{i:02}\r\n");
        assert_eq!(w.call(set.as_bytes()).unwrap(), McReply::Stored);
    }
    assert_eq!(w.call(b"incr k7 10\r\n").unwrap(), McReply::Number(17));
    settle(&c);
    for n in &c.nodes {
        let mut r = McClient::connect(n.listen).unwrap();
        for i in 0..50 {
            let want = if i == 7 {
                "17".to_string()
            } else {
                format!("{i:02}")
            };
            match r.call(format!("get k{i}\r\n").as_bytes()).unwrap() {
                McReply::Values(v) if v.len() == 1 => {
                    assert_eq!(
                        String::from_utf8_lossy(&v[0].data),
                        want,
                        "k{i} on node {}",
                        n.id
                    );
                    assert_eq!(v[0].flags, i, "flags of k{i} on node {}", n.id);
                }
                other => panic!("get k{i} on node {} answered {other:?}", n.id),
            }
        }
    }

    let args = ["--backend", "localhost"];
    let out = Command::new(sidecar_program(&args).unwrap())
        .args(args)
        .output()
        .expect("mu-sidecar runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a malformed --backend was accepted");
    assert!(
        err.contains("ip:port") && err.contains("unix:/path"),
        "{err}"
    );
}

/// redis-benchmark against the sidecar on `port` with `args`; its output.
fn redis_benchmark(port: &str, args: &[&str]) -> String {
    run_ok(
        Command::new(tool("redis-benchmark", "redis-tools"))
            .args(["-h", "127.0.0.1", "-p", port])
            .args(args),
        b"",
        CLIENT_LIMIT,
    )
}

/// The path of a script in tests/python.
fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// One counter from a memcached's `stats`.
fn memcached_stat(addr: SocketAddr, name: &str) -> u64 {
    let mut s = TcpStream::connect(addr).expect("memcached accepts");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"stats\r\n").expect("stats sent");
    let mut text = String::new();
    let mut chunk = [0u8; 8192];
    while !text.ends_with("END\r\n") {
        let n = s.read(&mut chunk).expect("stats read");
        assert!(n > 0, "memcached closed during stats: {text}");
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    let stats: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("STAT ")?.split_once(' '))
        .collect();
    stats
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in stats: {text}"))
        .parse()
        .expect("a number")
}
