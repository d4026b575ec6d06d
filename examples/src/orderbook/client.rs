//! A client session that follows the leader: it sends each command to the
//! server it believes leads and, until the command is acknowledged,
//!
//! - moves to the server a `NOTLEADER <id> <addr>` answer names (adding
//!   the address if it did not know it), or to the next known server when
//!   no leader is named or the server is `UNAVAILABLE`;
//! - resends to the same server on `RETRY`;
//! - drops the connection and moves to the next server when no reply came
//!   within the reply timeout (a stalled server), so a late reply can
//!   never be taken for the answer to a later request.
//!
//! Every resend carries the same client id and sequence number, so the
//! exchange applies the command once however often it is sent (see
//! [`exchange`](super::exchange)). Resends back off from 10 µs to 500 µs
//! while the servers agree on a new leader.

use super::exchange::Command;
use super::protocol::{format_command, parse_reply, read_line, Ack, Reply, MAX_REPLY_LINE};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Longest `DUMP` line accepted, bytes.
const MAX_DUMP_LINE: usize = 256;
/// Longest `DUMP` accepted, lines (a full book has up to a million
/// orders plus the clients).
const MAX_DUMP_LINES: usize = 2_000_000;

#[derive(Debug)]
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// A connection to the group, following its leader.
#[derive(Debug)]
pub struct Session {
    servers: Vec<SocketAddr>,
    conns: Vec<Option<Conn>>,
    current: usize,
    reply_timeout: Duration,
    give_up: Duration,
}

/// How a command was acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The acknowledgement.
    pub ack: Ack,
    /// Times it was sent (1 when the first server answered).
    pub sends: u32,
}

impl Session {
    /// A session over `servers` (at least one); commands go to the first
    /// until a server names another leader. A server that does not answer
    /// within `reply_timeout` is left for the next; a command not
    /// acknowledged within `give_up` is an error.
    pub fn new(
        servers: Vec<SocketAddr>,
        reply_timeout: Duration,
        give_up: Duration,
    ) -> Result<Self, String> {
        if servers.is_empty() {
            return Err("no server address given".into());
        }
        Ok(Session {
            conns: servers.iter().map(|_| None).collect(),
            servers,
            current: 0,
            reply_timeout,
            give_up,
        })
    }

    /// The servers known so far (those given and those named as leader).
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Sends `cmd` until a server acknowledges it; returns the
    /// acknowledgement. An `ERR` answer or `give_up` passing is an error.
    pub fn submit(&mut self, cmd: &Command) -> Result<Submitted, String> {
        let line = format_command(cmd);
        let deadline = now() + self.give_up;
        let mut last = String::from("nothing sent");
        for sends in 1u32.. {
            if now() >= deadline {
                break;
            }
            if sends > 1 {
                let backoff = (10u64 << (sends - 2).min(6)).min(500);
                std::thread::sleep(Duration::from_micros(backoff));
            }
            let at = self.current;
            match self.request(at, &line) {
                Ok(Reply::Ok(ack)) => return Ok(Submitted { ack, sends }),
                Ok(Reply::NotLeader {
                    leader: Some((id, addr)),
                }) => {
                    last = format!("{}: not leader, leader is {id} ({addr})", self.servers[at]);
                    self.current = self.index_of(addr);
                }
                Ok(r @ (Reply::NotLeader { leader: None } | Reply::Unavailable(_))) => {
                    last = format!("{}: {r}", self.servers[at]);
                    self.current = (at + 1) % self.servers.len();
                }
                Ok(Reply::Retry(why)) => last = format!("{}: retry: {why}", self.servers[at]),
                Ok(Reply::Err(why)) => return Err(format!("{line}: {why}")),
                Ok(other) => return Err(format!("{line}: unexpected reply {other}")),
                Err(e) => {
                    last = e;
                    self.current = (at + 1) % self.servers.len();
                }
            }
        }
        Err(format!(
            "{line}: not acknowledged within {:?}; last answer: {last}",
            self.give_up
        ))
    }

    fn index_of(&mut self, addr: SocketAddr) -> usize {
        if let Some(i) = self.servers.iter().position(|a| *a == addr) {
            return i;
        }
        self.servers.push(addr);
        self.conns.push(None);
        self.servers.len() - 1
    }

    fn conn(&mut self, at: usize) -> Result<&mut Conn, String> {
        if self.conns[at].is_none() {
            let addr = self.servers[at];
            let s = TcpStream::connect_timeout(&addr, self.reply_timeout.max(MIN_CONNECT))
                .map_err(|e| format!("{addr}: {e}"))?;
            let setup = s
                .set_nodelay(true)
                .and_then(|()| s.set_read_timeout(Some(self.reply_timeout)))
                .and_then(|()| s.try_clone());
            let reader = setup.map_err(|e| format!("{addr}: {e}"))?;
            self.conns[at] = Some(Conn {
                reader: BufReader::new(reader),
                writer: s,
            });
        }
        Ok(self.conns[at].as_mut().expect("connected above"))
    }

    /// Sends one request line to server `at` (an index into
    /// [`Session::servers`]) and reads its one-line reply. Any failure,
    /// the timeout included, closes that connection.
    pub fn request(&mut self, at: usize, line: &str) -> Result<Reply, String> {
        let addr = self.servers[at];
        let result = self.conn(at).and_then(|c| {
            writeln!(c.writer, "{line}").map_err(|e| format!("{addr}: {e}"))?;
            match read_line(&mut c.reader, MAX_REPLY_LINE) {
                Ok(Some(reply)) => parse_reply(&reply).map_err(|e| format!("{addr}: {e}")),
                Ok(None) => Err(format!("{addr}: connection closed")),
                Err(e) => Err(format!("{addr}: {e}")),
            }
        });
        if result.is_err() {
            self.conns[at] = None;
        }
        result
    }

    /// Asks server `at` for its whole state (`DUMP`): the text between the
    /// `DUMP` header and `END`, header included.
    pub fn dump(&mut self, at: usize) -> Result<String, String> {
        let addr = self.servers[at];
        let reply_timeout = self.reply_timeout;
        let result = self.conn(at).and_then(|c| {
            let timeout = |t: Duration| c.writer.set_read_timeout(Some(t));
            timeout(reply_timeout.max(DUMP_TIMEOUT)).map_err(|e| format!("{addr}: {e}"))?;
            writeln!(c.writer, "DUMP").map_err(|e| format!("{addr}: {e}"))?;
            let mut text = String::new();
            for _ in 0..MAX_DUMP_LINES {
                match read_line(&mut c.reader, MAX_DUMP_LINE) {
                    Ok(Some(l)) if l == "END" => {
                        c.writer
                            .set_read_timeout(Some(reply_timeout))
                            .map_err(|e| format!("{addr}: {e}"))?;
                        return Ok(text);
                    }
                    Ok(Some(l)) => {
                        text.push_str(&l);
                        text.push('\n');
                    }
                    Ok(None) => return Err(format!("{addr}: connection closed")),
                    Err(e) => return Err(format!("{addr}: {e}")),
                }
            }
            Err(format!("{addr}: dump longer than {MAX_DUMP_LINES} lines"))
        });
        if result.is_err() {
            self.conns[at] = None;
        }
        result
    }
}

/// A dump of a large book takes longer than one reply.
const DUMP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting may take longer than a reply on a busy host.
const MIN_CONNECT: Duration = Duration::from_millis(100);

fn now() -> Instant {
    Instant::now()
}
