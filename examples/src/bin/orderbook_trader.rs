//! `orderbook-trader --servers A1,A2,A3`: the Mu artifact's Liquibook
//! trader. It sends a stream of orders drawn from a seeded generator (the
//! same seed gives the same stream), one at a time, to whichever server
//! leads, following `NOTLEADER` answers and resending through leader
//! changes with the same sequence number (the servers apply each order
//! once; see [`mu_examples::orderbook`]).
//!
//! It measures each order's latency, from the first send until the
//! acknowledgement (resends included), writes the samples in ns to
//! `--out` (one per line, default `liquibook-cli.txt`) and prints a
//! percentile summary. When an acknowledgement comes from another server
//! than the previous one it prints, like the artifact,
//! `Leader changed to N: X (us)`, X being the time between the last
//! acknowledgement by the old leader and the first by the new one.
//!
//! `--check-replicas` then waits until every known server applied the
//! same log and compares their digests; `--shutdown` stops the servers
//! (each prints its final book).

use clap::Parser;
use mu_examples::orderbook::book::{OrderId, Side};
use mu_examples::orderbook::client::Session;
use mu_examples::orderbook::exchange::{Command, Op};
use mu_examples::orderbook::protocol::{Ack, AckResult, Reply};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Sends a deterministic stream of orders to the replicated order book.
#[derive(Parser, Debug)]
#[command(name = "orderbook-trader")]
struct Cli {
    /// Order addresses of the servers (one is enough: the others are
    /// learned from NOTLEADER answers).
    #[arg(long, env = "ORDERBOOK_ADDRS", value_delimiter = ',', required = true)]
    servers: Vec<SocketAddr>,
    /// Orders to send.
    #[arg(long, default_value_t = 100_000)]
    orders: u64,
    /// Stop after this many seconds even if orders remain.
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Stop this many orders after the first leader change.
    #[arg(long)]
    after_leader_change: Option<u64>,
    /// Seed of the order stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Client id (non-zero, unique among the book's clients); default:
    /// random.
    #[arg(long)]
    client_id: Option<u64>,
    /// Mid price of the generated orders, ticks.
    #[arg(long, default_value_t = 10_000)]
    mid_price: u64,
    /// Latency samples file (ns, one per line).
    #[arg(long, default_value = "liquibook-cli.txt")]
    out: PathBuf,
    /// Also write each acknowledged order: `<client> <seq> <node> <index>
    /// placed|cancelled|rejected <order-id|->`.
    #[arg(long)]
    acks: Option<PathBuf>,
    /// Leave a server that has not replied within this many µs for the
    /// next one.
    #[arg(long, default_value_t = 20_000)]
    reply_timeout_us: u64,
    /// Fail if one order is not acknowledged within this many seconds.
    #[arg(long, default_value_t = 30)]
    give_up_secs: u64,
    /// At the end, wait until every known server applied the same log and
    /// check that their states (digests) are equal.
    #[arg(long)]
    check_replicas: bool,
    /// At the end, stop every known server (SHUTDOWN).
    #[arg(long)]
    shutdown: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.client_id == Some(0) {
        eprintln!("orderbook-trader: client id 0 is reserved");
        return ExitCode::from(64);
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orderbook-trader: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The seeded order stream of one client.
struct Flow {
    rng: SmallRng,
    client: u64,
    seq: u64,
    mid: u64,
    /// Own orders that rested when placed, oldest first (cancel targets;
    /// some may have been filled since).
    resting: VecDeque<OrderId>,
}

/// Cancel targets remembered at most.
const MAX_RESTING: usize = 4096;

impl Flow {
    /// The next order: 10 % cancels of an own resting order, 10 % market
    /// orders, the rest limit orders within a few ticks of the mid price
    /// (buys at mid−3..=mid+2, sells at mid−2..=mid+3, so some cross).
    fn next(&mut self) -> Command {
        self.seq += 1;
        let side = if self.rng.gen_bool(0.5) {
            Side::Buy
        } else {
            Side::Sell
        };
        let roll = self.rng.gen_range(0..100);
        let op = if roll < 10 && !self.resting.is_empty() {
            let i = self.rng.gen_range(0..self.resting.len());
            Op::Cancel {
                order: self.resting.remove(i).expect("index in range"),
            }
        } else if roll < 20 {
            Op::Market {
                side,
                quantity: self.rng.gen_range(1..=20),
            }
        } else {
            let offset = self.rng.gen_range(0..=5);
            let price = match side {
                Side::Buy => self.mid - 3 + offset,
                Side::Sell => self.mid - 2 + offset,
            };
            Op::Limit {
                side,
                price,
                quantity: self.rng.gen_range(1..=50),
            }
        };
        Command {
            client: self.client,
            seq: self.seq,
            op,
        }
    }

    fn learn(&mut self, ack: &Ack) {
        if let AckResult::Placed(p) = &ack.result {
            if p.resting > 0 {
                if self.resting.len() == MAX_RESTING {
                    self.resting.pop_front();
                }
                self.resting.push_back(p.id);
            }
        }
    }
}

/// What the run saw.
#[derive(Default)]
struct Tally {
    samples: Vec<u64>,
    trades: u64,
    rejected: u64,
    resent: u64,
    leader_changes: u32,
    last_index: u64,
}

fn run(cli: &Cli) -> Result<(), String> {
    if cli.mid_price < 3 {
        return Err("--mid-price must be at least 3".into());
    }
    let client = cli
        .client_id
        .unwrap_or_else(|| rand::random::<u64>().max(1));
    let mut flow = Flow {
        rng: SmallRng::seed_from_u64(cli.seed),
        client,
        seq: 0,
        mid: cli.mid_price,
        resting: VecDeque::new(),
    };
    let mut session = Session::new(
        cli.servers.clone(),
        Duration::from_micros(cli.reply_timeout_us),
        Duration::from_secs(cli.give_up_secs),
    )?;
    let mut acks = match &cli.acks {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => None,
    };
    println!(
        "Trader {client} (seed {}): up to {} orders to {}",
        cli.seed,
        cli.orders,
        join(session.servers())
    );
    let started = now();
    let limit = cli.duration_secs.map(Duration::from_secs_f64);
    let mut t = Tally::default();
    let mut last_ok: Option<(u8, Instant)> = None;
    let mut stop_after = None;
    for n in 0..cli.orders {
        if limit.is_some_and(|l| started.elapsed() >= l) || stop_after.is_some_and(|s| n >= s) {
            break;
        }
        let cmd = flow.next();
        let t0 = now();
        let sub = session.submit(&cmd)?;
        let done = now();
        t.samples.push(done.duration_since(t0).as_nanos() as u64);
        let ack = sub.ack;
        if let Some((node, at)) = last_ok {
            if node != ack.node {
                let gap = done.duration_since(at).as_micros();
                println!("Leader changed to {}: {gap} (us)", ack.node);
                t.leader_changes += 1;
                if let (None, Some(k)) = (stop_after, cli.after_leader_change) {
                    stop_after = Some(n + 1 + k);
                }
            }
        }
        last_ok = Some((ack.node, done));
        t.resent += u64::from(sub.sends - 1);
        t.last_index = t.last_index.max(ack.index);
        match &ack.result {
            AckResult::Placed(p) => t.trades += p.trades,
            AckResult::Rejected(_) => t.rejected += 1,
            AckResult::Cancelled { .. } => {}
        }
        if let Some(f) = acks.as_mut() {
            let (kind, order) = match &ack.result {
                AckResult::Placed(p) => ("placed", p.id.to_string()),
                AckResult::Cancelled { order, .. } => ("cancelled", order.to_string()),
                AckResult::Rejected(_) => ("rejected", "-".into()),
            };
            writeln!(
                f,
                "{} {} {} {} {kind} {order}",
                cmd.client, cmd.seq, ack.node, ack.index
            )
            .map_err(|e| format!("acks file: {e}"))?;
        }
        flow.learn(&ack);
    }
    let elapsed = started.elapsed();
    if let Some(mut f) = acks {
        f.flush().map_err(|e| format!("acks file: {e}"))?;
    }
    report(cli, &mut t, elapsed)?;
    if cli.check_replicas {
        check_replicas(&mut session, t.last_index)?;
    }
    if cli.shutdown {
        shutdown(&mut session);
    }
    Ok(())
}

fn report(cli: &Cli, t: &mut Tally, elapsed: Duration) -> Result<(), String> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&cli.out).map_err(|e| format!("{}: {e}", cli.out.display()))?,
    );
    for s in &t.samples {
        writeln!(f, "{s}").map_err(|e| e.to_string())?;
    }
    f.flush().map_err(|e| e.to_string())?;
    let n = t.samples.len();
    println!(
        "{n} orders acknowledged in {:.3} s ({:.0} orders/s): {} trades, {} rejected, {} resends, {} leader changes",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64().max(1e-9),
        t.trades,
        t.rejected,
        t.resent,
        t.leader_changes
    );
    t.samples.sort_unstable();
    let pct = |p: f64| {
        t.samples
            .get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "Latency (ns): p50 {}, p90 {}, p99 {}, p99.9 {}, max {}; samples in {}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        t.samples.last().copied().unwrap_or(0),
        cli.out.display()
    );
    Ok(())
}

/// Polls every known server's digest until all applied the same log (at
/// least `index`) and compares them.
fn check_replicas(session: &mut Session, index: u64) -> Result<(), String> {
    let deadline = now() + Duration::from_secs(10);
    let servers = session.servers().len();
    loop {
        let seen: Vec<Result<Reply, String>> =
            (0..servers).map(|i| session.request(i, "DIGEST")).collect();
        let digests: Vec<(u8, u64, u64)> = seen
            .iter()
            .filter_map(|r| match r {
                Ok(Reply::Digest {
                    node,
                    applied,
                    digest,
                }) => Some((*node, *applied, *digest)),
                _ => None,
            })
            .collect();
        let caught_up =
            digests.len() == servers && digests.iter().all(|d| d.1 >= index && d.1 == digests[0].1);
        if caught_up {
            for (i, (node, applied, digest)) in digests.iter().enumerate() {
                println!(
                    "Replica {node} at {}: applied {applied}, digest {digest:016x}",
                    session.servers()[i]
                );
            }
            if digests.iter().any(|d| d.2 != digests[0].2) {
                return Err("the replicas applied the same log but hold different books".into());
            }
            println!(
                "All {servers} replicas hold the same book (digest {:016x})",
                digests[0].2
            );
            return Ok(());
        }
        if now() >= deadline {
            return Err(format!(
                "the replicas did not all apply index {index} within 10 s: {seen:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn shutdown(session: &mut Session) {
    for i in 0..session.servers().len() {
        match session.request(i, "SHUTDOWN") {
            Ok(Reply::Bye { node }) => println!("Server {node} shut down"),
            Ok(other) => eprintln!("{}: {other}", session.servers()[i]),
            Err(e) => eprintln!("{e}"),
        }
    }
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn now() -> Instant {
    Instant::now()
}
