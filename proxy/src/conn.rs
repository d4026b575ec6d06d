//! What both protocols' client connections share: the read–decode–answer
//! loop, grouping a pipeline into runs, and the gate in front of reads.

use crate::config::ReadPolicy;
use crate::replicate::{self, WriteError};
use crate::state::Shared;
use bytes::BytesMut;
use mu_protocols::ProtocolError;
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Requests decoded before the replies of a batch are written.
const MAX_BATCH: usize = 1024;

/// One protocol's side of a client connection.
pub trait Session {
    /// A decoded request.
    type Request;
    /// Decodes one request from the front of `buf` (the decoder contract of
    /// `mu-protocols`).
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Request>, ProtocolError>;
    /// Answers a batch of requests into [`Session::out`]; true when the
    /// client asked to quit.
    fn handle(
        &mut self,
        reqs: Vec<Self::Request>,
    ) -> impl std::future::Future<Output = bool> + Send;
    /// Appends the answer to a corrupt stream (the connection closes after).
    fn protocol_error(&mut self, e: &ProtocolError);
    /// Waits, while the client sends nothing, for something to tell it
    /// unasked (a Redis push: a client-side caching invalidation), which
    /// it appends to [`Session::out`]; true when the connection must close.
    /// Cancelled whenever a request arrives first, so it must lose nothing
    /// when dropped at an await point. Never resolves by default.
    fn idle(&mut self) -> impl std::future::Future<Output = bool> + Send {
        std::future::pending()
    }
    /// The bytes to write to the client.
    fn out(&mut self) -> &mut BytesMut;
}

/// Serves one client: decodes what arrived, answers it in order, repeats.
pub async fn serve<S: Session>(mut session: S, sock: TcpStream) -> io::Result<()> {
    let _ = sock.set_nodelay(true);
    let (mut rd, mut wr) = sock.into_split();
    let mut inbuf = BytesMut::with_capacity(16 << 10);
    loop {
        let mut reqs = Vec::new();
        let mut broken = None;
        while reqs.len() < MAX_BATCH {
            match session.decode(&mut inbuf) {
                Ok(Some(r)) => reqs.push(r),
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        if reqs.is_empty() && broken.is_none() {
            tokio::select! {
                biased;
                n = rd.read_buf(&mut inbuf) => {
                    if n? == 0 {
                        return Ok(());
                    }
                }
                close = session.idle() => {
                    let out = session.out();
                    wr.write_all(out).await?;
                    out.clear();
                    if close {
                        return Ok(());
                    }
                }
            }
            continue;
        }
        let quit = session.handle(reqs).await;
        if let Some(e) = &broken {
            session.protocol_error(e);
        }
        let out = session.out();
        wr.write_all(out).await?;
        out.clear();
        if quit || broken.is_some() {
            return Ok(());
        }
    }
}

/// Where a step of a pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Answered without the backend.
    Ready,
    /// Replicated.
    Write,
    /// On the client's backend connection.
    Local,
}

/// True when a step at `next` cannot join the current run: writes and
/// local requests never share one, so a read waits for the connection's
/// earlier writes and a write is not proposed before earlier reads ran.
pub fn starts_new_run(run: impl DoubleEndedIterator<Item = Place>, next: Place) -> bool {
    let last = run.rev().find(|p| *p != Place::Ready);
    matches!(
        (last, next),
        (Some(Place::Write), Place::Local) | (Some(Place::Local), Place::Write)
    )
}

/// Why the reads of a run are not served.
#[derive(Debug, Clone)]
pub enum ReadBlock {
    /// This node's data cannot be trusted now.
    NotReady(String),
    /// `--reads leader`: the barrier failed.
    Barrier(WriteError),
}

/// The gate in front of a run that holds reads: refused while the node's
/// data cannot be trusted; with `--reads leader`, a barrier through the log
/// first.
pub async fn read_gate(shared: &Shared, any_read: bool) -> Option<ReadBlock> {
    if !any_read {
        return None;
    }
    if let Err(why) = shared.reads_allowed() {
        return Some(ReadBlock::NotReady(why));
    }
    if shared.opts.reads == ReadPolicy::Leader {
        let r = replicate::run(shared, vec![None]).await;
        if let Some(Err(e)) = r.into_iter().next() {
            return Some(ReadBlock::Barrier(e));
        }
    }
    None
}
