//! The deterministic in-process fabric used by the simulator.
//!
//! Every decision (delays, whether a write lands in one piece or two and in
//! which order, what a crash does to writes in flight) comes from one seeded
//! random generator, and events are ordered by `(time, sequence)`, so a seed
//! replays exactly. Per link, operations land and complete in post order.
//! Permission is checked when each piece of a write lands, so a write
//! interrupted by a revocation may land partly (torn) and then fails, and a
//! paused node's writes can land only before its permission is revoked,
//! never after.

use crate::error::{FabricError, OpError};
use crate::fabric::{Completion, Fabric, Memory, OpId};
use crate::log::layout::Layout;
use crate::types::NodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;
use xxhash_rust::xxh3::xxh3_64;

/// Timing and fault knobs of the simulated links.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    /// Shortest one-way delay.
    pub min_delay_ns: u64,
    /// Longest one-way delay (without spikes).
    pub max_delay_ns: u64,
    /// Probability that an operation is delayed by a spike.
    pub spike_prob: f64,
    /// Extra delay of a spike.
    pub spike_ns: u64,
    /// Probability that a write larger than 64 bytes lands in two pieces.
    pub tear_prob: f64,
    /// Time after which an operation to a dead or cut-off peer fails.
    pub fail_ns: u64,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            min_delay_ns: 500,
            max_delay_ns: 2_000,
            spike_prob: 0.01,
            spike_ns: 30_000,
            tear_prob: 0.3,
            fail_ns: 20_000,
        }
    }
}

/// A write that landed in a log area from a node that does not hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignWrite {
    /// Writer.
    pub from: NodeId,
    /// Target.
    pub to: NodeId,
    /// The holder at landing time.
    pub holder: Option<NodeId>,
    /// Simulated time.
    pub at_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Write,
    Read,
}

#[derive(Debug)]
struct OpRec {
    src: NodeId,
    dst: NodeId,
    src_incarnation: u32,
    kind: Kind,
    id: OpId,
    local: u64,
    remote: u64,
    len: u64,
    /// Pieces not landed yet: (offset within the op, length).
    pieces: [Option<(u64, u64)>; 2],
    result: Result<(), OpError>,
    data: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Ev {
    Land { slot: usize, piece: usize },
    Done { slot: usize },
}

#[derive(Debug)]
struct Node {
    region: Rc<RefCell<Vec<u8>>>,
    up: bool,
    incarnation: u32,
    holder: Option<NodeId>,
    /// Holders that were never revoked (planted bug only).
    stale_holders: u8,
    completions: VecDeque<Completion>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Link {
    last_land: u64,
    last_done: u64,
    cut: bool,
}

#[derive(Debug)]
struct Net {
    now: u64,
    seq: u64,
    layout: Layout,
    params: LinkParams,
    rng: SmallRng,
    nodes: Vec<Node>,
    links: Vec<Link>,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    ops: Vec<Option<OpRec>>,
    free: Vec<usize>,
    spare: Vec<Vec<u8>>,
    foreign: Vec<ForeignWrite>,
    trace: u64,
}

/// The simulated network: every node's region and every link.
#[derive(Clone, Debug)]
pub struct SimNet {
    net: Rc<RefCell<Net>>,
}

/// A node's region, shared with the network that lands writes into it.
#[derive(Clone, Debug)]
pub struct SharedRegion(Rc<RefCell<Vec<u8>>>);

impl Memory for SharedRegion {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        self.0.borrow().read(offset, buf)
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.borrow_mut().write(offset, data)
    }
}

/// One node's endpoint on a [`SimNet`].
#[derive(Debug)]
pub struct SimEndpoint {
    net: Rc<RefCell<Net>>,
    id: NodeId,
    region: SharedRegion,
}

fn garbage(rng: &mut SmallRng, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    rng.fill(&mut v[..]);
    v
}

impl SimNet {
    /// A network of `n` nodes with regions of `layout`, all filled with
    /// random bytes: nothing may depend on a zeroed log.
    pub fn new(n: usize, layout: Layout, seed: u64, params: LinkParams) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let nodes = (0..n)
            .map(|_| Node {
                region: Rc::new(RefCell::new(garbage(&mut rng, layout.region_len()))),
                up: true,
                incarnation: 0,
                holder: None,
                stale_holders: 0,
                completions: VecDeque::with_capacity(1024),
            })
            .collect();
        SimNet {
            net: Rc::new(RefCell::new(Net {
                now: 0,
                seq: 0,
                layout,
                params,
                rng,
                nodes,
                links: vec![Link::default(); n * n],
                queue: BinaryHeap::with_capacity(4096),
                ops: Vec::with_capacity(4096),
                free: Vec::with_capacity(4096),
                spare: Vec::new(),
                foreign: Vec::new(),
                trace: 0,
            })),
        }
    }

    /// The endpoint of node `id` (a new one after each restart).
    pub fn endpoint(&self, id: NodeId) -> SimEndpoint {
        let region = SharedRegion(self.net.borrow().nodes[id.idx()].region.clone());
        SimEndpoint {
            net: self.net.clone(),
            id,
            region,
        }
    }

    /// Current simulated time.
    pub fn now(&self) -> u64 {
        self.net.borrow().now
    }

    /// Time of the next pending event.
    pub fn next_event(&self) -> Option<u64> {
        self.net.borrow().queue.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Processes every event up to and including `t`, then sets the clock to `t`.
    pub fn run_until(&self, t: u64) {
        let mut net = self.net.borrow_mut();
        while let Some(&Reverse((at, _, ev))) = net.queue.peek() {
            if at > t {
                break;
            }
            net.queue.pop();
            net.now = at;
            net.handle(ev);
        }
        net.now = net.now.max(t);
    }

    /// Crashes a node: its memory is lost, its writes in flight land partly
    /// or not at all, and no completion reaches it any more.
    pub fn crash(&self, id: NodeId) {
        let mut net = self.net.borrow_mut();
        net.nodes[id.idx()].up = false;
        net.nodes[id.idx()].completions.clear();
        for slot in 0..net.ops.len() {
            let Some(op) = &net.ops[slot] else { continue };
            if op.src != id || op.kind != Kind::Write {
                continue;
            }
            for piece in 0..2 {
                let lands = net.rng.gen_bool(0.5);
                let has = net.ops[slot]
                    .as_ref()
                    .is_some_and(|o| o.pieces[piece].is_some());
                if has && lands {
                    net.land(slot, piece);
                }
                if let Some(op) = net.ops[slot].as_mut() {
                    op.pieces[piece] = None;
                }
            }
        }
    }

    /// Restarts a crashed node with a fresh region full of random bytes.
    pub fn restart(&self, id: NodeId) {
        let mut net = self.net.borrow_mut();
        let len = net.layout.region_len();
        let fresh = garbage(&mut net.rng, len);
        let node = &mut net.nodes[id.idx()];
        node.region = Rc::new(RefCell::new(fresh));
        node.up = true;
        node.incarnation += 1;
        node.holder = None;
        node.stale_holders = 0;
        node.completions.clear();
    }

    /// Cuts (or heals) the link between `a` and `b`, both directions.
    pub fn set_cut(&self, a: NodeId, b: NodeId, cut: bool) {
        let mut net = self.net.borrow_mut();
        let n = net.nodes.len();
        net.links[a.idx() * n + b.idx()].cut = cut;
        net.links[b.idx() * n + a.idx()].cut = cut;
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        for l in self.net.borrow_mut().links.iter_mut() {
            l.cut = false;
        }
    }

    /// Who may write `id`'s log.
    pub fn holder(&self, id: NodeId) -> Option<NodeId> {
        self.net.borrow().nodes[id.idx()].holder
    }

    /// Writes that landed in a log from a node that did not hold it.
    pub fn foreign_writes(&self) -> Vec<ForeignWrite> {
        self.net.borrow().foreign.clone()
    }

    /// A hash of everything that happened, for determinism checks.
    pub fn trace(&self) -> u64 {
        self.net.borrow().trace
    }
}

impl Net {
    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    fn mix(&mut self, words: [u64; 4]) {
        let mut b = [0u8; 40];
        b[..8].copy_from_slice(&self.trace.to_le_bytes());
        for (i, w) in words.iter().enumerate() {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&w.to_le_bytes());
        }
        self.trace = xxh3_64(&b);
    }

    fn delay(&mut self) -> u64 {
        let p = self.params;
        let mut d = self.rng.gen_range(p.min_delay_ns..=p.max_delay_ns);
        if self.rng.gen_bool(p.spike_prob) {
            d += p.spike_ns;
        }
        d
    }

    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        src: NodeId,
        dst: NodeId,
        kind: Kind,
        id: OpId,
        local: u64,
        remote: u64,
        len: u64,
    ) -> Result<(), FabricError> {
        let region_len = self.layout.region_len();
        if local + len > region_len || remote + len > region_len {
            return Err(FabricError::Post {
                peer: dst,
                reason: format!(
                    "range {local}/{remote}+{len} outside the {region_len}-byte region"
                ),
            });
        }
        let n = self.nodes.len();
        let link = src.idx() * n + dst.idx();
        let pieces = if kind == Kind::Write && len > 64 && self.rng.gen_bool(self.params.tear_prob)
        {
            let cut = self.rng.gen_range(1..len / 8) * 8;
            let (a, b) = ((0, cut), (cut, len - cut));
            if self.rng.gen_bool(0.5) {
                [Some(a), Some(b)]
            } else {
                [Some(b), Some(a)]
            }
        } else {
            [Some((0, len)), None]
        };
        let mut data = self.spare.pop().unwrap_or_default();
        data.clear();
        let slot = self.free.pop().unwrap_or_else(|| {
            self.ops.push(None);
            self.ops.len() - 1
        });
        self.ops[slot] = Some(OpRec {
            src,
            dst,
            src_incarnation: self.nodes[src.idx()].incarnation,
            kind,
            id,
            local,
            remote,
            len,
            pieces,
            result: Ok(()),
            data,
        });
        let mut land = self.now;
        for (i, piece) in pieces.iter().enumerate() {
            if piece.is_some() {
                land = (land.max(self.now) + self.delay()).max(self.links[link].last_land + 1);
                self.links[link].last_land = land;
                self.push(land, Ev::Land { slot, piece: i });
            }
        }
        let done = (land + self.delay()).max(self.links[link].last_done + 1);
        self.links[link].last_done = done;
        self.push(done, Ev::Done { slot });
        Ok(())
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Land { slot, piece } => {
                if self.ops[slot]
                    .as_ref()
                    .is_some_and(|o| o.pieces[piece].is_some())
                {
                    self.land(slot, piece);
                    if let Some(op) = self.ops[slot].as_mut() {
                        op.pieces[piece] = None;
                    }
                }
            }
            Ev::Done { slot } => self.complete(slot),
        }
    }

    fn land(&mut self, slot: usize, piece: usize) {
        let n = self.nodes.len();
        let op = self.ops[slot].as_mut().expect("live op");
        if op.result.is_err() {
            return;
        }
        let (off, len) = op.pieces[piece].expect("piece");
        let (src, dst) = (op.src, op.dst);
        let target = &self.nodes[dst.idx()];
        if !target.up || self.links[src.idx() * n + dst.idx()].cut {
            op.result = Err(OpError::Unreachable);
            return;
        }
        match op.kind {
            Kind::Write => {
                let remote = op.remote + off;
                if self.layout.touches_log(remote, len) {
                    let stale = target.stale_holders & (1 << src.0) != 0;
                    if target.holder != Some(src) && !stale {
                        op.result = Err(OpError::Permission);
                        return;
                    }
                    if target.holder != Some(src) {
                        self.foreign.push(ForeignWrite {
                            from: src,
                            to: dst,
                            holder: target.holder,
                            at_ns: self.now,
                        });
                    }
                }
                let local = op.local + off;
                let source = self.nodes[src.idx()].region.clone();
                let source = source.borrow();
                let chunk = &source[local as usize..(local + len) as usize];
                self.nodes[dst.idx()]
                    .region
                    .borrow_mut()
                    .write(remote, chunk);
            }
            Kind::Read => {
                let region = target.region.borrow();
                let r = op.remote as usize;
                op.data.extend_from_slice(&region[r..r + op.len as usize]);
            }
        }
        let words = [self.now, op.id.0, (src.0 as u64) << 8 | dst.0 as u64, off];
        self.mix(words);
    }

    fn complete(&mut self, slot: usize) {
        let mut op = self.ops[slot].take().expect("live op");
        self.free.push(slot);
        if op.pieces.iter().any(Option::is_some) {
            // Interrupted by a crash of the poster.
            op.result = op.result.and(Err(OpError::Unreachable));
        }
        let src = &mut self.nodes[op.src.idx()];
        if src.up && src.incarnation == op.src_incarnation {
            if op.kind == Kind::Read && op.result.is_ok() {
                src.region.borrow_mut().write(op.local, &op.data);
            }
            src.completions.push_back(Completion {
                op: op.id,
                peer: op.dst,
                result: op.result,
            });
        }
        let words = [self.now, op.id.0, op.result.is_ok() as u64, 1];
        self.mix(words);
        self.spare.push(std::mem::take(&mut op.data));
    }
}

impl SimEndpoint {
    /// Another handle on the node's region.
    pub fn clone_region(&self) -> SharedRegion {
        self.region.clone()
    }

    /// Reads the node's region without a mutable borrow.
    pub fn region_read(&self, offset: u64, buf: &mut [u8]) {
        self.region.read(offset, buf)
    }
}

impl Fabric for SimEndpoint {
    type Mem = SharedRegion;

    fn node(&self) -> NodeId {
        self.id
    }

    fn memory(&mut self) -> &mut SharedRegion {
        &mut self.region
    }

    fn post_write(
        &mut self,
        peer: NodeId,
        op: OpId,
        local: u64,
        remote: u64,
        len: u64,
    ) -> Result<(), FabricError> {
        self.net
            .borrow_mut()
            .post(self.id, peer, Kind::Write, op, local, remote, len)
    }

    fn post_read(
        &mut self,
        peer: NodeId,
        op: OpId,
        remote: u64,
        local: u64,
        len: u64,
    ) -> Result<(), FabricError> {
        self.net
            .borrow_mut()
            .post(self.id, peer, Kind::Read, op, local, remote, len)
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        let mut net = self.net.borrow_mut();
        let q = &mut net.nodes[self.id.idx()].completions;
        let k = q.len();
        out.extend(q.drain(..));
        k
    }

    fn grant(&mut self, peer: NodeId) -> Result<(), FabricError> {
        let mut net = self.net.borrow_mut();
        let node = &mut net.nodes[self.id.idx()];
        node.holder = Some(peer);
        node.stale_holders = 0;
        Ok(())
    }

    fn grant_keeping_previous(&mut self, peer: NodeId) -> Result<(), FabricError> {
        let mut net = self.net.borrow_mut();
        let node = &mut net.nodes[self.id.idx()];
        if let Some(old) = node.holder.filter(|&o| o != peer) {
            node.stale_holders |= 1 << old.0;
        }
        node.holder = Some(peer);
        Ok(())
    }
}
