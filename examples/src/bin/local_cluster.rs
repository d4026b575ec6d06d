//! `local-cluster`: a replicated Redis (or memcached) group on this machine
//! in one command. Starts N backends and N `mu-sidecar`s in front of them on
//! free loopback ports, prints how to connect, shows a write on node 1 read
//! back on every other node, then keeps running until Ctrl-C.
//!
//! ```text
//! cargo build --release -p mu-sidecar -p mu-examples && target/release/local-cluster
//! ```

use bytes::BytesMut;
use clap::{Parser, ValueEnum};
use mu_protocols::memcached::{McReply, McReplyDecoder};
use mu_protocols::resp::{encode_request, Frame, FrameDecoder};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    Redis,
    Memcached,
}

/// Starts a local replicated cluster: backends plus mu-sidecars.
#[derive(Parser, Debug)]
#[command(name = "local-cluster")]
struct Cli {
    /// The server to replicate.
    #[arg(long, value_enum, default_value = "redis")]
    backend: Backend,
    /// The fabric between the sidecars.
    #[arg(long, default_value = "shm", value_parser = ["shm", "tcp"])]
    fabric: String,
    /// Nodes in the group.
    #[arg(long, default_value_t = 3)]
    nodes: u8,
    /// Exit after the demonstration instead of running until Ctrl-C.
    #[arg(long)]
    exit_after_demo: bool,
    /// Where the logs go (default: a new temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The group's processes, killed when the demo ends, and the shm group
/// whose shared objects (the killed sidecars leave them) go with them.
struct Procs(Vec<Child>, Option<String>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(group) = &self.1 {
            mu::node::remove_shm_group(std::path::Path::new(SHM_DIR), group);
        }
    }
}

/// Where the sidecars' shm fabric keeps its objects (their default).
const SHM_DIR: &str = "/dev/shm";

/// Ports the group's servers are given: below the kernel's ephemeral
/// range (32768 and up), so no outgoing connection or `bind(0)` elsewhere
/// takes one between this check and the server's own bind; each launcher
/// starts at a random point and never hands out a port twice.
const PORTS: std::ops::Range<u32> = 20_000..32_000;

fn free_addr() -> Result<SocketAddr, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU32::new(rand::random::<u32>()));
    let span = PORTS.end - PORTS.start;
    for _ in 0..span {
        let port = PORTS.start + next.fetch_add(1, Ordering::Relaxed) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().map_err(|e| e.to_string());
        }
    }
    Err(format!("no free loopback port in {PORTS:?}"))
}

fn find(program: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.exists())
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn http_get(http: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(http).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    Some(r)
}

fn ready(http: SocketAddr) -> bool {
    http_get(http, "/readyz").is_some_and(|r| r.split_whitespace().nth(1) == Some("200"))
}

/// A number field of a node's /status.
fn status_field(http: SocketAddr, field: &str) -> Option<u64> {
    let r = http_get(http, "/status")?;
    let at = r.find(&format!("\"{field}\":"))? + field.len() + 3;
    let digits: String = r[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("local-cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let (server, package) = match cli.backend {
        Backend::Redis => ("redis-server", "redis-server redis-tools"),
        Backend::Memcached => ("memcached", "memcached"),
    };
    let server_bin = find(server).ok_or_else(|| {
        format!("{server} is not installed; install it with: sudo apt-get install -y {package}")
    })?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let sidecar = exe.with_file_name("mu-sidecar");
    if !sidecar.exists() {
        return Err(format!(
            "{} not found: build it first with `cargo build --release -p mu-sidecar -p mu-examples`",
            sidecar.display()
        ));
    }
    let dir = match &cli.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("mu-local-cluster-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let n = cli.nodes;
    let addrs = |k: u8| (0..k).map(|_| free_addr()).collect::<Result<Vec<_>, _>>();
    let (backends, listens, https) = (addrs(n)?, addrs(n)?, addrs(n)?);
    let (peers, forwards) = (addrs(n)?, addrs(n)?);
    let join = |v: &[SocketAddr]| {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let group = format!("local-{}", std::process::id());
    let mut procs = Procs(Vec::new(), (cli.fabric == "shm").then(|| group.clone()));
    for b in &backends {
        let port = b.port().to_string();
        let mut cmd = Command::new(&server_bin);
        match cli.backend {
            Backend::Redis => cmd.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""]),
            Backend::Memcached => {
                cmd.args(["-l", "127.0.0.1", "-p", &port, "-U", "0", "-u", "root"])
            }
        };
        procs.0.push(
            cmd.stdout(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {server}: {e}"))?,
        );
    }
    for id in 1..=n {
        let i = usize::from(id - 1);
        let log = std::fs::File::create(dir.join(format!("sidecar-{id}.log")))
            .map_err(|e| e.to_string())?;
        let child = Command::new(&sidecar)
            .args(["--id", &id.to_string(), "--nodes", &n.to_string()])
            .args([
                "--backend-kind",
                &format!("{:?}", cli.backend).to_lowercase(),
            ])
            .args(["--backend", &backends[i].to_string()])
            .args(["--listen", &listens[i].to_string()])
            .args(["--http", &https[i].to_string()])
            .args(["--fabric", &cli.fabric, "--peers", &join(&peers)])
            .args(["--forward-peers", &join(&forwards)])
            .args(["--group", &group, "--shm-dir", SHM_DIR])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", sidecar.display()))?;
        procs.0.push(child);
    }
    for (i, h) in https.iter().enumerate() {
        if !wait_until(Duration::from_secs(30), || ready(*h)) {
            return Err(format!(
                "node {} did not become ready; see {}",
                i + 1,
                dir.join(format!("sidecar-{}.log", i + 1)).display()
            ));
        }
    }
    println!(
        "A {n}-node replicated {server} group is up (fabric {}):",
        cli.fabric
    );
    for i in 0..usize::from(n) {
        println!(
            "  node {}: clients {}  (backend {}, http http://{}/status)",
            i + 1,
            listens[i],
            backends[i],
            https[i]
        );
    }
    println!("Logs: {}", dir.display());
    demo(cli.backend, &listens, &https)?;
    if cli.exit_after_demo {
        return Ok(());
    }
    match cli.backend {
        Backend::Redis => println!(
            "\nTry: redis-cli -p {} set hello world; redis-cli -p {} get hello",
            listens[0].port(),
            listens[listens.len() - 1].port()
        ),
        Backend::Memcached => println!(
            "\nTry: printf 'set hello 0 0 5\\r\\nworld\\r\\n' | nc -q1 127.0.0.1 {}",
            listens[0].port()
        ),
    }
    println!("Press Ctrl-C to stop the group.");
    let mut line = String::new();
    // Runs until the terminal closes or Ctrl-C ends the process (and, with
    // it, the group's processes through their parent's process group).
    while std::io::stdin()
        .read_line(&mut line)
        .map(|r| r > 0)
        .unwrap_or(false)
    {
        line.clear();
    }
    loop {
        std::thread::park();
    }
}

/// Reads are served by each node's own backend: before reading on a node,
/// wait until it applied what the group committed (microseconds, usually).
fn wait_applied(https: &[SocketAddr], i: usize) -> Result<(), String> {
    // Node 1 applied the write before it answered it.
    let commit = status_field(https[0], "backend_applied_index").ok_or("node 1 has no status")?;
    if !wait_until(Duration::from_secs(5), || {
        status_field(https[i], "backend_applied_index").is_some_and(|a| a >= commit)
    }) {
        return Err(format!("node {} did not apply index {commit}", i + 1));
    }
    Ok(())
}

/// Writes on node 1, reads back on every node.
fn demo(backend: Backend, listens: &[SocketAddr], https: &[SocketAddr]) -> Result<(), String> {
    let value = format!("written-on-node-1-at-{}", std::process::id());
    match backend {
        Backend::Redis => {
            let set = resp_call(listens[0], &["SET", "mu:demo", &value])?;
            println!("\nnode 1> SET mu:demo {value}  ->  {set:?}");
            for (i, a) in listens.iter().enumerate().skip(1) {
                wait_applied(https, i)?;
                let got = resp_call(*a, &["GET", "mu:demo"])?;
                println!("node {}> GET mu:demo  ->  {got:?}", i + 1);
                if got != Frame::Bulk(value.clone().into()) {
                    return Err(format!("node {} does not have the write", i + 1));
                }
            }
        }
        Backend::Memcached => {
            let set = mc_call(
                listens[0],
                format!("set mu:demo 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(),
            )?;
            println!("\nnode 1> set mu:demo {value}  ->  {set:?}");
            for (i, a) in listens.iter().enumerate().skip(1) {
                wait_applied(https, i)?;
                let got = mc_call(*a, b"get mu:demo\r\n")?;
                let ok = matches!(&got, McReply::Values(v) if v.len() == 1 && v[0].data == value.as_bytes());
                println!(
                    "node {}> get mu:demo  ->  {}",
                    i + 1,
                    if ok { &value } else { "(missing)" }
                );
                if !ok {
                    return Err(format!("node {} does not have the write: {got:?}", i + 1));
                }
            }
        }
    }
    println!("The write made on node 1 is on every node.");
    Ok(())
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn read_more(s: &mut TcpStream, buf: &mut BytesMut) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    match s.read(&mut chunk) {
        Ok(0) => Err("connection closed".into()),
        Ok(k) => {
            buf.extend_from_slice(&chunk[..k]);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn resp_call(addr: SocketAddr, args: &[&str]) -> Result<Frame, String> {
    let mut s = connect(addr)?;
    let mut out = BytesMut::new();
    encode_request(args, &mut out);
    s.write_all(&out).map_err(|e| e.to_string())?;
    let (mut buf, mut dec) = (BytesMut::new(), FrameDecoder::default());
    loop {
        if let Some(f) = dec.decode(&mut buf).map_err(|e| e.to_string())? {
            return Ok(f);
        }
        read_more(&mut s, &mut buf)?;
    }
}

fn mc_call(addr: SocketAddr, req: &[u8]) -> Result<McReply, String> {
    let mut s = connect(addr)?;
    s.write_all(req).map_err(|e| e.to_string())?;
    let (mut buf, mut dec) = (BytesMut::new(), McReplyDecoder::default());
    loop {
        if let Some(r) = dec.decode(&mut buf).map_err(|e| e.to_string())? {
            return Ok(r);
        }
        read_more(&mut s, &mut buf)?;
    }
}
