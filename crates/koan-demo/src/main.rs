//! The demo host: the seed's sample services as a real application.
//!
//! Run with: `cargo run -p koan-demo`

fn main() {}
