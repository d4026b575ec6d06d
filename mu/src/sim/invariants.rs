//! Safety properties checked after every simulator step.
//!
//! | property | mu-reference | violation |
//! |---|---|---|
//! | agreement: one value per index | §8.1 | [`Violation::Agreement`] |
//! | gap-free prefix, each entry once | §8.2 | [`Violation::Gap`] |
//! | durability of acknowledged entries | §8.3 | [`Violation::LostAck`] |
//! | validity: only proposed values | §8.4 | [`Violation::Invented`] |
//! | single writer, fencing of deposed leaders | §8.5, §8.6 | [`Violation::ForeignWrite`] |
//! | monotonic min proposal | §8.7 | [`Violation::ProposalDecreased`] |
//! | recycling never overwrites a member's unapplied entries | §8.9 | [`Violation::RecycledUnapplied`] |
//! | liveness after faults stop | §8.11–8.13 | [`Violation::Stuck`] |

use crate::log::entry;
use crate::types::{EntryId, NodeId};
use std::collections::BTreeMap;
use std::fmt;
use xxhash_rust::xxh3::xxh3_64;

/// A broken property, with the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Two replicas applied different values at one index.
    Agreement {
        /// The index.
        index: u64,
        /// The replica that disagreed.
        node: NodeId,
        /// Id decided first.
        first: EntryId,
        /// Id this replica applied.
        applied: EntryId,
    },
    /// A replica applied out of order, skipped or repeated an index.
    Gap {
        /// The replica.
        node: NodeId,
        /// The index it should have applied next.
        expected: u64,
        /// The index it applied.
        got: u64,
    },
    /// A leader's log lacks or changed an entry that was already decided.
    LostAck {
        /// The leader.
        node: NodeId,
        /// The index.
        index: u64,
    },
    /// A replica applied a value nobody proposed.
    Invented {
        /// The replica.
        node: NodeId,
        /// The index.
        index: u64,
    },
    /// A write landed in a log from a node that did not hold it.
    ForeignWrite {
        /// Writer.
        from: NodeId,
        /// Target.
        to: NodeId,
    },
    /// A replica's min proposal went down.
    ProposalDecreased {
        /// The replica.
        node: NodeId,
        /// Before.
        before: u64,
        /// After.
        after: u64,
    },
    /// A leader wrote past a confirmed follower's unapplied entries.
    RecycledUnapplied {
        /// The leader.
        leader: NodeId,
        /// The follower.
        follower: NodeId,
        /// Leader's tail position.
        tail: u64,
        /// Follower's apply position.
        apply_pos: u64,
    },
    /// After faults stopped, the group did not converge in the budget.
    Stuck {
        /// What was still missing.
        what: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The global record every check compares against.
#[derive(Debug, Default)]
pub struct Checker {
    /// Decided index -> (entry id, chain hash).
    pub decided: Vec<(EntryId, u64)>,
    /// Proposed id -> payload hash.
    pub proposed: BTreeMap<EntryId, u64>,
    /// Next index each replica must apply.
    pub next: Vec<u64>,
    /// Highest min proposal seen per replica (per incarnation).
    pub min_proposal: Vec<u64>,
    /// Highest proposal number any leader started with.
    pub leader_proposal: u64,
}

impl Checker {
    /// A checker for `n` replicas.
    pub fn new(n: usize) -> Self {
        Checker {
            decided: Vec::new(),
            proposed: BTreeMap::new(),
            next: vec![1; n],
            min_proposal: vec![0; n],
            leader_proposal: 0,
        }
    }

    /// Records a proposal accepted by a leader.
    pub fn proposed(&mut self, id: EntryId, payload: &[u8]) {
        self.proposed.insert(id, xxh3_64(payload));
    }

    /// Checks one applied entry.
    pub fn applied(
        &mut self,
        node: NodeId,
        index: u64,
        id: EntryId,
        payload: &[u8],
    ) -> Result<(), Violation> {
        let expected = self.next[node.idx()];
        if index != expected {
            return Err(Violation::Gap {
                node,
                expected,
                got: index,
            });
        }
        self.next[node.idx()] += 1;
        if self.proposed.get(&id) != Some(&xxh3_64(payload)) {
            return Err(Violation::Invented { node, index });
        }
        let at = (index - 1) as usize;
        if let Some(&(first, _)) = self.decided.get(at) {
            if first != id {
                return Err(Violation::Agreement {
                    index,
                    node,
                    first,
                    applied: id,
                });
            }
        } else {
            let prev = at.checked_sub(1).map_or(0, |p| self.decided[p].1);
            let hash = entry::chain_hash(index, id, prev, payload);
            self.decided.push((id, hash));
        }
        Ok(())
    }

    /// Chain hash of a decided index.
    pub fn decided_hash(&self, index: u64) -> Option<u64> {
        index
            .checked_sub(1)
            .and_then(|i| self.decided.get(i as usize))
            .map(|d| d.1)
    }

    /// Every decided entry a leader holds must be the decided one.
    ///
    /// Only for a leader whose proposal is above every earlier leader's.
    /// A candidate that finished its prepare, was then overtaken by a
    /// higher proposal whose leader decided more, and only afterwards
    /// became leader holds what its prepare read, as a Paxos proposer of a
    /// lower ballot does; the members that promised the higher proposal
    /// revoked it, so none of its writes can land or count (a write that
    /// did would show as a foreign write or a disagreement).
    pub fn leader_log(
        &mut self,
        node: NodeId,
        proposal: u64,
        log: &[(u64, u64)],
    ) -> Result<(), Violation> {
        if proposal < self.leader_proposal {
            return Ok(());
        }
        self.leader_proposal = proposal;
        for &(index, hash) in log {
            if let Some(h) = self.decided_hash(index) {
                if h != hash {
                    return Err(Violation::LostAck { node, index });
                }
            }
        }
        Ok(())
    }

    /// The min proposal of a replica must never decrease.
    pub fn min_proposal(&mut self, node: NodeId, value: u64) -> Result<(), Violation> {
        let before = self.min_proposal[node.idx()];
        if value < before {
            return Err(Violation::ProposalDecreased {
                node,
                before,
                after: value,
            });
        }
        self.min_proposal[node.idx()] = value;
        Ok(())
    }

    /// A replica restarted with an empty region: it applies from index 1
    /// again and its min proposal starts over.
    pub fn restarted(&mut self, node: NodeId) {
        self.next[node.idx()] = 1;
        self.min_proposal[node.idx()] = 0;
    }

    /// A replica installed a donor's state up to `applied`.
    pub fn transferred(&mut self, node: NodeId, applied: u64) {
        self.next[node.idx()] = applied + 1;
    }
}
