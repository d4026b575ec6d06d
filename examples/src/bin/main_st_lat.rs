//! `main-st-lat <id> <payload_size> <outstanding>`: the Mu artifact's
//! latency tool. Like `main-st`, but replica 1 records the latency of every
//! proposal (from the call until it is committed, in ns), writes them to
//! `dump-st-<payload>-<outstanding>.txt` (one per line) and prints
//! percentiles.

use clap::Parser;
use mu_examples::{launch, percentiles_line, run_standalone, NodeArgs};
use std::io::Write;
use std::process::ExitCode;

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

fn run(cli: &Cli) -> Result<(), String> {
    let Some(mut m) = run_standalone(
        &cli.node,
        cli.id,
        cli.count,
        cli.outstanding,
        cli.payload_size,
        true,
    )?
    else {
        return Ok(());
    };
    let threads = cli.outstanding.max(1);
    let samples = &mut m.latencies;
    let path = cli.dump_dir.join(format!(
        "dump-st-{}-{}.txt",
        cli.payload_size, cli.outstanding
    ));
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    for s in samples.iter() {
        writeln!(f, "{s}").map_err(|e| e.to_string())?;
    }
    f.flush().map_err(|e| e.to_string())?;
    println!(
        "{}; written to {}",
        percentiles_line(samples, cli.payload_size, threads),
        path.display()
    );
    m.finish(cli.count)
}
