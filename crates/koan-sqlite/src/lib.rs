//! The embedded durable job store of Koan: one SQLite file.
