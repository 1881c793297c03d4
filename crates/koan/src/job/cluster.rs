//! Jobs kept by the transport's durable queue (the cluster's), seen beside the
//! host's own store: one listing, newest first, paged by id across both.

use super::record::{JobCounts, JobPage, JobState};

/// One page of `size` from two pages asked with the same query and cursor. A job
/// below the last one of a page that has more is left for the next page, so that
/// nothing of that source is skipped.
pub(crate) fn merge(a: JobPage, b: JobPage, size: usize) -> JobPage {
    let floor = [&a, &b]
        .into_iter()
        .filter(|p| p.next_cursor.is_some())
        .filter_map(|p| p.jobs.last().map(|r| r.id.clone()))
        .max();
    let more = a.next_cursor.is_some() || b.next_cursor.is_some();
    let stale = a.stale || b.stale;
    let partial = a.partial || b.partial;
    let mut jobs: Vec<_> = a
        .jobs
        .into_iter()
        .chain(b.jobs)
        .filter(|r| floor.as_ref().is_none_or(|f| &r.id >= f))
        .collect();
    jobs.sort_by(|x, y| y.id.cmp(&x.id));
    jobs.dedup_by(|x, y| x.id == y.id);
    let cut = jobs.len() > size;
    jobs.truncate(size);
    let next_cursor = if cut || more {
        jobs.last().map(|r| r.id.clone())
    } else {
        None
    };
    JobPage {
        jobs,
        next_cursor,
        stale,
        partial,
    }
}

/// The sum of two counts.
pub(crate) fn add(a: &JobCounts, b: &JobCounts) -> JobCounts {
    JobCounts::new(
        JobState::ALL
            .into_iter()
            .map(|s| (s, a.get(s) + b.get(s)))
            .collect(),
    )
    .partial(a.partial || b.partial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobRecord;

    fn job(id: &str) -> JobRecord {
        crate::testing::job_record(id, "S")
    }

    fn page(ids: &[&str], more: bool) -> JobPage {
        JobPage {
            jobs: ids.iter().map(|i| job(i)).collect(),
            next_cursor: more.then(|| ids.last().map(|i| (*i).to_owned())).flatten(),
            stale: false,
            partial: false,
        }
    }

    fn ids(p: &JobPage) -> Vec<&str> {
        p.jobs.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn a_source_with_more_is_not_skipped() {
        // The store has 10, 9 and more below; the cluster only 5.
        let m = merge(page(&["10", "09"], true), page(&["05"], false), 2);
        assert_eq!(ids(&m), ["10", "09"]);
        assert_eq!(m.next_cursor.as_deref(), Some("09"));
        let m = merge(page(&["10", "09"], true), page(&["05"], false), 3);
        assert_eq!(ids(&m), ["10", "09"], "05 waits for the page after 09");
        assert_eq!(m.next_cursor.as_deref(), Some("09"));
    }

    #[test]
    fn two_short_pages_interleave_and_end() {
        let m = merge(page(&["08", "04"], false), page(&["06", "02"], false), 10);
        assert_eq!(ids(&m), ["08", "06", "04", "02"]);
        assert_eq!(m.next_cursor, None);
        let m = merge(page(&["08", "04"], false), page(&["06", "02"], false), 3);
        assert_eq!(ids(&m), ["08", "06", "04"]);
        assert_eq!(m.next_cursor.as_deref(), Some("04"));
    }
}
