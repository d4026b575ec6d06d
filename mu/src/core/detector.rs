//! Pull-score failure detector with hysteresis (mu-reference §4.1).
//!
//! Every heartbeat interval a node reads each peer's status record. A
//! heartbeat counter that moved raises the peer's score, one that did not
//! lowers it, a failed read lowers it faster. The peer is alive while the
//! score stays above the failure threshold and becomes alive again only
//! when it climbs back to the recovery threshold, so a flapping peer does
//! not flip leadership back and forth.

use crate::config::DetectorConfig;
use crate::types::{NodeId, MAX_NODES};

/// What a status record says about a peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// Heartbeat counter.
    pub heartbeat: u64,
    /// The peer may lead (not rejoining, not behind the ring).
    pub eligible: bool,
    /// Last applied index.
    pub applied: u64,
    /// Absolute position of the next entry to apply.
    pub apply_pos: u64,
    /// Who may write its log.
    pub holder: Option<NodeId>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Peer {
    score: u8,
    alive: bool,
    seen: bool,
    last: PeerStatus,
}

/// Scores of every peer.
#[derive(Clone, Debug)]
pub struct Detector {
    cfg: DetectorConfig,
    peers: [Peer; MAX_NODES],
}

impl Detector {
    /// A detector that considers every peer dead until it hears from it.
    pub fn new(cfg: DetectorConfig) -> Self {
        Detector {
            cfg,
            peers: [Peer::default(); MAX_NODES],
        }
    }

    /// Records a successful read of `peer`'s status record.
    pub fn observe(&mut self, peer: NodeId, status: PeerStatus) {
        let p = &mut self.peers[peer.idx()];
        if !p.seen || status.heartbeat != p.last.heartbeat {
            p.score = p
                .score
                .saturating_add(self.cfg.score_up)
                .min(self.cfg.max_score);
        } else {
            p.score = p.score.saturating_sub(1);
        }
        p.seen = true;
        p.last = status;
        self.update(peer);
    }

    /// Records a failed read of `peer`.
    pub fn failed(&mut self, peer: NodeId) {
        let p = &mut self.peers[peer.idx()];
        p.score = p.score.saturating_sub(self.cfg.score_down_on_error);
        self.update(peer);
    }

    fn update(&mut self, peer: NodeId) {
        let p = &mut self.peers[peer.idx()];
        if p.alive && p.score <= self.cfg.fail_threshold {
            p.alive = false;
        } else if !p.alive && p.score >= self.cfg.recover_threshold {
            p.alive = true;
        }
    }

    /// Whether `peer` is currently considered alive.
    pub fn alive(&self, peer: NodeId) -> bool {
        self.peers[peer.idx()].alive
    }

    /// The peer's score.
    pub fn score(&self, peer: NodeId) -> u8 {
        self.peers[peer.idx()].score
    }

    /// The last status record read from `peer`.
    pub fn last(&self, peer: NodeId) -> PeerStatus {
        self.peers[peer.idx()].last
    }

    /// The lowest-id node that is alive and eligible, counting `me` when
    /// `me_eligible`.
    pub fn leader_view(&self, me: NodeId, me_eligible: bool, n: usize) -> Option<NodeId> {
        (0..n as u8).map(NodeId).find(|&p| {
            if p == me {
                me_eligible
            } else {
                self.peers[p.idx()].alive && self.peers[p.idx()].last.eligible
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(hb: u64) -> PeerStatus {
        PeerStatus {
            heartbeat: hb,
            eligible: true,
            ..Default::default()
        }
    }

    #[test]
    fn silent_peer_dies_and_needs_the_recovery_threshold_to_return() {
        let cfg = DetectorConfig::default();
        let mut d = Detector::new(cfg);
        let p = NodeId(1);
        let mut hb = 0;
        for _ in 0..10 {
            hb += 1;
            d.observe(p, status(hb));
        }
        assert!(d.alive(p));
        let mut silent_reads = 0;
        while d.alive(p) {
            d.observe(p, status(hb));
            silent_reads += 1;
        }
        assert_eq!(silent_reads, (cfg.max_score - cfg.fail_threshold) as usize);
        // One heartbeat is not enough to come back (hysteresis).
        hb += 1;
        d.observe(p, status(hb));
        assert!(!d.alive(p));
        hb += 1;
        d.observe(p, status(hb));
        assert!(d.alive(p));
    }

    #[test]
    fn leader_view_is_lowest_alive_eligible() {
        let mut d = Detector::new(DetectorConfig::default());
        for hb in 1..5 {
            d.observe(NodeId(2), status(hb));
            d.observe(
                NodeId(0),
                PeerStatus {
                    heartbeat: hb,
                    eligible: false,
                    ..Default::default()
                },
            );
        }
        assert_eq!(d.leader_view(NodeId(1), true, 3), Some(NodeId(1)));
        assert_eq!(d.leader_view(NodeId(1), false, 3), Some(NodeId(2)));
        assert_eq!(d.leader_view(NodeId(3), false, 3), Some(NodeId(2)));
    }
}
