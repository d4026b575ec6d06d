//! Codecs and command knowledge for mu-sidecar: RESP2/RESP3 and memcached.
//!
//! # Layout
//!
//! - [`resp`]: RESP frames, the request decoder (multibulk and inline), the
//!   frame (reply) decoder and the encoder.
//! - [`memcached`]: memcached text and meta requests and replies, their
//!   decoders and encoder.
//! - [`table`]: every Redis 7.0 command and subcommand (generated from a
//!   live server, checked against one by `tests/table_live.rs`) with our
//!   [`table::CommandClass`] and key positions; memcached verbs likewise.
//! - [`rewrite`]: deterministic rewriting of writes into [`entry::Entry`]
//!   values (the versioned, length-prefixed format handed to Mu), refusals,
//!   WATCH guards, and the applier every replica runs; the full policy is
//!   in [`policy_table`].
//! - `codec` (feature `codec`): `tokio_util::codec` impls.
//! - [`Limits`], [`ProtocolError`]: the bounds every decoder enforces and
//!   the one error a corrupt stream produces.
//!
//! # The decode contract
//!
//! Every decoder has `decode(&mut BytesMut) -> Result<Option<T>,
//! ProtocolError>` with the `tokio_util::codec::Decoder` meaning:
//!
//! - `Ok(Some(value))`: one complete value; its bytes were removed from the
//!   front of the buffer and the value holds zero-copy slices of them.
//! - `Ok(None)`: the buffer holds only the start of a value; nothing was
//!   removed. Append more bytes and call again. Any split of a byte stream
//!   into reads yields the same values.
//! - `Err(e)`: the stream is corrupt at byte `e.pos()`; it cannot be
//!   resynchronised and the connection should be closed.
//!
//! Decoders never recurse and check every announced length against
//! [`Limits`] before allocating for it.
//!
//! # The sidecar's path through this crate
//!
//! ```
//! use bytes::BytesMut;
//! use mu_protocols::entry::Entry;
//! use mu_protocols::resp::{Frame, FrameDecoder, RequestDecoder};
//! use mu_protocols::rewrite::{Action, ApplyPlan, Context, RedisApplier, RedisSession};
//! use mu_protocols::table::{class_of, lookup, CommandClass};
//!
//! // Client side (leader): decode, classify, rewrite.
//! let mut from_client = BytesMut::from(&b"SET k v EX 10\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"[..]);
//! let mut requests = RequestDecoder::default();
//! let mut session = RedisSession::default();
//! let ctx = Context { now_ms: 1_700_000_000_000, applied_index: 41 };
//!
//! let set = requests.decode(&mut from_client)?.expect("complete request");
//! assert_eq!(class_of(lookup(&set).unwrap()), CommandClass::Write);
//! let Action::Replicate(entry) = session.rewrite(&set, &ctx) else { unreachable!() };
//! let proposal = entry.to_bytes(); // what goes to mu's propose()
//!
//! let get = requests.decode(&mut from_client)?.expect("complete request");
//! assert_eq!(session.rewrite(&get, &ctx), Action::Local); // served by the local backend
//!
//! // Every replica, in log order: decode the entry, turn it into backend requests.
//! let Entry::Redis(committed) = Entry::decode(&proposal)? else { unreachable!() };
//! let mut applier = RedisApplier::default();
//! let mut to_backend = BytesMut::new();
//! let plan = applier.apply(42, &committed, &mut to_backend);
//! assert_eq!(plan, ApplyPlan::Send { replies: 2, client_reply: 1 });
//! assert_eq!(
//!     &to_backend[..],
//!     &b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$4\r\nPXAT\r\n$13\r\n1700000010000\r\n"[..]
//! );
//!
//! // Backend replies are decoded and the client's one is re-encoded.
//! let mut from_backend = BytesMut::from(&b"+OK\r\n+OK\r\n"[..]);
//! let mut replies = FrameDecoder::default();
//! let _select = replies.decode(&mut from_backend)?.unwrap();
//! let answer = replies.decode(&mut from_backend)?.unwrap();
//! assert_eq!(answer, Frame::simple("OK"));
//! let mut to_client = BytesMut::new();
//! answer.encode(&mut to_client);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "codec")]
pub mod codec;
pub mod entry;
mod error;
#[cfg(fuzzing)]
pub mod fuzz_logic;
mod limits;
mod line;
pub mod memcached;
pub mod resp;
pub mod rewrite;
pub mod table;

pub use error::{Limit, ProtocolError};
pub use limits::Limits;
pub use rewrite::policy;

/// The replication policy of every Redis command (rendered from
/// [`rewrite::policy::policy`]; `tests/policy_doc.rs` keeps it current).
#[doc = include_str!("../POLICY.md")]
pub mod policy_table {}
