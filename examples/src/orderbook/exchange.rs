//! The replicated state machine: the book, plus what makes a retried order
//! count once.
//!
//! Every log entry is one [`Command`]: a client id, the client's sequence
//! number for it, and the operation. Replicas apply committed entries in
//! log order with [`Exchange::apply`]. For each client the exchange keeps
//! the highest sequence number applied and that command's result:
//!
//! - a command with a higher sequence number is applied to the book, and
//!   its result becomes the client's remembered one;
//! - a command with the remembered sequence number is a **duplicate** (a
//!   retry of an order that was committed already): the book is left
//!   alone and the remembered result is its answer;
//! - a lower sequence number is **stale**: ignored.
//!
//! A client sends its next order only after the previous one was
//! answered, so a retry always carries the latest number. The decision
//! depends only on the log, so every replica makes the same one.

use super::book::{Book, BookError, OrderId, OrderKind, Placement, Price, Quantity, Side};
use std::collections::BTreeMap;
use std::fmt;

/// Clients the exchange remembers at most. A command of a new client
/// beyond this is rejected (the same way on every replica), which bounds
/// the deduplication table.
pub const MAX_CLIENTS: usize = 65_536;
/// Size of the largest encoded [`Command`], bytes.
pub const MAX_COMMAND_LEN: usize = 35;
/// The encoding's version byte.
const VERSION: u8 = 1;

/// An operation on the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Place a limit order.
    Limit {
        /// Buy or sell.
        side: Side,
        /// Limit price, ticks.
        price: Price,
        /// Lots.
        quantity: Quantity,
    },
    /// Place a market order.
    Market {
        /// Buy or sell.
        side: Side,
        /// Lots.
        quantity: Quantity,
    },
    /// Cancel a resting order.
    Cancel {
        /// The order.
        order: OrderId,
    },
}

/// One client's numbered operation: the payload of a log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// The client (non-zero), unique among the exchange's clients.
    pub client: u64,
    /// The client's sequence number (from 1, increasing).
    pub seq: u64,
    /// What to do.
    pub op: Op,
}

/// A log entry that is not a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed command entry: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl Command {
    /// Little-endian encoding: version, op (1 limit, 2 market, 3 cancel),
    /// client u64, seq u64, then side u8 (0 buy, 1 sell), quantity u64 and
    /// price u64 (limit) / side and quantity (market) / order id (cancel).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(MAX_COMMAND_LEN);
        let op = match self.op {
            Op::Limit { .. } => 1,
            Op::Market { .. } => 2,
            Op::Cancel { .. } => 3,
        };
        b.extend_from_slice(&[VERSION, op]);
        b.extend_from_slice(&self.client.to_le_bytes());
        b.extend_from_slice(&self.seq.to_le_bytes());
        let side = |s: Side| u8::from(s == Side::Sell);
        match self.op {
            Op::Limit {
                side: s,
                price,
                quantity,
            } => {
                b.push(side(s));
                b.extend_from_slice(&quantity.to_le_bytes());
                b.extend_from_slice(&price.to_le_bytes());
            }
            Op::Market { side: s, quantity } => {
                b.push(side(s));
                b.extend_from_slice(&quantity.to_le_bytes());
            }
            Op::Cancel { order } => b.extend_from_slice(&order.0.to_le_bytes()),
        }
        b
    }

    /// Decodes [`Command::encode`]'s bytes; anything else is an error
    /// saying what is wrong.
    pub fn decode(b: &[u8]) -> Result<Command, DecodeError> {
        let err = |m: String| Err(DecodeError(m));
        if b.len() < 18 {
            return err(format!("{} bytes, a command has at least 18", b.len()));
        }
        if b[0] != VERSION {
            return err(format!("version {}, expected {VERSION}", b[0]));
        }
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let side = |at: usize| match b[at] {
            0 => Ok(Side::Buy),
            1 => Ok(Side::Sell),
            s => Err(DecodeError(format!("side byte {s}"))),
        };
        let (op, len) = match b[1] {
            1 if b.len() == 35 => (
                Op::Limit {
                    side: side(18)?,
                    quantity: word(19),
                    price: word(27),
                },
                35,
            ),
            2 if b.len() == 27 => (
                Op::Market {
                    side: side(18)?,
                    quantity: word(19),
                },
                27,
            ),
            3 if b.len() == 26 => (
                Op::Cancel {
                    order: OrderId(word(18)),
                },
                26,
            ),
            op @ 1..=3 => return err(format!("op {op} with {} bytes", b.len())),
            op => return err(format!("unknown op {op}")),
        };
        debug_assert_eq!(len, b.len());
        Ok(Command {
            client: word(2),
            seq: word(10),
            op,
        })
    }
}

/// Why a command did not change the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The book refused it.
    Book(BookError),
    /// A new client while the exchange remembers [`MAX_CLIENTS`].
    TooManyClients,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Book(e) => e.fmt(f),
            Rejection::TooManyClients => write!(f, "too many clients (at most {MAX_CLIENTS})"),
        }
    }
}

/// The result of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The order was placed.
    Placed(Placement),
    /// The order was cancelled; `quantity` lots were left of it.
    Cancelled {
        /// The cancelled order.
        order: OrderId,
        /// Lots it had left.
        quantity: Quantity,
    },
    /// The command was sequenced but changed nothing.
    Rejected(Rejection),
}

/// A command's result and the log index where it took effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The log index of the entry that took effect.
    pub index: u64,
    /// What it did.
    pub outcome: Outcome,
}

/// What applying one log entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A new command, applied.
    Fresh(Applied),
    /// A retry of the client's latest command: the original's result.
    Duplicate(Applied),
    /// An older command than the client's latest: ignored.
    Stale {
        /// The command's client.
        client: u64,
        /// The command's sequence number.
        seq: u64,
        /// The client's latest applied sequence number.
        latest: u64,
    },
    /// Not a command (never proposed by a server): ignored.
    Malformed(DecodeError),
}

/// The replicated state: the book and the deduplication table.
#[derive(Clone, Debug, Default)]
pub struct Exchange {
    book: Book,
    /// Per client: latest applied sequence number and its result.
    clients: BTreeMap<u64, (u64, Applied)>,
    applied: u64,
    duplicates: u64,
    stale: u64,
    malformed: u64,
}

impl Exchange {
    /// An empty exchange.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the committed entry at log `index` (entries must come in
    /// log order).
    pub fn apply(&mut self, index: u64, payload: &[u8]) -> Effect {
        assert!(
            index > self.applied,
            "entry {index} applied after {}: log order broken",
            self.applied
        );
        self.applied = index;
        let cmd = match Command::decode(payload) {
            Ok(c) => c,
            Err(e) => {
                self.malformed += 1;
                return Effect::Malformed(e);
            }
        };
        let known = self.clients.get(&cmd.client);
        if let Some((latest, result)) = known {
            if cmd.seq == *latest {
                self.duplicates += 1;
                return Effect::Duplicate(result.clone());
            }
            if cmd.seq < *latest {
                self.stale += 1;
                return Effect::Stale {
                    client: cmd.client,
                    seq: cmd.seq,
                    latest: *latest,
                };
            }
        } else if self.clients.len() >= MAX_CLIENTS {
            return Effect::Fresh(Applied {
                index,
                outcome: Outcome::Rejected(Rejection::TooManyClients),
            });
        }
        let outcome = match cmd.op {
            Op::Limit {
                side,
                price,
                quantity,
            } => self
                .book
                .place(side, OrderKind::Limit(price), quantity)
                .map(Outcome::Placed),
            Op::Market { side, quantity } => self
                .book
                .place(side, OrderKind::Market, quantity)
                .map(Outcome::Placed),
            Op::Cancel { order } => self
                .book
                .cancel(order)
                .map(|quantity| Outcome::Cancelled { order, quantity }),
        }
        .unwrap_or_else(|e| Outcome::Rejected(Rejection::Book(e)));
        let applied = Applied { index, outcome };
        self.clients.insert(cmd.client, (cmd.seq, applied.clone()));
        Effect::Fresh(applied)
    }

    /// The book.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// The last applied log index.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Client `client`'s latest applied sequence number, if any.
    pub fn latest(&self, client: u64) -> Option<u64> {
        self.clients.get(&client).map(|(seq, _)| *seq)
    }

    /// Entries that were duplicates of a client's latest command.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The whole state in canonical text: the applied index and counters,
    /// the book ([`Book::write_canonical`]), then one `client <id> <seq>
    /// <index>` line per client. Replicas that applied the same log write
    /// the same text.
    pub fn canonical(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "applied {} duplicates {} stale {} malformed {}",
            self.applied, self.duplicates, self.stale, self.malformed
        );
        self.book.write_canonical(&mut s);
        for (client, (seq, a)) in &self.clients {
            let _ = writeln!(s, "client {client} {seq} {}", a.index);
        }
        s
    }

    /// A 64-bit FNV-1a hash of [`Exchange::canonical`]: equal on replicas
    /// that applied the same log.
    pub fn digest(&self) -> u64 {
        fnv1a(self.canonical().as_bytes())
    }
}

/// 64-bit FNV-1a: small, dependency-free and stable across builds.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(client: u64, seq: u64, side: Side, price: Price, quantity: Quantity) -> Vec<u8> {
        Command {
            client,
            seq,
            op: Op::Limit {
                side,
                price,
                quantity,
            },
        }
        .encode()
    }

    #[test]
    fn commands_round_trip_and_bad_bytes_are_named() {
        let ops = [
            Op::Limit {
                side: Side::Sell,
                price: 7,
                quantity: 9,
            },
            Op::Market {
                side: Side::Buy,
                quantity: 3,
            },
            Op::Cancel { order: OrderId(5) },
        ];
        for op in ops {
            let c = Command {
                client: u64::MAX,
                seq: 42,
                op,
            };
            let b = c.encode();
            assert!(b.len() <= MAX_COMMAND_LEN);
            assert_eq!(Command::decode(&b), Ok(c));
        }
        let good = limit(1, 1, Side::Buy, 1, 1);
        let msg = |b: &[u8]| Command::decode(b).unwrap_err().to_string();
        assert!(msg(&good[..10]).contains("10 bytes"));
        assert!(msg(&good[..30]).contains("op 1 with 30 bytes"));
        let mut v = good.clone();
        v[0] = 9;
        assert!(msg(&v).contains("version 9"));
        let mut v = good.clone();
        v[1] = 7;
        assert!(msg(&v).contains("unknown op 7"));
        let mut v = good;
        v[18] = 2;
        assert!(msg(&v).contains("side byte 2"));
    }

    #[test]
    fn a_retried_command_is_applied_once_and_answered_with_the_original() {
        let mut x = Exchange::new();
        let first = x.apply(1, &limit(7, 1, Side::Sell, 100, 10));
        let Effect::Fresh(original) = first else {
            panic!("{first:?}")
        };
        // The same order committed again (retried at a new leader).
        assert_eq!(
            x.apply(2, &limit(7, 1, Side::Sell, 100, 10)),
            Effect::Duplicate(original.clone())
        );
        assert_eq!(x.book().open_orders(), 1);
        assert_eq!(x.book().placed(), 1);
        assert_eq!(x.duplicates(), 1);
        // The next order of the client goes through.
        assert!(matches!(
            x.apply(3, &limit(7, 2, Side::Buy, 100, 4)),
            Effect::Fresh(Applied {
                index: 3,
                outcome: Outcome::Placed(_)
            })
        ));
        // A copy of order 1 that commits only now is stale.
        assert_eq!(
            x.apply(4, &limit(7, 1, Side::Sell, 100, 10)),
            Effect::Stale {
                client: 7,
                seq: 1,
                latest: 2
            }
        );
        assert_eq!(x.book().best_ask(), Some((100, 6)));
        assert_eq!(x.latest(7), Some(2));
    }

    #[test]
    fn clients_are_deduplicated_independently() {
        let mut x = Exchange::new();
        x.apply(1, &limit(1, 5, Side::Buy, 90, 1));
        let e = x.apply(2, &limit(2, 5, Side::Buy, 90, 1));
        assert!(matches!(e, Effect::Fresh(_)), "{e:?}");
        assert_eq!(x.book().open_orders(), 2);
    }

    #[test]
    fn rejections_are_sequenced_and_remembered() {
        let mut x = Exchange::new();
        let cancel = Command {
            client: 3,
            seq: 1,
            op: Op::Cancel { order: OrderId(99) },
        }
        .encode();
        let want = Applied {
            index: 1,
            outcome: Outcome::Rejected(Rejection::Book(BookError::UnknownOrder(OrderId(99)))),
        };
        assert_eq!(x.apply(1, &cancel), Effect::Fresh(want.clone()));
        assert_eq!(x.apply(2, &cancel), Effect::Duplicate(want));
    }

    #[test]
    fn malformed_entries_change_nothing_but_the_index() {
        let mut x = Exchange::new();
        assert!(matches!(x.apply(1, b"junk"), Effect::Malformed(_)));
        assert_eq!(x.applied(), 1);
        assert_eq!(x.book().placed(), 0);
    }

    #[test]
    #[should_panic(expected = "log order broken")]
    fn entries_out_of_log_order_are_a_bug() {
        let mut x = Exchange::new();
        x.apply(2, &limit(1, 1, Side::Buy, 1, 1));
        x.apply(2, &limit(1, 2, Side::Buy, 1, 1));
    }

    #[test]
    fn equal_logs_give_equal_digests_and_different_ones_differ() {
        let log: Vec<Vec<u8>> = (1..50)
            .map(|i| limit(i % 4 + 1, i, Side::Buy, 90 + i % 7, i))
            .collect();
        let replay = |n: usize| {
            let mut x = Exchange::new();
            for (i, e) in log.iter().take(n).enumerate() {
                x.apply(i as u64 + 1, e);
            }
            x
        };
        assert_eq!(replay(49).digest(), replay(49).digest());
        assert_ne!(replay(49).digest(), replay(48).digest());
        assert!(replay(49).canonical().contains("client 1 48 48\n"));
    }
}
