//! memcached requests and replies, text and meta protocol.

use bytes::Bytes;

/// The longest key memcached accepts (`KEY_MAX_LENGTH`).
pub const KEY_LEN_MAX: usize = 250;

/// A storage verb of the text protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageVerb {
    /// `set`: store unconditionally.
    Set,
    /// `add`: store only if absent.
    Add,
    /// `replace`: store only if present.
    Replace,
    /// `append`: append data to an existing item.
    Append,
    /// `prepend`: prepend data to an existing item.
    Prepend,
    /// `cas`: store only if the item's CAS unique still matches.
    Cas,
}

/// A retrieval verb of the text protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetVerb {
    /// `get <key>*`.
    Get,
    /// `gets <key>*`: also returns CAS uniques.
    Gets,
    /// `gat <exptime> <key>*`: get and touch.
    Gat,
    /// `gats <exptime> <key>*`: get and touch, with CAS uniques.
    Gats,
}

/// `incr` or `decr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithVerb {
    /// `incr <key> <delta>`.
    Incr,
    /// `decr <key> <delta>`.
    Decr,
}

/// A meta protocol command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaVerb {
    /// `mg`: meta get.
    Get,
    /// `ms`: meta set (carries a data block).
    Set,
    /// `md`: meta delete.
    Delete,
    /// `ma`: meta arithmetic.
    Arithmetic,
    /// `mn`: meta no-op (no key).
    Noop,
    /// `me`: meta debug.
    Debug,
}

/// One meta flag: a letter and its (possibly empty) token, e.g. `T30`.
#[derive(Clone, PartialEq, Eq)]
pub struct MetaFlag {
    /// The flag letter.
    pub flag: u8,
    /// The token glued to the letter (empty for flags without one).
    pub token: Bytes,
}

impl std::fmt::Debug for MetaFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{}",
            self.flag as char,
            String::from_utf8_lossy(&self.token)
        )
    }
}

/// A text-protocol storage command with its data block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// Which storage command.
    pub verb: StorageVerb,
    /// The key.
    pub key: Bytes,
    /// Opaque client flags stored with the item.
    pub flags: u32,
    /// Expiration: 0 = never, up to 30 days = relative seconds, above =
    /// absolute Unix time, negative = already expired.
    pub exptime: i64,
    /// The data block.
    pub data: Bytes,
    /// The CAS unique (only for `cas`).
    pub cas: Option<u64>,
    /// `noreply`: the server sends nothing back.
    pub noreply: bool,
}

/// A meta protocol command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Which meta command.
    pub verb: MetaVerb,
    /// The key (empty for `mn`).
    pub key: Bytes,
    /// The flags in wire order.
    pub flags: Vec<MetaFlag>,
    /// The data block of `ms`.
    pub data: Option<Bytes>,
}

impl Meta {
    /// The token of the first flag `letter`, if present.
    pub fn flag(&self, letter: u8) -> Option<&Bytes> {
        self.flags
            .iter()
            .find(|f| f.flag == letter)
            .map(|f| &f.token)
    }

    /// True if the quiet flag `q` is set (the server omits the common
    /// reply).
    pub fn quiet(&self) -> bool {
        self.flag(b'q').is_some()
    }
}

/// One memcached client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McRequest {
    /// `set`/`add`/`replace`/`append`/`prepend`/`cas`.
    Storage(Storage),
    /// `get`/`gets`/`gat`/`gats`.
    Get {
        /// Which retrieval command.
        verb: GetVerb,
        /// The new expiration for `gat`/`gats`.
        exptime: Option<i64>,
        /// One or more keys.
        keys: Vec<Bytes>,
    },
    /// `delete <key> [noreply]`.
    Delete {
        /// The key.
        key: Bytes,
        /// `noreply`.
        noreply: bool,
    },
    /// `incr`/`decr <key> <delta> [noreply]`.
    Arith {
        /// Which one.
        verb: ArithVerb,
        /// The key.
        key: Bytes,
        /// The amount.
        delta: u64,
        /// `noreply`.
        noreply: bool,
    },
    /// `touch <key> <exptime> [noreply]`.
    Touch {
        /// The key.
        key: Bytes,
        /// The new expiration.
        exptime: i64,
        /// `noreply`.
        noreply: bool,
    },
    /// `flush_all [delay] [noreply]`.
    FlushAll {
        /// Seconds (or absolute time) until the flush takes effect.
        delay: Option<i64>,
        /// `noreply`.
        noreply: bool,
    },
    /// `version`.
    Version,
    /// `verbosity <level> [noreply]`.
    Verbosity {
        /// The level.
        level: u64,
        /// `noreply`.
        noreply: bool,
    },
    /// `stats [args]`.
    Stats {
        /// Optional sub-statistics name and arguments.
        args: Vec<Bytes>,
    },
    /// `quit`.
    Quit,
    /// A meta command.
    Meta(Meta),
    /// A line whose verb is not one of the above (or an empty line).
    /// memcached answers such a line with `ERROR` and goes on with the next
    /// line, so the stream stays in sync.
    Other {
        /// The line up to its last token (trailing spaces and the
        /// terminator excluded).
        line: Bytes,
    },
    /// A line of a known command without a data block that memcached
    /// rejects (a bad number, a key over 250 bytes, a missing or unknown
    /// argument): memcached answers it with `CLIENT_ERROR` (nothing when
    /// the line ends in `noreply`) and goes on with the next line.
    Invalid {
        /// The line up to its last token, as for [`McRequest::Other`].
        line: Bytes,
        /// What is wrong with it, for the `CLIENT_ERROR` line.
        error: String,
        /// The line's last token is `noreply`.
        noreply: bool,
    },
}

impl McRequest {
    /// The command name as it appears on the wire, e.g. `"set"` or `"mg"`.
    pub fn verb_name(&self) -> &'static str {
        match self {
            McRequest::Storage(s) => match s.verb {
                StorageVerb::Set => "set",
                StorageVerb::Add => "add",
                StorageVerb::Replace => "replace",
                StorageVerb::Append => "append",
                StorageVerb::Prepend => "prepend",
                StorageVerb::Cas => "cas",
            },
            McRequest::Get { verb, .. } => match verb {
                GetVerb::Get => "get",
                GetVerb::Gets => "gets",
                GetVerb::Gat => "gat",
                GetVerb::Gats => "gats",
            },
            McRequest::Delete { .. } => "delete",
            McRequest::Arith {
                verb: ArithVerb::Incr,
                ..
            } => "incr",
            McRequest::Arith {
                verb: ArithVerb::Decr,
                ..
            } => "decr",
            McRequest::Touch { .. } => "touch",
            McRequest::FlushAll { .. } => "flush_all",
            McRequest::Version => "version",
            McRequest::Verbosity { .. } => "verbosity",
            McRequest::Stats { .. } => "stats",
            McRequest::Quit => "quit",
            McRequest::Other { .. } => "unknown",
            McRequest::Invalid { .. } => "invalid",
            McRequest::Meta(m) => match m.verb {
                MetaVerb::Get => "mg",
                MetaVerb::Set => "ms",
                MetaVerb::Delete => "md",
                MetaVerb::Arithmetic => "ma",
                MetaVerb::Noop => "mn",
                MetaVerb::Debug => "me",
            },
        }
    }

    /// How many replies the server sends for this request.
    pub fn reply_expectation(&self) -> ReplyExpectation {
        match self {
            McRequest::Quit => ReplyExpectation::None,
            McRequest::Meta(m) if m.quiet() => ReplyExpectation::Quiet,
            _ if self.noreply() => ReplyExpectation::None,
            _ => ReplyExpectation::One,
        }
    }

    /// True when the client asked for no reply (`noreply`); meta commands
    /// use the `q` flag instead, which only hides some replies.
    pub fn noreply(&self) -> bool {
        match self {
            McRequest::Storage(s) => s.noreply,
            McRequest::Delete { noreply, .. }
            | McRequest::Arith { noreply, .. }
            | McRequest::Touch { noreply, .. }
            | McRequest::FlushAll { noreply, .. }
            | McRequest::Verbosity { noreply, .. }
            | McRequest::Invalid { noreply, .. } => *noreply,
            _ => false,
        }
    }
}

/// How many replies the server sends for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyExpectation {
    /// Exactly one reply (multi-line replies such as `VALUE ... END`
    /// count as one, as [`McReplyDecoder`](super::McReplyDecoder) returns
    /// them).
    One,
    /// None: `noreply`, or `quit` (the server closes the connection).
    None,
    /// A quiet meta command (`q` flag): the server omits the reply on the
    /// common outcome. Pipeline an `mn` after it and read until `MN`.
    Quiet,
}

/// One item of a `VALUE ... END` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The key.
    pub key: Bytes,
    /// The client flags.
    pub flags: u32,
    /// The data block.
    pub data: Bytes,
    /// The CAS unique (`gets`/`gats`).
    pub cas: Option<u64>,
}

/// The status code of a meta reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaStatus {
    /// `HD`: success, no value.
    Hd,
    /// `VA <size>`: success with a value.
    Va,
    /// `EN`: miss.
    En,
    /// `NF`: not found.
    Nf,
    /// `NS`: not stored.
    Ns,
    /// `EX`: CAS mismatch.
    Ex,
    /// `MN`: the no-op marker.
    Mn,
    /// `ME`: debug output.
    Me,
}

/// A meta protocol reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaReply {
    /// The status code.
    pub status: MetaStatus,
    /// The tokens after the status (and after the size for `VA`): return
    /// flags, or the key and `name=value` pairs for `ME`.
    pub tokens: Vec<Bytes>,
    /// The value of `VA`.
    pub data: Option<Bytes>,
}

/// One complete memcached reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McReply {
    /// `VALUE ...` items up to `END` (a bare `END` is an empty list).
    Values(Vec<Value>),
    /// `STAT <name> <value>` lines up to `END`.
    Stats(Vec<(Bytes, Bytes)>),
    /// `STORED`.
    Stored,
    /// `NOT_STORED`.
    NotStored,
    /// `EXISTS`.
    Exists,
    /// `NOT_FOUND`.
    NotFound,
    /// `DELETED`.
    Deleted,
    /// `TOUCHED`.
    Touched,
    /// `OK`.
    Ok,
    /// `RESET` (after `stats reset`).
    Reset,
    /// The new value after `incr`/`decr`.
    Number(u64),
    /// `VERSION <text>`.
    Version(Bytes),
    /// `ERROR`, optionally followed by a message.
    Error(Bytes),
    /// `CLIENT_ERROR <message>`.
    ClientError(Bytes),
    /// `SERVER_ERROR <message>`.
    ServerError(Bytes),
    /// A meta reply.
    Meta(MetaReply),
}
