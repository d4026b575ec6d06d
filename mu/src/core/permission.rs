//! Permission on the follower side: granting the log to one candidate at a
//! time (mu-reference §3.2), and restoring the promise after a restart.

use super::*;

impl Core {
    /// Grants the log to the lowest new requester that is not above this
    /// node's view of the leader (mu-reference §3.2, answered per node so a
    /// candidate needs only a majority).
    pub(super) fn serve_requests(&mut self, mem: &mut dyn Memory) {
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
        self.granted_at = Some(self.now);
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

    /// A replica that restarted lost its min proposal, the promise it made
    /// to leaders. Before it grants its log to anyone it reads the min
    /// proposal of enough peers that they include a member of every
    /// majority it may have promised to (n - majority + 1 of them) and
    /// adopts the highest. Otherwise a stale leader could find a blank
    /// promise, write its old log over a decided value and count the
    /// write toward a majority.
    pub(super) fn restore_tick(&mut self, mem: &mut dyn Memory) {
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

    pub(super) fn on_restore_read(
        &mut self,
        p: NodeId,
        result: Result<(), OpError>,
        mem: &dyn Memory,
    ) {
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
}

/// Progress of restoring the promise after a restart.
#[derive(Debug, Default)]
pub(super) struct Restore {
    got: [bool; MAX_NODES],
    reading: [bool; MAX_NODES],
    answered: usize,
    highest: u64,
}
