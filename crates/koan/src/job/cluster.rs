//! Jobs kept by the transport's durable queue (the cluster's), seen beside the
//! host's own store: one listing, newest first, paged by id across both.

use super::record::{JobCounts, JobPage, JobState};

/// One page of `size` from two pages asked with the same query and cursor. A job
/// below the last one of a page that has more is left for the next page, so that
/// nothing of that source is skipped.
pub(crate) fn merge(a: JobPage, b: JobPage, size: usize) -> JobPage {
    // A page's cursor is the last id it looked at, whether or not the page kept
    // that record: a cluster page can drop records its view held in another
    // state (`record_outcome.rs`), and a page emptied so ended the listing (a
    // probe: `state=queued` answered no job and no cursor, live jobs hidden).
    let floor = [&a, &b]
        .into_iter()
        .filter_map(|p| p.next_cursor.clone())
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
    let next_cursor = if cut {
        jobs.last().map(|r| r.id.clone())
    } else if more {
        floor
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
    .stale(a.stale || b.stale)
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
    fn a_page_emptied_by_its_source_keeps_the_listing_going() {
        // The cluster's view looked at 20..11 and kept none of them (they ended);
        // the store has nothing. The listing goes on below 11.
        let emptied = JobPage {
            next_cursor: Some("11".into()),
            ..page(&[], false)
        };
        let m = merge(emptied, page(&[], false), 5);
        assert!(m.jobs.is_empty());
        assert_eq!(m.next_cursor.as_deref(), Some("11"));
        // Kept some above its cursor: they are shown, the cursor is its own.
        let thinned = JobPage {
            next_cursor: Some("11".into()),
            ..page(&["15"], false)
        };
        let m = merge(thinned, page(&["12", "03"], false), 5);
        assert_eq!(ids(&m), ["15", "12"], "03 waits for the page after 11");
        assert_eq!(m.next_cursor.as_deref(), Some("11"));
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
