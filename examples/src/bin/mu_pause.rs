//! `mu-pause <id> <p|c>`: the Mu artifact's fifo tool. `p` makes replica
//! `id` stop heartbeating and leading (the others elect a new leader, as
//! for a stalled leader); `c` resumes it.

use clap::Parser;
use std::process::ExitCode;

/// Pauses or resumes a running replica through its fifo.
#[derive(Parser, Debug)]
#[command(name = "mu-pause")]
struct Cli {
    /// The replica's id (1-based).
    id: u8,
    /// `p` to pause, `c` to resume.
    command: char,
    /// Directory of the fifos.
    #[arg(long, env = "MU_FIFO_DIR", default_value = "/tmp")]
    fifo_dir: std::path::PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command != 'p' && cli.command != 'c' {
        eprintln!(
            "mu-pause: the command is p (pause) or c (resume), not {:?}",
            cli.command
        );
        return ExitCode::from(64);
    }
    match mu_examples::send_pause(&cli.fifo_dir, cli.id, cli.command as u8) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mu-pause: {e}");
            ExitCode::FAILURE
        }
    }
}
