//! The sans-IO Mu replica: events in, fabric actions out.
//!
//! ```text
//!            tick(now) ─┐   ┌─ on_completion(now, Completion)
//!   propose(payload) ──┐│   │┌─ (the node's own region, `&mut dyn Memory`)
//!                      ▼▼   ▼▼
//!                 ┌──────────────┐   actions(): Write / Read / Grant
//!                 │     Core     │ ─────────────────────────────────▶ driver ─▶ fabric
//!                 │ follower /   │   drain_deliveries(): committed
//!                 │ candidate /  │ ─────────────────────────────────▶ application
//!                 │ leader       │   status()
//!                 └──────────────┘
//! ```
//!
//! The core owns no thread, socket, clock or random source: time arrives as
//! the `now` argument (nanoseconds, any epoch, never decreasing) and all I/O
//! is described by [`Action`]s that the driver executes in order. The same
//! code runs under the busy-polling driver and the deterministic simulator.
//!
//! Roles:
//! - **follower** ([`applier`]): applies committed entries of its own log,
//!   grants its log to one candidate at a time;
//! - **candidate** (`candidate.rs`): asks every peer for its log, then runs
//!   the prepare on the majority that granted;
//! - **leader** (`leader.rs`): one write per follower per entry, commits on a
//!   majority of completions, flushes the commit index when idle, recycles
//!   ring space, brings late followers up to date.

pub mod action;
pub mod applier;
mod candidate;
pub mod detector;
mod follower;
mod inspect;
mod leader;
mod permission;
mod status;

pub use action::Action;
pub use applier::Delivery;

use crate::config::{Config, StartMode};
use crate::error::{ConfigError, OpError, ProposeError};
use crate::fabric::{Completion, Memory, OpId};
use crate::log::entry;
use crate::log::layout::{self, Layout};
use crate::types::{majority, EntryId, NodeId, MAX_NODES};
use applier::{Applier, Scan};
use candidate::Candidate;
use detector::{Detector, PeerStatus};
use leader::Leader;
use permission::Restore;
use status::{decode_hint, encode_hint};
use std::collections::VecDeque;

/// Bit of an ack word telling the candidate that the grantor is rejoining.
const ACK_RECOVERING: u64 = 1 << 63;
/// Low bits of a request number that hold the requester's id.
const REQUEST_ID_BITS: u32 = 6;
/// A re-sent permission request waits the permission timeout shifted by the
/// number of earlier re-sends, at most by this much (16 timeouts). Only an
/// ack of the latest request counts, so the wait must outgrow a slow grant's
/// round trip.
const MAX_RETRY_SHIFT: u32 = 4;
/// Status record flag: rejoining, not yet caught up.
const FLAG_RECOVERING: u64 = 1;
/// Status record flag: behind the ring, needs a state transfer.
const FLAG_LAPPED: u64 = 2;
/// Status record flag: currently leading.
const FLAG_LEADER: u64 = 4;
/// Status record: bits 8..16 hold the log holder's id + 1 (0: none).
const HOLDER_SHIFT: u32 = 8;

/// The role a replica plays.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RoleKind {
    /// Applies what the leader decided.
    Follower,
    /// Asking for permissions or running the prepare.
    Candidate,
    /// Replicating proposals.
    Leader,
}

/// What a propose call was given.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Proposed {
    /// The log index the value was written at.
    pub index: u64,
    /// Its identity; the value is committed when a delivery at `index`
    /// carries this id, and lost when it carries another.
    pub id: EntryId,
}

/// A snapshot of the replica's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This replica.
    pub id: NodeId,
    /// Its role.
    pub role: RoleKind,
    /// Who it believes leads (lowest live eligible id).
    pub leader: Option<NodeId>,
    /// Its current proposal number when leading, else 0.
    pub proposal: u64,
    /// The highest proposal it promised (its log's min proposal).
    pub min_proposal: u64,
    /// Last applied index.
    pub applied: u64,
    /// Entries below this index are known committed.
    pub commit: u64,
    /// Last index in the log (leader) or cached (follower).
    pub last_index: u64,
    /// Rejoining and not yet caught up.
    pub recovering: bool,
    /// Behind the ring: needs a state transfer.
    pub needs_state_transfer: bool,
    /// The peer currently allowed to write this replica's log.
    pub log_holder: Option<NodeId>,
    /// Liveness of every member as seen by this replica's detector.
    pub peers: Vec<PeerView>,
    /// How many times this replica granted its log to a new holder.
    pub permission_switches: u64,
    /// How many times this replica became leader.
    pub leader_terms: u64,
    /// Operations this replica posted that failed (peer unreachable,
    /// permission lost, out of bounds).
    pub fabric_errors: u64,
}

/// Where a replica's applied prefix ends, for state transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPoint {
    /// Last applied index.
    pub applied: u64,
    /// Chain hash of that entry.
    pub hash: u64,
    /// Absolute ring position of the next entry.
    pub apply_pos: u64,
}

/// Internal state exposed to the simulator's checks.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct Inspect {
    pub tail_pos: Option<u64>,
    pub confirmed: [bool; MAX_NODES],
    pub apply_pos: u64,
    pub log: Vec<(u64, u64)>,
}

/// A peer as seen by the failure detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// The peer.
    pub id: NodeId,
    /// Considered alive.
    pub alive: bool,
    /// Detector score.
    pub score: u8,
    /// Last applied index it reported.
    pub applied: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    StatusRead,
    ControlWrite,
    LogWrite { upto: Option<u64>, epoch: u32 },
    HeaderWrite { epoch: u32 },
    JoinRead { epoch: u32 },
    PrepRead { last: bool },
    PrepPromise,
    RestoreRead,
}

#[derive(Clone, Copy, Debug)]
struct Inflight {
    op: OpId,
    kind: OpKind,
    term: u64,
}

#[derive(Debug)]
enum Role {
    Follower,
    Candidate(Box<Candidate>),
    Leader(Box<Leader>),
}

/// One Mu replica's protocol state. See the module docs.
#[derive(Debug)]
pub struct Core {
    cfg: Config,
    layout: Layout,
    id: NodeId,
    n: usize,
    now: u64,
    started_at: u64,
    role: Role,
    term: u64,
    actions: Vec<Action>,
    inflight: Vec<VecDeque<Inflight>>,
    next_op: u64,
    detector: Detector,
    status_reading: [bool; MAX_NODES],
    applier: Applier,
    heartbeat: u64,
    next_heartbeat_at: u64,
    recovering: bool,
    lapped: bool,
    served: [u64; MAX_NODES],
    holder: Option<NodeId>,
    /// Set when the log was granted: no applying until the holder writes
    /// this stamp into the log header.
    frozen: Option<u64>,
    /// Lowest absolute position the own ring holds valid entries from (the
    /// point of the last state transfer; entries below it were never here).
    ring_start: u64,
    /// After a restart: the promise is being restored (see `restore_tick`).
    restore: Option<Restore>,
    /// Paused by the operator: no heartbeat, no leadership.
    paused: bool,
    /// When this replica last granted its log to another one.
    granted_at: Option<u64>,
    request_seq: u64,
    entry_seq: u64,
    last_progress_at: u64,
    permission_switches: u64,
    fabric_errors: u64,
    leader_terms: u64,
    last_proposal: u64,
}

impl Core {
    /// Creates a replica and initialises its region's control area and log
    /// header. The ring is left as it is: nothing depends on it being zero.
    pub fn new(cfg: Config, now: u64, mem: &mut dyn Memory) -> Result<Core, ConfigError> {
        cfg.validate()?;
        let n = cfg.n();
        let layout = Layout::new(cfg.ring_capacity, cfg.max_payload, n);
        mem.write(0, &[0u8; layout::CONTROL_LEN as usize]);
        mem.write(layout::LOG, &[0u8; layout::LOG_HEADER_LEN as usize]);
        let queue = usize::from(cfg.max_inflight_per_peer) * 2 + 16;
        let mut core = Core {
            layout,
            id: cfg.id,
            n,
            now,
            started_at: now,
            role: Role::Follower,
            term: 0,
            actions: Vec::with_capacity(queue * n),
            inflight: (0..n).map(|_| VecDeque::with_capacity(queue)).collect(),
            next_op: 1,
            detector: Detector::new(cfg.detector),
            status_reading: [false; MAX_NODES],
            applier: Applier::new(cfg.ring_capacity, cfg.max_payload),
            heartbeat: 0,
            next_heartbeat_at: now,
            recovering: cfg.start == StartMode::Rejoin,
            lapped: false,
            served: [0; MAX_NODES],
            holder: None,
            frozen: None,
            ring_start: 0,
            restore: (cfg.start == StartMode::Rejoin).then(Restore::default),
            paused: false,
            granted_at: None,
            request_seq: now,
            entry_seq: 0,
            last_progress_at: now,
            permission_switches: 0,
            fabric_errors: 0,
            leader_terms: 0,
            last_proposal: 0,
            cfg,
        };
        core.write_status(mem);
        Ok(core)
    }

    /// The applied point of this replica: what a state transfer donor
    /// hands over together with the application state at that point.
    pub fn snapshot_point(&self) -> SnapshotPoint {
        SnapshotPoint {
            applied: self.applier.applied,
            hash: self.applier.applied_hash,
            apply_pos: self.applier.apply_pos,
        }
    }

    /// Continues from a state transfer: the application loaded a donor's
    /// state at `point`. Everything below the point is decided; whatever
    /// this replica accepted above it is still in its ring, so a replica
    /// that kept its memory keeps its vote. A restarted one stays rejoining
    /// until a leader has brought it up to date.
    pub fn install_snapshot(&mut self, point: SnapshotPoint) {
        self.applier.applied = point.applied;
        self.applier.applied_hash = point.hash;
        self.applier.apply_pos = point.apply_pos;
        self.applier.reset();
        self.ring_start = point.apply_pos;
        self.lapped = false;
        if !matches!(self.role, Role::Follower) {
            self.step_down();
        }
        // The leader's idea of this log is stale now: revoke it, so its next
        // write fails and it joins this replica again from the new point.
        self.actions.push(Action::Grant {
            peer: self.id,
            revoke_others: true,
        });
        self.holder = Some(self.id);
        self.frozen = None;
    }

    /// Pauses or resumes the replica, like the original's fifo pause: while
    /// paused it stops its heartbeat (so the others' failure detectors see
    /// it go silent, as for a stalled process) and neither leads nor stands
    /// for election; it keeps applying and granting its log.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        if paused && !matches!(self.role, Role::Follower) {
            self.step_down();
        }
    }

    /// Whether the replica is paused.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The latest time the core was given.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// This replica's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The region layout this replica uses (the driver sizes the region from it).
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Advances timers: heartbeats and peer reads, permission requests,
    /// election, applying committed entries, leader housekeeping. Call it
    /// often (the busy-poll driver calls it on every loop iteration).
    pub fn tick(&mut self, now: u64, mem: &mut dyn Memory) {
        self.advance_time(now);
        if now >= self.next_heartbeat_at {
            self.next_heartbeat_at = now + self.cfg.heartbeat_interval_ns;
            self.heartbeat_round(mem);
        }
        self.restore_tick(mem);
        self.serve_requests(mem);
        self.follow(mem);
        self.elect(mem);
        match &self.role {
            Role::Candidate(_) => self.candidate_tick(mem),
            Role::Leader(_) => self.leader_tick(mem),
            Role::Follower => {}
        }
        self.write_status(mem);
    }

    /// Feeds the outcome of an operation this core posted.
    pub fn on_completion(&mut self, now: u64, c: Completion, mem: &mut dyn Memory) {
        self.advance_time(now);
        if c.result.is_err() {
            self.fabric_errors += 1;
        }
        let queue = &mut self.inflight[c.peer.idx()];
        let Some(at) = queue.iter().position(|f| f.op == c.op) else {
            // Not ours (posted by an earlier incarnation): nothing to do.
            return;
        };
        let Some(op) = queue.remove(at) else {
            return;
        };
        match op.kind {
            OpKind::StatusRead => {
                self.status_reading[c.peer.idx()] = false;
                match c.result {
                    Ok(()) => {
                        if let Some(st) = self.landed_status(c.peer, mem) {
                            self.detector.observe(c.peer, st.0);
                            self.leader_learns_status(c.peer, st.0);
                        }
                    }
                    Err(_) => self.detector.failed(c.peer),
                }
            }
            OpKind::ControlWrite => {}
            OpKind::RestoreRead => self.on_restore_read(c.peer, c.result, mem),
            _ if op.term != self.term => {}
            OpKind::LogWrite { upto, epoch } => {
                self.on_log_write(c.peer, upto, epoch, c.result, mem)
            }
            OpKind::HeaderWrite { epoch } => {
                if let Err(e) = c.result {
                    self.follower_lost(c.peer, epoch, e);
                }
            }
            OpKind::JoinRead { epoch } => self.on_join_read(c.peer, epoch, c.result, mem),
            OpKind::PrepRead { last } => self.on_prepare_read(c.peer, last, c.result, mem),
            OpKind::PrepPromise => self.on_promise_write(c.peer, c.result, mem),
        }
        self.follow(mem);
    }

    /// Proposes `payload`. On the leader it is written to the log and sent
    /// to the followers at once; it is committed when a delivery at the
    /// returned index carries the returned id.
    pub fn propose(
        &mut self,
        now: u64,
        payload: &[u8],
        mem: &mut dyn Memory,
    ) -> Result<Proposed, ProposeError> {
        self.advance_time(now);
        if payload.len() > self.cfg.max_payload as usize {
            return Err(ProposeError::TooLarge {
                len: payload.len(),
                max: self.cfg.max_payload,
            });
        }
        if self.lapped {
            return Err(ProposeError::NeedsStateTransfer);
        }
        match self.role {
            Role::Leader(_) => self.leader_propose(payload, mem),
            Role::Candidate(_) => Err(ProposeError::LeaderChanging),
            Role::Follower => match self.leader_view() {
                Some(l) if l != self.id => Err(ProposeError::NotLeader { leader: Some(l) }),
                Some(_) => Err(ProposeError::LeaderChanging),
                None => Err(ProposeError::NotLeader { leader: None }),
            },
        }
    }

    /// Drains the actions emitted so far, in the order they must be executed.
    pub fn actions(&mut self) -> std::vec::Drain<'_, Action> {
        self.actions.drain(..)
    }

    /// True when actions wait to be executed.
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Hands every committed entry applied since the last call to `f`, in
    /// log order.
    pub fn drain_deliveries(&mut self, f: impl FnMut(Delivery<'_>)) {
        self.applier.drain(f);
    }

    /// True when committed entries wait to be drained.
    pub fn has_deliveries(&self) -> bool {
        self.applier.has_deliveries()
    }

    /// The current role.
    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Follower => RoleKind::Follower,
            Role::Candidate(_) => RoleKind::Candidate,
            Role::Leader(_) => RoleKind::Leader,
        }
    }

    /// A snapshot of the replica's state.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role(),
            leader: self.leader_view(),
            proposal: match &self.role {
                Role::Leader(l) => l.proposal,
                _ => 0,
            },
            min_proposal: self.last_proposal,
            applied: self.applier.applied,
            commit: self.applier.commit,
            last_index: match &self.role {
                Role::Leader(l) => l.tail_index,
                _ => self.applier.last_index(),
            },
            recovering: self.recovering,
            needs_state_transfer: self.lapped,
            log_holder: self.holder,
            peers: (0..self.n as u8)
                .map(NodeId)
                .filter(|&p| p != self.id)
                .map(|p| PeerView {
                    id: p,
                    alive: self.detector.alive(p),
                    score: self.detector.score(p),
                    applied: self.detector.last(p).applied,
                })
                .collect(),
            permission_switches: self.permission_switches,
            fabric_errors: self.fabric_errors,
            leader_terms: self.leader_terms,
        }
    }

    fn advance_time(&mut self, now: u64) {
        debug_assert!(now >= self.now, "time went backwards");
        self.now = self.now.max(now);
    }

    fn eligible(&self) -> bool {
        !self.recovering && !self.lapped
    }

    fn leader_view(&self) -> Option<NodeId> {
        self.detector
            .leader_view(self.id, self.eligible() && !self.paused, self.n)
    }

    fn peers(&self) -> impl Iterator<Item = NodeId> {
        let me = self.id;
        (0..self.n as u8).map(NodeId).filter(move |&p| p != me)
    }

    fn post(&mut self, peer: NodeId, kind: OpKind, action: impl FnOnce(OpId) -> Action) -> OpId {
        let op = OpId(self.next_op);
        self.next_op += 1;
        self.inflight[peer.idx()].push_back(Inflight {
            op,
            kind,
            term: self.term,
        });
        self.actions.push(action(op));
        op
    }

    fn post_write(&mut self, peer: NodeId, kind: OpKind, local: u64, remote: u64, len: u64) {
        self.post(peer, kind, |op| Action::Write {
            peer,
            op,
            local,
            remote,
            len,
        });
    }

    fn post_read(&mut self, peer: NodeId, kind: OpKind, remote: u64, local: u64, len: u64) {
        self.post(peer, kind, |op| Action::Read {
            peer,
            op,
            remote,
            local,
            len,
        });
    }

    /// A request number above every earlier one of this node, with the
    /// node's id in its low bits (so a grant stamp names its writer).
    fn next_request(&mut self) -> u64 {
        let round = ((self.request_seq >> REQUEST_ID_BITS) + 1).max(self.now >> REQUEST_ID_BITS);
        self.request_seq = ((round << REQUEST_ID_BITS) | u64::from(self.id.0)) & !ACK_RECOVERING;
        self.request_seq
    }

    /// Leader election: the lowest live eligible node leads.
    fn elect(&mut self, mem: &mut dyn Memory) {
        let view = self.leader_view();
        let me = Some(self.id);
        match self.role {
            Role::Follower => {
                let grace = self.cfg.heartbeat_interval_ns
                    * u64::from(
                        self.cfg.detector.recover_threshold / self.cfg.detector.score_up + 2,
                    );
                // After granting its log, a replica gives the grantee a
                // permission timeout to prepare and start heartbeating
                // before standing itself: two replicas that wrongly think
                // each other dead (a process descheduled on a busy host)
                // would otherwise take the logs back and forth forever.
                let yielded = self
                    .granted_at
                    .is_some_and(|t| self.now < t + self.cfg.permission_timeout_ns);
                if view == me && self.now >= self.started_at + grace && !yielded {
                    self.become_candidate(mem);
                }
            }
            Role::Candidate(_) | Role::Leader(_) => {
                if view != me {
                    self.step_down();
                }
            }
        }
    }

    fn step_down(&mut self) {
        self.term += 1;
        self.role = Role::Follower;
        self.applier.reset();
        self.last_progress_at = self.now;
    }

    fn own_min_proposal(&self, mem: &dyn Memory) -> u64 {
        mem.read_u64(layout::MIN_PROPOSAL)
    }
}

/// Fixed-capacity list of peers, so iterating peers while mutating the core
/// allocates nothing.
mod arrayvec {
    use crate::types::{NodeId, MAX_NODES};

    #[derive(Debug, Default)]
    pub struct Peers {
        ids: [u8; MAX_NODES],
        len: usize,
    }

    impl FromIterator<NodeId> for Peers {
        fn from_iter<I: IntoIterator<Item = NodeId>>(iter: I) -> Self {
            let mut p = Peers::default();
            for id in iter {
                p.ids[p.len] = id.0;
                p.len += 1;
            }
            p
        }
    }

    impl IntoIterator for Peers {
        type Item = NodeId;
        type IntoIter =
            std::iter::Map<std::iter::Take<std::array::IntoIter<u8, MAX_NODES>>, fn(u8) -> NodeId>;
        fn into_iter(self) -> Self::IntoIter {
            self.ids
                .into_iter()
                .take(self.len)
                .map(NodeId as fn(u8) -> NodeId)
        }
    }
}

/// Bytes an entry of `payload_len` takes in the ring.
pub(crate) fn entry_len(payload_len: usize) -> u64 {
    entry::total_len(payload_len as u32)
}

pub(crate) use arrayvec::Peers;
