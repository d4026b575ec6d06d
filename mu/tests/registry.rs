//! The memcached registry against a real memcached started on a free
//! loopback port: three replicas publish and find each other; a missing
//! replica is reported by id after the deadline; a stale endpoint from an
//! earlier run is replaced.

use mu::discovery::{DiscoveryError, Registry};
use mu::NodeId;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Memcached {
    child: Child,
    port: u16,
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn memcached() -> Memcached {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("memcached")
        .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-u", "root"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("memcached not found: install it with `apt-get install memcached` (scripts/install-deps.sh does)");
    // From here on the guard kills and reaps it, even if the wait fails.
    let m = Memcached { child, port };
    // Wait until it accepts connections (bounded).
    for _ in 0..500 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return m;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("memcached did not start listening on port {port}");
}

#[test]
fn replicas_find_each_other_through_the_registry() {
    let m = memcached();
    let addr = format!("127.0.0.1:{}", m.port);
    let regs: Vec<Registry> = (0..3)
        .map(|_| Registry::connect(&addr, "test-group-").unwrap())
        .collect();
    regs[0].publish(NodeId(0), "stale:1").unwrap();
    for (i, r) in regs.iter().enumerate() {
        r.publish(NodeId(i as u8), &format!("127.0.0.1:{}", 7000 + i))
            .unwrap();
    }
    let all = regs[2]
        .wait_for_all(3, Duration::from_secs(2), Duration::from_millis(5))
        .unwrap();
    assert_eq!(all, ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]);
    // Another group on the same registry sees nothing of this one.
    let other = Registry::connect(&addr, "other-").unwrap();
    assert_eq!(other.lookup(NodeId(0)).unwrap(), None);
}

#[test]
fn a_missing_replica_is_named_after_the_deadline() {
    let m = memcached();
    let r = Registry::connect(&format!("127.0.0.1:{}", m.port), "g-").unwrap();
    r.publish(NodeId(0), "a").unwrap();
    r.publish(NodeId(2), "c").unwrap();
    match r.wait_for_all(3, Duration::from_millis(50), Duration::from_millis(10)) {
        Err(DiscoveryError::Missing { missing, .. }) => assert_eq!(missing, vec![1]),
        other => panic!("expected a missing replica, got {other:?}"),
    }
}
