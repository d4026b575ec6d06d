//! The receive buffer of a `tcp` connection, on both its ends.

/// Bytes received and not yet consumed: `buf[start..end]`. The buffer
/// grows to the largest frame seen and is reused, so reading allocates
/// and zeroes nothing in the steady state.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// The least room a read is offered.
const READ_CHUNK: usize = 64 * 1024;

impl Inbox {
    /// The bytes received and not yet consumed.
    pub(super) fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops the first `n` pending bytes.
    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops everything pending.
    pub(super) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Free space to read into: at least [`READ_CHUNK`] bytes, and enough
    /// that the pending bytes can grow to a frame of `need` bytes. Pending
    /// bytes move to the front when the space behind them runs short.
    pub(super) fn room(&mut self, need: usize) -> &mut [u8] {
        if self.start > 0 && self.buf.len() - self.end < READ_CHUNK.max(need) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let len = (self.start + need).max(self.end + READ_CHUNK);
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Counts `k` bytes read into [`Inbox::room`] as pending.
    pub(super) fn filled(&mut self, k: usize) {
        self.end += k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(inbox: &mut Inbox, need: usize, bytes: &[u8]) {
        let room = inbox.room(need);
        assert!(room.len() >= READ_CHUNK.max(bytes.len()));
        room[..bytes.len()].copy_from_slice(bytes);
        inbox.filled(bytes.len());
    }

    #[test]
    fn frames_survive_consumption_compaction_and_growth() {
        let mut inbox = Inbox::default();
        receive(&mut inbox, 0, b"abcdef");
        assert_eq!(inbox.pending(), b"abcdef");
        inbox.consume(2);
        assert_eq!(inbox.pending(), b"cdef");
        // Fill the buffer until what is left behind the pending bytes is
        // less than a chunk: the next room moves them to the front.
        let filler = vec![7u8; READ_CHUNK - 10];
        receive(&mut inbox, 0, &filler);
        inbox.consume(4 + filler.len() - 3);
        assert_eq!(inbox.pending(), &[7, 7, 7]);
        let room = inbox.room(3 * READ_CHUNK);
        assert!(room.len() >= 3 * READ_CHUNK - 3, "room for the whole frame");
        assert_eq!(inbox.pending(), &[7, 7, 7], "kept across the move");
        assert_eq!(inbox.start, 0, "moved to the front");
        inbox.consume(3);
        assert!(inbox.pending().is_empty());
        assert_eq!(inbox.end, 0, "an empty inbox starts over at the front");
        receive(&mut inbox, 0, b"xy");
        inbox.clear();
        assert!(inbox.pending().is_empty());
    }
}
