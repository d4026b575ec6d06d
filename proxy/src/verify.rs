//! On-demand comparison of every replica's data, key by key (`GET
//! /verify` on any node).
//!
//! Each node digests every key's *logical* value (Redis: by type, e.g. a
//! set's sorted members, and its absolute expiry; memcached: value and
//! flags), not its stored encoding, which may legitimately differ (a copy
//! loaded by a state transfer is re-encoded). The digests are folded into
//! a fixed number of buckets by key, so the first pass costs the same
//! small memory whatever the data size; only buckets that differ between
//! nodes are listed key by key in a second pass.
//!
//! Writes go on meanwhile, and each node applies them at its own pace, so
//! a key written during the comparison may differ for a moment. Each node
//! tracks the keys its applier writes from before its first pass until
//! it has applied everything that was committed when the last pass ended
//! everywhere; a key on any node's list is reported as *changed during the
//! check*, not as a difference. Any other difference is real: a node that
//! read a key before applying a write to it and a node that read it after
//! both applied that write while tracking.
//!
//! Wire format on the peer port (mode byte `V`); the session's tracking
//! starts when the connection opens (the node answers one byte, 1, once it
//! tracks) and ends when it closes:
//! ```text
//! 1 (pass 1)          → u64 keys, BUCKETS × u64 bucket digests
//! 2 u32 n, n × u32    → for each key in those buckets: u32 db, u32 len,
//!   (buckets)            key, u64 digest; then u32 0xFFFF_FFFF
//! 3 u64 index         → waits until this node applied `index`, then
//!                        u8 wholesale, u32 n, n × (u32 db, u32 len, key)
//! ```

use crate::apply::{frame_text, BackendConn};
use crate::config::BackendKind;
use crate::state::Shared;
use crate::transfer::{put_bytes, read_bytes as read_key, read_u32, read_u64, DirtyKey};
use bytes::{Bytes, BytesMut};
use mu::NodeId;
use mu_protocols::memcached::{McReply, MetaStatus};
use mu_protocols::resp::{encode_request, Frame};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Buckets of the first pass.
pub const BUCKETS: usize = 4096;
/// Keys per pipelined round trip.
const PAGE: usize = 256;
/// How long a node may take to apply up to the index asked for.
const CATCH_UP: Duration = Duration::from_secs(30);
/// Most differing keys listed in a report.
const MAX_LISTED: usize = 1000;
const END_OF_KEYS: u32 = u32::MAX;

fn bucket_of(db: u32, key: &[u8]) -> usize {
    (xxh3_64_with_seed(key, u64::from(db)) % BUCKETS as u64) as usize
}

/// Digests of a page of keys of database `db` (`None`: the key is gone).
fn redis_digests(d: &mut BackendConn, db: u32, keys: &[Bytes]) -> Result<Vec<Option<u64>>, String> {
    let mut out = BytesMut::new();
    encode_request(&[&b"SELECT"[..], db.to_string().as_bytes()], &mut out);
    for k in keys {
        encode_request(&[&b"TYPE"[..], k], &mut out);
    }
    d.send(&out)?;
    let sel = d.read_frame()?;
    if sel.is_error() {
        return Err(format!("SELECT {db}: {}", frame_text(&sel)));
    }
    let mut types = Vec::with_capacity(keys.len());
    for _ in keys {
        types.push(match d.read_frame()? {
            Frame::Simple(t) => t,
            other => return Err(format!("TYPE answered {}", frame_text(&other))),
        });
    }
    out.clear();
    for (k, t) in keys.iter().zip(&types) {
        let args: Vec<&[u8]> = match &t[..] {
            b"string" => vec![b"GET", k],
            b"list" => vec![b"LRANGE", k, b"0", b"-1"],
            b"set" => vec![b"SMEMBERS", k],
            b"zset" => vec![b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"],
            b"hash" => vec![b"HGETALL", k],
            b"stream" => vec![b"XRANGE", k, b"-", b"+"],
            _ => vec![b"DUMP", k],
        };
        encode_request(&args, &mut out);
        encode_request(&[&b"PEXPIRETIME"[..], k], &mut out);
    }
    d.send(&out)?;
    let mut digests = Vec::with_capacity(keys.len());
    for t in &types {
        let value = d.read_frame()?;
        let exp = d.read_frame()?;
        if &t[..] == b"none" || matches!(value, Frame::NullBulk | Frame::Null) {
            digests.push(None);
            continue;
        }
        let mut canon = BytesMut::new();
        canon.extend_from_slice(t);
        let value = match (&t[..], value) {
            // Unordered collections: compare their members in order.
            (b"set", Frame::Array(mut members) | Frame::Set(mut members)) => {
                members.sort_by_key(frame_bytes);
                Frame::Array(members)
            }
            (b"hash", Frame::Array(flat)) => {
                let mut pairs: Vec<(Bytes, Bytes)> = flat
                    .chunks(2)
                    .map(|p| {
                        (
                            frame_bytes(&p[0]),
                            p.get(1).map(frame_bytes).unwrap_or_default(),
                        )
                    })
                    .collect();
                pairs.sort();
                Frame::Array(
                    pairs
                        .into_iter()
                        .flat_map(|(a, b)| [Frame::Bulk(a), Frame::Bulk(b)])
                        .collect(),
                )
            }
            (_, v) => v,
        };
        value.encode(&mut canon);
        exp.encode(&mut canon);
        digests.push(Some(xxh3_64(&canon)));
    }
    Ok(digests)
}

fn frame_bytes(f: &Frame) -> Bytes {
    let mut b = BytesMut::new();
    f.encode(&mut b);
    b.freeze()
}

/// Digests of a page of memcached keys.
fn memcached_digests(d: &mut BackendConn, keys: &[Bytes]) -> Result<Vec<Option<u64>>, String> {
    let mut out = BytesMut::new();
    for k in keys {
        out.extend_from_slice(b"mg ");
        out.extend_from_slice(k);
        out.extend_from_slice(b" v f\r\n");
    }
    d.send(&out)?;
    let mut digests = Vec::with_capacity(keys.len());
    for _ in keys {
        match d.read_mc()? {
            McReply::Meta(m) if m.status == MetaStatus::Va => {
                let mut canon = Vec::new();
                for t in &m.tokens {
                    canon.extend_from_slice(t);
                    canon.push(b' ');
                }
                canon.extend_from_slice(&m.data.unwrap_or_default());
                digests.push(Some(xxh3_64(&canon)));
            }
            McReply::Meta(m) if m.status == MetaStatus::En => digests.push(None),
            other => return Err(format!("mg answered {other:?}")),
        }
    }
    Ok(digests)
}

/// Calls `each(db, keys)` for every page of keys the backend holds.
fn scan(
    shared: &Shared,
    mut each: impl FnMut(&mut BackendConn, u32, Vec<Bytes>) -> Result<(), String>,
) -> Result<(), String> {
    let (mut d, _) = BackendConn::connect(shared)?;
    match shared.opts.backend_kind {
        BackendKind::Redis => {
            let (mut s, _) = BackendConn::connect(shared)?;
            for db in 0..shared.opts.databases {
                let r = s.call_redis(&[b"SELECT", db.to_string().as_bytes()])?;
                if r.is_error() {
                    break;
                }
                let mut cursor = Bytes::from_static(b"0");
                loop {
                    let reply = s.call_redis(&[b"SCAN", &cursor, b"COUNT", b"256"])?;
                    let Frame::Array(mut parts) = reply else {
                        return Err(format!("SCAN answered {}", frame_text(&reply)));
                    };
                    let (Some(Frame::Array(keys)), Some(Frame::Bulk(next))) =
                        (parts.pop(), parts.pop())
                    else {
                        return Err("SCAN answered an unexpected shape".into());
                    };
                    let keys = keys
                        .into_iter()
                        .filter_map(|k| match k {
                            Frame::Bulk(k) => Some(k),
                            _ => None,
                        })
                        .collect();
                    each(&mut d, db, keys)?;
                    if &next[..] == b"0" {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        BackendKind::Memcached => {
            crate::transfer::memcached_pages(shared, PAGE, |page| each(&mut d, 0, page))?;
        }
    }
    Ok(())
}

fn digests(
    shared: &Shared,
    d: &mut BackendConn,
    db: u32,
    keys: &[Bytes],
) -> Result<Vec<Option<u64>>, String> {
    match shared.opts.backend_kind {
        BackendKind::Redis => redis_digests(d, db, keys),
        BackendKind::Memcached => memcached_digests(d, keys),
    }
}

/// The first pass: key count and bucket digests.
fn pass1(shared: &Shared) -> Result<(u64, Vec<u64>), String> {
    let mut buckets = vec![0u64; BUCKETS];
    let mut count = 0u64;
    scan(shared, |d, db, keys| {
        for page in keys.chunks(PAGE) {
            for (k, dg) in page.iter().zip(digests(shared, d, db, page)?) {
                if let Some(dg) = dg {
                    let b = bucket_of(db, k);
                    buckets[b] ^= xxh3_64_with_seed(&dg.to_le_bytes(), xxh3_64(k) ^ u64::from(db));
                    count += 1;
                }
            }
        }
        Ok(())
    })?;
    Ok((count, buckets))
}

/// The second pass: every key of `wanted` buckets with its digest.
fn pass2(
    shared: &Shared,
    wanted: &HashSet<usize>,
    mut each: impl FnMut(u32, &Bytes, u64) -> Result<(), String>,
) -> Result<(), String> {
    scan(shared, |d, db, keys| {
        let keys: Vec<Bytes> = keys
            .into_iter()
            .filter(|k| wanted.contains(&bucket_of(db, k)))
            .collect();
        for page in keys.chunks(PAGE) {
            for (k, dg) in page.iter().zip(digests(shared, d, db, page)?) {
                if let Some(dg) = dg {
                    each(db, k, dg)?;
                }
            }
        }
        Ok(())
    })
}

fn wait_applied(shared: &Shared, index: u64) -> Result<(), String> {
    #[allow(clippy::disallowed_methods, reason = "a bounded wait")]
    let until = Instant::now() + CATCH_UP;
    while shared.backend.applied() < index {
        if Instant::now() >= until {
            return Err(format!(
                "this node did not apply up to index {index} within {CATCH_UP:?} (applied {})",
                shared.backend.applied()
            ));
        }
        // The applier publishes its index per batch; nothing to await.
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn err(e: String) -> io::Error {
    io::Error::other(e)
}

fn put_key(out: &mut impl Write, db: u32, key: &[u8]) -> io::Result<()> {
    out.write_all(&db.to_le_bytes())?;
    put_bytes(out, key)
}

/// Serves one verification session on a peer connection (after the mode
/// byte).
pub fn serve(shared: &Shared, sock: TcpStream) -> io::Result<()> {
    let mut rd = BufReader::new(sock.try_clone()?);
    let mut out = BufWriter::new(sock);
    let tracker = shared.transfer.track(CATCH_UP).map_err(err)?;
    out.write_all(&[1])?;
    out.flush()?;
    loop {
        let mut cmd = [0u8; 1];
        if rd.read_exact(&mut cmd).is_err() {
            return Ok(());
        }
        match cmd[0] {
            1 => {
                let (count, buckets) = pass1(shared).map_err(err)?;
                out.write_all(&count.to_le_bytes())?;
                for b in buckets {
                    out.write_all(&b.to_le_bytes())?;
                }
            }
            2 => {
                let n = read_u32(&mut rd)?;
                let mut wanted = HashSet::new();
                for _ in 0..n.min(BUCKETS as u32) {
                    wanted.insert(read_u32(&mut rd)? as usize);
                }
                pass2(shared, &wanted, |db, k, dg| {
                    put_key(&mut out, db, k)
                        .and_then(|_| out.write_all(&dg.to_le_bytes()))
                        .map_err(|e| e.to_string())
                })
                .map_err(err)?;
                out.write_all(&END_OF_KEYS.to_le_bytes())?;
            }
            3 => {
                let index = read_u64(&mut rd)?;
                wait_applied(shared, index).map_err(err)?;
                let dirty = tracker.take();
                out.write_all(&[u8::from(dirty.wholesale.is_some())])?;
                out.write_all(&(dirty.keys.len() as u32).to_le_bytes())?;
                for (db, k) in &dirty.keys {
                    put_key(&mut out, *db, k)?;
                }
            }
            c => return Err(err(format!("unknown verify command {c}"))),
        }
        out.flush()?;
    }
}

/// One node's side of a verification, seen from the coordinator.
struct Session {
    node: u8,
    rd: BufReader<TcpStream>,
    wr: BufWriter<TcpStream>,
}

impl Session {
    fn open(shared: &Shared, to: NodeId) -> Result<Session, String> {
        let what = |e: io::Error| format!("node {}: {e}", to.0 + 1);
        let addr = shared
            .forward
            .peer_addr(to)
            .ok_or_else(|| format!("no peer address for node {}", to.0 + 1))?;
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(what)?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(what)?;
        let key = crate::forward::key(&shared.opts.mu.secret);
        mu::fabric::tcp::wire::client_handshake(&mut sock, &key, NodeId(shared.opts.id - 1), to)
            .map_err(what)?;
        sock.write_all(&[crate::forward::MODE_VERIFY])
            .map_err(what)?;
        // A scan of a large backend takes as long as it takes.
        sock.set_read_timeout(Some(Duration::from_secs(3600)))
            .map_err(what)?;
        let mut s = Session {
            node: to.0 + 1,
            rd: BufReader::new(sock.try_clone().map_err(what)?),
            wr: BufWriter::new(sock),
        };
        let mut ok = [0u8; 1];
        s.rd.read_exact(&mut ok).map_err(what)?;
        Ok(s)
    }

    fn fail(&self, e: io::Error) -> String {
        format!("node {}: {e}", self.node)
    }

    fn send(&mut self, b: &[u8]) -> Result<(), String> {
        self.wr
            .write_all(b)
            .and_then(|_| self.wr.flush())
            .map_err(|e| self.fail(e))
    }
}

/// What a verification found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Keys each node holds, in id order.
    pub keys: Vec<u64>,
    /// Buckets whose digests differed between nodes.
    pub buckets_differing: usize,
    /// Keys whose value differs between nodes (or that some lack): database,
    /// key, and each node's digest (`None`: absent), at most
    /// [`MAX_LISTED`].
    pub differences: Vec<(u32, Bytes, Vec<Option<u64>>)>,
    /// Differing keys that were written while the check ran (not counted
    /// as differences).
    pub changed_meanwhile: usize,
    /// Set when a write during the check may have changed keys that cannot
    /// be listed (`FLUSHALL`, scripts): the result is inconclusive.
    pub inconclusive: Option<String>,
}

impl Report {
    /// As JSON for `/verify`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "consistent": self.differences.is_empty() && self.inconclusive.is_none(),
            "keys": self.keys,
            "buckets_differing": self.buckets_differing,
            "changed_meanwhile": self.changed_meanwhile,
            "inconclusive": self.inconclusive,
            "differences": self.differences.iter().map(|(db, k, per)| serde_json::json!({
                "db": db,
                "key": String::from_utf8_lossy(k),
                "digests": per.iter().map(|d| d.map(|x| format!("{x:016x}"))).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Compares every node's data (run on any node; every node must answer).
pub fn run(shared: &Shared) -> Result<Report, String> {
    let n = shared.opts.mu.nodes;
    let mut sessions: Vec<Session> = (0..n)
        .map(|i| Session::open(shared, NodeId(i)))
        .collect::<Result<_, _>>()?;
    // Pass 1 everywhere at once.
    for s in &mut sessions {
        s.send(&[1])?;
    }
    let mut report = Report::default();
    let mut firsts = Vec::new();
    for s in &mut sessions {
        let count = read_u64(&mut s.rd).map_err(|e| s.fail(e))?;
        let mut b = Vec::with_capacity(BUCKETS);
        for _ in 0..BUCKETS {
            b.push(read_u64(&mut s.rd).map_err(|e| s.fail(e))?);
        }
        report.keys.push(count);
        firsts.push(b);
    }
    let differing: BTreeSet<usize> = (0..BUCKETS)
        .filter(|&b| firsts.iter().any(|f| f[b] != firsts[0][b]))
        .collect();
    report.buckets_differing = differing.len();
    // Pass 2 over the differing buckets.
    let mut per_key: BTreeMap<DirtyKey, Vec<Option<u64>>> = BTreeMap::new();
    if !differing.is_empty() {
        let mut req = vec![2u8];
        req.extend_from_slice(&(differing.len() as u32).to_le_bytes());
        for b in &differing {
            req.extend_from_slice(&(*b as u32).to_le_bytes());
        }
        for s in &mut sessions {
            s.send(&req)?;
        }
        for (i, s) in sessions.iter_mut().enumerate() {
            loop {
                let db = read_u32(&mut s.rd).map_err(|e| s.fail(e))?;
                if db == END_OF_KEYS {
                    break;
                }
                let key = read_key(&mut s.rd).map_err(|e| s.fail(e))?;
                let dg = read_u64(&mut s.rd).map_err(|e| s.fail(e))?;
                per_key
                    .entry((db, key))
                    .or_insert_with(|| vec![None; usize::from(n)])[i] = Some(dg);
            }
        }
        per_key.retain(|_, v| v.iter().any(|d| *d != v[0]));
    }
    // Every node applies what was committed when the passes ended, then
    // says which keys it wrote meanwhile.
    let index = shared
        .status()
        .map_or(0, |s| s.commit.saturating_sub(1))
        .max(shared.backend.applied());
    let mut req = vec![3u8];
    req.extend_from_slice(&index.to_le_bytes());
    for s in &mut sessions {
        s.send(&req)?;
    }
    let mut changed: HashSet<DirtyKey> = HashSet::new();
    for s in &mut sessions {
        let mut w = [0u8; 1];
        s.rd.read_exact(&mut w).map_err(|e| s.fail(e))?;
        if w[0] != 0 && report.inconclusive.is_none() {
            report.inconclusive = Some(format!(
                "node {} applied a write that may change keys it does not name while the \
                 check ran; run it again",
                s.node
            ));
        }
        let count = read_u32(&mut s.rd).map_err(|e| s.fail(e))?;
        for _ in 0..count {
            let db = read_u32(&mut s.rd).map_err(|e| s.fail(e))?;
            let key = read_key(&mut s.rd).map_err(|e| s.fail(e))?;
            changed.insert((db, key));
        }
    }
    let before = per_key.len();
    per_key.retain(|k, _| !changed.contains(k));
    report.changed_meanwhile = before - per_key.len();
    report.differences = per_key
        .into_iter()
        .take(MAX_LISTED)
        .map(|((db, k), v)| (db, k, v))
        .collect();
    tracing::info!(keys = ?report.keys, buckets = report.buckets_differing,
        differences = report.differences.len(), changed_meanwhile = report.changed_meanwhile,
        inconclusive = ?report.inconclusive, "verification done");
    Ok(report)
}
