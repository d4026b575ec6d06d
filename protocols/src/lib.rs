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
#![forbid(unsafe_code)]
#![deny(missing_docs)]

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
pub use rewrite::policy;

/// The replication policy of every Redis command (rendered from
/// [`rewrite::policy::policy`]; `tests/policy_doc.rs` keeps it current).
#[doc = include_str!("../POLICY.md")]
pub mod policy_table {}
pub use limits::Limits;
