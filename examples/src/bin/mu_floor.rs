//! `mu-floor <tcp|shm> <payload_size>`: the floors the fabrics are measured
//! against, between two processes on this host, with no Mu code involved.
//!
//! - `tcp`: a loopback TCP ping-pong (`TCP_NODELAY`, blocking sockets): the
//!   payload goes to an echo process and comes back.
//! - `shm`: a shared-memory ping through a file in `/dev/shm`: this process
//!   copies the payload into the shared mapping and publishes a sequence
//!   number; the other process, spinning, sees it, copies the payload out
//!   and publishes the number back; this process spins until it sees it.
//!
//! Prints per-round-trip percentiles in the format of `main-st-lat`.

#![allow(unsafe_code)]

use clap::{Parser, ValueEnum};
use mu_examples::{percentiles_line, random_payload};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Measures a raw cross-process round trip over loopback TCP or shared memory.
#[derive(Parser, Debug)]
#[command(name = "mu-floor")]
struct Cli {
    /// Which floor.
    floor: Floor,
    /// Payload bytes per round trip.
    payload_size: u32,
    /// Round trips measured (after as many again for warm-up, up to 10,000).
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Internal: be the echoing process, at this address (tcp) or file (shm).
    #[arg(long, hide = true)]
    echo: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Floor {
    Tcp,
    Shm,
}

/// Offsets in the shared file: the ping's sequence number, the echo's, the
/// payload; each word on its own cache line.
const SEQ: usize = 0;
const ACK: usize = 64;
const PAYLOAD: usize = 128;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (&cli.echo, cli.floor) {
        (Some(at), Floor::Tcp) => echo_tcp(at, cli.payload_size),
        (Some(at), Floor::Shm) => echo_shm(Path::new(at), cli.payload_size),
        (None, floor) => measure(&cli, floor),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mu-floor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn measure(cli: &Cli, floor: Floor) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let warmup = cli.count.min(10_000);
    let payload = random_payload(cli.payload_size);
    let mut samples = Vec::with_capacity(cli.count as usize);
    let (name, mut child) = match floor {
        Floor::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let child = spawn_echo(&exe, "tcp", &addr.to_string(), cli.payload_size)?;
            let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            let mut back = vec![0u8; payload.len()];
            for n in 0..warmup + cli.count {
                let t0 = now();
                s.write_all(&payload).map_err(|e| e.to_string())?;
                s.read_exact(&mut back).map_err(|e| e.to_string())?;
                if n >= warmup {
                    samples.push(t0.elapsed().as_nanos() as u64);
                }
            }
            ("loopback TCP ping-pong", child)
        }
        Floor::Shm => {
            let path = PathBuf::from(format!("/dev/shm/mu-floor-{}", std::process::id()));
            let map = SharedFile::create(&path, PAYLOAD + payload.len())?;
            let child = spawn_echo(&exe, "shm", &path.display().to_string(), cli.payload_size);
            let mut child = child.inspect_err(|_| {
                let _ = std::fs::remove_file(&path);
            })?;
            for n in 1..=warmup + cli.count {
                let t0 = now();
                map.copy_in(&payload);
                map.word(SEQ).store(n, Ordering::Release);
                let mut spins = 0u64;
                while map.word(ACK).load(Ordering::Acquire) != n {
                    spins += 1;
                    if spins.is_multiple_of(1 << 24) && !matches!(child.try_wait(), Ok(None)) {
                        let _ = std::fs::remove_file(&path);
                        return Err("the echo process exited".into());
                    }
                    std::hint::spin_loop();
                }
                if n > warmup {
                    samples.push(t0.elapsed().as_nanos() as u64);
                }
            }
            map.word(SEQ).store(u64::MAX, Ordering::Release);
            let _ = std::fs::remove_file(&path);
            ("shared-memory ping", child)
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "{name}: {}",
        percentiles_line(&mut samples, cli.payload_size, 1)
    );
    Ok(())
}

fn spawn_echo(exe: &Path, floor: &str, at: &str, size: u32) -> Result<std::process::Child, String> {
    Command::new(exe)
        .args([floor, &size.to_string(), "--echo", at])
        .spawn()
        .map_err(|e| format!("cannot start the echo process: {e}"))
}

fn echo_tcp(addr: &str, size: u32) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; size as usize];
    while s.read_exact(&mut buf).is_ok() {
        s.write_all(&buf).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn echo_shm(path: &Path, size: u32) -> Result<(), String> {
    let map = SharedFile::open(path, PAYLOAD + size as usize)?;
    let mut buf = vec![0u8; size as usize];
    let mut last = 0;
    loop {
        let seq = map.word(SEQ).load(Ordering::Acquire);
        if seq == u64::MAX {
            return Ok(());
        }
        if seq != last {
            map.copy_out(&mut buf);
            map.word(ACK).store(seq, Ordering::Release);
            last = seq;
        }
        std::hint::spin_loop();
    }
}

/// A shared mapping of a file.
struct SharedFile {
    ptr: *mut u8,
    len: usize,
}

impl SharedFile {
    fn create(path: &Path, len: usize) -> Result<Self, String> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.set_len(len as u64).map_err(|e| e.to_string())?;
        Self::map(&f, len)
    }

    fn open(path: &Path, len: usize) -> Result<Self, String> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Self::map(&f, len)
    }

    fn map(f: &std::fs::File, len: usize) -> Result<Self, String> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of `len` bytes of an open file that
        // is at least that long; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(SharedFile {
            ptr: ptr.cast(),
            len,
        })
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= PAYLOAD);
        // SAFETY: in bounds and 8-byte aligned (the mapping is page
        // aligned); both processes access these words only atomically.
        unsafe { AtomicU64::from_ptr(self.ptr.add(offset).cast()) }
    }

    fn copy_in(&self, bytes: &[u8]) {
        assert!(PAYLOAD + bytes.len() <= self.len);
        // SAFETY: in bounds; the echo reads these bytes only after it saw
        // the sequence number published after them (Release/Acquire).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(PAYLOAD), bytes.len()) }
    }

    fn copy_out(&self, buf: &mut [u8]) {
        assert!(PAYLOAD + buf.len() <= self.len);
        // SAFETY: in bounds; written before the sequence number this
        // process acquired, and not rewritten until it publishes the ack.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(PAYLOAD), buf.as_mut_ptr(), buf.len()) }
    }
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        // SAFETY: the mapping created in `map`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[allow(clippy::disallowed_methods, reason = "the floors measure wall time")]
fn now() -> Instant {
    Instant::now()
}
