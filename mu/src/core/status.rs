//! The status record: what every replica publishes about itself in its
//! control area (heartbeat, flags, applied point, log holder), and the
//! heartbeat round that reads everyone else's.

use super::*;
use xxhash_rust::xxh3::xxh3_64;

impl Core {
    pub(super) fn flags(&self) -> u64 {
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
    pub(super) fn write_status(&mut self, mem: &mut dyn Memory) {
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
    pub(super) fn landed_status(
        &self,
        peer: NodeId,
        mem: &dyn Memory,
    ) -> Option<(PeerStatus, u64)> {
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

    pub(super) fn heartbeat_round(&mut self, mem: &mut dyn Memory) {
        if !self.paused {
            self.heartbeat += 1;
        }
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
}

/// Encodes a commit hint: commit index, chain hash of `commit - 1`, check.
pub(super) fn encode_hint(commit: u64, hash: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&commit.to_le_bytes());
    b[8..16].copy_from_slice(&hash.to_le_bytes());
    let check = xxh3_64(&b[..16]) ^ 0x6d75_6869_6e74;
    b[16..].copy_from_slice(&check.to_le_bytes());
    b
}

pub(super) fn decode_hint(b: &[u8; 24]) -> Option<(u64, u64)> {
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
    let (c, h) = (word(0), word(8));
    (c > 0 && xxh3_64(&b[..16]) ^ 0x6d75_6869_6e74 == word(16)).then_some((c, h))
}
