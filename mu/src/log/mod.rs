//! Byte layout of a replica's registered region: pure functions over bytes.
//!
//! - [`layout`]: where the control area, the log header, the ring and the
//!   read scratch live.
//! - [`entry`]: the self-describing entry format and its validation.
//! - [`ring`]: absolute log positions mapped onto the physical ring.

pub mod entry;
pub mod layout;
pub mod ring;
