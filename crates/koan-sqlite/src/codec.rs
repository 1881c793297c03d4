//! Rows and records: the one place that turns a [`JobRecord`] into a `jobs` row and
//! back, so the indexed columns never drift from the JSON.

use chrono::{DateTime, Utc};
use koan::{job::JobRecord, job::JobState};
use rusqlite::{Connection, OptionalExtension, params};

use crate::fail::{Failure, ResultExt};

/// A time as stored: milliseconds since the Unix epoch (sub-millisecond parts are
/// kept in the record's JSON, not in the columns that are compared).
pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The inverse of [`millis`].
pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>, Failure> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| Failure::store("read a time", format!("{ms} ms is out of range")))
}

/// A weight or limit as SQLite stores integers.
pub(crate) fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The SQL list of states a worker may claim once due: `'scheduled', …`.
pub(crate) fn sql_states(states: impl IntoIterator<Item = JobState>) -> String {
    states
        .into_iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// States a worker may claim once due.
pub(crate) fn waiting_states() -> String {
    sql_states(JobState::ALL.into_iter().filter(|s| s.is_waiting()))
}

/// States nothing runs again unless retried by hand.
pub(crate) fn final_states() -> String {
    sql_states(JobState::ALL.into_iter().filter(|s| s.is_final()))
}

/// A record from its stored JSON.
pub(crate) fn decode(json: &str) -> Result<JobRecord, Failure> {
    serde_json::from_str(json).doing("read a job record")
}

/// A stored job: its record and the token of its current claim.
pub(crate) type Row = (JobRecord, Option<String>);

/// The job with `id`, if stored.
pub(crate) fn load(conn: &Connection, id: &str) -> Result<Option<Row>, Failure> {
    let found: Option<(String, Option<String>)> = conn
        .prepare_cached("SELECT record, claim_token FROM jobs WHERE id = ?1")
        .and_then(|mut st| {
            st.query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .doing(&format!("read job `{id}`"))?;
    found
        .map(|(json, token)| Ok((decode(&json)?, token)))
        .transpose()
}

/// Stores a new job. `false` (and nothing written) when a job with the same id or
/// idempotency key is already stored.
pub(crate) fn insert(conn: &Connection, r: &JobRecord) -> Result<bool, Failure> {
    let doing = format!("store job `{}`", r.id);
    let json = serde_json::to_string(r).doing(&doing)?;
    let changed = conn
        .prepare_cached(
            "INSERT INTO jobs (id, service, action, state, priority, run_at, lease_until,
                finished_at, idempotency_key, claim_token, weight, created_at, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10, ?11, ?12)
             ON CONFLICT DO NOTHING",
        )
        .and_then(|mut st| {
            st.execute(params![
                r.id,
                r.service,
                r.action,
                r.state.as_str(),
                r.priority,
                millis(r.run_at),
                r.lease_until.map(millis),
                r.finished_at.map(millis),
                r.idempotency_key,
                int(r.weight() as u64),
                millis(r.created_at),
                json,
            ])
        })
        .doing(&doing)?;
    Ok(changed == 1)
}

/// Writes a changed record back, with the token of its current claim (`None`: not
/// claimed).
pub(crate) fn save(conn: &Connection, r: &JobRecord, token: Option<&str>) -> Result<(), Failure> {
    let doing = format!("update job `{}`", r.id);
    let json = serde_json::to_string(r).doing(&doing)?;
    conn.prepare_cached(
        "UPDATE jobs SET state = ?2, priority = ?3, run_at = ?4, lease_until = ?5,
            finished_at = ?6, claim_token = ?7, weight = ?8, record = ?9
         WHERE id = ?1",
    )
    .and_then(|mut st| {
        st.execute(params![
            r.id,
            r.state.as_str(),
            r.priority,
            millis(r.run_at),
            r.lease_until.map(millis),
            r.finished_at.map(millis),
            token,
            int(r.weight() as u64),
            json,
        ])
    })
    .doing(&doing)?;
    Ok(())
}

/// Forgets the job with `id`.
pub(crate) fn remove(conn: &Connection, id: &str) -> Result<(), Failure> {
    conn.prepare_cached("DELETE FROM jobs WHERE id = ?1")
        .and_then(|mut st| st.execute([id]))
        .doing(&format!("delete job `{id}`"))?;
    Ok(())
}
