//! Views of internal state for the simulator's checks and failure reports.

use super::*;

impl Core {
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
}
