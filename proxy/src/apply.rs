//! The applier: committed entries, in log order, into the local backend.
//!
//! One task, one backend connection: order on that connection is log
//! order. Entries that are already committed are sent in pipelined
//! batches; the replies are read back in order, and the origin's client
//! gets its own reply (see [`crate::payload`]).
//!
//! The task runs on the sidecar's runtime, woken by the replica's driver,
//! so a local client's reply reaches its task without a thread hop. The
//! rare steps that block (connecting, state transfer, a donation's
//! freeze) leave the runtime's thread to the client tasks meanwhile
//! (`block_in_place`).
//!
//! The backend going away is handled so that nothing is applied twice or
//! skipped: between batches (every reply read), the applier reconnects and
//! goes on where it was, provided the server is the same process (its
//! Redis `run_id` / memcached `pid` did not change). If the server
//! restarted, or the connection broke while a batch was in flight, the
//! backend is *out of step*: the node stops serving reads and stays out of
//! the group's leadership while it loads a copy of a peer's data
//! ([`crate::transfer`]); the same happens when its replica fell behind
//! the recycled part of the log.

use crate::backend::{AsyncStream, Stream};
use crate::config::BackendKind;
use crate::digest::Compare;
use crate::payload::{self, Header, Kind, PayloadError};
use crate::pending::Applied;
use crate::state::{BackendState, Shared};
use crate::transfer::{self, DirtyKey, Reason};
use bytes::{Bytes, BytesMut};
use mu::core::SnapshotPoint;
use mu::driver::replica::Committed;
use mu_protocols::entry::Entry;
use mu_protocols::memcached::{
    McReply, McReplyDecoder, McRequestDecoder, MetaStatus, ReplyExpectation,
};
use mu_protocols::resp::{encode_request, Frame, FrameDecoder};
use mu_protocols::rewrite::{ApplyPlan, RedisApplier, Run, Step};
use mu_protocols::table;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::block_in_place;
use tokio::time::Sleep;

/// Entries per pipelined batch.
const BATCH_ENTRIES: usize = 128;
/// Bytes per pipelined batch (memcached stops reading while its replies
/// back up, so a batch must fit the socket buffers).
const BATCH_BYTES: usize = 256 << 10;
/// How long a backend may take to answer.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle applier checks that its backend is still there.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// Starts the applier task (on the current runtime, which must be
/// multi-threaded: its blocking steps use `block_in_place`).
pub fn spawn(shared: Arc<Shared>, committed: UnboundedReceiver<Committed>) {
    tokio::spawn(Applier::new(shared).run(committed));
}

/// A blocking connection to the backend.
#[derive(Debug)]
pub struct BackendConn {
    stream: Stream,
    buf: BytesMut,
    kind: BackendKind,
    frames: FrameDecoder,
    replies: McReplyDecoder,
    /// Redis: the server is standalone (not a cluster node), so an `MSET`
    /// may name any keys.
    standalone: bool,
}

impl BackendConn {
    /// Connects, authenticates (Redis, with the sidecar's credentials) and
    /// returns the connection with the server's identity.
    pub fn connect(shared: &Shared) -> Result<(BackendConn, String), String> {
        let o = &shared.opts;
        let stream = o
            .backend
            .connect(Duration::from_secs(1))
            .map_err(|e| format!("cannot connect to {}: {e}", o.backend))?;
        stream
            .set_read_timeout(Some(BACKEND_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut c = BackendConn {
            stream,
            buf: BytesMut::with_capacity(64 << 10),
            kind: o.backend_kind,
            frames: FrameDecoder::default(),
            replies: McReplyDecoder::default(),
            standalone: false,
        };
        let identity = match o.backend_kind {
            BackendKind::Redis => {
                if let Some(pass) = &o.backend_password {
                    let mut args: Vec<&[u8]> = vec![b"AUTH"];
                    if let Some(user) = &o.backend_user {
                        args.push(user.as_bytes());
                    }
                    args.push(pass.as_bytes());
                    let reply = c.call_redis(&args)?;
                    if reply.is_error() {
                        return Err(format!("AUTH refused: {}", frame_text(&reply)));
                    }
                }
                let info = c.call_redis(&[&b"INFO"[..], b"server"])?;
                let Frame::Bulk(text) = info else {
                    return Err(format!(
                        "INFO server answered {} (does the sidecar need --backend-password?)",
                        frame_text(&info)
                    ));
                };
                c.standalone = field(&text, "redis_mode:").as_deref() == Some("standalone");
                field(&text, "run_id:").ok_or("INFO server has no run_id")?
            }
            BackendKind::Memcached => {
                let mut out = BytesMut::new();
                out.extend_from_slice(b"stats\r\n");
                c.send(&out)?;
                match c.read_mc()? {
                    McReply::Stats(stats) => stats
                        .iter()
                        .find(|(k, _)| &k[..] == b"pid")
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        .ok_or("stats has no pid")?,
                    other => return Err(format!("stats answered {other:?}")),
                }
            }
        };
        Ok((c, identity))
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("write to backend: {e}"))
    }

    fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 64 << 10];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("backend closed the connection".into()),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                // A slow backend (or this process stopped and resumed) is
                // not a broken stream: the replies still come, in order.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    tracing::warn!("the backend has not answered for {BACKEND_TIMEOUT:?}; waiting");
                }
                Err(e) => return Err(format!("read from backend: {e}")),
            }
        }
    }

    /// Reads one RESP reply.
    pub fn read_frame(&mut self) -> Result<Frame, String> {
        loop {
            match self.frames.decode(&mut self.buf) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => self.fill()?,
                Err(e) => return Err(format!("backend sent a malformed reply: {e}")),
            }
        }
    }

    /// Reads one memcached reply.
    pub fn read_mc(&mut self) -> Result<McReply, String> {
        loop {
            match self.replies.decode(&mut self.buf) {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => self.fill()?,
                Err(e) => return Err(format!("backend sent a malformed reply: {e}")),
            }
        }
    }

    /// Reads one line (without its LF or CRLF), for replies the decoders
    /// do not cover (memcached's `lru_crawler metadump` ends its item
    /// lines with a bare LF).
    pub fn read_line(&mut self) -> Result<Bytes, String> {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(at + 1).freeze();
                let end = if at > 0 && line[at - 1] == b'\r' {
                    at - 1
                } else {
                    at
                };
                return Ok(line.slice(..end));
            }
            if self.buf.len() > 1 << 20 {
                return Err("the backend sent a line over 1 MiB".into());
            }
            self.fill()?;
        }
    }

    /// Deletes everything the server holds (Redis: every database).
    pub fn flush_all(&mut self) -> Result<(), String> {
        match self.kind {
            BackendKind::Redis => match self.call_redis(&[b"FLUSHALL"])? {
                Frame::Simple(_) => Ok(()),
                other => Err(format!("FLUSHALL answered {}", frame_text(&other))),
            },
            BackendKind::Memcached => {
                self.send(b"flush_all\r\n")?;
                match self.read_mc()? {
                    McReply::Ok => Ok(()),
                    other => Err(format!("flush_all answered {other:?}")),
                }
            }
        }
    }

    /// Sends one Redis command and reads its reply.
    pub fn call_redis(&mut self, args: &[&[u8]]) -> Result<Frame, String> {
        let mut out = BytesMut::new();
        encode_request(args, &mut out);
        self.send(&out)?;
        self.read_frame()
    }

    /// True when the server holds any data (Redis: a key in any database;
    /// memcached: any item).
    pub fn holds_data(&mut self) -> Result<bool, String> {
        match self.kind {
            BackendKind::Redis => match self.call_redis(&[&b"INFO"[..], b"keyspace"])? {
                Frame::Bulk(text) => Ok(String::from_utf8_lossy(&text)
                    .lines()
                    .any(|l| l.starts_with("db"))),
                other => Err(format!("INFO keyspace answered {}", frame_text(&other))),
            },
            BackendKind::Memcached => {
                self.send(b"stats\r\n")?;
                match self.read_mc()? {
                    McReply::Stats(stats) => Ok(stats
                        .iter()
                        .any(|(k, v)| &k[..] == b"curr_items" && &v[..] != b"0")),
                    other => Err(format!("stats answered {other:?}")),
                }
            }
        }
    }

    /// The connection for the applier task (inside the runtime); bytes
    /// already read stay buffered.
    fn into_async(self) -> Result<AsyncConn, String> {
        let stream = self
            .stream
            .into_async()
            .map_err(|e| format!("backend connection: {e}"))?;
        Ok(AsyncConn {
            stream,
            buf: self.buf,
            frames: self.frames,
            replies: self.replies,
            kind: self.kind,
            standalone: self.standalone,
            patience: None,
        })
    }
}

/// The applier's connection to the backend, on the runtime.
#[derive(Debug)]
struct AsyncConn {
    stream: AsyncStream,
    buf: BytesMut,
    frames: FrameDecoder,
    replies: McReplyDecoder,
    kind: BackendKind,
    standalone: bool,
    /// When a read that waits warns of a slow backend: one timer for the
    /// connection, made on its first read.
    patience: Option<Pin<Box<Sleep>>>,
}

impl AsyncConn {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("write to backend: {e}"))
    }

    /// Reads more bytes; a slow backend is waited for (the replies still
    /// come, in order), with a warning each time it has not answered for
    /// half of [`BACKEND_TIMEOUT`] to all of it.
    ///
    /// The timer is moved later only once half of it has run: a new (or
    /// earlier) timer at each read would wake the runtime's I/O driver when
    /// no earlier timer is due, one more syscall and turn of the event loop
    /// for every reply of a lone client.
    async fn fill(&mut self) -> Result<(), String> {
        let patience = self
            .patience
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(BACKEND_TIMEOUT)));
        loop {
            #[allow(clippy::disallowed_methods, reason = "a timer's deadline")]
            let now = tokio::time::Instant::now();
            if patience.deadline() < now + BACKEND_TIMEOUT / 2 {
                patience.as_mut().reset(now + BACKEND_TIMEOUT);
            }
            tokio::select! {
                biased;
                read = self.stream.read_buf(&mut self.buf) => match read {
                    Ok(0) => return Err("backend closed the connection".into()),
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("read from backend: {e}")),
                },
                () = patience.as_mut() => {
                    tracing::warn!(
                        "the backend has not answered for {:?} or more; waiting",
                        BACKEND_TIMEOUT / 2
                    );
                }
            }
        }
    }

    /// Reads until `decode` takes a whole reply from the buffer.
    async fn read_with<T, E: std::fmt::Display>(
        &mut self,
        decode: impl Fn(&mut Self) -> Result<Option<T>, E>,
    ) -> Result<T, String> {
        loop {
            match decode(self) {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => self.fill().await?,
                Err(e) => return Err(format!("backend sent a malformed reply: {e}")),
            }
        }
    }

    async fn read_frame(&mut self) -> Result<Frame, String> {
        self.read_with(|c| c.frames.decode(&mut c.buf)).await
    }

    async fn read_mc(&mut self) -> Result<McReply, String> {
        self.read_with(|c| c.replies.decode(&mut c.buf)).await
    }

    /// A cheap round trip that proves the server is there.
    async fn ping(&mut self) -> Result<(), String> {
        match self.kind {
            BackendKind::Redis => {
                let mut out = BytesMut::new();
                encode_request(&[b"PING"], &mut out);
                self.send(&out).await?;
                self.read_frame().await.map(|_| ())
            }
            BackendKind::Memcached => {
                self.send(b"mn\r\n").await?;
                self.read_mc().await.map(|_| ())
            }
        }
    }
}

/// The text of a reply, for messages.
pub fn frame_text(f: &Frame) -> String {
    match f {
        Frame::Simple(b) | Frame::Error(b) | Frame::Bulk(b) | Frame::BulkError(b) => {
            String::from_utf8_lossy(b).into_owned()
        }
        other => format!("{other:?}"),
    }
}

/// The value of `name` in an INFO-style `name:value` text.
fn field(text: &Bytes, name: &str) -> Option<String> {
    String::from_utf8_lossy(text)
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
}

/// The payloads of a committed entry: itself, or a batch's members.
fn members(c: &Committed) -> Vec<Result<(Header, &[u8]), PayloadError>> {
    match payload::decode(&c.payload) {
        Ok((h, body)) if h.kind == Kind::Batch => match payload::decode_batch(body) {
            Ok(ms) => ms.into_iter().map(payload::decode).collect(),
            Err(e) => vec![Err(e)],
        },
        other => vec![other],
    }
}

/// Completes the waiters of this node's writes in `c` with `why`.
fn fail_own(shared: &Shared, c: &Committed, why: &str) {
    for (h, _) in members(c).into_iter().flatten() {
        if h.origin == shared.opts.id && h.kind != Kind::Batch {
            shared
                .pending
                .complete(h.tag, Applied::NotApplied(why.to_string()));
        }
    }
}

/// What to read back for one entry of a batch.
enum Plan {
    /// Nothing was sent (barrier, undecodable entry, aborted transaction).
    Done(Option<Applied>),
    /// Redis: `replies` replies, the client's at `client`; `compare`: what
    /// of the client's reply is the same on every healthy node (see
    /// [`replies_compare`]).
    Redis {
        replies: usize,
        client: usize,
        compare: Compare,
    },
    /// Redis: the entry joined a run of plain SETs; the run's reply, read
    /// at its [`Plan::Run`], is its answer.
    Joined,
    /// Redis: a run of joined entries, sent here (no entry of its own).
    Run(Run),
    /// memcached: one reply.
    McOne,
    /// memcached: replies up to the `MN` sent after the request.
    McUntilNoop,
}

struct Applier {
    shared: Arc<Shared>,
    conn: Option<AsyncConn>,
    identity: Option<String>,
    redis: RedisApplier,
    out: BytesMut,
    /// Per payload: what to read back, its origin's tag when it is ours,
    /// its log index, and whether it ends its log entry.
    plans: Vec<(Plan, Option<u64>, u64, bool)>,
    /// What the plans produced, reused from batch to batch.
    outcomes: Vec<Outcome>,
    /// Positions in `outcomes` of entries waiting for their run's reply.
    joined: Vec<usize>,
    /// Highest index taken from the replica.
    taken: u64,
    /// Entries up to this index are in the backend through a transfer.
    skip_through: u64,
    /// The replica's point after the last entry the backend reflects.
    point: SnapshotPoint,
    /// Keys the current batch writes, while a donation tracks them.
    batch_keys: Vec<DirtyKey>,
    /// Why the current batch may write keys it does not name.
    batch_wholesale: Option<String>,
}

impl Applier {
    fn new(shared: Arc<Shared>) -> Self {
        Applier {
            shared,
            conn: None,
            identity: None,
            redis: RedisApplier::default(),
            out: BytesMut::with_capacity(BATCH_BYTES),
            plans: Vec::with_capacity(BATCH_ENTRIES),
            outcomes: Vec::with_capacity(BATCH_ENTRIES),
            joined: Vec::with_capacity(BATCH_ENTRIES),
            taken: 0,
            skip_through: 0,
            point: SnapshotPoint {
                applied: 0,
                hash: 0,
                apply_pos: 0,
            },
            batch_keys: Vec::new(),
            batch_wholesale: None,
        }
    }

    async fn run(mut self, mut committed: UnboundedReceiver<Committed>) {
        let mut batch: Vec<Committed> = Vec::with_capacity(BATCH_ENTRIES);
        block_in_place(|| self.ensure_backend());
        #[allow(clippy::disallowed_methods, reason = "health checks are timed")]
        let mut checked = Instant::now();
        loop {
            if let Some(reason) = self.transfer_needed() {
                block_in_place(|| self.transfer_in(reason));
                continue;
            }
            // Checked by time, not only when idle: entries that send the
            // backend nothing (barriers) must not hide its loss.
            if checked.elapsed() >= IDLE_CHECK {
                self.idle_check().await;
                checked = Instant::now();
            }
            // A donation in progress may ask to freeze at the applied point
            // between two batches; it is looked for often meanwhile.
            let wait = if self.shared.transfer.tracking() {
                let redis = &self.redis;
                let (transfer, point) = (&self.shared.transfer, self.point);
                block_in_place(|| transfer.between_batches(point, || redis.watch_state()));
                Duration::from_millis(2)
            } else {
                IDLE_CHECK
            };
            match tokio::time::timeout(wait, committed.recv()).await {
                Ok(Some(c)) => batch.push(c),
                Err(_) => continue,
                Ok(None) => return,
            }
            let mut bytes = batch[0].payload.len();
            while batch.len() < BATCH_ENTRIES && bytes < BATCH_BYTES {
                match committed.try_recv() {
                    Ok(c) => {
                        bytes += c.payload.len();
                        batch.push(c);
                    }
                    Err(_) => break,
                }
            }
            self.taken = batch[batch.len() - 1].index;
            self.skip_transferred(&mut batch);
            if !batch.is_empty() {
                self.apply(&batch).await;
            }
            batch.clear();
        }
    }

    /// Drops entries the backend holds through a state transfer; this
    /// node's own writes among them are answered as such.
    fn skip_transferred(&mut self, batch: &mut Vec<Committed>) {
        if batch[0].index > self.skip_through {
            return;
        }
        batch.retain(|c| {
            let skip = c.index <= self.skip_through;
            if skip {
                fail_own(
                    &self.shared,
                    c,
                    "committed, and applied here through a state transfer; \
                     its reply is unknown",
                );
            }
            !skip
        });
    }

    /// Why this node must load a copy of a peer's data now, if it must.
    fn transfer_needed(&self) -> Option<Reason> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return None;
        }
        if self.shared.backend.state() == BackendState::OutOfStep {
            return Some(Reason::Backend);
        }
        if self.shared.opts.on_divergence == crate::config::OnDivergence::Resync
            && self.shared.digests.diverged()
        {
            return Some(Reason::Diverged);
        }
        self.shared
            .status()
            .filter(|s| s.needs_state_transfer)
            .map(|_| Reason::BehindRing)
    }

    /// Loads a copy of a peer's data into the backend, asking donors in
    /// turn until one succeeds (or the sidecar stops). The replica stays
    /// out of leadership and entries wait in the channel meanwhile.
    fn transfer_in(&mut self, reason: Reason) {
        let shared = self.shared.clone();
        let m = &shared.metrics;
        let why = match reason {
            Reason::Backend => shared.backend.detail(),
            Reason::BehindRing => {
                "the replica fell behind the part of the log the group recycled".into()
            }
            Reason::Diverged => shared.digests.diverged_detail(shared.opts.digest_every),
        };
        tracing::warn!(reason = reason.label(), detail = %why,
            "state transfer needed: this node's data will be replaced by a copy of a peer's");
        m.transfers_needed
            .with_label_values(&[reason.label()])
            .inc();
        m.transferring.set(1);
        m.backend_up.set(0);
        shared.replica.pause(true);
        self.conn = None;
        #[allow(clippy::disallowed_methods, reason = "transfers are timed")]
        let started = Instant::now();
        loop {
            if shared.stopping.load(Ordering::Acquire) {
                m.transferring.set(0);
                return;
            }
            let behind = shared.status().filter(|s| s.needs_state_transfer);
            let min = self
                .taken
                .max(behind.map_or(0, |s| s.applied + 1))
                .max(self.skip_through);
            for donor in transfer::donors(&shared) {
                shared.backend.set(
                    BackendState::Transferring,
                    format!(
                        "{why}; loading a copy of node {}'s data at index {min} or later",
                        donor.0 + 1
                    ),
                );
                match transfer::receive(&shared, donor, min) {
                    Ok(loaded) => {
                        self.transferred(loaded, started);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(donor = donor.0 + 1, error = %e,
                            "state transfer attempt failed; trying the next donor");
                        m.transfers.with_label_values(&["receiver", "failed"]).inc();
                    }
                }
            }
            // Every donor refused or failed (e.g. all of them are also out
            // of step): wait before asking them again.
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Goes on from a completed transfer.
    fn transferred(&mut self, loaded: transfer::Loaded, started: Instant) {
        let shared = self.shared.clone();
        let m = &shared.metrics;
        let point = loaded.point;
        if self.shared.opts.backend_kind == BackendKind::Redis {
            if let Err(e) = self.redis.restore_watch_state(&loaded.state) {
                tracing::error!(error = %e, "transferred WATCH history unusable; WATCH guards \
                    after the transfer may be decided differently here");
            }
        }
        // A replica behind the ring goes on from the copy's point; so does
        // a restarted one still rejoining (otherwise it would replay, and
        // this node skip, every entry up to the point).
        if shared
            .status()
            .is_some_and(|s| s.needs_state_transfer || s.recovering)
        {
            shared.replica.install_snapshot(point);
        }
        self.skip_through = point.applied;
        shared.digests.transferred(point.applied);
        m.diverged.set(0);
        self.point = point;
        self.taken = self.taken.max(point.applied);
        match loaded.conn.into_async() {
            Ok(c) => self.conn = Some(c),
            // Reconnected (same server, so in step) before the next batch.
            Err(e) => tracing::warn!(error = %e, "backend connection after the transfer"),
        }
        self.identity = Some(loaded.identity);
        self.redis.forget_connection();
        shared.backend.set_applied(point.applied);
        shared.backend.set(
            BackendState::Up,
            format!("loaded through a state transfer at index {}", point.applied),
        );
        m.backend_up.set(1);
        m.transferring.set(0);
        m.transfers.with_label_values(&["receiver", "ok"]).inc();
        m.transfer_seconds.set(started.elapsed().as_secs_f64());
        shared
            .replica
            .pause(shared.stopping.load(Ordering::Acquire));
        tracing::info!(
            index = point.applied,
            records = loaded.stats.records,
            bytes = loaded.stats.bytes,
            seconds = started.elapsed().as_secs_f64(),
            "state transfer complete; applying the log from the next entry"
        );
    }

    async fn idle_check(&mut self) {
        if self.shared.backend.state() == BackendState::OutOfStep {
            return;
        }
        let ok = match self.conn.as_mut() {
            Some(c) => c.ping().await.is_ok(),
            None => false,
        };
        if !ok {
            self.conn = None;
            block_in_place(|| self.ensure_backend());
        }
    }

    /// Connects if needed. Returns false when the backend is out of step.
    fn ensure_backend(&mut self) -> bool {
        let health = &self.shared.backend;
        loop {
            if health.state() == BackendState::OutOfStep {
                return false;
            }
            if self.conn.is_some() {
                return true;
            }
            match BackendConn::connect(&self.shared) {
                Ok((mut c, identity)) => {
                    if self.identity.is_none() && !self.shared.opts.adopt_backend_data {
                        match c.holds_data() {
                            Ok(false) => {}
                            Ok(true) => {
                                self.out_of_step(
                                    "the backend already held data when this sidecar started, \
                                     so which log entries that data reflects is unknown; it is \
                                     replaced by a copy of a peer's (start with \
                                     --adopt-backend-data instead when every node's backend \
                                     holds the same data and the group's log is empty)"
                                        .into(),
                                );
                                return false;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot tell whether the backend is empty");
                                std::thread::sleep(Duration::from_millis(100));
                                continue;
                            }
                        }
                    }
                    if let Some(old) = &self.identity {
                        if *old != identity {
                            self.out_of_step(format!(
                                "the backend restarted (identity {old} became {identity}) \
                                 and lost the replicated data"
                            ));
                            return false;
                        }
                    }
                    let c = match c.into_async() {
                        Ok(c) => c,
                        Err(e) => {
                            self.backend_down(e);
                            continue;
                        }
                    };
                    self.identity = Some(identity);
                    self.redis.forget_connection();
                    self.conn = Some(c);
                    health.set(BackendState::Up, "connected");
                    self.shared.metrics.backend_up.set(1);
                    self.shared
                        .replica
                        .pause(self.shared.stopping.load(Ordering::Acquire));
                    tracing::info!(backend = %self.shared.opts.backend, "backend connected");
                    return true;
                }
                Err(e) => self.backend_down(e),
            }
        }
    }

    /// The backend cannot be reached (or its connection not used): the
    /// node steps down, and the next attempt comes after a pause.
    fn backend_down(&self, e: String) {
        let health = &self.shared.backend;
        if health.state() != BackendState::Down {
            tracing::error!(error = %e, "backend unreachable; stepping down");
            self.shared
                .metrics
                .backend_errors
                .with_label_values(&["connect"])
                .inc();
        }
        health.set(BackendState::Down, e);
        self.shared.metrics.backend_up.set(0);
        // A node that cannot apply must not lead.
        self.shared.replica.pause(true);
        std::thread::sleep(Duration::from_millis(100));
    }

    fn out_of_step(&mut self, why: String) {
        tracing::error!(reason = %why, "backend out of step with the log; not serving reads");
        self.shared
            .metrics
            .backend_errors
            .with_label_values(&["lost"])
            .inc();
        self.shared.metrics.backend_up.set(0);
        self.shared.backend.set(BackendState::OutOfStep, why);
        self.shared.replica.pause(true);
        self.conn = None;
    }

    async fn apply(&mut self, batch: &[Committed]) {
        let in_step = self.conn.is_some() && self.shared.backend.state() != BackendState::OutOfStep
            || block_in_place(|| self.ensure_backend());
        if !in_step {
            let why = format!(
                "committed, but this node's backend is out of step ({}); not applied here",
                self.shared.backend.detail()
            );
            for c in batch {
                fail_own(&self.shared, c, &why);
            }
            return;
        }
        self.out.clear();
        self.plans.clear();
        let me = self.shared.opts.id;
        let kind = self.shared.opts.backend_kind;
        let join = self.shared.opts.join_sets && self.conn.as_ref().is_some_and(|c| c.standalone);
        for c in batch {
            // One copy of the entry; its members' arguments are slices of it.
            let whole = Bytes::copy_from_slice(&c.payload);
            let ms = members(c);
            let count = ms.len();
            for (k, m) in ms.into_iter().enumerate() {
                let m = m.map(|(h, body)| {
                    let at = body.as_ptr() as usize - c.payload.as_ptr() as usize;
                    (h, whole.slice(at..at + body.len()))
                });
                let plan = self.plan(c.index, m, me, kind, join);
                self.plans.push((plan.0, plan.1, c.index, k + 1 == count));
            }
        }
        if let Some(run) = self.redis.finish_run(&mut self.out) {
            let index = batch[batch.len() - 1].index;
            self.plans.push((Plan::Run(run), None, index, false));
        }
        match self.exchange().await {
            Ok(()) => {
                self.point = batch[batch.len() - 1].point;
                self.shared
                    .transfer
                    .note(&mut self.batch_keys, self.batch_wholesale.take());
            }
            Err(e) => {
                self.batch_keys.clear();
                self.batch_wholesale = None;
                self.out_of_step(format!(
                    "the connection broke with entries {}..={} in flight: {e}",
                    batch[0].index,
                    batch[batch.len() - 1].index
                ));
                self.apply_failed(batch);
            }
        }
    }

    /// Encodes one payload's backend requests into the batch output and
    /// says what to read back.
    fn plan(
        &mut self,
        index: u64,
        m: Result<(Header, Bytes), PayloadError>,
        me: u8,
        kind: BackendKind,
        join: bool,
    ) -> (Plan, Option<u64>) {
        let (header, body) = match m {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(index, error = %e, "undecodable log entry skipped");
                return (Plan::Done(None), None);
            }
        };
        let tag = (header.origin == me).then_some(header.tag);
        if header.kind != Kind::Write {
            return (Plan::Done(Some(Applied::Barrier)), tag);
        }
        let entry = Entry::decode(&body);
        if self.shared.transfer.tracking() {
            let r = match &entry {
                Ok(e @ Entry::Redis(_)) => transfer::redis_keys(e, &mut self.batch_keys),
                Ok(Entry::Memcached(req)) => transfer::memcached_keys(req, &mut self.batch_keys),
                Err(_) => Ok(()),
            };
            if let Err(why) = r {
                self.batch_wholesale.get_or_insert(why);
            }
        }
        let plan = match (kind, entry) {
            (BackendKind::Redis, Ok(Entry::Redis(e))) => {
                let step = if join {
                    self.redis.apply_joining(index, &e, &mut self.out)
                } else {
                    Step::Plan {
                        before: None,
                        plan: self.redis.apply(index, &e, &mut self.out),
                    }
                };
                let (Step::Joined { before } | Step::Plan { before, .. }) = step;
                if let Some(run) = before {
                    self.plans.push((Plan::Run(run), None, index, false));
                }
                match step {
                    Step::Joined { .. } => Plan::Joined,
                    Step::Plan {
                        plan:
                            ApplyPlan::Send {
                                replies,
                                client_reply,
                            },
                        ..
                    } => Plan::Redis {
                        replies,
                        client: client_reply,
                        compare: replies_compare(&e),
                    },
                    Step::Plan {
                        plan: ApplyPlan::Aborted,
                        ..
                    } => Plan::Done(Some(Applied::Redis(Frame::NullArray))),
                }
            }
            (BackendKind::Memcached, Ok(Entry::Memcached(req))) => {
                let expect = McRequestDecoder::default()
                    .decode(&mut BytesMut::from(&req[..]))
                    .ok()
                    .flatten()
                    .map(|r| r.reply_expectation());
                self.out.extend_from_slice(&req);
                match expect {
                    Some(ReplyExpectation::One) => Plan::McOne,
                    _ => {
                        // noreply and quiet requests: an `mn` after them
                        // bounds whatever the server sends (an error
                        // line despite noreply included).
                        self.out.extend_from_slice(b"mn\r\n");
                        Plan::McUntilNoop
                    }
                }
            }
            (_, other) => {
                let why = match other {
                    Err(e) => format!("undecodable entry: {e}"),
                    Ok(_) => "an entry for another kind of backend".to_string(),
                };
                tracing::error!(index = index, reason = %why, "log entry skipped");
                Plan::Done(Some(Applied::NotApplied(why)))
            }
        };
        (plan, tag)
    }

    /// Sends the batch and reads every reply, delivering the origin's.
    async fn exchange(&mut self) -> Result<(), String> {
        let shared = self.shared.clone();
        let Some(conn) = self.conn.as_mut() else {
            return Err("no backend connection".into());
        };
        if !self.out.is_empty() {
            conn.send(&self.out).await?;
        }
        // The outcomes read back are handed on together, under one lock
        // each of the digests and the waiters, also when the connection
        // breaks half way.
        let done = &mut self.outcomes;
        let read = read_outcomes(conn, self.plans.drain(..), done, &mut self.joined, &shared).await;
        shared.digests.fold_all(
            done.iter()
                .map(|d| (d.index, d.applied.as_ref(), &d.compare)),
        );
        if let Some(d) = done.iter().rev().find(|d| d.last) {
            shared.backend.set_applied(d.index);
        }
        shared
            .pending
            .complete_all(done.drain(..).filter_map(|d| Some((d.tag?, d.applied?))));
        read
    }

    fn apply_failed(&mut self, batch: &[Committed]) {
        let applied = self.shared.backend.applied();
        for c in batch.iter().filter(|c| c.index > applied) {
            fail_own(
                &self.shared,
                c,
                "committed, but the backend connection broke while it was applied here; \
                 the other replicas hold it",
            );
        }
    }
}

/// What applying one payload produced.
struct Outcome {
    index: u64,
    /// The tag of this node's write, if it is one.
    tag: Option<u64>,
    applied: Option<Applied>,
    /// What of the reply is the same on every healthy node, so the
    /// divergence digests compare it.
    compare: Compare,
    /// The entry's last payload: the entry is applied.
    last: bool,
}

/// Reads the backend's replies for each plan, in order, into `done`
/// (`joined`: scratch for the positions of entries waiting for their
/// run's reply). When the connection breaks, `done` ends before the
/// first entry whose reply was not read.
async fn read_outcomes(
    conn: &mut AsyncConn,
    plans: impl Iterator<Item = (Plan, Option<u64>, u64, bool)>,
    done: &mut Vec<Outcome>,
    joined: &mut Vec<usize>,
    shared: &Shared,
) -> Result<(), String> {
    joined.clear();
    let read = read_plans(conn, plans, done, joined, shared).await;
    if let Some(&first) = joined.first() {
        debug_assert!(read.is_err(), "a run of SETs left unsent");
        done.truncate(first);
    }
    read
}

async fn read_plans(
    conn: &mut AsyncConn,
    plans: impl Iterator<Item = (Plan, Option<u64>, u64, bool)>,
    done: &mut Vec<Outcome>,
    joined: &mut Vec<usize>,
    shared: &Shared,
) -> Result<(), String> {
    for (plan, tag, index, last) in plans {
        let mut compare = Compare::Whole;
        let applied = match plan {
            Plan::Done(a) => a,
            Plan::Joined => {
                joined.push(done.len());
                None
            }
            Plan::Run(run) => {
                let answer = read_redis(conn, run.replies, run.client_reply, index, shared).await?;
                if let Some(f) = answer.as_ref().filter(|f| f.is_error()) {
                    // Counted per write, as if each had been refused alone.
                    let extra = run.members.saturating_sub(1) as u64;
                    shared.metrics.apply_error_replies.inc_by(extra);
                    let text = frame_text(f);
                    if run.members > 1 && text.starts_with("NOPERM") {
                        tracing::error!(index, reply = %text,
                            "the backend refused an MSET of joined SETs: give the sidecar's \
                             backend user +mset, or start it with --join-sets false");
                    }
                }
                for at in joined.drain(..) {
                    done[at].applied = answer.clone().map(Applied::Redis);
                }
                continue;
            }
            Plan::Redis {
                replies,
                client,
                compare: c,
            } => {
                compare = c;
                read_redis(conn, replies, client, index, shared)
                    .await?
                    .map(Applied::Redis)
            }
            Plan::McOne => {
                let r = conn.read_mc().await?;
                if is_mc_error(&r) {
                    shared.metrics.apply_error_replies.inc();
                }
                Some(Applied::Memcached(Some(r)))
            }
            Plan::McUntilNoop => {
                let mut last = None;
                loop {
                    let r = conn.read_mc().await?;
                    if matches!(r, McReply::Meta(ref m) if m.status == MetaStatus::Mn) {
                        break;
                    }
                    last = Some(r);
                }
                Some(Applied::Memcached(last))
            }
        };
        done.push(Outcome {
            index,
            tag,
            applied,
            compare,
            last,
        });
    }
    Ok(())
}

/// Reads `replies` Redis replies and returns the one at `client`; errors
/// in the others (`SELECT`, `MULTI`, `+QUEUED`) are logged.
async fn read_redis(
    conn: &mut AsyncConn,
    replies: usize,
    client: usize,
    index: u64,
    shared: &Shared,
) -> Result<Option<Frame>, String> {
    let mut answer = None;
    for r in 0..replies {
        let f = conn.read_frame().await?;
        if r == client {
            if f.is_error() {
                shared.metrics.apply_error_replies.inc();
            }
            answer = Some(f);
        } else if f.is_error() {
            tracing::warn!(index, reply = %frame_text(&f),
                "backend refused a step of a replicated entry");
        }
    }
    Ok(answer)
}

/// What of the entry's reply healthy nodes give alike. A read queued in a
/// transaction may list a big set or hash in the order of each server's
/// own hash seed, pick random members (SRANDMEMBER, HRANDFIELD), or see
/// the time at which each node applies it (PTTL); `PUBLISH` counts the
/// subscribers of each server, which differ. So a transaction's results
/// of such steps are left out, and the reply of an entry that publishes
/// outside one. Writes and their replies are the same everywhere
/// (nondeterministic writes are refused, replicated scripts trusted to be
/// deterministic).
fn replies_compare(entry: &mu_protocols::entry::RedisEntry) -> Compare {
    if !entry.transaction {
        // No table lookup for the common entry: outside a transaction an
        // entry holds no read (reads are served locally; `--reads leader`
        // replicates a barrier, not the read), and PUBLISH is known by name.
        let publishes = entry
            .commands
            .iter()
            .any(|c| c.first().is_some_and(is_publish));
        return if publishes {
            Compare::Nothing
        } else {
            Compare::Whole
        };
    }
    let same = |c: &Vec<Bytes>| {
        table::lookup_args(c).is_none_or(|s| {
            !matches!(
                table::class_of(s),
                table::CommandClass::PubSub | table::CommandClass::Read
            )
        })
    };
    // A transaction of writes only (the usual one) allocates no mask.
    if entry.commands.iter().all(same) {
        Compare::Whole
    } else {
        Compare::Steps(entry.commands.iter().map(same).collect())
    }
}

fn is_publish(name: &Bytes) -> bool {
    name.eq_ignore_ascii_case(b"publish") || name.eq_ignore_ascii_case(b"spublish")
}

fn is_mc_error(r: &McReply) -> bool {
    matches!(
        r,
        McReply::Error(_) | McReply::ClientError(_) | McReply::ServerError(_)
    )
}
