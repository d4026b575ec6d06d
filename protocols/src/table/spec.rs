//! The shape of the built-in Redis command table (data in `redis_data.rs`).

use std::fmt::Write as _;

/// Where the first key of a key spec is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument index (the command name is index 0).
    Index(i32),
    /// Right after the first argument equal to `keyword` (ASCII case
    /// insensitive), searching from `start_from` (negative: from the end,
    /// backwards).
    Keyword {
        /// The keyword, e.g. `STORE`.
        keyword: &'static str,
        /// Where the search starts.
        start_from: i32,
    },
    /// The server cannot tell (the keys are found by command-specific
    /// code or not at all).
    Unknown,
}

/// How many keys follow the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys up to `last_key` (relative to the first key; `-1` = the last
    /// argument), every `step` arguments; a non-zero `limit` with
    /// `last_key == -1` means only `1/limit` of the remaining arguments.
    Range {
        /// Index of the last key relative to the first.
        last_key: i32,
        /// Distance between keys.
        step: i32,
        /// Fraction limit for open ranges.
        limit: i32,
    },
    /// The argument at `key_num_idx` (relative to the begin position)
    /// holds the number of keys, which start at `first_key` (relative too)
    /// every `step` arguments.
    KeyNum {
        /// Index of the count argument.
        key_num_idx: i32,
        /// Index of the first key.
        first_key: i32,
        /// Distance between keys.
        step: i32,
    },
    /// The server cannot tell.
    Unknown,
}

/// One key specification of a command, as `COMMAND INFO` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// Access flags such as `RW`, `RO`, `OW`, `RM`, `access`, `update`.
    pub flags: &'static [&'static str],
    /// Where the keys start.
    pub begin: BeginSearch,
    /// How far they extend.
    pub find: FindKeys,
}

/// One Redis 7.0 command or subcommand as the server describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lower-case name; subcommands are `container|sub`, e.g. `config|get`.
    pub name: &'static str,
    /// Redis arity: positive = exact argument count (name included),
    /// negative = at least that many.
    pub arity: i16,
    /// Server command flags (`write`, `readonly`, `admin`, `blocking`, ...).
    pub flags: &'static [&'static str],
    /// Key specifications in server order.
    pub key_specs: &'static [KeySpec],
    /// True for container commands (`config`, `client`, ...) whose first
    /// argument names a subcommand.
    pub has_subcommands: bool,
}

impl CommandSpec {
    /// True if the server lists `flag` for this command.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// True if `argc` arguments (name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = i64::from(self.arity);
        let argc = argc as i64;
        if a >= 0 {
            argc == a
        } else {
            argc >= -a
        }
    }

    /// A canonical one-line description, compared against the live
    /// server's by the drift test.
    pub fn canonical(&self) -> String {
        let mut s = format!(
            "{} arity={} flags={}{}",
            self.name,
            self.arity,
            self.flags.join(","),
            if self.has_subcommands {
                " container"
            } else {
                ""
            }
        );
        for k in self.key_specs {
            let _ = write!(s, " key[{}", k.flags.join(","));
            let _ = match k.begin {
                BeginSearch::Index(i) => write!(s, " index({i})"),
                BeginSearch::Keyword {
                    keyword,
                    start_from,
                } => write!(s, " keyword({keyword},{start_from})"),
                BeginSearch::Unknown => write!(s, " unknown"),
            };
            let _ = match k.find {
                FindKeys::Range {
                    last_key,
                    step,
                    limit,
                } => write!(s, " range({last_key},{step},{limit})]"),
                FindKeys::KeyNum {
                    key_num_idx,
                    first_key,
                    step,
                } => {
                    write!(s, " keynum({key_num_idx},{first_key},{step})]")
                }
                FindKeys::Unknown => write!(s, " unknown]"),
            };
        }
        s
    }
}
