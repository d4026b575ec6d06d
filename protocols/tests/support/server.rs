//! Real redis-server and memcached processes on loopback for tests: each
//! listens on a port the OS picked, is probed until it answers, and is
//! killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mu_protocols::memcached::{McReply, McReplyDecoder};
use mu_protocols::resp::{encode_request, Frame, FrameDecoder};

/// How long a server gets to start answering.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// redis-server.
    Redis,
    /// memcached.
    Memcached,
}

/// A running server, killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
    /// Which server.
    pub kind: Kind,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn spawn(kind: Kind, port: u16) -> Child {
    let (bin, args): (&str, Vec<String>) = match kind {
        Kind::Redis => (
            "redis-server",
            [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        Kind::Memcached => (
            "memcached",
            [
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-u",
                "root",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
    };
    Command::new(bin)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {bin} ({e}); install it with `apt-get install redis-server memcached` \
                 (or run scripts/install-deps.sh)"
            )
        })
}

impl Server {
    /// Starts a server and waits until it answers PING / version.
    pub fn start(kind: Kind) -> Server {
        for _attempt in 0..5 {
            let port = free_port();
            let mut server = Server {
                child: spawn(kind, port),
                port,
                kind,
            };
            let deadline = Instant::now() + START_DEADLINE;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = server.child.try_wait() {
                    // Most likely another process took the port; try again.
                    eprintln!("{kind:?} on port {port} exited early with {status}; retrying");
                    break;
                }
                if server.probe() {
                    return server;
                }
                std::thread::yield_now();
            }
            if server.child.try_wait().ok().flatten().is_none() {
                panic!("{kind:?} on port {port} did not answer within {START_DEADLINE:?}");
            }
        }
        panic!("{kind:?} failed to start five times");
    }

    /// True once the server answers on its port *and* reports our child's
    /// pid, so a server of another test that won a race for the same port
    /// is never mistaken for ours.
    fn probe(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let (ask, want): (&[u8], String) = match self.kind {
            Kind::Redis => (
                b"INFO server\r\n",
                format!("process_id:{}\r\n", self.child.id()),
            ),
            Kind::Memcached => (b"stats\r\n", format!("STAT pid {}\r\n", self.child.id())),
        };
        if stream.write_all(ask).is_err() {
            return false;
        }
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while got.len() < 64 * 1024 {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
            let text = String::from_utf8_lossy(&got);
            if text.contains(&want) {
                return true;
            }
            if text.contains("END\r\n") || (self.kind == Kind::Redis && text.ends_with("\r\n\r\n"))
            {
                return false;
            }
        }
        false
    }

    /// A new client connection.
    pub fn connect(&self) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to test server");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking client speaking through the crate's own codecs.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    fn fill(&mut self) {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).expect("read from test server");
        assert!(n > 0, "test server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Asserts that the server closes the connection without sending more.
    pub fn expect_closed(&mut self) {
        let mut chunk = [0u8; 64];
        let n = self.stream.read(&mut chunk).expect("read from test server");
        assert_eq!(n, 0, "expected the server to close, got {:?}", &chunk[..n]);
    }

    /// Reads raw bytes until the buffer ends with `terminator`, and returns
    /// (and consumes) them.
    pub fn read_until(&mut self, terminator: &[u8]) -> Vec<u8> {
        while !self.buf.ends_with(terminator) {
            self.fill();
        }
        self.buf.split().to_vec()
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to test server");
    }

    /// Reads one RESP frame.
    pub fn read_frame(&mut self) -> Frame {
        let mut dec = FrameDecoder::default();
        loop {
            if let Some(f) = dec.decode(&mut self.buf).expect("valid RESP from server") {
                return f;
            }
            self.fill();
        }
    }

    /// Sends a command and reads its reply.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Frame {
        let mut out = BytesMut::new();
        encode_request(args, &mut out);
        self.send(&out);
        self.read_frame()
    }

    /// Reads one memcached reply.
    pub fn read_mc(&mut self) -> McReply {
        let mut dec = McReplyDecoder::default();
        loop {
            if let Some(r) = dec.decode(&mut self.buf).expect("valid memcached reply") {
                return r;
            }
            self.fill();
        }
    }
}
