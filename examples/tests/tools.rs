//! The artifact's tools end to end: `main-st` and `main-st-lat` launch a
//! 3-process group over each real fabric, replicate, and print the
//! artifact's lines; `mu-pause` reaches a running replica's fifo and fails
//! clearly when there is none; `mu-floor` and `mu-failover` print their
//! figures.

use std::process::{Command, Stdio};

/// Runs a tool with its own fifo directory, so concurrent groups of the
/// tests never share a replica's pause fifo.
fn run(bin: &str, args: &[&str]) -> (bool, String, String) {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let fifos = std::env::temp_dir().join(format!("mu-fifos-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&fifos).unwrap();
    let out = Command::new(bin)
        .args(args)
        .env("MU_FIFO_DIR", &fifos)
        .output()
        .expect("tool runs");
    let _ = std::fs::remove_dir_all(&fifos);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn main_st_replicates_over_tcp_and_shm() {
    for fabric in ["tcp", "shm"] {
        let (ok, out, err) = run(
            env!("CARGO_BIN_EXE_main-st"),
            &[
                "--launch", "1", "64", "2", "--count", "2000", "--fabric", fabric,
            ],
        );
        assert!(ok, "{fabric}: {out}{err}");
        assert!(
            out.contains("Replicated 2000 commands of size 64 bytes in "),
            "{fabric}: {out}"
        );
    }
}

#[test]
fn main_st_lat_dumps_one_latency_per_request() {
    let dir = std::env::temp_dir().join(format!("mu-lat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ok, out, err) = run(
        env!("CARGO_BIN_EXE_main-st-lat"),
        &[
            "--launch",
            "1",
            "128",
            "1",
            "--count",
            "500",
            "--fabric",
            "shm",
            "--dump-dir",
            dir.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("500 samples of 128 bytes") && out.contains("p99.9"),
        "{out}"
    );
    let dump = std::fs::read_to_string(dir.join("dump-st-128-1.txt")).unwrap();
    let samples: Vec<u64> = dump.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(samples.len(), 500);
    assert!(samples.iter().all(|&ns| ns > 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mu_pause_reaches_a_running_replica_and_fails_clearly_without_one() {
    let dir = std::env::temp_dir().join(format!("mu-pause-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo_dir = dir.to_str().unwrap();
    // No replica 3 runs here: a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_mu-pause"))
        .args(["3", "p", "--fifo-dir", fifo_dir])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is replica 3 running?"));
    // A bad command is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_mu-pause"))
        .args(["3", "x", "--fifo-dir", fifo_dir])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    // A running replica (a follower waiting for its group) reads the fifo.
    let mut node = Command::new(env!("CARGO_BIN_EXE_main-st"))
        .args([
            "2",
            "64",
            "1",
            "--fabric",
            "shm",
            "--group",
            "pausetest",
            "--fifo-dir",
            fifo_dir,
        ])
        .env("MU_SHM_DIR", &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let fifo = dir.join("mu-fifo-2");
    let mut waited = 0;
    while !fifo.exists() {
        assert!(waited < 1000, "the replica never created its fifo");
        std::thread::sleep(std::time::Duration::from_millis(10));
        waited += 1;
    }
    for cmd in ["p", "c"] {
        let out = Command::new(env!("CARGO_BIN_EXE_mu-pause"))
            .args(["2", cmd, "--fifo-dir", fifo_dir])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    node.kill().unwrap();
    node.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mu_floor_measures_both_floors() {
    for (floor, name) in [
        ("tcp", "loopback TCP ping-pong"),
        ("shm", "shared-memory ping"),
    ] {
        let (ok, out, err) = run(
            env!("CARGO_BIN_EXE_mu-floor"),
            &[floor, "64", "--count", "200"],
        );
        assert!(ok, "{floor}: {out}{err}");
        assert!(
            out.starts_with(&format!("{name}: 200 samples of 64 bytes")),
            "{out}"
        );
    }
}

#[test]
fn mu_failover_reports_each_fault_and_the_distribution() {
    for fault in ["kill", "pause"] {
        let (ok, out, err) = run(
            env!("CARGO_BIN_EXE_mu-failover"),
            &[
                "--fault",
                fault,
                "--runs",
                "2",
                "--node-bin",
                env!("CARGO_BIN_EXE_mu-node"),
            ],
        );
        assert!(ok, "{fault}: {out}{err}");
        assert_eq!(out.matches(" after the fault").count(), 2, "{out}");
        assert!(out.contains(" runs (heartbeat 1000 µs"), "{out}");
    }
}
