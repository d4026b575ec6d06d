//! State transfer: a node whose backend is out of step with the log (it
//! restarted empty, held unknown data at start, or lost a batch in
//! flight), or whose replica fell behind the recycled part of the log,
//! loads a copy of a healthy peer's backend taken at a known log index,
//! then applies the log from the entry after it.
//!
//! ## Why the copy is consistent
//! On every node the applier is the only writer of the backend, and
//! every write it makes comes from the log. The donor:
//! 1. starts *tracking*: from now on its applier records every key each
//!    applied entry may have written (the same table that evaluates WATCH,
//!    [`mu_protocols::rewrite::command_writes`]; memcached: the request's
//!    keys);
//! 2. *scans* its backend on connections of its own (Redis: `SCAN` +
//!    `DUMP` + `PEXPIRETIME` in every database; memcached:
//!    `lru_crawler metadump all` + `mg`), streaming each item. Writes keep
//!    being applied meanwhile, so an item may be copied at any index after
//!    the start of tracking, but every key written after it is tracked;
//! 3. sends the tracked keys again in *rounds* (a key that is gone is sent
//!    as a delete), each round taking the set tracked since the previous
//!    one, until the set is small;
//! 4. *freezes* its applier between two batches at an index `f` that is at
//!    least the index the receiver asked for, sends the last tracked keys
//!    as they are at `f`, then the end record with the replica's applied
//!    point at `f`, and releases the applier.
//!
//! Every key's last record holds its value at `f`: keys never written
//! after the start hold the same value all along; any other key is sent
//! again after its last write up to `f`. Expirations are absolute times
//! (Redis: `RESTORE .. ABSTTL`; memcached: an absolute `T`), the same on
//! both sides. An entry that may have changed keys that cannot be listed
//! (`FLUSHALL`, `FLUSHDB`, `SWAPDB`, scripts that do not declare keys,
//! `flush_all`) ends the transfer with a refusal, and the receiver starts
//! over.
//!
//! The receiver flushes its backend, loads the records, and on the end
//! record skips every committed entry up to `f` (its applier stopped
//! taking entries when the transfer began, and asked for an `f` at least
//! as high as the last one it took, so nothing after `f` is missed). The
//! end record also carries the state the applier keeps from the log
//! (Redis: which keys were written at which index, for WATCH), so a
//! transaction after `f` is decided the same way on every replica. A
//! replica behind the recycled log also installs the point, so Mu resumes
//! its log from `f + 1`. Until the end record is loaded the node is not
//! ready, serves no reads and stays out of leadership; a transfer that
//! breaks is started again from an empty backend, from the next donor.
//!
//! ## Wire format (after the peer port's handshake and the mode byte `T`)
//! ```text
//! receiver: u64 min_index
//! donor:    records, each u8 tag + fields (integers little-endian,
//!           byte strings as u32 length + bytes):
//!   1 restore   u32 db, key, i64 expire_at_ms (0: none), DUMP payload
//!   2 delete    u32 db, key
//!   3 mc item   key, u32 flags, i64 expire_at_s (0: none), value
//!   4 end       u64 applied, u64 hash, u64 apply_pos, u64 records,
//!               applier state (Redis: the WATCH history)
//!   5 refused   reason (text)
//! ```

use crate::apply::{frame_text, BackendConn};
use crate::config::BackendKind;
use crate::state::Shared;
use bytes::{Bytes, BytesMut};
use mu::core::SnapshotPoint;
use mu::NodeId;
use mu_protocols::entry::Entry;
use mu_protocols::memcached::{McReply, McRequestDecoder, MetaStatus};
use mu_protocols::resp::{encode_request, Frame};
use mu_protocols::rewrite::{command_writes, Writes};
use mu_protocols::table::mc_keys;
use std::collections::HashSet;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Keys fetched per pipelined round trip while scanning.
const PAGE: usize = 512;
/// A tracked set at most this large is sent with the applier frozen.
const FINAL_KEYS: usize = 2_000;
/// Rounds of tracked keys sent before freezing regardless of their count.
const MAX_ROUNDS: usize = 8;
/// Tracked keys beyond this make the donor give up (the receiver retries).
const MAX_TRACKED: usize = 4_000_000;
/// How long the donor waits for its applier to reach the asked index.
const FREEZE_WAIT: Duration = Duration::from_secs(30);
/// How long a frozen applier waits for the donor to finish.
const FROZEN_MAX: Duration = Duration::from_secs(30);
/// Largest key or value accepted from a donor.
const MAX_FIELD: u32 = 1 << 30;
/// Receiver: records loaded per pipelined round trip.
const LOAD_BATCH: usize = 512;
/// Receiver: bytes per pipelined round trip.
const LOAD_BYTES: usize = 1 << 20;
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

const TAG_RESTORE: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_MC_ITEM: u8 = 3;
const TAG_END: u8 = 4;
const TAG_REFUSED: u8 = 5;

/// A key a log entry may have written: database (0 for memcached) and key.
pub type DirtyKey = (u32, Bytes);

/// Keys written since a tracker started.
#[derive(Debug, Default)]
pub struct Dirty {
    /// The keys.
    pub keys: HashSet<DirtyKey>,
    /// Set when an entry may have written keys that cannot be listed.
    pub wholesale: Option<String>,
}

type Shelf = Arc<Mutex<Dirty>>;

/// The donor's request to freeze its applier.
#[derive(Debug)]
struct Freeze {
    min: u64,
    dirty: Shelf,
    frozen: SyncSender<(SnapshotPoint, Dirty, Vec<u8>)>,
    release: Receiver<()>,
}

/// What the applier shares with the work that must follow its writes key
/// by key: a donation (see the module docs) or a verification
/// ([`crate::verify`]).
#[derive(Debug, Default)]
pub struct Hub {
    trackers: Mutex<Vec<Shelf>>,
    tracking: AtomicUsize,
    /// Batch boundaries the applier passed while tracking.
    boundary: Mutex<u64>,
    passed: Condvar,
    donating: AtomicBool,
    freeze: Mutex<Option<Freeze>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// True while anything tracks writes (the applier then collects the
    /// keys of what it applies and comes back between batches often).
    pub fn tracking(&self) -> bool {
        self.tracking.load(Ordering::Acquire) > 0
    }

    /// Called by the applier once the entries whose keys are `keys` are
    /// applied; `wholesale` when one of them may have written more.
    pub fn note(&self, keys: &mut Vec<DirtyKey>, wholesale: Option<String>) {
        if self.tracking() {
            for t in lock(&self.trackers).iter() {
                let mut d = lock(t);
                if d.wholesale.is_none() {
                    d.wholesale = wholesale.clone();
                }
                d.keys.extend(keys.iter().cloned());
                if d.keys.len() > MAX_TRACKED && d.wholesale.is_none() {
                    d.wholesale = Some(format!(
                        "more than {MAX_TRACKED} keys were written meanwhile"
                    ));
                }
            }
        }
        keys.clear();
    }

    /// Called by the applier between batches with its applied point.
    /// Counts the boundary for [`Hub::track`]; and if a donor asked for a
    /// freeze at or below that point, hands it the point, the applier's
    /// own state (`state()`) and the last tracked keys, and waits until it
    /// is done.
    pub fn between_batches(&self, point: SnapshotPoint, state: impl FnOnce() -> Vec<u8>) {
        *lock(&self.boundary) += 1;
        self.passed.notify_all();
        let f = {
            let mut slot = lock(&self.freeze);
            match slot.as_ref() {
                Some(f) if point.applied >= f.min => slot.take(),
                _ => None,
            }
        };
        let Some(f) = f else {
            return;
        };
        let dirty = std::mem::take(&mut *lock(&f.dirty));
        if f.frozen.send((point, dirty, state())).is_ok() {
            // The donor copies the last keys now; applying would change
            // them under it. A donor that died releases by hanging up.
            let _ = f.release.recv_timeout(FROZEN_MAX);
        }
    }

    /// Starts tracking written keys. Returns once the applier passed a
    /// batch boundary, so that every entry applied from then on is
    /// tracked.
    pub fn track(&self, limit: Duration) -> Result<Tracker<'_>, String> {
        let shelf = Shelf::default();
        lock(&self.trackers).push(shelf.clone());
        self.tracking.fetch_add(1, Ordering::AcqRel);
        let t = Tracker { hub: self, shelf };
        let start = *lock(&self.boundary);
        let (b, timeout) = self
            .passed
            .wait_timeout_while(lock(&self.boundary), limit, |b| *b == start)
            .unwrap_or_else(|e| e.into_inner());
        drop(b);
        if timeout.timed_out() {
            return Err(format!(
                "the applier did not reach a batch boundary within {limit:?}"
            ));
        }
        Ok(t)
    }

    fn begin_donation(&self) -> Result<Donation<'_>, String> {
        if self.donating.swap(true, Ordering::AcqRel) {
            return Err("this node is already donating to another node".into());
        }
        Ok(Donation(self))
    }
}

/// Written keys tracked for one user; tracking ends when it is dropped.
#[derive(Debug)]
pub struct Tracker<'a> {
    hub: &'a Hub,
    shelf: Shelf,
}

impl Tracker<'_> {
    /// The keys tracked since the previous call (or the start).
    pub fn take(&self) -> Dirty {
        std::mem::take(&mut *lock(&self.shelf))
    }
}

impl Drop for Tracker<'_> {
    fn drop(&mut self) {
        lock(&self.hub.trackers).retain(|t| !Arc::ptr_eq(t, &self.shelf));
        self.hub.tracking.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The one donation in progress; ends it when dropped.
struct Donation<'a>(&'a Hub);

impl Drop for Donation<'_> {
    fn drop(&mut self) {
        *lock(&self.0.freeze) = None;
        self.0.donating.store(false, Ordering::Release);
    }
}

/// The keys one Redis entry may write into `keys`; `Err` with the reason
/// when they cannot be listed.
pub fn redis_keys(entry: &Entry, keys: &mut Vec<DirtyKey>) -> Result<(), String> {
    let Entry::Redis(e) = entry else {
        return Ok(());
    };
    let mut db = e.db;
    for cmd in &e.commands {
        match command_writes(&mut db, cmd) {
            Writes::Nothing => {}
            Writes::Keys(d, ks) => keys.extend(ks.into_iter().map(|k| (d, k.clone()))),
            Writes::Db(_) | Writes::Everything => {
                return Err(format!(
                    "'{}' may change keys it does not name",
                    String::from_utf8_lossy(&cmd[0]).to_lowercase()
                ))
            }
        }
    }
    Ok(())
}

/// The keys one memcached request may write into `keys`.
pub fn memcached_keys(req: &[u8], keys: &mut Vec<DirtyKey>) -> Result<(), String> {
    let Ok(Some(r)) = McRequestDecoder::default().decode(&mut BytesMut::from(req)) else {
        return Ok(());
    };
    if r.verb_name() == "flush_all" {
        return Err("'flush_all' changes every key".into());
    }
    keys.extend(mc_keys(&r).into_iter().map(|k| (0, k.clone())));
    Ok(())
}

// ---------------------------------------------------------------------------
// Records.

/// Writes `b` as u32 length + bytes.
pub fn put_bytes(out: &mut impl Write, b: &[u8]) -> io::Result<()> {
    out.write_all(&(b.len() as u32).to_le_bytes())?;
    out.write_all(b)
}

/// Reads a little-endian u32.
pub fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Reads a little-endian u64.
pub fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Reads what [`put_bytes`] wrote (at most 1 GiB).
pub fn read_bytes(r: &mut impl Read) -> io::Result<Bytes> {
    let len = read_u32(r)?;
    if len > MAX_FIELD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a transfer record field of {len} bytes is over the limit"),
        ));
    }
    let mut v = vec![0u8; len as usize];
    r.read_exact(&mut v)?;
    Ok(Bytes::from(v))
}

/// One record of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A Redis key: its `DUMP` payload and absolute expiry (ms, 0 none).
    Restore {
        /// Database.
        db: u32,
        /// Key.
        key: Bytes,
        /// Unix time in ms when it expires; 0 for never.
        expire_at_ms: i64,
        /// `DUMP` output.
        dump: Bytes,
    },
    /// A key that no longer exists.
    Delete {
        /// Database (0 for memcached).
        db: u32,
        /// Key.
        key: Bytes,
    },
    /// A memcached item.
    McItem {
        /// Key.
        key: Bytes,
        /// Client flags.
        flags: u32,
        /// Unix time in s when it expires; 0 for never.
        expire_at_s: i64,
        /// Value.
        value: Bytes,
    },
    /// The copy is complete at this point.
    End {
        /// The donor's replica state right after the last entry the copy
        /// holds.
        point: SnapshotPoint,
        /// Records sent before this one.
        records: u64,
        /// The donor applier's state at the point.
        state: Bytes,
    },
    /// The donor gave up.
    Refused(String),
}

impl Record {
    /// Writes the record.
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        match self {
            Record::Restore {
                db,
                key,
                expire_at_ms,
                dump,
            } => {
                out.write_all(&[TAG_RESTORE])?;
                out.write_all(&db.to_le_bytes())?;
                put_bytes(out, key)?;
                out.write_all(&expire_at_ms.to_le_bytes())?;
                put_bytes(out, dump)
            }
            Record::Delete { db, key } => {
                out.write_all(&[TAG_DELETE])?;
                out.write_all(&db.to_le_bytes())?;
                put_bytes(out, key)
            }
            Record::McItem {
                key,
                flags,
                expire_at_s,
                value,
            } => {
                out.write_all(&[TAG_MC_ITEM])?;
                put_bytes(out, key)?;
                out.write_all(&flags.to_le_bytes())?;
                out.write_all(&expire_at_s.to_le_bytes())?;
                put_bytes(out, value)
            }
            Record::End {
                point,
                records,
                state,
            } => {
                out.write_all(&[TAG_END])?;
                for w in [point.applied, point.hash, point.apply_pos, *records] {
                    out.write_all(&w.to_le_bytes())?;
                }
                put_bytes(out, state)
            }
            Record::Refused(why) => {
                out.write_all(&[TAG_REFUSED])?;
                put_bytes(out, why.as_bytes())
            }
        }
    }

    /// Reads one record.
    pub fn read(r: &mut impl Read) -> io::Result<Record> {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag)?;
        Ok(match tag[0] {
            TAG_RESTORE => Record::Restore {
                db: read_u32(r)?,
                key: read_bytes(r)?,
                expire_at_ms: read_u64(r)? as i64,
                dump: read_bytes(r)?,
            },
            TAG_DELETE => Record::Delete {
                db: read_u32(r)?,
                key: read_bytes(r)?,
            },
            TAG_MC_ITEM => Record::McItem {
                key: read_bytes(r)?,
                flags: read_u32(r)?,
                expire_at_s: read_u64(r)? as i64,
                value: read_bytes(r)?,
            },
            TAG_END => Record::End {
                point: SnapshotPoint {
                    applied: read_u64(r)?,
                    hash: read_u64(r)?,
                    apply_pos: read_u64(r)?,
                },
                records: read_u64(r)?,
                state: read_bytes(r)?,
            },
            TAG_REFUSED => Record::Refused(String::from_utf8_lossy(&read_bytes(r)?).into_owned()),
            t => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown transfer record tag {t}"),
                ))
            }
        })
    }

    fn wire_len(&self) -> u64 {
        match self {
            Record::Restore { key, dump, .. } => 21 + (key.len() + dump.len()) as u64,
            Record::Delete { key, .. } => 9 + key.len() as u64,
            Record::McItem { key, value, .. } => 21 + (key.len() + value.len()) as u64,
            Record::End { state, .. } => 37 + state.len() as u64,
            Record::Refused(w) => 5 + w.len() as u64,
        }
    }
}

// ---------------------------------------------------------------------------
// Donor.

/// Counts what one side moved.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Records (keys and deletes).
    pub records: u64,
    /// Bytes of records.
    pub bytes: u64,
}

/// A record sink that counts, and logs progress now and then.
struct Sink<W: Write> {
    out: W,
    stats: Stats,
    since: Instant,
    logged: Instant,
    side: &'static str,
    records: prometheus::IntCounter,
    bytes: prometheus::IntCounter,
}

impl<W: Write> Sink<W> {
    /// A sink counting into `shared`'s metrics as `side` (donor or
    /// receiver), so progress shows while a transfer runs.
    fn new(out: W, shared: &Shared, side: &'static str) -> Self {
        #[allow(clippy::disallowed_methods, reason = "progress is timed")]
        let now = Instant::now();
        let m = &shared.metrics;
        Sink {
            out,
            stats: Stats::default(),
            since: now,
            logged: now,
            side,
            records: m.transfer_records.with_label_values(&[side]),
            bytes: m.transfer_bytes.with_label_values(&[side]),
        }
    }

    fn put(&mut self, r: &Record) -> Result<(), String> {
        r.write(&mut self.out)
            .map_err(|e| format!("sending to the receiver: {e}"))?;
        self.count(r);
        Ok(())
    }

    fn count(&mut self, r: &Record) {
        let len = r.wire_len();
        self.stats.records += 1;
        self.stats.bytes += len;
        self.records.inc();
        self.bytes.inc_by(len);
        if self.logged.elapsed() >= PROGRESS_EVERY {
            self.logged = Instant::now();
            tracing::info!(
                records = self.stats.records,
                bytes = self.stats.bytes,
                elapsed_s = self.since.elapsed().as_secs_f64(),
                side = self.side,
                "state transfer in progress"
            );
        }
    }
}

/// Serves one receiver on a peer connection (after the handshake and the
/// mode byte): reads its minimum index, streams the copy, and says why if
/// it cannot.
pub fn serve_donor(shared: &Shared, sock: TcpStream) -> io::Result<()> {
    let mut rd = sock.try_clone()?;
    let min = read_u64(&mut rd)?;
    let peer = sock.peer_addr().ok();
    let mut sink = Sink::new(BufWriter::with_capacity(256 << 10, sock), shared, "donor");
    #[allow(clippy::disallowed_methods, reason = "transfers are timed")]
    let started = Instant::now();
    tracing::info!(?peer, min_index = min, "state transfer to a peer starting");
    let outcome = donate(shared, &mut sink, min);
    let m = &shared.metrics;
    match &outcome {
        Ok(point) => {
            tracing::info!(
                ?peer,
                index = point.applied,
                records = sink.stats.records,
                bytes = sink.stats.bytes,
                seconds = started.elapsed().as_secs_f64(),
                "state transfer to a peer done"
            );
            m.transfers.with_label_values(&["donor", "ok"]).inc();
        }
        Err(why) => {
            tracing::warn!(?peer, reason = %why, "state transfer to a peer abandoned");
            m.transfers.with_label_values(&["donor", "failed"]).inc();
            let _ = Record::Refused(why.clone()).write(&mut sink.out);
        }
    }
    sink.out.flush()
}

fn donate<W: Write>(
    shared: &Shared,
    sink: &mut Sink<W>,
    min: u64,
) -> Result<SnapshotPoint, String> {
    shared
        .reads_allowed()
        .map_err(|e| format!("this node cannot donate: {e}"))?;
    let donation = shared.transfer.begin_donation()?;
    let tracker = shared.transfer.track(FREEZE_WAIT)?;
    let (mut d, _) = BackendConn::connect(shared)?;
    match shared.opts.backend_kind {
        BackendKind::Redis => scan_redis(shared, &mut d, sink)?,
        BackendKind::Memcached => scan_memcached(shared, &mut d, sink)?,
    }
    // Rounds: send what changed meanwhile until little changes.
    for _ in 0..MAX_ROUNDS {
        let dirty = tracker.take();
        if let Some(why) = dirty.wholesale {
            return Err(format!("the data changed wholesale during the copy: {why}"));
        }
        let small = dirty.keys.len() <= FINAL_KEYS;
        send_keys(shared, &mut d, sink, dirty.keys.into_iter().collect(), true)?;
        if small {
            break;
        }
    }
    // Freeze the applier at an index the receiver can go on from.
    let (frozen_tx, frozen_rx) = mpsc::sync_channel(1);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    *lock(&donation.0.freeze) = Some(Freeze {
        min,
        dirty: tracker.shelf.clone(),
        frozen: frozen_tx,
        release: release_rx,
    });
    let (point, dirty, state) = frozen_rx.recv_timeout(FREEZE_WAIT).map_err(|_| {
        format!(
            "this node did not apply up to index {min} within {FREEZE_WAIT:?} (applied {})",
            shared.backend.applied()
        )
    })?;
    if let Some(why) = dirty.wholesale {
        return Err(format!("the data changed wholesale during the copy: {why}"));
    }
    if shared.backend.state() != crate::state::BackendState::Up {
        return Err(format!(
            "this node's backend left the log's step during the copy: {}",
            shared.backend.detail()
        ));
    }
    send_keys(shared, &mut d, sink, dirty.keys.into_iter().collect(), true)?;
    // While frozen the backend's last write is entry `point.applied`.
    let records = sink.stats.records;
    sink.put(&Record::End {
        point,
        records,
        state: Bytes::from(state),
    })?;
    sink.out
        .flush()
        .map_err(|e| format!("sending to the receiver: {e}"))?;
    drop(release_tx);
    drop(donation);
    drop(tracker);
    Ok(point)
}

fn scan_redis<W: Write>(
    shared: &Shared,
    d: &mut BackendConn,
    sink: &mut Sink<W>,
) -> Result<(), String> {
    for db in 0..shared.opts.databases {
        let dbs = db.to_string();
        let r = d.call_redis(&[b"SELECT", dbs.as_bytes()])?;
        if r.is_error() {
            // Fewer databases on this server than configured.
            tracing::debug!(db, reply = %frame_text(&r), "database not scanned");
            break;
        }
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let reply = d.call_redis(&[b"SCAN", &cursor, b"COUNT", b"512"])?;
            let Frame::Array(mut parts) = reply else {
                return Err(format!("SCAN answered {}", frame_text(&reply)));
            };
            let (Some(Frame::Array(keys)), Some(Frame::Bulk(next))) = (parts.pop(), parts.pop())
            else {
                return Err("SCAN answered an unexpected shape".into());
            };
            let keys: Vec<DirtyKey> = keys
                .into_iter()
                .filter_map(|k| match k {
                    Frame::Bulk(k) => Some((db, k)),
                    _ => None,
                })
                .collect();
            send_keys(shared, d, sink, keys, false)?;
            if &next[..] == b"0" {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

/// Sends the current value of `keys`; a key that is gone is sent as a
/// delete when `deletes` (else skipped: it was deleted or expired after
/// the scan saw it, and a delete by the log is tracked).
fn send_keys<W: Write>(
    shared: &Shared,
    d: &mut BackendConn,
    sink: &mut Sink<W>,
    mut keys: Vec<DirtyKey>,
    deletes: bool,
) -> Result<(), String> {
    keys.sort_unstable();
    for page in keys.chunks(PAGE) {
        match shared.opts.backend_kind {
            BackendKind::Redis => redis_page(d, sink, page, deletes)?,
            BackendKind::Memcached => memcached_page(d, sink, page, deletes)?,
        }
    }
    Ok(())
}

fn redis_page<W: Write>(
    d: &mut BackendConn,
    sink: &mut Sink<W>,
    page: &[DirtyKey],
    deletes: bool,
) -> Result<(), String> {
    let mut out = BytesMut::new();
    let mut db = None;
    let mut selects = 0;
    for (kdb, key) in page {
        if db != Some(*kdb) {
            encode_request(&[&b"SELECT"[..], kdb.to_string().as_bytes()], &mut out);
            db = Some(*kdb);
            selects += 1;
        }
        encode_request(&[&b"DUMP"[..], key], &mut out);
        encode_request(&[&b"PEXPIRETIME"[..], key], &mut out);
    }
    d.send(&out)?;
    let mut db = None;
    for (kdb, key) in page {
        if db != Some(*kdb) {
            let r = d.read_frame()?;
            if r.is_error() {
                return Err(format!("SELECT {kdb}: {}", frame_text(&r)));
            }
            db = Some(*kdb);
            selects -= 1;
        }
        let dump = d.read_frame()?;
        let exp = d.read_frame()?;
        let expire_at_ms = match exp {
            Frame::Integer(t) if t > 0 => t,
            Frame::Integer(_) => 0,
            other => {
                return Err(format!(
                    "PEXPIRETIME answered {} (state transfer needs Redis 7.0 or later)",
                    frame_text(&other)
                ))
            }
        };
        match dump {
            Frame::Bulk(dump) => sink.put(&Record::Restore {
                db: *kdb,
                key: key.clone(),
                expire_at_ms,
                dump,
            })?,
            Frame::NullBulk | Frame::Null if deletes => sink.put(&Record::Delete {
                db: *kdb,
                key: key.clone(),
            })?,
            Frame::NullBulk | Frame::Null => {}
            other => return Err(format!("DUMP answered {}", frame_text(&other))),
        }
    }
    debug_assert_eq!(selects, 0);
    Ok(())
}

fn unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn memcached_page<W: Write>(
    d: &mut BackendConn,
    sink: &mut Sink<W>,
    page: &[DirtyKey],
    deletes: bool,
) -> Result<(), String> {
    let mut out = BytesMut::new();
    for (_, key) in page {
        out.extend_from_slice(b"mg ");
        out.extend_from_slice(key);
        out.extend_from_slice(b" v f t\r\n");
    }
    d.send(&out)?;
    for (_, key) in page {
        match d.read_mc()? {
            McReply::Meta(m) if m.status == MetaStatus::Va => {
                let mut flags = 0u32;
                let mut ttl = -1i64;
                for t in &m.tokens {
                    let v = std::str::from_utf8(&t[1..]).unwrap_or("");
                    match t.first() {
                        Some(b'f') => flags = v.parse().unwrap_or(0),
                        Some(b't') => ttl = v.parse().unwrap_or(-1),
                        _ => {}
                    }
                }
                // Remaining seconds to an absolute time (memcached keeps
                // whole seconds; a key due now gets one more).
                let expire_at_s = if ttl < 0 { 0 } else { unix_s() + ttl.max(1) };
                sink.put(&Record::McItem {
                    key: key.clone(),
                    flags,
                    expire_at_s,
                    value: m.data.unwrap_or_default(),
                })?;
            }
            McReply::Meta(m) if m.status == MetaStatus::En => {
                if deletes {
                    sink.put(&Record::Delete {
                        db: 0,
                        key: key.clone(),
                    })?;
                }
            }
            other => return Err(format!("mg answered {other:?}")),
        }
    }
    Ok(())
}

/// Decodes a metadump key (URL-encoded).
pub fn url_decode(s: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            let hex = std::str::from_utf8(&s[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    Bytes::from(out)
}

/// Calls `each` with every key memcached holds, in pages of at most
/// `size`, from its LRU crawler (`lru_crawler metadump all`, on a
/// connection of its own: memcached refuses other commands pipelined with
/// it).
pub fn memcached_pages(
    shared: &Shared,
    size: usize,
    mut each: impl FnMut(Vec<Bytes>) -> Result<(), String>,
) -> Result<(), String> {
    let mut attempts = 0;
    loop {
        let (mut dump, _) = BackendConn::connect(shared)?;
        let holds = dump.holds_data()?;
        dump.send(b"lru_crawler metadump all\r\n")?;
        let mut page = Vec::with_capacity(size);
        let mut seen = 0u64;
        loop {
            let line = dump.read_line()?;
            if &line[..] == b"END" {
                break;
            }
            let Some(rest) = line.strip_prefix(b"key=") else {
                return Err(format!(
                    "lru_crawler metadump answered {:?} (this needs memcached's LRU crawler)",
                    String::from_utf8_lossy(&line)
                ));
            };
            let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            page.push(url_decode(&rest[..end]));
            seen += 1;
            if page.len() == size {
                each(std::mem::take(&mut page))?;
            }
        }
        // A dump asked for right after another one sometimes comes back
        // empty at once; a server that holds items is asked again.
        if seen == 0 && holds && attempts < 100 {
            attempts += 1;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        return each(page);
    }
}

fn scan_memcached<W: Write>(
    shared: &Shared,
    d: &mut BackendConn,
    sink: &mut Sink<W>,
) -> Result<(), String> {
    memcached_pages(shared, PAGE, |page| {
        let keys = page.into_iter().map(|k| (0, k)).collect();
        send_keys(shared, d, sink, keys, false)
    })
}

// ---------------------------------------------------------------------------
// Receiver.

/// The outcome of a completed transfer into this node's backend.
#[derive(Debug)]
pub struct Loaded {
    /// The point the backend now reflects.
    pub point: SnapshotPoint,
    /// The backend connection it was loaded through.
    pub conn: BackendConn,
    /// The backend's identity.
    pub identity: String,
    /// The donor applier's state at the point.
    pub state: Bytes,
    /// What moved.
    pub stats: Stats,
}

/// Peers to ask, in order: followers first (a leader's applier answers
/// its clients, so freezing it costs more), then the leader.
pub fn donors(shared: &Shared) -> Vec<NodeId> {
    let me = NodeId(shared.opts.id - 1);
    let st = shared.status();
    let leader = st.as_ref().and_then(|s| s.leader);
    let alive = |p: NodeId| {
        st.as_ref()
            .and_then(|s| s.peers.iter().find(|v| v.id == p))
            .is_none_or(|v| v.alive)
    };
    let mut peers: Vec<NodeId> = (0..shared.opts.mu.nodes)
        .map(NodeId)
        .filter(|&p| p != me)
        .collect();
    peers.sort_by_key(|&p| (!alive(p), Some(p) == leader, p));
    peers
}

/// Loads a copy from `donor` into this node's backend (flushed first),
/// at an index of at least `min`.
pub fn receive(shared: &Shared, donor: NodeId, min: u64) -> Result<Loaded, String> {
    let addr = shared
        .forward
        .peer_addr(donor)
        .ok_or_else(|| format!("no peer address for node {}", donor.0 + 1))?;
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("cannot connect to node {} at {addr}: {e}", donor.0 + 1))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let key = crate::forward::key(&shared.opts.mu.secret);
    mu::fabric::tcp::wire::client_handshake(&mut sock, &key, NodeId(shared.opts.id - 1), donor)
        .map_err(|e| format!("handshake with node {}: {e}", donor.0 + 1))?;
    let _ = sock.set_nodelay(true);
    let mut hello = vec![crate::forward::MODE_TRANSFER];
    hello.extend_from_slice(&min.to_le_bytes());
    sock.write_all(&hello)
        .map_err(|e| format!("asking node {} for a copy: {e}", donor.0 + 1))?;
    // The donor scans before its first record and may freeze for a while
    // at the end: generous, but a dead donor is noticed.
    sock.set_read_timeout(Some(FREEZE_WAIT + Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut rd = BufReader::with_capacity(256 << 10, sock);
    let first =
        Record::read(&mut rd).map_err(|e| format!("reading from node {}: {e}", donor.0 + 1))?;
    if let Record::Refused(why) = first {
        return Err(format!("node {} refused: {why}", donor.0 + 1));
    }
    // Only a donor that accepted makes this node drop what it holds.
    let (mut conn, identity) = BackendConn::connect(shared)?;
    conn.flush_all()?;
    let mut next = Some(first);
    let mut sink = Sink::new(io::sink(), shared, "receiver");
    let mut loader = Loader::new(shared.opts.backend_kind);
    loop {
        let r = match next.take() {
            Some(r) => r,
            None => Record::read(&mut rd)
                .map_err(|e| format!("reading from node {}: {e}", donor.0 + 1))?,
        };
        match r {
            Record::End {
                point,
                records,
                state,
            } => {
                loader.flush(&mut conn)?;
                if records != sink.stats.records {
                    return Err(format!(
                        "node {} sent {} records but counted {records}",
                        donor.0 + 1,
                        sink.stats.records
                    ));
                }
                if point.applied < min {
                    return Err(format!(
                        "node {} sent a copy at index {} below the asked {min}",
                        donor.0 + 1,
                        point.applied
                    ));
                }
                return Ok(Loaded {
                    point,
                    conn,
                    identity,
                    state,
                    stats: sink.stats,
                });
            }
            Record::Refused(why) => return Err(format!("node {} refused: {why}", donor.0 + 1)),
            r => {
                sink.count(&r);
                loader.push(&r)?;
                if loader.full() {
                    loader.flush(&mut conn)?;
                }
            }
        }
    }
}

/// Pipelines records into the backend.
struct Loader {
    kind: BackendKind,
    out: BytesMut,
    /// Redis: replies owed; memcached: whether an `mn` is owed.
    owed: usize,
    db: u32,
}

impl Loader {
    fn new(kind: BackendKind) -> Self {
        Loader {
            kind,
            out: BytesMut::with_capacity(LOAD_BYTES + (64 << 10)),
            owed: 0,
            db: 0,
        }
    }

    fn full(&self) -> bool {
        self.owed >= LOAD_BATCH || self.out.len() >= LOAD_BYTES
    }

    fn select(&mut self, db: u32) {
        if db != self.db {
            encode_request(&[&b"SELECT"[..], db.to_string().as_bytes()], &mut self.out);
            self.owed += 1;
            self.db = db;
        }
    }

    fn push(&mut self, r: &Record) -> Result<(), String> {
        match (self.kind, r) {
            (
                BackendKind::Redis,
                Record::Restore {
                    db,
                    key,
                    expire_at_ms,
                    dump,
                },
            ) => {
                self.select(*db);
                let ttl = expire_at_ms.max(&0).to_string();
                encode_request(
                    &[
                        &b"RESTORE"[..],
                        key,
                        ttl.as_bytes(),
                        dump,
                        b"REPLACE",
                        b"ABSTTL",
                    ],
                    &mut self.out,
                );
                self.owed += 1;
            }
            (BackendKind::Redis, Record::Delete { db, key }) => {
                self.select(*db);
                encode_request(&[&b"DEL"[..], key], &mut self.out);
                self.owed += 1;
            }
            (
                BackendKind::Memcached,
                Record::McItem {
                    key,
                    flags,
                    expire_at_s,
                    value,
                },
            ) => {
                self.out.extend_from_slice(b"ms ");
                self.out.extend_from_slice(key);
                let mut head = format!(" {} F{flags}", value.len());
                if *expire_at_s > 0 {
                    head.push_str(&format!(" T{expire_at_s}"));
                }
                head.push_str(" q\r\n");
                self.out.extend_from_slice(head.as_bytes());
                self.out.extend_from_slice(value);
                self.out.extend_from_slice(b"\r\n");
                self.owed += 1;
            }
            (BackendKind::Memcached, Record::Delete { key, .. }) => {
                self.out.extend_from_slice(b"md ");
                self.out.extend_from_slice(key);
                self.out.extend_from_slice(b" q\r\n");
                self.owed += 1;
            }
            (_, other) => {
                return Err(format!(
                    "the donor sent a record for another kind of backend: {other:?}"
                ))
            }
        }
        Ok(())
    }

    fn flush(&mut self, conn: &mut BackendConn) -> Result<(), String> {
        if self.owed == 0 {
            return Ok(());
        }
        match self.kind {
            BackendKind::Redis => {
                conn.send(&self.out)?;
                for _ in 0..self.owed {
                    let r = conn.read_frame()?;
                    if r.is_error() {
                        return Err(format!(
                            "the backend refused a loaded key: {}",
                            frame_text(&r)
                        ));
                    }
                }
            }
            BackendKind::Memcached => {
                // Quiet mode: only failures answer, then the `mn`.
                self.out.extend_from_slice(b"mn\r\n");
                conn.send(&self.out)?;
                match conn.read_mc()? {
                    McReply::Meta(m) if m.status == MetaStatus::Mn => {}
                    other => return Err(format!("the backend refused a loaded item: {other:?}")),
                }
            }
        }
        self.out.clear();
        self.owed = 0;
        Ok(())
    }
}

/// How a node learns it needs a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its replica is behind the recycled part of the log.
    BehindRing,
    /// Its backend is out of step with the log.
    Backend,
    /// Its data were found to differ from the majority's
    /// (`--on-divergence resync`).
    Diverged,
}

impl Reason {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::BehindRing => "behind_ring",
            Reason::Backend => "backend_out_of_step",
            Reason::Diverged => "diverged",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = [
            Record::Restore {
                db: 3,
                key: Bytes::from_static(b"k"),
                expire_at_ms: 1_700_000_000_123,
                dump: Bytes::from_static(b"\x00\x01dump"),
            },
            Record::Delete {
                db: 0,
                key: Bytes::from_static(b"gone"),
            },
            Record::McItem {
                key: Bytes::from_static(b"m"),
                flags: 7,
                expire_at_s: 0,
                value: Bytes::from_static(b"v\r\nv"),
            },
            Record::End {
                point: SnapshotPoint {
                    applied: 9,
                    hash: 0xdead,
                    apply_pos: 4096,
                },
                records: 3,
                state: Bytes::from_static(b"applier"),
            },
            Record::Refused("busy".into()),
        ];
        let mut buf = Vec::new();
        for r in &records {
            r.write(&mut buf).unwrap();
        }
        assert_eq!(
            buf.len() as u64,
            records.iter().map(Record::wire_len).sum::<u64>()
        );
        let mut rd = &buf[..];
        for r in &records {
            assert_eq!(&Record::read(&mut rd).unwrap(), r);
        }
        assert!(Record::read(&mut rd).is_err(), "nothing after the last");
        assert!(Record::read(&mut &[9u8][..]).is_err(), "unknown tag");
    }

    #[test]
    fn metadump_keys_decode() {
        assert_eq!(&url_decode(b"a%2520b")[..], b"a%20b");
        assert_eq!(&url_decode(b"plain")[..], b"plain");
        assert_eq!(&url_decode(b"bad%zz%4")[..], b"bad%zz%4");
    }

    #[test]
    fn tracked_keys_come_from_the_command_table() {
        let entry = |cmds: &[&[&str]]| {
            Entry::Redis(mu_protocols::entry::RedisEntry {
                db: 2,
                transaction: false,
                resp3: false,
                guards: Vec::new(),
                commands: cmds
                    .iter()
                    .map(|c| c.iter().map(|a| Bytes::from(a.to_string())).collect())
                    .collect(),
            })
        };
        let mut keys = Vec::new();
        redis_keys(
            &entry(&[
                &["SET", "a", "1"],
                &["SELECT", "5"],
                &["MSET", "b", "1", "c", "2"],
            ]),
            &mut keys,
        )
        .unwrap();
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert_eq!(keys, vec![(2, b("a")), (5, b("b")), (5, b("c"))]);
        assert!(redis_keys(&entry(&[&["FLUSHDB"]]), &mut keys).is_err());
        assert!(redis_keys(&entry(&[&["SWAPDB", "0", "1"]]), &mut keys).is_err());
        let mut mk = Vec::new();
        memcached_keys(b"set k 0 0 1\r\nx\r\n", &mut mk).unwrap();
        memcached_keys(b"delete j\r\n", &mut mk).unwrap();
        assert_eq!(mk, vec![(0, b("k")), (0, b("j"))]);
        assert!(memcached_keys(b"flush_all\r\n", &mut mk).is_err());
    }
}
