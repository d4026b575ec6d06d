//! `orderbook-server <id> --order-addrs A1,A2,A3`: one replica of the
//! replicated order book (the Mu artifact's Liquibook server). It serves
//! the client protocol of [`mu_examples::orderbook`] on its own order
//! address (`--order-addrs` lists every server's, in id order), replicates
//! orders with Mu over the fabric its options name, and applies committed
//! orders to its book in log order. On a follower an order is answered
//! `NOTLEADER <id> <addr>`.
//!
//! The pause fifo works as for the other tools (`mu-pause <id> p` makes
//! this replica stop heartbeating, so the others elect a new leader).
//! On `SHUTDOWN` it prints its final state (`DUMP` format) and exits.
//! `--launch` starts the whole group as child processes of this one.

use clap::Parser;
use mu_examples::orderbook::exchange::MAX_COMMAND_LEN;
use mu_examples::orderbook::server::{self, ServerOptions};
use mu_examples::{launch, start_node, NodeArgs};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// One replica of the replicated order book.
#[derive(Parser, Debug)]
#[command(name = "orderbook-server")]
struct Cli {
    /// This replica's id, 1..=N (ignored with --launch).
    id: u8,
    /// Every server's order address (the client protocol), in id order.
    #[arg(long, env = "ORDERBOOK_ADDRS", value_delimiter = ',', required = true)]
    order_addrs: Vec<SocketAddr>,
    /// Write one line per applied entry to this file; `{id}` in the path
    /// becomes the replica's id (needed with --launch).
    #[arg(long)]
    journal: Option<PathBuf>,
    /// How long a client's order may wait to commit and apply before the
    /// server answers RETRY, ms.
    #[arg(long, default_value_t = 2_000)]
    propose_timeout_ms: u64,
    #[command(flatten)]
    node: NodeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = check(&cli) {
        eprintln!("orderbook-server: {e}");
        return ExitCode::from(64);
    }
    if cli.node.launch {
        return launch_group(&cli);
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orderbook-server {}: {e}", cli.id);
            ExitCode::FAILURE
        }
    }
}

/// Usage errors, all at once.
fn check(cli: &Cli) -> Result<(), String> {
    let mut problems = Vec::new();
    let n = usize::from(cli.node.mu.nodes);
    if cli.order_addrs.len() != n {
        problems.push(format!(
            "--order-addrs lists {} addresses for {n} replicas",
            cli.order_addrs.len()
        ));
    }
    if !cli.node.launch && (cli.id == 0 || usize::from(cli.id) > n) {
        problems.push(format!("the id must be 1..={n} (got {})", cli.id));
    }
    if let Some(j) = &cli.journal {
        if cli.node.launch && !j.to_string_lossy().contains("{id}") {
            problems.push(
                "with --launch, --journal needs {id} in its path (one file per replica)".into(),
            );
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let addr = cli.order_addrs[usize::from(cli.id - 1)];
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("cannot listen for orders on {addr}: {e}"))?;
    let node = start_node(&cli.node, cli.id, MAX_COMMAND_LEN as u32)?;
    eprintln!(
        "orderbook-server {}: orders on {addr}, replica over {}",
        cli.id,
        cli.node.mu.resolved_fabric().name()
    );
    let opts = ServerOptions {
        id: cli.id,
        order_addrs: cli.order_addrs.clone(),
        journal: cli
            .journal
            .as_ref()
            .map(|p| PathBuf::from(p.to_string_lossy().replace("{id}", &cli.id.to_string()))),
        propose_timeout: Duration::from_millis(cli.propose_timeout_ms),
    };
    let text = server::run(node, listener, opts)?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot print the final state: {e}"))
}

/// `--launch`: every replica as a child process, each with its journal.
fn launch_group(cli: &Cli) -> ExitCode {
    let addrs: Vec<String> = cli.order_addrs.iter().map(|a| a.to_string()).collect();
    let mut rest = vec![
        "--order-addrs".to_string(),
        addrs.join(","),
        "--propose-timeout-ms".into(),
        cli.propose_timeout_ms.to_string(),
    ];
    if let Some(j) = &cli.journal {
        rest.extend(["--journal".to_string(), j.display().to_string()]);
    }
    launch(&cli.node, &rest)
}
