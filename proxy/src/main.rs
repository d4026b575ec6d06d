//! `mu-sidecar`: see `mu-sidecar --help`.

use clap::Parser;
use mu_sidecar::config::Options;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let opts = Options::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(opts.worker_threads))
        .enable_all()
        .thread_name("mu-sidecar")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mu-sidecar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mu_sidecar::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mu-sidecar: {e}");
            ExitCode::FAILURE
        }
    }
}
