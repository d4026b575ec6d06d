//! `main-st <id> <payload_size> <outstanding>`: the Mu artifact's standalone
//! throughput tool. Replica 1 proposes `--count` random payloads with
//! `outstanding` proposals in flight and prints
//! `Replicated X commands of size Y bytes in Z ns`; the other replicas apply
//! them and exit. `--launch` starts the whole group from one command:
//!
//! ```text
//! main-st --launch 1 64 1 --fabric shm --count 100000
//! ```

use clap::Parser;
use mu_examples::{launch, run_standalone, NodeArgs};
use std::process::ExitCode;

/// Replicates a fixed number of random payloads and reports the time taken.
#[derive(Parser, Debug)]
#[command(name = "main-st")]
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
        ];
        return launch(&cli.node, &rest);
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("main-st {}: {e}", cli.id);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let Some(m) = run_standalone(
        &cli.node,
        cli.id,
        cli.count,
        cli.outstanding,
        cli.payload_size,
        false,
    )?
    else {
        return Ok(());
    };
    println!(
        "Replicated {} commands of size {} bytes in {} ns",
        cli.count,
        cli.payload_size,
        m.elapsed.as_nanos()
    );
    m.finish(cli.count)
}
