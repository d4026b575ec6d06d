//! memcached verbs: class and keys.

use bytes::Bytes;

use super::CommandClass;
use crate::memcached::{McRequest, MetaVerb};

/// One memcached verb and its class when used plainly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McVerbSpec {
    /// The verb as sent.
    pub name: &'static str,
    /// Its class; [`mc_class`] refines it per request (`mg` with `T` or
    /// `N` writes).
    pub class: CommandClass,
}

/// Every verb the decoders accept.
pub static MEMCACHED_VERBS: &[McVerbSpec] = &[
    McVerbSpec {
        name: "add",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "append",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "cas",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "decr",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "delete",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "flush_all",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "gat",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "gats",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "get",
        class: CommandClass::Read,
    },
    McVerbSpec {
        name: "gets",
        class: CommandClass::Read,
    },
    McVerbSpec {
        name: "incr",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "ma",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "md",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "me",
        class: CommandClass::Admin,
    },
    McVerbSpec {
        name: "mg",
        class: CommandClass::Read,
    },
    McVerbSpec {
        name: "mn",
        class: CommandClass::ConnectionState,
    },
    McVerbSpec {
        name: "ms",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "prepend",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "quit",
        class: CommandClass::ConnectionState,
    },
    McVerbSpec {
        name: "replace",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "set",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "stats",
        class: CommandClass::Admin,
    },
    McVerbSpec {
        name: "touch",
        class: CommandClass::Write,
    },
    McVerbSpec {
        name: "verbosity",
        class: CommandClass::Admin,
    },
    McVerbSpec {
        name: "version",
        class: CommandClass::Admin,
    },
];

/// The class of one request: the verb's class, except that a meta get
/// that touches (`T`) or creates on miss (`N`) is a write.
pub fn mc_class(req: &McRequest) -> CommandClass {
    if let McRequest::Meta(m) = req {
        if m.verb == MetaVerb::Get && (m.flag(b'T').is_some() || m.flag(b'N').is_some()) {
            return CommandClass::Write;
        }
    }
    let name = req.verb_name();
    MEMCACHED_VERBS
        .iter()
        .find(|v| v.name == name)
        .map_or(CommandClass::Unsupported, |v| v.class)
}

/// The keys a request names, in order.
pub fn mc_keys(req: &McRequest) -> Vec<&Bytes> {
    match req {
        McRequest::Storage(s) => vec![&s.key],
        McRequest::Get { keys, .. } => keys.iter().collect(),
        McRequest::Delete { key, .. }
        | McRequest::Arith { key, .. }
        | McRequest::Touch { key, .. } => {
            vec![key]
        }
        McRequest::Meta(m) if m.verb != MetaVerb::Noop => vec![&m.key],
        _ => Vec::new(),
    }
}
