//! The jobs view's tests.

use super::*;

fn record(id: &str, service: &str) -> JobRecord {
    koan::testing::job_record(id, service)
}

fn view() -> Arc<JobsView> {
    Arc::new(JobsView::with(
        Duration::from_secs(60),
        Duration::from_secs(60),
        1000,
    ))
}

#[tokio::test(start_paused = true)]
async fn a_read_waits_for_the_view_to_catch_up_its_watch_begun_once() {
    let v = view();
    let begun = std::sync::atomic::AtomicU32::new(0);
    let t0 = tokio::time::Instant::now();
    // The watch reaches the bucket's last record a second after it begins.
    let begin = |view: Arc<JobsView>| {
        begun.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            view.caught_up.send_replace(true);
        });
    };
    assert!(v.ready_with(begin, true).await);
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    // Caught up: the next read neither waits nor begins another watch.
    assert!(v.ready_with(|_| panic!("a second watch"), true).await);
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    assert_eq!(begun.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_read_waiting_for_the_view_keeps_it_past_its_idle_time() {
    // Idle after a second, but its watch takes three to catch up.
    let v = Arc::new(JobsView::with(
        Duration::from_secs(60),
        Duration::from_secs(1),
        1000,
    ));
    let begin = |view: Arc<JobsView>| {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert!(!view.stop_if_idle(), "stopped under a waiting read");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            view.caught_up.send_replace(true);
        });
    };
    assert!(v.ready_with(begin, true).await);
    // Past the bound as well, it stops.
    tokio::time::sleep(CATCH_UP).await;
    assert!(v.stop_if_idle());
}

#[tokio::test(start_paused = true)]
async fn a_view_that_does_not_catch_up_is_answered_stale_after_its_bound() {
    let v = view();
    let t0 = tokio::time::Instant::now();
    assert!(!v.ready_with(|_| {}, true).await);
    assert_eq!(t0.elapsed(), CATCH_UP);
    // Disconnected: no wait at all.
    let t1 = tokio::time::Instant::now();
    assert!(!view().ready_with(|_| {}, false).await);
    assert_eq!(t1.elapsed(), Duration::ZERO);
}

#[test]
fn pages_go_newest_first_and_filters_hold() {
    let view = JobsView::with(Duration::from_secs(60), Duration::from_secs(60), 1000);
    for (id, service) in [("01", "A"), ("02", "B"), ("03", "A"), ("04", "A")] {
        view.put(id.to_owned(), record(id, service), 100);
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

#[test]
fn past_its_cap_the_view_forgets_successes_first_and_says_it_is_partial() {
    let view = JobsView::with(Duration::from_secs(60), Duration::from_secs(60), 8);
    let put = |id: &str, state: JobState| {
        let mut r = record(id, "A");
        r.state = state;
        view.put(id.to_owned(), r, 100);
    };
    // Two failures and three queued jobs, written first; then successes.
    for id in ["d1", "d2"] {
        put(id, JobState::Dead);
    }
    for id in ["q1", "q2", "q3"] {
        put(id, JobState::Queued);
    }
    assert!(!view.list(&JobQuery::default()).partial);
    for i in 0..20 {
        put(&format!("s{i:02}"), JobState::Succeeded);
    }
    // A quarter past the cap is the most it holds between trims.
    assert!(lock(&view.records).map.len() <= 10);
    let page = view.list(&JobQuery {
        limit: Some(100),
        ..JobQuery::default()
    });
    assert!(page.partial, "some records were left out");
    let held: Vec<String> = page.jobs.iter().map(|r| r.id.clone()).collect();
    // The failures and the queued jobs stay; the newest successes fill the rest.
    for id in ["d1", "d2", "q1", "q2", "q3", "s19"] {
        assert!(held.contains(&id.to_owned()), "{id} in {held:?}");
    }
    assert!(!held.contains(&"s00".to_owned()), "{held:?}");
    let counts = view.counts(None);
    assert!(counts.partial);
    assert_eq!(counts.get(JobState::Dead), 2);
    assert_eq!(counts.get(JobState::Queued), 3);
    // Past the cap with only unfinished jobs: the least recently written go.
    let view = JobsView::with(Duration::from_secs(60), Duration::from_secs(60), 4);
    for i in 0..6 {
        let id = format!("q{i}");
        view.put(id.clone(), record(&id, "A"), 100);
    }
    view.trim(&mut lock(&view.records), Instant::now());
    let mut held: Vec<String> = lock(&view.records).map.keys().cloned().collect();
    held.sort();
    assert_eq!(held, ["q2", "q3", "q4", "q5"]);
}

/// Past its bytes (records of large parameters, far under the count), the view
/// forgets as past its count, and its byte sum follows every write, overwrite and
/// removal.
#[test]
fn past_its_bytes_the_view_forgets_as_past_its_count() {
    let view = JobsView::with(Duration::from_secs(60), Duration::from_secs(60), 1000)
        .max_bytes(10 * 64_000);
    let put = |id: &str, state: JobState, size: usize| {
        let mut r = record(id, "A");
        r.state = state;
        view.put(id.to_owned(), r, size);
    };
    put("d1", JobState::Dead, 64_000);
    put("q1", JobState::Queued, 64_000);
    for i in 0..40 {
        put(&format!("s{i:02}"), JobState::Succeeded, 64_000);
    }
    // A quarter past the bytes is the most it holds between trims.
    let held = lock(&view.records).bytes;
    assert!(held <= 10 * 64_000 * 5 / 4, "{held} bytes held");
    assert!(lock(&view.records).map.len() <= 12);
    let page = view.list(&JobQuery {
        limit: Some(100),
        ..JobQuery::default()
    });
    assert!(page.partial, "some records were left out");
    let ids: Vec<&str> = page.jobs.iter().map(|r| r.id.as_str()).collect();
    for id in ["d1", "q1", "s39"] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    // Large jobs still to end push out each other, not the failure: a dead job is
    // never written again, a queued one is when it runs.
    for i in 0..20 {
        put(&format!("q{i:02}"), JobState::Queued, 64_000);
    }
    let held = lock(&view.records);
    assert!(held.map.contains_key("d1"), "the dead job stays");
    drop(held);
    // Overwritten and removed records leave the sum as the records held say.
    put("q1", JobState::Running, 10);
    view.remove("d1");
    let m = lock(&view.records);
    assert_eq!(
        m.bytes,
        m.map.values().map(|(_, _, size)| size).sum::<usize>()
    );
}

#[test]
fn pages_of_many_records_list_each_once_newest_first() {
    let view = JobsView::with(Duration::from_secs(60), Duration::from_secs(60), 1000);
    // 257 ids written in a scrambled order (7 is prime to 257): a page is
    // chosen from many more matches than it holds.
    let n = 257;
    for i in 0..n {
        let id = format!("{:04}", (i * 7) % n);
        view.put(id.clone(), record(&id, "A"), 100);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = view.list(&JobQuery {
            limit: Some(10),
            cursor: cursor.take(),
            ..JobQuery::default()
        });
        assert!(page.jobs.len() <= 10);
        seen.extend(page.jobs.iter().map(|r| r.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let newest_first: Vec<String> = (0..n).rev().map(|i| format!("{i:04}")).collect();
    assert_eq!(seen, newest_first);
}

#[test]
fn a_record_read_as_ended_replaces_only_the_one_it_was_read_from() {
    let v = view();
    *lock(&v.following) = Following {
        on: true,
        last_read: tokio::time::Instant::now(),
    };
    let was = record("a", "S");
    v.put("a".into(), was.clone(), 100);
    let mut ended = was.clone();
    ended.state = JobState::Succeeded;
    ended.result = Some(serde_json::Value::String("r".repeat(5_000)));
    v.put_read("a", &was, ended.clone());
    {
        let m = lock(&v.records);
        assert_eq!(m.map["a"].0.state, JobState::Succeeded);
        // Weighed with the result the outcome brought.
        assert!(m.bytes > 5_000, "{} bytes", m.bytes);
        assert_eq!(m.bytes, m.map["a"].2);
    }
    // A newer write heard meanwhile stands; a deleted one is not brought back.
    let mut newer = was.clone();
    newer.attempts = 2;
    v.put("a".into(), newer, 100);
    v.put_read("a", &was, ended.clone());
    assert_eq!(lock(&v.records).map["a"].0.attempts, 2);
    v.remove("a");
    v.put_read("a", &was, ended);
    assert!(!lock(&v.records).map.contains_key("a"));
}
