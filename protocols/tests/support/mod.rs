//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod datadriven;
pub mod render;
pub mod server;
