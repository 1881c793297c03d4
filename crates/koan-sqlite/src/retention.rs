//! Retention: forgetting final jobs by age and past the size budget, a bounded
//! batch at a time.
//!
//! The budget covers the final jobs alone, the ones retention can forget: counted
//! with the live ones, a backlog over the budget forgot every finished job at each
//! pass, a dead one 90 s after it died (a probe).
//!
//! Which jobs to forget is read on the store's reader connection (a scan of the
//! final jobs, which holds no write back), and the writer forgets them by id, at
//! most [`BATCH`] a command, so that other writes go between two: a whole pass as
//! one transaction of the writer held every enqueue for 1 to 7 s at 400,000 jobs,
//! and another process sharing the file got "database is locked" (a probe). An
//! index of the final jobs by end time made the reads cheap, but its upkeep on
//! every job's finishing write cost a quarter of B9's throughput (4,154 against
//! 5,780 jobs/s in one session), and a tally kept by triggers a third more: a pass
//! a minute on the reader is the cheaper side.

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use crate::codec::{final_states, int, millis};
use crate::fail::{Failure, ResultExt};

/// The most jobs one step forgets (one transaction of the writer).
pub(crate) const BATCH: usize = 1_000;

/// When a final job ended (a job stored by an early version may lack
/// `finished_at`).
const ENDED: &str = "COALESCE(finished_at, created_at)";

/// Up to `limit` final jobs that ended before `older_than` (on the reader).
pub(crate) fn aged(
    conn: &Connection,
    older_than: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<String>, Failure> {
    conn.prepare_cached(&aged_statement())
        .and_then(|mut st| {
            st.query_map(
                rusqlite::params![millis(older_than), int(limit as u64)],
                |row| row.get(0),
            )?
            .collect()
        })
        .doing("find the old finished jobs")
}

/// The statement of [`aged`]: `?1` the bound in milliseconds, `?2` the limit.
fn aged_statement() -> String {
    format!(
        "SELECT id FROM jobs WHERE state IN ({}) AND {ENDED} < ?1 LIMIT ?2",
        final_states()
    )
}

/// The `limit` final jobs that ended first, with their weights (on the reader).
pub(crate) fn oldest(conn: &Connection, limit: usize) -> Result<Vec<(String, i64)>, Failure> {
    let sql = format!(
        "SELECT id, weight FROM jobs WHERE state IN ({}) ORDER BY {ENDED}, id LIMIT ?1",
        final_states()
    );
    conn.prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_map([int(limit as u64)], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .doing("find the oldest finished jobs")
}

/// The final jobs' total weight ([`koan::job::JobRecord::weight`]) (on the
/// reader, once a pass).
pub(crate) fn final_weight(conn: &Connection) -> Result<u64, Failure> {
    let sql = format!(
        "SELECT COALESCE(SUM(weight), 0) FROM jobs WHERE state IN ({})",
        final_states()
    );
    let bytes: i64 = conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.query_row([], |row| row.get(0)))
        .doing("weigh the finished jobs")?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

/// Forgets the jobs `ids` that are still final (one retried since it was read
/// stays), as one command of the writer (its transaction). Returns how many, and
/// their weight.
pub(crate) fn forget(conn: &Connection, ids: &[String]) -> Result<(u64, u64), Failure> {
    let sql = format!(
        "DELETE FROM jobs WHERE id = ?1 AND state IN ({}) RETURNING weight",
        final_states()
    );
    let (mut gone, mut bytes) = (0, 0);
    {
        let mut st = conn.prepare_cached(&sql).doing("forget finished jobs")?;
        for id in ids {
            let weight: Option<i64> = st
                .query_row([id], |row| row.get(0))
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })
                .doing("forget finished jobs")?;
            if let Some(w) = weight {
                gone += 1;
                bytes += u64::try_from(w).unwrap_or(0);
            }
        }
    }
    Ok((gone, bytes))
}

#[cfg(test)]
mod tests {
    use koan::job::{JobStep, NewJob};

    use super::*;
    use crate::codec;

    fn job(n: usize) -> NewJob {
        let now = Utc::now();
        NewJob {
            id: format!("job-{n:05}"),
            service: "a".to_owned(),
            steps: vec![JobStep {
                action: "x".into(),
                params: serde_json::json!({ "n": n }),
                timeout_ms: None,
            }],
            priority: 0,
            correlation_id: format!("job-{n:05}"),
            idempotency_key: None,
            created_at: now,
            run_at: now,
            max_attempts: 1,
        }
    }

    /// `n` cancelled jobs, `from` on, ended `at`.
    fn cancelled(
        conn: &Connection,
        from: usize,
        n: usize,
        at: DateTime<Utc>,
    ) -> Result<(), Failure> {
        for k in from..from + n {
            let mut r = job(k).into_record();
            koan::job::apply_cancel(&mut r, at);
            codec::insert(conn, &r)?;
        }
        Ok(())
    }

    /// A step reads at most its limit and forgets what it read; the next takes up
    /// where it stopped.
    #[test]
    fn a_step_forgets_at_most_its_limit() -> Result<(), Failure> {
        let conn = crate::schema::open_memory()?;
        let now = Utc::now();
        cancelled(&conn, 0, 25, now)?;
        let later = now + chrono::TimeDelta::seconds(1);
        let mut steps = Vec::new();
        for _ in 0..4 {
            let ids = aged(&conn, later, 10)?;
            steps.push(forget(&conn, &ids)?.0);
        }
        assert_eq!(steps, [10, 10, 5, 0]);
        cancelled(&conn, 100, 25, now)?;
        let weight = final_weight(&conn)?;
        let oldest = oldest(&conn, 10)?;
        assert_eq!(oldest.first().map(|(id, _)| id.as_str()), Some("job-00100"));
        let ids: Vec<String> = oldest.into_iter().map(|(id, _)| id).collect();
        let (gone, bytes) = forget(&conn, &ids)?;
        assert_eq!(gone, 10);
        assert_eq!(final_weight(&conn)?, weight - bytes);
        Ok(())
    }

    /// A job read as final but retried before the writer's step (live again)
    /// is not forgotten.
    #[test]
    fn a_job_live_again_is_not_forgotten() -> Result<(), Failure> {
        let conn = crate::schema::open_memory()?;
        let now = Utc::now();
        cancelled(&conn, 0, 2, now)?;
        let ids = aged(&conn, now + chrono::TimeDelta::seconds(1), 10)?;
        assert_eq!(ids.len(), 2);
        crate::queries::retry(&conn, "job-00000", koan::job::RetryFrom::Any, now)?;
        assert_eq!(forget(&conn, &ids)?.0, 1);
        assert!(
            crate::queries::get(&conn, "job-00000")?.is_some(),
            "the retried job stays"
        );
        Ok(())
    }
}
