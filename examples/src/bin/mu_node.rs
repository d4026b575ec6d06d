//! `mu-node <id>`: one replica driven through its standard input, for
//! multi-process group tests and the fail-over benchmark.
//!
//! Commands, one per line on stdin:
//! - `propose <payload>`: propose the (space-free) payload once on this
//!   replica; answers `proposed <payload> ok <index>` or
//!   `proposed <payload> err <reason>`.
//!
//! The replica reports on stdout, one line per event:
//! - `status <role> <leader>` whenever its role or the leader it believes
//!   in changes (`Leader`, `Candidate` or `Follower`; leader 1-based, 0 if
//!   none);
//! - `applied <index> <payload>` for every committed entry, in log order
//!   (with `--print-applied`);
//! - `first-commit <index> <unix_ns>` (with `--propose-when-leading`) when
//!   a proposal of its own proposer commits after this replica was not
//!   leading, with the wall-clock time of the commit.
//!
//! The process exits when its standard input closes, so it never outlives
//! the process that started it. The pause fifo works as for the other
//! tools (`mu-pause <id> p`).

use clap::Parser;
use mu::core::RoleKind;
use mu::driver::replica::Replica;
use mu::ProposeError;
use mu_examples::{start_node, unix_ns, Node, NodeArgs};
use std::io::BufRead;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One replica controlled through stdin, reporting on stdout.
#[derive(Parser, Debug)]
#[command(name = "mu-node")]
struct Cli {
    /// This replica's id, 1..=N.
    id: u8,
    /// Largest payload, bytes.
    #[arg(long, default_value_t = 4096)]
    max_payload: u32,
    /// Print every committed entry.
    #[arg(long)]
    print_applied: bool,
    /// Keep proposing payloads of this many bytes whenever this replica
    /// leads, and report the first commit of each term.
    #[arg(long)]
    propose_when_leading: Option<u32>,
    #[command(flatten)]
    node: NodeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mu-node {}: {e}", cli.id);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let node = start_node(&cli.node, cli.id, cli.max_payload)?;
    // The rest of `node` (its pause fifo) lives until the end of `run`.
    let Node {
        replica, committed, ..
    } = node;
    let stop = Arc::new(AtomicBool::new(false));
    let print_applied = cli.print_applied;
    spawn("mu-node-apply", move || {
        for c in committed {
            if print_applied {
                println!(
                    "applied {} {}",
                    c.index,
                    String::from_utf8_lossy(&c.payload)
                );
            }
        }
    })?;
    let (r, s) = (replica.clone(), stop.clone());
    spawn("mu-node-status", move || report_status(&r, &s))?;
    if let Some(size) = cli.propose_when_leading {
        let (r, s) = (replica.clone(), stop.clone());
        let payload = vec![b'x'; size as usize];
        spawn("mu-node-proposer", move || {
            propose_when_leading(&r, &payload, &s)
        })?;
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("propose"), Some(payload)) => {
                match replica.propose(payload.as_bytes().to_vec(), Duration::from_secs(2)) {
                    Ok(index) => println!("proposed {payload} ok {index}"),
                    Err(e) => println!("proposed {payload} err {e}"),
                }
            }
            _ => eprintln!("mu-node {}: unknown command {line:?}", cli.id),
        }
    }
    stop.store(true, Ordering::Release);
    Ok(())
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(|e| format!("cannot start {name}: {e}"))
}

/// Prints a `status` line whenever the role or the believed leader changes.
fn report_status(replica: &Replica, stop: &AtomicBool) {
    let mut last = None;
    while !stop.load(Ordering::Acquire) {
        if let Some(s) = replica.status() {
            let now = (s.role, s.leader);
            if last != Some(now) {
                last = Some(now);
                let leader = s.leader.map_or(0, |l| l.0 + 1);
                println!("status {:?} {leader}", s.role);
            }
        }
        // The driver publishes its status every 200 µs.
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Proposes `payload` back to back while this replica leads; prints the
/// first commit after any failure (a new term of this replica).
fn propose_when_leading(replica: &Replica, payload: &[u8], stop: &AtomicBool) {
    let mut leading = false;
    while !stop.load(Ordering::Acquire) {
        let leads = replica
            .status()
            .is_some_and(|s| s.role != RoleKind::Follower);
        if !leads && !leading {
            std::thread::sleep(Duration::from_micros(20));
            continue;
        }
        match replica.propose(payload.to_vec(), Duration::from_secs(1)) {
            Ok(index) => {
                if !leading {
                    println!("first-commit {index} {}", unix_ns());
                    leading = true;
                }
            }
            Err(ProposeError::LeaderChanging) | Err(ProposeError::LogFull { .. }) => {
                // Let the replicas, which share the cores, finish the change.
                std::thread::sleep(Duration::from_micros(20));
            }
            Err(e) => {
                if std::env::var_os("MU_NODE_DEBUG").is_some() {
                    eprintln!("DBG {e} {:?}", replica.status());
                }
                leading = false;
            }
        }
    }
}
