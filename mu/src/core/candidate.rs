//! Becoming leader: permissions from a majority, then the prepare.
//!
//! 1. The candidate revokes every remote writer of its own log and writes a
//!    fresh request number into each peer's request slot.
//! 2. Each peer that grants (revoking its previous holder first) acks the
//!    number. Peers that have not granted are asked again after the
//!    permission timeout with a fresh number, each wait twice the one
//!    before (capped), so grants slower than the timeout still arrive. Only
//!    an ack of the latest number counts: with an earlier one acked, the
//!    latest could still land after the peer revoked this candidate and
//!    grant it again. Grants from rejoining replicas do not count: they may
//!    have forgotten values they accepted before their restart.
//! 3. With a majority (itself included), the candidate reads each
//!    grantor's log header (min proposal) and status (apply position).
//! 4. It picks a proposal number above every min proposal it saw and
//!    writes it into every member's min proposal (the promise), then reads
//!    each member's log from its own apply position on, as far as an
//!    unbroken chain goes. A member counts only once its promise write
//!    completed: a member that granted its log to an older leader again
//!    before the promise landed would take that leader's entries, which
//!    the logs read here would not show, and that leader, reading the
//!    promise when it joins the member, steps down (mu-reference §2.4
//!    writes the proposal before reading the slots for the same reason).
//! 5. For each index it adopts the value with the highest proposal among the
//!    logs read: a value a previous leader may have committed is never lost.
//!    Adopted values are rewritten under the new number, keeping their
//!    identity, so their proposers learn they committed (B1).
//! 6. It becomes leader: followers get their grant stamp, then the log from
//!    their apply position.

use super::leader::{Leader, Phase};
use super::*;
use crate::error::OpError;
use crate::log::{entry, ring};
use crate::types::{majority, proposal_number, proposal_round};
use applier::Pending;

#[derive(Debug)]
pub(super) struct Candidate {
    /// The latest request number sent to each peer.
    requests: [u64; MAX_NODES],
    /// The first request number of this candidacy sent to each peer.
    first_requests: [u64; MAX_NODES],
    requested_at: u64,
    /// Requests re-sent so far: each wait doubles (capped), so grants
    /// slower than the permission timeout still complete a round trip.
    retries: u32,
    prepare: Option<Prepare>,
}

#[derive(Debug)]
struct Prepare {
    started_at: u64,
    members: [bool; MAX_NODES],
    peers: Vec<PeerLog>,
    /// The proposal number, chosen once every member's header was read.
    proposal: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading the header and status.
    #[default]
    Meta,
    /// Header and status read; waiting for the proposal number.
    Read,
    /// Promise written (completion pending) and log being read.
    Chain,
    Done,
}

/// What the candidate learned of one member's log.
#[derive(Debug, Default)]
struct PeerLog {
    stage: Stage,
    min_proposal: u64,
    floor: u64,
    status: PeerStatus,
    /// The promise write completed.
    promised: bool,
    read_pos: u64,
    read_len: u64,
    /// Header, payload offset in `payloads`, chain hash.
    entries: Vec<(entry::Header, usize, u64)>,
    payloads: Vec<u8>,
}

impl Core {
    fn cand(&mut self) -> &mut Candidate {
        match &mut self.role {
            Role::Candidate(c) => c,
            _ => unreachable!("candidate state used outside the candidate role"),
        }
    }

    pub(super) fn become_candidate(&mut self, mem: &mut dyn Memory) {
        self.term += 1;
        self.actions.push(Action::Grant {
            peer: self.id,
            revoke_others: true,
        });
        if self.holder != Some(self.id) {
            self.permission_switches += 1;
        }
        self.holder = Some(self.id);
        self.frozen = None;
        self.applier.reset();
        let mut requests = [0u64; MAX_NODES];
        for p in self.peers().collect::<Peers>() {
            requests[p.idx()] = self.send_request(p, mem);
        }
        self.role = Role::Candidate(Box::new(Candidate {
            requests,
            first_requests: requests,
            requested_at: self.now,
            retries: 0,
            prepare: None,
        }));
    }

    /// Asks `p` for its log with a fresh request number; returns the number.
    pub(super) fn send_request(&mut self, p: NodeId, mem: &mut dyn Memory) -> u64 {
        let r = self.next_request();
        let stage = layout::slot(layout::STAGE_REQUESTS, p);
        mem.write_u64(stage, r);
        self.post_write(
            p,
            OpKind::ControlWrite,
            stage,
            layout::slot(layout::REQUESTS, self.id),
            8,
        );
        r
    }

    pub(super) fn candidate_tick(&mut self, mem: &mut dyn Memory) {
        let now = self.now;
        let n = self.n;
        let me = self.id.idx();
        let prepare_timeout = self.cfg.prepare_timeout_ns;
        let permission_timeout = self.cfg.permission_timeout_ns;
        let c = self.cand();
        if let Some(p) = &c.prepare {
            if now >= p.started_at + prepare_timeout {
                self.step_down();
            }
            return;
        }
        let mut members = [false; MAX_NODES];
        members[me] = true;
        let mut count = 1;
        for (p, member) in members.iter_mut().enumerate().take(n) {
            if p == me || c.requests[p] == 0 {
                continue;
            }
            // Only an ack of the latest request counts: with an older one
            // acked, the latest may still be in flight, and a peer that
            // revokes this candidate later (it grants another or stands
            // itself) would grant it again when that request lands. The
            // candidate's promise and the old log it read would then pass
            // as one continuous grant (flapping seed 11588).
            let ack = mem.read_u64(layout::slot(layout::ACKS, NodeId(p as u8)));
            if ack == c.requests[p] {
                *member = true;
                count += 1;
            }
        }
        if count >= majority(n) {
            self.start_prepare(members, mem);
        } else if now >= c.requested_at + (permission_timeout << c.retries.min(MAX_RETRY_SHIFT)) {
            for p in self.peers().collect::<Peers>() {
                if !members[p.idx()] {
                    let r = self.send_request(p, mem);
                    self.cand().requests[p.idx()] = r;
                }
            }
            let c = self.cand();
            c.requested_at = now;
            c.retries += 1;
        }
    }

    fn start_prepare(&mut self, members: [bool; MAX_NODES], mem: &mut dyn Memory) {
        let mut peers: Vec<PeerLog> = (0..self.n).map(|_| PeerLog::default()).collect();
        let me = self.id.idx();
        peers[me].min_proposal = self.own_min_proposal(mem);
        peers[me].floor = mem.read_u64(layout::FLOOR);
        peers[me].stage = Stage::Done;
        peers[me].promised = true;
        if self.read_own_chain(&mut peers[me], mem).is_err() {
            return self.set_lapped();
        }
        self.cand().prepare = Some(Prepare {
            started_at: self.now,
            members,
            peers,
            proposal: None,
        });
        for q in self.peers().collect::<Peers>() {
            if members[q.idx()] {
                self.read_meta(q);
            }
        }
        self.maybe_decide(mem);
    }

    fn read_meta(&mut self, q: NodeId) {
        let header = layout::landing(layout::HEADER_LANDING, q);
        self.post_read(q, OpKind::PrepRead { last: false }, layout::LOG, header, 64);
        let status = layout::landing(layout::STATUS_LANDING, q);
        self.post_read(
            q,
            OpKind::PrepRead { last: true },
            layout::STATUS,
            status,
            64,
        );
    }

    /// Reads the next chunk of `q`'s log into its scratch.
    fn read_chunk(&mut self, q: NodeId) {
        let capacity = self.cfg.ring_capacity;
        let len = self.layout.scratch_len.min(capacity);
        let scratch = self.layout.scratch(q);
        let pos = {
            let Some(p) = &mut self.cand().prepare else {
                return;
            };
            let log = &mut p.peers[q.idx()];
            log.read_len = len;
            log.read_pos
        };
        let pieces = ring::pieces(capacity, pos, len);
        let count = pieces.iter().flatten().count();
        let mut done = 0;
        for (i, (off, plen)) in pieces.into_iter().flatten().enumerate() {
            let kind = OpKind::PrepRead {
                last: i + 1 == count,
            };
            self.post_read(q, kind, off, scratch + done, plen);
            done += plen;
        }
    }

    /// A prepare operation on member `q` failed: it is no longer a member;
    /// the candidate steps down below a majority, else decides with the
    /// others.
    fn lose_member(&mut self, q: NodeId, mem: &mut dyn Memory) {
        let n = self.n;
        if let Role::Candidate(c) = &mut self.role {
            if let Some(p) = &mut c.prepare {
                p.members[q.idx()] = false;
                if p.members.iter().filter(|m| **m).count() < majority(n) {
                    return self.step_down();
                }
            }
        }
        self.maybe_decide(mem);
    }

    pub(super) fn on_prepare_read(
        &mut self,
        q: NodeId,
        last: bool,
        result: Result<(), OpError>,
        mem: &mut dyn Memory,
    ) {
        let Role::Candidate(c) = &mut self.role else {
            return;
        };
        let Some(p) = &mut c.prepare else {
            return;
        };
        if !p.members[q.idx()] {
            return;
        }
        if result.is_err() {
            return self.lose_member(q, mem);
        }
        if !last {
            return;
        }
        let stage = p.peers[q.idx()].stage;
        match stage {
            Stage::Meta => {
                let Some((st, _)) = self.landed_status(q, mem) else {
                    return self.read_meta(q);
                };
                let header = layout::landing(layout::HEADER_LANDING, q);
                let min_proposal = mem.read_u64(header);
                let floor = mem.read_u64(header + (layout::FLOOR - layout::LOG));
                let start = self.applier.apply_pos;
                let Some(p) = &mut self.cand().prepare else {
                    return;
                };
                let log = &mut p.peers[q.idx()];
                log.min_proposal = min_proposal;
                log.floor = floor;
                log.status = st;
                log.stage = Stage::Read;
                log.read_pos = start;
                self.maybe_promise(mem);
            }
            Stage::Chain => self.parse_chunk(q, mem),
            Stage::Read | Stage::Done => {}
        }
    }

    /// Once every member's header is read: picks the proposal number above
    /// every min proposal seen, writes it into each member's header and
    /// starts reading their logs behind it.
    fn maybe_promise(&mut self, mem: &mut dyn Memory) {
        let n = self.n;
        let floor = self.own_min_proposal(mem).max(self.last_proposal);
        let Role::Candidate(c) = &self.role else {
            return;
        };
        let Some(p) = &c.prepare else {
            return;
        };
        if p.proposal.is_some() || (0..n).any(|q| p.members[q] && p.peers[q].stage == Stage::Meta) {
            return;
        }
        let highest = (0..n)
            .filter(|&q| p.members[q])
            .map(|q| p.peers[q].min_proposal)
            .fold(floor, u64::max);
        let proposal = proposal_number(proposal_round(highest) + 1, self.id);
        self.last_proposal = proposal;
        mem.write_u64(layout::MIN_PROPOSAL, proposal);
        mem.write_u64(layout::STAGE_MIN_PROPOSAL, proposal);
        let Some(p) = &mut self.cand().prepare else {
            return;
        };
        p.proposal = Some(proposal);
        let members = p.members;
        for q in self.peers().collect::<Peers>() {
            if !members[q.idx()] {
                continue;
            }
            self.post_write(
                q,
                OpKind::PrepPromise,
                layout::STAGE_MIN_PROPOSAL,
                layout::MIN_PROPOSAL,
                8,
            );
            if let Some(p) = &mut self.cand().prepare {
                p.peers[q.idx()].stage = Stage::Chain;
            }
            self.read_chunk(q);
        }
    }

    pub(super) fn on_promise_write(
        &mut self,
        q: NodeId,
        result: Result<(), OpError>,
        mem: &mut dyn Memory,
    ) {
        let Role::Candidate(c) = &mut self.role else {
            return;
        };
        let Some(p) = &mut c.prepare else {
            return;
        };
        if !p.members[q.idx()] {
            return;
        }
        if result.is_err() {
            return self.lose_member(q, mem);
        }
        p.peers[q.idx()].promised = true;
        self.maybe_decide(mem);
    }

    /// Parses the chunk of `q`'s log that landed in its scratch.
    fn parse_chunk(&mut self, q: NodeId, mem: &mut dyn Memory) {
        let scratch = self.layout.scratch(q);
        let (applied, applied_hash, apply_pos) = (
            self.applier.applied,
            self.applier.applied_hash,
            self.applier.apply_pos,
        );
        let capacity = self.cfg.ring_capacity;
        let max_payload = self.cfg.max_payload;
        let Some(p) = &mut self.cand().prepare else {
            return;
        };
        let log = &mut p.peers[q.idx()];
        let mut buf = vec![0u8; log.read_len as usize];
        mem.read(scratch, &mut buf);
        let mut at = 0usize;
        let outcome = loop {
            let next = applied + 1 + log.entries.len() as u64;
            let prev = log.entries.last().map_or(applied_hash, |e| e.2);
            if log.read_pos + at as u64 - apply_pos >= capacity {
                break Chunk::Done;
            }
            let rest = &buf[at..];
            let Some((len, index)) = entry::peek(rest, max_payload) else {
                break if rest.len() < entry::HEADER_LEN as usize {
                    Chunk::More
                } else {
                    Chunk::Done
                };
            };
            let total = entry::total_len(len) as usize;
            if rest.len() < total {
                break if at == 0 { Chunk::Done } else { Chunk::More };
            }
            let Ok(parsed) = entry::verify(&rest[..total], max_payload) else {
                break Chunk::Done;
            };
            if index != next {
                let at_cursor = log.entries.is_empty() && at == 0 && index > next;
                break if at_cursor {
                    Chunk::Lapped
                } else {
                    Chunk::Done
                };
            }
            if parsed.header.prev_hash != prev {
                break Chunk::Done;
            }
            let start = log.payloads.len();
            log.payloads
                .extend_from_slice(entry::payload(rest, &parsed));
            log.entries.push((parsed.header, start, parsed.hash));
            at += total;
        };
        match outcome {
            Chunk::More => {
                log.read_pos += at as u64;
                self.read_chunk(q);
            }
            Chunk::Done => {
                log.stage = Stage::Done;
                self.maybe_decide(mem);
            }
            Chunk::Lapped => self.set_lapped(),
        }
    }

    /// The candidate's own log, read straight from its ring.
    fn read_own_chain(&self, log: &mut PeerLog, mem: &dyn Memory) -> Result<(), ()> {
        let capacity = self.cfg.ring_capacity;
        let mut pos = self.applier.apply_pos;
        let mut prev = self.applier.applied_hash;
        let mut next = self.applier.applied + 1;
        let mut buf = vec![0u8; entry::total_len(self.cfg.max_payload) as usize];
        while pos - self.applier.apply_pos < capacity {
            let mut head = [0u8; entry::HEADER_LEN as usize];
            ring::read(mem, capacity, pos, &mut head);
            let Some((len, index)) = entry::peek(&head, self.cfg.max_payload) else {
                break;
            };
            let total = entry::total_len(len);
            let b = &mut buf[..total as usize];
            ring::read(mem, capacity, pos, b);
            let Ok(parsed) = entry::verify(b, self.cfg.max_payload) else {
                break;
            };
            if index != next {
                if index > next && pos == self.applier.apply_pos {
                    return Err(());
                }
                break;
            }
            if parsed.header.prev_hash != prev {
                break;
            }
            let start = log.payloads.len();
            log.payloads.extend_from_slice(entry::payload(b, &parsed));
            log.entries.push((parsed.header, start, parsed.hash));
            prev = parsed.hash;
            next += 1;
            pos += total;
        }
        Ok(())
    }

    fn maybe_decide(&mut self, mem: &mut dyn Memory) {
        self.maybe_promise(mem);
        let Role::Candidate(c) = &self.role else {
            return;
        };
        let Some(p) = &c.prepare else {
            return;
        };
        let pending = (0..self.n)
            .any(|q| p.members[q] && (p.peers[q].stage != Stage::Done || !p.peers[q].promised));
        if !pending {
            self.decide(mem);
        }
    }

    /// Chooses the proposal number and the adopted values, writes them to
    /// the own log and turns leader.
    fn decide(&mut self, mem: &mut dyn Memory) {
        let Role::Candidate(c) = std::mem::replace(&mut self.role, Role::Follower) else {
            return;
        };
        let Candidate {
            requests,
            first_requests,
            requested_at,
            retries,
            prepare,
        } = *c;
        let Some(prep) = prepare else {
            return;
        };
        let members = prep.members;
        let Some(proposal) = prep.proposal else {
            return;
        };
        // A member whose ring floor is above this candidate's cursor may
        // have reused the space of entries the candidate still needs.
        let floor = (0..self.n)
            .filter(|&q| members[q])
            .map(|q| prep.peers[q].floor)
            .max()
            .unwrap_or(0);
        if floor > self.applier.apply_pos {
            return self.set_lapped();
        }
        // A member that applied past what its chain showed from this
        // candidate's cursor (a state transfer left no entries before its
        // own apply position) may hold accepted entries behind that point
        // which the read never reached, a decided one among them (flapping
        // seed 26855): this candidate cannot lead without a state transfer.
        let base = self.applier.applied;
        let unread = (0..self.n).any(|q| {
            let log = &prep.peers[q];
            members[q]
                && q != self.id.idx()
                && base + (log.entries.len() as u64) < log.status.applied
        });
        if unread {
            self.applier.reset();
            return self.set_lapped();
        }
        let mut leader = Leader::new(proposal, self.cfg.max_payload);
        leader.floor = floor;
        mem.write_u64(layout::STAGE_FLOOR, floor);
        leader.tail_pos = self.applier.apply_pos;
        leader.tail_index = self.applier.applied;
        leader.tail_hash = self.applier.applied_hash;
        leader.commit = self.applier.applied + 1;
        self.adopt(&prep, &mut leader, mem);
        let behind =
            (0..self.n).any(|q| members[q] && prep.peers[q].status.applied > leader.tail_index);
        if behind {
            // A member applied entries this candidate could not read back
            // (the ring moved past its cursor): it cannot lead without a
            // state transfer.
            self.applier.reset();
            return self.set_lapped();
        }
        // No entry has carried the commit index to the followers yet: the
        // idle flush sends it once the new leader is quiet.
        leader.last_piggyback = 0;
        leader.last_append_at = self.now;
        for q in self.peers().collect::<Peers>() {
            let f = &mut leader.followers[q.idx()];
            f.request = requests[q.idx()];
            f.first_request = first_requests[q.idx()];
            f.requested_at = requested_at;
            f.retries = retries;
            f.phase = Phase::Requested;
        }
        self.role = Role::Leader(Box::new(leader));
        self.leader_terms += 1;
        for q in self.peers().collect::<Peers>() {
            if members[q.idx()] {
                let st = prep.peers[q.idx()].status;
                self.confirm_follower(q, st, false, requests[q.idx()], mem);
            }
        }
        self.recompute_commit(mem);
    }

    /// Per index, the value with the highest proposal among the members'
    /// logs, rewritten under the new proposal into the own ring.
    fn adopt(&mut self, prep: &Prepare, leader: &mut Leader, mem: &mut dyn Memory) {
        let capacity = self.cfg.ring_capacity;
        let lowest_wins = crate::planted!(self.cfg, PrepareIgnoresHigherProposal);
        let first = self.applier.applied + 1;
        for k in first.. {
            let at = (k - first) as usize;
            let mut best: Option<(&entry::Header, &[u8])> = None;
            for q in 0..self.n {
                if !prep.members[q] {
                    continue;
                }
                let log = &prep.peers[q];
                let Some((h, start, _)) = log.entries.get(at) else {
                    continue;
                };
                let payload = &log.payloads[*start..*start + h.len as usize];
                let better = match best {
                    None => true,
                    Some((b, _)) if lowest_wins => h.proposal < b.proposal,
                    Some((b, _)) => h.proposal > b.proposal,
                };
                if better {
                    best = Some((h, payload));
                }
            }
            let Some((h, payload)) = best else {
                break;
            };
            let total = entry::total_len(h.len);
            // Decided entries always fit: every leader kept its tail within
            // a ring of its published floor, and no member's floor is above
            // this cursor (checked before). Only undecided values, mixed
            // from logs with different sizes, can be left out here.
            if leader.tail_pos + total - self.applier.apply_pos > capacity {
                break;
            }
            let header = entry::Header {
                len: h.len,
                index: k,
                proposal: leader.proposal,
                commit: leader.commit,
                id: h.id,
                prev_hash: leader.tail_hash,
            };
            let hash = entry::encode(&header, payload, &mut leader.encode_buf);
            ring::write(
                mem,
                capacity,
                leader.tail_pos,
                &leader.encode_buf[..total as usize],
            );
            self.applier.push_own(Pending {
                index: k,
                pos: leader.tail_pos,
                total,
                hash,
                commit: header.commit,
            });
            leader.tail_pos += total;
            leader.tail_index = k;
            leader.tail_hash = hash;
        }
    }
}

enum Chunk {
    More,
    Done,
    Lapped,
}
