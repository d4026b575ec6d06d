//! The follower's loop: detect a ring floor above the cursor, wait for the
//! grant stamp, cache and apply committed entries, learn commit hints.

use super::*;

impl Core {
    /// Applies committed entries of the own log.
    pub(super) fn follow(&mut self, mem: &mut dyn Memory) {
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
                    // The holder stamps with the latest number it sent, so
                    // a request of its that arrived after the stamp was
                    // staged is covered; the id bits keep an earlier
                    // holder's stamp from counting.
                    let landed = mem.read_u64(layout::STAMP);
                    if !stamp_covers(landed, stamp) {
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

    pub(super) fn set_lapped(&mut self) {
        self.lapped = true;
        if !matches!(self.role, Role::Follower) {
            self.step_down();
        }
    }
}

/// Whether the grant stamp `landed` was written by the holder of the grant
/// `granted` (same id bits) at or after that request.
fn stamp_covers(landed: u64, granted: u64) -> bool {
    let id_mask = (1u64 << REQUEST_ID_BITS) - 1;
    landed & id_mask == granted & id_mask && landed >= granted
}
