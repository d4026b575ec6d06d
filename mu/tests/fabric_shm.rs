//! The `shm` fabric passes the fabric conformance suite, including a
//! writer process stopped with SIGSTOP in the middle of its stores.

use mu::fabric::conformance::{run_all, GroupBuilder};
use mu::fabric::shm::{ShmConfig, ShmEndpoint, DEFAULT_LEASE_TIMEOUT};
use mu::log::layout::Layout;
use mu::NodeId;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Builds groups in fresh directories under /dev/shm and removes them.
struct Shm {
    dirs: Vec<PathBuf>,
    /// Layout of the last group built (its directory is the last in `dirs`).
    layout: Option<Layout>,
}

impl Shm {
    fn fresh_dir(&mut self) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(format!(
            "/dev/shm/mu-fabric-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a directory in /dev/shm");
        self.dirs.push(dir.clone());
        dir
    }

    fn node(dir: &std::path::Path, id: usize, layout: Layout) -> ShmEndpoint {
        ShmEndpoint::create(ShmConfig {
            dir: dir.to_path_buf(),
            group: "g".into(),
            id: NodeId(id as u8),
            layout,
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
        })
        .expect("create shm endpoint")
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl GroupBuilder for Shm {
    type F = ShmEndpoint;

    fn build(&mut self, n: usize, layout: Layout) -> Vec<ShmEndpoint> {
        let dir = self.fresh_dir();
        self.layout = Some(layout);
        (0..n).map(|i| Self::node(&dir, i, layout)).collect()
    }

    fn restart(&mut self, node: NodeId) -> Option<ShmEndpoint> {
        let dir = self.dirs.last().expect("a group was built").clone();
        let layout = self.layout.expect("a group was built");
        Some(Self::node(&dir, node.idx(), layout))
    }

    fn kill(&mut self, endpoint: ShmEndpoint) {
        drop(endpoint);
    }

    fn dead_peer_bound(&self) -> Duration {
        DEFAULT_LEASE_TIMEOUT
    }

    fn build_with_writer_process(
        &mut self,
        n: usize,
        layout: Layout,
        writer: NodeId,
        target: NodeId,
    ) -> Option<(Vec<Option<ShmEndpoint>>, Child)> {
        let dir = self.fresh_dir();
        let nodes = (0..n)
            .map(|i| (i != writer.idx()).then(|| Self::node(&dir, i, layout)))
            .collect();
        let child = Command::new(env!("CARGO_BIN_EXE_mu-fabric-peer"))
            .args(["paused-writer", "--fabric", "shm"])
            .args(["--group", &n.to_string()])
            .args(["--node", &writer.0.to_string()])
            .args(["--target", &target.0.to_string()])
            .args(["--shm-dir", &dir.to_string_lossy()])
            .args(["--shm-group", "g"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start mu-fabric-peer");
        Some((nodes, child))
    }
}

#[test]
fn shm_fabric_passes_the_conformance_suite() {
    run_all(&mut Shm {
        dirs: Vec::new(),
        layout: None,
    });
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill(1)")
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// Posts reads of node 1's control area until one ends with `want`;
/// returns how long that took.
fn until_read(f: &mut ShmEndpoint, want: Result<(), mu::OpError>, limit: Duration) -> Duration {
    use mu::fabric::{Fabric, OpId};
    #[allow(
        clippy::disallowed_methods,
        reason = "a real-time test bounds its wait"
    )]
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    for op in 0u64.. {
        f.post_read(NodeId(1), OpId(op), 0, 64, 64).expect("post");
        out.clear();
        f.poll(&mut out);
        if out.iter().any(|c| c.result == want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "no read ended with {want:?} within {limit:?}"
        );
        std::thread::yield_now();
    }
    unreachable!()
}

#[test]
fn a_stopped_or_killed_process_is_unreachable_within_the_lease() {
    let mut b = Shm {
        dirs: Vec::new(),
        layout: None,
    };
    let layout = mu::fabric::conformance::suite_layout(2);
    let (mut nodes, child) = b
        .build_with_writer_process(2, layout, NodeId(1), NodeId(0))
        .expect("spawn");
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Reap(child);
    let mut owner = nodes[0].take().expect("node 0 in process");
    let bound = DEFAULT_LEASE_TIMEOUT + Duration::from_secs(1);
    // The child has mapped its region once reads succeed.
    until_read(&mut owner, Ok(()), Duration::from_secs(20));
    signal(&child.0, "STOP");
    let t = until_read(
        &mut owner,
        Err(mu::OpError::Unreachable),
        Duration::from_secs(20),
    );
    assert!(
        t <= bound,
        "a stopped node was unreachable only after {t:?}"
    );
    signal(&child.0, "CONT");
    until_read(&mut owner, Ok(()), Duration::from_secs(20));
    signal(&child.0, "KILL");
    let t = until_read(
        &mut owner,
        Err(mu::OpError::Unreachable),
        Duration::from_secs(20),
    );
    assert!(t <= bound, "a killed node was unreachable only after {t:?}");
}
