//! WATCH evaluated at apply time, identically on every replica.

use bytes::Bytes;
use std::collections::HashMap;
use xxhash_rust::xxh3::xxh3_64;

use crate::entry::{RedisEntry, WatchGuard};
use crate::line::parse_i64;
use crate::table::{self, CommandClass};

/// Remembers, for every key, the log index of the last entry that wrote
/// it, in a fixed number of hashed buckets (so memory is bounded; a
/// collision can only cause an extra abort, never a missed one).
///
/// Every replica feeds it the same entries in the same order, so
/// [`WatchTracker::conflicts`] gives the same answer everywhere.
#[derive(Debug)]
pub struct WatchTracker {
    buckets: Vec<u64>,
    /// Last index of an entry that may have written anything in a db.
    db_wide: HashMap<u32, u64>,
    /// Last index of an entry that may have written anything anywhere.
    all: u64,
}

impl Default for WatchTracker {
    fn default() -> Self {
        Self::new(1 << 16)
    }
}

fn hash(db: u32, key: &[u8]) -> u64 {
    let mut buf = Vec::with_capacity(key.len() + 4);
    buf.extend_from_slice(&db.to_le_bytes());
    buf.extend_from_slice(key);
    xxh3_64(&buf)
}

impl WatchTracker {
    /// A tracker with `buckets` buckets (rounded up to a power of two).
    pub fn new(buckets: usize) -> Self {
        Self {
            buckets: vec![0; buckets.max(1).next_power_of_two()],
            db_wide: HashMap::new(),
            all: 0,
        }
    }

    fn bucket(&self, db: u32, key: &[u8]) -> usize {
        (hash(db, key) as usize) & (self.buckets.len() - 1)
    }

    /// True if any guard's key may have been written after its
    /// `seen_index`: the transaction must be aborted.
    pub fn conflicts(&self, guards: &[WatchGuard]) -> bool {
        guards.iter().any(|g| {
            let db_wide = self.db_wide.get(&g.db).copied().unwrap_or(0);
            self.all > g.seen_index
                || db_wide > g.seen_index
                || self.buckets[self.bucket(g.db, &g.key)] > g.seen_index
        })
    }

    /// Records the writes of the entry applied at `index`. Call for every
    /// applied Redis entry, in log order, including aborted transactions
    /// (they write nothing and are skipped here).
    pub fn record(&mut self, index: u64, entry: &RedisEntry) {
        let mut db = entry.db;
        for cmd in &entry.commands {
            self.record_command(index, &mut db, cmd);
        }
    }

    fn record_command(&mut self, index: u64, db: &mut u32, cmd: &[Bytes]) {
        let req = crate::resp::Request {
            args: cmd.to_vec(),
            inline: false,
        };
        let Some(spec) = table::lookup(&req) else {
            return;
        };
        match spec.name {
            "select" => {
                if let Some(d) = parse_i64(&cmd[1]).and_then(|d| u32::try_from(d).ok()) {
                    *db = d;
                }
                return;
            }
            "flushall" | "swapdb" | "move" | "copy" | "function|restore" | "function|flush" => {
                self.all = index;
                return;
            }
            "flushdb" => {
                self.db_wide.insert(*db, index);
                return;
            }
            _ => {}
        }
        let class = table::class_of(spec);
        let writes = spec.has_flag("write") || class == CommandClass::Scripting;
        if !writes {
            return;
        }
        if class == CommandClass::Scripting
            || spec.has_flag("movablekeys") && spec.key_specs.is_empty()
        {
            // Scripts may touch keys they do not declare.
            self.db_wide.insert(*db, index);
            return;
        }
        for pos in table::key_positions(spec, cmd) {
            let b = self.bucket(*db, &cmd[pos]);
            self.buckets[b] = index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(db: u32, cmds: &[&str]) -> RedisEntry {
        RedisEntry {
            db,
            transaction: false,
            guards: Vec::new(),
            commands: cmds
                .iter()
                .map(|c| {
                    c.split(' ')
                        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                        .collect()
                })
                .collect(),
        }
    }

    fn guard(db: u32, key: &str, seen_index: u64) -> WatchGuard {
        WatchGuard {
            db,
            key: Bytes::copy_from_slice(key.as_bytes()),
            seen_index,
        }
    }

    #[test]
    fn writes_after_the_watch_conflict() {
        let mut t = WatchTracker::new(1 << 10);
        t.record(3, &entry(0, &["SET a 1", "GET b"]));
        assert!(t.conflicts(&[guard(0, "a", 2)]));
        assert!(
            !t.conflicts(&[guard(0, "a", 3)]),
            "a write at or before the watch does not conflict"
        );
        assert!(!t.conflicts(&[guard(0, "b", 2)]), "reads do not conflict");
        assert!(
            !t.conflicts(&[guard(1, "a", 2)]),
            "other databases do not conflict"
        );
        t.record(4, &entry(1, &["SELECT 2", "DEL c"]));
        assert!(
            t.conflicts(&[guard(2, "c", 3)]),
            "SELECT inside an entry moves the db"
        );
        t.record(5, &entry(1, &["FLUSHDB"]));
        assert!(t.conflicts(&[guard(1, "anything", 4)]));
        assert!(!t.conflicts(&[guard(0, "anything", 4)]));
        t.record(6, &entry(0, &["SWAPDB 0 1"]));
        assert!(t.conflicts(&[guard(7, "anything", 5)]));
    }

    #[test]
    fn one_bucket_makes_every_write_conflict() {
        let mut t = WatchTracker::new(1);
        t.record(9, &entry(0, &["SET x 1"]));
        assert!(
            t.conflicts(&[guard(0, "y", 8)]),
            "a collision aborts, never misses"
        );
    }
}
