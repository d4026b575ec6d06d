//! Applying committed entries of the node's own log, in order.
//!
//! The applier keeps a cursor (`applied`, its chain hash, and the position of
//! the next entry) and a cache of verified entries beyond it. An entry joins
//! the cache only if its checksum holds, its index is the next one and its
//! `prev_hash` equals the chain hash of the entry before it, so the cache is
//! always one unbroken chain from the applied prefix. Commit evidence comes
//! from the piggybacked commit field of a cached entry or from a commit hint
//! whose hash matches the chain; both speak about this exact chain. Before
//! an entry is applied it is read again and must still hash the same: a new
//! leader may have rewritten it meanwhile, in which case the cache is
//! dropped and the log is read again from the cursor (mu-reference §7 B6).
//!
//! A new leader rewrites a follower's log from the follower's apply
//! position. If the follower went on applying older copies meanwhile and the
//! rewrite were torn, the only copy of an entry it applied could be
//! destroyed. So a follower stops applying when it grants its log, and
//! starts again only when the new holder's grant stamp lands, which the
//! holder writes after the whole catch-up range (see `core::leader`).

use crate::fabric::Memory;
use crate::log::{entry, ring};
use crate::types::EntryId;
use std::collections::VecDeque;

/// Most entries parsed per scan, to bound the time of one step.
const SCAN_BATCH: usize = 64;
/// Bytes of delivery records the applier buffers before the driver drains them.
const DELIVERY_BUFFER: usize = 4 << 20;
/// Per-record overhead in the delivery buffer.
const DELIVERY_HEADER: usize = 40;

/// A verified entry beyond the applied prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pending {
    pub index: u64,
    pub pos: u64,
    pub total: u64,
    pub hash: u64,
    pub commit: u64,
}

/// A committed entry handed to the application.
#[derive(Debug)]
pub struct Delivery<'a> {
    /// Its log index.
    pub index: u64,
    /// The identity of the proposed value.
    pub id: EntryId,
    /// The payload.
    pub payload: &'a [u8],
    /// Chain hash of this entry.
    pub hash: u64,
    /// Absolute ring position right after it.
    pub next_pos: u64,
}

/// Outcome of a scan.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Scan {
    /// How many entries joined the cache.
    Found(usize),
    /// The ring moved past this replica's cursor: it needs a state transfer.
    Lapped,
}

#[derive(Debug)]
pub(crate) struct Applier {
    pub applied: u64,
    pub applied_hash: u64,
    pub apply_pos: u64,
    /// Exclusive: entries below this index are known decided.
    pub commit: u64,
    pub pending: VecDeque<Pending>,
    pending_cap: usize,
    capacity: u64,
    max_payload: u32,
    buf: Vec<u8>,
    deliveries: Vec<u8>,
}

impl Applier {
    pub fn new(capacity: u64, max_payload: u32) -> Self {
        let largest = entry::total_len(max_payload) as usize;
        let pending_cap = (capacity / entry::ALIGN) as usize;
        Applier {
            applied: 0,
            applied_hash: 0,
            apply_pos: 0,
            commit: 1,
            pending: VecDeque::with_capacity(pending_cap.min(1 << 16)),
            pending_cap,
            capacity,
            max_payload,
            buf: vec![0; largest],
            deliveries: Vec::with_capacity(DELIVERY_BUFFER.max(largest + DELIVERY_HEADER)),
        }
    }

    /// Position right after the last cached entry.
    pub fn next_pos(&self) -> u64 {
        self.pending
            .back()
            .map_or(self.apply_pos, |p| p.pos + p.total)
    }

    /// Index of the last cached (or applied) entry.
    pub fn last_index(&self) -> u64 {
        self.pending.back().map_or(self.applied, |p| p.index)
    }

    /// Chain hash of the last cached (or applied) entry.
    pub fn last_hash(&self) -> u64 {
        self.pending.back().map_or(self.applied_hash, |p| p.hash)
    }

    /// Chain hash of `index` if it is the applied entry or cached.
    pub fn hash_of(&self, index: u64) -> Option<u64> {
        if index == self.applied {
            return Some(self.applied_hash);
        }
        let front = self.pending.front()?.index;
        let at = index.checked_sub(front)? as usize;
        self.pending.get(at).map(|p| p.hash)
    }

    /// Forgets every cached entry and commit knowledge beyond the cursor.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.commit = self.applied + 1;
    }

    /// Extends the cache with entries found in the local ring.
    pub fn scan(&mut self, mem: &dyn Memory) -> Scan {
        let mut found = 0;
        while found < SCAN_BATCH && self.pending.len() < self.pending_cap {
            let pos = self.next_pos();
            let expected = self.last_index() + 1;
            let mut head = [0u8; entry::HEADER_LEN as usize];
            ring::read(mem, self.capacity, pos, &mut head);
            let Some((len, index)) = entry::peek(&head, self.max_payload) else {
                break;
            };
            let at_cursor = self.pending.is_empty();
            if index != expected && !(index > expected && at_cursor) {
                break;
            }
            let total = entry::total_len(len);
            let buf = &mut self.buf[..total as usize];
            ring::read(mem, self.capacity, pos, buf);
            let Ok(parsed) = entry::verify(buf, self.max_payload) else {
                break;
            };
            if index > expected {
                // A verified later entry sits where the next entry to apply
                // belongs: the ring wrapped over this replica's cursor.
                return Scan::Lapped;
            }
            let h = parsed.header;
            if h.prev_hash != self.last_hash() || h.commit > h.index {
                break;
            }
            self.pending.push_back(Pending {
                index,
                pos,
                total,
                hash: parsed.hash,
                commit: h.commit,
            });
            self.commit = self.commit.max(h.commit);
            found += 1;
        }
        Scan::Found(found)
    }

    /// Records commit evidence from a hint `(commit, hash of commit - 1)`.
    pub fn learn_hint(&mut self, commit: u64, hash: u64) {
        if commit > self.commit && self.hash_of(commit - 1) == Some(hash) {
            self.commit = commit;
        }
    }

    /// Records an entry the leader itself appended to its ring.
    pub fn push_own(&mut self, p: Pending) {
        debug_assert_eq!(p.index, self.last_index() + 1);
        debug_assert_eq!(p.pos, self.next_pos());
        self.pending.push_back(p);
    }

    /// Applies cached entries below the commit index; returns how many.
    pub fn apply(&mut self, mem: &dyn Memory) -> usize {
        let mut applied = 0;
        while let Some(&front) = self.pending.front() {
            if front.index >= self.commit {
                break;
            }
            let buf = &mut self.buf[..front.total as usize];
            ring::read(mem, self.capacity, front.pos, buf);
            let parsed = match entry::verify(buf, self.max_payload) {
                Ok(p) if p.hash == front.hash && p.header.index == front.index => p,
                _ => {
                    // Rewritten since it was cached: read the log again.
                    self.reset();
                    break;
                }
            };
            let payload = entry::payload(buf, &parsed);
            if self.deliveries.len() + DELIVERY_HEADER + payload.len() > self.deliveries.capacity()
            {
                break;
            }
            self.deliveries
                .extend_from_slice(&front.index.to_le_bytes());
            self.deliveries
                .extend_from_slice(&parsed.header.id.0.to_le_bytes());
            self.deliveries
                .extend_from_slice(&(payload.len() as u64).to_le_bytes());
            self.deliveries.extend_from_slice(&front.hash.to_le_bytes());
            self.deliveries
                .extend_from_slice(&(front.pos + front.total).to_le_bytes());
            self.deliveries.extend_from_slice(payload);
            self.applied = front.index;
            self.applied_hash = front.hash;
            self.apply_pos = front.pos + front.total;
            self.pending.pop_front();
            applied += 1;
        }
        applied
    }

    /// Hands every buffered delivery to `f`, in log order, and clears them.
    pub fn drain(&mut self, mut f: impl FnMut(Delivery<'_>)) {
        let mut at = 0;
        let d = &self.deliveries;
        while at < d.len() {
            let word = |o: usize| u64::from_le_bytes(d[o..o + 8].try_into().expect("8 bytes"));
            let len = word(at + 16) as usize;
            f(Delivery {
                index: word(at),
                id: EntryId(word(at + 8)),
                payload: &d[at + DELIVERY_HEADER..at + DELIVERY_HEADER + len],
                hash: word(at + 24),
                next_pos: word(at + 32),
            });
            at += DELIVERY_HEADER + len;
        }
        self.deliveries.clear();
    }

    /// True when deliveries wait to be drained.
    pub fn has_deliveries(&self) -> bool {
        !self.deliveries.is_empty()
    }
}
