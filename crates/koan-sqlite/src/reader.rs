//! The reader: a thread of its own, with a read-only connection to the file, for
//! listings and counts. They ran on the writer thread, where a listing that reads
//! many records (a correlation id's, an action's) held every claim, finish and
//! enqueue behind it: with 179,000 jobs kept, the dashboard's poll of a
//! correlation id stalled one enqueue in forty by a second (found by a probe). In
//! WAL mode a read sees every transaction committed before it began, so a listing
//! still shows every write already answered; and it never holds the write lock.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::fail::{Failure, ResultExt};
use crate::identity::Identity;

/// Held by the reader for each read, and by the writer to truncate the
/// write-ahead log: with reads back to back, one of them always held a snapshot,
/// no checkpoint could start the log again, and it grew to 764 MB (a re-probe:
/// six pollers every 200 ms beside eight enqueuers). Holding it, the writer waits
/// for the read under way (at most one), and the next waits for it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gate(std::sync::Arc<GateInner>);

#[derive(Debug, Default)]
pub(crate) struct GateInner {
    lock: std::sync::Mutex<()>,
    /// The writer waits for the gate: the reader lets it pass before its next
    /// read (a mutex is not fair: the reader, back at once, took it first; a
    /// review).
    wanted: std::sync::atomic::AtomicBool,
}

impl Gate {
    /// The reader's way through, after any writer that waits.
    pub(crate) fn read(&self) -> std::sync::MutexGuard<'_, ()> {
        while self.0.wanted.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.lock()
    }

    /// The writer's: the reader takes no new read until it is through.
    pub(crate) fn write(&self) -> std::sync::MutexGuard<'_, ()> {
        use std::sync::atomic::Ordering;
        self.0.wanted.store(true, Ordering::Release);
        let held = self.lock();
        self.0.wanted.store(false, Ordering::Release);
        held
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.0
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A read, given the connection, or why the file is no longer the one opened.
type Work = Box<dyn FnOnce(Result<&Connection, Failure>) + Send>;

/// The handle to the reader thread; dropping it ends the thread once its queued
/// reads are answered.
#[derive(Debug)]
pub(crate) struct Reader {
    queue: Option<mpsc::Sender<Work>>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Starts the thread, with its read-only connection to the file at `path`
    /// (already in WAL mode, its schema in place: the writer opened it first).
    pub(crate) fn start(path: &Path, name: &str, gate: Gate) -> Result<Reader, Failure> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .doing("open the file for reading")?;
        conn.busy_timeout(crate::schema::BUSY_TIMEOUT)
            .doing("set a busy timeout")?;
        let (queue, works) = mpsc::channel::<Work>();
        // Refused, as the writer refuses, while the file is not the one opened.
        let identity = Identity::of(path);
        let thread = std::thread::Builder::new()
            .name(format!("koan-sqlite reader {name}"))
            .spawn(move || {
                while let Ok(work) = works.recv() {
                    // Each read through the gate: the writer can find a moment
                    // with no read under way (see [`Gate`]).
                    let _reading = gate.read();
                    match identity.moved() {
                        None => work(Ok(&conn)),
                        Some(why) => work(Err(Failure::store("use the file", why))),
                    }
                }
            })
            .doing("start its reader thread")?;
        Ok(Reader {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues `read`; the receiver errs when the thread stopped without running it.
    pub(crate) fn submit<T, F>(&self, read: F) -> oneshot::Receiver<Result<T, Failure>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |conn| {
            let _ = reply.send(conn.and_then(read));
        });
        if let Some(queue) = &self.queue {
            let _ = queue.send(work);
        }
        answer
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the koan-sqlite reader thread panicked");
        }
    }
}
