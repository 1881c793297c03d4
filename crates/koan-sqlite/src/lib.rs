//! The embedded durable job store of Koan: one SQLite file.
//!
//! [`SqliteJobStore`] keeps a host's enqueued jobs on disk, so a job accepted by
//! `enqueue()` survives the process: a job that was running when its process died
//! runs again (attempt + 1) once its claim lapses.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use koan::Host;
//! use koan_sqlite::SqliteJobStore;
//!
//! # fn main() -> koan::Result<()> {
//! let host = Host::builder().job_store(Arc::new(SqliteJobStore::open("jobs.db")?));
//! # drop(host);
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! - **One writer thread** owns the connection and runs every operation but
//!   listings and counts, which a reader thread runs on a read-only connection (a
//!   read in WAL mode sees every write answered before it, and never holds a write).
//!   Callers queue a command and await its answer: nothing blocks an async worker.
//! - **Batching.** The thread takes every command waiting, runs them in one
//!   transaction (each under a savepoint: a failed command is undone alone), commits
//!   once, then answers them all. Should the transaction itself fail, each command is
//!   run again on its own, so one failure never fails or loses another.
//! - **Durability.** WAL mode with `synchronous = FULL`: an answered write is synced
//!   to disk, and survives a power loss as well as a crash. Batching shares one sync
//!   among all the commands of a batch.
//! - **Failures.** A full disk or a read-only file answers
//!   [`ErrorKind::StoreUnavailable`](koan::error::ErrorKind::StoreUnavailable), with nothing
//!   written; the jobs already stored stay readable. So does every command once the
//!   file or its write-ahead log was deleted or replaced under the running host
//!   (what SQLite wrote then would be lost). A damaged file, one this process may
//!   only read, and one of a newer schema are refused at open, before anything is
//!   written to them; so is a path whose file cannot be made, saying why (its
//!   directory missing or not writable).
//! - **Sharing.** Several processes may open one file, at the same moment too: a
//!   new file's schema is made in one transaction, which the others wait for.
//! - **Schema.** A `jobs` table with the columns claims, listings, counts and
//!   retention filter on (times in milliseconds), and the whole
//!   [`JobRecord`](koan::job::JobRecord) as JSON. Times are compared to the millisecond.

mod codec;
mod fail;
mod identity;
mod place;
mod queries;
mod reader;
mod retention;
mod schema;
mod store;
mod writer;

pub use store::SqliteJobStore;
