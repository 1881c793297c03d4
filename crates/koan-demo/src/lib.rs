//! The demo application: the seed's sample services on an embedded SQLite database.
//!
//! The binary (`cargo run -p koan-demo`) hosts them with the HTTP control plane; the
//! library lets tests host them too.

pub mod db;
pub mod services;
