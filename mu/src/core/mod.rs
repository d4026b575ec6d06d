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
mod leader;

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
use std::collections::VecDeque;
use xxhash_rust::xxh3::xxh3_64;

/// Bit of an ack word telling the candidate that the grantor is rejoining.
const ACK_RECOVERING: u64 = 1 << 63;
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
    request_seq: u64,
    entry_seq: u64,
    last_progress_at: u64,
    permission_switches: u64,
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
            request_seq: now,
            entry_seq: 0,
            last_progress_at: now,
            permission_switches: 0,
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

    /// The leader's tail position and confirmed followers, if leading.
    #[doc(hidden)]
    pub fn inspect_leader(&self) -> Option<(u64, [bool; MAX_NODES])> {
        let Role::Leader(l) = &self.role else {
            return None;
        };
        let confirmed = std::array::from_fn(|p| l.followers[p].phase == leader::Phase::Confirmed);
        Some((l.tail_pos, confirmed))
    }

    /// A one-line dump of internal state for failure reports.
    #[doc(hidden)]
    pub fn debug(&self) -> String {
        let phases = match &self.role {
            Role::Leader(l) => format!(
                "{:?}",
                l.followers[..self.n]
                    .iter()
                    .map(|f| (
                        f.phase,
                        f.acked,
                        f.sent_pos,
                        f.known_apply_pos,
                        f.writes_inflight
                    ))
                    .collect::<Vec<_>>()
            ),
            _ => String::new(),
        };
        let holders: Vec<_> = self
            .peers()
            .map(|p| {
                (
                    p.0,
                    self.detector.last(p).holder,
                    self.detector.alive(p),
                    self.status_reading[p.idx()],
                    self.detector.last(p).applied,
                )
            })
            .collect();
        format!(
            "holders={holders:?} frozen={:?} pending={} next_pos={} apply_pos={} inflight={:?} {phases}",
            self.frozen,
            self.applier.pending.len(),
            self.applier.next_pos(),
            self.applier.apply_pos,
            self.inflight
                .iter()
                .map(|q| q.iter().map(|f| (f.op.0, f.kind, f.term)).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        )
    }

    /// Last applied index (cheaper than [`Core::status`]).
    pub fn status_applied(&self) -> u64 {
        self.applier.applied
    }

    /// Absolute position of the next entry to apply.
    #[doc(hidden)]
    pub fn apply_pos(&self) -> u64 {
        self.applier.apply_pos
    }

    /// Internal state for the simulator's invariant checks.
    #[doc(hidden)]
    pub fn inspect(&self) -> Inspect {
        let mut confirmed = [false; MAX_NODES];
        let mut tail_pos = None;
        if let Role::Leader(l) = &self.role {
            tail_pos = Some(l.tail_pos);
            for (c, f) in confirmed.iter_mut().zip(l.followers.iter()) {
                *c = f.phase == leader::Phase::Confirmed;
            }
        }
        Inspect {
            tail_pos,
            confirmed,
            apply_pos: self.applier.apply_pos,
            log: self
                .applier
                .pending
                .iter()
                .map(|p| (p.index, p.hash))
                .collect(),
        }
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
        self.detector.leader_view(self.id, self.eligible(), self.n)
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

    fn next_request(&mut self) -> u64 {
        self.request_seq = (self.request_seq + 1).max(self.now) & !ACK_RECOVERING;
        self.request_seq
    }

    fn flags(&self) -> u64 {
        let mut f = 0;
        if self.recovering {
            f |= FLAG_RECOVERING;
        }
        if self.lapped {
            f |= FLAG_LAPPED;
        }
        if matches!(self.role, Role::Leader(_)) {
            f |= FLAG_LEADER;
        }
        if let Some(h) = self.holder {
            f |= (u64::from(h.0) + 1) << HOLDER_SHIFT;
        }
        f
    }

    /// Writes the own status record: heartbeat, flags and applied point.
    fn write_status(&mut self, mem: &mut dyn Memory) {
        let mut rec = [0u8; 48];
        let words = [
            self.heartbeat,
            self.flags(),
            self.applier.applied,
            self.applier.apply_pos,
            self.applier.applied_hash,
        ];
        for (i, w) in words.iter().enumerate() {
            rec[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        let sum = xxh3_64(&rec[..40]);
        rec[40..].copy_from_slice(&sum.to_le_bytes());
        mem.write(layout::STATUS, &rec);
    }

    /// Parses a peer's status record from its landing slot; `None` if torn.
    fn landed_status(&self, peer: NodeId, mem: &dyn Memory) -> Option<(PeerStatus, u64)> {
        let mut rec = [0u8; 48];
        mem.read(layout::landing(layout::STATUS_LANDING, peer), &mut rec);
        let word = |i: usize| u64::from_le_bytes(rec[i * 8..i * 8 + 8].try_into().expect("8"));
        if xxh3_64(&rec[..40]) != word(5) {
            return None;
        }
        let flags = word(1);
        Some((
            PeerStatus {
                heartbeat: word(0),
                eligible: flags & (FLAG_RECOVERING | FLAG_LAPPED) == 0,
                applied: word(2),
                apply_pos: word(3),
                holder: match (flags >> HOLDER_SHIFT) & 0xff {
                    0 => None,
                    h => Some(NodeId(h as u8 - 1)),
                },
            },
            flags,
        ))
    }

    fn heartbeat_round(&mut self, mem: &mut dyn Memory) {
        self.heartbeat += 1;
        self.write_status(mem);
        for p in self.peers().collect::<arrayvec::Peers>() {
            if !self.status_reading[p.idx()] {
                self.status_reading[p.idx()] = true;
                self.post_read(
                    p,
                    OpKind::StatusRead,
                    layout::STATUS,
                    layout::landing(layout::STATUS_LANDING, p),
                    layout::STATUS_LEN,
                );
            }
        }
    }

    /// Grants the log to the lowest new requester that is not above this
    /// node's view of the leader (mu-reference §3.2, answered per node so a
    /// candidate needs only a majority).
    fn serve_requests(&mut self, mem: &mut dyn Memory) {
        if self.restore.is_some() {
            // A restarted replica forgot what it promised: it grants
            // nothing until it has restored its promise.
            return;
        }
        let view = self.leader_view();
        let mut chosen: Option<(NodeId, u64)> = None;
        for c in self.peers().collect::<arrayvec::Peers>() {
            let r = mem.read_u64(layout::slot(layout::REQUESTS, c));
            if r <= self.served[c.idx()] {
                continue;
            }
            self.served[c.idx()] = r;
            let acceptable = view.is_none_or(|v| c <= v);
            if acceptable && chosen.is_none() {
                chosen = Some((c, r));
            }
        }
        let Some((c, r)) = chosen else {
            return;
        };
        if !matches!(self.role, Role::Follower) {
            self.step_down();
        }
        let revoke_others = !crate::planted!(self.cfg, GrantWithoutRevoke);
        self.actions.push(Action::Grant {
            peer: c,
            revoke_others,
        });
        if self.holder != Some(c) {
            self.permission_switches += 1;
        }
        self.holder = Some(c);
        self.frozen = Some(r);
        self.applier.reset();
        self.write_status(mem);
        let ack = r | if self.recovering { ACK_RECOVERING } else { 0 };
        let stage = layout::slot(layout::STAGE_ACKS, c);
        mem.write_u64(stage, ack);
        self.post_write(
            c,
            OpKind::ControlWrite,
            stage,
            layout::slot(layout::ACKS, self.id),
            8,
        );
    }

    /// Applies committed entries of the own log.
    fn follow(&mut self, mem: &mut dyn Memory) {
        if self.lapped {
            return;
        }
        // A ring floor above the cursor means a leader reused space this
        // replica had not applied yet: it is behind the ring.
        if !matches!(self.role, Role::Leader(_))
            && mem.read_u64(layout::FLOOR) > self.applier.apply_pos
        {
            return self.set_lapped();
        }
        let before = (self.applier.applied, self.applier.pending.len());
        match &self.role {
            Role::Leader(l) => {
                self.applier.commit = l.commit;
            }
            Role::Candidate(_) => {}
            Role::Follower => {
                if let Some(stamp) = self.frozen {
                    if mem.read_u64(layout::STAMP) != stamp {
                        return;
                    }
                    self.frozen = None;
                }
                if self.applier.scan(mem) == Scan::Lapped {
                    self.set_lapped();
                    return;
                }
                let mut hint = [0u8; layout::HINT_LEN as usize];
                mem.read(layout::HINT, &mut hint);
                if let Some((c, h)) = decode_hint(&hint) {
                    self.applier.learn_hint(c, h);
                }
            }
        }
        self.applier.apply(mem);
        if self.recovering {
            // The leader writes its last index + 1 (0 means not yet).
            let through = mem.read_u64(layout::RECOVERED_THROUGH);
            if through > 0 && self.applier.applied + 1 >= through {
                self.recovering = false;
            }
        }
        if (self.applier.applied, self.applier.pending.len()) != before {
            self.last_progress_at = self.now;
        } else if matches!(self.role, Role::Follower)
            && !self.applier.pending.is_empty()
            && self.now >= self.last_progress_at + self.cfg.rescan_idle_ns
        {
            self.applier.reset();
            self.last_progress_at = self.now;
        }
    }

    /// A replica that restarted lost its min proposal, the promise it made
    /// to leaders. Before it grants its log to anyone it reads the min
    /// proposal of enough peers that they include a member of every
    /// majority it may have promised to (n - majority + 1 of them) and
    /// adopts the highest. Otherwise a stale leader could find a blank
    /// promise, write its old log over a decided value and count the
    /// write toward a majority.
    fn restore_tick(&mut self, mem: &mut dyn Memory) {
        let Some(r) = &self.restore else {
            return;
        };
        let needed = (self.n - majority(self.n) + 1).min(self.n - 1);
        if r.answered >= needed {
            let promised = r.highest.max(self.own_min_proposal(mem));
            mem.write_u64(layout::MIN_PROPOSAL, promised);
            self.restore = None;
            return;
        }
        let todo: Peers = self
            .peers()
            .filter(|p| !r.got[p.idx()] && !r.reading[p.idx()])
            .collect();
        for p in todo {
            if let Some(r) = &mut self.restore {
                r.reading[p.idx()] = true;
            }
            let landing = layout::landing(layout::HEADER_LANDING, p);
            self.post_read(p, OpKind::RestoreRead, layout::LOG, landing, 8);
        }
    }

    fn on_restore_read(&mut self, p: NodeId, result: Result<(), OpError>, mem: &dyn Memory) {
        let value = mem.read_u64(layout::landing(layout::HEADER_LANDING, p));
        let Some(r) = &mut self.restore else {
            return;
        };
        r.reading[p.idx()] = false;
        if result.is_ok() && !r.got[p.idx()] {
            r.got[p.idx()] = true;
            r.answered += 1;
            r.highest = r.highest.max(value);
        }
    }

    fn set_lapped(&mut self) {
        self.lapped = true;
        if !matches!(self.role, Role::Follower) {
            self.step_down();
        }
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
                if view == me && self.now >= self.started_at + grace {
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

/// Encodes a commit hint: commit index, chain hash of `commit - 1`, check.
pub(crate) fn encode_hint(commit: u64, hash: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&commit.to_le_bytes());
    b[8..16].copy_from_slice(&hash.to_le_bytes());
    let check = xxh3_64(&b[..16]) ^ 0x6d75_6869_6e74;
    b[16..].copy_from_slice(&check.to_le_bytes());
    b
}

fn decode_hint(b: &[u8; 24]) -> Option<(u64, u64)> {
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
    let (c, h) = (word(0), word(8));
    (c > 0 && xxh3_64(&b[..16]) ^ 0x6d75_6869_6e74 == word(16)).then_some((c, h))
}

/// Progress of restoring the promise after a restart.
#[derive(Debug, Default)]
struct Restore {
    got: [bool; MAX_NODES],
    reading: [bool; MAX_NODES],
    answered: usize,
    highest: u64,
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
