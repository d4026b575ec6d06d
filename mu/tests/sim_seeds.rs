//! Hundreds of simulator seeds per run, across group sizes 3, 4 and 5, with
//! crashes, restarts, pauses and partitions of leaders and followers; and
//! proof that a seed replays exactly.

use mu::sim::{run, Options, Report};

/// Seeds per group size in every `cargo test` run.
const SEEDS_PER_SIZE: u64 = 200;

fn sweep(nodes: usize, first: u64) -> Vec<Report> {
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for seed in first..first + SEEDS_PER_SIZE {
        match run(&Options::from_seed(seed, Some(nodes))) {
            Ok(r) => reports.push(r),
            Err(f) => failures.push(f.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let crashes: u64 = reports.iter().map(|r| r.crashes).sum();
    let leader_crashes: u64 = reports.iter().map(|r| r.leader_crashes).sum();
    let pauses: u64 = reports.iter().map(|r| r.pauses).sum();
    let partitions: u64 = reports.iter().map(|r| r.partitions).sum();
    println!(
        "{nodes} nodes: {} seeds, crashes {crashes} (of leaders {leader_crashes}), pauses {pauses}, partitions {partitions}",
        reports.len()
    );
    // The sweep must really exercise faults, not only run quiet groups.
    assert!(
        leader_crashes > 10,
        "too few leader crashes: {leader_crashes}"
    );
    assert!(crashes - leader_crashes > 10, "too few follower crashes");
    assert!(pauses > 10 && partitions > 10);
    reports
}

#[test]
fn seeds_with_three_replicas() {
    sweep(3, 100_000);
}

#[test]
fn seeds_with_four_replicas() {
    sweep(4, 200_000);
}

#[test]
fn seeds_with_five_replicas() {
    sweep(5, 300_000);
}

#[test]
fn seeds_with_other_group_sizes() {
    // Two replicas tolerate no failure (majority 2), so only pauses and
    // partitions; six and seven exercise larger majorities and even sizes.
    for (nodes, first) in [(2usize, 400_000u64), (6, 600_000), (7, 700_000)] {
        for seed in first..first + 50 {
            if let Err(f) = run(&Options::from_seed(seed, Some(nodes))) {
                panic!("{f}");
            }
        }
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [7, 1234, 99_999] {
        let o = Options::from_seed(seed, None);
        let a = run(&o).expect("seed passes");
        let b = run(&o).expect("seed passes");
        assert_eq!(a, b, "seed {seed} did not replay identically");
        assert_ne!(a.trace, 0);
    }
    let other = run(&Options::from_seed(8, None)).expect("seed passes");
    assert_ne!(
        run(&Options::from_seed(7, None)).unwrap().trace,
        other.trace
    );
}

#[test]
fn a_failure_report_carries_the_reproduce_command() {
    // A run whose liveness budget is too short to converge fails, and its
    // report says how to rerun exactly that seed.
    let mut o = Options::from_seed(5, Some(3));
    o.liveness_ms = 0;
    o.safety_ms = 1;
    let f = run(&o).expect_err("no time to converge");
    let text = f.to_string();
    assert!(text.contains("--seed 5 --nodes 3"), "{text}");
}
