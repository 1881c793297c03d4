//! The registry view's tests: liveness windows, routes, the services seen and
//! their bounds.

use chrono::Utc;

use super::*;

fn instance(host_id: &str, age: Duration) -> Instance {
    Instance::new(host_id, Vec::new())
        .seen_at(Utc::now() - chrono::Duration::from_std(age).unwrap_or_default())
}

/// The actions of a service are every name its instances announced (a rolling
/// deploy adds one on one host first), and not known once an instance
/// announced none (a host older than the field).
#[test]
fn a_services_actions_are_the_union_of_its_announcements() {
    let view = RegistryView::new(Duration::from_secs(10));
    view.synced.store(true, Ordering::Release);
    let running = |id: &str, actions: Option<&[&str]>| {
        let mut i = instance(id, Duration::ZERO);
        i.services = vec![crate::routes::status(
            "Calc",
            koan::status::ServiceState::Running,
            (0, 0),
        )];
        if let Some(a) = actions {
            i.actions = [(
                "Calc".to_owned(),
                a.iter().map(|s| (*s).to_owned()).collect(),
            )]
            .into();
        }
        i
    };
    assert_eq!(view.actions_of("calc"), None, "never announced");
    view.put("a".into(), running("a", Some(&["add"])));
    view.put("b".into(), running("b", Some(&["add", "sub"])));
    assert_eq!(
        view.actions_of("CALC"),
        Some(vec!["add".into(), "sub".into()])
    );
    view.put("old".into(), running("old", None));
    assert_eq!(view.actions_of("calc"), None, "an old host's are not known");
}

#[test]
fn entries_of_hosts_gone_for_long_are_forgotten() {
    let view = RegistryView::new(Duration::from_secs(10));
    let serving = |id: &str, age| {
        let mut i = instance(id, age);
        i.services = vec![crate::routes::status(
            "Calc",
            koan::status::ServiceState::Running,
            (0, 0),
        )];
        i
    };
    // Killed processes: their keys aged out of the bucket without a delete.
    for n in 0..100 {
        let id = format!("dead-{n}");
        view.put(id.clone(), serving(&id, Duration::from_secs(60)));
    }
    view.put("recent".into(), serving("recent", Duration::from_secs(5)));
    view.put("live".into(), serving("live", Duration::ZERO));
    assert!(view.last_of("dead-0").is_none());
    assert!(view.last_of("recent").is_some(), "a host just gone is kept");
    assert_eq!(view.instances.lock().map(|m| m.len()).unwrap_or(0), 2);
    // Their routes go with them.
    assert_eq!(view.routes.lock().map(|r| r.len()).unwrap_or(0), 2);
}

#[test]
fn instances_heard_within_the_window_are_live_and_offline_it_ends_at_the_newest() {
    let view = RegistryView::new(Duration::from_secs(600));
    view.put("old".into(), instance("old", Duration::from_secs(120)));
    view.put("new".into(), instance("new", Duration::from_secs(100)));
    view.put("now".into(), instance("now", Duration::ZERO));
    let mut live = Vec::new();
    view.each_live(Duration::from_secs(110), |i| live.push(i.host_id.clone()));
    live.sort();
    assert_eq!(live, ["new", "now"]);
    let ids = |v: Vec<Instance>| v.into_iter().map(|i| i.host_id).collect::<Vec<_>>();
    assert_eq!(
        ids(view.instances(Duration::from_secs(130), true)),
        ["new", "now", "old"]
    );
    // Offline, age counts from the newest heartbeat heard ("new"'s once "now" is
    // gone): "old", 20 s before it, is out of a 10 s window.
    view.remove("now");
    let offline = view.instances(Duration::from_secs(10), false);
    assert!(offline.iter().all(|i| i.stale));
    assert_eq!(ids(offline), ["new"]);
    // A heartbeat from a clock ahead of this one counts as live, as heard
    // now: not for as long as it is ahead (a forged one an hour ahead stayed
    // live an hour after its key had gone).
    view.put(
        "ahead".into(),
        instance("ahead", Duration::ZERO).seen_at(Utc::now() + chrono::Duration::hours(1)),
    );
    let mut live = Vec::new();
    view.each_live(Duration::from_secs(1), |i| live.push(i.host_id.clone()));
    assert_eq!(live, ["ahead"]);
    let heard = view.instances.lock().expect("the view")["ahead"].at;
    assert!(
        heard <= view.clock.now(),
        "heard at {heard}, not in an hour"
    );
}

/// Liveness is read on the view's own clock, which a step of the wall clock
/// does not move: here the wall clock is an hour ahead of where the view's
/// clock began (as after a time sync stepped it forward), and an instance heard
/// now is live, one heard four seconds ago is not, and an entry the broker
/// stored a second ago (by the wall clock) was heard a second ago.
#[test]
fn liveness_does_not_follow_a_step_of_the_wall_clock() {
    let mut view = RegistryView::new(Duration::from_secs(600));
    view.clock.wall_ms = wall_ms() - 3_600_000;
    let now = view.clock.now();
    view.put_heard("now".into(), instance("now", Duration::ZERO), now);
    view.put_heard("gone".into(), instance("gone", Duration::ZERO), now - 4_000);
    let mut live = Vec::new();
    view.each_live(Duration::from_millis(1500), |i| {
        live.push(i.host_id.clone());
    });
    assert_eq!(live, ["now"]);
    let mut routed = 0;
    view.each_route(Duration::from_millis(1500), "Calc", |_| routed += 1);
    assert_eq!(routed, 0, "neither announced Calc");
    let stored = view.clock.heard_when_stored(wall_ms() - 1_000);
    let age = view.clock.now() - stored;
    assert!((1_000..3_600_000).contains(&age), "heard {age} ms ago");
    // What an operator reads is the wall clock's time of it.
    let seen_at = view.last_of("now").map(|i| i.seen_at.timestamp_millis());
    assert!(
        seen_at.is_some_and(|s| (wall_ms() - s).abs() < 3_600_000),
        "{seen_at:?}"
    );
}

#[test]
fn the_services_seen_are_bounded_in_number_and_name_length() {
    let view = RegistryView::new(Duration::from_secs(600));
    let many = |from: usize, to: usize| {
        let mut i = instance("forger", Duration::ZERO);
        i.services = (from..to)
            .map(|n| {
                crate::routes::status(
                    &format!("made-up-{n}"),
                    koan::status::ServiceState::Stopped,
                    (0, 0),
                )
            })
            .collect();
        i
    };
    view.put("a".into(), many(0, MAX_SEEN));
    view.put("b".into(), many(MAX_SEEN, MAX_SEEN + 5));
    let seen = view.seen.lock().expect("seen");
    // Full of names announced now: the new ones are not kept, none of the
    // live ones is pushed out.
    assert_eq!(seen.len(), MAX_SEEN);
    assert!(seen.contains_key("made-up-0"));
    assert!(!seen.contains_key(&format!("made-up-{MAX_SEEN}")));
    let kept = seen.len();
    drop(seen);
    let mut long = instance("long", Duration::ZERO);
    long.services = vec![crate::routes::status(
        &"n".repeat(MAX_NAME + 1),
        koan::status::ServiceState::Running,
        (0, 0),
    )];
    view.put("c".into(), long);
    assert_eq!(view.seen.lock().expect("seen").len(), kept);
    // Once the forged names are announced no more for the forget time, a new
    // name finds room.
    for (_, (last, _)) in view.seen.lock().expect("seen").iter_mut() {
        *last -= 601_000;
    }
    // (A second later: the view prunes at most once a second.)
    view.pruned_at.store(0, Ordering::Relaxed);
    view.put("d".into(), many(MAX_SEEN + 10, MAX_SEEN + 11));
    let seen = view.seen.lock().expect("seen");
    assert_eq!(seen.len(), 1);
    assert!(seen.contains_key(&format!("made-up-{}", MAX_SEEN + 10)));
}

#[test]
fn the_first_live_instance_of_a_service_by_id_keeps_its_jobs_records() {
    let view = RegistryView::new(Duration::from_secs(600));
    let running = |id: &str, service: &str, age| {
        let mut i = instance(id, age);
        i.services = vec![crate::routes::status(
            service,
            koan::status::ServiceState::Running,
            (0, 0),
        )];
        i
    };
    let window = Duration::from_secs(10);
    // None runs it yet: each keeps them (reads only, the writes are due-only
    // compare-and-sets).
    assert!(view.first_running(window, "Calc", "c"));
    view.put("k-a".into(), running("a", "Other", Duration::ZERO));
    view.put("k-b".into(), running("b", "Calc", Duration::ZERO));
    view.put("k-c".into(), running("c", "calc", Duration::ZERO));
    assert!(view.first_running(window, "Calc", "b"));
    assert!(!view.first_running(window, "Calc", "c"), "b comes first");
    // b went silent: c takes over.
    view.put("k-b".into(), running("b", "Calc", Duration::from_secs(60)));
    assert!(view.first_running(window, "Calc", "c"));
}

#[test]
fn the_first_live_host_by_id_keeps_the_records_of_services_none_runs() {
    let view = RegistryView::new(Duration::from_secs(600));
    let window = Duration::from_secs(10);
    assert_eq!(view.first_host(window, "b"), Some(HashSet::new()));
    let mut a = instance("a", Duration::from_secs(60));
    a.services = vec![crate::routes::status(
        "Gone",
        koan::status::ServiceState::Running,
        (0, 0),
    )];
    view.put("k-a".into(), a);
    let mut b = instance("b", Duration::ZERO);
    b.services = vec![crate::routes::status(
        "Calc Svc",
        koan::status::ServiceState::Running,
        (0, 0),
    )];
    view.put("k-b".into(), b);
    view.put("k-c".into(), instance("c", Duration::ZERO));
    // a went silent: b is first, and Gone is no live instance's.
    let running = view.first_host(window, "b");
    assert_eq!(
        running,
        Some(HashSet::from([crate::subjects::token("Calc Svc")]))
    );
    assert_eq!(view.first_host(window, "c"), None, "b comes first");
}

#[test]
fn the_routes_follow_each_announcement_and_withdrawal() {
    use koan::status::ServiceState;
    let status = |state| vec![crate::routes::status("Calc", state, (2, 1))];
    let routed = |view: &RegistryView| {
        let mut v = Vec::new();
        view.each_route(Duration::from_secs(60), "calc", |r| {
            v.push((r.host.to_string(), r.load));
        });
        v
    };
    let view = RegistryView::new(Duration::from_secs(600));
    let running = Instance::new("a", status(ServiceState::Running));
    view.put("k-a".into(), running);
    assert_eq!(routed(&view), [("a".to_owned(), 3)]);
    // Its host shutting down: it takes no new calls.
    let stopping = Instance::new("a", status(ServiceState::Stopping));
    assert_eq!(stopping.services[0].state, ServiceState::Stopping);
    view.put("k-a".into(), stopping);
    assert!(routed(&view).is_empty());
    view.put("k-a".into(), Instance::new("a", status(ServiceState::Idle)));
    assert_eq!(routed(&view).len(), 1);
    view.remove("k-a");
    assert!(routed(&view).is_empty());
    // Heard too long ago: not routed to.
    view.put("k-b".into(), instance("b", Duration::from_secs(120)));
    let mut old = instance("c", Duration::from_secs(120));
    old.services = status(ServiceState::Running);
    view.put("k-c".into(), old);
    assert!(routed(&view).is_empty());
}
