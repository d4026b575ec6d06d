//! The replicated entry: what the sidecar hands to Mu's `propose` and what
//! every replica applies to its backend, in log order.
//!
//! # Wire format (version 1)
//!
//! All integers little-endian; every variable-length field is length
//! prefixed, so an entry is self-delimiting and a reader never guesses.
//!
//! ```text
//! u8  version (= 1)
//! u8  kind    (1 = Redis, 2 = memcached)
//! u8  flags   (bit 0: Redis transaction, MULTI..EXEC;
//!              bit 1: Redis, answered in RESP3)
//! u8  reserved (= 0)
//! u32 body length in bytes
//! body:
//!   Redis:     u32 db
//!              u32 guard count, then per guard: u32 db, u64 seen index,
//!                  u32 key length, key bytes
//!              u32 command count, then per command: u32 argument count,
//!                  then per argument: u32 length, bytes
//!   memcached: the request in memcached wire form (exactly one request)
//! ```
//!
//! Decoding checks every length against the bytes actually present before
//! slicing, rejects unknown versions, kinds, flags and trailing bytes, and
//! returns zero-copy slices of the input.

use bytes::{BufMut, Bytes, BytesMut};

/// The format version this crate writes.
pub const ENTRY_VERSION: u8 = 1;

const KIND_REDIS: u8 = 1;
const KIND_MEMCACHED: u8 = 2;
const FLAG_TRANSACTION: u8 = 1;
const FLAG_RESP3: u8 = 2;
const HEADER_LEN: usize = 8;

/// A WATCH condition checked when the transaction is applied: abort if
/// `key` in `db` was written by any entry with an index above `seen_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchGuard {
    /// Database of the watched key.
    pub db: u32,
    /// The watched key.
    pub key: Bytes,
    /// The last applied log index when the client issued WATCH.
    pub seen_index: u64,
}

/// A Redis write (or MULTI..EXEC block) in deterministic form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisEntry {
    /// The database the commands run in (the client's `SELECT`).
    pub db: u32,
    /// True: run the commands inside `MULTI` .. `EXEC`.
    pub transaction: bool,
    /// True: the client speaks RESP3 (`HELLO 3`), so the commands run on
    /// a RESP3 connection and their replies come in its types (maps,
    /// doubles, ...), as the client's own connection would give them.
    pub resp3: bool,
    /// WATCH conditions (transactions only).
    pub guards: Vec<WatchGuard>,
    /// The commands, each as name + arguments.
    pub commands: Vec<Vec<Bytes>>,
}

/// A replicated entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// For a Redis backend.
    Redis(RedisEntry),
    /// For a memcached backend: one request in wire form.
    Memcached(Bytes),
}

/// Why bytes are not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A length points past the end of the input.
    #[error("entry truncated at byte {pos}")]
    Truncated {
        /// Where more bytes were needed.
        pos: usize,
    },
    /// Written by a newer (or corrupt) writer.
    #[error("unknown entry version {0}")]
    UnknownVersion(u8),
    /// Unknown backend kind byte.
    #[error("unknown entry kind {0}")]
    UnknownKind(u8),
    /// Unknown flag bits or reserved byte set.
    #[error("unknown entry flags {0:#04x}")]
    UnknownFlags(u8),
    /// Bytes after the last field.
    #[error("{0} trailing bytes after the entry")]
    Trailing(usize),
}

fn put_bytes(dst: &mut impl BufMut, b: &[u8]) {
    dst.put_u32_le(b.len() as u32);
    dst.put_slice(b);
}

impl Entry {
    /// Appends the encoded entry to `dst` (a `BytesMut` or a `Vec<u8>`).
    pub fn encode<B: BufMut + AsMut<[u8]>>(&self, dst: &mut B) {
        let start = dst.as_mut().len();
        dst.put_u8(ENTRY_VERSION);
        match self {
            Entry::Redis(r) => {
                dst.put_u8(KIND_REDIS);
                let transaction = if r.transaction { FLAG_TRANSACTION } else { 0 };
                dst.put_u8(transaction | if r.resp3 { FLAG_RESP3 } else { 0 });
                dst.put_u8(0);
                dst.put_u32_le(0);
                dst.put_u32_le(r.db);
                dst.put_u32_le(r.guards.len() as u32);
                for g in &r.guards {
                    dst.put_u32_le(g.db);
                    dst.put_u64_le(g.seen_index);
                    put_bytes(dst, &g.key);
                }
                dst.put_u32_le(r.commands.len() as u32);
                for cmd in &r.commands {
                    dst.put_u32_le(cmd.len() as u32);
                    for arg in cmd {
                        put_bytes(dst, arg);
                    }
                }
            }
            Entry::Memcached(wire) => {
                dst.put_u8(KIND_MEMCACHED);
                dst.put_u8(0);
                dst.put_u8(0);
                dst.put_u32_le(0);
                dst.put_slice(wire);
            }
        }
        let dst = dst.as_mut();
        let body = (dst.len() - start - HEADER_LEN) as u32;
        dst[start + 4..start + 8].copy_from_slice(&body.to_le_bytes());
    }

    /// The encoded entry as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut dst);
        dst.freeze()
    }

    /// The length of the encoded entry.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Entry::Redis(r) => {
                    let guards: usize = r.guards.iter().map(|g| 16 + g.key.len()).sum();
                    let commands: usize = r
                        .commands
                        .iter()
                        .map(|c| 4 + c.iter().map(|a| 4 + a.len()).sum::<usize>())
                        .sum();
                    8 + guards + 4 + commands
                }
                Entry::Memcached(wire) => wire.len(),
            }
    }

    /// Decodes one entry that occupies all of `bytes`.
    pub fn decode(bytes: &Bytes) -> Result<Entry, EntryError> {
        let mut r = Reader { b: bytes, pos: 0 };
        let version = r.u8()?;
        if version != ENTRY_VERSION {
            return Err(EntryError::UnknownVersion(version));
        }
        let kind = r.u8()?;
        let flags = r.u8()?;
        let reserved = r.u8()?;
        let known = FLAG_TRANSACTION | FLAG_RESP3;
        if reserved != 0 || flags & !known != 0 || (kind != KIND_REDIS && flags != 0) {
            return Err(EntryError::UnknownFlags(flags | reserved));
        }
        let body = r.u32()? as usize;
        let end = HEADER_LEN
            .checked_add(body)
            .ok_or(EntryError::Truncated { pos: 4 })?;
        if end > bytes.len() {
            return Err(EntryError::Truncated { pos: bytes.len() });
        }
        if end < bytes.len() {
            return Err(EntryError::Trailing(bytes.len() - end));
        }
        match kind {
            KIND_REDIS => r
                .redis(flags & FLAG_TRANSACTION != 0, flags & FLAG_RESP3 != 0)
                .map(Entry::Redis),
            KIND_MEMCACHED => Ok(Entry::Memcached(bytes.slice(HEADER_LEN..))),
            other => Err(EntryError::UnknownKind(other)),
        }
    }
}

struct Reader<'a> {
    b: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], EntryError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or(EntryError::Truncated { pos: self.pos })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, EntryError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, EntryError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, EntryError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<Bytes, EntryError> {
        let n = self.u32()? as usize;
        let start = self.pos;
        self.take(n)?;
        Ok(self.b.slice(start..start + n))
    }
    /// A count of items each at least `min_size` bytes long, checked
    /// against the remaining input before anything is allocated.
    fn count(&mut self, min_size: usize) -> Result<usize, EntryError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.b.len() - self.pos {
            return Err(EntryError::Truncated { pos: self.pos });
        }
        Ok(n)
    }
    fn redis(&mut self, transaction: bool, resp3: bool) -> Result<RedisEntry, EntryError> {
        let db = self.u32()?;
        let n = self.count(16)?;
        let mut guards = Vec::with_capacity(n);
        for _ in 0..n {
            let db = self.u32()?;
            let seen_index = self.u64()?;
            let key = self.bytes()?;
            guards.push(WatchGuard {
                db,
                key,
                seen_index,
            });
        }
        let n = self.count(4)?;
        let mut commands = Vec::with_capacity(n);
        for _ in 0..n {
            let argc = self.count(4)?;
            let mut args = Vec::with_capacity(argc);
            for _ in 0..argc {
                args.push(self.bytes()?);
            }
            commands.push(args);
        }
        if self.pos != self.b.len() {
            return Err(EntryError::Trailing(self.b.len() - self.pos));
        }
        Ok(RedisEntry {
            db,
            transaction,
            resp3,
            guards,
            commands,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry::Redis(RedisEntry {
            db: 3,
            transaction: true,
            resp3: true,
            guards: vec![WatchGuard {
                db: 3,
                key: Bytes::from_static(b"k"),
                seen_index: 42,
            }],
            commands: vec![
                vec![
                    Bytes::from_static(b"SET"),
                    Bytes::from_static(b"k"),
                    Bytes::from_static(b"v"),
                ],
                vec![Bytes::from_static(b"INCR"), Bytes::from_static(b"n")],
            ],
        })
    }

    #[test]
    fn round_trip() {
        for e in [
            sample(),
            Entry::Memcached(Bytes::from_static(b"set k 0 0 1\r\na\r\n")),
        ] {
            assert_eq!(Entry::decode(&e.to_bytes()).unwrap(), e);
            assert_eq!(e.encoded_len(), e.to_bytes().len());
        }
    }

    #[test]
    fn every_truncation_and_bad_header_is_rejected() {
        let full = sample().to_bytes();
        for cut in 0..full.len() {
            assert!(Entry::decode(&full.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut longer = BytesMut::from(&full[..]);
        longer.put_u8(0);
        assert!(Entry::decode(&longer.freeze()).is_err());
        let mut bad = BytesMut::from(&full[..]);
        bad[0] = 2;
        assert_eq!(
            Entry::decode(&bad.freeze()),
            Err(EntryError::UnknownVersion(2))
        );
    }
}
