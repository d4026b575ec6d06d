//! The smoke test of EXPERIMENTS.md's REDIS and MEMCACHED experiments: a
//! 3-node group of real servers and `mu-sidecar`s on loopback (redis over
//! shm, memcached over tcp), each of the six load generators run briefly
//! against it, the artifact's command names, and the SIGUSR1 latency dump.
//!
//! Who records a dump sample: the sidecar the client sent the write to,
//! once per write answered OK (a write sent to a follower is recorded on
//! that follower, forwarding included; the leader does not record writes
//! forwarded to it). So the leader's dump has exactly the writes the load
//! generators made through the leader, preloads included, and a node no
//! client wrote through dumps an empty file.
//!
//! It needs the `mu-sidecar` binary beside the tools (`cargo test
//! --workspace` builds it). MAIN-ST and MAIN-ST-LAT are run by
//! `tests/tools.rs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port below the kernel's ephemeral range (32768 and
/// up), from a counter per test process, so the kernel does not hand the
/// same port to someone else between the check and its use.
fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 400) * 30;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + n % 12_000) as u16;
        let port = if port >= 32_000 { port - 12_000 } else { port };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return SocketAddr::from(([127, 0, 0, 1], port));
        }
    }
}

/// Polls `f` every millisecond until it returns `Some`; panics with what
/// `explain` says after `limit`.
fn wait_for<T>(
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "{}", explain());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A program on `PATH` (or in the usual system directories), or a message
/// that says how to install it.
fn find_program(program: &str, package: &str) -> Result<PathBuf, String> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"])
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{program} is not installed: run `sudo apt-get install -y {package}` \
                 (scripts/install-deps.sh installs everything the tests need)"
            )
        })
}

/// `mu-sidecar`, built beside the tools. `cargo test -p mu-examples`
/// alone does not rebuild it, so one that predates `--dump-dir` is named
/// as stale rather than tested.
fn sidecar_program() -> Result<PathBuf, String> {
    let p = Path::new(env!("CARGO_BIN_EXE_mu-load")).with_file_name("mu-sidecar");
    let build = "build it with `cargo build -p mu-sidecar` (`cargo test --workspace` builds it)";
    if !p.is_file() {
        return Err(format!("{} not found: {build}", p.display()));
    }
    let help = Command::new(&p)
        .arg("--help")
        .output()
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if !String::from_utf8_lossy(&help.stdout).contains("--dump-dir") {
        return Err(format!(
            "{} is older than its sources: {build}",
            p.display()
        ));
    }
    Ok(p)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Redis,
    Memcached,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Memcached => "memcached",
        }
    }
}

/// A child process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Node {
    id: u8,
    listen: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
    sidecar: Proc,
    _backend: Proc,
}

/// Three servers and three sidecars; everything stops on drop.
struct Group {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    let code = r.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, r.split_once("\r\n\r\n")?.1.to_string()))
}

impl Group {
    fn start(kind: Kind, fabric: &str) -> Group {
        let (server, package) = match kind {
            Kind::Redis => ("redis-server", "redis-server"),
            Kind::Memcached => ("memcached", "memcached"),
        };
        let server = find_program(server, package).unwrap_or_else(|e| panic!("{e}"));
        let sidecar = sidecar_program().unwrap_or_else(|e| panic!("{e}"));
        let dir = std::env::temp_dir().join(format!(
            "mu-experiments-{}-{}",
            kind.name(),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let n = 3u8;
        let addrs = || (0..n).map(|_| free_addr().to_string()).collect::<Vec<_>>();
        let (peers, forward) = (addrs().join(","), addrs().join(","));
        let group = format!("exp-{}-{}", kind.name(), std::process::id());
        let mut nodes = Vec::new();
        for id in 1..=n {
            let backend = free_addr();
            let port = backend.port().to_string();
            let mut cmd = Command::new(&server);
            match kind {
                Kind::Redis => cmd.args(["--port", &port, "--bind", "127.0.0.1"]).args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]),
                Kind::Memcached => {
                    cmd.args(["-l", "127.0.0.1", "-p", &port, "-U", "0", "-u", "root"])
                }
            };
            let backend_proc = Proc(cmd.stdout(Stdio::null()).spawn().unwrap());
            wait_for(
                Duration::from_secs(10),
                || TcpStream::connect(backend).ok(),
                || format!("{} did not listen on {backend}", server.display()),
            );
            let (listen, http) = (free_addr(), free_addr());
            let log = dir.join(format!("sidecar-{id}.log"));
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new(&sidecar)
                .args(["--id", &id.to_string(), "--nodes", &n.to_string()])
                .args(["--backend-kind", kind.name()])
                .args(["--backend", &backend.to_string()])
                .args(["--listen", &listen.to_string()])
                .args(["--http", &http.to_string()])
                .args(["--fabric", fabric, "--peers", &peers])
                .args(["--forward-peers", &forward, "--group", &group])
                .args(["--shm-dir", &dir.display().to_string()])
                .args(["--dump-dir", &dir.display().to_string()])
                .env("RUST_LOG", "info")
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap();
            nodes.push(Node {
                id,
                listen,
                http,
                log,
                sidecar: Proc(child),
                _backend: backend_proc,
            });
        }
        let g = Group { nodes, dir };
        for node in &g.nodes {
            wait_for(
                Duration::from_secs(30),
                || matches!(http_get(node.http, "/readyz"), Some((200, _))).then_some(()),
                || format!("node {} not ready:\n{}", node.id, g.log(node)),
            );
        }
        g
    }

    fn log(&self, node: &Node) -> String {
        std::fs::read_to_string(&node.log).unwrap_or_default()
    }

    /// The index of the node every node agrees leads.
    fn leader(&self) -> usize {
        wait_for(
            Duration::from_secs(10),
            || {
                let mut seen = None;
                for n in &self.nodes {
                    let (_, body) = http_get(n.http, "/status")?;
                    let s: serde_json::Value = serde_json::from_str(&body).ok()?;
                    let l = s["leader"].as_u64()?;
                    if seen.is_some_and(|x| x != l) {
                        return None;
                    }
                    seen = Some(l);
                }
                Some(seen? as usize - 1)
            },
            || "the nodes did not agree on a leader".into(),
        )
    }

    /// Sends SIGUSR1 to node `i`'s sidecar and reads the dump it writes.
    fn dump(&self, i: usize) -> Vec<u64> {
        let node = &self.nodes[i];
        let path = self.dir.join(format!("dump-{}.txt", node.id));
        let _ = std::fs::remove_file(&path);
        let status = Command::new("kill")
            .args(["-USR1", &node.sidecar.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -USR1 failed");
        // The sidecar renames a complete file into place.
        let text = wait_for(
            Duration::from_secs(10),
            || std::fs::read_to_string(&path).ok(),
            || format!("no {} after SIGUSR1:\n{}", path.display(), self.log(node)),
        );
        text.lines()
            .map(|l| {
                l.parse()
                    .unwrap_or_else(|_| panic!("{}: {l:?} is not ns", path.display()))
            })
            .collect()
    }
}

/// What one load-generator run printed and wrote.
struct Run {
    out: Output,
    stdout: String,
    latencies: Vec<u64>,
}

impl Run {
    /// A number of the summary: the token after `label`.
    fn figure(&self, label: &str) -> u64 {
        let at = self
            .stdout
            .find(label)
            .unwrap_or_else(|| panic!("no {label:?} in:\n{}", self.stdout))
            + label.len();
        self.stdout[at..]
            .split(|c: char| !c.is_ascii_digit())
            .find(|t| !t.is_empty())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no number after {label:?} in:\n{}", self.stdout))
    }
}

/// Runs `program args` in `cwd` and reads the latency file `out`.
fn load(program: &str, args: &[String], cwd: &Path, out: &Path) -> Run {
    let _ = std::fs::remove_file(out);
    let o = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let latencies = std::fs::read_to_string(out)
        .map(|t| {
            t.lines()
                .map(|l| {
                    l.parse()
                        .unwrap_or_else(|_| panic!("{}: {l:?} is not ns", out.display()))
                })
                .collect()
        })
        .unwrap_or_default();
    Run {
        out: o,
        stdout,
        latencies,
    }
}

/// Checks a successful run of `n` timed requests; returns the writes it
/// made (preload included).
fn check(name: &str, run: &Run, n: Option<u64>) -> u64 {
    assert!(
        run.out.status.success(),
        "{name} failed: {}\n{}{}",
        run.out.status,
        run.stdout,
        String::from_utf8_lossy(&run.out.stderr)
    );
    for label in ["throughput ", "p50 ", "p90 ", "p99 ", "p99.9 ", "max "] {
        assert!(run.stdout.contains(label), "{name}: {}", run.stdout);
    }
    let ok = run.figure(": ok ");
    assert_eq!(run.figure("errors "), 0, "{}", run.stdout);
    if let Some(n) = n {
        assert_eq!(ok, n, "{}", run.stdout);
    }
    assert!(ok > 0, "{}", run.stdout);
    assert_eq!(
        run.latencies.len() as u64,
        ok,
        "{name}: one line per request"
    );
    assert!(
        run.latencies.iter().all(|&ns| ns > 0),
        "{name}: zero latency"
    );
    run.figure("writes ok ")
}

fn experiment(kind: Kind, fabric: &str) {
    let g = Group::start(kind, fabric);
    let leader = g.leader();
    let (follower, idle) = ((leader + 1) % 3, (leader + 2) % 3);
    let load_bin = env!("CARGO_BIN_EXE_mu-load");
    let port = |i: usize| g.nodes[i].listen.port().to_string();
    let args = |w: &str, i: usize, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![w.into(), "8".into(), "30".into(), "127.0.0.1".into()];
        v.push(port(i));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let out = g.dir.join("latencies.txt");
    let out_s = out.display().to_string();
    let mut leader_writes = 0;
    let k = kind.name();

    let w = format!("{k}-puts-only");
    let r = load(
        load_bin,
        &args(
            &w,
            leader,
            &["--requests", "200", "--outstanding", "4", "--out", &out_s],
        ),
        &g.dir,
        &out,
    );
    let writes = check(&w, &r, Some(200));
    assert_eq!(writes, 200, "{}", r.stdout);
    leader_writes += writes;

    // Time-limited; the preload stores every key, so every read hits.
    let w = format!("{k}-gets-only");
    let r = load(
        load_bin,
        &args(
            &w,
            leader,
            &["--duration", "0.3", "--keys", "50", "--out", &out_s],
        ),
        &g.dir,
        &out,
    );
    let writes = check(&w, &r, None);
    assert_eq!(writes, 50, "{}", r.stdout);
    assert_eq!(r.figure("gets: "), r.latencies.len() as u64, "{}", r.stdout);
    leader_writes += writes;

    let w = format!("{k}-puts-gets");
    let r = load(
        load_bin,
        &args(
            &w,
            leader,
            &["--requests", "100", "--keys", "50", "--out", &out_s],
        ),
        &g.dir,
        &out,
    );
    let writes = check(&w, &r, Some(100));
    assert_eq!(writes, 50 + 50, "{}", r.stdout);
    assert_eq!(r.figure("gets: "), 50, "{}", r.stdout);
    leader_writes += writes;

    // The artifact's command name, with its default latency file.
    let alias = Path::new(load_bin).with_file_name(format!("{k}-puts-only"));
    let mut a = args("", leader, &["--requests", "20"]);
    a.remove(0);
    let default_out = g.dir.join(format!("{k}-cli.txt"));
    let r = load(alias.to_str().unwrap(), &a, &g.dir, &default_out);
    leader_writes += check(&format!("{k}-puts-only (alias)"), &r, Some(20));

    // Writes through a follower are forwarded to the leader and recorded
    // on the follower.
    let r = load(
        load_bin,
        &args(
            &format!("{k}-puts-only"),
            follower,
            &["--requests", "30", "--out", &out_s],
        ),
        &g.dir,
        &out,
    );
    let follower_writes = check("puts through a follower", &r, Some(30));

    let dump = g.dump(leader);
    assert_eq!(
        dump.len() as u64,
        leader_writes,
        "the leader's dump has one sample per write made through it"
    );
    assert!(dump.iter().all(|&ns| ns > 0));
    let o = Command::new(load_bin)
        .args([
            "stats",
            &format!("{}/dump-{}.txt", g.dir.display(), leader + 1),
        ])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && line.contains(&format!(": {leader_writes} samples, mean ")),
        "{line}"
    );
    assert_eq!(g.dump(follower).len() as u64, follower_writes);
    assert_eq!(
        g.dump(idle).len(),
        0,
        "no client wrote through node {}",
        idle + 1
    );
    // A dump holds what came after the previous one.
    assert_eq!(g.dump(leader).len(), 0);
    let r = load(
        load_bin,
        &args(
            &format!("{k}-puts-only"),
            leader,
            &["--requests", "10", "--out", &out_s],
        ),
        &g.dir,
        &out,
    );
    check("puts after a dump", &r, Some(10));
    assert_eq!(g.dump(leader).len(), 10);
    for n in &g.nodes {
        let log = g.log(n);
        assert!(
            log.contains("wrote the replication latency dump"),
            "node {}:\n{log}",
            n.id
        );
    }

    // A write the sidecar refuses (over --max-entry, 512 KiB by default)
    // is an error in the summary and the exit status, never a success.
    let r = load(
        load_bin,
        &[
            format!("{k}-puts-only"),
            "8".into(),
            "600000".into(),
            "127.0.0.1".into(),
            port(leader),
            "--requests".into(),
            "3".into(),
            "--out".into(),
            out_s.clone(),
        ],
        &g.dir,
        &out,
    );
    assert!(!r.out.status.success(), "{}", r.stdout);
    assert_eq!(r.figure("errors "), 3, "{}", r.stdout);
    assert_eq!(r.figure(": ok "), 0, "{}", r.stdout);
    let word = match kind {
        Kind::Redis => "error ERR: 3",
        Kind::Memcached => "error SERVER_ERROR: 3",
    };
    assert!(r.stdout.contains(word), "{}", r.stdout);
    assert!(r.latencies.is_empty());
}

#[test]
fn redis_experiments_over_shm() {
    experiment(Kind::Redis, "shm");
}

#[test]
fn memcached_experiments_over_tcp() {
    experiment(Kind::Memcached, "tcp");
}

#[test]
fn a_missing_server_or_sidecar_is_named_with_how_to_get_it() {
    let e = find_program("mu-no-such-server", "mu-no-such-package").unwrap_err();
    assert!(
        e.contains("mu-no-such-server is not installed")
            && e.contains("sudo apt-get install -y mu-no-such-package"),
        "{e}"
    );
    assert!(find_program("redis-server", "redis-server").is_ok());
    assert!(find_program("memcached", "memcached").is_ok());
    assert!(sidecar_program().is_ok(), "{:?}", sidecar_program());
}

#[test]
fn a_load_generator_without_a_server_fails_clearly() {
    // A port nothing listens on: bound, then closed.
    let port = free_addr().port().to_string();
    for w in ["redis-puts-only", "memcached-gets-only"] {
        let o = Command::new(env!("CARGO_BIN_EXE_mu-load"))
            .args([w, "8", "30", "127.0.0.1", &port, "--requests", "1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(
            err.contains(&format!("cannot connect to 127.0.0.1:{port}"))
                && err.contains("is the sidecar or server running?"),
            "{err}"
        );
    }
    // Arguments that cannot work are refused before connecting.
    let o = Command::new(env!("CARGO_BIN_EXE_mu-load"))
        .args(["redis-puts-only", "2", "30", "127.0.0.1", &port])
        .args(["--keys", "1000"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("need keys of at least 3 bytes"));
}
