//! Meridian client (work in progress).
pub mod config;
pub mod wire;
