//! Small value types shared by every layer, with explicit widths.

use std::fmt;

/// Largest group the region layout has room for. Groups of 1 to 7 replicas
/// are supported; the eighth slot keeps per-peer tables a power of two.
pub const MAX_NODES: usize = 8;

/// A replica's position in its group: `0..group_size`. Lower ids win
/// elections (the leader is the lowest-id live, eligible replica).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeId(pub u8);

impl NodeId {
    /// The id as an index into per-peer tables.
    pub fn idx(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identity of a proposed value, unique across the group and across
/// restarts: the proposing node (8 bits), its incarnation (16 bits) and a
/// per-incarnation sequence number (40 bits). It travels inside the entry,
/// survives adoption by a later leader, and tells a waiting proposer whether
/// the value decided at its index is its own (mu-reference §7 B1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct EntryId(pub u64);

impl EntryId {
    /// Packs the three parts; `seq` is truncated to 40 bits.
    pub fn new(node: NodeId, incarnation: u16, seq: u64) -> Self {
        EntryId(
            (u64::from(node.0) << 56) | (u64::from(incarnation) << 40) | (seq & ((1 << 40) - 1)),
        )
    }

    /// The node that proposed the value.
    pub fn node(self) -> NodeId {
        NodeId((self.0 >> 56) as u8)
    }
}

/// Proposal numbers are unique per node: `round * 64 + id`, round >= 1.
pub(crate) fn proposal_number(round: u64, id: NodeId) -> u64 {
    round * 64 + u64::from(id.0)
}

/// The round of a proposal number (inverse of [`proposal_number`]).
pub(crate) fn proposal_round(proposal: u64) -> u64 {
    proposal / 64
}

/// Majority of a group of `n`: `n / 2 + 1`, correct for even sizes too
/// (mu-reference §7 B4: the original used `(n + 1) / 2`).
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b4_majority_is_correct_for_even_and_odd_groups() {
        // mu-reference §7 B4: (n+1)/2 gives 2 for n = 4, which lets two
        // disjoint pairs both believe they hold a majority.
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
        assert_eq!(majority(6), 4);
        assert_eq!(majority(7), 4);
        for n in 1..=7 {
            // Any two majorities intersect.
            assert!(2 * majority(n) > n);
        }
    }

    #[test]
    fn entry_id_round_trips_its_node() {
        let id = EntryId::new(NodeId(5), 7, 123);
        assert_eq!(id.node(), NodeId(5));
        assert_ne!(id, EntryId::new(NodeId(5), 8, 123));
    }

    #[test]
    fn proposal_numbers_are_unique_per_node() {
        assert_ne!(proposal_number(3, NodeId(1)), proposal_number(3, NodeId(2)));
        assert_eq!(proposal_round(proposal_number(9, NodeId(6))), 9);
    }
}
