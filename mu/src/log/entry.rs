//! The self-describing log entry.
//!
//! ```text
//! 0   u32 payload length       4   u32 magic "MUE1"
//! 8   u64 index                16  u64 proposal that wrote it
//! 24  u64 commit (exclusive: every index below it is decided)
//! 32  u64 entry id (origin)    40  u64 prev_hash (chain hash of index-1)
//! 48  u64 checksum             56  payload ...   then u64 trailer = !checksum
//! total length rounded up to 64 bytes
//! ```
//!
//! The *chain hash* of an entry covers its index, id, payload and the chain
//! hash of the entry before it, so equal chain hashes mean equal log
//! prefixes. It does not cover the proposal or commit fields, which a new
//! leader rewrites when it adopts a value. The *checksum* covers every header
//! field and the chain hash; the trailer is its complement and marks the
//! entry complete. A reader trusts nothing it has not verified: torn writes,
//! stale bytes from an earlier lap of the ring and bytes that were never an
//! entry all fail the checksum or the index check, whatever order the bytes
//! of a write arrived in and whatever the ring held before.

use crate::types::EntryId;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Header bytes before the payload.
pub const HEADER_LEN: u64 = 56;
/// Trailer bytes after the payload.
pub const TRAILER_LEN: u64 = 8;
/// Entries start on 64-byte boundaries (cache lines; RDMA-friendly).
pub const ALIGN: u64 = 64;
/// Marks the start of an entry.
pub const MAGIC: u32 = u32::from_le_bytes(*b"MUE1");
/// Hard upper bound on `max_payload`.
pub const MAX_PAYLOAD_LIMIT: u32 = 64 << 20;

/// Bytes an entry with `payload_len` bytes of payload occupies in the ring.
pub const fn total_len(payload_len: u32) -> u64 {
    (HEADER_LEN + payload_len as u64 + TRAILER_LEN).next_multiple_of(ALIGN)
}

/// The header fields a writer chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Payload length in bytes.
    pub len: u32,
    /// Log index, starting at 1.
    pub index: u64,
    /// Proposal number of the leader that wrote this copy.
    pub proposal: u64,
    /// Every index below this one was decided when the entry was written.
    pub commit: u64,
    /// Identity of the proposed value.
    pub id: EntryId,
    /// Chain hash of the entry at `index - 1` (0 before the first entry).
    pub prev_hash: u64,
}

/// A verified entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Its header.
    pub header: Header,
    /// Its chain hash.
    pub hash: u64,
    /// Bytes it occupies in the ring.
    pub total: u64,
}

/// Why bytes are not (yet) a valid entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The header does not start with the magic number or has an impossible length.
    NotAnEntry,
    /// The buffer holds fewer bytes than the entry claims.
    Short {
        /// Bytes needed.
        needed: u64,
    },
    /// Checksum or trailer mismatch: torn, stale or foreign bytes.
    BadChecksum,
}

/// Chain hash of an entry.
pub fn chain_hash(index: u64, id: EntryId, prev_hash: u64, payload: &[u8]) -> u64 {
    let mut seed = [0u8; 24];
    seed[..8].copy_from_slice(&index.to_le_bytes());
    seed[8..16].copy_from_slice(&id.0.to_le_bytes());
    seed[16..].copy_from_slice(&prev_hash.to_le_bytes());
    xxh3_64_with_seed(payload, xxh3_64(&seed))
}

fn checksum(head: &[u8], hash: u64) -> u64 {
    let mut buf = [0u8; 56];
    buf[..48].copy_from_slice(&head[..48]);
    buf[48..].copy_from_slice(&hash.to_le_bytes());
    xxh3_64(&buf)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

/// Writes a complete entry into `out` (at least `total_len(payload.len())`
/// bytes) and returns its chain hash.
pub fn encode(header: &Header, payload: &[u8], out: &mut [u8]) -> u64 {
    assert_eq!(header.len as usize, payload.len(), "header length mismatch");
    let total = total_len(header.len) as usize;
    assert!(out.len() >= total, "output buffer too small");
    out[0..4].copy_from_slice(&header.len.to_le_bytes());
    out[4..8].copy_from_slice(&MAGIC.to_le_bytes());
    out[8..16].copy_from_slice(&header.index.to_le_bytes());
    out[16..24].copy_from_slice(&header.proposal.to_le_bytes());
    out[24..32].copy_from_slice(&header.commit.to_le_bytes());
    out[32..40].copy_from_slice(&header.id.0.to_le_bytes());
    out[40..48].copy_from_slice(&header.prev_hash.to_le_bytes());
    let hash = chain_hash(header.index, header.id, header.prev_hash, payload);
    let sum = checksum(out, hash);
    out[48..56].copy_from_slice(&sum.to_le_bytes());
    let p = HEADER_LEN as usize;
    out[p..p + payload.len()].copy_from_slice(payload);
    let t = p + payload.len();
    out[t..t + 8].copy_from_slice(&(!sum).to_le_bytes());
    // Padding is left as it is: readers never look at it.
    hash
}

/// Reads the claimed payload length and index from a header without
/// trusting them; `None` when the magic number is wrong or the length is
/// above `max_payload`. Use it to decide how much to read before [`verify`].
pub fn peek(head: &[u8], max_payload: u32) -> Option<(u32, u64)> {
    if head.len() < HEADER_LEN as usize || u32_at(head, 4) != MAGIC {
        return None;
    }
    let len = u32_at(head, 0);
    (len <= max_payload).then(|| (len, u64_at(head, 8)))
}

/// Verifies the entry at the start of `buf`.
pub fn verify(buf: &[u8], max_payload: u32) -> Result<Parsed, Invalid> {
    let (len, index) = peek(buf, max_payload).ok_or(Invalid::NotAnEntry)?;
    let total = total_len(len);
    let end = (HEADER_LEN + len as u64 + TRAILER_LEN) as usize;
    if (buf.len() as u64) < total && buf.len() < end {
        return Err(Invalid::Short { needed: total });
    }
    let header = Header {
        len,
        index,
        proposal: u64_at(buf, 16),
        commit: u64_at(buf, 24),
        id: EntryId(u64_at(buf, 32)),
        prev_hash: u64_at(buf, 40),
    };
    let p = HEADER_LEN as usize;
    let payload = &buf[p..p + len as usize];
    let hash = chain_hash(index, header.id, header.prev_hash, payload);
    let sum = checksum(buf, hash);
    if u64_at(buf, 48) != sum || u64_at(buf, p + len as usize) != !sum {
        return Err(Invalid::BadChecksum);
    }
    Ok(Parsed {
        header,
        hash,
        total,
    })
}

/// The payload of a verified entry at the start of `buf`.
pub fn payload<'a>(buf: &'a [u8], parsed: &Parsed) -> &'a [u8] {
    let p = HEADER_LEN as usize;
    &buf[p..p + parsed.header.len as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;

    fn sample(len: u32) -> (Header, Vec<u8>) {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let header = Header {
            len,
            index: 42,
            proposal: 128 + 1,
            commit: 40,
            id: EntryId::new(NodeId(1), 3, 99),
            prev_hash: 0xfeed,
        };
        (header, payload)
    }

    #[test]
    fn encode_verify_round_trip_for_sizes_around_alignment() {
        for len in [0u32, 1, 7, 8, 63, 64, 65, 200, 255, 256, 257, 4096, 1 << 20] {
            let (h, p) = sample(len);
            let mut buf = vec![0xAAu8; total_len(len) as usize];
            let hash = encode(&h, &p, &mut buf);
            let parsed = verify(&buf, 1 << 20).unwrap();
            assert_eq!(parsed.header, h);
            assert_eq!(parsed.hash, hash);
            assert_eq!(payload(&buf, &parsed), &p[..]);
            assert_eq!(parsed.total % 64, 0);
        }
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let (h, p) = sample(100);
        let mut buf = vec![0u8; total_len(100) as usize];
        encode(&h, &p, &mut buf);
        let end = (HEADER_LEN + 100 + TRAILER_LEN) as usize;
        for i in 0..end {
            let mut torn = buf.clone();
            torn[i] ^= 0x10;
            assert!(
                verify(&torn, 1 << 20).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn torn_write_mixing_two_entries_is_detected() {
        // An old entry at the same place, then half of a new one landed.
        let (h1, p1) = sample(300);
        let mut h2 = h1;
        h2.proposal += 64;
        h2.id = EntryId::new(NodeId(2), 1, 1);
        let p2 = vec![0x55u8; 300];
        let mut old = vec![0u8; total_len(300) as usize];
        let mut new = old.clone();
        encode(&h1, &p1, &mut old);
        encode(&h2, &p2, &mut new);
        for cut in (0..old.len()).step_by(8) {
            let mut mixed = new[..cut].to_vec();
            mixed.extend_from_slice(&old[cut..]);
            let ok_old = mixed[..] == old[..];
            if !ok_old && mixed[..] != new[..] {
                assert!(verify(&mixed, 1 << 20).is_err(), "cut at {cut} accepted");
            }
            // The other order: the tail of the new entry landed first.
            let mut rev = old[..cut].to_vec();
            rev.extend_from_slice(&new[cut..]);
            if rev[..] != old[..] && rev[..] != new[..] {
                assert!(
                    verify(&rev, 1 << 20).is_err(),
                    "reverse cut at {cut} accepted"
                );
            }
        }
    }

    #[test]
    fn zeroed_and_random_memory_is_not_an_entry() {
        assert_eq!(verify(&[0u8; 256], 1 << 20), Err(Invalid::NotAnEntry));
        let mut x = 0x1234_5678_9abc_def0u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for start in (0..4000).step_by(8) {
            assert!(verify(&noise[start..], 1 << 20).is_err());
        }
    }

    #[test]
    fn chain_hash_ignores_proposal_and_commit() {
        let (h, p) = sample(10);
        let mut h2 = h;
        h2.proposal = 999;
        h2.commit = 1;
        let mut a = vec![0u8; 128];
        let mut b = vec![0u8; 128];
        assert_eq!(encode(&h, &p, &mut a), encode(&h2, &p, &mut b));
        assert_ne!(a, b);
    }
}
