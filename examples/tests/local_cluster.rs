//! The README's first command: `local-cluster` starts a group of real
//! servers and sidecars and shows a write on node 1 read on the others.
//! It needs the `mu-sidecar` binary beside it (`cargo test --workspace`
//! builds it).

use std::process::Command;

fn demo(backend: &str, fabric: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_local-cluster"))
        .args([
            "--backend",
            backend,
            "--fabric",
            fabric,
            "--exit-after-demo",
        ])
        .output()
        .expect("local-cluster runs");
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
}

#[test]
fn redis_group_over_shm() {
    demo("redis", "shm");
}

#[test]
fn memcached_group_over_tcp() {
    demo("memcached", "tcp");
}
