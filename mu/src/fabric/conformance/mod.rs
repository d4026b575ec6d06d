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

mod checks;
mod process;

pub use checks::{
    control_area_always_accessible, dead_peer_fails_in_bounded_time, grant_fences_previous_holder,
    large_writes, per_peer_order, read_your_write, restarted_peer_is_reachable_again,
    write_without_permission,
};
pub use process::{paused_writer_child, paused_writer_is_fenced};

use crate::error::OpError;
use crate::fabric::{Completion, Fabric, Memory, OpId};
use crate::log::layout::{Layout, LOG};
use crate::types::NodeId;
use std::collections::HashMap;
use std::process::Child;
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
