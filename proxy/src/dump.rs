//! The replication latency dump, as the Mu artifact's patched servers
//! wrote it: `kill -USR1 <pid>` makes the sidecar write
//! `dump-<id>.txt` in `--dump-dir` (default: the working directory), one
//! sample per line, in ns.
//!
//! A sample is the figure the `replication_latency_seconds` histogram
//! observes: for each write answered successfully, the time from its
//! arrival at this sidecar until its reply was ready (replicated,
//! committed, applied to the local backend). It is recorded by the sidecar
//! the client sent the write to, whether that node leads or forwarded the
//! write to the leader (then the forwarding is part of the sample); a node
//! that only applies other nodes' writes records nothing. Reads are not
//! replicated, so they have no sample (the artifact's patched Redis
//! proposed reads too).
//!
//! Each dump holds the samples recorded **since the previous dump** (since
//! start for the first), oldest first, and starts a new collection; at most
//! the last [`SAMPLES_MAX`] are kept in between (a ring), and the log line
//! of the dump says how many older ones were overwritten. The file is
//! written beside its final name and renamed, so it appears complete.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Samples kept between two dumps: the artifact's servers kept 1 M
/// (`MEDIAN_SAMPLE_SIZE`); 8 MiB at most, allocated as samples arrive.
pub const SAMPLES_MAX: usize = 1 << 20;

/// The latency samples recorded since the last dump.
#[derive(Debug)]
pub struct Samples {
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    buf: Vec<u64>,
    /// Where the next sample goes once `buf` is full (the oldest one).
    next: usize,
    /// Samples overwritten since the last dump.
    overwritten: u64,
    cap: usize,
}

impl Samples {
    /// An empty collection keeping at most `cap` samples (at least 1).
    pub fn new(cap: usize) -> Samples {
        Samples {
            ring: Mutex::new(Ring {
                cap: cap.max(1),
                ..Ring::default()
            }),
        }
    }

    /// Records one sample, in ns.
    pub fn record(&self, ns: u64) {
        self.record_n(ns, 1);
    }

    /// Records `n` samples of the same value (the writes of one run,
    /// answered together), under one lock.
    pub fn record_n(&self, ns: u64, n: usize) {
        let mut r = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..n {
            if r.buf.len() < r.cap {
                r.buf.push(ns);
            } else {
                let at = r.next;
                r.buf[at] = ns;
                r.next = (at + 1) % r.cap;
                r.overwritten += 1;
            }
        }
    }

    /// Takes the samples (oldest first) and how many older ones were
    /// overwritten, and starts a new collection.
    pub fn take(&self) -> (Vec<u64>, u64) {
        let mut r = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let next = std::mem::take(&mut r.next);
        let overwritten = std::mem::take(&mut r.overwritten);
        let mut buf = std::mem::take(&mut r.buf);
        buf.rotate_left(next);
        (buf, overwritten)
    }
}

impl Default for Samples {
    fn default() -> Samples {
        Samples::new(SAMPLES_MAX)
    }
}

/// The dump file of node `id` in `dir`.
pub fn path(dir: &Path, id: u8) -> PathBuf {
    dir.join(format!("dump-{id}.txt"))
}

/// Writes `samples` to `dump-<id>.txt` in `dir`, one per line, through a
/// temporary file renamed into place.
pub fn write(dir: &Path, id: u8, samples: &[u64]) -> std::io::Result<PathBuf> {
    let path = path(dir, id);
    let tmp = dir.join(format!(".dump-{id}.txt.tmp"));
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for s in samples {
        writeln!(w, "{s}")?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Installs the SIGUSR1 handler (at once, so a signal that arrives after
/// this returns is never the default action, which kills the process) and
/// returns the task that writes a dump on each signal.
pub fn on_sigusr1(
    samples: std::sync::Arc<Samples>,
    dir: PathBuf,
    id: u8,
) -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1())
        .map_err(|e| format!("cannot install the SIGUSR1 handler: {e}"))?;
    Ok(async move {
        while usr1.recv().await.is_some() {
            let (taken, overwritten) = samples.take();
            let dir = dir.clone();
            let n = taken.len();
            match tokio::task::spawn_blocking(move || write(&dir, id, &taken)).await {
                Ok(Ok(p)) => tracing::info!(
                    path = %p.display(),
                    samples = n,
                    overwritten,
                    "wrote the replication latency dump (ns, one per line)"
                ),
                Ok(Err(e)) => tracing::error!(error = %e, "cannot write the latency dump"),
                Err(e) => tracing::error!(error = %e, "the latency dump task failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_samples_oldest_first_and_counts_the_overwritten() {
        let s = Samples::new(3);
        for ns in 1..=5 {
            s.record(ns);
        }
        assert_eq!(s.take(), (vec![3, 4, 5], 2));
        // A dump starts a new collection.
        assert_eq!(s.take(), (vec![], 0));
        s.record(9);
        assert_eq!(s.take(), (vec![9], 0));
        // A run's samples, in one call, fill and wrap the ring alike.
        s.record(1);
        s.record_n(7, 3);
        assert_eq!(s.take(), (vec![7, 7, 7], 1));
        s.record_n(8, 0);
        assert_eq!(s.take(), (vec![], 0));
    }

    #[test]
    fn writes_one_sample_per_line() {
        let dir = std::env::temp_dir().join(format!("mu-dump-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = write(&dir, 2, &[10, 20, 30]).unwrap();
        assert_eq!(p, dir.join("dump-2.txt"));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "10\n20\n30\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
