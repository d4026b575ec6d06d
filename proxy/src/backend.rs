//! Where the local server listens, and the streams the sidecar opens to it.
//!
//! The server is reached over TCP (`127.0.0.1:6379`) or over a Unix socket
//! (`unix:/run/redis/redis.sock`, redis-server's `unixsocket`, memcached's
//! `-s`). A Unix socket suits a sidecar, which always runs beside its
//! server: each request and reply crosses the kernel for less CPU than on
//! loopback TCP, on both ends.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The local server's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendAddr {
    /// `host:port`.
    Tcp(SocketAddr),
    /// `unix:/path` (or an absolute path): a Unix stream socket.
    Unix(PathBuf),
}

impl FromStr for BackendAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let path = s
            .strip_prefix("unix:")
            .or_else(|| s.starts_with('/').then_some(s));
        match path {
            Some("") => Err("unix: needs a socket path, as in unix:/run/redis/redis.sock".into()),
            Some(p) => Ok(BackendAddr::Unix(PathBuf::from(p))),
            None => s.parse().map(BackendAddr::Tcp).map_err(|_| {
                format!("{s:?} is neither ip:port (127.0.0.1:6379) nor a Unix socket (unix:/path)")
            }),
        }
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddr::Tcp(a) => write!(f, "{a}"),
            BackendAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl BackendAddr {
    /// A blocking connection; a TCP connection attempt gives up after
    /// `timeout`. The standard library has no timeout for a Unix socket:
    /// its connection is made or refused by the local kernel, and waits
    /// only while the server's listen backlog is full.
    pub fn connect(&self, timeout: Duration) -> io::Result<Stream> {
        match self {
            BackendAddr::Tcp(a) => {
                let s = TcpStream::connect_timeout(a, timeout)?;
                // Requests are written whole, often pipelined: send at once.
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
            BackendAddr::Unix(p) => UnixStream::connect(p).map(Stream::Unix),
        }
    }

    /// A connection on the current tokio runtime.
    pub async fn connect_async(&self) -> io::Result<AsyncStream> {
        match self {
            BackendAddr::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await?;
                let _ = s.set_nodelay(true);
                Ok(AsyncStream::Tcp(s))
            }
            BackendAddr::Unix(p) => tokio::net::UnixStream::connect(p)
                .await
                .map(AsyncStream::Unix),
        }
    }
}

/// A blocking stream to the server.
#[derive(Debug)]
pub enum Stream {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a Unix socket.
    Unix(UnixStream),
}

impl Stream {
    /// Bounds each read (`None`: wait for ever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    /// The same connection, handed to the current tokio runtime.
    pub fn into_async(self) -> io::Result<AsyncStream> {
        match self {
            Stream::Tcp(s) => {
                s.set_nonblocking(true)?;
                tokio::net::TcpStream::from_std(s).map(AsyncStream::Tcp)
            }
            Stream::Unix(s) => {
                s.set_nonblocking(true)?;
                tokio::net::UnixStream::from_std(s).map(AsyncStream::Unix)
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// A stream to the server on the tokio runtime.
#[derive(Debug)]
pub enum AsyncStream {
    /// Over TCP.
    Tcp(tokio::net::TcpStream),
    /// Over a Unix socket.
    Unix(tokio::net::UnixStream),
}

impl AsyncRead for AsyncStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AsyncStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            AsyncStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AsyncStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AsyncStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            AsyncStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AsyncStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            AsyncStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            AsyncStream::Tcp(s) => s.is_write_vectored(),
            AsyncStream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AsyncStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            AsyncStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AsyncStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            AsyncStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn addresses_parse_as_tcp_or_unix_and_print_back() {
        let tcp: BackendAddr = "127.0.0.1:6379".parse().unwrap();
        assert_eq!(tcp, BackendAddr::Tcp("127.0.0.1:6379".parse().unwrap()));
        assert_eq!(tcp.to_string(), "127.0.0.1:6379");
        let unix: BackendAddr = "unix:/run/redis.sock".parse().unwrap();
        assert_eq!(unix, BackendAddr::Unix("/run/redis.sock".into()));
        assert_eq!(unix.to_string(), "unix:/run/redis.sock");
        assert_eq!("/run/redis.sock".parse::<BackendAddr>().unwrap(), unix);
        let relative: BackendAddr = "unix:redis.sock".parse().unwrap();
        assert_eq!(relative, BackendAddr::Unix("redis.sock".into()));
        assert!("unix:"
            .parse::<BackendAddr>()
            .unwrap_err()
            .contains("socket path"));
        let bad = "localhost".parse::<BackendAddr>().unwrap_err();
        assert!(bad.contains("neither ip:port"), "{bad}");
    }

    #[test]
    fn both_kinds_of_stream_carry_bytes_both_ways() {
        let dir = std::env::temp_dir().join(format!("mu-backend-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = [
            BackendAddr::Unix(path.clone()),
            BackendAddr::Tcp(tcp.local_addr().unwrap()),
        ];
        // An echo server per listener: one line back per connection.
        let echo = |mut s: Box<dyn ReadWrite>| {
            let mut b = [0u8; 5];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for addr in &addrs {
            // Blocking, then async, on the same listener.
            let mut c = addr.connect(Duration::from_secs(1)).unwrap();
            let server = accept(&unix, &tcp, addr);
            c.write_all(b"ping1").unwrap();
            echo(server);
            let mut got = [0u8; 5];
            c.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ping1", "{addr}");

            let mut a = rt.block_on(addr.connect_async()).unwrap();
            let server = accept(&unix, &tcp, addr);
            rt.block_on(a.write_all(b"ping2")).unwrap();
            echo(server);
            rt.block_on(a.read_exact(&mut got)).unwrap();
            assert_eq!(&got, b"ping2", "{addr}");

            // A blocking stream handed to the runtime keeps working.
            let c = addr.connect(Duration::from_secs(1)).unwrap();
            let server = accept(&unix, &tcp, addr);
            let mut a = rt.block_on(async { c.into_async() }).unwrap();
            rt.block_on(a.write_all(b"ping3")).unwrap();
            echo(server);
            rt.block_on(a.read_exact(&mut got)).unwrap();
            assert_eq!(&got, b"ping3", "{addr}");
        }
        let missing = BackendAddr::Unix(dir.join("none.sock"));
        assert!(missing.connect(Duration::from_secs(1)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}

    fn accept(
        unix: &std::os::unix::net::UnixListener,
        tcp: &std::net::TcpListener,
        addr: &BackendAddr,
    ) -> Box<dyn ReadWrite> {
        match addr {
            BackendAddr::Unix(_) => Box::new(unix.accept().unwrap().0),
            BackendAddr::Tcp(_) => Box::new(tcp.accept().unwrap().0),
        }
    }
}
