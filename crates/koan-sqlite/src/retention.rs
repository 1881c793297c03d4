//! Retention: forgetting final jobs by age and past the size budget, a bounded
//! batch at a time.
//!
//! The budget covers the final jobs alone, the ones retention can forget: counted
//! with the live ones, a backlog over the budget forgot every finished job at each
//! pass, a dead one 90 s after it died (a probe). Each step is one command of the
//! writer, at most [`BATCH`] rows, so that other writes go between two steps: a
//! whole pass in one transaction held every enqueue for seconds, and another
//! process sharing the file got "database is locked".

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use crate::codec::{self, final_states, int, millis};
use crate::fail::{Failure, ResultExt};

/// The most jobs one step forgets (one transaction of the writer).
pub(crate) const BATCH: usize = 1_000;

/// When a final job ended, as the retention index sorts it (a job stored by an
/// early version may lack `finished_at`). The index's expression, word for word.
const ENDED: &str = "COALESCE(finished_at, created_at)";

/// The retention index and the tally of the final jobs' weight, kept by triggers
/// on every insert, update and delete of a job (by any process sharing the file,
/// at any version of this crate): the size check reads one row instead of every
/// job's weight. Idempotent; run in one transaction, so the tally starts from the
/// jobs as they are.
pub(crate) fn schema() -> String {
    let finals = final_states();
    format!(
        "CREATE INDEX IF NOT EXISTS jobs_final ON jobs ({ENDED}, id, weight)
             WHERE state IN ({finals});
         CREATE TABLE IF NOT EXISTS jobs_final_weight (
             only  INTEGER PRIMARY KEY CHECK (only = 0),
             bytes INTEGER NOT NULL
         );
         INSERT OR IGNORE INTO jobs_final_weight (only, bytes)
             SELECT 0, COALESCE(SUM(weight), 0) FROM jobs WHERE state IN ({finals});
         CREATE TRIGGER IF NOT EXISTS jobs_final_inserted AFTER INSERT ON jobs
             WHEN NEW.state IN ({finals})
         BEGIN
             UPDATE jobs_final_weight SET bytes = bytes + NEW.weight WHERE only = 0;
         END;
         CREATE TRIGGER IF NOT EXISTS jobs_final_deleted AFTER DELETE ON jobs
             WHEN OLD.state IN ({finals})
         BEGIN
             UPDATE jobs_final_weight SET bytes = bytes - OLD.weight WHERE only = 0;
         END;
         CREATE TRIGGER IF NOT EXISTS jobs_final_updated AFTER UPDATE OF state, weight ON jobs
             WHEN OLD.state IN ({finals}) OR NEW.state IN ({finals})
         BEGIN
             UPDATE jobs_final_weight
                 SET bytes = bytes
                     - CASE WHEN OLD.state IN ({finals}) THEN OLD.weight ELSE 0 END
                     + CASE WHEN NEW.state IN ({finals}) THEN NEW.weight ELSE 0 END
                 WHERE only = 0;
         END;"
    )
}

/// Whether every object of [`schema`] is in place (a file of an earlier version
/// lacks them).
pub(crate) fn in_place(conn: &Connection) -> Result<bool, Failure> {
    conn.query_row(
        "SELECT COUNT(*) = 5 FROM sqlite_master WHERE name IN ('jobs_final', 'jobs_final_weight',
             'jobs_final_inserted', 'jobs_final_deleted', 'jobs_final_updated')",
        [],
        |row| row.get(0),
    )
    .doing("read the schema")
}

/// Forgets at most `limit` final jobs that ended before `older_than`, oldest
/// first. Returns how many.
pub(crate) fn forget_aged(
    conn: &Connection,
    older_than: DateTime<Utc>,
    limit: usize,
) -> Result<u64, Failure> {
    let gone = conn
        .prepare_cached(&aged_statement())
        .and_then(|mut st| st.execute(rusqlite::params![millis(older_than), int(limit as u64)]))
        .doing("forget old jobs")?;
    Ok(gone as u64)
}

/// The statement of [`forget_aged`]: `?1` the bound in milliseconds, `?2` the limit.
/// `INDEXED BY`: the retention index, in its order, as far as the limit.
fn aged_statement() -> String {
    format!(
        "DELETE FROM jobs WHERE rowid IN (
             SELECT rowid FROM jobs INDEXED BY jobs_final
             WHERE state IN ({}) AND {ENDED} < ?1
             ORDER BY {ENDED}, id LIMIT ?2)",
        final_states()
    )
}

/// The statement of [`forget_oldest`]'s candidates: `?1` the limit.
fn oldest_statement() -> String {
    format!(
        "SELECT id, weight FROM jobs INDEXED BY jobs_final WHERE state IN ({})
         ORDER BY {ENDED}, id LIMIT ?1",
        final_states()
    )
}

/// The final jobs' total weight ([`koan::job::JobRecord::weight`]), from the tally.
pub(crate) fn final_weight(conn: &Connection) -> Result<u64, Failure> {
    let bytes: i64 = conn
        .prepare_cached("SELECT bytes FROM jobs_final_weight WHERE only = 0")
        .and_then(|mut st| st.query_row([], |row| row.get(0)))
        .doing("weigh the finished jobs")?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

/// Forgets the oldest final jobs, at most `limit`, while the final jobs weigh
/// more than `max_bytes`. Returns how many.
pub(crate) fn forget_oldest(
    conn: &Connection,
    max_bytes: u64,
    limit: usize,
) -> Result<u64, Failure> {
    let mut excess = final_weight(conn)?.saturating_sub(max_bytes);
    if excess == 0 {
        return Ok(0);
    }
    let oldest: Vec<(String, i64)> = conn
        .prepare_cached(&oldest_statement())
        .and_then(|mut st| {
            st.query_map([int(limit as u64)], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .doing("find the oldest finished jobs")?;
    let mut gone = 0;
    for (id, weight) in oldest {
        if excess == 0 {
            break;
        }
        codec::remove(conn, &id)?;
        excess = excess.saturating_sub(u64::try_from(weight).unwrap_or(0));
        gone += 1;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use koan::job::{ClaimRequest, Finish, JobStep, NewJob, RetryFrom};
    use rusqlite::params_from_iter;

    use super::*;
    use crate::queries;

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

    /// The final jobs' weight as a full scan finds it.
    fn summed(conn: &Connection) -> u64 {
        let sql = format!(
            "SELECT COALESCE(SUM(weight), 0) FROM jobs WHERE state IN ({})",
            final_states()
        );
        let n: i64 = conn.query_row(&sql, [], |row| row.get(0)).expect("a sum");
        u64::try_from(n).expect("not negative")
    }

    /// The tally follows every change of a job into and out of a final state,
    /// and its weight's changes while final.
    #[test]
    fn the_tally_is_the_final_jobs_weight() -> Result<(), Failure> {
        let conn = crate::schema::open_memory()?;
        for n in 0..6 {
            queries::push(&conn, &job(n))?;
        }
        assert_eq!(final_weight(&conn)?, 0);
        let now = Utc::now();
        let request = ClaimRequest {
            service: "a".to_owned(),
            limit: 4,
            now,
            lease_until: now + chrono::TimeDelta::seconds(30),
            instance: "host".to_owned(),
        };
        let held = queries::claim(&conn, &request)?;
        for (i, h) in held.iter().enumerate() {
            let result = serde_json::json!({ "text": "y".repeat(100 * i) });
            let how = Finish::Succeeded {
                result,
                truncated: false,
            };
            queries::finish(&conn, &h.claim, &how, now)?;
        }
        assert!(final_weight(&conn)? > 0);
        assert_eq!(final_weight(&conn)?, summed(&conn));
        queries::retry(&conn, &held[0].claim.id, RetryFrom::Any, now)?;
        assert_eq!(final_weight(&conn)?, summed(&conn), "a retry");
        queries::cancel(&conn, "job-00005", now)?;
        assert_eq!(final_weight(&conn)?, summed(&conn), "a cancel");
        queries::delete(&conn, &held[1].claim.id)?;
        assert_eq!(final_weight(&conn)?, summed(&conn), "a delete");
        forget_oldest(&conn, 1, BATCH)?;
        assert_eq!(final_weight(&conn)?, summed(&conn), "retention");
        Ok(())
    }

    /// Each step reads the retention index, in its order, as far as its limit:
    /// neither a scan of every job nor a sort of the final ones (the age pass
    /// walked every final row, at 400,000 jobs for 1 to 1.5 s: a probe).
    #[test]
    fn the_steps_walk_the_retention_index() -> Result<(), Failure> {
        let conn = crate::schema::open_memory()?;
        let steps = [
            (aged_statement(), vec![0, 1]),
            (oldest_statement(), vec![1]),
        ];
        for (sql, args) in steps {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .and_then(|mut st| {
                    st.query_map(params_from_iter(args), |row| row.get(3))?
                        .collect()
                })
                .doing("explain")?;
            let text = plan.join("\n");
            assert!(
                text.contains("INDEX jobs_final") && !text.contains("TEMP B-TREE"),
                "{text}"
            );
        }
        Ok(())
    }

    /// A step forgets at most its limit; the next takes up where it stopped.
    #[test]
    fn a_step_forgets_at_most_its_limit() -> Result<(), Failure> {
        let conn = crate::schema::open_memory()?;
        let now = Utc::now();
        for n in 0..25 {
            let mut r = job(n).into_record();
            koan::job::apply_cancel(&mut r, now);
            codec::insert(&conn, &r)?;
        }
        let later = now + chrono::TimeDelta::seconds(1);
        let steps: Vec<u64> = (0..4)
            .map(|_| forget_aged(&conn, later, 10))
            .collect::<Result<_, _>>()?;
        assert_eq!(steps, [10, 10, 5, 0]);
        for n in 0..25 {
            let mut r = job(100 + n).into_record();
            koan::job::apply_cancel(&mut r, now);
            codec::insert(&conn, &r)?;
        }
        let steps: Vec<u64> = (0..4)
            .map(|_| forget_oldest(&conn, 0, 10))
            .collect::<Result<_, _>>()?;
        assert_eq!(steps, [10, 10, 5, 0]);
        Ok(())
    }
}
