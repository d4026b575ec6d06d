//! `mu-failover --fault pause|kill --runs N`: fail-over time of a 3-process
//! group, from the fault to the first commit by the new leader.
//!
//! Every member is a `mu-node` that keeps proposing whenever it leads and
//! reports the wall-clock time of the first commit of each of its terms.
//! - `pause`: the leader (replica 1) is paused through its fifo, as
//!   `mu-pause 1 p` does. With `--reuse-group`, it is resumed (`c`) once a
//!   new leader committed, and the next run waits until replica 1 leads
//!   and commits again, all in one group; otherwise every run starts a
//!   fresh group.
//! - `kill`: the leader is killed with SIGKILL. A killed replica cannot
//!   rejoin with fresh memory (no state transfer between processes yet),
//!   so every run starts a fresh group.
//!
//! The fault's time is taken just before the fifo write or the kill. Every
//! sample is printed, then p50 / p90 / max.

use clap::{Parser, ValueEnum};
use mu::node::FabricKind;
use mu_examples::group::Group;
use mu_examples::{send_pause, unix_ns};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Measures fail-over time under repeated leader faults.
#[derive(Parser, Debug)]
#[command(name = "mu-failover")]
struct Cli {
    /// The fault injected into the leader.
    #[arg(long, value_enum)]
    fault: Fault,
    /// Number of faults.
    #[arg(long, default_value_t = 50)]
    runs: u32,
    /// The fabric.
    #[arg(long, value_enum, default_value = "shm")]
    fabric: FabricKind,
    /// Bytes per proposal.
    #[arg(long, default_value_t = 64)]
    payload_size: u32,
    /// The members' heartbeat interval, µs.
    #[arg(long, default_value_t = 1_000)]
    heartbeat_us: u64,
    /// The members' idle nap, µs (0 spins).
    #[arg(long, default_value_t = 500)]
    idle_sleep_us: u64,
    /// Pause only: resume the paused leader after each run and keep the
    /// group for the next run (replica 1 must lead again first).
    #[arg(long)]
    reuse_group: bool,
    /// The `mu-node` binary (default: beside this one).
    #[arg(long)]
    node_bin: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Fault {
    /// Pause the leader through its fifo (it stops heartbeating).
    Pause,
    /// SIGKILL the leader.
    Kill,
}

/// Bound on any one wait.
const LIMIT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mu-failover: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let bin = match &cli.node_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("mu-node"),
    };
    let size = cli.payload_size.to_string();
    let hb = cli.heartbeat_us.to_string();
    let idle = cli.idle_sleep_us.to_string();
    let args = [
        "--propose-when-leading",
        &size,
        "--max-payload",
        &size,
        "--heartbeat-us",
        &hb,
        "--idle-sleep-us",
        &idle,
    ];
    let start = || Group::start(&bin, cli.fabric, 3, &args);
    let mut samples = Vec::new();
    let mut group = None;
    // Replica 1 leads once it reports more first commits than this.
    let mut led = 0;
    for run in 0..cli.runs {
        if !cli.reuse_group || cli.fault == Fault::Kill || group.is_none() {
            group = Some(start()?);
            led = 0;
        }
        let g = group.as_mut().expect("started");
        // Replica 1 leads and commits, and every member is up and follows
        // it (a member still starting could not make a majority after the
        // fault).
        g.wait_for("replica 1 leads and all follow", LIMIT, |out| {
            (out[0].first_commits.len() > led && out.iter().all(|o| o.leader == 1)).then_some(())
        })?;
        let marks: Vec<usize> = (1..=3).map(|id| g.output(id).first_commits.len()).collect();
        let t0 = unix_ns();
        match cli.fault {
            Fault::Pause => send_pause(&g.fifo_dir, 1, b'p')?,
            Fault::Kill => g.kill(1)?,
        }
        let (by, t) = g.wait_for("a new leader commits", LIMIT, |out| {
            (1..3).find_map(|slot| {
                out[slot].first_commits[marks[slot]..]
                    .iter()
                    .find(|(_, t)| *t > t0)
                    .map(|(_, t)| (slot + 1, *t))
            })
        })?;
        let us = (t - t0) as f64 / 1e3;
        println!("run {run}: replica {by} committed {us:.1} µs after the fault");
        samples.push(us);
        if cli.reuse_group && cli.fault == Fault::Pause {
            led = g.output(1).first_commits.len();
            send_pause(&g.fifo_dir, 1, b'c')?;
        }
    }
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{:?} fail-over on {}, {} runs (heartbeat {} µs, idle nap {} µs): p50 {:.1} µs, p90 {:.1} µs, max {:.1} µs",
        cli.fault,
        cli.fabric.name(),
        samples.len(),
        cli.heartbeat_us,
        cli.idle_sleep_us,
        pct(0.5),
        pct(0.9),
        samples.last().copied().unwrap_or(0.0)
    );
    Ok(())
}
