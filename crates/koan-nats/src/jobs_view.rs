//! This host's view of the cluster's job records: one watch of the `koan_jobs`
//! bucket keeps every record in memory, so `/api/jobs` on any instance lists the
//! jobs accepted by every instance, at once. The view follows the bucket a moment
//! behind; a single job is read from the bucket itself (`records::get`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use koan::job::{JobCounts, JobPage, JobQuery, JobRecord, JobState};

#[derive(Debug, Default)]
pub(crate) struct JobsView {
    /// By KV key: the record and when it was last written.
    records: Mutex<HashMap<String, (JobRecord, Instant)>>,
    /// The bucket's age limit: a record not written for this long is gone from it
    /// (without a delete marker), so from here too.
    keep: Duration,
    /// When records past `keep` were last forgotten.
    pruned: Mutex<Option<Instant>>,
}

/// How often records past their age are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

impl JobsView {
    pub(crate) fn new(keep: Duration) -> JobsView {
        JobsView {
            keep,
            ..JobsView::default()
        }
    }

    fn put(&self, key: String, record: JobRecord) {
        let now = Instant::now();
        if let Ok(mut m) = self.records.lock() {
            m.insert(key, (record, now));
            // Forgetting scans every record: once a second at most, not per write.
            let due = self
                .pruned
                .lock()
                .map(|mut at| {
                    let due = at.is_none_or(|t| now.duration_since(t) >= PRUNE_EVERY);
                    if due {
                        *at = Some(now);
                    }
                    due
                })
                .unwrap_or(false);
            if due {
                let keep = self.keep;
                m.retain(|_, (_, at)| now.duration_since(*at) <= keep);
            }
        }
    }

    fn remove(&self, key: &str) {
        if let Ok(mut m) = self.records.lock() {
            m.remove(key);
        }
    }

    /// A page, newest first (by id), older than the query's cursor.
    pub(crate) fn list(&self, query: &JobQuery) -> JobPage {
        let size = query.page_size();
        let mut jobs: Vec<JobRecord> = self
            .records
            .lock()
            .map(|m| {
                m.values()
                    .map(|(r, _)| r)
                    .filter(|r| query.cursor.as_ref().is_none_or(|c| &r.id < c))
                    .filter(|r| query.matches(r))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        jobs.sort_by(|a, b| b.id.cmp(&a.id));
        let next_cursor = if jobs.len() > size {
            jobs.truncate(size);
            jobs.last().map(|r| r.id.clone())
        } else {
            None
        };
        JobPage {
            jobs,
            next_cursor,
            stale: false,
        }
    }

    pub(crate) fn counts(&self, service: Option<&str>) -> JobCounts {
        let Ok(m) = self.records.lock() else {
            return JobCounts::default();
        };
        let by_state = JobState::ALL
            .into_iter()
            .map(|s| {
                let n = m
                    .values()
                    .filter(|(r, _)| r.state == s)
                    .filter(|(r, _)| {
                        service.is_none_or(|name| r.service.eq_ignore_ascii_case(name))
                    })
                    .count();
                (s, n as u64)
            })
            .collect();
        JobCounts::new(by_state)
    }
}

/// Follows the bucket for as long as the connection lives.
pub(crate) async fn follow(store: kv::Store, view: std::sync::Arc<JobsView>) {
    loop {
        if let Ok(mut watch) = store.watch_with_history(">").await {
            while let Some(Ok(entry)) = watch.next().await {
                match entry.operation {
                    kv::Operation::Put => match serde_json::from_slice::<JobRecord>(&entry.value) {
                        Ok(r) => view.put(entry.key, r),
                        Err(e) => {
                            tracing::warn!(key = %entry.key, error = %e, "unreadable job record in the cluster's bucket")
                        }
                    },
                    kv::Operation::Delete | kv::Operation::Purge => view.remove(&entry.key),
                }
            }
        }
        // The transport is gone: only this task still holds the view.
        if std::sync::Arc::strong_count(&view) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use koan::job::{JobStep, NewJob};

    fn record(id: &str, service: &str) -> JobRecord {
        let now = chrono::Utc::now();
        NewJob {
            id: id.to_owned(),
            service: service.to_owned(),
            steps: vec![JobStep {
                action: "a".into(),
                params: serde_json::Value::Null,
                timeout_ms: None,
            }],
            priority: 0,
            correlation_id: id.to_owned(),
            idempotency_key: None,
            created_at: now,
            run_at: now,
            max_attempts: 5,
        }
        .into_record()
    }

    #[test]
    fn pages_go_newest_first_and_filters_hold() {
        let view = JobsView::new(Duration::from_secs(60));
        for (id, service) in [("01", "A"), ("02", "B"), ("03", "A"), ("04", "A")] {
            view.put(id.to_owned(), record(id, service));
        }
        let ids = |p: &JobPage| p.jobs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let q = JobQuery {
            service: Some("A".into()),
            limit: Some(2),
            ..JobQuery::default()
        };
        let first = view.list(&q);
        assert_eq!(ids(&first), ["04", "03"]);
        let next = view.list(&JobQuery {
            cursor: first.next_cursor.clone(),
            ..q
        });
        assert_eq!(ids(&next), ["01"]);
        assert_eq!(next.next_cursor, None);
        assert_eq!(view.counts(Some("A")).get(JobState::Queued), 3);
        assert_eq!(view.counts(None).get(JobState::Queued), 4);
        view.remove("04");
        assert_eq!(view.counts(None).get(JobState::Queued), 3);
    }
}
