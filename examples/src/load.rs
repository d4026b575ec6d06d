//! Closed-loop load generators for the Mu artifact's REDIS and MEMCACHED
//! experiments: `redis-{puts-only,gets-only,puts-gets}` and
//! `memcached-{puts-only,gets-only,puts-gets}`, with the artifact's
//! arguments `<key_size> <value_size> <host> <port>`.
//!
//! One connection; `--outstanding` requests in flight (1 by default, as the
//! artifact's clients). Each request's latency, from writing it to reading
//! its reply, in ns, goes one per line to `redis-cli.txt` /
//! `memcached-cli.txt` (the artifact's names; `--out` changes it); a summary
//! with percentiles goes to stdout.
//!
//! What each workload sends, as the artifact's clients:
//! - puts-only: `SET` / `set` of a random key of the key space;
//! - gets-only: first `SET`s every key once (untimed, pipelined), then
//!   `GET` / `get` of random keys;
//! - puts-gets: the same preload, then `GET` and `SET` alternately (even
//!   requests read, odd ones write).
//!
//! Only successful requests are timed into the file: a reply that is an
//! error (`-TRYAGAIN`, `-ERR`, `SERVER_ERROR`, ...) or not the expected
//! kind is counted by its first word and reported, and the tool then exits
//! with a failure status. A get that finds nothing (`$-1`, a bare `END`) is
//! a success counted as a miss.

use bytes::BytesMut;
use clap::{Args, FromArgMatches};
use mu_protocols::memcached::{McReply, McReplyDecoder};
use mu_protocols::resp::{encode_request, Frame, FrameDecoder};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Requests of a run when neither `--requests` nor `--duration` is given:
/// the artifact's clients take 500 K samples.
pub const DEFAULT_REQUESTS: u64 = 500_000;

/// Most requests in flight: `--outstanding` above this is refused, so the
/// requests and replies in flight fit the sockets' buffers of one
/// single-threaded connection.
pub const OUTSTANDING_MAX: u32 = 1024;

/// Requests in flight while preloading the key space (untimed).
const PRELOAD_OUTSTANDING: u32 = 64;

/// How long a reply may take before the run fails: a server that stopped
/// answering ends the run with an error instead of a hang.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server protocol the generator speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// RESP `SET` / `GET`.
    Redis,
    /// memcached text protocol `set` / `get`.
    Memcached,
}

/// What the run sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Writes only.
    PutsOnly,
    /// Reads only, after preloading the key space.
    GetsOnly,
    /// Reads and writes alternately, after preloading the key space.
    PutsGets,
}

/// One of the six experiments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The protocol.
    pub backend: Backend,
    /// The request mix.
    pub mix: Mix,
}

impl Workload {
    /// The artifact's name of the workload, e.g. `redis-puts-only`.
    pub fn name(self) -> &'static str {
        match (self.backend, self.mix) {
            (Backend::Redis, Mix::PutsOnly) => "redis-puts-only",
            (Backend::Redis, Mix::GetsOnly) => "redis-gets-only",
            (Backend::Redis, Mix::PutsGets) => "redis-puts-gets",
            (Backend::Memcached, Mix::PutsOnly) => "memcached-puts-only",
            (Backend::Memcached, Mix::GetsOnly) => "memcached-gets-only",
            (Backend::Memcached, Mix::PutsGets) => "memcached-puts-gets",
        }
    }

    /// The default latency file, as the artifact's clients name it.
    pub fn default_out(self) -> &'static str {
        match self.backend {
            Backend::Redis => "redis-cli.txt",
            Backend::Memcached => "memcached-cli.txt",
        }
    }

    /// The workload of request number `i` (0-based) of the timed run.
    fn op(self, i: u64) -> Op {
        match self.mix {
            Mix::PutsOnly => Op::Put,
            Mix::GetsOnly => Op::Get,
            Mix::PutsGets if i.is_multiple_of(2) => Op::Get,
            Mix::PutsGets => Op::Put,
        }
    }
}

/// The arguments every generator takes.
#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// Bytes per key (keys are zero-padded decimal numbers of the key space).
    pub key_size: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// The server (or sidecar) host.
    pub host: String,
    /// The server (or sidecar) port.
    pub port: u16,
    /// Requests in flight on the connection (pipelining); 1 is the
    /// artifact's closed loop.
    #[arg(long, default_value_t = 1)]
    pub outstanding: u32,
    /// Timed requests to send (default 500000 unless --duration is given;
    /// with both, the run ends at whichever comes first).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Seconds to run for (decimals allowed).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Distinct keys the requests pick from, uniformly at random.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// File of per-request latencies in ns, one per line (default
    /// redis-cli.txt or memcached-cli.txt in the working directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the key choice, so runs are repeatable.
    #[arg(long, default_value_t = 997)]
    pub seed: u64,
}

impl LoadArgs {
    /// Checks what clap cannot: sizes, key space and limits.
    pub fn validate(&self, backend: Backend) -> Result<(), String> {
        if self.key_size == 0 {
            return Err("key_size must be at least 1".into());
        }
        if backend == Backend::Memcached && self.key_size > 250 {
            return Err("memcached keys are at most 250 bytes".into());
        }
        if self.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        let digits = (self.keys - 1)
            .checked_ilog10()
            .map_or(1, |d| d as usize + 1);
        if digits > self.key_size {
            return Err(format!(
                "{} keys need keys of at least {digits} bytes (key_size is {})",
                self.keys, self.key_size
            ));
        }
        if self.outstanding == 0 || self.outstanding > OUTSTANDING_MAX {
            return Err(format!("--outstanding must be 1..={OUTSTANDING_MAX}"));
        }
        if let Some(d) = self.duration {
            if !(d > 0.0 && d.is_finite()) {
                return Err("--duration must be a positive number of seconds".into());
            }
        }
        Ok(())
    }

    fn requests_limit(&self) -> u64 {
        match (self.requests, self.duration) {
            (Some(n), _) => n,
            (None, Some(_)) => u64::MAX,
            (None, None) => DEFAULT_REQUESTS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Put,
    Get,
}

/// How a reply ended its request.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// A write acknowledged (`+OK`, `STORED`).
    Stored,
    /// A read that found the key.
    Hit,
    /// A read that found nothing.
    Miss,
    /// An error reply, or a reply of the wrong kind: the whole line.
    Error(String),
}

/// One connection speaking the backend's protocol.
struct Conn {
    stream: TcpStream,
    backend: Backend,
    inbuf: BytesMut,
    out: BytesMut,
    resp: FrameDecoder,
    mc: McReplyDecoder,
}

impl Conn {
    fn connect(backend: Backend, host: &str, port: u16) -> Result<Conn, String> {
        let addrs: Vec<_> = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
            .collect();
        let mut last = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, Duration::from_secs(5)) {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(|e| e.to_string())?;
                    stream
                        .set_read_timeout(Some(REPLY_TIMEOUT))
                        .map_err(|e| e.to_string())?;
                    return Ok(Conn {
                        stream,
                        backend,
                        inbuf: BytesMut::with_capacity(64 << 10),
                        out: BytesMut::with_capacity(64 << 10),
                        resp: FrameDecoder::default(),
                        mc: McReplyDecoder::default(),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(format!(
            "cannot connect to {host}:{port}: {} (is the sidecar or server running?)",
            last.map_or("no address".into(), |e| e.to_string())
        ))
    }

    /// Appends one request to the output buffer.
    fn queue(&mut self, op: Op, key: &[u8], value: &[u8]) {
        match (self.backend, op) {
            (Backend::Redis, Op::Put) => encode_request(&[&b"SET"[..], key, value], &mut self.out),
            (Backend::Redis, Op::Get) => encode_request(&[&b"GET"[..], key], &mut self.out),
            (Backend::Memcached, Op::Put) => {
                self.out.extend_from_slice(b"set ");
                self.out.extend_from_slice(key);
                self.out
                    .extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
                self.out.extend_from_slice(value);
                self.out.extend_from_slice(b"\r\n");
            }
            (Backend::Memcached, Op::Get) => {
                self.out.extend_from_slice(b"get ");
                self.out.extend_from_slice(key);
                self.out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Sends everything queued.
    fn flush(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.stream
            .write_all(&self.out)
            .map_err(|e| format!("sending requests: {e}"))?;
        self.out.clear();
        Ok(())
    }

    /// Reads the next reply and says what it means for a request `op`.
    fn reply(&mut self, op: Op) -> Result<Outcome, String> {
        loop {
            let decoded = match self.backend {
                Backend::Redis => self
                    .resp
                    .decode(&mut self.inbuf)
                    .map(|f| f.map(|f| redis_outcome(op, f))),
                Backend::Memcached => self
                    .mc
                    .decode(&mut self.inbuf)
                    .map(|r| r.map(|r| memcached_outcome(op, r))),
            };
            match decoded {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => {}
                Err(e) => return Err(format!("malformed reply from the server: {e}")),
            }
            let mut chunk = [0u8; 64 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(format!("no reply within {REPLY_TIMEOUT:?}"))
                }
                Err(e) => return Err(format!("reading replies: {e}")),
            }
        }
    }
}

fn redis_outcome(op: Op, f: Frame) -> Outcome {
    match (op, f) {
        (Op::Put, Frame::Simple(s)) if &s[..] == b"OK" => Outcome::Stored,
        (Op::Get, Frame::Bulk(_)) => Outcome::Hit,
        (Op::Get, Frame::NullBulk | Frame::Null) => Outcome::Miss,
        (_, Frame::Error(e) | Frame::BulkError(e)) => {
            Outcome::Error(String::from_utf8_lossy(&e).into_owned())
        }
        (op, other) => Outcome::Error(format!("UNEXPECTED reply to {op:?}: {other:?}")),
    }
}

fn memcached_outcome(op: Op, r: McReply) -> Outcome {
    let text = |word: &str, m: &[u8]| format!("{word} {}", String::from_utf8_lossy(m));
    match (op, r) {
        (Op::Put, McReply::Stored) => Outcome::Stored,
        (Op::Get, McReply::Values(v)) if v.is_empty() => Outcome::Miss,
        (Op::Get, McReply::Values(v)) if v.len() == 1 => Outcome::Hit,
        (_, McReply::ServerError(m)) => Outcome::Error(text("SERVER_ERROR", &m)),
        (_, McReply::ClientError(m)) => Outcome::Error(text("CLIENT_ERROR", &m)),
        (_, McReply::Error(m)) => Outcome::Error(text("ERROR", &m)),
        (op, other) => Outcome::Error(format!("UNEXPECTED reply to {op:?}: {other:?}")),
    }
}

/// The key of number `i`: zero-padded decimal, `size` bytes.
fn key(i: u64, size: usize) -> Vec<u8> {
    format!("{i:0>size$}").into_bytes()
}

/// A value of `size` random letters and digits (fixed for the run).
fn value(size: usize, rng: &mut SmallRng) -> Vec<u8> {
    const CHARSET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..size)
        .map(|_| CHARSET[rng.gen_range(0..CHARSET.len())])
        .collect()
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Report {
    /// Latency in ns of each successful timed request, in completion order.
    pub latencies: Vec<u64>,
    /// Timed requests that got a reply (successful or not).
    pub requests: u64,
    /// Successful writes, preload included (each one is a replicated
    /// write on a sidecar).
    pub writes_ok: u64,
    /// Reads that found their key.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Error replies by first word: count and the first full message.
    pub errors: BTreeMap<String, (u64, String)>,
    /// Wall time of the timed part.
    pub elapsed: Duration,
}

impl Report {
    /// Error replies in total.
    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|(n, _)| n).sum()
    }

    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Stored => self.writes_ok += 1,
            Outcome::Hit => self.hits += 1,
            Outcome::Miss => self.misses += 1,
            Outcome::Error(m) => {
                let word = m.split_whitespace().next().unwrap_or("(empty)").to_string();
                let e = self.errors.entry(word).or_insert((0, m.clone()));
                e.0 += 1;
            }
        }
    }
}

/// The nearest-rank percentile `p` (0..=1) of sorted `samples`; 0 if empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `p50 .. p90 .. p99 .. p99.9 .. max ..` of sorted samples.
pub fn percentiles(sorted: &[u64]) -> String {
    format!(
        "p50 {} p90 {} p99 {} p99.9 {} max {}",
        percentile(sorted, 0.5),
        percentile(sorted, 0.9),
        percentile(sorted, 0.99),
        percentile(sorted, 0.999),
        sorted.last().copied().unwrap_or(0)
    )
}

/// Reads a file of latencies in ns, one per line (blank lines skipped:
/// the artifact's files end with one), such as `redis-cli.txt` or a
/// sidecar's `dump-<id>.txt`, and describes them in one line.
pub fn stats(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut samples = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            l.trim()
                .parse::<u64>()
                .map_err(|_| format!("{}:{}: {l:?} is not a number of ns", path.display(), i + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    samples.sort_unstable();
    let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / samples.len().max(1) as f64;
    Ok(format!(
        "{}: {} samples, mean {mean:.0} ns; latency ns: {}",
        path.display(),
        samples.len(),
        percentiles(&samples)
    ))
}

/// Sets every key of the key space once, `PRELOAD_OUTSTANDING` deep;
/// fails on the first error reply (a read run on missing data measures
/// nothing useful).
fn preload(
    conn: &mut Conn,
    args: &LoadArgs,
    value: &[u8],
    report: &mut Report,
) -> Result<(), String> {
    let mut in_flight = 0u32;
    let mut next = 0u64;
    let mut done = 0u64;
    while done < args.keys {
        while in_flight < PRELOAD_OUTSTANDING && next < args.keys {
            conn.queue(Op::Put, &key(next, args.key_size), value);
            next += 1;
            in_flight += 1;
        }
        conn.flush()?;
        match conn.reply(Op::Put)? {
            Outcome::Stored => report.writes_ok += 1,
            other => {
                return Err(format!(
                    "preloading key {done} of {}: {other:?} ({} keys stored before)",
                    args.keys, report.writes_ok
                ))
            }
        }
        in_flight -= 1;
        done += 1;
    }
    Ok(())
}

/// Prints progress on stderr: a line rewritten twice a second on a
/// terminal, else a line every 10 s.
struct Progress {
    tty: bool,
    next: Instant,
    limit: u64,
}

impl Progress {
    fn new(limit: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress {
            tty,
            next: Instant::now() + Self::every(tty),
            limit,
        }
    }

    fn every(tty: bool) -> Duration {
        if tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        }
    }

    fn tick(&mut self, now: Instant, started: Instant, report: &Report) {
        if now < self.next {
            return;
        }
        self.next = now + Self::every(self.tty);
        let secs = now.duration_since(started).as_secs_f64();
        let of = if self.limit == u64::MAX {
            String::new()
        } else {
            format!("/{}", self.limit)
        };
        let line = format!(
            "{}{of} requests, {:.0} req/s, {} errors, {secs:.0} s",
            report.requests,
            report.requests as f64 / secs.max(1e-9),
            report.error_count()
        );
        if self.tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.tty {
            eprint!("\r{:60}\r", "");
        }
    }
}

/// Runs `workload` as `args` say: connects, preloads if the workload
/// reads, then sends the timed requests.
pub fn run(workload: Workload, args: &LoadArgs) -> Result<Report, String> {
    args.validate(workload.backend)?;
    let mut conn = Conn::connect(workload.backend, &args.host, args.port)?;
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let value = value(args.value_size, &mut rng);
    let mut report = Report::default();
    if workload.mix != Mix::PutsOnly {
        preload(&mut conn, args, &value, &mut report)?;
    }
    let limit = args.requests_limit();
    let deadline = args.duration.map(Duration::from_secs_f64);
    let mut in_flight: VecDeque<(Instant, Op)> = VecDeque::with_capacity(args.outstanding as usize);
    report
        .latencies
        .reserve(limit.min(DEFAULT_REQUESTS * 2) as usize);
    let mut progress = Progress::new(limit);
    let started = Instant::now();
    let mut issued = 0u64;
    let mut open = true;
    loop {
        let mut batch = 0;
        while open && in_flight.len() < args.outstanding as usize && issued < limit {
            let op = workload.op(issued);
            let k = key(rng.gen_range(0..args.keys), args.key_size);
            conn.queue(op, &k, &value);
            in_flight.push_back((Instant::now(), op));
            issued += 1;
            batch += 1;
        }
        if batch > 0 {
            // The batch's requests leave together; time them from here.
            let now = Instant::now();
            let len = in_flight.len();
            for slot in in_flight.iter_mut().skip(len - batch) {
                slot.0 = now;
            }
            conn.flush()?;
        }
        let Some((sent, op)) = in_flight.pop_front() else {
            break;
        };
        let outcome = conn.reply(op)?;
        let now = Instant::now();
        report.requests += 1;
        if !matches!(outcome, Outcome::Error(_)) {
            report
                .latencies
                .push(now.duration_since(sent).as_nanos() as u64);
        }
        report.count(&outcome);
        if deadline.is_some_and(|d| now.duration_since(started) >= d) {
            open = false;
        }
        progress.tick(now, started, &report);
    }
    report.elapsed = started.elapsed();
    progress.finish();
    Ok(report)
}

/// Writes the latencies, one per line.
fn write_latencies(path: &PathBuf, latencies: &[u64]) -> Result<(), String> {
    let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    for l in latencies {
        writeln!(w, "{l}").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    w.flush().map_err(|e| format!("{}: {e}", path.display()))
}

/// The summary printed after a run.
pub fn summary(workload: Workload, args: &LoadArgs, report: &Report, out: &str) -> String {
    let mut sorted = report.latencies.clone();
    sorted.sort_unstable();
    let secs = report.elapsed.as_secs_f64();
    let mut s = format!(
        "{} against {}:{}: key {} B, value {} B, {} outstanding, {} keys\n",
        workload.name(),
        args.host,
        args.port,
        args.key_size,
        args.value_size,
        args.outstanding,
        args.keys
    );
    s += &format!(
        "requests {} in {secs:.3} s: ok {}, errors {}; writes ok {} (preload included); gets: {} hits, {} misses\n",
        report.requests,
        report.latencies.len(),
        report.error_count(),
        report.writes_ok,
        report.hits,
        report.misses
    );
    for (word, (n, first)) in &report.errors {
        s += &format!("  error {word}: {n} (first: {first})\n");
    }
    s += &format!(
        "throughput {:.0} requests/s\n",
        report.latencies.len() as f64 / secs.max(1e-9)
    );
    s += &format!("latency ns: {}\n", percentiles(&sorted));
    s += &format!(
        "{} latencies (ns, successful requests only) written to {out}",
        sorted.len()
    );
    s
}

/// Runs `workload`, writes the latency file and prints the summary. Exit
/// status: success, or failure when the run could not finish or any
/// request got an error reply (the summary says which).
pub fn main_with(workload: Workload, args: &LoadArgs) -> ExitCode {
    let report = match run(workload, args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", workload.name());
            return ExitCode::FAILURE;
        }
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(workload.default_out()));
    if let Err(e) = write_latencies(&out, &report.latencies) {
        eprintln!("{}: {e}", workload.name());
        return ExitCode::FAILURE;
    }
    println!(
        "{}",
        summary(workload, args, &report, &out.display().to_string())
    );
    if report.error_count() > 0 {
        eprintln!(
            "{}: {} requests got an error reply",
            workload.name(),
            report.error_count()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `main` of a single-workload command named as the artifact's clients
/// (`redis-puts-only 8 30 127.0.0.1 7379`).
pub fn alias_main(workload: Workload) -> ExitCode {
    let cmd = LoadArgs::augment_args(
        clap::Command::new(workload.name())
            .about(format!("`mu-load {}`: see mu-load --help", workload.name())),
    );
    let args = LoadArgs::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit());
    main_with(workload, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&s, 0.5), 500);
        assert_eq!(percentile(&s, 0.9), 900);
        assert_eq!(percentile(&s, 0.99), 990);
        assert_eq!(percentile(&s, 0.999), 999);
        assert_eq!(percentile(&s, 1.0), 1000);
        assert_eq!(percentile(&[7], 0.999), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn keys_have_the_asked_size_and_the_space_must_fit() {
        assert_eq!(key(42, 8), b"00000042");
        let mut a = LoadArgs {
            key_size: 2,
            value_size: 1,
            host: "h".into(),
            port: 1,
            outstanding: 1,
            requests: None,
            duration: None,
            keys: 100,
            out: None,
            seed: 1,
        };
        assert!(a.validate(Backend::Redis).is_ok());
        a.keys = 101;
        assert!(a
            .validate(Backend::Redis)
            .unwrap_err()
            .contains("at least 3 bytes"));
        a.keys = 1;
        a.key_size = 251;
        assert!(a.validate(Backend::Memcached).is_err());
    }

    #[test]
    fn replies_are_classified_and_errors_never_count_as_success() {
        use bytes::Bytes;
        assert_eq!(
            redis_outcome(Op::Put, Frame::Simple(Bytes::from("OK"))),
            Outcome::Stored
        );
        assert_eq!(
            redis_outcome(Op::Get, Frame::Bulk(Bytes::from("v"))),
            Outcome::Hit
        );
        assert_eq!(redis_outcome(Op::Get, Frame::NullBulk), Outcome::Miss);
        assert_eq!(
            redis_outcome(Op::Put, Frame::Error(Bytes::from("TRYAGAIN no leader"))),
            Outcome::Error("TRYAGAIN no leader".into())
        );
        assert!(matches!(
            redis_outcome(Op::Put, Frame::Bulk(Bytes::from("OK"))),
            Outcome::Error(_)
        ));
        assert_eq!(memcached_outcome(Op::Put, McReply::Stored), Outcome::Stored);
        assert_eq!(
            memcached_outcome(Op::Get, McReply::Values(vec![])),
            Outcome::Miss
        );
        assert_eq!(
            memcached_outcome(Op::Put, McReply::ServerError(Bytes::from("busy"))),
            Outcome::Error("SERVER_ERROR busy".into())
        );
        assert!(matches!(
            memcached_outcome(Op::Put, McReply::NotStored),
            Outcome::Error(_)
        ));
        let mut r = Report::default();
        r.count(&Outcome::Error("TRYAGAIN a".into()));
        r.count(&Outcome::Error("TRYAGAIN b".into()));
        r.count(&Outcome::Stored);
        assert_eq!(r.error_count(), 2);
        assert_eq!(r.errors["TRYAGAIN"], (2, "TRYAGAIN a".into()));
        assert_eq!(r.writes_ok, 1);
    }

    #[test]
    fn stats_reads_a_latency_file_and_names_a_bad_line() {
        let dir = std::env::temp_dir().join(format!("mu-load-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("lat.txt");
        std::fs::write(&p, "30\n10\n20\n\n").unwrap();
        let line = stats(&p).unwrap();
        assert!(
            line.ends_with(
                ": 3 samples, mean 20 ns; latency ns: p50 20 p90 30 p99 30 p99.9 30 max 30"
            ),
            "{line}"
        );
        std::fs::write(&p, "30\n1.5 us\n").unwrap();
        assert!(stats(&p)
            .unwrap_err()
            .contains("lat.txt:2: \"1.5 us\" is not a number of ns"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn puts_gets_alternates_reads_and_writes() {
        let w = Workload {
            backend: Backend::Redis,
            mix: Mix::PutsGets,
        };
        assert_eq!(
            (0..4).map(|i| w.op(i)).collect::<Vec<_>>(),
            [Op::Get, Op::Put, Op::Get, Op::Put]
        );
    }
}
