//! The simulator must catch every planted bug (a checker that never fails
//! proves nothing), and the same seeds must pass without the bug.
//!
//! Each test runs seeds with one mutation of the protocol until an
//! invariant breaks, and fails if none breaks within the budget.

#![cfg(feature = "planted-bugs")]

use mu::config::PlantedBug;
use mu::sim::{run, Options, Violation};

/// Seeds tried per bug before the test gives up. Each is caught within a
/// few hundred seeds (bug (c), which needs two different values at one
/// index under different proposals, is the rarest); a run takes seconds.
const BUDGET: u64 = 3000;

fn first_catch(bug: PlantedBug, base: u64) -> Option<(u64, Violation)> {
    (base..base + BUDGET).find_map(|seed| {
        let mut o = Options::from_seed(seed, None);
        o.planted = Some(bug);
        let caught = run(&o).err()?;
        // The same seed without the bug must pass, so the catch is the bug's.
        let mut clean = o.clone();
        clean.planted = None;
        if let Err(f) = run(&clean) {
            panic!("seed {seed} fails even without {bug:?}: {f}");
        }
        Some((seed, caught.violation))
    })
}

fn assert_caught(bug: PlantedBug, base: u64) {
    match first_catch(bug, base) {
        Some((seed, v)) => println!("{bug:?} caught at seed {seed}: {v}"),
        None => panic!("{bug:?} was not caught within {BUDGET} seeds from {base}"),
    }
}

#[test]
fn planted_a_grant_without_revoke_is_caught() {
    assert_caught(PlantedBug::GrantWithoutRevoke, 1_000);
}

#[test]
fn planted_b_commit_before_majority_is_caught() {
    assert_caught(PlantedBug::CommitBeforeMajority, 2_000);
}

#[test]
fn planted_c_prepare_ignoring_higher_proposal_is_caught() {
    assert_caught(PlantedBug::PrepareIgnoresHigherProposal, 3_000);
}

#[test]
fn planted_d_recycling_unapplied_space_is_caught() {
    assert_caught(PlantedBug::RecycleUnappliedSpace, 4_000);
}
