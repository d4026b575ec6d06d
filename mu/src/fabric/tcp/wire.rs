//! Bytes on a `tcp` fabric connection: the handshake that authenticates
//! both ends with the cluster secret, then request and response frames.
//! The `rdma` fabric's control channel opens with the same handshake.
//!
//! ```text
//! handshake (client → server, then server → client, ...)
//!   C: magic "MUF1", client id u8, server id u8, client nonce [32]
//!   S: server nonce [32], MAC("server", nonces, ids) [32]
//!   C: MAC("client", nonces, ids) [32]          (after checking the server's)
//!   S: 1 byte: 1 = accepted                      (else the server closes)
//! request:  kind u8 (1 write, 2 read), op u64, remote u64, len u64, [data]
//! response: status u8 (0 ok, 1 permission, 2 out of bounds), op u64, [data of an ok read]
//! ```
//!
//! The MAC is BLAKE3 in keyed mode under a key derived from the cluster
//! secret; each side proves it knows the key over both fresh nonces, so a
//! recorded handshake cannot be replayed. The frames that follow are not
//! authenticated one by one: the secret keeps foreign and misconfigured
//! processes out, it does not defend against an active attacker on the
//! path (run the fabric on a trusted network or under a tunnel for that).

use crate::types::NodeId;
use std::io::{self, Read, Write};

/// First bytes of every connection.
pub const MAGIC: [u8; 4] = *b"MUF1";
/// Request kind: write.
pub const KIND_WRITE: u8 = 1;
/// Request kind: read.
pub const KIND_READ: u8 = 2;
/// Response status: success.
pub const STATUS_OK: u8 = 0;
/// Response status: the target's log is not writable by the sender.
pub const STATUS_PERMISSION: u8 = 1;
/// Response status: outside the target's region.
pub const STATUS_OUT_OF_BOUNDS: u8 = 2;
/// Size of a request header.
pub const REQUEST_HEADER: usize = 25;
/// Size of a response header.
pub const RESPONSE_HEADER: usize = 9;
/// Size of a nonce.
pub const NONCE: usize = 32;

/// The MAC key of a cluster secret.
pub fn derive_key(secret: &[u8]) -> [u8; 32] {
    blake3::derive_key("mu fabric tcp v1 cluster secret", secret)
}

/// The MAC one side sends: `role` is `b"server"` or `b"client"`.
pub fn mac(
    key: &[u8; 32],
    role: &[u8],
    client_nonce: &[u8; NONCE],
    server_nonce: &[u8; NONCE],
    client: NodeId,
    server: NodeId,
) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(role);
    h.update(client_nonce);
    h.update(server_nonce);
    h.update(&[client.0, server.0]);
    h.finalize()
}

/// A fresh random nonce from the kernel.
pub fn nonce() -> io::Result<[u8; NONCE]> {
    let mut n = [0u8; NONCE];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut n)?;
    Ok(n)
}

/// A decoded request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// [`KIND_WRITE`] or [`KIND_READ`].
    pub kind: u8,
    /// The operation id, echoed in the response.
    pub op: u64,
    /// Offset in the target's region.
    pub remote: u64,
    /// Bytes to write or read.
    pub len: u64,
}

impl RequestHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; REQUEST_HEADER] {
        let mut b = [0u8; REQUEST_HEADER];
        b[0] = self.kind;
        b[1..9].copy_from_slice(&self.op.to_le_bytes());
        b[9..17].copy_from_slice(&self.remote.to_le_bytes());
        b[17..25].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes a header.
    pub fn decode(b: &[u8; REQUEST_HEADER]) -> Self {
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        RequestHeader {
            kind: b[0],
            op: word(1),
            remote: word(9),
            len: word(17),
        }
    }
}

/// Encodes a response header.
pub fn encode_response(status: u8, op: u64) -> [u8; RESPONSE_HEADER] {
    let mut b = [0u8; RESPONSE_HEADER];
    b[0] = status;
    b[1..9].copy_from_slice(&op.to_le_bytes());
    b
}

/// Writes the client's hello.
pub fn write_hello(
    w: &mut impl Write,
    client: NodeId,
    server: NodeId,
    nonce: &[u8; NONCE],
) -> io::Result<()> {
    let mut b = [0u8; 4 + 2 + NONCE];
    b[..4].copy_from_slice(&MAGIC);
    b[4] = client.0;
    b[5] = server.0;
    b[6..].copy_from_slice(nonce);
    w.write_all(&b)
}

/// Reads a client's hello: (client, server, nonce).
pub fn read_hello(r: &mut impl Read) -> io::Result<(NodeId, NodeId, [u8; NONCE])> {
    let mut b = [0u8; 4 + 2 + NONCE];
    r.read_exact(&mut b)?;
    if b[..4] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a mu tcp fabric peer (bad magic)",
        ));
    }
    let mut n = [0u8; NONCE];
    n.copy_from_slice(&b[6..]);
    Ok((NodeId(b[4]), NodeId(b[5]), n))
}

/// Runs the client side of the handshake on a fresh connection from node
/// `client` to node `server`. An error of kind `PermissionDenied` means the
/// other side could not prove it knows the secret, or refused our proof.
pub fn client_handshake<S: Read + Write>(
    stream: &mut S,
    key: &[u8; 32],
    client: NodeId,
    server: NodeId,
) -> io::Result<()> {
    let client_nonce = nonce()?;
    write_hello(stream, client, server, &client_nonce)?;
    let mut b = [0u8; NONCE + 32];
    stream.read_exact(&mut b)?;
    let mut server_nonce = [0u8; NONCE];
    server_nonce.copy_from_slice(&b[..NONCE]);
    let mut proof = [0u8; 32];
    proof.copy_from_slice(&b[NONCE..]);
    let expected = mac(key, b"server", &client_nonce, &server_nonce, client, server);
    // blake3::Hash compares in constant time.
    if blake3::Hash::from_bytes(proof) != expected {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("node {server} does not know the cluster secret"),
        ));
    }
    let answer = mac(key, b"client", &client_nonce, &server_nonce, client, server);
    stream.write_all(answer.as_bytes())?;
    let mut accepted = [0u8; 1];
    if stream.read_exact(&mut accepted).is_err() || accepted[0] != 1 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("node {server} refused our proof of the cluster secret"),
        ));
    }
    Ok(())
}

/// Runs the server side of the handshake for node `server` of a group of
/// `group_size`; returns the authenticated client. An error of kind
/// `PermissionDenied` means the client could not prove it knows the secret.
pub fn server_handshake<S: Read + Write>(
    stream: &mut S,
    key: &[u8; 32],
    server: NodeId,
    group_size: usize,
) -> io::Result<NodeId> {
    let (client, to, client_nonce) = read_hello(stream)?;
    if to != server || client.idx() >= group_size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("hello from node {client} to node {to} does not fit this group"),
        ));
    }
    let server_nonce = nonce()?;
    let proof = mac(key, b"server", &client_nonce, &server_nonce, client, server);
    let mut b = [0u8; NONCE + 32];
    b[..NONCE].copy_from_slice(&server_nonce);
    b[NONCE..].copy_from_slice(proof.as_bytes());
    stream.write_all(&b)?;
    let mut answer = [0u8; 32];
    stream.read_exact(&mut answer)?;
    let expected = mac(key, b"client", &client_nonce, &server_nonce, client, server);
    // blake3::Hash compares in constant time.
    if blake3::Hash::from_bytes(answer) != expected {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("node {client} does not know the cluster secret"),
        ));
    }
    stream.write_all(&[1])?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_header_round_trips() {
        let h = RequestHeader {
            kind: KIND_READ,
            op: u64::MAX - 3,
            remote: 4096,
            len: 1 << 20,
        };
        assert_eq!(RequestHeader::decode(&h.encode()), h);
    }

    #[test]
    fn macs_differ_by_role_key_and_nonce() {
        let k = derive_key(b"secret");
        let (a, b) = ([1u8; NONCE], [2u8; NONCE]);
        let m = mac(&k, b"server", &a, &b, NodeId(0), NodeId(1));
        assert_eq!(m, mac(&k, b"server", &a, &b, NodeId(0), NodeId(1)));
        assert_ne!(m, mac(&k, b"client", &a, &b, NodeId(0), NodeId(1)));
        assert_ne!(m, mac(&k, b"server", &b, &a, NodeId(0), NodeId(1)));
        assert_ne!(m, mac(&k, b"server", &a, &b, NodeId(1), NodeId(0)));
        let other = derive_key(b"other");
        assert_ne!(m, mac(&other, b"server", &a, &b, NodeId(0), NodeId(1)));
    }
}
