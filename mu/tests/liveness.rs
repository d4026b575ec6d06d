//! Liveness under flapping leadership, and the bugs the stall storms found.
//!
//! Half the simulator seeds use the production timing ratio (a permission
//! timeout of two heartbeats, a prepare timeout of fifty) and half stall
//! every node at random for a few heartbeat intervals, as a loaded host
//! deschedules processes, so failure detectors misfire and leadership flaps.
//! Every run then checks that a fresh proposal commits within
//! `Options::recovery_bound_ns` of the faults ending (`Violation::Stuck`).

use mu::sim::{run, Options};

/// Seeds of the flapping sweep, per group size.
const SEEDS: u64 = 150;

/// Runs each seed (its own group size) with production timing and stall
/// storms, failing on the first violation.
fn run_flapping(seeds: &[u64]) {
    for &seed in seeds {
        let o = Options::from_seed(seed, None).flapping();
        if let Err(f) = run(&o) {
            panic!("seed {seed}: {f}");
        }
    }
}

/// Steps of every seed here:
/// 1. derive the options from the seed, then force production timing and
///    stall storms;
/// 2. run the safety phase (crashes, pauses, partitions, stalls), checking
///    every invariant after every step;
/// 3. heal everything: a fresh proposal must commit within the bound and
///    every replica must converge.
#[test]
fn flapping_leaders_recover_within_the_bound() {
    let mut stalls = 0;
    let mut worst = 0;
    for (nodes, first) in [(3usize, 800_000u64), (4, 810_000), (5, 820_000)] {
        for seed in first..first + SEEDS {
            let o = Options::from_seed(seed, Some(nodes)).flapping();
            match run(&o) {
                Ok(r) => {
                    stalls += r.stalls;
                    worst = worst.max(r.recovery_ns);
                }
                Err(f) => panic!("{f}"),
            }
        }
    }
    println!("stalls {stalls}, slowest recovery {worst} ns");
    assert!(
        stalls > 1_000,
        "the storms must really stall nodes: {stalls}"
    );
}

/// A candidate that read its members' logs before its promise landed on
/// them: one member granted the old leader again in between and took its
/// entries, and the candidate's own entry at the same index, written under
/// its higher proposal, was later adopted over the decided one (agreement
/// broke at index 14 on replica 0). Fixed by writing the promise first and
/// counting a member only once the promise write completed.
#[test]
fn a_member_that_regrants_the_old_leader_before_the_promise_lands() {
    let o = Options::from_seed(926, Some(5));
    assert_eq!(o.permission_timeout_ns, 2 * o.heartbeat_ns, "{o}");
    assert!(o.stall_per_ms > 0.0, "{o}");
    if let Err(f) = run(&o) {
        panic!("{f}");
    }
}

/// A new leader whose followers joined with an applied prefix beyond its
/// commit index (decided by the previous leader) never committed those
/// entries itself until a new entry was written: with no further proposal
/// it stayed one index behind for good. Fixed by recomputing the commit
/// index when a follower joins.
#[test]
fn a_joining_follower_applied_prefix_counts_toward_the_commit() {
    let o = Options::from_seed(1408, Some(3));
    if let Err(f) = run(&o) {
        panic!("{f}");
    }
}

/// Permissions over slow links: a grant's round trip (request write, the
/// peer's next step, ack write) takes longer than the permission timeout,
/// as on a loaded host where the peers' loops are descheduled for
/// milliseconds. A candidate that counted only an ack of its latest request
/// number re-asked with a fresh number before any ack arrived, so no ack
/// ever matched and it stayed a candidate for good. Only the latest
/// request's ack counts (see the flapping safety test below), so each
/// re-request waits twice as long as the one before, up to 16 timeouts.
///
/// 1. every link takes 12–16 µs one way, the permission timeout is 20 µs;
/// 2. the usual faults run, then everything heals;
/// 3. a leader must commit fresh proposals within the bound.
#[test]
fn grants_slower_than_the_permission_timeout_still_count() {
    for seed in 900_000..900_040 {
        let mut o = Options::from_seed(seed, Some(3));
        o.link.min_delay_ns = 12_000;
        o.link.max_delay_ns = 16_000;
        o.link.spike_prob = 0.0;
        o.permission_timeout_ns = 20_000;
        o.prepare_timeout_ns = 50 * o.heartbeat_ns;
        if let Err(f) = run(&o) {
            panic!("{f}");
        }
    }
}

/// A ring floor above every follower's cursor: during a stall storm a
/// leader's detector called both its followers dead, so it left them both
/// out of recycling and raised its ring floor to its own apply position,
/// above where either follower had applied. A follower that rejoined was
/// told it was behind that floor, the leader then crashed, and the survivor
/// standing for election found the rejoined member's floor above its own
/// cursor: both were lapped, the restarted leader was rejoining, nobody
/// could lead and nobody could serve a state transfer, although the
/// survivors' rings held every decided entry. Fixed by keeping enough
/// followers for a majority in recycling, dead or not (without a majority
/// the leader commits nothing anyway).
///
/// 1. seed 20514 (3 nodes, 19,584-byte ring) and seed 21054 (3 nodes,
///    53,312-byte ring) with production timing and stall storms;
/// 2. the usual faults run, then everything heals;
/// 3. a leader must commit fresh proposals within the bound.
#[test]
fn a_leader_keeps_its_ring_floor_below_a_majority_of_followers() {
    run_flapping(&[20514, 21054]);
}

/// Two safety breaks of the flapping sweep, both older than their finding.
///
/// Seed 11588 (4 nodes), min proposal 449 -> 448 on replica 1: candidate 0
/// re-sent its permission request to replica 1 after the permission
/// timeout, but replica 1 acked the first one and candidate 0, counting an
/// ack of any request of its candidacy, read replica 1's min proposal. The
/// second request was delayed on the link. Replica 1 then stood itself
/// (revoking 0) and promised 449; the late request landed and replica 1
/// granted 0 again, whose promise of 448, chosen from the stale read,
/// overwrote 449. The same hole lets a deposed leader's writes count after
/// a member promised a newer candidate. Fixed by counting only an ack of
/// the latest request (candidate and leader join), so no request of the
/// attempt is still in flight once a member counts.
///
/// Seed 26855 (3 nodes), agreement at index 673: replica 2 got a state
/// transfer to index 672 (nothing of its ring before that point is
/// readable), leader 0 then decided 673 with replica 2 and crashed.
/// Candidate 1, having applied only 670, read replica 2's log from its own
/// cursor: no chain linked there, so it saw none of replica 2's entries,
/// took 671 and 672 from its own log and proposed a new value at 673.
/// Fixed: a member whose readable chain ends before its own applied index
/// sends the candidate to a state transfer instead.
///
/// 1. both seeds with production timing and stall storms;
/// 2. the usual faults run, with every invariant checked after each step;
/// 3. everything heals and a fresh proposal commits within the bound.
#[test]
fn a_candidate_counts_only_continuous_grants_and_fully_read_members() {
    run_flapping(&[11588, 26855]);
}
