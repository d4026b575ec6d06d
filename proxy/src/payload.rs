//! What the sidecar proposes to Mu: a small header naming the sidecar that
//! is waiting for the outcome, then a `mu-protocols` entry.
//!
//! ```text
//! u8  version (= 1)
//! u8  origin: the node id (1-based) of the sidecar a client waits on
//! u8  kind:   1 = write (entry follows), 2 = read barrier (nothing follows)
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
    out.push(VERSION);
    out.push(header.origin);
    out.push(match header.kind {
        Kind::Write => 1,
        Kind::Barrier => 2,
    });
    out.push(0);
    out.extend_from_slice(&header.tag.to_le_bytes());
    out.extend_from_slice(entry);
    out
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
}
