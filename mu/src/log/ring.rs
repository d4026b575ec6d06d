//! Absolute log positions on a physical ring.
//!
//! Every entry has an absolute position (bytes since the start of the log);
//! it lives at `RING + position % capacity`. Positions of decided entries
//! are the same on every replica, because they follow from the sizes of the
//! entries before them. An entry may straddle the end of the ring: it is
//! then copied in two pieces.

use crate::fabric::Memory;
use crate::log::layout::RING;

/// One physical piece of an absolute range: `(region offset, length)`.
pub type Piece = (u64, u64);

/// Splits the absolute range `[pos, pos + len)` into at most two physical
/// pieces of the ring. `len` must not exceed `capacity`.
pub fn pieces(capacity: u64, pos: u64, len: u64) -> [Option<Piece>; 2] {
    assert!(len <= capacity, "range of {len} bytes exceeds the ring");
    let start = pos % capacity;
    let first = len.min(capacity - start);
    let second = len - first;
    [
        (first > 0).then_some((RING + start, first)),
        (second > 0).then_some((RING, second)),
    ]
}

/// Copies the absolute range starting at `pos` out of the local ring.
pub fn read<M: Memory + ?Sized>(mem: &M, capacity: u64, pos: u64, buf: &mut [u8]) {
    let mut done = 0usize;
    for (off, len) in pieces(capacity, pos, buf.len() as u64)
        .into_iter()
        .flatten()
    {
        mem.read(off, &mut buf[done..done + len as usize]);
        done += len as usize;
    }
}

/// Copies `data` into the local ring at absolute position `pos`.
pub fn write<M: Memory + ?Sized>(mem: &mut M, capacity: u64, pos: u64, data: &[u8]) {
    let mut done = 0usize;
    for (off, len) in pieces(capacity, pos, data.len() as u64)
        .into_iter()
        .flatten()
    {
        mem.write(off, &data[done..done + len as usize]);
        done += len as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_at_the_ring_end() {
        assert_eq!(pieces(1024, 0, 64), [Some((RING, 64)), None]);
        assert_eq!(
            pieces(1024, 1000, 64),
            [Some((RING + 1000, 24)), Some((RING, 40))]
        );
        assert_eq!(pieces(1024, 2048 + 8, 16), [Some((RING + 8, 16)), None]);
    }

    #[test]
    fn read_write_round_trip_across_the_end() {
        let mut mem = vec![0u8; (RING + 256) as usize];
        let data: Vec<u8> = (0..100).collect();
        write(&mut mem, 256, 256 * 3 + 200, &data);
        let mut back = vec![0u8; 100];
        read(&mem, 256, 200, &mut back);
        assert_eq!(back, data);
    }
}
