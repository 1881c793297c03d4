//! The demo application: sample services of every kind (startup, periodic,
//! background) doing real work on an embedded SQLite database.
//!
//! The binary (`cargo run -p koan-demo`) hosts them with the HTTP control plane; the
//! library lets tests host them too.

pub mod db;
pub mod services;
