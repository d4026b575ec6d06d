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
//! - refused commands get an error and change nothing anywhere;
//! - `CLIENT REPLY OFF|SKIP|ON` is kept here, not at the backend (which
//!   would stop answering the connection the sidecar reads replies from);
//! - subscription commands run on the client's own backend connection,
//!   whose confirmations and published messages are relayed as they
//!   arrive ([`crate::pubsub`]);
//! - RESP3 pushes from the backend (client-side caching invalidations)
//!   are relayed in the position they arrived in, at once when a tracking
//!   client is idle, and before the replies of the client's own writes that
//!   caused them;
//! - when the backend connection breaks, a client that had set state on
//!   it (AUTH, HELLO, CLIENT ...) is disconnected after its answers, as a
//!   direct client would be, so that its library reconnects and sets the
//!   state again instead of running without it.

use crate::backend::AsyncStream;
use crate::conn::{self, Place, ReadBlock};
use crate::metrics::Tally;
use crate::pending::Applied;
use crate::pubsub::{self, Subscriptions};
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
    /// `CLIENT REPLY`: the mode asked for, or `None` for a bad argument.
    Switch(Option<ReplyMode>),
}

/// What `CLIENT REPLY` set: which replies the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    /// Every reply.
    On,
    /// None.
    Off,
    /// None for the next command, then every reply.
    Skip,
}

/// The mode a `CLIENT REPLY` request asks for; `None` when it is not one,
/// `Some(None)` when its argument is not ON, OFF or SKIP.
fn reply_switch(req: &Request) -> Option<Option<ReplyMode>> {
    let a = &req.args;
    if a.len() != 3 || !a[0].eq_ignore_ascii_case(b"client") || !a[1].eq_ignore_ascii_case(b"reply")
    {
        return None;
    }
    let m = &a[2];
    Some(if m.eq_ignore_ascii_case(b"on") {
        Some(ReplyMode::On)
    } else if m.eq_ignore_ascii_case(b"off") {
        Some(ReplyMode::Off)
    } else if m.eq_ignore_ascii_case(b"skip") {
        Some(ReplyMode::Skip)
    } else {
        None
    })
}

impl Step {
    /// True for a subscription command, which the server answers with
    /// confirmations instead of a reply.
    fn subscribes(&self) -> bool {
        matches!(self, Step::Local { req, .. } if pubsub::is_subscription(req))
    }

    fn place(&self) -> Place {
        match self {
            Step::Ready(_) | Step::Switch(_) => Place::Ready,
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
    /// Frames read during the last exchange that answer no request of
    /// the usual kind (RESP3 pushes, published messages, subscription
    /// confirmations), each with the index of the reply it arrived before.
    pushes: Vec<(usize, Frame)>,
    /// What the connection is subscribed to.
    subs: Subscriptions,
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
            pushes: Vec::new(),
            subs: Subscriptions::default(),
        })
    }

    /// The next frame from the backend, push or reply. Cancel-safe: what
    /// was read stays buffered.
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

    /// The next reply, with the pushes before it kept in `pushes` as
    /// arriving before reply `index`.
    async fn read_reply(&mut self, index: usize) -> Result<Frame, String> {
        loop {
            let f = self.read_frame().await?;
            if !self.subs.unasked(&f) {
                return Ok(f);
            }
            self.pushes.push((index, f));
        }
    }

    /// Waits for the next push or published message while nothing was
    /// asked, and encodes it into `out` with every further one already
    /// read: a reply then would answer no request, so it breaks the
    /// connection. Cancel-safe: nothing is taken before the first frame.
    async fn next_pushes(&mut self, out: &mut BytesMut) -> Result<(), String> {
        let mut f = self.read_frame().await?;
        loop {
            if !self.subs.unasked(&f) {
                return Err(format!(
                    "the backend sent a reply nothing asked for: {}",
                    crate::apply::frame_text(&f)
                ));
            }
            f.encode(out);
            f = match self.frames.decode(&mut self.buf) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("the backend sent a malformed reply: {e}")),
            };
        }
    }

    /// The pushes of the last exchange, each with the index of the reply
    /// it arrived before.
    fn take_pushes(&mut self) -> Vec<(usize, Frame)> {
        std::mem::take(&mut self.pushes)
    }

    /// Sends the requests (each in its database) and returns their replies;
    /// pushes that arrived among them are kept for [`LocalConn::take_pushes`].
    /// A subscription command has no reply in the list: what the server
    /// answers it (its confirmations, or its error) is kept with the
    /// pushes.
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
        self.pushes.clear();
        let mut replies = Vec::with_capacity(reqs.len());
        for ((req, want), select) in reqs.iter().zip(selects) {
            if select {
                let f = self.read_reply(replies.len()).await?;
                if f.is_error() {
                    // Not authenticated yet, most likely: the command's
                    // own reply will say so too.
                    self.db = u32::MAX;
                } else {
                    self.db = *want;
                }
            }
            if pubsub::is_subscription(req) {
                let mut left = self.subs.owed(req);
                while left > 0 {
                    let f = self.read_frame().await?;
                    self.subs.take(&f, &mut left);
                    self.pushes.push((replies.len(), f));
                }
                continue;
            }
            let f = self.read_reply(replies.len()).await?;
            if req.name().eq_ignore_ascii_case(b"reset") && !f.is_error() {
                self.db = 0;
                self.subs.clear();
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
        reply: ReplyMode::On,
        quiet: Vec::new(),
        tracking: false,
        protocol: 2,
        backend_state: false,
        closing: false,
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

    async fn idle(&mut self) -> bool {
        // Only a subscriber or a tracking RESP3 connection is sent
        // anything unasked; the others find a broken backend connection
        // on their next request.
        let expected = self.pushes_expected();
        let conn = match self.backend.as_mut() {
            Some(conn) if expected => conn,
            _ => return std::future::pending().await,
        };
        match conn.next_pushes(&mut self.out).await {
            Ok(()) => false,
            Err(e) => {
                tracing::debug!(error = %e, "a client's backend connection broke while idle");
                self.lost_backend()
            }
        }
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
    /// Which replies the client gets (`CLIENT REPLY`).
    reply: ReplyMode,
    /// Per step not yet flushed: true when its reply is not sent.
    quiet: Vec<bool>,
    /// RESP3 client-side caching is on, its invalidations sent to this
    /// connection (`CLIENT TRACKING ON` without REDIRECT).
    tracking: bool,
    /// The RESP version of the backend connection, as its last accepted
    /// `HELLO` set it.
    protocol: u8,
    /// The backend connection holds state set by the client (AUTH,
    /// HELLO, CLIENT ...), lost if that connection breaks.
    backend_state: bool,
    /// The backend connection broke and took that state with it: the
    /// client is disconnected after this batch's answers.
    closing: bool,
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
                    if self.reply == ReplyMode::On {
                        Frame::simple("OK").encode(&mut self.out);
                    }
                    return true;
                }
                if self.closing {
                    steps.push(Step::Ready(Frame::error(
                        "ERR mu-sidecar: the connection to the backend broke and took this \
                         connection's state (AUTH, HELLO, CLIENT ...) with it; reconnect",
                    )));
                    self.quiet.push(self.reply != ReplyMode::On);
                    continue;
                }
                // WATCH records the applied index: earlier writes first.
                // Whether RESP2's subscribed mode refuses a command is
                // known once earlier subscription commands are confirmed.
                // (A request after subscriptions flushes them, so unflushed
                // ones are the last steps.)
                let subscribing = || steps.last().is_some_and(Step::subscribes);
                if (refusal.is_none() && is("watch"))
                    || (subscribing() && !pubsub::is_subscription(&req))
                {
                    self.flush(&mut steps).await;
                    now = now_ms();
                }
                let step = match self.refused_while_subscribed(&req) {
                    Some(f) => {
                        self.shared.count("local", "refused");
                        Step::Ready(f)
                    }
                    None => self.step(req, refusal, now),
                };
                if step.subscribes() {
                    // Answered by confirmations, which CLIENT REPLY
                    // leaves alone, as it leaves pushes.
                    if conn::starts_new_run(steps.iter().map(Step::place), step.place()) {
                        self.flush(&mut steps).await;
                        now = now_ms();
                    }
                    steps.push(step);
                    continue;
                }
                if conn::starts_new_run(steps.iter().map(Step::place), step.place()) {
                    self.flush(&mut steps).await;
                    now = now_ms();
                }
                let (step, quiet) = self.reply_mode(step);
                steps.push(step);
                self.quiet.push(quiet);
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
        self.closing
    }

    /// Applies `CLIENT REPLY` to the step's reply and the mode: whether
    /// the reply is left unsent.
    fn reply_mode(&mut self, step: Step) -> (Step, bool) {
        match step {
            Step::Switch(Some(mode)) => {
                // SKIP while OFF leaves it OFF; ON ends both.
                if !(mode == ReplyMode::Skip && self.reply == ReplyMode::Off) {
                    self.reply = mode;
                }
                (Step::Ready(Frame::simple("OK")), mode != ReplyMode::On)
            }
            step => {
                let step = match step {
                    Step::Switch(None) => Step::Ready(Frame::error("ERR syntax error")),
                    s => s,
                };
                let quiet = self.reply != ReplyMode::On;
                if self.reply == ReplyMode::Skip {
                    self.reply = ReplyMode::On;
                }
                (step, quiet)
            }
        }
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
                if let Some(mode) = reply_switch(&req) {
                    return Step::Switch(mode);
                }
                let read = lookup(&req).is_some_and(|s| class_of(s) == CommandClass::Read);
                Step::Local {
                    req,
                    db: self.session.db(),
                    read,
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
        let quiet: Vec<bool> = self.quiet.drain(..).collect();
        let frames = if taken.iter().any(|s| s.place() == Place::Write) {
            let replies = self.run_writes(&mut taken).await;
            // The invalidations these writes caused go before their replies.
            let mut frames: Vec<Out> = self.pushes_so_far().await;
            frames.extend(replies.into_iter().map(Out::Reply));
            frames
        } else {
            self.run_locals(&taken).await
        };
        let resp3 = self.session.protocol() == 3;
        let mut quiet = quiet.into_iter();
        for out in frames {
            let f = match out {
                // Pushes are not replies: CLIENT REPLY leaves them alone.
                Out::Unasked(f) => {
                    f.encode(&mut self.out);
                    continue;
                }
                Out::Reply(_) if quiet.next().unwrap_or(false) => continue,
                Out::Reply(f) => f,
            };
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
                Step::Local { .. } | Step::Switch(_) => {
                    Frame::error("ERR mu-sidecar: internal ordering error")
                }
            });
        }
        tally.add_to(&self.shared.metrics.requests);
        frames
    }

    async fn run_locals(&mut self, steps: &[Step]) -> Vec<Out> {
        let shared = self.shared.clone();
        let any_read = steps
            .iter()
            .any(|s| matches!(s, Step::Local { read: true, .. }));
        let block = conn::read_gate(&shared, any_read).await;
        let mut batch: Vec<(&Request, u32)> = Vec::new();
        let mut only_reads = true;
        for s in steps {
            if let Step::Local { req, db, read } = s {
                let blocked = *read && block.is_some();
                if !blocked {
                    batch.push((req, *db));
                    only_reads &= *read;
                }
            }
        }
        let replies = if batch.is_empty() {
            Ok(Vec::new())
        } else {
            self.local_exchange(&batch, only_reads).await
        };
        let mut pushes = match (&replies, self.backend.as_mut()) {
            (Ok(_), Some(conn)) => conn.take_pushes(),
            _ => Vec::new(),
        }
        .into_iter()
        .peekable();
        let mut frames = Vec::with_capacity(steps.len());
        let mut tally = Tally::default();
        let mut next = 0;
        for s in steps {
            let f = match s {
                Step::Ready(f) => f.clone(),
                Step::Write(..) | Step::Switch(_) => {
                    Frame::error("ERR mu-sidecar: internal ordering error")
                }
                Step::Local { req, .. } if pubsub::is_subscription(req) => {
                    // Answered by what arrived before the next reply.
                    let (outcome, lost) = match &replies {
                        Ok(_) => ("ok", None),
                        Err(e) => (
                            "error",
                            Some(Frame::error(format!(
                                "ERR mu-sidecar: backend unavailable: {e}"
                            ))),
                        ),
                    };
                    while let Some((_, p)) = pushes.next_if(|(i, _)| *i <= next) {
                        frames.push(Out::Unasked(p));
                    }
                    tally.add(["local", outcome]);
                    self.backend_state = true;
                    frames.extend(lost.map(Out::Unasked));
                    continue;
                }
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
                                while let Some((_, p)) = pushes.next_if(|(i, _)| *i <= next) {
                                    frames.push(Out::Unasked(p));
                                }
                                let f = v.get(next).cloned().unwrap_or(Frame::NullBulk);
                                next += 1;
                                f
                            }
                            Err(e) => {
                                Frame::error(format!("ERR mu-sidecar: backend unavailable: {e}"))
                            }
                        };
                        tally.add([class, if f.is_error() { "error" } else { "ok" }]);
                        self.track_state(req, &f);
                        f
                    }
                }
            };
            frames.push(Out::Reply(f));
        }
        // What arrived after the last reply: a trailing subscription's.
        frames.extend(pushes.map(|(_, p)| Out::Unasked(p)));
        tally.add_to(&self.shared.metrics.requests);
        frames
    }

    /// Runs the batch on the client's backend connection. `only_reads`:
    /// the batch may run twice, so a kept connection the server closed
    /// meanwhile (a restart, CLIENT KILL, its idle timeout) is replaced
    /// and the batch run again, unless the client had state on it.
    async fn local_exchange(
        &mut self,
        batch: &[(&Request, u32)],
        only_reads: bool,
    ) -> Result<Vec<Frame>, String> {
        let kept = self.backend.is_some();
        if !kept {
            self.backend = Some(LocalConn::connect(&self.shared).await?);
        }
        let conn = self.backend.as_mut().expect("connected above");
        let r = conn.exchange(batch).await;
        if r.is_err() {
            if self.lost_backend() {
                self.closing = true;
            } else if kept && only_reads {
                return Box::pin(self.local_exchange(batch, false)).await;
            }
        }
        r
    }

    /// The pushes that arrived on the backend connection up to now, when
    /// RESP3 client-side caching may send some: a PING's reply comes
    /// after every push the server queued before reading it.
    async fn pushes_so_far(&mut self) -> Vec<Out> {
        if !self.pushes_expected() {
            return Vec::new();
        }
        let Some(conn) = self.backend.as_mut() else {
            return Vec::new();
        };
        let ping = Request::new(vec!["PING"]);
        let db = conn.db;
        match conn.exchange(&[(&ping, db)]).await {
            Ok(_) => conn
                .take_pushes()
                .into_iter()
                .map(|(_, p)| Out::Unasked(p))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "a client's backend connection broke");
                if self.lost_backend() {
                    self.closing = true;
                }
                Vec::new()
            }
        }
    }

    /// True when the backend sends this connection pushes unasked: RESP3
    /// client-side caching with the invalidations sent to it, or
    /// subscriptions.
    fn pushes_expected(&self) -> bool {
        (self.tracking && self.session.protocol() == 3) || self.subscribed()
    }

    /// True while the backend connection holds subscriptions.
    fn subscribed(&self) -> bool {
        self.backend.as_ref().is_some_and(|c| c.subs.any())
    }

    /// The server's refusal of a command in RESP2's subscribed mode,
    /// given here so that a write it would refuse is not replicated.
    fn refused_while_subscribed(&self, req: &Request) -> Option<Frame> {
        if self.protocol != 2 || !self.subscribed() {
            return None;
        }
        pubsub::refused_while_subscribed(req)
    }

    /// Forgets a broken backend connection, with the client's state on it
    /// (AUTH, HELLO, CLIENT ...); the next request starts over on a new
    /// one, unauthenticated. True when the client had set such state, so
    /// that it must be disconnected rather than go on without it.
    fn lost_backend(&mut self) -> bool {
        self.backend = None;
        self.authed = self.shared.opts.backend_password.is_none();
        self.shared
            .metrics
            .backend_errors
            .with_label_values(&["io"])
            .inc();
        let had_state = std::mem::take(&mut self.backend_state);
        self.tracking = false;
        had_state
    }

    /// Follows what a request served on the backend connection left there:
    /// AUTH / HELLO ... AUTH (the user), CLIENT TRACKING, RESET.
    fn track_state(&mut self, req: &Request, reply: &Frame) {
        let name = req.name();
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if is(b"hello") {
            match mu_protocols::rewrite::hello_version(req) {
                _ if reply.is_error() => self.session.set_protocol(self.protocol),
                Some(v) => self.protocol = v,
                None => {}
            }
        }
        if reply.is_error() {
            return;
        }
        if is(b"reset") {
            self.protocol = 2;
            self.authed = self.shared.opts.backend_password.is_none();
            self.user = Bytes::from_static(DEFAULT_USER);
            self.tracking = false;
            self.backend_state = false;
            return;
        }
        let authenticates = is(b"auth")
            || (is(b"hello") && req.args.iter().any(|a| a.eq_ignore_ascii_case(b"auth")));
        if authenticates {
            self.authed = true;
            self.user = authenticated_user(req);
        }
        if is(b"auth") || is(b"hello") || is(b"client") {
            self.backend_state = true;
        }
        let arg = |i: usize, v: &[u8]| req.args.get(i).is_some_and(|a| a.eq_ignore_ascii_case(v));
        if is(b"client") && arg(1, b"tracking") {
            self.tracking = arg(2, b"on")
                && !req.args[3..]
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(b"redirect"));
        }
    }
}

/// What goes to the client: a reply, or a frame that answers no request
/// of the usual kind (a push, a published message, a subscription's
/// confirmation), which `CLIENT REPLY` leaves alone.
enum Out {
    Reply(Frame),
    Unasked(Frame),
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
