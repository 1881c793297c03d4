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
}

impl JobsView {
    pub(crate) fn new(keep: Duration) -> JobsView {
        JobsView {
            keep,
            ..JobsView::default()
        }
    }

    fn put(&self, key: String, record: JobRecord) {
        if let Ok(mut m) = self.records.lock() {
            let now = Instant::now();
            m.insert(key, (record, now));
            let keep = self.keep;
            m.retain(|_, (_, at)| now.duration_since(*at) <= keep);
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
        JobPage { jobs, next_cursor }
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
