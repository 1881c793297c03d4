//! A `metrics` recorder that keeps counters, for tests that assert what a host
//! counted: install it for a thread (`metrics::set_default_local_recorder`) or for
//! the process (`metrics::set_global_recorder`, once per test binary).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters by `name{label=value,…}` (labels sorted); gauges and histograms are
/// dropped.
#[derive(Debug, Default)]
pub struct Counters(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Counters {
    /// The value of counter `name` with exactly `labels` (0 if never counted).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let key = key_text(name, labels.iter().map(|(k, v)| (*k, *v)));
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&key).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// `name{k=v,…}`, the labels sorted.
fn key_text<'a>(name: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut labels: Vec<_> = labels.map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

impl metrics::Recorder for Counters {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let text = key_text(key.name(), key.labels().map(|l| (l.key(), l.value())));
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        metrics::Counter::from_arc(Arc::clone(map.entry(text).or_default()))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}
