//! The replicated order book end to end: three `orderbook-server`
//! processes on loopback (free ports, a fresh shm directory or tcp
//! fabric), driven through the client protocol.
//!
//! - The trader runs while the leader is paused through its fifo
//!   (`mu-pause 1 p`): it must print the leader change, every order it got
//!   acknowledged must have been applied exactly once, at the index it was
//!   acknowledged with, on every replica, and all replicas' states (the
//!   `DUMP`s, the final dumps at exit, the per-entry journals) must be
//!   identical.
//! - The protocol: a follower names the leader, a resent order is applied
//!   once and answered with the original result, bad requests and bad
//!   cancels get clear errors, and the replicas agree afterwards.
//!
//! Every wait polls an observable condition (a server's answer, a
//! process's exit) against a deadline.

#[path = "../../proxy/tests/common/mod.rs"]
mod common;

use common::{wait_explained, wait_for};
use mu::node::{FabricKind, NodeOptions};
use mu_examples::orderbook::book::{Fill, OrderId};
use mu_examples::orderbook::client::Session;
use mu_examples::orderbook::protocol::{AckResult, Reply};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Any wait for the group (start-up, convergence, exit).
const LIMIT: Duration = Duration::from_secs(60);

/// One group at a time: three replicas and a trader already share the
/// machine's cores.
static ONE_GROUP: Mutex<()> = Mutex::new(());

/// A child process whose output is collected; killed when dropped.
struct Proc {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the process starts");
        let collect = |mut r: Box<dyn Read + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let t = text.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    t.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().expect("piped")));
        let stderr = collect(Box::new(child.stderr.take().expect("piped")));
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> String {
        format!(
            "--- stdout:\n{}--- stderr:\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// Waits for the process to exit; its success.
    fn wait_exit(&mut self, what: &str) -> bool {
        let status = wait_for(LIMIT, what, || self.child.try_wait().ok().flatten());
        // The readers see the end of the pipes right after the exit.
        wait_for(LIMIT, "the output is read", || {
            (Arc::strong_count(&self.stdout) == 1 && Arc::strong_count(&self.stderr) == 1)
                .then_some(())
        });
        status.success()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three servers; everything removed when dropped.
struct Cluster {
    servers: Vec<Proc>,
    addrs: Vec<SocketAddr>,
    dir: PathBuf,
    shm_dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.shm_dir);
    }
}

fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl Cluster {
    fn start(fabric: FabricKind, name: &str) -> Cluster {
        let group = format!("ob-{name}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&group);
        let shm_dir = Path::new("/dev/shm").join(&group);
        for d in [&dir, &shm_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut opts = NodeOptions::new(fabric, 3);
        opts.group = group;
        opts.shm_dir = shm_dir.clone();
        let addrs = free_addrs(3);
        let peers = join(&free_addrs(3));
        let mut cluster = Cluster {
            servers: Vec::new(),
            addrs,
            dir,
            shm_dir,
        };
        for id in 1..=3u8 {
            let journal = cluster.dir.join(format!("journal-{id}.txt"));
            cluster.servers.push(Proc::spawn(
                Command::new(env!("CARGO_BIN_EXE_orderbook-server"))
                    .arg(id.to_string())
                    .args(["--order-addrs", &join(&cluster.addrs)])
                    .arg("--journal")
                    .arg(&journal)
                    .envs(opts.to_env())
                    .env("MU_PEERS", &peers)
                    .env("MU_FIFO_DIR", &cluster.dir)
                    .env_remove("DORY_REGISTRY_IP"),
            ));
        }
        cluster
    }

    fn session(&self) -> Session {
        Session::new(
            self.addrs.clone(),
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .unwrap()
    }

    fn outputs(&self) -> String {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("=== server {}\n{}", i + 1, p.output()))
            .collect()
    }

    /// Waits until every server answers and all follow server 1.
    fn wait_serving(&self, s: &mut Session) {
        let mut last = Vec::new();
        wait_explained(
            LIMIT,
            || {
                last = (0..3).map(|i| s.request(i, "STATUS")).collect();
                last.iter()
                    .enumerate()
                    .all(|(i, r)| {
                        matches!(r, Ok(Reply::Status { role, leader: Some(1), .. })
                            if (i == 0) == (role == "Leader"))
                    })
                    .then_some(())
            },
            || format!("the group did not settle on leader 1\n{}", self.outputs()),
        );
    }

    /// Waits until all servers applied the same index, at least `index`,
    /// and returns their `DUMP`s with the header's node id removed.
    fn converged_dumps(&self, s: &mut Session, index: u64) -> Vec<String> {
        wait_for(LIMIT, "every replica applies the same log", || {
            let d: Vec<_> = (0..3).map(|i| s.request(i, "DIGEST")).collect();
            let applied: Vec<u64> = d
                .iter()
                .filter_map(|r| match r {
                    Ok(Reply::Digest { applied, .. }) => Some(*applied),
                    _ => None,
                })
                .collect();
            (applied.len() == 3 && applied.iter().all(|&a| a >= index && a == applied[0]))
                .then_some(())
        });
        (0..3)
            .map(|i| {
                let d = s.dump(i).unwrap();
                let (header, rest) = d.split_once('\n').unwrap();
                let words: Vec<&str> = header.split(' ').collect();
                assert_eq!(words[..2], ["DUMP", &(i + 1).to_string()], "{header}");
                format!("{} {}\n{rest}", words[2], words[3])
            })
            .collect()
    }

    /// Stops every server; returns each one's final state as printed at
    /// exit (header node id removed) and its journal.
    fn shut_down(&mut self, s: &mut Session) -> Vec<(String, String)> {
        for i in 0..3 {
            assert_eq!(
                s.request(i, "SHUTDOWN"),
                Ok(Reply::Bye { node: i as u8 + 1 })
            );
        }
        let mut finals = Vec::new();
        for (i, p) in self.servers.iter_mut().enumerate() {
            let ok = p.wait_exit(&format!("server {} exits", i + 1));
            assert!(ok, "server {} failed:\n{}", i + 1, p.output());
            let out = p.stdout.lock().unwrap().clone();
            let (header, rest) = out.split_once('\n').expect("a final dump");
            let words: Vec<&str> = header.split(' ').collect();
            assert_eq!(words[..2], ["DUMP", &(i + 1).to_string()], "{out}");
            let journal = self.dir.join(format!("journal-{}.txt", i + 1));
            finals.push((
                format!(
                    "{} {}\n{}",
                    words[2],
                    words[3],
                    rest.trim_end_matches("END\n")
                ),
                std::fs::read_to_string(journal).unwrap(),
            ));
        }
        finals
    }
}

/// One acknowledged order, from the trader's `--acks` file.
#[derive(Debug)]
struct Acked {
    client: u64,
    seq: u64,
    index: u64,
    kind: String,
    order: String,
}

fn read_acks(path: &Path) -> Vec<Acked> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            assert_eq!(w.len(), 6, "{l}");
            Acked {
                client: w[0].parse().unwrap(),
                seq: w[1].parse().unwrap(),
                index: w[3].parse().unwrap(),
                kind: w[4].into(),
                order: w[5].into(),
            }
        })
        .collect()
}

/// Journal lines that applied a command: (client, seq) → (index, kind,
/// order). Panics if a command was applied twice.
fn applied_once(journal: &str) -> BTreeMap<(u64, u64), (u64, String, String)> {
    let mut fresh = BTreeMap::new();
    for l in journal.lines() {
        let w: Vec<&str> = l.split(' ').collect();
        if w[3] != "fresh" {
            continue;
        }
        let key = (w[1].parse().unwrap(), w[2].parse().unwrap());
        let value = (w[0].parse().unwrap(), w[4].to_string(), w[5].to_string());
        if let Some(first) = fresh.insert(key, value) {
            panic!("{key:?} applied twice: at {} and in {l:?}", first.0);
        }
    }
    fresh
}

#[test]
fn trader_follows_a_paused_leader_and_every_acknowledged_order_is_applied_once() {
    let _one = ONE_GROUP.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start(FabricKind::Shm, "trader");
    let mut s = cluster.session();
    cluster.wait_serving(&mut s);

    let acks = cluster.dir.join("acks.txt");
    let samples = cluster.dir.join("liquibook-cli.txt");
    let client = 4242;
    let mut trader = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_orderbook-trader"))
            .args(["--servers", &join(&cluster.addrs)])
            .args(["--orders", "1000000", "--duration-secs", "90"])
            .args(["--after-leader-change", "500", "--seed", "11"])
            .args(["--client-id", &client.to_string()])
            .arg("--out")
            .arg(&samples)
            .arg("--acks")
            .arg(&acks)
            .arg("--check-replicas"),
    );
    // Pause the leader in the middle of the trading.
    wait_for(LIMIT, "the trader's orders are applied", || {
        match s.request(0, "STATUS") {
            Ok(Reply::Status { applied, .. }) if applied >= 300 => Some(()),
            _ => None,
        }
    });
    let pause = Command::new(env!("CARGO_BIN_EXE_mu-pause"))
        .args(["1", "p", "--fifo-dir"])
        .arg(&cluster.dir)
        .output()
        .unwrap();
    assert!(pause.status.success(), "{pause:?}");

    let ok = trader.wait_exit("the trader finishes");
    let out = trader.stdout.lock().unwrap().clone();
    assert!(
        ok,
        "the trader failed:\n{}\n{}",
        trader.output(),
        cluster.outputs()
    );
    println!("{out}");
    let change = out
        .lines()
        .find(|l| l.starts_with("Leader changed to "))
        .unwrap_or_else(|| panic!("no leader change printed:\n{out}"));
    let (to, gap) = change["Leader changed to ".len()..]
        .split_once(": ")
        .unwrap();
    assert!(to == "2" || to == "3", "{change}");
    assert!(gap.ends_with(" (us)") && gap[..gap.len() - 5].parse::<u64>().is_ok());
    assert!(out.contains("All 3 replicas hold the same book"), "{out}");

    // The trader's acknowledgements: one per sequence number, in order,
    // 300 before the pause and 500 after the change at least.
    let acked = read_acks(&acks);
    assert!(acked.len() >= 800, "{} orders acknowledged", acked.len());
    for (i, a) in acked.iter().enumerate() {
        assert_eq!((a.client, a.seq), (client, i as u64 + 1), "{a:?}");
    }
    let latencies = std::fs::read_to_string(&samples).unwrap();
    assert_eq!(latencies.lines().count(), acked.len());
    assert!(latencies.lines().all(|l| l.parse::<u64>().unwrap() > 0));

    // Every replica holds the same state, during the run's aftermath and
    // at exit.
    let last = acked.iter().map(|a| a.index).max().unwrap();
    let dumps = cluster.converged_dumps(&mut s, last);
    assert!(dumps.iter().all(|d| *d == dumps[0]), "{dumps:#?}");
    let finals = cluster.shut_down(&mut s);
    for (state, journal) in &finals {
        assert_eq!(*state, dumps[0]);
        assert_eq!(*journal, finals[0].1, "the replicas' journals differ");
    }

    // Exactly once: the applied commands are the acknowledged ones, each
    // applied once, where and as it was acknowledged.
    let applied = applied_once(&finals[0].1);
    let want: BTreeSet<(u64, u64)> = acked.iter().map(|a| (a.client, a.seq)).collect();
    let got: BTreeSet<(u64, u64)> = applied.keys().copied().collect();
    assert_eq!(got, want, "applied commands differ from acknowledged ones");
    for a in &acked {
        let (index, kind, order) = &applied[&(a.client, a.seq)];
        assert_eq!(
            (*index, kind, order),
            (a.index, &a.kind, &a.order),
            "seq {}",
            a.seq
        );
    }
    let resent = finals[0]
        .1
        .lines()
        .filter(|l| !l.contains(" fresh "))
        .count();
    println!(
        "{} orders applied once each; {resent} resent copies ignored",
        acked.len()
    );
}

/// Sends `line` to server `at` and returns its answer; a `RETRY` (a
/// leader change under way, e.g. on a loaded machine) is sent again, which
/// the sequence number makes safe, for up to 30 s.
fn answer(s: &mut Session, at: usize, line: &str) -> Result<Reply, String> {
    for _ in 0..30_000 {
        match s.request(at, line) {
            // The round trip paces the resends.
            Ok(Reply::Retry(_)) => {}
            other => return other,
        }
    }
    Err(format!("{line}: RETRY for 30 s"))
}

fn ok(reply: Result<Reply, String>) -> (u8, u64, AckResult) {
    match reply {
        Ok(Reply::Ok(a)) => (a.node, a.index, a.result),
        other => panic!("expected OK, got {other:?}"),
    }
}

fn err(reply: Result<Reply, String>, want: &str) {
    match reply {
        Ok(Reply::Err(why)) if why.contains(want) => {}
        other => panic!("expected ERR {want:?}, got {other:?}"),
    }
}

#[test]
fn followers_redirect_resends_apply_once_and_bad_requests_get_clear_errors() {
    let _one = ONE_GROUP.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start(FabricKind::Tcp, "protocol");
    let mut s = cluster.session();
    cluster.wait_serving(&mut s);

    // A follower names the leader and its order address.
    assert_eq!(
        answer(&mut s, 1, "LIMIT 5 1 sell 10 100"),
        Ok(Reply::NotLeader {
            leader: Some((1, cluster.addrs[0]))
        })
    );
    // The follower did not replicate it: the leader places it now, and a
    // resend gets the same answer without a second order.
    let first = ok(answer(&mut s, 0, "LIMIT 5 1 sell 10 100"));
    let AckResult::Placed(p) = &first.2 else {
        panic!("{first:?}")
    };
    assert_eq!((p.id, p.resting), (OrderId(1), 10));
    assert_eq!(ok(answer(&mut s, 0, "LIMIT 5 1 sell 10 100")), first);
    let taker = ok(answer(&mut s, 0, "LIMIT 6 1 buy 4 100"));
    let AckResult::Placed(t) = &taker.2 else {
        panic!("{taker:?}")
    };
    assert_eq!(
        t.fills,
        vec![Fill {
            maker: OrderId(1),
            price: 100,
            quantity: 4
        }]
    );
    assert_eq!(
        ok(answer(&mut s, 0, "CANCEL 5 2 1")).2,
        AckResult::Cancelled {
            order: OrderId(1),
            quantity: 6
        }
    );
    let rejected = |r: Result<Reply, String>| match ok(r).2 {
        AckResult::Rejected(why) => why,
        other => panic!("expected REJECTED, got {other:?}"),
    };
    assert_eq!(
        rejected(answer(&mut s, 0, "CANCEL 5 3 1")),
        "order 1 is already cancelled"
    );
    assert_eq!(
        rejected(answer(&mut s, 0, "CANCEL 5 4 99")),
        "unknown order 99"
    );
    assert_eq!(
        rejected(answer(&mut s, 0, "CANCEL 6 2 2")),
        "order 2 is already filled"
    );
    let AckResult::Placed(m) = ok(answer(&mut s, 0, "MARKET 6 3 buy 5")).2 else {
        panic!("market order not placed")
    };
    assert_eq!((m.id, m.filled, m.expired), (OrderId(3), 0, 5));
    err(
        answer(&mut s, 0, "LIMIT 5 1 sell 10 100"),
        "stale sequence number 1: client 5 is at 4",
    );

    // Bad requests change nothing and say what is wrong.
    err(answer(&mut s, 0, "HELLO"), "unknown request \"HELLO\"");
    err(answer(&mut s, 2, "LIMIT 5 9 buy 0 100"), "bad quantity 0");
    err(
        answer(&mut s, 0, "LIMIT 5 9 buy 1 100 7"),
        "unexpected \"7\"",
    );
    err(answer(&mut s, 0, "CANCEL 5 9 x"), "order id \"x\" is not");
    err(
        answer(&mut s, 0, &format!("LIMIT 5 9 buy 1 {}", "9".repeat(200))),
        "line longer than 128 bytes",
    );
    // The server closed that connection; the session opens a new one.
    assert!(answer(&mut s, 0, "STATUS").is_err());
    assert!(matches!(
        answer(&mut s, 0, "STATUS"),
        Ok(Reply::Status { .. })
    ));

    let dumps = cluster.converged_dumps(&mut s, 0);
    assert!(dumps.iter().all(|d| *d == dumps[0]), "{dumps:#?}");
    let state = &dumps[0];
    assert!(
        state.contains("\nbook placed 3 open 0 trades 1 volume 4\n"),
        "{state}"
    );
    assert!(state.contains("applied 9 duplicates 1 stale 1 "), "{state}");
    assert!(state.contains("\nclient 5 4 6\nclient 6 3 8\n"), "{state}");
    let finals = cluster.shut_down(&mut s);
    assert!(finals.iter().all(|f| f.0 == *state && f.1 == finals[0].1));
}
