//! The client protocol: one request per line, one reply line per request
//! (`DUMP` answers with several lines ending in `END`). Fields are
//! separated by spaces; verbs and sides are case-insensitive. The grammar
//! is in the [module docs](super).

use super::book::{check_order, Fill, OrderId, OrderKind, Placement, Side};
use super::exchange::{Applied, Command, Op, Outcome};
use std::fmt;
use std::io::BufRead;
use std::net::SocketAddr;

/// Longest request line, bytes (the longest valid request is about 80).
pub const MAX_REQUEST_LINE: usize = 128;
/// Longest reply line, bytes (a placement lists at most
/// [`MAX_REPORTED_FILLS`](super::book::MAX_REPORTED_FILLS) fills).
pub const MAX_REPLY_LINE: usize = 4096;

/// A parsed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Replicate and apply a command (`LIMIT`, `MARKET`, `CANCEL`).
    Order(Command),
    /// `STATUS`: role, leader and applied index of the server.
    Status,
    /// `DIGEST`: applied index and digest of the server's state.
    Digest,
    /// `DUMP`: the server's whole state in canonical text.
    Dump,
    /// `SHUTDOWN`: the server prints its final state and exits.
    Shutdown,
}

fn number(what: &str, word: Option<&str>) -> Result<u64, String> {
    let w = word.ok_or_else(|| format!("missing {what}"))?;
    w.parse()
        .map_err(|_| format!("{what} {w:?} is not a non-negative integer"))
}

fn side(word: Option<&str>) -> Result<Side, String> {
    match word.map(str::to_ascii_lowercase).as_deref() {
        Some("buy") => Ok(Side::Buy),
        Some("sell") => Ok(Side::Sell),
        Some(w) => Err(format!("side {w:?} is neither BUY nor SELL")),
        None => Err("missing side".into()),
    }
}

/// Parses a request line (without its newline). The error says what is
/// wrong, for an `ERR` reply.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let mut w = line.split_ascii_whitespace();
    let verb = w.next().ok_or("empty request")?.to_ascii_uppercase();
    let simple = match verb.as_str() {
        "STATUS" => Some(Request::Status),
        "DIGEST" => Some(Request::Digest),
        "DUMP" => Some(Request::Dump),
        "SHUTDOWN" => Some(Request::Shutdown),
        "LIMIT" | "MARKET" | "CANCEL" => None,
        _ => {
            return Err(format!(
                "unknown request {verb:?} (LIMIT, MARKET, CANCEL, STATUS, DIGEST, DUMP, SHUTDOWN)"
            ))
        }
    };
    let request = match simple {
        Some(r) => r,
        None => {
            let client = number("client id", w.next())?;
            if client == 0 {
                return Err("client id 0 is reserved".into());
            }
            let seq = number("sequence number", w.next())?;
            if seq == 0 {
                return Err("sequence numbers start at 1".into());
            }
            let op = match verb.as_str() {
                "LIMIT" => {
                    let side = side(w.next())?;
                    let quantity = number("quantity", w.next())?;
                    let price = number("price", w.next())?;
                    check_order(OrderKind::Limit(price), quantity).map_err(|e| e.to_string())?;
                    Op::Limit {
                        side,
                        price,
                        quantity,
                    }
                }
                "MARKET" => {
                    let side = side(w.next())?;
                    let quantity = number("quantity", w.next())?;
                    check_order(OrderKind::Market, quantity).map_err(|e| e.to_string())?;
                    Op::Market { side, quantity }
                }
                _ => Op::Cancel {
                    order: OrderId(number("order id", w.next())?),
                },
            };
            Request::Order(Command { client, seq, op })
        }
    };
    match w.next() {
        Some(extra) => Err(format!("unexpected {extra:?} after the {verb} request")),
        None => Ok(request),
    }
}

/// Formats `cmd` as its request line (without newline).
pub fn format_command(cmd: &Command) -> String {
    let (client, seq) = (cmd.client, cmd.seq);
    match cmd.op {
        Op::Limit {
            side,
            price,
            quantity,
        } => format!("LIMIT {client} {seq} {} {quantity} {price}", side.name()),
        Op::Market { side, quantity } => {
            format!("MARKET {client} {seq} {} {quantity}", side.name())
        }
        Op::Cancel { order } => format!("CANCEL {client} {seq} {order}"),
    }
}

/// What an acknowledged command did, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckResult {
    /// Placed: id, fills, what rests or expired.
    Placed(Placement),
    /// Cancelled with `quantity` lots left.
    Cancelled {
        /// The order.
        order: OrderId,
        /// Lots it had left.
        quantity: u64,
    },
    /// Sequenced but refused (unknown order, already filled, …).
    Rejected(String),
}

/// An acknowledgement: the command took effect at `index` (exactly once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The server that answered (the leader), 1-based.
    pub node: u8,
    /// The log index where the command took effect.
    pub index: u64,
    /// What it did.
    pub result: AckResult,
}

impl Ack {
    /// The acknowledgement of `applied` by server `node`.
    pub fn new(node: u8, applied: &Applied) -> Self {
        let result = match &applied.outcome {
            Outcome::Placed(p) => AckResult::Placed(p.clone()),
            Outcome::Cancelled { order, quantity } => AckResult::Cancelled {
                order: *order,
                quantity: *quantity,
            },
            Outcome::Rejected(r) => AckResult::Rejected(r.to_string()),
        };
        Ack {
            node,
            index: applied.index,
            result,
        }
    }
}

/// A reply line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `OK <node> <index> PLACED|CANCELLED|REJECTED …`: done, exactly once.
    Ok(Ack),
    /// `NOTLEADER <id> <addr>` (or `NOTLEADER ? -` when no leader is
    /// known): send orders to server `id` at `addr`.
    NotLeader {
        /// The leader's id (1-based) and order address, if known.
        leader: Option<(u8, SocketAddr)>,
    },
    /// `RETRY <reason>`: not done (or not known to be done); send the same
    /// command again, here or to the leader.
    Retry(String),
    /// `UNAVAILABLE <reason>`: this server cannot serve; try another.
    Unavailable(String),
    /// `ERR <reason>`: a bad request; retrying it does not help.
    Err(String),
    /// `STATUS <node> <role> <leader|?> <applied>`.
    Status {
        /// The server.
        node: u8,
        /// `Leader`, `Candidate` or `Follower` (`Starting` before the
        /// replica reported).
        role: String,
        /// Who it believes leads.
        leader: Option<u8>,
        /// Its last applied log index.
        applied: u64,
    },
    /// `DIGEST <node> <applied> <16 hex digits>`.
    Digest {
        /// The server.
        node: u8,
        /// Its last applied log index.
        applied: u64,
        /// [`Exchange::digest`](super::exchange::Exchange::digest).
        digest: u64,
    },
    /// `BYE <node>`: the server is shutting down.
    Bye {
        /// The server.
        node: u8,
    },
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ok(Ack {
                node,
                index,
                result,
            }) => {
                write!(f, "OK {node} {index} ")?;
                match result {
                    AckResult::Placed(p) => {
                        write!(
                            f,
                            "PLACED {} {} {} {} {}",
                            p.id, p.filled, p.resting, p.expired, p.trades
                        )?;
                        for x in &p.fills {
                            write!(f, " {}@{}x{}", x.maker, x.price, x.quantity)?;
                        }
                        Ok(())
                    }
                    AckResult::Cancelled { order, quantity } => {
                        write!(f, "CANCELLED {order} {quantity}")
                    }
                    AckResult::Rejected(why) => write!(f, "REJECTED {why}"),
                }
            }
            Reply::NotLeader {
                leader: Some((id, addr)),
            } => write!(f, "NOTLEADER {id} {addr}"),
            Reply::NotLeader { leader: None } => write!(f, "NOTLEADER ? -"),
            Reply::Retry(why) => write!(f, "RETRY {why}"),
            Reply::Unavailable(why) => write!(f, "UNAVAILABLE {why}"),
            Reply::Err(why) => write!(f, "ERR {why}"),
            Reply::Status {
                node,
                role,
                leader,
                applied,
            } => {
                let leader = leader.map_or("?".to_string(), |l| l.to_string());
                write!(f, "STATUS {node} {role} {leader} {applied}")
            }
            Reply::Digest {
                node,
                applied,
                digest,
            } => write!(f, "DIGEST {node} {applied} {digest:016x}"),
            Reply::Bye { node } => write!(f, "BYE {node}"),
        }
    }
}

fn parse<T: std::str::FromStr>(what: &str, word: Option<&str>) -> Result<T, String> {
    let w = word.ok_or_else(|| format!("missing {what}"))?;
    w.parse().map_err(|_| format!("bad {what} {w:?}"))
}

fn parse_fill(word: &str) -> Result<Fill, String> {
    let bad = || format!("bad fill {word:?} (maker@pricexquantity)");
    let (maker, rest) = word.split_once('@').ok_or_else(bad)?;
    let (price, quantity) = rest.split_once('x').ok_or_else(bad)?;
    Ok(Fill {
        maker: OrderId(maker.parse().map_err(|_| bad())?),
        price: price.parse().map_err(|_| bad())?,
        quantity: quantity.parse().map_err(|_| bad())?,
    })
}

fn rest_of(line: &str, words: usize) -> String {
    line.split_ascii_whitespace()
        .skip(words)
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_ok(line: &str) -> Result<Ack, String> {
    let mut w = line.split_ascii_whitespace().skip(1);
    let node = parse("node", w.next())?;
    let index = parse("index", w.next())?;
    let result = match w.next() {
        Some("PLACED") => {
            let mut p = Placement {
                id: OrderId(parse("order id", w.next())?),
                filled: parse("filled", w.next())?,
                resting: parse("resting", w.next())?,
                expired: parse("expired", w.next())?,
                trades: parse("trades", w.next())?,
                fills: Vec::new(),
            };
            for f in w {
                p.fills.push(parse_fill(f)?);
            }
            AckResult::Placed(p)
        }
        Some("CANCELLED") => {
            let r = AckResult::Cancelled {
                order: OrderId(parse("order id", w.next())?),
                quantity: parse("quantity", w.next())?,
            };
            if let Some(extra) = w.next() {
                return Err(format!("unexpected {extra:?}"));
            }
            r
        }
        Some("REJECTED") => AckResult::Rejected(rest_of(line, 4)),
        other => return Err(format!("unknown result {other:?}")),
    };
    Ok(Ack {
        node,
        index,
        result,
    })
}

/// Parses a reply line (without its newline).
pub fn parse_reply(line: &str) -> Result<Reply, String> {
    let mut w = line.split_ascii_whitespace();
    let reply = match w.next() {
        Some("OK") => Reply::Ok(parse_ok(line)?),
        Some("NOTLEADER") => match (w.next(), w.next()) {
            (Some("?"), Some("-")) => Reply::NotLeader { leader: None },
            (id, addr) => Reply::NotLeader {
                leader: Some((parse("leader id", id)?, parse("leader address", addr)?)),
            },
        },
        Some("RETRY") => Reply::Retry(rest_of(line, 1)),
        Some("UNAVAILABLE") => Reply::Unavailable(rest_of(line, 1)),
        Some("ERR") => Reply::Err(rest_of(line, 1)),
        Some("STATUS") => Reply::Status {
            node: parse("node", w.next())?,
            role: parse("role", w.next())?,
            leader: match w.next() {
                Some("?") => None,
                l => Some(parse("leader", l)?),
            },
            applied: parse("applied index", w.next())?,
        },
        Some("DIGEST") => Reply::Digest {
            node: parse("node", w.next())?,
            applied: parse("applied index", w.next())?,
            digest: {
                let d = w.next().ok_or("missing digest")?;
                u64::from_str_radix(d, 16).map_err(|_| format!("bad digest {d:?}"))?
            },
        },
        Some("BYE") => Reply::Bye {
            node: parse("node", w.next())?,
        },
        _ => return Err(format!("unknown reply {line:?}")),
    };
    Ok(reply)
}

/// Why [`read_line`] returned no line.
#[derive(Debug)]
pub enum LineError {
    /// The socket failed or timed out (a partial line may have been
    /// consumed: the connection is no longer usable).
    Io(std::io::Error),
    /// The line is longer than the limit (the rest is not consumed).
    TooLong(usize),
    /// The line is not UTF-8.
    NotText,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Io(e) => e.fmt(f),
            LineError::TooLong(max) => write!(f, "line longer than {max} bytes"),
            LineError::NotText => write!(f, "line is not UTF-8 text"),
        }
    }
}

/// Reads one `\n`-terminated line of at most `max` bytes (a trailing
/// `\r` is dropped); `Ok(None)` at the end of the stream. Never buffers
/// more than `max` bytes of one line.
pub fn read_line(r: &mut impl BufRead, max: usize) -> Result<Option<String>, LineError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().map_err(LineError::Io)?;
        if buf.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(LineError::Io(std::io::ErrorKind::UnexpectedEof.into()))
            };
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max + 1 {
            return Err(LineError::TooLong(max));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return String::from_utf8(line)
                .map(Some)
                .map_err(|_| LineError::NotText);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_format_back() {
        let lines = ["LIMIT 7 1 buy 10 100", "MARKET 7 2 sell 3", "CANCEL 7 3 1"];
        for l in lines {
            let Ok(Request::Order(c)) = parse_request(l) else {
                panic!("{l}")
            };
            assert_eq!(format_command(&c), l);
        }
        assert_eq!(
            parse_request("limit 7 1 SELL 10 100"),
            Ok(Request::Order(Command {
                client: 7,
                seq: 1,
                op: Op::Limit {
                    side: Side::Sell,
                    price: 100,
                    quantity: 10
                }
            }))
        );
        assert_eq!(parse_request(" dump "), Ok(Request::Dump));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            ("", "empty request"),
            ("HELLO", "unknown request \"HELLO\""),
            ("LIMIT", "missing client id"),
            ("LIMIT 0 1 buy 1 1", "client id 0 is reserved"),
            ("LIMIT 1 0 buy 1 1", "sequence numbers start at 1"),
            ("LIMIT x 1 buy 1 1", "client id \"x\" is not"),
            ("LIMIT 1 1 hold 1 1", "side \"hold\" is neither"),
            ("LIMIT 1 1 buy 0 1", "bad quantity 0"),
            ("LIMIT 1 1 buy 1 0", "bad price 0"),
            ("LIMIT 1 1 buy 1 -5", "price \"-5\" is not"),
            ("LIMIT 1 1 buy 1", "missing price"),
            (
                "MARKET 1 1 buy 1 100",
                "unexpected \"100\" after the MARKET",
            ),
            ("CANCEL 1 1", "missing order id"),
            ("STATUS now", "unexpected \"now\""),
        ];
        for (line, want) in cases {
            let got = parse_request(line).expect_err(line);
            assert!(got.contains(want), "{line:?}: {got:?} lacks {want:?}");
        }
    }

    #[test]
    fn replies_round_trip() {
        let placed = Placement {
            id: OrderId(9),
            filled: 5,
            resting: 2,
            expired: 0,
            trades: 2,
            fills: vec![
                Fill {
                    maker: OrderId(3),
                    price: 100,
                    quantity: 4,
                },
                Fill {
                    maker: OrderId(4),
                    price: 101,
                    quantity: 1,
                },
            ],
        };
        let replies = [
            Reply::Ok(Ack {
                node: 2,
                index: 77,
                result: AckResult::Placed(placed),
            }),
            Reply::Ok(Ack {
                node: 1,
                index: 78,
                result: AckResult::Cancelled {
                    order: OrderId(3),
                    quantity: 6,
                },
            }),
            Reply::Ok(Ack {
                node: 1,
                index: 79,
                result: AckResult::Rejected("unknown order 5".into()),
            }),
            Reply::NotLeader {
                leader: Some((2, "127.0.0.1:7002".parse().unwrap())),
            },
            Reply::NotLeader { leader: None },
            Reply::Retry("leader change in progress; retry".into()),
            Reply::Unavailable("needs a state transfer".into()),
            Reply::Err("bad quantity 0".into()),
            Reply::Status {
                node: 3,
                role: "Follower".into(),
                leader: Some(1),
                applied: 12,
            },
            Reply::Status {
                node: 3,
                role: "Starting".into(),
                leader: None,
                applied: 0,
            },
            Reply::Digest {
                node: 1,
                applied: 12,
                digest: 0xdead_beef,
            },
            Reply::Bye { node: 2 },
        ];
        for r in replies {
            let line = r.to_string();
            assert!(line.len() <= MAX_REPLY_LINE);
            assert_eq!(parse_reply(&line), Ok(r), "{line}");
        }
        assert!(parse_reply("WHAT").unwrap_err().contains("unknown reply"));
        assert!(parse_reply("OK 1 2 PLACED 1 0 0 0 1 7@x")
            .unwrap_err()
            .contains("bad fill"));
    }

    #[test]
    fn lines_are_bounded() {
        let mut r = std::io::Cursor::new(b"ab\r\ncd\nxyz".to_vec());
        assert_eq!(read_line(&mut r, 4).unwrap(), Some("ab".into()));
        assert_eq!(read_line(&mut r, 4).unwrap(), Some("cd".into()));
        assert!(matches!(read_line(&mut r, 4), Err(LineError::Io(_))));
        let mut r = std::io::Cursor::new(b"abcdef\n".to_vec());
        assert!(matches!(read_line(&mut r, 4), Err(LineError::TooLong(4))));
        let mut r = std::io::Cursor::new(b"abcd\n".to_vec());
        assert_eq!(read_line(&mut r, 4).unwrap(), Some("abcd".into()));
        assert_eq!(read_line(&mut r, 4).unwrap(), None);
        let mut r = std::io::Cursor::new(b"\xff\n".to_vec());
        assert!(matches!(read_line(&mut r, 4), Err(LineError::NotText)));
    }
}
