//! One Redis client connection.
//!
//! Requests are decoded as they arrive and answered in order. Each
//! request is rewritten by the connection's [`RedisSession`]:
//! - writes are replicated (see [`crate::replicate`]); consecutive writes
//!   are pipelined into Mu together;
//! - reads and connection commands (AUTH, HELLO, CLIENT, ...) go to this
//!   client's own connection to the local backend, in the client's
//!   database, so per-connection state lives where Redis keeps it;
//! - a read waits for every earlier write of the same connection, so a
//!   client always reads its own writes;
//! - refused commands get an error and change nothing anywhere.

use crate::backend::AsyncStream;
use crate::conn::{self, Place, ReadBlock};
use crate::metrics::Tally;
use crate::pending::Applied;
use crate::replicate::{self, WriteError};
use crate::state::Shared;
use bytes::{Bytes, BytesMut};
use mu_protocols::entry::Entry;
use mu_protocols::resp::{encode_request, Frame, FrameDecoder, Request, RequestDecoder};
use mu_protocols::rewrite::{Action, Context, RedisSession};
use mu_protocols::table::{class_of, lookup, CommandClass};
use mu_protocols::ProtocolError;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The user of a connection that has not authenticated (Redis's own).
const DEFAULT_USER: &[u8] = b"default";

/// What a request changes that later permission checks depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Changes {
    /// The connection's user (AUTH, HELLO, RESET).
    User,
    /// Some user's permissions (ACL).
    Permissions,
}

fn changes_permissions(r: &Request) -> Option<Changes> {
    let n = r.name();
    if [&b"auth"[..], b"hello", b"reset"]
        .iter()
        .any(|b| n.eq_ignore_ascii_case(b))
    {
        Some(Changes::User)
    } else if n.eq_ignore_ascii_case(b"acl") {
        Some(Changes::Permissions)
    } else {
        None
    }
}

/// The length of the batch's first segment: requests checked against one
/// user's permissions together. A request that changes the user or the
/// permissions is a segment of its own, run before the next segment is
/// checked.
fn segment_len(reqs: &[Request]) -> usize {
    match reqs.iter().position(|r| changes_permissions(r).is_some()) {
        Some(0) => 1,
        Some(i) => i,
        None => reqs.len(),
    }
}

/// One step of a pipelined batch.
enum Step {
    /// Answer known already.
    Ready(Frame),
    /// Replicate this entry and answer with the applied reply (taken
    /// when the run is replicated).
    Write(Option<Entry>),
    /// Serve on this client's backend connection in database `db`.
    Local { req: Request, db: u32, read: bool },
}

impl Step {
    fn place(&self) -> Place {
        match self {
            Step::Ready(_) => Place::Ready,
            Step::Write(..) => Place::Write,
            Step::Local { .. } => Place::Local,
        }
    }
}

/// A connection to the backend: each client's own, and the sidecar's
/// permission checks (`crate::acl`).
#[derive(Debug)]
pub(crate) struct LocalConn {
    stream: AsyncStream,
    buf: BytesMut,
    frames: FrameDecoder,
    db: u32,
}

impl LocalConn {
    /// A new, unauthenticated connection in database 0.
    pub(crate) async fn connect(shared: &Shared) -> Result<LocalConn, String> {
        let backend = &shared.opts.backend;
        let stream = backend
            .connect_async()
            .await
            .map_err(|e| format!("cannot reach the backend at {backend}: {e}"))?;
        Ok(LocalConn {
            stream,
            buf: BytesMut::with_capacity(16 << 10),
            frames: FrameDecoder::default(),
            db: 0,
        })
    }

    async fn read_frame(&mut self) -> Result<Frame, String> {
        loop {
            match self.frames.decode(&mut self.buf) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(format!("the backend sent a malformed reply: {e}")),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err("the backend closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading from the backend: {e}")),
            }
        }
    }

    /// Sends the requests (each in its database) and returns their replies.
    pub(crate) async fn exchange(
        &mut self,
        reqs: &[(&Request, u32)],
    ) -> Result<Vec<Frame>, String> {
        let mut out = BytesMut::new();
        // Per request: whether a SELECT precedes it.
        let mut selects = Vec::with_capacity(reqs.len());
        let mut db = self.db;
        for (req, want) in reqs {
            let select = *want != db;
            if select {
                encode_request(&[&b"SELECT"[..], want.to_string().as_bytes()], &mut out);
                db = *want;
            }
            selects.push(select);
            encode_request(&req.args, &mut out);
        }
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("writing to the backend: {e}"))?;
        let mut replies = Vec::with_capacity(reqs.len());
        for ((req, want), select) in reqs.iter().zip(selects) {
            if select {
                let f = self.read_frame().await?;
                if f.is_error() {
                    // Not authenticated yet, most likely: the command's
                    // own reply will say so too.
                    self.db = u32::MAX;
                } else {
                    self.db = *want;
                }
            }
            let f = self.read_frame().await?;
            if req.name().eq_ignore_ascii_case(b"reset") {
                self.db = 0;
            }
            replies.push(f);
        }
        Ok(replies)
    }
}

/// Serves one client until it disconnects.
pub async fn serve(shared: Arc<Shared>, sock: TcpStream) -> io::Result<()> {
    let c = Client {
        session: RedisSession::new(shared.opts.databases, shared.opts.trust_scripts),
        backend: None,
        authed: shared.opts.backend_password.is_none(),
        user: Bytes::from_static(DEFAULT_USER),
        out: BytesMut::with_capacity(16 << 10),
        decoder: RequestDecoder::default(),
        shared,
    };
    conn::serve(c, sock).await
}

impl conn::Session for Client {
    type Request = Request;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        self.decoder.decode(buf)
    }

    async fn handle(&mut self, reqs: Vec<Request>) -> bool {
        Client::handle(self, reqs).await
    }

    fn protocol_error(&mut self, e: &ProtocolError) {
        Frame::error(format!("ERR Protocol error: {e}")).encode(&mut self.out);
    }

    fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }
}

struct Client {
    shared: Arc<Shared>,
    session: RedisSession,
    backend: Option<LocalConn>,
    /// False while the backend needs AUTH and this client has not passed it.
    authed: bool,
    /// The ACL user this client authenticated as.
    user: Bytes,
    out: BytesMut,
    decoder: RequestDecoder,
}

impl Client {
    /// Handles a batch; returns true when the client asked to quit.
    async fn handle(&mut self, reqs: Vec<Request>) -> bool {
        let mut steps: Vec<Step> = Vec::new();
        // The clock is read once per batch of requests that arrived
        // together, and again after each wait for earlier writes.
        let mut now = now_ms();
        let mut rest = reqs;
        while !rest.is_empty() {
            let tail = rest.split_off(segment_len(&rest));
            let segment = std::mem::replace(&mut rest, tail);
            let changes = changes_permissions(&segment[0]);
            let shared = self.shared.clone();
            let denied = shared.acl.check(&shared, &self.user, &segment).await;
            let mut denied = denied.map(Vec::into_iter);
            for req in segment {
                let refusal = denied.as_mut().and_then(|d| d.next().flatten());
                let is = |n: &str| req.name().eq_ignore_ascii_case(n.as_bytes());
                if is("quit") {
                    self.flush(&mut steps).await;
                    Frame::simple("OK").encode(&mut self.out);
                    return true;
                }
                // WATCH records the applied index: earlier writes first.
                if refusal.is_none() && is("watch") {
                    self.flush(&mut steps).await;
                    now = now_ms();
                }
                let step = self.step(req, refusal, now);
                if conn::starts_new_run(steps.iter().map(Step::place), step.place()) {
                    self.flush(&mut steps).await;
                    now = now_ms();
                }
                steps.push(step);
            }
            if changes.is_some() {
                // Later requests are checked with the user, and the
                // permissions, this one leaves.
                self.flush(&mut steps).await;
                now = now_ms();
                if changes == Some(Changes::Permissions) {
                    self.shared.acl.forget();
                }
            }
        }
        self.flush(&mut steps).await;
        false
    }

    /// What to do with one request; `refusal` is the answer when the
    /// client's user may not run it.
    fn step(&mut self, req: Request, refusal: Option<Frame>, now: i64) -> Step {
        if let Some(f) = refusal {
            self.shared.count("refused", "noperm");
            self.session.reject();
            return Step::Ready(f);
        }
        let ctx = Context {
            now_ms: now,
            applied_index: self.shared.backend.applied(),
        };
        match self.session.rewrite(&req, &ctx) {
            Action::Reply(f) => Step::Ready(f),
            Action::Refuse(r) => {
                self.shared.count("refused", "refused");
                Step::Ready(r.to_frame())
            }
            Action::Replicate(entry) if !self.authed => {
                let _ = entry;
                self.shared.count("write", "noauth");
                Step::Ready(Frame::error("NOAUTH Authentication required."))
            }
            Action::Replicate(entry) => Step::Write(Some(entry)),
            Action::Local => {
                let is = |n: &str| req.name().eq_ignore_ascii_case(n.as_bytes());
                if ["subscribe", "psubscribe", "ssubscribe", "monitor"]
                    .into_iter()
                    .any(is)
                {
                    self.shared.count("local", "refused");
                    Step::Ready(Frame::error(format!(
                        "ERR mu-sidecar does not relay '{}': subscribe to the \
                         redis-server directly (published messages are replicated)",
                        req.name_lower()
                    )))
                } else {
                    let read = lookup(&req).is_some_and(|s| class_of(s) == CommandClass::Read);
                    Step::Local {
                        req,
                        db: self.session.db(),
                        read,
                    }
                }
            }
        }
    }

    /// Executes the steps (all writes, or all local, plus ready answers)
    /// and appends their replies in order.
    async fn flush(&mut self, steps: &mut Vec<Step>) {
        if steps.is_empty() {
            return;
        }
        let mut taken = std::mem::take(steps);
        let frames = if taken.iter().any(|s| s.place() == Place::Write) {
            self.run_writes(&mut taken).await
        } else {
            self.run_locals(&taken).await
        };
        let resp3 = self.session.protocol() == 3;
        for f in frames {
            let f = if resp3 && matches!(f, Frame::NullBulk | Frame::NullArray) {
                Frame::Null
            } else {
                f
            };
            f.encode(&mut self.out);
        }
    }

    async fn run_writes(&mut self, steps: &mut [Step]) -> Vec<Frame> {
        let entries: Vec<Option<Entry>> = steps
            .iter_mut()
            .filter_map(|s| match s {
                Step::Write(e) => Some(e.take()),
                _ => None,
            })
            .collect();
        let mut results = replicate::run(&self.shared, entries).await.into_iter();
        let mut tally = Tally::default();
        let mut frames = Vec::with_capacity(steps.len());
        for s in steps.iter() {
            frames.push(match s {
                Step::Ready(f) => f.clone(),
                Step::Write(..) => {
                    let r = results
                        .next()
                        .unwrap_or(Err(WriteError::TryAgain("lost".into())));
                    let (outcome, frame) = match r {
                        Ok(Applied::Redis(f)) => ("ok", f),
                        Ok(other) => (
                            "error",
                            Frame::error(format!(
                                "ERR mu-sidecar: unexpected apply result {other:?}"
                            )),
                        ),
                        Err(e) => (e.label(), Frame::error(e.redis_error())),
                    };
                    tally.add(["write", outcome]);
                    frame
                }
                Step::Local { .. } => Frame::error("ERR mu-sidecar: internal ordering error"),
            });
        }
        tally.add_to(&self.shared.metrics.requests);
        frames
    }

    async fn run_locals(&mut self, steps: &[Step]) -> Vec<Frame> {
        let shared = self.shared.clone();
        let any_read = steps
            .iter()
            .any(|s| matches!(s, Step::Local { read: true, .. }));
        let block = conn::read_gate(&shared, any_read).await;
        let mut batch: Vec<(&Request, u32)> = Vec::new();
        for s in steps {
            if let Step::Local { req, db, read } = s {
                let blocked = *read && block.is_some();
                if !blocked {
                    batch.push((req, *db));
                }
            }
        }
        let replies = if batch.is_empty() {
            Ok(Vec::new())
        } else {
            self.local_exchange(&batch).await
        };
        let mut frames = Vec::with_capacity(steps.len());
        let mut tally = Tally::default();
        let mut next = 0;
        for s in steps {
            let f = match s {
                Step::Ready(f) => f.clone(),
                Step::Write(..) => Frame::error("ERR mu-sidecar: internal ordering error"),
                Step::Local { req, read, .. } => {
                    let class = if *read { "read" } else { "local" };
                    if let (true, Some(b)) = (*read, &block) {
                        match b {
                            ReadBlock::NotReady(why) => {
                                tally.add([class, "not_ready"]);
                                Frame::error(format!("LOADING mu-sidecar: {why}"))
                            }
                            ReadBlock::Barrier(e) => {
                                tally.add([class, e.label()]);
                                Frame::error(e.redis_error())
                            }
                        }
                    } else {
                        let f = match &replies {
                            Ok(v) => {
                                let f = v.get(next).cloned().unwrap_or(Frame::NullBulk);
                                next += 1;
                                f
                            }
                            Err(e) => {
                                Frame::error(format!("ERR mu-sidecar: backend unavailable: {e}"))
                            }
                        };
                        tally.add([class, if f.is_error() { "error" } else { "ok" }]);
                        self.track_auth(req, &f);
                        f
                    }
                }
            };
            frames.push(f);
        }
        tally.add_to(&self.shared.metrics.requests);
        frames
    }

    async fn local_exchange(&mut self, batch: &[(&Request, u32)]) -> Result<Vec<Frame>, String> {
        if self.backend.is_none() {
            self.backend = Some(LocalConn::connect(&self.shared).await?);
        }
        let conn = self.backend.as_mut().expect("connected above");
        let r = conn.exchange(batch).await;
        if r.is_err() {
            // A broken connection loses the client's backend-side state
            // (AUTH, CLIENT SETNAME, ...): start over, unauthenticated.
            self.backend = None;
            self.authed = self.shared.opts.backend_password.is_none();
            self.shared
                .metrics
                .backend_errors
                .with_label_values(&["io"])
                .inc();
        }
        r
    }

    /// Follows AUTH / HELLO ... AUTH / RESET outcomes.
    fn track_auth(&mut self, req: &Request, reply: &Frame) {
        let name = req.name();
        let authenticates = name.eq_ignore_ascii_case(b"auth")
            || (name.eq_ignore_ascii_case(b"hello")
                && req.args.iter().any(|a| a.eq_ignore_ascii_case(b"auth")));
        if authenticates && !reply.is_error() {
            self.authed = true;
            self.user = authenticated_user(req);
        } else if name.eq_ignore_ascii_case(b"reset") {
            self.authed = self.shared.opts.backend_password.is_none();
            self.user = Bytes::from_static(DEFAULT_USER);
        }
    }
}

/// The user a successful `AUTH [user] password` or `HELLO v AUTH user
/// password` authenticated as.
fn authenticated_user(req: &Request) -> Bytes {
    let args = &req.args;
    let user = if req.name().eq_ignore_ascii_case(b"auth") {
        (args.len() == 3).then(|| args[1].clone())
    } else {
        args.iter()
            .position(|a| a.eq_ignore_ascii_case(b"auth"))
            .and_then(|i| args.get(i + 1).cloned())
    };
    user.unwrap_or_else(|| Bytes::from_static(DEFAULT_USER))
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    #[allow(
        clippy::disallowed_methods,
        reason = "expirations are wall-clock times"
    )]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
