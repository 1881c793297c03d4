//! Side-by-side benchmarks of koan against raw tokio, ractor, kameo,
//! tokio-cron-scheduler, bare axum, raw async-nats and apalis (SQLite), and the
//! failover time of a cluster singleton against its lease (B10).
//!
//! ```text
//! cargo run -p koan-bench --release -- all          # every scenario
//! cargo run -p koan-bench --release -- B1 B4        # some
//! cargo run -p koan-bench -- --quick all            # smoke run (seconds)
//! cargo run -p koan-bench --release -- --json all   # machine-readable
//! KOAN_BENCH_METRICS=1 cargo run -p koan-bench --release -- B1 B3   # metrics on
//! KOAN_BENCH_PIN=1 cargo run -p koan-bench --release -- B6       # a core per worker
//! ```
//!
//! Every scenario runs koan and its baselines in this process, alternating rounds
//! after a warm-up round, and reports medians. Ratios are always koan ÷ baseline; the
//! `better` column says whether lower (latency, time, memory) or higher (throughput)
//! is better.

mod actions;
mod broker;
mod build_info;
mod common;
mod durable;
mod http;
mod jobs;
mod lateness;
mod nats;
mod poke;
mod scale;
mod singleton;

use std::io::Write;

use anyhow::anyhow;

use common::{Opts, Row};

const SCENARIOS: [&str; 10] = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10"];

const USAGE: &str = "usage: koan-bench [--quick] [--json] all | B1 … B10 …";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if common::metrics_on() && !koan_http::install_metrics() {
        return Err(anyhow!(
            "KOAN_BENCH_METRICS=1: another metrics recorder came first"
        ));
    }
    // The child process of B6 (one size, fresh memory).
    if args.first().map(String::as_str) == Some("__scale") {
        let mode = args
            .get(1)
            .ok_or_else(|| anyhow!("__scale needs a mode"))?
            .clone();
        let n: usize = args
            .get(2)
            .ok_or_else(|| anyhow!("__scale needs a count"))?
            .parse()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let r = rt.block_on(scale::child(&mode, n))?;
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    // The koan contender of B9 (fresh process, fresh file).
    if args.first().map(String::as_str) == Some("__jobs") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let r = rt.block_on(jobs::child(&args[1..]))?;
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }

    let mut opts = Opts { quick: false };
    let mut json = false;
    let mut which: Vec<&str> = Vec::new();
    for a in &args {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "all" => which.extend(SCENARIOS),
            other => match SCENARIOS.iter().find(|s| s.eq_ignore_ascii_case(other)) {
                Some(s) => which.push(s),
                None => return Err(anyhow!("unknown argument `{other}`\n{USAGE}")),
            },
        }
    }
    if which.is_empty() {
        return Err(anyhow!("no scenario given\n{USAGE}"));
    }
    // In number order (B10 after B9).
    which.sort_unstable_by_key(|s| s[1..].parse::<u32>().unwrap_or(0));
    which.dedup();

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(pin) = common::pinning() {
        rt.on_thread_start(pin);
    }
    let rt = rt.build()?;
    let (rows, failed) = rt.block_on(run(opts, &which, json));
    // Leftover tasks (scheduler loops of the peers) must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));

    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!();
        println!("{}\n", build_info::THIS);
        print!("{}", common::table(&rows));
    }
    if !failed.is_empty() {
        return Err(anyhow!("failed: {}", failed.join(", ")));
    }
    Ok(())
}

/// Runs the scenarios in `which`. One that fails is a row saying so, and the others
/// still run (a run of several minutes is not lost to one scenario's error); the
/// scenarios that failed are named in the second value.
async fn run(opts: Opts, which: &[&str], json: bool) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    let mut record = |name: &str, r: anyhow::Result<Vec<Row>>| match r {
        Ok(r) => {
            if !json {
                eprintln!("{} rows", r.len());
            }
            rows.extend(r);
        }
        Err(e) => {
            // After the progress line's name, or (JSON on stdout) on a line of its own.
            if json {
                eprintln!("{name} failed: {e:#}");
            } else {
                eprintln!("failed: {e:#}");
            }
            rows.push(failed_row(name, &e));
            failed.push(name.to_owned());
        }
    };
    let progress = |s: &str| {
        if !json {
            eprint!("{s} … ");
            let _ = std::io::stderr().flush();
        }
    };
    let actions: Vec<&str> = which
        .iter()
        .copied()
        .filter(|s| ["B1", "B2", "B3"].contains(s))
        .collect();
    if !actions.is_empty() {
        let name = actions.join("+");
        progress(&name);
        record(&name, actions::b1_b2_b3(opts, &actions).await);
    }
    for s in which {
        let r = match *s {
            "B4" => {
                progress("B4");
                poke::b4(opts).await
            }
            "B5" => {
                progress("B5");
                poke::b5(opts).await
            }
            "B6" => {
                progress("B6");
                scale::b6(opts).await
            }
            "B7" => {
                progress("B7");
                http::b7(opts).await
            }
            "B8" => {
                progress("B8");
                nats::b8(opts).await
            }
            "B9" => {
                progress("B9");
                jobs::b9(opts).await
            }
            "B10" => {
                progress("B10");
                singleton::b10(opts).await
            }
            _ => continue,
        };
        record(s, r);
    }
    (rows, failed)
}

/// The row of a scenario that failed: its error, cut to a line's length.
fn failed_row(name: &str, e: &anyhow::Error) -> Row {
    let mut why = format!("{e:#}");
    if why.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|&i| why.is_char_boundary(i))
            .unwrap_or(0);
        why.truncate(cut);
        why.push('…');
    }
    Row {
        koan: None,
        met: Some(false),
        ..Row::new(name, "failed", "", common::Better::Lower, 0.0)
    }
    .note(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed scenario is one line of the table, saying why, however long or
    /// many-lined its error.
    #[test]
    fn a_failed_scenario_is_one_row_naming_its_error() {
        let long = format!("broker gone | {}\nsecond line", "x".repeat(1_000));
        let e = anyhow!(long).context("B8 round trip");
        let table = common::table(&[failed_row("B8", &e)]);
        let line = table
            .lines()
            .find(|l| l.starts_with("| B8 "))
            .unwrap_or_default()
            .to_owned();
        assert!(
            line.contains("failed (B8 round trip: broker gone"),
            "{line}"
        );
        assert!(line.contains("NOT met"), "{line}");
        assert!(line.len() < 600, "{} bytes", line.len());
        // Seven cells: the error's own `|` and line break are gone.
        assert_eq!(line.matches('|').count(), 8, "{line}");
        assert_eq!(table.lines().filter(|l| l.starts_with("| B8 ")).count(), 1);
    }
}
