//! The demo stops gracefully on SIGHUP (a closed terminal, or an operator's habit)
//! as on SIGTERM and Ctrl-C: its log says so and it exits 0. Before, SIGHUP
//! killed it at once (exit 129, no log line, a call in flight reset; found by a
//! probe).

#[path = "support/demo.rs"]
mod demo;

use demo::Demo;
use koan_test_support::TempDir;

#[test]
fn sighup_stops_the_demo_gracefully() -> anyhow::Result<()> {
    let dir = TempDir::new("signals-hup");
    let mut demo = Demo::start(dir.path(), "demo", &[], &[])?;
    let status = demo.stop_with("-HUP")?;
    assert!(status.success(), "a clean stop: {status}");
    let log = demo.log();
    assert!(log.contains("shutdown signal received"), "{log}");
    Ok(())
}
