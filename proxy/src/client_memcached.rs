//! One memcached client connection (text and meta protocol).
//!
//! The same shape as the Redis side: writes are replicated and answered
//! with the local backend's reply once applied; reads go to this client's
//! own backend connection after the connection's earlier writes; refused
//! commands (CAS, unknown verbs) get an error line and change nothing.
//! A request sent with `noreply` gets no reply, even when it fails (the
//! failure is counted and logged), as memcached itself behaves.

use crate::backend::AsyncStream;
use crate::conn::{self, Place, ReadBlock};
use crate::metrics::Tally;
use crate::pending::Applied;
use crate::replicate::{self, WriteError};
use crate::state::Shared;
use bytes::{Bytes, BytesMut};
use mu_protocols::entry::Entry;
use mu_protocols::memcached::{
    McReply, McReplyDecoder, McRequest, McRequestDecoder, MetaStatus, ReplyExpectation,
};
use mu_protocols::rewrite::{rewrite_memcached, Action, Context};
use mu_protocols::table::{mc_class, CommandClass};
use mu_protocols::ProtocolError;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

enum Step {
    /// Reply known already (`None`: no reply).
    Ready(Option<McReply>),
    /// Replicate; `noreply` requests get no answer whatever happens.
    Write { entry: Option<Entry>, noreply: bool },
    /// Serve on this client's backend connection.
    Local { req: McRequest, read: bool },
}

impl Step {
    fn place(&self) -> Place {
        match self {
            Step::Ready(_) => Place::Ready,
            Step::Write { .. } => Place::Write,
            Step::Local { .. } => Place::Local,
        }
    }
}

struct LocalConn {
    stream: AsyncStream,
    buf: BytesMut,
    replies: McReplyDecoder,
}

impl LocalConn {
    async fn read_reply(&mut self) -> Result<McReply, String> {
        loop {
            match self.replies.decode(&mut self.buf) {
                Ok(Some(r)) => return Ok(r),
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

    /// Sends the requests and returns, per request, the replies it got.
    async fn exchange(&mut self, reqs: &[&McRequest]) -> Result<Vec<Vec<McReply>>, String> {
        let mut out = BytesMut::new();
        for r in reqs {
            r.encode(&mut out);
            if r.reply_expectation() != ReplyExpectation::One {
                // Bounds the replies of noreply and quiet requests.
                out.extend_from_slice(b"mn\r\n");
            }
        }
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("writing to the backend: {e}"))?;
        let mut all = Vec::with_capacity(reqs.len());
        for r in reqs {
            let mut got = Vec::new();
            if r.reply_expectation() == ReplyExpectation::One {
                got.push(self.read_reply().await?);
            } else {
                loop {
                    let reply = self.read_reply().await?;
                    if matches!(&reply, McReply::Meta(m) if m.status == MetaStatus::Mn) {
                        break;
                    }
                    got.push(reply);
                }
            }
            all.push(got);
        }
        Ok(all)
    }
}

/// Serves one client until it disconnects.
pub async fn serve(shared: Arc<Shared>, sock: TcpStream) -> io::Result<()> {
    let c = Client {
        shared,
        backend: None,
        out: BytesMut::with_capacity(16 << 10),
        decoder: McRequestDecoder::default(),
    };
    conn::serve(c, sock).await
}

impl conn::Session for Client {
    type Request = McRequest;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<McRequest>, ProtocolError> {
        self.decoder.decode(buf)
    }

    async fn handle(&mut self, reqs: Vec<McRequest>) -> bool {
        Client::handle(self, reqs).await
    }

    fn protocol_error(&mut self, e: &ProtocolError) {
        McReply::ClientError(Bytes::from(e.to_string())).encode(&mut self.out);
    }

    fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }
}

struct Client {
    shared: Arc<Shared>,
    backend: Option<LocalConn>,
    out: BytesMut,
    decoder: McRequestDecoder,
}

impl Client {
    async fn handle(&mut self, reqs: Vec<McRequest>) -> bool {
        let mut steps = Vec::new();
        // The clock is read once per batch of requests that arrived
        // together, and again after each wait for earlier writes.
        let mut now = crate::client_redis::now_ms();
        for req in reqs {
            if matches!(req, McRequest::Quit) {
                self.flush(&mut steps).await;
                return true;
            }
            let ctx = Context {
                now_ms: now,
                applied_index: self.shared.backend.applied(),
            };
            let step = match rewrite_memcached(&req, &ctx) {
                Action::Local => Step::Local {
                    read: mc_class(&req) == CommandClass::Read,
                    req,
                },
                Action::Replicate(entry) => Step::Write {
                    entry: Some(entry),
                    noreply: req.noreply(),
                },
                Action::Refuse(r) => {
                    self.shared.count("refused", "refused");
                    Step::Ready((!req.noreply()).then(|| r.to_memcached()))
                }
                Action::Reply(f) => Step::Ready(Some(McReply::ServerError(Bytes::from(format!(
                    "mu-sidecar: {}",
                    crate::apply::frame_text(&f)
                ))))),
            };
            let switch = conn::starts_new_run(steps.iter().map(Step::place), step.place());
            if switch {
                self.flush(&mut steps).await;
                now = crate::client_redis::now_ms();
            }
            steps.push(step);
        }
        self.flush(&mut steps).await;
        false
    }

    async fn flush(&mut self, steps: &mut Vec<Step>) {
        if steps.is_empty() {
            return;
        }
        let mut taken = std::mem::take(steps);
        let replies = if taken.iter().any(|s| matches!(s, Step::Write { .. })) {
            self.run_writes(&mut taken).await
        } else {
            self.run_locals(&taken).await
        };
        for r in replies.into_iter().flatten() {
            r.encode(&mut self.out);
        }
    }

    async fn run_writes(&mut self, steps: &mut [Step]) -> Vec<Vec<McReply>> {
        let entries = steps
            .iter_mut()
            .filter_map(|s| match s {
                Step::Write { entry, .. } => Some(entry.take()),
                _ => None,
            })
            .collect();
        let mut results = replicate::run(&self.shared, entries).await.into_iter();
        let mut tally = Tally::default();
        let mut out = Vec::with_capacity(steps.len());
        for s in steps.iter() {
            out.push(match s {
                Step::Ready(r) => r.iter().cloned().collect(),
                Step::Local { .. } => vec![server_error("internal ordering error")],
                Step::Write { noreply, .. } => {
                    let r = results
                        .next()
                        .unwrap_or(Err(WriteError::TryAgain("lost".into())));
                    let (outcome, reply) = match r {
                        Ok(Applied::Memcached(reply)) => ("ok", reply),
                        Ok(other) => (
                            "error",
                            Some(server_error(&format!("unexpected apply result {other:?}"))),
                        ),
                        Err(e) => {
                            if *noreply {
                                tracing::warn!(error = %e.memcached_error(), "noreply write failed");
                            }
                            (
                                e.label(),
                                Some(McReply::ServerError(Bytes::from(e.memcached_error()))),
                            )
                        }
                    };
                    tally.add(["write", outcome]);
                    if *noreply {
                        Vec::new()
                    } else {
                        reply.into_iter().collect()
                    }
                }
            });
        }
        tally.add_to(&self.shared.metrics.requests);
        out
    }

    async fn run_locals(&mut self, steps: &[Step]) -> Vec<Vec<McReply>> {
        let shared = self.shared.clone();
        let any_read = steps
            .iter()
            .any(|s| matches!(s, Step::Local { read: true, .. }));
        let block = conn::read_gate(&shared, any_read).await;
        let blocked = |read: bool| read && block.is_some();
        let batch: Vec<&McRequest> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Local { req, read } if !blocked(*read) => Some(req),
                _ => None,
            })
            .collect();
        let replies = if batch.is_empty() {
            Ok(Vec::new())
        } else {
            self.local_exchange(&batch).await
        };
        let mut next = 0;
        let mut tally = Tally::default();
        let mut out = Vec::with_capacity(steps.len());
        for s in steps {
            out.push(match s {
                Step::Ready(r) => r.iter().cloned().collect(),
                Step::Write { .. } => vec![server_error("internal ordering error")],
                Step::Local { read, .. } if blocked(*read) => {
                    tally.add(["read", "not_ready"]);
                    let why = match &block {
                        Some(ReadBlock::NotReady(why)) => why.clone(),
                        Some(ReadBlock::Barrier(e)) => e.memcached_error(),
                        None => String::new(),
                    };
                    vec![server_error(&why)]
                }
                Step::Local { read, .. } => {
                    let class = if *read { "read" } else { "local" };
                    match &replies {
                        Ok(v) => {
                            let got = v.get(next).cloned().unwrap_or_default();
                            next += 1;
                            tally.add([class, "ok"]);
                            got
                        }
                        Err(e) => {
                            tally.add([class, "error"]);
                            vec![server_error(&format!("backend unavailable: {e}"))]
                        }
                    }
                }
            });
        }
        tally.add_to(&self.shared.metrics.requests);
        out
    }

    async fn local_exchange(&mut self, batch: &[&McRequest]) -> Result<Vec<Vec<McReply>>, String> {
        if self.backend.is_none() {
            let backend = &self.shared.opts.backend;
            let stream = backend
                .connect_async()
                .await
                .map_err(|e| format!("cannot reach {backend}: {e}"))?;
            self.backend = Some(LocalConn {
                stream,
                buf: BytesMut::with_capacity(16 << 10),
                replies: McReplyDecoder::default(),
            });
        }
        let conn = self.backend.as_mut().expect("connected above");
        let r = conn.exchange(batch).await;
        if r.is_err() {
            self.backend = None;
            self.shared
                .metrics
                .backend_errors
                .with_label_values(&["io"])
                .inc();
        }
        r
    }
}

fn server_error(msg: &str) -> McReply {
    McReply::ServerError(Bytes::from(format!("mu-sidecar: {msg}")))
}
