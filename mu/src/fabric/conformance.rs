//! The conformance suite every fabric backend passes (DESIGN §3.2).
//!
//! A backend's test file is one call: `run_all(&mut MyBuilder::new())`.
//! The [`GroupBuilder`] makes fresh groups of endpoints, lets time pass
//! (the simulator's clock only moves when it is driven) and kills nodes.
//! Each check builds its own group, so one failure does not hide another.
//!
//! The checks:
//! - [`per_peer_order`]: many writes to one peer complete in post order and a
//!   read posted after them sees the last one;
//! - [`read_your_write`]: bytes written to the control area, the log and the
//!   scratch area of a peer read back unchanged;
//! - [`write_without_permission`]: a write into a log the writer does not
//!   hold fails with [`OpError::Permission`] and changes nothing, not even
//!   the control-area part of a write that straddles into the log;
//! - [`grant_fences_previous_holder`]: after `grant` returns no write from
//!   the previous holder lands, including writes posted before the grant;
//!   the new holder's writes land; granting to oneself fences everyone;
//! - [`control_area_always_accessible`]: whoever holds the log, every member
//!   reads and writes the control area;
//! - [`dead_peer_fails_in_bounded_time`]: operations to a killed node fail
//!   within [`GroupBuilder::dead_peer_bound`], and the others still work;
//! - [`large_writes`]: a 1 MiB write lands whole and reads back;
//! - [`restarted_peer_is_reachable_again`]: after a node is killed and
//!   restarted, operations to it succeed again (the backend reconnects or
//!   remaps) and its log is fenced until it grants it;
//! - [`paused_writer_is_fenced`]: a writer in another process, stopped with
//!   SIGSTOP in the middle of 1 MiB writes, is resumed after the owner
//!   granted its log to another node and changes nothing (backends that
//!   span processes; in-process backends are covered by the fencing of
//!   in-flight writes above).

use crate::error::OpError;
use crate::fabric::{Completion, Fabric, Memory, OpId};
use crate::log::layout::{self, Layout, LOG, RING};
use crate::types::NodeId;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Ring size of the suite's groups: room for a 1 MiB write and more.
pub const SUITE_RING: u64 = 4 << 20;
/// Largest entry payload of the suite's groups.
pub const SUITE_MAX_PAYLOAD: u32 = 4096;
/// Size of the writes of the paused-writer check and of [`large_writes`].
pub const LARGE_WRITE: u64 = 1 << 20;
/// How long the suite waits for any one expected event before failing.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(20);

/// The layout of a suite group of `n` nodes.
pub fn suite_layout(n: usize) -> Layout {
    Layout::new(SUITE_RING, SUITE_MAX_PAYLOAD, n)
}

/// Makes groups of one backend for the suite.
pub trait GroupBuilder {
    /// The backend's endpoint.
    type F: Fabric;

    /// A fresh group of `n` endpoints with regions of `layout`; element `i`
    /// is node `i`. No node grants its log to anyone yet.
    fn build(&mut self, n: usize, layout: Layout) -> Vec<Self::F>;

    /// Lets time pass once; the suite calls it in every wait loop. Backends
    /// with their own threads need nothing (the default yields the thread);
    /// the simulator runs its clock to the next event.
    fn pump(&mut self) {
        std::thread::yield_now();
    }

    /// Kills the node of `endpoint`: from now on operations addressed to it
    /// fail within [`GroupBuilder::dead_peer_bound`].
    fn kill(&mut self, endpoint: Self::F);

    /// The bound within which an operation to a dead node fails.
    fn dead_peer_bound(&self) -> Duration;

    /// Brings node `node` of the last group built, killed before, back as
    /// a new incarnation; `None` for backends that cannot.
    fn restart(&mut self, node: NodeId) -> Option<Self::F> {
        let _ = node;
        None
    }

    /// A fresh group of `n` nodes in which node `writer` runs in a separate
    /// process that calls [`paused_writer_child`] with `target`; its slot in
    /// the returned vector is `None`. `None` for backends that cannot span
    /// processes.
    fn build_with_writer_process(
        &mut self,
        n: usize,
        layout: Layout,
        writer: NodeId,
        target: NodeId,
    ) -> Option<(Vec<Option<Self::F>>, Child)> {
        let _ = (n, layout, writer, target);
        None
    }
}

/// Runs every check of the suite; panics with a description on the first
/// violation.
pub fn run_all<B: GroupBuilder>(builder: &mut B) {
    per_peer_order(builder);
    read_your_write(builder);
    write_without_permission(builder);
    grant_fences_previous_holder(builder);
    control_area_always_accessible(builder);
    large_writes(builder);
    dead_peer_fails_in_bounded_time(builder);
    restarted_peer_is_reachable_again(builder);
    paused_writer_is_fenced(builder);
}

#[allow(
    clippy::disallowed_methods,
    reason = "the suite bounds its waits in real time"
)]
fn clock() -> Instant {
    Instant::now()
}

/// A group under test with per-node completion buffers.
struct Group<'b, B: GroupBuilder> {
    builder: &'b mut B,
    nodes: Vec<Option<B::F>>,
    done: Vec<HashMap<OpId, Completion>>,
    order: Vec<Vec<(NodeId, OpId)>>,
    next_op: u64,
    layout: Layout,
}

impl<'b, B: GroupBuilder> Group<'b, B> {
    fn new(builder: &'b mut B, n: usize) -> Self {
        let layout = suite_layout(n);
        let nodes = builder.build(n, layout).into_iter().map(Some).collect();
        Self::from_nodes(builder, nodes, layout)
    }

    fn from_nodes(builder: &'b mut B, nodes: Vec<Option<B::F>>, layout: Layout) -> Self {
        let n = nodes.len();
        Group {
            builder,
            nodes,
            done: vec![HashMap::new(); n],
            order: vec![Vec::new(); n],
            next_op: 1,
            layout,
        }
    }

    fn node(&mut self, id: u8) -> &mut B::F {
        self.nodes[usize::from(id)].as_mut().expect("node is alive")
    }

    fn local_write(&mut self, id: u8, offset: u64, data: &[u8]) {
        self.node(id).memory().write(offset, data);
    }

    fn local_read(&mut self, id: u8, offset: u64, len: u64) -> Vec<u8> {
        let mut buf = vec![0u8; len as usize];
        self.node(id).memory().read(offset, &mut buf);
        buf
    }

    fn write(&mut self, from: u8, to: u8, local: u64, remote: u64, len: u64) -> OpId {
        let op = OpId(self.next_op);
        self.next_op += 1;
        self.node(from)
            .post_write(NodeId(to), op, local, remote, len)
            .unwrap_or_else(|e| panic!("post_write {from}->{to}: {e}"));
        op
    }

    fn read(&mut self, from: u8, to: u8, remote: u64, local: u64, len: u64) -> OpId {
        let op = OpId(self.next_op);
        self.next_op += 1;
        self.node(from)
            .post_read(NodeId(to), op, remote, local, len)
            .unwrap_or_else(|e| panic!("post_read {from}->{to}: {e}"));
        op
    }

    fn grant(&mut self, owner: u8, to: u8) {
        self.node(owner)
            .grant(NodeId(to))
            .unwrap_or_else(|e| panic!("grant {owner}->{to}: {e}"));
    }

    fn poll_all(&mut self) {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let Some(n) = n else { continue };
            out.clear();
            n.poll(&mut out);
            for c in out.drain(..) {
                self.order[i].push((c.peer, c.op));
                self.done[i].insert(c.op, c);
            }
        }
    }

    /// Waits for the completion of `op` posted by `node`, within `limit`.
    fn wait_within(&mut self, node: u8, op: OpId, limit: Duration) -> Result<(), OpError> {
        let start = clock();
        loop {
            self.poll_all();
            if let Some(c) = self.done[usize::from(node)].remove(&op) {
                return c.result;
            }
            assert!(
                start.elapsed() < limit,
                "operation {op:?} of node {node} did not complete within {limit:?}"
            );
            self.builder.pump();
        }
    }

    fn wait(&mut self, node: u8, op: OpId) -> Result<(), OpError> {
        self.wait_within(node, op, EVENT_DEADLINE)
    }

    fn expect_ok(&mut self, node: u8, op: OpId, what: &str) {
        let r = self.wait(node, op);
        assert_eq!(r, Ok(()), "{what}: expected success");
    }

    /// The completions of `node` for operations addressed to `peer`, in the
    /// order they were polled.
    fn completion_order(&self, node: u8, peer: u8) -> Vec<OpId> {
        self.order[usize::from(node)]
            .iter()
            .filter(|(p, _)| *p == NodeId(peer))
            .map(|(_, op)| *op)
            .collect()
    }

    fn log_snapshot(&mut self, id: u8) -> Vec<u8> {
        let len = self.layout.log_end() - LOG;
        self.local_read(id, LOG, len)
    }
}

/// Deterministic non-repeating bytes for write number `seed`.
fn pattern(seed: u64, len: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes to one peer complete in post order; a read posted after them
/// sees the last one.
pub fn per_peer_order<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 2);
    g.grant(1, 0);
    const K: u64 = 200;
    let target = RING + 128;
    let mut ops = Vec::new();
    for i in 0..K {
        // Each write has its own source bytes: they must stay unchanged
        // until the completion is polled.
        let src = RING + 4096 + 8 * i;
        g.local_write(0, src, &(i + 1).to_le_bytes());
        ops.push(g.write(0, 1, src, target, 8));
    }
    let landing = layout::slot(layout::STAGE_ACKS, NodeId(0));
    let read = g.read(0, 1, target, landing, 8);
    ops.push(read);
    // A control-area write after them is ordered too.
    let ctl = g.write(
        0,
        1,
        RING + 4096,
        layout::slot(layout::REQUESTS, NodeId(0)),
        8,
    );
    ops.push(ctl);
    for &op in &ops {
        g.expect_ok(0, op, "ordered write or read");
    }
    assert_eq!(
        g.completion_order(0, 1),
        ops,
        "completions to one peer must arrive in post order"
    );
    let seen = u64::from_le_bytes(g.local_read(0, landing, 8).try_into().expect("8 bytes"));
    assert_eq!(seen, K, "a read posted after {K} writes must see the last");
    let landed = u64::from_le_bytes(g.local_read(1, target, 8).try_into().expect("8 bytes"));
    assert_eq!(landed, K, "the target must hold the last write");
}

/// Bytes written to a peer's control area, log and scratch read back.
pub fn read_your_write<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 3);
    g.grant(2, 0);
    let scratch = g.layout.scratch(NodeId(1));
    let places = [
        (layout::slot(layout::REQUESTS, NodeId(0)), 8u64),
        (LOG, 64),
        (RING + 64 * 3, 4096),
        (scratch, 4096),
    ];
    for (i, &(remote, len)) in places.iter().enumerate() {
        let data = pattern(100 + i as u64, len);
        let src = RING + (i as u64) * 8192;
        g.local_write(0, src, &data);
        let w = g.write(0, 2, src, remote, len);
        let back = RING + 64 * 1024 + (i as u64) * 8192;
        let r = g.read(0, 2, remote, back, len);
        g.expect_ok(0, w, "write to a held log / the control area");
        g.expect_ok(0, r, "read back");
        assert_eq!(g.local_read(0, back, len), data, "read back at {remote}");
        assert_eq!(g.local_read(2, remote, len), data, "landed at {remote}");
    }
}

/// A write into a log the writer does not hold fails with `Permission` and
/// changes nothing.
pub fn write_without_permission<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 3);
    let before = g.local_read(1, 0, g.layout.log_end());
    let data = pattern(7, 4096);
    g.local_write(0, RING, &data);
    // Nobody holds node 1's log yet.
    let w = g.write(0, 1, RING, RING + 256, 4096);
    assert_eq!(
        g.wait(0, w),
        Err(OpError::Permission),
        "write to an ungranted log"
    );
    // Someone else holds it.
    g.grant(1, 2);
    let w = g.write(0, 1, RING, LOG, 64);
    assert_eq!(
        g.wait(0, w),
        Err(OpError::Permission),
        "write to a log held by another"
    );
    // A write that straddles the control area and the log changes neither.
    let w = g.write(0, 1, RING, LOG - 1024, 4096);
    assert_eq!(
        g.wait(0, w),
        Err(OpError::Permission),
        "write straddling into the log"
    );
    let after = g.local_read(1, 0, g.layout.log_end());
    assert!(
        before == after,
        "a refused write changed the target's region"
    );
}

/// After `grant` returns, no write from the previous holder lands, not even
/// one posted before the grant; the new holder's writes land.
pub fn grant_fences_previous_holder<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 3);
    let (owner, old, new) = (0u8, 1u8, 2u8);
    g.grant(owner, old);
    let first = pattern(1, 64);
    g.local_write(old, RING, &first);
    let w = g.write(old, owner, RING, RING, 64);
    g.expect_ok(old, w, "the holder's write");
    // Writes in flight while the owner grants the log to someone else.
    const K: u64 = 64;
    let mut inflight = Vec::new();
    for i in 0..K {
        let src = RING + 4096 + 256 * i;
        g.local_write(old, src, &pattern(1000 + i, 256));
        inflight.push(g.write(old, owner, src, RING + 256 * (i + 1), 256));
    }
    g.grant(owner, new);
    let snapshot = g.log_snapshot(owner);
    for (i, &op) in inflight.iter().enumerate() {
        match g.wait(old, op) {
            Ok(()) => {
                // It completed successfully, so it landed before the grant.
                let at = (RING + 256 * (i as u64 + 1) - LOG) as usize;
                assert!(
                    snapshot[at..at + 256] == pattern(1000 + i as u64, 256)[..],
                    "write {i} completed successfully but was not in place when grant returned"
                );
            }
            Err(OpError::Permission) => {}
            Err(e) => panic!("in-flight write of the revoked holder failed with {e}"),
        }
    }
    for i in 0..8 {
        let w = g.write(old, owner, RING, RING + 64 * i, 64);
        assert_eq!(
            g.wait(old, w),
            Err(OpError::Permission),
            "revoked holder's write"
        );
    }
    assert!(
        g.log_snapshot(owner) == snapshot,
        "a write of the revoked holder landed after grant returned"
    );
    // The new holder writes.
    let data = pattern(2, 512);
    g.local_write(new, RING, &data);
    let w = g.write(new, owner, RING, RING + 8192, 512);
    g.expect_ok(new, w, "the new holder's write");
    assert_eq!(g.local_read(owner, RING + 8192, 512), data);
    // Granting to oneself fences every remote writer.
    g.grant(owner, owner);
    let w = g.write(new, owner, RING, RING + 8192, 512);
    assert_eq!(
        g.wait(new, w),
        Err(OpError::Permission),
        "after a self-grant"
    );
    // The owner's own writes to its log always work.
    g.local_write(owner, RING, &first);
    assert_eq!(g.local_read(owner, RING, 64), first);
}

/// Whoever holds the log, every member reads and writes the control area.
pub fn control_area_always_accessible<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 3);
    for holder in [None, Some(0u8), Some(2u8), Some(1u8)] {
        if let Some(h) = holder {
            g.grant(1, h);
        }
        for from in [0u8, 2] {
            let value = pattern(u64::from(from) + 10 * holder.map_or(9, u64::from), 8);
            let slot = layout::slot(layout::REQUESTS, NodeId(from));
            g.local_write(from, RING, &value);
            let w = g.write(from, 1, RING, slot, 8);
            g.expect_ok(from, w, "control-area write");
            let r = g.read(from, 1, layout::STATUS, RING + 64, 64);
            g.expect_ok(from, r, "control-area read");
            assert_eq!(g.local_read(1, slot, 8), value);
            // The log is readable by everyone too (a candidate reads it).
            let r = g.read(from, 1, LOG, RING + 128, 64);
            g.expect_ok(from, r, "log read");
        }
    }
}

/// A 1 MiB write lands whole and reads back.
pub fn large_writes<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 2);
    g.grant(1, 0);
    for round in 0..3u64 {
        let data = pattern(50 + round, LARGE_WRITE);
        g.local_write(0, RING, &data);
        let w = g.write(0, 1, RING, RING + 64 * round, LARGE_WRITE);
        g.expect_ok(0, w, "1 MiB write");
        assert!(
            g.local_read(1, RING + 64 * round, LARGE_WRITE) == data,
            "1 MiB landed"
        );
        let back = RING + 2 * LARGE_WRITE;
        let r = g.read(0, 1, RING + 64 * round, back, LARGE_WRITE);
        g.expect_ok(0, r, "1 MiB read");
        assert!(
            g.local_read(0, back, LARGE_WRITE) == data,
            "1 MiB read back"
        );
    }
}

/// Operations to a killed node fail within the backend's bound; the others
/// keep working.
pub fn dead_peer_fails_in_bounded_time<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 3);
    g.grant(2, 0);
    g.grant(1, 0);
    let w = g.write(0, 2, RING, RING, 64);
    g.expect_ok(0, w, "write before the kill");
    let victim = g.nodes[2].take().expect("alive");
    g.builder.kill(victim);
    let bound = g.builder.dead_peer_bound();
    // The bound, plus slack for a loaded machine.
    let limit = bound + bound / 2 + Duration::from_millis(500);
    for round in 0..3u64 {
        let started = clock();
        let w = g.write(0, 2, RING, RING + 64 * round, 64);
        let r = g.read(0, 2, layout::STATUS, RING + 4096, 64);
        let wr = g.wait_within(0, w, limit);
        let rr = g.wait_within(0, r, limit);
        assert!(wr.is_err(), "a write to a dead node succeeded");
        assert!(rr.is_err(), "a read from a dead node succeeded");
        assert!(
            started.elapsed() <= limit,
            "errors from a dead node took {:?} (bound {bound:?})",
            started.elapsed()
        );
    }
    let w = g.write(0, 1, RING, RING, 64);
    g.expect_ok(0, w, "write to a live node after another died");
}

/// After a node is killed and restarted, operations to it succeed again
/// and land in the new incarnation, whose log nobody may write until it
/// grants it.
pub fn restarted_peer_is_reachable_again<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 3);
    g.grant(2, 0);
    let w = g.write(0, 2, RING, RING, 64);
    g.expect_ok(0, w, "write before the kill");
    let victim = g.nodes[2].take().expect("alive");
    g.builder.kill(victim);
    let w = g.write(0, 2, RING, layout::STATUS, 8);
    assert!(g.wait(0, w).is_err(), "a write to a killed node succeeded");
    let Some(fresh) = g.builder.restart(NodeId(2)) else {
        return;
    };
    g.nodes[2] = Some(fresh);
    let slot = layout::slot(layout::REQUESTS, NodeId(0));
    let value = pattern(77, 8);
    g.local_write(0, RING + 512, &value);
    let start = clock();
    loop {
        let w = g.write(0, 2, RING + 512, slot, 8);
        if g.wait(0, w).is_ok() {
            break;
        }
        assert!(
            start.elapsed() < EVENT_DEADLINE,
            "operations to a restarted node kept failing for {EVENT_DEADLINE:?}"
        );
        g.builder.pump();
    }
    assert_eq!(
        g.local_read(2, slot, 8),
        value,
        "landed in the new incarnation"
    );
    let w = g.write(0, 2, RING, RING, 64);
    assert_eq!(
        g.wait(0, w),
        Err(OpError::Permission),
        "a restarted node's log is fenced until it grants it"
    );
    g.grant(2, 0);
    let w = g.write(0, 2, RING, RING, 64);
    g.expect_ok(0, w, "write after the restarted node's grant");
}

/// What the writer process reports for each of its writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Permission,
    Other,
}

/// The body of the writer process of [`paused_writer_is_fenced`]: writes
/// [`LARGE_WRITE`] bytes into `target`'s ring in a loop, each write filled
/// with one byte value (1..=251, changing every write), and prints one line
/// per completion (`ok`, `permission` or the error) on stdout. Returns only
/// on an I/O error (the parent closed the pipe).
pub fn paused_writer_child<F: Fabric>(mut fabric: F, target: NodeId) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut completions = Vec::new();
    for round in 0u64.. {
        let byte = (round % 251 + 1) as u8;
        fabric
            .memory()
            .write(RING, &vec![byte; LARGE_WRITE as usize]);
        let op = OpId(round + 1);
        let line = match fabric.post_write(target, op, RING, RING, LARGE_WRITE) {
            Err(e) => format!("post failed: {e}"),
            Ok(()) => loop {
                completions.clear();
                fabric.poll(&mut completions);
                if let Some(c) = completions.iter().find(|c| c.op == op) {
                    break match c.result {
                        Ok(()) => "ok".to_string(),
                        Err(OpError::Permission) => "permission".to_string(),
                        Err(e) => format!("error: {e}"),
                    };
                }
                std::thread::yield_now();
            },
        };
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name.
    stat.rsplit_once(") ")?.1.chars().next()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{sig} {} failed", child.id());
}

/// Kills the child process when dropped, so a failing check leaves nothing behind.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A writer in another process, stopped with SIGSTOP in the middle of its
/// writes and resumed after the owner granted its log to another node,
/// changes nothing; when the owner grants the log back, its writes land
/// again. Repeated for several rounds.
pub fn paused_writer_is_fenced<B: GroupBuilder>(builder: &mut B) {
    let layout = suite_layout(3);
    let (owner, writer, other) = (0u8, 1u8, 2u8);
    let Some((nodes, mut child)) =
        builder.build_with_writer_process(3, layout, NodeId(writer), NodeId(owner))
    else {
        return;
    };
    let stdout = child.stdout.take().expect("the writer's stdout is piped");
    let reaper = Reaper(child);
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("conformance-writer-output".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let o = match line.as_str() {
                    "ok" => Outcome::Ok,
                    "permission" => Outcome::Permission,
                    "ready" => continue,
                    _ => Outcome::Other,
                };
                if tx.send(o).is_err() {
                    return;
                }
            }
        })
        .expect("start the output reader");
    let next = |what: &str| -> Outcome {
        rx.recv_timeout(EVENT_DEADLINE)
            .unwrap_or_else(|_| panic!("the writer process reported nothing while {what}"))
    };
    let mut g = Group::from_nodes(builder, nodes, layout);
    let pid = reaper.0.id();
    for round in 0..10u32 {
        g.grant(owner, writer);
        // Wait until the writer's writes land again.
        let mut oks = 0;
        while oks < 3 {
            if next("waiting for its writes to land") == Outcome::Ok {
                oks += 1;
            }
        }
        // Stop it at a varying point of its next 1 MiB write.
        let spin = clock();
        while spin.elapsed() < Duration::from_micros(37 * u64::from(round)) {
            std::hint::spin_loop();
        }
        signal(&reaper.0, "STOP");
        let start = clock();
        while process_state(pid) != Some('T') {
            assert!(start.elapsed() < EVENT_DEADLINE, "the writer did not stop");
            std::thread::yield_now();
        }
        g.grant(owner, other);
        let snapshot = g.log_snapshot(owner);
        // Outcomes reported before the stop belong to writes that ended
        // before the grant; drop them.
        while rx.try_recv().is_ok() {}
        signal(&reaper.0, "CONT");
        let mut refused = 0;
        while refused < 3 {
            // The write interrupted by the stop may have landed before the
            // grant; once one write is refused, every later one must be.
            match next("waiting for refusals after the grant") {
                Outcome::Ok => assert!(
                    refused == 0,
                    "round {round}: a write succeeded after an earlier one was refused"
                ),
                Outcome::Permission => refused += 1,
                Outcome::Other => {}
            }
        }
        assert!(
            g.log_snapshot(owner) == snapshot,
            "round {round}: the paused writer changed the log after the owner's grant returned"
        );
    }
    drop(reaper);
}
