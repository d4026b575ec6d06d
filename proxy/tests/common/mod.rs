//! Test support: real redis-server / memcached processes and sidecars on
//! free loopback ports, killed when the test ends; a small blocking RESP
//! and memcached client.

#![allow(dead_code)]

pub mod load;

use bytes::BytesMut;
use mu_protocols::memcached::{McReply, McReplyDecoder};
use mu_protocols::resp::{encode_request, Frame, FrameDecoder};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port. Ports come from below the kernel's ephemeral
/// range (32768 and up), so a port handed out here is not also picked by
/// the kernel for someone's outgoing connection or `bind(0)` between our
/// check and its use. Each port is also reserved for the life of this
/// process by an exclusive lock (`flock`) on a file named after it, so test
/// binaries run at the same time never hand out the same port (the kernel
/// drops the locks when a process exits, however it exits).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = port_lock_dir();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    // Processes start at different places so they rarely contend.
    let base = (std::process::id() % 400) * 30;
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20_000 + (base + n) % 12_000) as u16;
        let path = port_lock_path(port);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        if file.try_lock().is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(file);
            return port;
        }
    }
    panic!("no free loopback port in 20000..32000");
}

/// The file whose lock reserves `port` for a test process (see
/// [`free_port`]).
pub fn port_lock_path(port: u16) -> PathBuf {
    port_lock_dir().join(port.to_string())
}

fn port_lock_dir() -> PathBuf {
    std::env::temp_dir().join("mu-sidecar-test-ports")
}

/// Every thread's backtrace of process `pid` (by gdb, which
/// scripts/install-deps.sh installs), for a failure message.
pub fn thread_stacks(pid: i32) -> String {
    let out = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => format!(
            "--- threads of process {pid} ---\n{}",
            String::from_utf8_lossy(&o.stdout)
        ),
        Err(e) => format!(
            "(no backtraces of process {pid}: cannot run gdb: {e}; \
             install it with apt-get install -y gdb)"
        ),
    }
}

/// A loopback address with a free port.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Polls `f` every millisecond until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_explained(limit, f, || {
        format!("timed out after {limit:?} waiting for {what}")
    })
}

/// Like [`wait_for`]; on timeout, panics with what `explain` says then
/// (the state seen last, logs). The processes under test are separate, so
/// their state is polled: every wait in these tests goes through here.
pub fn wait_explained<T>(
    limit: Duration,
    f: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    poll_until(limit, f).unwrap_or_else(|| panic!("{}", explain()))
}

/// Polls `f` every millisecond until it returns `Some`, or `None` once
/// `limit` passed.
pub fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// An installed program: on `PATH` or in the usual system directories;
/// otherwise a message naming the Debian package that provides it.
pub fn find_program(program: &str, package: &str) -> Result<PathBuf, String> {
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

/// The path of an installed program, or a panic naming the Debian package
/// that provides it.
pub fn tool(program: &str, package: &str) -> PathBuf {
    find_program(program, package).unwrap_or_else(|e| panic!("{e}"))
}

/// The `mu-sidecar` binary, checked to know every `--flag` in `args`.
///
/// mu-sidecar's own tests run the binary cargo built for them. Other
/// crates' tests include this file too (`examples/tests/experiments.rs`);
/// they find the `mu-sidecar` of their target directory, which `cargo
/// test -p <their crate>` does not build (`cargo test --workspace` does),
/// so a missing one, or one older than a flag the test passes, is named
/// with how to build it rather than tested.
pub fn sidecar_program<S: AsRef<str>>(args: &[S]) -> Result<PathBuf, String> {
    if let Some(p) = option_env!("CARGO_BIN_EXE_mu-sidecar") {
        return Ok(PathBuf::from(p));
    }
    let build = "build it with `cargo build -p mu-sidecar` (`cargo test --workspace` builds it)";
    // The test runs as <target>/<profile>/deps/<test>-<hash>; the
    // workspace's binaries are in <target>/<profile>.
    let exe = std::env::current_exe().map_err(|e| format!("the test's own path: {e}"))?;
    let p = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("mu-sidecar"))
        .ok_or_else(|| format!("no target directory above {}", exe.display()))?;
    if !p.is_file() {
        return Err(format!("{} not found: {build}", p.display()));
    }
    let help = Command::new(&p)
        .arg("--help")
        .output()
        .map_err(|e| format!("{}: {e}", p.display()))?;
    let help = String::from_utf8_lossy(&help.stdout);
    let known: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .filter(|w| w.starts_with("--"))
        .collect();
    let flags = args
        .iter()
        .map(AsRef::as_ref)
        .filter(|a| a.starts_with("--"));
    match flags
        .map(|a| a.split('=').next().unwrap_or(a))
        .find(|f| !known.contains(f))
    {
        Some(f) => Err(format!(
            "{} does not know {f}: it is older than its sources: {build}",
            p.display()
        )),
        None => Ok(p),
    }
}

/// A child process killed on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Option<Child>,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{sig} {} failed", self.name);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process must be continued to die promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// Which server a cluster fronts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redis,
    Memcached,
}

impl Kind {
    /// The name `--backend-kind` takes, which the load generators' workload
    /// names start with.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Memcached => "memcached",
        }
    }
}

/// Starts a backend on a free port and waits until it answers.
pub fn start_backend(kind: Kind) -> (Proc, SocketAddr) {
    let addr = free_addr();
    (start_backend_on(kind, addr), addr)
}

/// Starts a backend on `addr` and waits until it answers.
pub fn start_backend_on(kind: Kind, addr: SocketAddr) -> Proc {
    launch_backend(kind, addr, None, &[])
}

/// Starts a backend that listens on the Unix socket `path` (redis-server
/// also on `addr`; memcached, whose `-s` turns TCP off, only on `path`).
pub fn start_backend_unix(kind: Kind, addr: SocketAddr, path: &Path) -> Proc {
    launch_backend(kind, addr, Some(path), &[])
}

/// Starts a backend with extra command-line arguments.
fn launch_backend(kind: Kind, addr: SocketAddr, socket: Option<&Path>, extra: &[&str]) -> Proc {
    let port = addr.port().to_string();
    let mut cmd = match kind {
        Kind::Redis => {
            let mut c = Command::new(tool("redis-server", "redis-server"));
            c.args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]);
            if let Some(path) = socket {
                c.arg("--unixsocket").arg(path);
            }
            c
        }
        Kind::Memcached => {
            let mut c = Command::new(tool("memcached", "memcached"));
            match socket {
                Some(path) => c.arg("-s").arg(path),
                None => c.args(["-l", "127.0.0.1", "-p", &port]),
            };
            c.args(["-U", "0", "-u", "root"]);
            c
        }
    };
    let child = cmd
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("the backend starts");
    let p = Proc {
        child: Some(child),
        name: format!(
            "{kind:?} on {}",
            socket.map_or(addr.to_string(), |s| s.display().to_string())
        ),
    };
    wait_for(
        Duration::from_secs(10),
        "the backend to listen",
        || match socket {
            Some(path) => std::os::unix::net::UnixStream::connect(path).ok().map(drop),
            None => TcpStream::connect(addr).ok().map(drop),
        },
    );
    p
}

/// How a test cluster's sidecars reach their servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `--backend 127.0.0.1:PORT`.
    Tcp,
    /// `--backend unix:PATH`.
    Unix,
}

/// How a test cluster's servers are started and reached.
#[derive(Debug, Clone, Copy)]
pub struct Servers<'a> {
    pub via: Via,
    /// Extra arguments of every server.
    pub args: &'a [&'a str],
}

impl From<Via> for Servers<'static> {
    fn from(via: Via) -> Self {
        Servers { via, args: &[] }
    }
}

/// One sidecar of a test cluster.
#[derive(Debug)]
pub struct Node {
    pub id: u8,
    pub proc: Proc,
    pub listen: SocketAddr,
    pub http: SocketAddr,
    /// The server's TCP address (for a memcached on a Unix socket, nothing
    /// listens there).
    pub backend: SocketAddr,
    /// The server's Unix socket, when the sidecar reaches it through one.
    pub backend_socket: Option<PathBuf>,
    pub backend_proc: Proc,
    pub args: Vec<String>,
    pub log: PathBuf,
}

/// A group of sidecars, each in front of its own backend.
#[derive(Debug)]
pub struct Cluster {
    pub kind: Kind,
    pub nodes: Vec<Node>,
    pub dir: PathBuf,
}

/// A unique temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mu-sidecar-test-{tag}-{}-{}",
        std::process::id(),
        rand_u32()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("urandom");
    u32::from_le_bytes(b)
}

impl Cluster {
    /// Starts `n` backends and sidecars over `fabric` (`tcp` or `shm`),
    /// with extra sidecar flags, and waits until every node is ready.
    pub fn start(kind: Kind, n: u8, fabric: &str, extra: &[&str]) -> Cluster {
        Cluster::start_with(
            kind,
            n,
            fabric,
            extra,
            |_| Vec::new(),
            Duration::from_secs(30),
            Via::Tcp,
        )
    }

    /// [`Cluster::start`] with each sidecar reaching its server over a Unix
    /// socket (`--backend unix:PATH`).
    pub fn start_unix(kind: Kind, n: u8, fabric: &str) -> Cluster {
        let ready = Duration::from_secs(30);
        Cluster::start_with(kind, n, fabric, &[], |_| Vec::new(), ready, Via::Unix)
    }

    /// [`Cluster::start`] with flags per node (`per_node(id)`, 1-based), a
    /// limit for every node to become ready, and how servers are started
    /// and reached.
    pub fn start_with<'a>(
        kind: Kind,
        n: u8,
        fabric: &str,
        extra: &[&str],
        per_node: impl Fn(u8) -> Vec<String>,
        ready: Duration,
        servers: impl Into<Servers<'a>>,
    ) -> Cluster {
        let servers = servers.into();
        let unix = servers.via == Via::Unix;
        let dir = temp_dir(fabric);
        let peers: Vec<String> = (0..n).map(|_| free_addr().to_string()).collect();
        let forward: Vec<String> = (0..n).map(|_| free_addr().to_string()).collect();
        let group = format!("t{}", rand_u32());
        let mut nodes = Vec::new();
        for id in 1..=n {
            let backend = free_addr();
            let backend_socket = unix.then(|| dir.join(format!("backend-{id}.sock")));
            let backend_proc =
                launch_backend(kind, backend, backend_socket.as_deref(), servers.args);
            let listen = free_addr();
            let http = free_addr();
            let mut args: Vec<String> = vec![
                "--id".into(),
                id.to_string(),
                "--nodes".into(),
                n.to_string(),
                "--backend-kind".into(),
                kind.name().into(),
                "--backend".into(),
                match &backend_socket {
                    Some(path) => format!("unix:{}", path.display()),
                    None => backend.to_string(),
                },
                "--listen".into(),
                listen.to_string(),
                "--http".into(),
                http.to_string(),
                "--fabric".into(),
                fabric.into(),
                "--peers".into(),
                peers.join(","),
                "--forward-peers".into(),
                forward.join(","),
                "--group".into(),
                group.clone(),
                "--shm-dir".into(),
                dir.display().to_string(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            args.extend(per_node(id));
            let log = dir.join(format!("sidecar-{id}.log"));
            let proc = spawn_sidecar(&args, &log, id);
            nodes.push(Node {
                id,
                proc,
                listen,
                http,
                backend,
                backend_socket,
                backend_proc,
                args,
                log,
            });
        }
        let c = Cluster { kind, nodes, dir };
        for i in 0..c.nodes.len() {
            c.wait_ready(i, ready);
        }
        c
    }

    /// Waits until node `i` (0-based) answers /readyz with 200.
    pub fn wait_ready(&self, i: usize, limit: Duration) {
        let node = &self.nodes[i];
        wait_explained(
            limit,
            || matches!(http_get(node.http, "/readyz"), Some((200, _))).then_some(()),
            || {
                format!(
                    "node {} not ready after {limit:?}: {:?}\nlog:\n{}",
                    node.id,
                    http_get(node.http, "/readyz"),
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                )
            },
        );
    }

    /// The /status JSON of node `i`, if it answers.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let (code, body) = http_get(self.nodes[i].http, "/status")?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// The leader's index (0-based) as node `i` sees it.
    pub fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let s = self.status(i)?;
        let l = s["leader"].as_u64()?;
        (s["role"] == "leader" || l != self.nodes[i].id as u64).then_some(())?;
        Some(l as usize - 1)
    }

    /// The node (0-based) every live node agrees leads.
    pub fn wait_leader(&self, live: &[usize], limit: Duration) -> usize {
        wait_for(limit, "one agreed leader", || {
            let mut seen = None;
            for &i in live {
                let s = self.status(i)?;
                let l = s["leader"].as_u64()? as usize - 1;
                if seen.is_some_and(|x| x != l) {
                    return None;
                }
                seen = Some(l);
            }
            let l = seen?;
            (self.status(l)?["role"] == "leader").then_some(l)
        })
    }

    /// Waits until every listed node applied at least `index`.
    pub fn wait_applied(&self, live: &[usize], index: u64, limit: Duration) {
        wait_for(limit, "every node to apply", || {
            live.iter()
                .all(|&i| {
                    self.status(i)
                        .and_then(|s| s["backend_applied_index"].as_u64())
                        .is_some_and(|a| a >= index)
                })
                .then_some(())
        });
    }

    /// The highest commit or applied index any listed node reports: at
    /// least every write acknowledged so far (a node applies a write before
    /// answering it; the commit index in /status may lag by a fraction of
    /// a millisecond).
    pub fn commit_index(&self, live: &[usize]) -> u64 {
        live.iter()
            .filter_map(|&i| {
                let s = self.status(i)?;
                Some(
                    s["commit_index"]
                        .as_u64()?
                        .max(s["backend_applied_index"].as_u64()?),
                )
            })
            .max()
            .unwrap_or(0)
    }

    /// `GET /verify` on node `i` (compares every node's data): the status
    /// and the JSON report.
    pub fn verify(&self, i: usize) -> (u16, serde_json::Value) {
        let (code, body) = http_get_within(self.nodes[i].http, "/verify", Duration::from_secs(60))
            .expect("/verify answers");
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        (code, json)
    }

    /// The sidecar logs, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- sidecar {} ---\n{}",
                    n.id,
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.proc.kill();
            n.backend_proc.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a sidecar with `args`, logging to `log`.
pub fn spawn_sidecar(args: &[String], log: &PathBuf, id: u8) -> Proc {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let program = sidecar_program(args).unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(program)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .expect("mu-sidecar starts");
    Proc {
        child: Some(child),
        name: format!("sidecar {id}"),
    }
}

/// A plain HTTP/1.0 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_get_within(addr, path, Duration::from_secs(2))
}

/// [`http_get`] for answers that take up to `limit`.
pub fn http_get_within(addr: SocketAddr, path: &str, limit: Duration) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((code, body))
}

/// A blocking RESP client.
#[derive(Debug)]
pub struct RespClient {
    pub stream: TcpStream,
    buf: BytesMut,
    frames: FrameDecoder,
}

impl RespClient {
    pub fn connect(addr: SocketAddr) -> std::io::Result<RespClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        Ok(RespClient {
            stream,
            buf: BytesMut::new(),
            frames: FrameDecoder::default(),
        })
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one reply.
    pub fn read(&mut self) -> std::io::Result<Frame> {
        loop {
            if let Some(f) = self
                .frames
                .decode(&mut self.buf)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?
            {
                return Ok(f);
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> std::io::Result<Frame> {
        let mut out = BytesMut::new();
        encode_request(args, &mut out);
        self.stream.write_all(&out)?;
        self.read()
    }

    /// Like `call`, panicking on I/O errors.
    pub fn cmd(&mut self, args: &[&str]) -> Frame {
        self.call(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Sends several commands at once, then reads every reply.
    pub fn pipeline(&mut self, cmds: &[Vec<String>]) -> std::io::Result<Vec<Frame>> {
        let mut out = BytesMut::new();
        for c in cmds {
            encode_request(c, &mut out);
        }
        self.stream.write_all(&out)?;
        cmds.iter().map(|_| self.read()).collect()
    }
}

/// A blocking memcached client (text protocol).
#[derive(Debug)]
pub struct McClient {
    pub stream: TcpStream,
    buf: BytesMut,
    replies: McReplyDecoder,
}

impl McClient {
    pub fn connect(addr: SocketAddr) -> std::io::Result<McClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        Ok(McClient {
            stream,
            buf: BytesMut::new(),
            replies: McReplyDecoder::default(),
        })
    }

    /// Sends a raw request and reads one reply.
    pub fn call(&mut self, raw: &[u8]) -> std::io::Result<McReply> {
        self.stream.write_all(raw)?;
        self.read()
    }

    /// Reads one reply.
    pub fn read(&mut self) -> std::io::Result<McReply> {
        loop {
            if let Some(r) = self
                .replies
                .decode(&mut self.buf)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?
            {
                return Ok(r);
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The text of a simple, error or bulk reply.
pub fn text(f: &Frame) -> String {
    match f {
        Frame::Simple(b) | Frame::Error(b) | Frame::Bulk(b) => String::from_utf8_lossy(b).into(),
        Frame::Integer(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// A value in a form that is equal when the data is (sets and hashes
/// sorted: their internal order depends on each server's hash seed).
fn canonical_value(c: &mut RespClient, key: &str, ty: &str) -> Vec<String> {
    let items = |f: Frame| match f {
        Frame::Array(v) => v.iter().map(text).collect::<Vec<_>>(),
        other => vec![text(&other)],
    };
    match ty {
        "string" => vec![text(&c.cmd(&["GET", key]))],
        "list" => items(c.cmd(&["LRANGE", key, "0", "-1"])),
        "zset" => items(c.cmd(&["ZRANGE", key, "0", "-1", "WITHSCORES"])),
        "set" => {
            let mut v = items(c.cmd(&["SMEMBERS", key]));
            v.sort();
            v
        }
        "hash" => {
            let flat = items(c.cmd(&["HGETALL", key]));
            let mut pairs: Vec<String> = flat.chunks(2).map(|p| p.join("=")).collect();
            pairs.sort();
            pairs
        }
        _ => match c.cmd(&["DUMP", key]) {
            Frame::Bulk(b) => vec![format!("{b:?}")],
            other => panic!("DUMP {key} answered {other:?}"),
        },
    }
}

/// Everything a Redis backend holds, per database: key → (type, value,
/// absolute expiry in ms or -1).
pub fn redis_snapshot(addr: SocketAddr) -> Vec<(u32, String, String, Vec<String>, i64)> {
    let mut c = RespClient::connect(addr).expect("backend connects");
    let mut all = Vec::new();
    for db in 0..16u32 {
        c.cmd(&["SELECT", &db.to_string()]);
        let keys = match c.cmd(&["KEYS", "*"]) {
            Frame::Array(k) => k,
            other => panic!("KEYS answered {other:?}"),
        };
        for k in keys {
            let key = text(&k);
            let ty = text(&c.cmd(&["TYPE", &key]));
            let value = canonical_value(&mut c, &key, &ty);
            let exp = match c.cmd(&["PEXPIRETIME", &key]) {
                Frame::Integer(i) => i,
                other => panic!("PEXPIRETIME answered {other:?}"),
            };
            all.push((db, key, ty, value, exp));
        }
    }
    all.sort();
    all
}

/// Runs `cmd` to completion with `stdin`, waiting at most `limit`; panics
/// with its output if it does not exit 0. Returns stdout.
pub fn run_ok(cmd: &mut Command, stdin: &[u8], limit: Duration) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} starts: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let input_bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&input_bytes));
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let out = child.wait_with_output().expect("output");
    let _ = done_tx.send(());
    watchdog.join().expect("watchdog");
    writer.join().expect("stdin writer").expect("stdin written");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}, limit {limit:?})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A Python 3 interpreter that can import `module` (Debian's python3-*
/// packages install into /usr/bin/python3's path, which a python3 earlier
/// on PATH may not search), or a panic naming the package to install.
/// The python3 of the virtualenv `scripts/install-deps.sh` makes beside
/// the checkout (`target/test-python`), with redis-py 5, which speaks
/// RESP3 (Debian's redis-py does not).
pub fn python_resp3() -> PathBuf {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-python/bin/python3");
    let ok = Command::new(&py)
        .args([
            "-c",
            "import redis, sys; sys.exit(int(redis.__version__.split('.')[0]) < 5)",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import redis-py 5 or later: run scripts/install-deps.sh, which makes that \
         virtualenv (python3 -m venv target/test-python && target/test-python/bin/pip install \
         redis==5.2.1)",
        py.display()
    );
    py
}

pub fn python_with(module: &str, package: &str) -> PathBuf {
    let mut candidates = vec![PathBuf::from("/usr/bin/python3")];
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        candidates.push(PathBuf::from(dir).join("python3"));
    }
    candidates
        .into_iter()
        .find(|py| {
            py.exists()
                && Command::new(py)
                    .args(["-c", &format!("import {module}")])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        })
        .unwrap_or_else(|| {
            panic!(
                "no python3 can import {module}: run `sudo apt-get install -y {package}` \
                 (scripts/install-deps.sh installs everything the tests need)"
            )
        })
}
