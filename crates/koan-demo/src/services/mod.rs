//! The seed's sample services, on real data.

pub mod cleanup;
pub mod health_monitor;
pub mod migration;
pub mod outbox;
pub mod probe;
pub mod translation;
