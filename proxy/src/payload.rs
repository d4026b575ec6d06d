//! What the sidecar proposes to Mu: a small header naming the sidecar that
//! is waiting for the outcome, then a `mu-protocols` entry.
//!
//! ```text
//! u8  version (= 1)
//! u8  origin: the node id (1-based) of the sidecar a client waits on
//! u8  kind:   1 = write (entry follows), 2 = read barrier (nothing follows),
//!             3 = batch (origin and tag unused; members follow, each a
//!             u32 little-endian length and a whole payload of kind 1 or 2)
//! u8  reserved (= 0)
//! u64 tag, little-endian: unique among the origin process's requests
//! ... the entry (`mu_protocols::entry::Entry` wire form), for writes
//! ```
//!
//! Every replica applies writes in log order; the origin additionally
//! hands its own backend's reply to the client waiting under `tag`. So a
//! follower that forwarded a write to the leader answers its client from
//! its own backend, and a client whose write outlived a leader change still
//! gets its answer once the entry commits.
//!
//! A leader packs the proposals waiting at one moment (from its own clients
//! and forwarded ones) into one batch entry: one log write replicates them
//! all, and every replica applies the members in order.

use mu_protocols::entry::Entry;
use thiserror::Error;

const VERSION: u8 = 1;
/// Bytes before the entry.
pub const HEADER: usize = 12;

/// What a payload asks of the appliers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A write: every replica applies the entry.
    Write,
    /// A read barrier (`--reads leader`): nothing is applied; once the origin
    /// has applied up to it, it serves the read from its backend.
    Barrier,
    /// Several payloads in one log entry.
    Batch,
}

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The origin sidecar's node id (1-based).
    pub origin: u8,
    /// Write or barrier.
    pub kind: Kind,
    /// The origin's request tag.
    pub tag: u64,
}

/// Why bytes from the log are not a sidecar payload.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PayloadError {
    /// Fewer bytes than a header.
    #[error("payload of {0} bytes is shorter than the {HEADER}-byte header")]
    Short(usize),
    /// A version this build does not know.
    #[error("unknown payload version {0}")]
    Version(u8),
    /// An unknown kind byte or a reserved byte set.
    #[error("unknown payload kind {0}")]
    Kind(u8),
}

/// Encodes a payload: the header, then `entry`.
pub fn encode(header: Header, entry: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + entry.len());
    put_header(&mut out, header);
    out.extend_from_slice(entry);
    out
}

/// Encodes a payload: the header, then `entry` encoded in place (none for
/// a barrier).
pub fn encode_entry(header: Header, entry: Option<&Entry>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + entry.map_or(0, Entry::encoded_len));
    put_header(&mut out, header);
    if let Some(e) = entry {
        e.encode(&mut out);
    }
    out
}

fn put_header(out: &mut Vec<u8>, header: Header) {
    out.push(VERSION);
    out.push(header.origin);
    out.push(match header.kind {
        Kind::Write => 1,
        Kind::Barrier => 2,
        Kind::Batch => 3,
    });
    out.push(0);
    out.extend_from_slice(&header.tag.to_le_bytes());
}

/// Splits a payload into its header and entry bytes.
pub fn decode(payload: &[u8]) -> Result<(Header, &[u8]), PayloadError> {
    if payload.len() < HEADER {
        return Err(PayloadError::Short(payload.len()));
    }
    if payload[0] != VERSION {
        return Err(PayloadError::Version(payload[0]));
    }
    let kind = match (payload[2], payload[3]) {
        (1, 0) => Kind::Write,
        (2, 0) => Kind::Barrier,
        (3, 0) => Kind::Batch,
        (k, _) => return Err(PayloadError::Kind(k)),
    };
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&payload[4..12]);
    Ok((
        Header {
            origin: payload[1],
            kind,
            tag: u64::from_le_bytes(tag),
        },
        &payload[HEADER..],
    ))
}

/// Bytes a member adds to a batch besides its payload.
pub const MEMBER_OVERHEAD: usize = 4;

/// Packs whole payloads into one batch payload.
pub fn encode_batch<'a>(members: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = encode(
        Header {
            origin: 0,
            kind: Kind::Batch,
            tag: 0,
        },
        &[],
    );
    for m in members {
        out.extend_from_slice(&(m.len() as u32).to_le_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// The members of a batch's body (what follows its header).
pub fn decode_batch(mut body: &[u8]) -> Result<Vec<&[u8]>, PayloadError> {
    let mut members = Vec::new();
    while !body.is_empty() {
        if body.len() < MEMBER_OVERHEAD {
            return Err(PayloadError::Short(body.len()));
        }
        let len = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
        let rest = &body[MEMBER_OVERHEAD..];
        if rest.len() < len {
            return Err(PayloadError::Short(rest.len()));
        }
        members.push(&rest[..len]);
        body = &rest[len..];
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let h = Header {
            origin: 3,
            kind: Kind::Write,
            tag: 0x0102_0304_0506_0708,
        };
        let p = encode(h, b"entry");
        assert_eq!(decode(&p), Ok((h, &b"entry"[..])));
        let b = Header {
            kind: Kind::Barrier,
            ..h
        };
        assert_eq!(decode(&encode(b, b"")), Ok((b, &b""[..])));
        assert_eq!(decode(&p[..5]), Err(PayloadError::Short(5)));
        let mut v = p.clone();
        v[0] = 9;
        assert_eq!(decode(&v), Err(PayloadError::Version(9)));
        let mut k = p.clone();
        k[2] = 7;
        assert_eq!(decode(&k), Err(PayloadError::Kind(7)));
        let mut r = p;
        r[3] = 1;
        assert_eq!(decode(&r), Err(PayloadError::Kind(1)));
    }

    #[test]
    fn batches_round_trip_and_reject_truncation() {
        let a = encode(
            Header {
                origin: 1,
                kind: Kind::Write,
                tag: 7,
            },
            b"first",
        );
        let b = encode(
            Header {
                origin: 2,
                kind: Kind::Barrier,
                tag: 8,
            },
            b"",
        );
        let batch = encode_batch([&a[..], &b[..]]);
        let (h, body) = decode(&batch).unwrap();
        assert_eq!(h.kind, Kind::Batch);
        assert_eq!(decode_batch(body).unwrap(), vec![&a[..], &b[..]]);
        assert!(decode_batch(&body[..body.len() - 1]).is_err());
        assert!(decode_batch(&body[..2]).is_err());
        assert_eq!(decode_batch(&[]).unwrap(), Vec::<&[u8]>::new());
    }
}
