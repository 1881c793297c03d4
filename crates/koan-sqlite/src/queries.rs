//! The store's operations, each run by the writer inside a transaction of its own
//! (a savepoint of the batch's transaction). An operation that fails leaves the
//! database as it found it: the writer rolls its savepoint back.
//!
//! The record transitions are `koan`'s (`apply_finish`, `apply_retry`,
//! `apply_cancel`), so this store and `koan::job::MemoryJobStore` cannot disagree on them.

use chrono::{DateTime, Utc};
use koan::{
    job::Claim, job::ClaimRequest, job::Claimed, job::Finish, job::JobCounts, job::JobPage,
    job::JobQuery, job::JobRecord, job::JobState, job::NewJob, job::Pushed,
};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter, types::Value};

use crate::codec::{self, decode, from_millis, int, load, millis, waiting_states};
use crate::fail::{Failure, ResultExt, unknown_job, wrong_state};

/// Stores `job`, or answers the job already stored under its idempotency key (or
/// its id: a push repeated after a lost answer).
pub(crate) fn push(conn: &Connection, job: &NewJob) -> Result<Pushed, Failure> {
    if let Some(record) = find_existing(conn, job)? {
        return Ok(Pushed {
            record,
            created: false,
        });
    }
    let record = job.clone().into_record();
    if codec::insert(conn, &record)? {
        return Ok(Pushed {
            record,
            created: true,
        });
    }
    // Another process stored the same key between our look-up and our insert.
    match find_existing(conn, job)? {
        Some(record) => Ok(Pushed {
            record,
            created: false,
        }),
        None => Err(Failure::store(
            format!("store job `{}`", job.id),
            "it conflicts with a stored job that cannot be found",
        )),
    }
}

/// The stored job with `job`'s idempotency key, else with its id.
fn find_existing(conn: &Connection, job: &NewJob) -> Result<Option<JobRecord>, Failure> {
    if let Some(key) = &job.idempotency_key {
        let json: Option<String> = conn
            .prepare_cached("SELECT record FROM jobs WHERE idempotency_key = ?1")
            .and_then(|mut st| st.query_row([key], |row| row.get(0)).optional())
            .doing("look up an idempotency key")?;
        if let Some(json) = json {
            return decode(&json).map(Some);
        }
    }
    Ok(load(conn, &job.id)?.map(|(record, _)| record))
}

/// A due job as a claim orders them: priority, then `run_at`, then id.
type Due = (i64, i64, String, String);

/// Claims due jobs of a service: highest priority first, then oldest `run_at`.
pub(crate) fn claim(conn: &Connection, req: &ClaimRequest) -> Result<Vec<Claimed>, Failure> {
    // Waiting jobs and lapsed claims are read apart, each from its partial index
    // (`schema::live_indexes`), then merged: SQLite reads `limit` waiting rows in
    // claim order instead of sorting every waiting job. `INDEXED BY`: SQLite would
    // otherwise pick `jobs_waiting_due` for `run_at <= ?2` and sort.
    let waiting = format!(
        "SELECT priority, run_at, id, record FROM jobs INDEXED BY jobs_waiting
         WHERE service = ?1 AND state IN ({}) AND run_at <= ?2
         ORDER BY priority DESC, run_at, id
         LIMIT ?3",
        waiting_states()
    );
    let lapsed = "SELECT priority, run_at, id, record FROM jobs
         WHERE service = ?1 AND state = 'running' AND lease_until < ?2
         ORDER BY priority DESC, run_at, id
         LIMIT ?3";
    let args = params![req.service, millis(req.now), int(req.limit as u64)];
    let mut due: Vec<Due> = Vec::new();
    for sql in [waiting.as_str(), lapsed] {
        conn.prepare_cached(sql)
            .and_then(|mut st| {
                for row in st.query_map(args, |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })? {
                    due.push(row?);
                }
                Ok(())
            })
            .doing("find due jobs")?;
    }
    due.sort_by(|x, y| {
        y.0.cmp(&x.0)
            .then(x.1.cmp(&y.1))
            .then_with(|| x.2.cmp(&y.2))
    });
    due.truncate(req.limit);
    let mut out = Vec::with_capacity(due.len());
    for (_, _, _, json) in due {
        let mut r = decode(&json)?;
        let token = koan::job::new_job_id();
        // A job dead at its claim comes back unclaimed, for the runner to report.
        let runs = koan::job::apply_claim(&mut r, req);
        codec::save(conn, &r, runs.then_some(token.as_str()))?;
        out.push(Claimed {
            claim: Claim {
                id: r.id.clone(),
                token,
            },
            record: r,
        });
    }
    Ok(out)
}

/// The record of `claim`'s job while the claim is its current one.
fn held(conn: &Connection, claim: &Claim) -> Result<Option<JobRecord>, Failure> {
    Ok(match load(conn, &claim.id)? {
        Some((r, Some(token))) if token == claim.token && r.state == JobState::Running => Some(r),
        _ => None,
    })
}

/// Extends a held claim.
pub(crate) fn heartbeat(
    conn: &Connection,
    claim: &Claim,
    lease_until: DateTime<Utc>,
) -> Result<bool, Failure> {
    let Some(mut r) = held(conn, claim)? else {
        return Ok(false);
    };
    r.lease_until = Some(lease_until);
    codec::save(conn, &r, Some(&claim.token))?;
    Ok(true)
}

/// Records the outcome of a held claim.
pub(crate) fn finish(
    conn: &Connection,
    claim: &Claim,
    how: &Finish,
    now: DateTime<Utc>,
) -> Result<bool, Failure> {
    let Some(mut r) = held(conn, claim)? else {
        return Ok(false);
    };
    koan::job::apply_finish(&mut r, how.clone(), now);
    codec::save(conn, &r, None)?;
    Ok(true)
}

/// One job.
pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<JobRecord>, Failure> {
    Ok(load(conn, id)?.map(|(r, _)| r))
}

/// A page of jobs, newest first (ids are UUID v7: they sort by creation).
pub(crate) fn list(conn: &Connection, q: &JobQuery) -> Result<JobPage, Failure> {
    let size = q.page_size();
    let (sql, args) = list_statement(q);
    let rows: Vec<String> = conn
        .prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_map(params_from_iter(args), |row| row.get(0))?
                .collect()
        })
        .doing("list jobs")?;
    let mut jobs = rows
        .iter()
        .map(|json| decode(json))
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if jobs.len() > size {
        jobs.truncate(size);
        jobs.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(JobPage {
        jobs,
        next_cursor,
        stale: false,
        partial: false,
    })
}

/// The statement of a listing's page (one more row than the page, to know
/// whether another follows), and its arguments.
fn list_statement(q: &JobQuery) -> (String, Vec<Value>) {
    let mut filters = Vec::new();
    let mut args = Vec::new();
    let mut filter = |column: &str, value: Option<&str>, op: &str| {
        if let Some(v) = value {
            args.push(Value::Text(v.to_owned()));
            filters.push(format!("{column} {op} ?{}", args.len()));
        }
    };
    filter("state", q.state.map(JobState::as_str), "=");
    filter("service", q.service.as_deref(), "=");
    filter("action", q.action.as_deref(), "=");
    // An index on the expression (`schema.rs`): the dashboard polls "the job of
    // this event" every 2 s, and its scan of every record took a second at 179,000
    // jobs (a probe). The expression is the index's, word for word.
    filter(
        "json_extract(record, '$.correlation_id')",
        q.correlation_id.as_deref(),
        "=",
    );
    filter("id", q.cursor.as_deref(), "<");
    let size = q.page_size();
    args.push(Value::Integer(int(size as u64 + 1)));
    let sql = format!(
        "SELECT record FROM jobs {} {} ORDER BY id DESC LIMIT ?{}",
        if filters.is_empty() { "" } else { "WHERE" },
        filters.join(" AND "),
        args.len()
    );
    (sql, args)
}

/// Counts by state, of all services or one.
pub(crate) fn counts(conn: &Connection, service: Option<&str>) -> Result<JobCounts, Failure> {
    let found: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT state, COUNT(*) FROM jobs WHERE ?1 IS NULL OR service = ?1 GROUP BY state",
        )
        .and_then(|mut st| {
            st.query_map([service], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .doing("count jobs")?;
    let by_state = JobState::ALL
        .into_iter()
        .map(|s| {
            let n = found
                .iter()
                .find(|(name, _)| name == s.as_str())
                .map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0));
            (s, n)
        })
        .collect();
    Ok(JobCounts::new(by_state))
}

/// The earliest `run_at` of a waiting job, or lease end of a running one, among
/// `services`.
pub(crate) fn next_due(
    conn: &Connection,
    services: &[String],
) -> Result<Option<DateTime<Utc>>, Failure> {
    // Per service, the first entry of each partial index (`schema::live_indexes`):
    // `ORDER BY … LIMIT 1` reads one row, where `MIN` over `state IN (…)` reads all.
    let waiting = format!(
        "SELECT run_at FROM jobs WHERE service = ?1 AND state IN ({})
         ORDER BY run_at LIMIT 1",
        waiting_states()
    );
    let leased = "SELECT lease_until FROM jobs
         WHERE service = ?1 AND state = 'running' AND lease_until IS NOT NULL
         ORDER BY lease_until LIMIT 1";
    let mut first: Option<i64> = None;
    for sql in [waiting.as_str(), leased] {
        let mut st = conn.prepare_cached(sql).doing("find the next due job")?;
        for service in services {
            let ms: Option<i64> = st
                .query_row([service], |row| row.get(0))
                .optional()
                .doing("find the next due job")?
                .flatten();
            if let Some(ms) = ms {
                first = Some(first.map_or(ms, |f| f.min(ms)));
            }
        }
    }
    first.map(from_millis).transpose()
}

/// Each service with a live job and its first due time (`next_due` of that service
/// alone). The services are found by a skip-scan of each partial index (one seek per
/// service with live jobs: `DISTINCT` would read every live row, and a runner asks
/// once a pass, a pass per finished job while a backlog drains), then each service's
/// first entry as `next_due` reads it.
pub(crate) fn live_services(conn: &Connection) -> Result<koan::job::LiveServices, Failure> {
    let mut services: Vec<String> = Vec::new();
    for sql in skip_scans() {
        let mut st = conn
            .prepare_cached(&sql)
            .doing("find the services with live jobs")?;
        let rows = st
            .query_map([], |row| row.get::<_, String>(0))
            .doing("find the services with live jobs")?;
        for service in rows {
            services.push(service.doing("find the services with live jobs")?);
        }
    }
    services.sort_unstable();
    services.dedup();
    let mut out = Vec::with_capacity(services.len());
    for service in services {
        if let Some(at) = next_due(conn, std::slice::from_ref(&service))? {
            out.push((service, at));
        }
    }
    Ok(out)
}

/// The two skip-scans of [`live_services`]: the services with waiting jobs, and
/// those with leased ones. Each names its partial index: SQLite's planner took
/// `jobs_by_state` (`state = ?`) and sorted every live row for the `ORDER BY`, so
/// that with 20,000 delayed jobs each pass read them all (33 ms), on the writer's
/// thread, and every enqueue waited behind it (found by a probe).
fn skip_scans() -> [String; 2] {
    let waiting = waiting_states();
    let skip_scan = |index: &str, live: &str| {
        format!(
            "WITH RECURSIVE s(service) AS (
                 SELECT (SELECT service FROM jobs INDEXED BY {index} WHERE {live}
                         ORDER BY service LIMIT 1)
                 UNION ALL
                 SELECT (SELECT service FROM jobs INDEXED BY {index}
                         WHERE {live} AND service > s.service
                         ORDER BY service LIMIT 1)
                 FROM s WHERE s.service IS NOT NULL
             )
             SELECT service FROM s WHERE service IS NOT NULL"
        )
    };
    [
        skip_scan("jobs_waiting_due", &format!("state IN ({waiting})")),
        skip_scan(
            "jobs_leased",
            "state = 'running' AND lease_until IS NOT NULL",
        ),
    ]
}

/// Runs a job again by hand.
pub(crate) fn retry(
    conn: &Connection,
    id: &str,
    from: koan::job::RetryFrom,
    now: DateTime<Utc>,
) -> Result<JobRecord, Failure> {
    let (mut r, _) = load(conn, id)?.ok_or_else(|| unknown_job(id))?;
    from.check(id, r.state).map_err(Failure::Job)?;
    koan::job::apply_retry(&mut r, now);
    codec::save(conn, &r, None)?;
    Ok(r)
}

/// Runs each of `ids` again by hand: how many were (one gone, or in a state
/// `from` does not allow, is passed over).
pub(crate) fn retry_each(
    conn: &Connection,
    ids: &[String],
    from: koan::job::RetryFrom,
    now: DateTime<Utc>,
) -> Result<usize, Failure> {
    let mut n = 0;
    for id in ids {
        match retry(conn, id, from, now) {
            Ok(_) => n += 1,
            Err(Failure::Job(e)) if koan::job::passed_over(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Cancels a job that is not final; a running one loses its claim.
pub(crate) fn cancel(
    conn: &Connection,
    id: &str,
    now: DateTime<Utc>,
) -> Result<JobRecord, Failure> {
    let (mut r, _) = load(conn, id)?.ok_or_else(|| unknown_job(id))?;
    if r.state.is_final() {
        return Err(wrong_state(
            id,
            r.state,
            "cancel",
            "scheduled, queued, running or retrying",
        ));
    }
    koan::job::apply_cancel(&mut r, now);
    codec::save(conn, &r, None)?;
    Ok(r)
}

/// Forgets a job that is not running.
pub(crate) fn delete(conn: &Connection, id: &str) -> Result<bool, Failure> {
    match load(conn, id)? {
        None => Ok(false),
        Some((r, _)) => {
            koan::job::check_delete(id, r.state).map_err(Failure::Job)?;
            codec::remove(conn, id).map(|()| true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of each skip-scan walks its partial index: no sort of the live
    /// rows, which cost a pass every live row's read (found by a probe: 33 ms a
    /// pass with 20,000 delayed jobs, every enqueue behind it).
    #[test]
    fn the_live_services_scans_walk_their_partial_indexes() -> Result<(), Failure> {
        let conn = crate::schema::open_memory()?;
        for i in 0..2_000 {
            let service = ["alpha", "beta", "gamma"][i % 3];
            let now = chrono::Utc::now();
            let r = NewJob {
                id: format!("job-{i:05}"),
                service: service.to_owned(),
                steps: vec![koan::job::JobStep {
                    action: "a".into(),
                    params: serde_json::Value::Null,
                    timeout_ms: None,
                }],
                priority: 0,
                correlation_id: format!("job-{i:05}"),
                idempotency_key: None,
                created_at: now,
                run_at: now + chrono::TimeDelta::days(300),
                max_attempts: 1,
            }
            .into_record();
            codec::insert(&conn, &r)?;
        }
        // A correlation id's listing walks its index (the dashboard polls it;
        // its scan of every record took a second at 179,000 jobs: a probe).
        let by_correlation = JobQuery {
            correlation_id: Some("job-00007".into()),
            ..JobQuery::default()
        };
        let listing = list_statement(&by_correlation);
        // Without statistics, as the store's files are (the probe's had none).
        let scans = skip_scans().into_iter().map(|sql| (sql, Vec::new()));
        for (sql, args) in scans.chain([listing]) {
            let mut st = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .doing("explain")?;
            let plan: Vec<String> = st
                .query_map(params_from_iter(args), |row| row.get::<_, String>(3))
                .doing("explain")?
                .collect::<Result<_, _>>()
                .doing("explain")?;
            let text = plan.join("\n");
            assert!(
                !text.contains("TEMP B-TREE")
                    && !text.contains("jobs_by_state")
                    && !text.starts_with("SCAN"),
                "{text}"
            );
        }
        let found = list(&conn, &by_correlation)?;
        assert_eq!(found.jobs.len(), 1);
        assert_eq!(found.jobs[0].id, "job-00007");
        let live = live_services(&conn)?;
        let names: Vec<&str> = live.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["alpha", "beta", "gamma"]);
        Ok(())
    }
}
