//! memcached text and meta protocol: requests, replies, decoders, encoder.

mod encode;
mod meta;
mod reply;
mod request;
mod types;

pub use reply::McReplyDecoder;
pub use request::McRequestDecoder;
pub use types::*;
