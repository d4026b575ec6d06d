//! Runs the deterministic simulator over many seeds and prints a summary.
//!
//! ```text
//! mu-sim --seeds 10000            # seeds 0..10000, group size from each seed
//! mu-sim --seed 42 --nodes 4      # reproduce one run
//! mu-sim --seeds 1000 --flapping  # every seed: production timing, stall storms
//! ```

use mu::sim::{run, Options};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut start = 0u64;
    let mut count = 1u64;
    let mut nodes = None;
    let mut verbose = false;
    let mut flapping = false;
    let mut i = 0;
    while i < args.len() {
        let value = |i: usize| args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match args[i].as_str() {
            "--seed" => {
                start = value(i).unwrap_or(0);
                count = 1;
                verbose = true;
                i += 1;
            }
            "--seeds" => {
                count = value(i).unwrap_or(100);
                i += 1;
            }
            "--start" => {
                start = value(i).unwrap_or(0);
                i += 1;
            }
            "--nodes" => {
                nodes = value(i).map(|n| n as usize);
                i += 1;
            }
            "--verbose" => verbose = true,
            "--flapping" => flapping = true,
            other => {
                eprintln!("unknown argument {other}\nusage: mu-sim [--seed S | --seeds N [--start S]] [--nodes N] [--flapping] [--verbose]");
                return ExitCode::from(64);
            }
        }
        i += 1;
    }
    #[allow(
        clippy::disallowed_methods,
        reason = "reports the wall time of the sweep"
    )]
    let began = Instant::now();
    let (
        mut failures,
        mut decided,
        mut crashes,
        mut pauses,
        mut partitions,
        mut terms,
        mut transfers,
    ) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut sizes = [0u64; 8];
    let mut recoveries = Vec::new();
    for seed in start..start + count {
        let mut o = Options::from_seed(seed, nodes);
        if flapping {
            o = o.flapping();
        }
        sizes[o.nodes] += 1;
        if verbose {
            println!("{o}");
        }
        match run(&o) {
            Ok(r) => {
                decided += r.decided;
                crashes += r.crashes;
                pauses += r.pauses;
                partitions += r.partitions;
                terms += r.leader_terms;
                transfers += r.transfers;
                if verbose {
                    println!("{r:?}");
                }
                recoveries.push((r.recovery_ns, seed));
            }
            Err(f) => {
                failures += 1;
                println!("FAILED seed {seed}: {f}");
            }
        }
    }
    let groups: Vec<String> = sizes
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(n, c)| format!("{c}x{n}"))
        .collect();
    println!(
        "seeds {start}..{}: {} passed, {failures} failed in {:.1}s; groups (count x size): {}; \
         crashes {crashes}, pauses {pauses}, partitions {partitions}, leader terms {terms}, \
         state transfers {transfers}, entries decided {decided}",
        start + count,
        count - failures,
        began.elapsed().as_secs_f64(),
        groups.join(" "),
    );
    recoveries.sort_unstable();
    if let Some(&(worst, seed)) = recoveries.last() {
        let pct = |p: f64| {
            recoveries[((recoveries.len() as f64 * p) as usize).min(recoveries.len() - 1)].0
        };
        println!(
            "first commit after the faults: p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs (seed {seed})",
            pct(0.5) / 1_000,
            pct(0.9) / 1_000,
            pct(0.99) / 1_000,
            pct(0.999) / 1_000,
            worst / 1_000
        );
    }
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
