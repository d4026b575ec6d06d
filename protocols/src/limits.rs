//! Size limits every decoder enforces before it allocates.

/// Upper bounds a decoder checks the moment it reads a length header or
/// scans a line, before reserving any memory for the value.
///
/// A peer that announces a 4 GiB bulk string or a nesting a million levels
/// deep gets a [`ProtocolError::LimitExceeded`](crate::ProtocolError) at the
/// header, not an allocation failure later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string, data block or streamed string in bytes.
    pub bulk_len_max: u64,
    /// Largest number of elements in one aggregate (array, set, push; a map
    /// of `n` pairs counts `n`), and the largest number of keys or values in
    /// one memcached request or reply.
    pub array_len_max: u64,
    /// Deepest nesting of aggregates; a flat array of bulk strings has
    /// depth 1.
    pub depth_max: usize,
    /// Longest protocol line (header, inline command, memcached command
    /// line) in bytes, without its line terminator.
    pub line_len_max: usize,
}

impl Limits {
    /// Redis' own `proto-max-bulk-len` default: 512 MiB.
    pub const DEFAULT_BULK_LEN_MAX: u64 = 512 * 1024 * 1024;
    /// One million elements: far above any sane command (Redis caps a
    /// request at its 1 GiB query buffer anyway), low enough that the
    /// per-element bookkeeping of a hostile header stays small.
    pub const DEFAULT_ARRAY_LEN_MAX: u64 = 1024 * 1024;
    /// Redis replies nest a handful of levels (e.g. `XINFO STREAM FULL`);
    /// 128 leaves room and bounds the decoder's explicit stack.
    pub const DEFAULT_DEPTH_MAX: usize = 128;
    /// Redis' `PROTO_INLINE_MAX_SIZE`: 64 KiB. memcached command lines are
    /// far shorter (keys are at most 250 bytes).
    pub const DEFAULT_LINE_LEN_MAX: usize = 64 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            bulk_len_max: Self::DEFAULT_BULK_LEN_MAX,
            array_len_max: Self::DEFAULT_ARRAY_LEN_MAX,
            depth_max: Self::DEFAULT_DEPTH_MAX,
            line_len_max: Self::DEFAULT_LINE_LEN_MAX,
        }
    }
}
