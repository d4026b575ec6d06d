//! `main-st-lat <id> <payload_size> <outstanding>`: the Mu artifact's
//! latency tool. Like `main-st`, but replica 1 records the latency of every
//! proposal (from the call until it is committed, in ns), writes them to
//! `dump-st-<payload>-<outstanding>.txt` (one per line) and prints
//! percentiles.

use clap::Parser;
use mu_examples::{
    launch, linger_until_proposer_leaves, propose, random_payload, start_node, wait_applied,
    wait_group_applied, wait_until_leader, NodeArgs,
};
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Replicates random payloads and records each one's latency.
#[derive(Parser, Debug)]
#[command(name = "main-st-lat")]
struct Cli {
    /// This replica's id, 1..=N; replica 1 proposes, the others follow.
    id: u8,
    /// Payload bytes per command.
    payload_size: u32,
    /// Proposals in flight at once (0 means 1).
    outstanding: u32,
    /// Commands to replicate.
    #[arg(long, env = "MU_COUNT", default_value_t = 100_000)]
    count: u64,
    /// Directory for the dump file.
    #[arg(long, env = "MU_DUMP_DIR", default_value = ".")]
    dump_dir: std::path::PathBuf,
    #[command(flatten)]
    node: NodeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.node.launch {
        let rest = [
            cli.payload_size.to_string(),
            cli.outstanding.to_string(),
            "--count".into(),
            cli.count.to_string(),
            "--dump-dir".into(),
            cli.dump_dir.display().to_string(),
        ];
        return launch(&cli.node, &rest);
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("main-st-lat {}: {e}", cli.id);
            ExitCode::FAILURE
        }
    }
}

fn now() -> Instant {
    #[allow(clippy::disallowed_methods, reason = "the tool measures latency")]
    Instant::now()
}

fn run(cli: &Cli) -> Result<(), String> {
    let node = start_node(&cli.node, cli.id, cli.payload_size.max(1))?;
    let limit = Duration::from_secs(60);
    if cli.id != 1 {
        wait_applied(&node, cli.count + 1, limit)?;
        return linger_until_proposer_leaves(&node, limit);
    }
    if !wait_until_leader(&node.replica, limit) {
        return Err("replica 1 did not become leader".into());
    }
    propose(&node.replica, random_payload(cli.payload_size)).map_err(|e| e.to_string())?;
    let threads = cli.outstanding.max(1) as u64;
    let samples = Arc::new(Mutex::new(Vec::with_capacity(cli.count as usize)));
    let handles = (0..threads)
        .map(|t| {
            let replica = node.replica.clone();
            let samples = samples.clone();
            let share = cli.count / threads + u64::from(t < cli.count % threads);
            let size = cli.payload_size;
            std::thread::Builder::new().spawn(move || -> Result<(), String> {
                let payload = random_payload(size);
                let mut mine = Vec::with_capacity(share as usize);
                for _ in 0..share {
                    let t0 = now();
                    propose(&replica, payload.clone()).map_err(|e| e.to_string())?;
                    mine.push(t0.elapsed().as_nanos() as u64);
                }
                samples.lock().expect("samples").extend(mine);
                Ok(())
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot start a proposer thread: {e}"))?;
    for h in handles {
        h.join()
            .map_err(|_| "a proposer thread panicked".to_string())??;
    }
    let mut samples = std::mem::take(&mut *samples.lock().expect("samples"));
    let path = cli.dump_dir.join(format!(
        "dump-st-{}-{}.txt",
        cli.payload_size, cli.outstanding
    ));
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    for s in &samples {
        writeln!(f, "{s}").map_err(|e| e.to_string())?;
    }
    f.flush().map_err(|e| e.to_string())?;
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{} samples of {} bytes, {} outstanding: p50 {} ns, p90 {} ns, p99 {} ns, p99.9 {} ns; written to {}",
        samples.len(),
        cli.payload_size,
        threads,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        path.display()
    );
    wait_applied(&node, cli.count + 1, limit)?;
    wait_group_applied(&node, cli.count + 1, limit)
}
