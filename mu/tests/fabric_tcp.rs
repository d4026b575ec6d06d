//! The `tcp` fabric on loopback passes the fabric conformance suite,
//! including a writer process stopped mid-write; peers without the cluster
//! secret are rejected.

use mu::fabric::conformance::{run_all, suite_layout, GroupBuilder};
use mu::fabric::tcp::{TcpConfig, TcpEndpoint, TcpOptions};
use mu::fabric::{Completion, Fabric, Memory, OpId};
use mu::log::layout::{Layout, LOG};
use mu::{NodeId, OpError};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"conformance suite cluster secret";

/// Listeners for a group, on a loopback address of its own (127.0.x.y,
/// never 127.0.0.1). Outgoing connections on loopback always leave from
/// 127.0.0.1, so none of them, in this test or another running beside
/// it, can take a listener's port while its node is down: a restarted
/// node binds its old address again.
fn listeners(n: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    use std::sync::atomic::{AtomicU16, Ordering};
    static GROUP: AtomicU16 = AtomicU16::new(0);
    let g = GROUP.fetch_add(1, Ordering::Relaxed) % 60_000;
    let ip = std::net::Ipv4Addr::new(127, 0, 1 + (g / 250) as u8, 2 + (g % 250) as u8);
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((ip, 0)).expect("bind loopback"))
        .collect();
    let addrs = ls.iter().map(|l| l.local_addr().expect("addr")).collect();
    (ls, addrs)
}

fn endpoint(
    id: usize,
    addrs: &[SocketAddr],
    layout: Layout,
    l: TcpListener,
    secret: &[u8],
) -> TcpEndpoint {
    endpoint_with(id, addrs, layout, l, secret, TcpOptions::default())
}

fn endpoint_with(
    id: usize,
    addrs: &[SocketAddr],
    layout: Layout,
    l: TcpListener,
    secret: &[u8],
    options: TcpOptions,
) -> TcpEndpoint {
    let config = TcpConfig {
        id: NodeId(id as u8),
        peers: addrs.to_vec(),
        secret: secret.to_vec(),
        layout,
        options,
    };
    TcpEndpoint::start_with_listener(config, l).expect("start endpoint")
}

/// Builds loopback groups on free ports.
struct Tcp {
    /// Addresses and layout of the last group built.
    last: Option<(Vec<SocketAddr>, Layout)>,
    options: TcpOptions,
}

impl Tcp {
    fn new(options: TcpOptions) -> Self {
        Tcp {
            last: None,
            options,
        }
    }
}

impl GroupBuilder for Tcp {
    type F = TcpEndpoint;

    fn build(&mut self, n: usize, layout: Layout) -> Vec<TcpEndpoint> {
        let (ls, addrs) = listeners(n);
        self.last = Some((addrs.clone(), layout));
        ls.into_iter()
            .enumerate()
            .map(|(i, l)| endpoint_with(i, &addrs, layout, l, SECRET, self.options))
            .collect()
    }

    fn restart(&mut self, node: NodeId) -> Option<TcpEndpoint> {
        let (addrs, layout) = self.last.clone().expect("a group was built");
        let l = TcpListener::bind(addrs[node.idx()]).expect("bind the restarted node's address");
        Some(endpoint_with(
            node.idx(),
            &addrs,
            layout,
            l,
            SECRET,
            self.options,
        ))
    }

    fn kill(&mut self, endpoint: TcpEndpoint) {
        drop(endpoint);
    }

    fn dead_peer_bound(&self) -> Duration {
        TcpOptions::default().dead_peer_bound()
    }

    fn build_with_writer_process(
        &mut self,
        n: usize,
        layout: Layout,
        writer: NodeId,
        target: NodeId,
    ) -> Option<(Vec<Option<TcpEndpoint>>, Child)> {
        let (ls, addrs) = listeners(n);
        let mut nodes = Vec::new();
        for (i, l) in ls.into_iter().enumerate() {
            if i == writer.idx() {
                // The child binds this port itself.
                drop(l);
                nodes.push(None);
            } else {
                nodes.push(Some(endpoint_with(
                    i,
                    &addrs,
                    layout,
                    l,
                    SECRET,
                    self.options,
                )));
            }
        }
        let peers: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        let child = Command::new(env!("CARGO_BIN_EXE_mu-fabric-peer"))
            .args(["paused-writer", "--fabric", "tcp"])
            .args(["--group", &n.to_string()])
            .args(["--node", &writer.0.to_string()])
            .args(["--target", &target.0.to_string()])
            .args(["--peers", &peers.join(",")])
            .env(
                "MU_FABRIC_SECRET",
                std::str::from_utf8(SECRET).expect("utf-8"),
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("start mu-fabric-peer");
        Some((nodes, child))
    }
}

#[test]
fn tcp_fabric_passes_the_conformance_suite() {
    run_all(&mut Tcp::new(TcpOptions::default()));
}

/// Responders that never poll (they block for every request) and ones
/// that always poll (a window longer than the test) both conform.
#[test]
fn tcp_fabric_conforms_with_blocking_and_with_polling_responders() {
    for busy_poll in [Duration::ZERO, Duration::from_secs(3600)] {
        run_all(&mut Tcp::new(TcpOptions {
            busy_poll,
            ..TcpOptions::default()
        }));
    }
}

/// Log writes spaced wider than the responder's polling window: each one
/// finds the responder blocked again (its window over) and still lands,
/// in order, with a read of it right behind.
#[test]
fn log_writes_after_the_polling_window_ends_still_land() {
    let layout = suite_layout(2);
    let (mut ls, addrs) = listeners(2);
    let options = TcpOptions {
        busy_poll: Duration::from_micros(200),
        ..TcpOptions::default()
    };
    let l1 = ls.pop().expect("two");
    let l0 = ls.pop().expect("two");
    let mut leader = endpoint_with(0, &addrs, layout, l0, SECRET, options);
    let mut follower = endpoint_with(1, &addrs, layout, l1, SECRET, options);
    follower.grant(NodeId(0)).expect("grant");
    let target = mu::log::layout::RING;
    let landing = mu::log::layout::RING + 4096;
    for round in 1..=5u8 {
        leader.memory().write(target, &[round; 64]);
        leader
            .post_write(NodeId(1), OpId(2 * round as u64), target, target, 64)
            .expect("post");
        leader
            .post_read(NodeId(1), OpId(2 * round as u64 + 1), target, landing, 64)
            .expect("post");
        let done = wait_all(&mut leader, 2);
        assert_eq!(
            done,
            [
                (OpId(2 * round as u64), Ok(())),
                (OpId(2 * round as u64 + 1), Ok(()))
            ],
            "the write, then the read, both succeed"
        );
        let mut back = [0u8; 64];
        leader.memory().read(landing, &mut back);
        assert_eq!(back, [round; 64], "round {round} read back its write");
        // Past the 200 µs window: the next write meets a blocked responder.
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait(f: &mut TcpEndpoint, op: OpId) -> Result<(), OpError> {
    #[allow(
        clippy::disallowed_methods,
        reason = "a real-time test bounds its wait"
    )]
    let start = Instant::now();
    let mut out: Vec<Completion> = Vec::new();
    loop {
        f.poll(&mut out);
        if let Some(c) = out.iter().find(|c| c.op == op) {
            return c.result;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no completion");
        std::thread::yield_now();
    }
}

/// The next `k` completions, in the order they arrive.
fn wait_all(f: &mut TcpEndpoint, k: usize) -> Vec<(OpId, Result<(), OpError>)> {
    #[allow(
        clippy::disallowed_methods,
        reason = "a real-time test bounds its wait"
    )]
    let start = Instant::now();
    let mut out: Vec<Completion> = Vec::new();
    while out.len() < k {
        f.poll(&mut out);
        assert!(start.elapsed() < Duration::from_secs(10), "no completion");
        std::thread::yield_now();
    }
    out.iter().map(|c| (c.op, c.result)).collect()
}

#[test]
fn a_peer_without_the_cluster_secret_is_rejected_and_counted() {
    let layout = suite_layout(2);
    let (mut ls, addrs) = listeners(2);
    let l1 = ls.pop().expect("two");
    let l0 = ls.pop().expect("two");
    let mut good = endpoint(0, &addrs, layout, l0, SECRET);
    let mut bad = endpoint(1, &addrs, layout, l1, b"some other secret");
    good.grant(NodeId(1)).expect("grant");
    let before = {
        let mut b = vec![0u8; 4096];
        good.memory().read(0, &mut b);
        b
    };
    bad.memory().write(LOG, &[0xAB; 64]);
    for i in 0..3u64 {
        let w = OpId(10 + i);
        bad.post_write(NodeId(0), w, LOG, LOG, 64).expect("post");
        assert_eq!(
            wait(&mut bad, w),
            Err(OpError::Unreachable),
            "write without the secret"
        );
        let c = OpId(20 + i);
        bad.post_write(NodeId(0), c, LOG, 64, 64).expect("post");
        assert_eq!(
            wait(&mut bad, c),
            Err(OpError::Unreachable),
            "control write without the secret"
        );
    }
    assert!(
        bad.rejected() >= 1,
        "the connecting side counts the failed proof"
    );
    let mut after = vec![0u8; 4096];
    good.memory().read(0, &mut after);
    assert_eq!(
        before, after,
        "nothing from the unauthenticated peer landed"
    );
    let mut log = [0u8; 64];
    good.memory().read(LOG, &mut log);
    assert_ne!(log, [0xAB; 64]);

    // A raw client that sends a hello and a wrong proof is refused and
    // counted by the accepting side.
    use std::io::{Read, Write};
    let rejected = good.rejected();
    let mut s = std::net::TcpStream::connect(addrs[0]).expect("connect");
    mu::fabric::tcp::wire::write_hello(&mut s, NodeId(1), NodeId(0), &[7; 32]).expect("hello");
    let mut challenge = [0u8; 64];
    s.read_exact(&mut challenge).expect("challenge");
    s.write_all(&[0u8; 32]).expect("proof");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a wrong proof must not be accepted");
    #[allow(
        clippy::disallowed_methods,
        reason = "a real-time test bounds its wait"
    )]
    let start = Instant::now();
    while good.rejected() == rejected {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "rejection not counted"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_write_half_sent_when_the_grant_moves_is_refused_when_it_completes() {
    use mu::fabric::tcp::wire::{self, RequestHeader};
    use mu::log::layout::RING;
    use std::io::{Read, Write};
    let layout = suite_layout(3);
    let (mut ls, addrs) = listeners(3);
    let l2 = ls.pop().expect("three");
    drop(ls.pop()); // node 1 is the raw client below
    let l0 = ls.pop().expect("three");
    let mut owner = endpoint(0, &addrs, layout, l0, SECRET);
    let _other = endpoint(2, &addrs, layout, l2, SECRET);
    owner.grant(NodeId(1)).expect("grant");

    let mut s = std::net::TcpStream::connect(addrs[0]).expect("connect");
    let key = wire::derive_key(SECRET);
    wire::client_handshake(&mut s, &key, NodeId(1), NodeId(0)).expect("handshake");
    let mut response = [0u8; wire::RESPONSE_HEADER];
    // A whole write lands while node 1 holds the log.
    let h = RequestHeader {
        kind: wire::KIND_WRITE,
        op: 1,
        remote: RING,
        len: 64,
    };
    s.write_all(&h.encode()).expect("send");
    s.write_all(&[0x11; 64]).expect("send");
    s.read_exact(&mut response).expect("response");
    assert_eq!(response[0], wire::STATUS_OK);
    let mut landed = [0u8; 64];
    owner.memory().read(RING, &mut landed);
    assert_eq!(landed, [0x11; 64]);

    // Half of a 1 MiB write, then the owner grants its log to node 2, then
    // the rest: as if the writer had been paused in the middle.
    let len = 1u64 << 20;
    let h = RequestHeader {
        kind: wire::KIND_WRITE,
        op: 2,
        remote: RING,
        len,
    };
    s.write_all(&h.encode()).expect("send");
    s.write_all(&vec![0x22; (len / 2) as usize]).expect("send");
    owner.grant(NodeId(2)).expect("grant");
    let snapshot = {
        let mut b = vec![0u8; (layout.log_end() - LOG) as usize];
        owner.memory().read(LOG, &mut b);
        b
    };
    s.write_all(&vec![0x22; (len / 2) as usize]).expect("send");
    s.read_exact(&mut response).expect("response");
    assert_eq!(
        response[0],
        wire::STATUS_PERMISSION,
        "the completed write is refused"
    );
    assert_eq!(u64::from_le_bytes(response[1..9].try_into().expect("8")), 2);
    let mut after = vec![0u8; snapshot.len()];
    owner.memory().read(LOG, &mut after);
    assert!(
        after == snapshot,
        "the half-sent write landed after the grant"
    );
}
