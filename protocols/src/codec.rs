//! `tokio_util::codec` implementations (feature `codec`), so a connection
//! can be wrapped in `FramedRead`/`FramedWrite` directly.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::memcached::{McReply, McReplyDecoder, McRequest, McRequestDecoder};
use crate::resp::{encode_request, Frame, FrameDecoder, Request, RequestDecoder};
use crate::ProtocolError;

/// I/O errors from the transport, or a corrupt stream.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Reading or writing the socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The peer sent bytes the protocol does not allow.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

macro_rules! decoder {
    ($ty:ty, $item:ty) => {
        impl Decoder for $ty {
            type Item = $item;
            type Error = CodecError;
            fn decode(&mut self, src: &mut BytesMut) -> Result<Option<$item>, CodecError> {
                Ok(<$ty>::decode(self, src)?)
            }
        }
    };
}

decoder!(RequestDecoder, Request);
decoder!(FrameDecoder, Frame);
decoder!(McRequestDecoder, McRequest);
decoder!(McReplyDecoder, McReply);

impl Encoder<Frame> for FrameDecoder {
    type Error = CodecError;
    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(dst);
        Ok(())
    }
}

impl Encoder<Request> for RequestDecoder {
    type Error = CodecError;
    fn encode(&mut self, item: Request, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_request(&item.args, dst);
        Ok(())
    }
}

impl Encoder<McReply> for McRequestDecoder {
    type Error = CodecError;
    fn encode(&mut self, item: McReply, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(dst);
        Ok(())
    }
}

impl Encoder<McRequest> for McReplyDecoder {
    type Error = CodecError;
    fn encode(&mut self, item: McRequest, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_trait_follows_the_contract() {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPI"[..]);
        assert!(Decoder::decode(&mut d, &mut buf).unwrap().is_none());
        buf.extend_from_slice(b"NG\r\n");
        let req = Decoder::decode(&mut d, &mut buf).unwrap().unwrap();
        assert_eq!(req.name(), b"PING");
        let mut out = BytesMut::new();
        Encoder::encode(&mut d, req, &mut out).unwrap();
        assert_eq!(&out[..], b"*1\r\n$4\r\nPING\r\n");
        let mut bad = BytesMut::from(&b"*1\r\n:1\r\n"[..]);
        assert!(matches!(
            Decoder::decode(&mut d, &mut bad),
            Err(CodecError::Protocol(_))
        ));
    }
}
