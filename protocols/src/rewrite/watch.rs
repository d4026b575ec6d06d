//! WATCH evaluated at apply time, identically on every replica.

use bytes::Bytes;
use std::collections::HashMap;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

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
    /// Key positions of the command being recorded (reused).
    positions: Vec<usize>,
}

impl Default for WatchTracker {
    fn default() -> Self {
        Self::new(1 << 16)
    }
}

/// XXH3 of the database number (little-endian) followed by the key. The
/// value is part of the replicated state (a state transfer carries the
/// buckets), so it must not change; short keys are hashed from the stack.
fn hash(db: u32, key: &[u8]) -> u64 {
    const STACK: usize = 124;
    if key.len() <= STACK {
        let mut buf = [0u8; STACK + 4];
        buf[..4].copy_from_slice(&db.to_le_bytes());
        buf[4..4 + key.len()].copy_from_slice(key);
        return xxh3_64(&buf[..4 + key.len()]);
    }
    let mut h = Xxh3::new();
    h.update(&db.to_le_bytes());
    h.update(key);
    h.digest()
}

impl WatchTracker {
    /// A tracker with `buckets` buckets (rounded up to a power of two).
    pub fn new(buckets: usize) -> Self {
        Self {
            buckets: vec![0; buckets.max(1).next_power_of_two()],
            db_wide: HashMap::new(),
            all: 0,
            positions: Vec::new(),
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

    /// The tracker's state, to hand to a replica that continues from the
    /// same log index (a state transfer): it must decide the same WATCH
    /// guards the same way.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.buckets.len() * 8 + self.db_wide.len() * 12);
        out.extend_from_slice(&(self.buckets.len() as u32).to_le_bytes());
        for b in &self.buckets {
            out.extend_from_slice(&b.to_le_bytes());
        }
        out.extend_from_slice(&self.all.to_le_bytes());
        let mut dbs: Vec<_> = self.db_wide.iter().collect();
        dbs.sort();
        out.extend_from_slice(&(dbs.len() as u32).to_le_bytes());
        for (db, index) in dbs {
            out.extend_from_slice(&db.to_le_bytes());
            out.extend_from_slice(&index.to_le_bytes());
        }
        out
    }

    /// The tracker [`WatchTracker::to_bytes`] wrote; `None` when `b` is
    /// not one.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let mut at = 0usize;
        let mut take = |n: usize| {
            let s = b.get(at..at + n)?;
            at += n;
            Some(s)
        };
        let u32_at = |s: &[u8]| u32::from_le_bytes(s.try_into().expect("4 bytes"));
        let u64_at = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
        let n = u32_at(take(4)?) as usize;
        if n == 0 || !n.is_power_of_two() || n > 1 << 28 {
            return None;
        }
        let mut buckets = Vec::with_capacity(n);
        for _ in 0..n {
            buckets.push(u64_at(take(8)?));
        }
        let all = u64_at(take(8)?);
        let dbs = u32_at(take(4)?);
        let mut db_wide = HashMap::new();
        for _ in 0..dbs {
            let db = u32_at(take(4)?);
            db_wide.insert(db, u64_at(take(8)?));
        }
        if take(1).is_some() {
            return None;
        }
        Some(Self {
            buckets,
            db_wide,
            all,
            positions: Vec::new(),
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
        let mut positions = std::mem::take(&mut self.positions);
        match writes_into(db, cmd, &mut positions) {
            Scope::Nothing => {}
            Scope::Keys(db) => {
                for &p in &positions {
                    let b = self.bucket(db, &cmd[p]);
                    self.buckets[b] = index;
                }
            }
            Scope::Db(db) => {
                self.db_wide.insert(db, index);
            }
            Scope::Everything => self.all = index,
        }
        self.positions = positions;
    }
}

/// What one command of a replicated Redis entry may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writes<'a> {
    /// Nothing (a read, or `SELECT`, which only moves `db`).
    Nothing,
    /// These keys of this database.
    Keys(u32, Vec<&'a Bytes>),
    /// Possibly any key of this database (`FLUSHDB`, scripts, commands
    /// whose keys cannot be found from their arguments).
    Db(u32),
    /// Possibly anything in any database (`FLUSHALL`, `SWAPDB`, `MOVE`,
    /// `COPY`, function library changes).
    Everything,
}

/// What `cmd` may change when run in database `*db`; a `SELECT` moves
/// `*db` for the commands after it. The one place that knows which
/// commands write which keys, for WATCH and for anything else that must
/// follow the writes of the log (e.g. a state transfer's changed keys).
pub fn command_writes<'a>(db: &mut u32, cmd: &'a [Bytes]) -> Writes<'a> {
    let mut positions = Vec::new();
    match writes_into(db, cmd, &mut positions) {
        Scope::Nothing => Writes::Nothing,
        Scope::Keys(db) => Writes::Keys(db, positions.into_iter().map(|p| &cmd[p]).collect()),
        Scope::Db(db) => Writes::Db(db),
        Scope::Everything => Writes::Everything,
    }
}

/// [`Writes`] with the keys left as positions in the command.
enum Scope {
    Nothing,
    /// The keys at the positions written to the buffer, in this database.
    Keys(u32),
    Db(u32),
    Everything,
}

/// [`command_writes`], writing the written keys' positions in `cmd` to
/// `positions` (reused across commands) instead of collecting them.
fn writes_into(db: &mut u32, cmd: &[Bytes], positions: &mut Vec<usize>) -> Scope {
    let Some(spec) = table::lookup_args(cmd) else {
        return Scope::Nothing;
    };
    match spec.name {
        "select" => {
            if let Some(d) = cmd
                .get(1)
                .and_then(|a| parse_i64(a))
                .and_then(|d| u32::try_from(d).ok())
            {
                *db = d;
            }
            return Scope::Nothing;
        }
        "flushall" | "swapdb" | "move" | "copy" | "function|restore" | "function|flush" => {
            return Scope::Everything;
        }
        "flushdb" => return Scope::Db(*db),
        _ => {}
    }
    let class = table::class_of(spec);
    let writes = spec.has_flag("write") || class == CommandClass::Scripting;
    if !writes {
        return Scope::Nothing;
    }
    if class == CommandClass::Scripting || spec.has_flag("movablekeys") && spec.key_specs.is_empty()
    {
        // Scripts may touch keys they do not declare.
        return Scope::Db(*db);
    }
    table::key_positions_into(spec, cmd, positions);
    Scope::Keys(*db)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(db: u32, cmds: &[&str]) -> RedisEntry {
        RedisEntry {
            db,
            transaction: false,
            resp3: false,
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

    #[test]
    fn state_round_trips() {
        let mut t = WatchTracker::new(64);
        t.record(5, &entry(0, &["SET a 1"]));
        t.record(6, &entry(2, &["FLUSHDB"]));
        t.record(7, &entry(1, &["SET b 1"]));
        let copy = WatchTracker::from_bytes(&t.to_bytes()).expect("decodes");
        for g in [
            guard(0, "a", 4),
            guard(0, "a", 5),
            guard(2, "z", 5),
            guard(1, "b", 6),
            guard(1, "c", 7),
        ] {
            let g = [g];
            assert_eq!(copy.conflicts(&g), t.conflicts(&g), "{g:?}");
        }
        let bytes = t.to_bytes();
        assert!(WatchTracker::from_bytes(&bytes[..bytes.len() - 1]).is_none());
        assert!(WatchTracker::from_bytes(&[bytes.clone(), vec![0]].concat()).is_none());
        assert!(WatchTracker::from_bytes(&[3, 0, 0, 0]).is_none());
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
    fn key_hash_is_xxh3_of_db_and_key_at_any_length() {
        for len in [0, 1, 123, 124, 125, 300] {
            let key = vec![b'k'; len];
            let mut whole = 7u32.to_le_bytes().to_vec();
            whole.extend_from_slice(&key);
            assert_eq!(hash(7, &key), xxh3_64(&whole), "key of {len} bytes");
        }
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
