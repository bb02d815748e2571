//! Helpers that several crates' test suites share. Only ever a
//! `[dev-dependencies]` entry: nothing here runs in fleetmq itself.

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, Snapshotter};

/// Every metric `snapshotter` has seen, keyed `name{label=value,…}` (labels
/// in the order they were recorded): counters and gauges by value,
/// histograms by their number of samples.
pub fn metric_values(snapshotter: &Snapshotter) -> HashMap<String, f64> {
    let mut seen = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let k = key.key();
        let labels: Vec<String> = k
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let v = match value {
            DebugValue::Counter(c) => c as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(samples) => samples.len() as f64,
        };
        seen.insert(format!("{}{{{}}}", k.name(), labels.join(",")), v);
    }
    seen
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::DebuggingRecorder;

    use super::*;

    #[test]
    fn counters_gauges_and_histograms_by_name_and_labels() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("sent_total", "qos" => "1").increment(3);
            metrics::gauge!("sessions").set(2.0);
            metrics::histogram!("latency_seconds").record(0.1);
            metrics::histogram!("latency_seconds").record(0.2);
        });
        let seen = metric_values(&snapshotter);
        assert_eq!(seen.get("sent_total{qos=1}"), Some(&3.0));
        assert_eq!(seen.get("sessions{}"), Some(&2.0));
        assert_eq!(seen.get("latency_seconds{}"), Some(&2.0));
    }
}
