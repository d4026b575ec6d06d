//! The leader: replication fast path, commit, late followers, recycling.
//!
//! Per entry the leader writes the entry into its own ring and posts one
//! write per confirmed follower (two when the entry straddles the ring end).
//! Completions to one peer arrive in order, so a completed write tells the
//! leader that the follower holds every entry up to it. An entry is
//! committed once the leader and enough followers for a majority hold it
//! (never earlier: mu-reference §7 B5). A failed completion costs only that
//! follower (B3): it is asked for its log again and, once it grants, brought
//! up to date from its apply position.

use super::*;
use crate::error::OpError;
use crate::log::{entry, ring};
use crate::types::majority;
use applier::Pending;

/// Largest single write the leader posts while catching a follower up.
const MAX_WRITE: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Phase {
    /// Has not granted (or lost) the log; asked again after a timeout.
    #[default]
    Absent,
    /// Asked for its log with `request`.
    Requested,
    /// Granted; its log header and status are being read.
    Joining,
    /// Receives every entry.
    Confirmed,
    /// Behind the ring: needs a state transfer.
    Lapped,
}

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Follower {
    pub phase: Phase,
    /// Bumped whenever the phase restarts; completions of older epochs are stale.
    pub epoch: u32,
    /// The latest request number sent to it.
    pub request: u64,
    /// The first request number of the current attempt.
    pub first_request: u64,
    pub requested_at: u64,
    /// Requests re-sent in the current attempt (see `Candidate::retries`).
    pub retries: u32,
    /// Absolute position up to which writes were posted.
    pub sent_pos: u64,
    /// Highest index known to be in the follower's log.
    pub acked: u64,
    pub writes_inflight: u16,
    /// Latest apply position it reported.
    pub known_apply_pos: u64,
    pub known_applied: u64,
    /// Left out of ring recycling because it was dead when space ran out.
    pub excluded: bool,
    /// The grant stamp (staged) goes out once everything up to this
    /// position is sent.
    stamp_at: Option<u64>,
    join_reads: u8,
}

#[derive(Debug)]
pub(super) struct Leader {
    pub proposal: u64,
    pub tail_pos: u64,
    pub tail_index: u64,
    pub tail_hash: u64,
    /// Exclusive commit index.
    pub commit: u64,
    pub followers: [Follower; MAX_NODES],
    pub last_append_at: u64,
    pub last_hint_at: u64,
    pub hint_sent: u64,
    pub last_piggyback: u64,
    /// Ring floor published to the followers (see `layout::FLOOR`).
    pub floor: u64,
    pub encode_buf: Vec<u8>,
}

impl Leader {
    pub fn new(proposal: u64, max_payload: u32) -> Self {
        Leader {
            proposal,
            tail_pos: 0,
            tail_index: 0,
            tail_hash: 0,
            commit: 1,
            followers: [Follower::default(); MAX_NODES],
            last_append_at: 0,
            last_hint_at: 0,
            hint_sent: 0,
            last_piggyback: 0,
            floor: 0,
            encode_buf: vec![0; entry::total_len(max_payload) as usize],
        }
    }
}

impl Core {
    fn ldr(&mut self) -> &mut Leader {
        match &mut self.role {
            Role::Leader(l) => l,
            _ => unreachable!("leader state used outside the leader role"),
        }
    }

    fn ldr_ref(&self) -> Option<&Leader> {
        match &self.role {
            Role::Leader(l) => Some(l),
            _ => None,
        }
    }

    /// Appends one entry locally and sends it to every confirmed follower.
    pub(super) fn leader_propose(
        &mut self,
        payload: &[u8],
        mem: &mut dyn Memory,
    ) -> Result<Proposed, ProposeError> {
        let need = entry_len(payload.len());
        let mut free = self.ring_free();
        if need > free {
            self.exclude_dead_followers();
            free = self.ring_free();
            if need > free {
                return Err(ProposeError::LogFull { needed: need, free });
            }
        }
        self.raise_floor(need, mem);
        let id = EntryId::new(self.id, self.cfg.incarnation, self.entry_seq);
        self.entry_seq += 1;
        let capacity = self.cfg.ring_capacity;
        let now = self.now;
        let l = self.ldr();
        let header = entry::Header {
            len: payload.len() as u32,
            index: l.tail_index + 1,
            proposal: l.proposal,
            commit: l.commit,
            id,
            prev_hash: l.tail_hash,
        };
        let hash = entry::encode(&header, payload, &mut l.encode_buf);
        ring::write(mem, capacity, l.tail_pos, &l.encode_buf[..need as usize]);
        let pending = Pending {
            index: header.index,
            pos: l.tail_pos,
            total: need,
            hash,
            commit: header.commit,
        };
        l.tail_pos += need;
        l.tail_index = header.index;
        l.tail_hash = hash;
        l.last_piggyback = header.commit;
        l.last_append_at = now;
        self.applier.push_own(pending);
        for q in self.peers().collect::<Peers>() {
            self.pump(q);
        }
        self.recompute_commit(mem);
        Ok(Proposed {
            index: header.index,
            id,
        })
    }

    /// Posts the not yet sent part of the log to a confirmed follower, and
    /// its grant stamp once the catch-up range is out.
    pub(super) fn pump(&mut self, q: NodeId) {
        let max_inflight = self.cfg.max_inflight_per_peer;
        let capacity = self.cfg.ring_capacity;
        loop {
            let l = self.ldr();
            let (tail_pos, tail_index) = (l.tail_pos, l.tail_index);
            let f = l.followers[q.idx()];
            if f.phase != Phase::Confirmed || f.writes_inflight + 3 > max_inflight {
                return;
            }
            if f.stamp_at.is_some_and(|at| f.sent_pos >= at) {
                let stage = layout::slot(layout::STAGE_STAMPS, q);
                let kind = OpKind::HeaderWrite { epoch: f.epoch };
                self.post_write(q, kind, stage, layout::STAMP, 8);
                let f = &mut self.ldr().followers[q.idx()];
                f.stamp_at = None;
                f.writes_inflight += 1;
            }
            let f = self.ldr().followers[q.idx()];
            if f.sent_pos >= tail_pos {
                return;
            }
            let len = (tail_pos - f.sent_pos).min(MAX_WRITE);
            let end = f.sent_pos + len;
            let upto = (end == tail_pos).then_some(tail_index);
            let pieces = ring::pieces(capacity, f.sent_pos, len);
            let count = pieces.iter().flatten().count() as u16;
            let mut posted = 0;
            for (off, plen) in pieces.into_iter().flatten() {
                posted += 1;
                let kind = OpKind::LogWrite {
                    upto: if posted == count { upto } else { None },
                    epoch: f.epoch,
                };
                self.post_write(q, kind, off, off, plen);
            }
            let f = &mut self.ldr().followers[q.idx()];
            f.sent_pos = end;
            f.writes_inflight += count;
        }
    }

    pub(super) fn on_log_write(
        &mut self,
        q: NodeId,
        upto: Option<u64>,
        epoch: u32,
        result: Result<(), OpError>,
        mem: &mut dyn Memory,
    ) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let f = &mut l.followers[q.idx()];
        if f.epoch != epoch {
            return;
        }
        f.writes_inflight = f.writes_inflight.saturating_sub(1);
        match result {
            Ok(()) => {
                if let Some(u) = upto {
                    f.acked = f.acked.max(u);
                }
                self.recompute_commit(mem);
                self.pump(q);
            }
            Err(e) => self.follower_lost(q, epoch, e),
        }
    }

    /// A follower's write failed: it no longer receives entries until it
    /// grants again. If a newer candidate took the logs of too many
    /// followers, this leader is deposed and steps down.
    pub(super) fn follower_lost(&mut self, q: NodeId, epoch: u32, e: OpError) {
        let now = self.now;
        let n = self.n;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let f = &mut l.followers[q.idx()];
        if f.epoch != epoch || matches!(f.phase, Phase::Lapped) {
            return;
        }
        f.phase = Phase::Absent;
        f.epoch += 1;
        f.writes_inflight = 0;
        f.requested_at = now;
        let confirmed = l
            .followers
            .iter()
            .filter(|f| f.phase == Phase::Confirmed)
            .count();
        if e == OpError::Permission && confirmed + 1 < majority(n) {
            self.step_down();
        }
    }

    /// Moves the commit index to the highest index a majority holds.
    pub(super) fn recompute_commit(&mut self, mem: &mut dyn Memory) {
        let n = self.n;
        let me = self.id;
        let commit_early = crate::planted!(self.cfg, CommitBeforeMajority);
        let l = self.ldr();
        let mut acks = [0u64; MAX_NODES];
        for (p, a) in acks.iter_mut().enumerate().take(n) {
            *a = if p == me.idx() {
                l.tail_index
            } else {
                l.followers[p].acked.min(l.tail_index)
            };
        }
        acks[..n].sort_unstable_by(|a, b| b.cmp(a));
        let mut commit = acks[majority(n) - 1] + 1;
        if commit_early {
            commit = l.tail_index + 1;
        }
        if commit > l.commit {
            l.commit = commit;
        }
        let commit = l.commit;
        self.applier.commit = self.applier.commit.max(commit);
        self.applier.apply(mem);
    }

    /// Before the ring reuses space below the published floor, publish a
    /// higher one (the recycling point) to every follower; per-peer order
    /// makes it land before the entry that reuses the space.
    fn raise_floor(&mut self, need: u64, mem: &mut dyn Memory) {
        let capacity = self.cfg.ring_capacity;
        let point = self.recycle_point();
        let l = self.ldr();
        if l.tail_pos + need <= l.floor + capacity {
            return;
        }
        l.floor = l.floor.max(point);
        let floor = l.floor;
        mem.write_u64(layout::STAGE_FLOOR, floor);
        mem.write_u64(layout::FLOOR, floor);
        for q in self.peers().collect::<Peers>() {
            let f = self.ldr().followers[q.idx()];
            if f.phase == Phase::Confirmed {
                let kind = OpKind::HeaderWrite { epoch: f.epoch };
                self.post_write(q, kind, layout::STAGE_FLOOR, layout::FLOOR, 8);
            }
        }
    }

    /// Bytes the ring can take before overwriting something a live member
    /// has not applied.
    fn ring_free(&self) -> u64 {
        let l = self.ldr_ref().expect("leader");
        self.cfg.ring_capacity - (l.tail_pos - self.recycle_point()).min(self.cfg.ring_capacity)
    }

    /// The lowest apply position among the members recycling waits for.
    fn recycle_point(&self) -> u64 {
        let l = self.ldr_ref().expect("leader");
        let mut point = self.applier.apply_pos;
        if !crate::planted!(self.cfg, RecycleUnappliedSpace) {
            for q in self.peers() {
                let f = &l.followers[q.idx()];
                if f.phase != Phase::Lapped && !f.excluded {
                    point = point.min(f.known_apply_pos);
                }
            }
        }
        point
    }

    /// Recycling never waits on a dead node: a follower the detector
    /// considers dead is left out of recycling and stops receiving entries.
    /// If it returns it rejoins from its apply position while the ring
    /// still holds it, or needs a state transfer.
    ///
    /// Enough followers for a majority stay in, dead or not (the most
    /// advanced ones): the ring floor then never rises above the apply
    /// position of every follower. A leader that left them all out raised its floor to
    /// its own apply position; when it then died, every survivor was
    /// behind that floor (told so on rejoining, or through a member's
    /// floor when standing for election), none could lead and none could
    /// serve a state transfer, although their rings held every decided
    /// entry. Without a majority the leader commits nothing anyway, so
    /// holding its tail costs no progress.
    fn exclude_dead_followers(&mut self) {
        let n = self.n;
        let alive: [bool; MAX_NODES] =
            std::array::from_fn(|p| p < n && self.detector.alive(NodeId(p as u8)));
        let now = self.now;
        let me = self.id.idx();
        let l = self.ldr();
        let holds = |f: &Follower| !f.excluded && f.phase != Phase::Lapped;
        let mut included = (0..n)
            .filter(|&p| p != me && holds(&l.followers[p]))
            .count();
        let mut dead = [0usize; MAX_NODES];
        let mut count = 0;
        for p in (0..n).filter(|&p| p != me && !alive[p] && holds(&l.followers[p])) {
            dead[count] = p;
            count += 1;
        }
        // The furthest behind first: leaving them out frees the most space.
        dead[..count].sort_unstable_by_key(|&p| l.followers[p].known_apply_pos);
        for &p in &dead[..count] {
            if included < majority(n) {
                break;
            }
            included -= 1;
            let f = &mut l.followers[p];
            f.excluded = true;
            if matches!(f.phase, Phase::Confirmed | Phase::Joining) {
                f.phase = Phase::Absent;
                f.epoch += 1;
                f.writes_inflight = 0;
                f.requested_at = now;
            }
        }
    }

    /// Heartbeat reads tell the leader how far each member applied.
    pub(super) fn leader_learns_status(&mut self, q: NodeId, st: PeerStatus) {
        let capacity = self.cfg.ring_capacity;
        let me = self.id;
        if let Role::Leader(l) = &mut self.role {
            let (tail_pos, floor) = (l.tail_pos, l.floor);
            let f = &mut l.followers[q.idx()];
            if f.phase == Phase::Lapped
                && st.apply_pos >= floor
                && st.apply_pos + capacity >= tail_pos
            {
                // A state transfer brought it back within the ring: hold
                // recycling for it and ask for its log again.
                f.phase = Phase::Absent;
                f.excluded = false;
                f.requested_at = 0;
            }
            if f.phase == Phase::Confirmed && st.holder != Some(me) {
                // It granted its log to someone else: this leader may be
                // deposed even if it has nothing to write right now.
                let epoch = f.epoch;
                return self.follower_lost(q, epoch, OpError::Permission);
            }
            if f.phase == Phase::Confirmed {
                f.known_apply_pos = f.known_apply_pos.max(st.apply_pos);
                f.known_applied = f.known_applied.max(st.applied);
            } else {
                f.known_apply_pos = st.apply_pos;
                f.known_applied = st.applied;
            }
        }
    }

    pub(super) fn leader_tick(&mut self, mem: &mut dyn Memory) {
        let now = self.now;
        let timeout = self.cfg.permission_timeout_ns;
        for q in self.peers().collect::<Peers>() {
            let alive = self.detector.alive(q);
            let f = self.ldr().followers[q.idx()];
            match f.phase {
                Phase::Absent | Phase::Lapped if alive && now >= f.requested_at + timeout => {
                    let r = self.send_request(q, mem);
                    let f = &mut self.ldr().followers[q.idx()];
                    f.phase = Phase::Requested;
                    f.request = r;
                    f.first_request = r;
                    f.requested_at = now;
                    f.retries = 0;
                }
                Phase::Requested => {
                    let ack = mem.read_u64(layout::slot(layout::ACKS, q));
                    // Only the latest request's ack counts (see
                    // `candidate_tick`): an earlier one leaves a request in
                    // flight that could grant this leader again after the
                    // follower revoked it.
                    if ack & !ACK_RECOVERING == f.request {
                        self.start_join(q);
                    } else if now >= f.requested_at + (timeout << f.retries.min(MAX_RETRY_SHIFT))
                        && alive
                    {
                        let r = self.send_request(q, mem);
                        let f = &mut self.ldr().followers[q.idx()];
                        f.request = r;
                        f.requested_at = now;
                        f.retries += 1;
                    }
                }
                _ => {}
            }
        }
        self.flush_commit(mem);
    }

    /// A follower granted: read its log header and status to learn where
    /// to start and whether it promised a newer leader meanwhile.
    fn start_join(&mut self, q: NodeId) {
        let f = &mut self.ldr().followers[q.idx()];
        f.phase = Phase::Joining;
        f.epoch += 1;
        f.writes_inflight = 0;
        f.join_reads = 2;
        let kind = OpKind::JoinRead { epoch: f.epoch };
        self.post_read(
            q,
            kind,
            layout::LOG,
            layout::landing(layout::HEADER_LANDING, q),
            layout::LOG_HEADER_LEN,
        );
        self.post_read(
            q,
            kind,
            layout::STATUS,
            layout::landing(layout::STATUS_LANDING, q),
            layout::STATUS_LEN,
        );
    }

    pub(super) fn on_join_read(
        &mut self,
        q: NodeId,
        epoch: u32,
        result: Result<(), OpError>,
        mem: &mut dyn Memory,
    ) {
        let Some(l) = self.ldr_ref() else {
            return;
        };
        let f = l.followers[q.idx()];
        if f.epoch != epoch || f.phase != Phase::Joining {
            return;
        }
        if let Err(e) = result {
            return self.follower_lost(q, epoch, e);
        }
        self.ldr().followers[q.idx()].join_reads -= 1;
        if f.join_reads > 1 {
            return;
        }
        let promised = mem.read_u64(layout::landing(layout::HEADER_LANDING, q));
        let Some((st, flags)) = self.landed_status(q, mem) else {
            // Torn status record: read again.
            return self.start_join(q);
        };
        if promised > self.ldr().proposal {
            // The follower promised a newer leader: this one is deposed.
            return self.step_down();
        }
        let request = f.request;
        self.confirm_follower(q, st, flags & FLAG_RECOVERING != 0, request, mem);
        // Its applied prefix counts as acknowledged: entries a previous
        // leader decided commit here too, even if nothing new is written.
        if self.ldr_ref().is_some() {
            self.recompute_commit(mem);
        }
    }

    /// Starts replicating to `q` from its apply position: min proposal and
    /// grant stamp first (they land before any entry), then the log.
    pub(super) fn confirm_follower(
        &mut self,
        q: NodeId,
        st: PeerStatus,
        recovering: bool,
        request: u64,
        mem: &mut dyn Memory,
    ) {
        let capacity = self.cfg.ring_capacity;
        let now = self.now;
        let ring_start = self.ring_start;
        let l = self.ldr();
        let (tail_pos, tail_index, floor) = (l.tail_pos, l.tail_index, l.floor);
        let f = &mut l.followers[q.idx()];
        f.known_apply_pos = st.apply_pos;
        f.known_applied = st.applied;
        if st.apply_pos > tail_pos {
            // It applied entries this leader does not have: they were
            // decided by a newer leader, so this one is stale.
            return self.step_down();
        }
        // Below `ring_start` this leader's own ring holds nothing to send.
        let behind = st.apply_pos < floor || st.apply_pos < ring_start;
        if tail_pos - st.apply_pos > capacity || behind {
            // Tell it (the floor lands in its header and it sees that it
            // is behind), and ask again later: a state transfer moves it on.
            f.phase = Phase::Lapped;
            f.requested_at = now;
            let kind = OpKind::HeaderWrite { epoch: f.epoch };
            mem.write_u64(layout::STAGE_FLOOR, floor.max(st.apply_pos + 1));
            self.post_write(q, kind, layout::STAGE_FLOOR, layout::FLOOR, 8);
            return;
        }
        f.phase = Phase::Confirmed;
        f.excluded = false;
        f.sent_pos = st.apply_pos;
        f.acked = st.applied;
        f.writes_inflight = 0;
        let epoch = f.epoch;
        let header = OpKind::HeaderWrite { epoch };
        self.post_write(
            q,
            header,
            layout::STAGE_MIN_PROPOSAL,
            layout::MIN_PROPOSAL,
            8,
        );
        mem.write_u64(layout::slot(layout::STAGE_STAMPS, q), request);
        if recovering {
            let through = layout::slot(layout::STAGE_RECOVERED, q);
            mem.write_u64(through, tail_index + 1);
            self.post_write(q, header, through, layout::RECOVERED_THROUGH, 8);
        }
        // The stamp lets the follower apply again. It goes out after the
        // whole range the follower could apply has been rewritten, so the
        // follower never applies a copy that this leader may still overwrite.
        self.ldr().followers[q.idx()].stamp_at = Some(tail_pos);
        self.pump(q);
    }

    /// When no entry carried the latest commit index for a while, write it
    /// to the followers so their last entries become visible (the original
    /// left the last write unapplied until the next one).
    fn flush_commit(&mut self, mem: &mut dyn Memory) {
        let now = self.now;
        let delay = self.cfg.commit_flush_delay_ns;
        let l = self.ldr();
        let commit = l.commit;
        if commit <= l.last_piggyback || now < l.last_append_at + delay {
            return;
        }
        let behind = l
            .followers
            .iter()
            .any(|f| f.phase == Phase::Confirmed && f.known_applied + 1 < commit);
        let due = commit != l.hint_sent || (behind && now >= l.last_hint_at + 8 * delay);
        if !due {
            return;
        }
        let Some(hash) = self.applier.hash_of(commit - 1) else {
            return;
        };
        mem.write(layout::STAGE_HINT, &encode_hint(commit, hash));
        let l = self.ldr();
        l.hint_sent = commit;
        l.last_hint_at = now;
        for q in self.peers().collect::<Peers>() {
            let f = self.ldr().followers[q.idx()];
            if f.phase == Phase::Confirmed {
                let kind = OpKind::HeaderWrite { epoch: f.epoch };
                self.post_write(q, kind, layout::STAGE_HINT, layout::HINT, layout::HINT_LEN);
            }
        }
    }
}
