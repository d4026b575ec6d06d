//! The README's first command: `local-cluster` starts a group of real
//! servers and sidecars and shows a write on node 1 read on the others.
//! It needs the `mu-sidecar` binary beside it (`cargo test --workspace`
//! builds it).

use std::process::{Command, Stdio};

fn demo(backend: &str, fabric: &str) {
    let child = Command::new(env!("CARGO_BIN_EXE_local-cluster"))
        .args([
            "--backend",
            backend,
            "--fabric",
            fabric,
            "--exit-after-demo",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("local-cluster runs");
    // The sidecars' shm group is named after the launcher's pid.
    let group = format!("local-{}-", child.id());
    let out = child.wait_with_output().expect("local-cluster runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "local-cluster failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("The write made on node 1 is on every node."),
        "{stdout}"
    );
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&group))
        .collect();
    assert!(left.is_empty(), "the demo left shared objects: {left:?}");
}

#[test]
fn redis_group_over_shm() {
    demo("redis", "shm");
}

#[test]
fn memcached_group_over_tcp() {
    demo("memcached", "tcp");
}
