//! Client requests: a command name and its arguments.

use bytes::Bytes;

use crate::line::{parse_i64, parse_u64};

/// One client command: `args[0]` is the command name as sent (any case),
/// the rest are its arguments, each a zero-copy slice of the received bytes
/// (inline commands with quoted arguments are the exception: their
/// unescaped arguments are copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Name and arguments, never empty.
    pub args: Vec<Bytes>,
    /// True when the command arrived as an inline (telnet-style) line.
    pub inline: bool,
}

impl Request {
    /// A request from string-like parts (for building commands in code).
    pub fn new<I, A>(parts: I) -> Request
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        Request {
            args: parts
                .into_iter()
                .map(|a| Bytes::copy_from_slice(a.as_ref()))
                .collect(),
            inline: false,
        }
    }

    /// The command name as sent.
    pub fn name(&self) -> &[u8] {
        self.args.first().map_or(&[][..], |a| &a[..])
    }

    /// The command name in lower case, e.g. `"set"`; non-UTF-8 names give
    /// an empty string (no Redis command has one).
    pub fn name_lower(&self) -> String {
        std::str::from_utf8(self.name()).map_or_else(|_| String::new(), str::to_ascii_lowercase)
    }

    /// Number of arguments including the name (Redis' "arity" count).
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// True if there are no arguments at all (never produced by a decoder).
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// A cursor over the arguments after the name.
    pub fn cursor(&self) -> ArgCursor<'_> {
        ArgCursor {
            args: self.args.get(1..).unwrap_or(&[]),
            next: 0,
        }
    }
}

/// Why a request's arguments do not fit what a command expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// Fewer arguments than required.
    #[error("missing argument {index}")]
    Missing {
        /// 1-based position of the missing argument.
        index: usize,
    },
    /// An argument that must be an integer is not one.
    #[error("argument {index} is not an integer")]
    NotInteger {
        /// 1-based position.
        index: usize,
    },
    /// Arguments left over after the command's last one.
    #[error("unexpected argument {index}")]
    Extra {
        /// 1-based position of the first extra argument.
        index: usize,
    },
}

/// Walks a request's arguments in order (positions are 1-based, the name is
/// position 0).
#[derive(Debug, Clone)]
pub struct ArgCursor<'a> {
    args: &'a [Bytes],
    next: usize,
}

impl<'a> ArgCursor<'a> {
    /// The next argument.
    pub fn next_bytes(&mut self) -> Result<&'a Bytes, ArgError> {
        let arg = self.args.get(self.next).ok_or(ArgError::Missing {
            index: self.next + 1,
        })?;
        self.next += 1;
        Ok(arg)
    }

    /// The next argument as a signed integer.
    pub fn next_int(&mut self) -> Result<i64, ArgError> {
        let index = self.next + 1;
        parse_i64(self.next_bytes()?).ok_or(ArgError::NotInteger { index })
    }

    /// The next argument as an unsigned integer.
    pub fn next_uint(&mut self) -> Result<u64, ArgError> {
        let index = self.next + 1;
        parse_u64(self.next_bytes()?).ok_or(ArgError::NotInteger { index })
    }

    /// The next argument without consuming it.
    pub fn peek(&self) -> Option<&'a Bytes> {
        self.args.get(self.next)
    }

    /// Arguments not consumed yet.
    pub fn remaining(&self) -> usize {
        self.args.len() - self.next
    }

    /// Succeeds only if every argument was consumed.
    pub fn finish(&self) -> Result<(), ArgError> {
        if self.next < self.args.len() {
            return Err(ArgError::Extra {
                index: self.next + 1,
            });
        }
        Ok(())
    }
}
