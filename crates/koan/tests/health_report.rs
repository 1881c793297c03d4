//! Health reports as values: their constructors, the figures a service attaches, the
//! order of statuses and their IETF names, and their JSON.

use koan::{health::HealthReport, health::HealthStatus};
use serde_json::json;

#[test]
fn constructors_set_the_status_and_an_empty_description_is_none() {
    let cases = [
        (HealthReport::healthy("fine"), HealthStatus::Healthy),
        (HealthReport::degraded("slow"), HealthStatus::Degraded),
        (HealthReport::unhealthy("down"), HealthStatus::Unhealthy),
    ];
    for (report, status) in cases {
        assert_eq!(report.status, status);
        assert!(report.description.is_some(), "{report:?}");
        assert_eq!(report.error, None);
        assert!(report.data.is_empty());
    }
    let quiet = HealthReport::degraded("");
    assert_eq!(quiet.description, None, "an empty description is left out");
    assert_eq!(HealthReport::default(), HealthReport::healthy(""));
}

#[test]
fn with_data_adds_figures_and_keeps_the_verdict() {
    let report = HealthReport::unhealthy("queue stuck")
        .with_error("broker unreachable")
        .with_data("queue_length", 1200)
        .with_data("lag_seconds", 4.5)
        .with_data("queue_length", 1300);
    assert_eq!(report.status, HealthStatus::Unhealthy, "{report:?}");
    assert_eq!(report.description.as_deref(), Some("queue stuck"));
    assert_eq!(report.error.as_deref(), Some("broker unreachable"));
    assert_eq!(report.data.len(), 2, "{report:?}");
    assert_eq!(
        report.data["queue_length"],
        json!(1300),
        "the last value wins"
    );
    assert_eq!(report.data["lag_seconds"], json!(4.5));

    let degraded = HealthReport::degraded("slow").with_data("p99_ms", 900);
    assert_eq!(degraded.status, HealthStatus::Degraded);
}

#[test]
fn statuses_map_to_pass_warn_fail_and_worst_picks_the_worse() {
    use HealthStatus::{Degraded, Healthy, Unhealthy};
    assert_eq!(Healthy.as_check_status(), "pass");
    assert_eq!(Degraded.as_check_status(), "warn");
    assert_eq!(Unhealthy.as_check_status(), "fail");

    let all = [Healthy, Degraded, Unhealthy];
    for (i, a) in all.iter().enumerate() {
        for (j, b) in all.iter().enumerate() {
            assert_eq!(a.worst(*b), all[i.max(j)], "{a:?}.worst({b:?})");
        }
    }
}

#[test]
fn a_report_serializes_without_its_empty_parts() -> serde_json::Result<()> {
    let bare = serde_json::to_value(HealthReport::healthy(""))?;
    assert_eq!(bare, json!({ "status": "healthy" }));

    let full = HealthReport::unhealthy("down")
        .with_error("no connection")
        .with_data("retries", 3);
    let value = serde_json::to_value(&full)?;
    assert_eq!(
        value,
        json!({
            "status": "unhealthy",
            "description": "down",
            "error": "no connection",
            "data": { "retries": 3 },
        })
    );
    let back: HealthReport = serde_json::from_value(value)?;
    assert_eq!(back, full);
    Ok(())
}
