//! Shared mappings of files in a tmpfs directory (normally `/dev/shm`),
//! the only place in the crate that touches raw memory.
//!
//! A [`Mapping`] is a whole file mapped `MAP_SHARED` read/write. Other
//! processes map the same file and store into it at any moment, so its
//! bytes are *external memory*, like memory a NIC writes by DMA: they are
//! copied in and out as plain bytes (any bit pattern is a valid `u8`), never
//! borrowed as Rust references, and whatever is read from the log is
//! verified by the log format's checksums before it is trusted. The few
//! words that coordinate processes (generation, holder, revoked flag,
//! lease) are accessed only as atomics.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// A file mapped shared, read/write, for the life of the value.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is a pointer to a process-wide shared mapping that
// stays valid until drop; nothing in it is tied to a thread, and every
// access goes through copies or atomics (see the module docs).
unsafe impl Send for Mapping {}
// SAFETY: as above; shared access from several threads is either atomic
// (the coordination words) or byte copies of external memory.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Creates `path` (which must not exist), sized `len` bytes of zeros,
    /// readable and writable by the owner only, and maps it.
    pub fn create(path: &Path, len: usize) -> io::Result<Mapping> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.set_len(len as u64)?;
        Self::map(&file, len)
    }

    /// Maps the existing file `path` whole.
    pub fn open(path: &Path) -> io::Result<Mapping> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len() as usize;
        Self::map(&file, len)
    }

    fn map(file: &File, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "empty file"));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint) of a file
        // we hold open; the result is checked before use. The mapping stays
        // valid after the file is closed, until munmap in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { ptr, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The 8-byte-aligned word at `offset` as an atomic.
    ///
    /// # Panics
    /// If the word is not inside the mapping or not aligned.
    pub fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= self.len,
            "word {offset} out of the mapping"
        );
        // SAFETY: in bounds and 8-aligned (mappings are page aligned); the
        // memory lives as long as `self`, and every process accesses these
        // words only atomically, so an AtomicU64 view is sound.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Copies `buf.len()` bytes at `offset` out of the mapping.
    ///
    /// # Panics
    /// If the range is not inside the mapping.
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        assert!(offset.checked_add(buf.len()).is_some_and(|e| e <= self.len));
        // SAFETY: the source range is inside the live mapping and cannot
        // overlap `buf`, which is ordinary process memory. Other processes
        // may store into the source concurrently; the bytes are copied as
        // external memory (any value is a valid u8) and verified by the
        // caller's format before they are trusted.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            )
        }
    }

    /// Copies `data` into the mapping at `offset`.
    ///
    /// # Panics
    /// If the range is not inside the mapping.
    pub fn write(&self, offset: usize, data: &[u8]) {
        assert!(offset
            .checked_add(data.len())
            .is_some_and(|e| e <= self.len));
        // SAFETY: the destination range is inside the live mapping and
        // cannot overlap `data`. Concurrent stores by other processes to the
        // same bytes are the fabric's business (permission and fencing
        // decide whose bytes count); no Rust reference to the mapping exists.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len())
        }
    }

    /// Copies `len` bytes from `src` at `from` to this mapping at `to`.
    pub fn copy_from(&self, to: usize, src: &Mapping, from: usize, len: usize) {
        assert!(to.checked_add(len).is_some_and(|e| e <= self.len));
        assert!(from.checked_add(len).is_some_and(|e| e <= src.len));
        // SAFETY: both ranges are inside live mappings of two different
        // files, so they do not overlap; the bytes are external memory.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.ptr.as_ptr().add(from),
                self.ptr.as_ptr().add(to),
                len,
            )
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the range mapped in `map`, unmapped once; no
        // reference into it outlives `self` (`word` borrows `self`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the host
/// (read through the vDSO, no system call).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
