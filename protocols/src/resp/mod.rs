//! RESP2/RESP3: frames, the request and reply decoders, the encoder.

mod decode;
mod encode;
mod frame;
mod head;
mod inline;
mod request;
mod request_decode;

pub use decode::FrameDecoder;
pub use encode::encode_request;
pub(crate) use encode::{encode_pairs, put_int, put_uint};
pub use frame::Frame;
pub use request::{ArgCursor, ArgError, Request};
pub use request_decode::RequestDecoder;
