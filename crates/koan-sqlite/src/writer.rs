//! The writer: one thread that owns the connection and runs every operation.
//!
//! It takes the first waiting command, then every command that arrived meanwhile
//! (up to [`MAX_BATCH`]), runs them in one transaction — each under a savepoint, so
//! a failed command is undone alone — commits once, and only then answers each.
//! When the transaction as a whole fails (SQLite rolled it back after a full disk,
//! or the commit failed), every command of the batch is run again in a transaction
//! of its own: one command's failure never fails or loses another.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::fail::{Failure, ResultExt};
use crate::identity::Identity;
use crate::reader::Gate;

/// The most commands one transaction holds (bounds the wait of the first one).
const MAX_BATCH: usize = 512;

/// An operation waiting for the writer, with the way to answer it.
pub(crate) trait Command: Send {
    /// Runs the operation inside an open transaction and keeps its outcome (a run
    /// replaces the outcome of an earlier one). `true` when it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;

    /// Replaces the outcome with a failure of the transaction around it.
    fn fail(&mut self, failure: Failure);

    /// Sends the outcome to the caller.
    fn answer(self: Box<Self>);
}

/// A [`Command`] made of a closure and the channel of its answer.
struct Task<T, F> {
    work: F,
    outcome: Option<Result<T, Failure>>,
    reply: oneshot::Sender<Result<T, Failure>>,
}

impl<T, F> Command for Task<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> Result<T, Failure> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let outcome = (self.work)(conn);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn fail(&mut self, failure: Failure) {
        self.outcome = Some(Err(failure));
    }

    fn answer(self: Box<Self>) {
        let outcome = self
            .outcome
            .unwrap_or_else(|| Err(Failure::store("run the operation", "it was never run")));
        // The caller may have stopped waiting; its answer is then nobody's business.
        let _ = self.reply.send(outcome);
    }
}

/// The handle to the writer thread: submit commands; dropping it lets the thread
/// finish the queued ones and end.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: Option<mpsc::Sender<Box<dyn Command>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread that owns `conn`, the connection to the file `identity`
    /// names (none in memory).
    pub(crate) fn start(
        conn: Connection,
        name: &str,
        file: Option<(Identity, Gate)>,
    ) -> Result<Writer, Failure> {
        let (queue, commands) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("koan-sqlite {name}"))
            .spawn(move || serve(&conn, &commands, file.as_ref()))
            .doing("start its writer thread")?;
        Ok(Writer {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues `work`; the receiver answers once its transaction is committed, or
    /// errs when the writer stopped without running it.
    pub(crate) fn submit<T, F>(&self, work: F) -> oneshot::Receiver<Result<T, Failure>>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let task = Box::new(Task {
            work,
            outcome: None,
            reply,
        });
        if let Some(queue) = &self.queue {
            // A send fails only when the thread is gone; dropping the task then
            // closes the receiver, which the caller reports.
            let _ = queue.send(task);
        }
        answer
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the koan-sqlite writer thread panicked");
        }
    }
}

/// The writer thread: batches until every sender is gone and the queue is empty.
/// A batch is refused whole while the file is not the one opened (`identity`).
fn serve(
    conn: &Connection,
    commands: &mpsc::Receiver<Box<dyn Command>>,
    file: Option<&(Identity, Gate)>,
) {
    let identity = file.map(|(identity, _)| identity);
    let mut since_check = 0;
    while let Ok(first) = commands.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        match identity.and_then(Identity::moved) {
            None => run_batch(conn, &mut batch),
            Some(why) => {
                for command in &mut batch {
                    command.fail(Failure::store("use the file", why.clone()));
                }
            }
        }
        since_check += batch.len();
        for command in batch {
            command.answer();
        }
        if let Some((_, gate)) = file
            && since_check >= CHECK_LOG_EVERY
        {
            since_check = 0;
            truncate_a_long_log(conn, gate);
        }
    }
}

/// How many commands go by between two looks at the write-ahead log's length.
const CHECK_LOG_EVERY: usize = 256;

/// The write-ahead log's length (in pages, 4 KiB each) past which it is
/// truncated: SQLite checkpoints it at 1,000 and starts it again once no read
/// holds a snapshot of it; reads back to back always held one.
const LONG_LOG: i64 = 4096;

/// Truncates the write-ahead log when it is longer than [`LONG_LOG`], every
/// page of it in the file: through the reader's gate, so that no read of this
/// store holds a snapshot meanwhile (another process's may: its busy wait, at
/// most the busy timeout, then the next look).
fn truncate_a_long_log(conn: &Connection, gate: &Gate) {
    let log: rusqlite::Result<i64> =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1));
    if !log.is_ok_and(|pages| pages > LONG_LOG) {
        return;
    }
    let _no_reads = gate.write();
    // Another process's read may hold the log too: not waited for long (the
    // busy timeout held this store's writes and reads 5 s at each look; a
    // review), tried again at the next look.
    let _ = conn.busy_timeout(std::time::Duration::from_millis(50));
    let truncated: rusqlite::Result<i64> =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0));
    let _ = conn.busy_timeout(crate::schema::BUSY_TIMEOUT);
    if !matches!(truncated, Ok(0)) {
        tracing::debug!(outcome = ?truncated, "koan-sqlite could not truncate its write-ahead log now; it tries again later");
    }
}

/// Runs `batch` in one transaction, or each command alone when that fails.
pub(crate) fn run_batch(conn: &Connection, batch: &mut [Box<dyn Command>]) {
    if batch.len() > 1 && together(conn, batch) {
        return;
    }
    for command in batch {
        alone(conn, command.as_mut());
    }
}

/// One transaction, a savepoint per command. `false`: the transaction was rolled
/// back, and no outcome of the batch holds.
fn together(conn: &Connection, batch: &mut [Box<dyn Command>]) -> bool {
    if conn.execute_batch("BEGIN IMMEDIATE").is_err() {
        return false;
    }
    for command in batch.iter_mut() {
        if conn.execute_batch("SAVEPOINT command").is_err() {
            rollback(conn);
            return false;
        }
        let ok = command.run(conn);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (a full disk, an I/O error).
            return false;
        }
        let end = if ok {
            "RELEASE command"
        } else {
            "ROLLBACK TO command; RELEASE command"
        };
        if conn.execute_batch(end).is_err() {
            rollback(conn);
            return false;
        }
    }
    if conn.execute_batch("COMMIT").is_err() {
        rollback(conn);
        return false;
    }
    true
}

/// One command in a transaction of its own.
fn alone(conn: &Connection, command: &mut dyn Command) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        command.fail(Failure::store("begin a transaction", e));
        return;
    }
    let ok = command.run(conn);
    if conn.is_autocommit() {
        if ok {
            command.fail(Failure::store(
                "commit",
                "SQLite rolled the transaction back",
            ));
        }
        return;
    }
    if !ok {
        rollback(conn);
    } else if let Err(e) = conn.execute_batch("COMMIT") {
        rollback(conn);
        command.fail(Failure::store("commit", e));
    }
}

/// Ends an open transaction, writing nothing.
fn rollback(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::warn!(error = %e, "koan-sqlite could not roll a transaction back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = oneshot::Receiver<Result<i64, Failure>>;

    fn table() -> Connection {
        let conn = Connection::open_in_memory().expect("an in-memory database");
        conn.execute_batch("CREATE TABLE t (n INTEGER NOT NULL CHECK (n >= 0))")
            .expect("a table");
        conn
    }

    /// A command inserting `n` (a negative `n` breaks the CHECK constraint).
    fn insert(n: i64) -> (Box<dyn Command>, Answer) {
        task(move |conn| {
            conn.execute("INSERT INTO t (n) VALUES (?1)", [n])
                .doing("insert")
                .map(|_| n)
        })
    }

    fn task(
        work: impl FnMut(&Connection) -> Result<i64, Failure> + Send + 'static,
    ) -> (Box<dyn Command>, Answer) {
        let (reply, answer) = oneshot::channel();
        let command = Task {
            work,
            outcome: None,
            reply,
        };
        (Box::new(command), answer)
    }

    fn rows(conn: &Connection) -> Vec<i64> {
        let mut st = conn.prepare("SELECT n FROM t ORDER BY n").expect("a query");
        st.query_map([], |row| row.get(0))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("numbers")
    }

    fn run(conn: &Connection, commands: Vec<(Box<dyn Command>, Answer)>) -> Vec<Option<i64>> {
        let (mut batch, answers): (Vec<_>, Vec<_>) = commands.into_iter().unzip();
        run_batch(conn, &mut batch);
        batch.into_iter().for_each(|c| c.answer());
        answers
            .into_iter()
            .map(|mut a| a.try_recv().expect("an answer").ok())
            .collect()
    }

    #[test]
    fn a_failed_command_is_undone_alone() {
        let conn = table();
        let answers = run(&conn, vec![insert(1), insert(-1), insert(2)]);
        assert_eq!(answers, [Some(1), None, Some(2)]);
        assert_eq!(rows(&conn), [1, 2]);
        assert!(conn.is_autocommit(), "no transaction left open");
    }

    #[test]
    fn a_lost_transaction_reruns_each_command_alone() {
        let conn = table();
        // Ends the batch's transaction as SQLite does after a full disk.
        let abort = task(|conn| {
            conn.execute_batch("ROLLBACK").doing("roll back")?;
            Err(Failure::store("insert", "the disk is full"))
        });
        let answers = run(&conn, vec![insert(1), abort, insert(2)]);
        assert_eq!(answers, [Some(1), None, Some(2)]);
        assert_eq!(rows(&conn), [1, 2], "each insert once");
        assert!(conn.is_autocommit(), "no transaction left open");
    }
}
