//! Command tables: what each Redis command and memcached verb is, and
//! which of its arguments are keys.

mod memcached;
mod redis;
mod redis_data;
mod spec;
pub mod verify;

pub use memcached::{mc_class, mc_keys, McVerbSpec, MEMCACHED_VERBS};
pub use redis::{
    class_of, classify, find, key_positions, key_positions_into, lookup, lookup_args,
    unknown_error, CommandClass,
};
pub use redis_data::REDIS_COMMANDS;
pub use spec::{BeginSearch, CommandSpec, FindKeys, KeySpec};
