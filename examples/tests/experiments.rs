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

#[path = "../../proxy/tests/common/mod.rs"]
mod common;

use common::{find_program, free_addr, sidecar_program, temp_dir, wait_explained, Cluster, Kind};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The load generator; its artifact-named wrappers are beside it.
const MU_LOAD: &str = env!("CARGO_BIN_EXE_mu-load");

/// A directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A 3-node group whose sidecars dump into `dir`, where the load
/// generators also run and write their latency files. The group stops
/// (fields drop in order) before the directory goes.
struct Lab {
    cluster: Cluster,
    dir: Scratch,
}

/// The numbers in a latency file (a load generator's or a dump), one per
/// line, each a positive count of ns; `None` if there is no such file.
fn ns_lines(path: &Path) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let parse = |l: &str| l.parse().ok().filter(|&ns: &u64| ns > 0);
    Some(
        text.lines()
            .map(|l| {
                parse(l).unwrap_or_else(|| {
                    panic!("{}: {l:?} is not a positive ns count", path.display())
                })
            })
            .collect(),
    )
}

impl Lab {
    fn start(kind: Kind, fabric: &str) -> Lab {
        let dir = Scratch(temp_dir(&format!("experiments-{}", kind.name())));
        let dumps = dir.0.display().to_string();
        let cluster = Cluster::start(kind, 3, fabric, &["--dump-dir", &dumps]);
        Lab { cluster, dir }
    }

    /// Key size 8, `value_size`, and node `i`'s client address: the
    /// arguments every workload takes.
    fn target(&self, value_size: &str, i: usize) -> Vec<String> {
        let port = self.cluster.nodes[i].listen.port().to_string();
        ["8", value_size, "127.0.0.1", &port]
            .map(String::from)
            .to_vec()
    }

    /// `mu-load <workload>` against node `i` with 30-byte values.
    fn load(&self, workload: &str, i: usize, extra: &[&str]) -> Run {
        self.load_values(workload, "30", i, extra)
    }

    /// `mu-load <workload>` against node `i`, its latencies written to a
    /// file of the lab's.
    fn load_values(&self, workload: &str, value_size: &str, i: usize, extra: &[&str]) -> Run {
        let out = self.dir.0.join("latencies.txt");
        let mut args = vec![workload.to_string()];
        args.extend(self.target(value_size, i));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--out".to_string(), out.display().to_string()]);
        self.run(Path::new(MU_LOAD), &args, &out)
    }

    /// Runs `program args` in the lab's directory and reads the latency
    /// file `out` it writes.
    fn run(&self, program: &Path, args: &[String], out: &Path) -> Run {
        let _ = std::fs::remove_file(out);
        let o = Command::new(program)
            .args(args)
            .current_dir(&self.dir.0)
            .output()
            .unwrap_or_else(|e| panic!("{} starts: {e}", program.display()));
        Run {
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            out: o,
            latencies: ns_lines(out).unwrap_or_default(),
        }
    }

    /// Sends SIGUSR1 to node `i`'s sidecar and reads the dump it writes.
    fn dump(&self, i: usize) -> Vec<u64> {
        let node = &self.cluster.nodes[i];
        let path = self.dir.0.join(format!("dump-{}.txt", node.id));
        let _ = std::fs::remove_file(&path);
        node.proc.signal("USR1");
        // The sidecar renames a complete file into place.
        wait_explained(
            Duration::from_secs(10),
            || ns_lines(&path),
            || {
                format!(
                    "no {} after SIGUSR1:\n{}",
                    path.display(),
                    self.cluster.logs()
                )
            },
        )
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

/// Checks a successful run of `n` timed requests (each with a positive
/// latency, as the latency file's reading checks); returns the writes it
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
    run.figure("writes ok ")
}

/// Every workload through the leader, the artifact's command name, and
/// puts through a follower: the writes made through the leader and
/// through the follower.
fn workloads(lab: &Lab, leader: usize, follower: usize) -> (u64, u64) {
    let k = lab.cluster.kind.name();
    let mut leader_writes = 0;

    let w = format!("{k}-puts-only");
    let r = lab.load(&w, leader, &["--requests", "200", "--outstanding", "4"]);
    let writes = check(&w, &r, Some(200));
    assert_eq!(writes, 200, "{}", r.stdout);
    leader_writes += writes;

    // Time-limited; the preload stores every key, so every read hits.
    let w = format!("{k}-gets-only");
    let r = lab.load(&w, leader, &["--duration", "0.3", "--keys", "50"]);
    let writes = check(&w, &r, None);
    assert_eq!(writes, 50, "{}", r.stdout);
    assert_eq!(r.figure("gets: "), r.latencies.len() as u64, "{}", r.stdout);
    leader_writes += writes;

    let w = format!("{k}-puts-gets");
    let r = lab.load(&w, leader, &["--requests", "100", "--keys", "50"]);
    let writes = check(&w, &r, Some(100));
    assert_eq!(writes, 50 + 50, "{}", r.stdout);
    assert_eq!(r.figure("gets: "), 50, "{}", r.stdout);
    leader_writes += writes;

    // The artifact's command name, with its default latency file.
    let alias = Path::new(MU_LOAD).with_file_name(format!("{k}-puts-only"));
    let mut args = lab.target("30", leader);
    args.extend(["--requests".to_string(), "20".to_string()]);
    let r = lab.run(&alias, &args, &lab.dir.0.join(format!("{k}-cli.txt")));
    leader_writes += check(&format!("{k}-puts-only (alias)"), &r, Some(20));

    // Writes through a follower are forwarded to the leader and recorded
    // on the follower.
    let r = lab.load(&format!("{k}-puts-only"), follower, &["--requests", "30"]);
    let follower_writes = check("puts through a follower", &r, Some(30));
    (leader_writes, follower_writes)
}

/// The dumps after [`workloads`] made `leader_writes` and
/// `follower_writes`: one sample per write made through each node, then
/// only what came after the previous dump.
fn check_dumps(
    lab: &Lab,
    [leader, follower, idle]: [usize; 3],
    leader_writes: u64,
    follower_writes: u64,
) {
    let dump = lab.dump(leader);
    assert_eq!(
        dump.len() as u64,
        leader_writes,
        "the leader's dump has one sample per write made through it"
    );
    let file = lab
        .dir
        .0
        .join(format!("dump-{}.txt", lab.cluster.nodes[leader].id));
    let o = Command::new(MU_LOAD)
        .arg("stats")
        .arg(&file)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && line.contains(&format!(": {leader_writes} samples, mean ")),
        "{line}"
    );
    assert_eq!(lab.dump(follower).len() as u64, follower_writes);
    assert_eq!(
        lab.dump(idle).len(),
        0,
        "no client wrote through node {}",
        idle + 1
    );
    // A dump holds what came after the previous one.
    assert_eq!(lab.dump(leader).len(), 0);
    let k = lab.cluster.kind.name();
    let r = lab.load(&format!("{k}-puts-only"), leader, &["--requests", "10"]);
    check("puts after a dump", &r, Some(10));
    assert_eq!(lab.dump(leader).len(), 10);
    for n in &lab.cluster.nodes {
        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
        assert!(
            log.contains("wrote the replication latency dump"),
            "node {}:\n{log}",
            n.id
        );
    }
}

fn experiment(kind: Kind, fabric: &str) {
    let lab = Lab::start(kind, fabric);
    let leader = lab.cluster.wait_leader(&[0, 1, 2], Duration::from_secs(10));
    let (follower, idle) = ((leader + 1) % 3, (leader + 2) % 3);
    let (leader_writes, follower_writes) = workloads(&lab, leader, follower);
    check_dumps(
        &lab,
        [leader, follower, idle],
        leader_writes,
        follower_writes,
    );

    // A write the sidecar refuses (over --max-entry, 512 KiB by default)
    // is an error in the summary and the exit status, never a success.
    let w = format!("{}-puts-only", kind.name());
    let r = lab.load_values(&w, "600000", leader, &["--requests", "3"]);
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
    let sidecar = sidecar_program(&["--dump-dir"]);
    assert!(sidecar.is_ok(), "{sidecar:?}");
    // A binary without a flag the test passes is older than its sources.
    let e = sidecar_program(&["--dump-dir", "--no-such-flag=1"]).unwrap_err();
    assert!(
        e.contains("does not know --no-such-flag: it is older than its sources")
            && e.contains("cargo build -p mu-sidecar"),
        "{e}"
    );
}

#[test]
fn a_load_generator_without_a_server_fails_clearly() {
    // A port nothing listens on: bound, then closed.
    let port = free_addr().port().to_string();
    for w in ["redis-puts-only", "memcached-gets-only"] {
        let o = Command::new(MU_LOAD)
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
    let o = Command::new(MU_LOAD)
        .args(["redis-puts-only", "2", "30", "127.0.0.1", &port])
        .args(["--keys", "1000"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("need keys of at least 3 bytes"));
}
