//! Latency percentiles and the end-of-run [`Report`].

use std::fmt;

use serde::Serialize;

/// The value at percentile `p` (0–100] of `sorted` by nearest rank: the
/// smallest sample such that at least `p`% of samples are at or below it.
/// `None` for no samples or a `p` outside (0, 100].
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    // Sample counts are far below 2^52, so the float rank is exact enough.
    let n = sorted.len() as f64;
    let rank = (p / 100.0 * n).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// End-to-end latency figures, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest delivery.
    pub max_us: u64,
}

impl Latency {
    /// Figures for these samples (sorted in place); `None` if empty.
    pub fn from_samples(samples: &mut [u64]) -> Option<Self> {
        samples.sort_unstable();
        Some(Self {
            p50_us: percentile(samples, 50.0)?,
            p99_us: percentile(samples, 99.0)?,
            max_us: *samples.last()?,
        })
    }
}

/// The report line's figures, in milliseconds.
impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.max_us)
        )
    }
}

/// `count` events over `secs` seconds; 0 when no time passed.
pub fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// What one run measured. Serialized as the `--json` line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `host:port` of the broker.
    pub broker: String,
    /// QoS of publishes and subscription.
    pub qos: u8,
    /// Publisher connections.
    pub publishers: u32,
    /// Messages per publisher.
    pub messages: u32,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Subscriber connections.
    pub subscribers: u32,
    /// Publishes completed: written to the socket (QoS 0) or PUBACKed
    /// (QoS 1).
    pub published: u64,
    /// Seconds from the start signal to the last publisher finishing (or to
    /// the stop, if some did not).
    pub publish_secs: f64,
    /// `published / publish_secs`.
    pub publish_rate: f64,
    /// publishers × messages × subscribers.
    pub expected: u64,
    /// Distinct messages received, summed over subscribers.
    pub delivered: u64,
    /// Messages received again (QoS 1 redelivery).
    pub duplicates: u64,
    /// Messages on `bench/#` that were not this run's.
    pub foreign: u64,
    /// Seconds from the start signal to the last delivery.
    pub deliver_secs: f64,
    /// `delivered / deliver_secs`.
    pub delivery_rate: f64,
    /// `delivered / expected`.
    pub delivery_ratio: f64,
    /// End-to-end latency, publish call to receipt; `None` if nothing
    /// arrived.
    pub latency: Option<Latency>,
    /// Whether the run hit `--timeout` before everything arrived.
    pub timed_out: bool,
    /// Connection errors during the measured phase.
    pub errors: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "broker {}  qos {}  {} publishers x {} messages x {} B  {} subscriber(s)",
            self.broker,
            self.qos,
            self.publishers,
            self.messages,
            self.payload_bytes,
            self.subscribers
        )?;
        writeln!(
            f,
            "published   {:>10}  in {:>8.3} s  {:>12.0} msg/s",
            self.published, self.publish_secs, self.publish_rate
        )?;
        writeln!(
            f,
            "delivered   {:>10}  in {:>8.3} s  {:>12.0} msg/s  ratio {:.4} ({} expected, {} duplicates)",
            self.delivered,
            self.deliver_secs,
            self.delivery_rate,
            self.delivery_ratio,
            self.expected,
            self.duplicates
        )?;
        match self.latency {
            Some(l) => writeln!(f, "latency     {l}")?,
            None => writeln!(f, "latency     n/a (nothing delivered)")?,
        }
        if self.foreign > 0 {
            writeln!(
                f,
                "foreign     {} messages on bench/# were not ours",
                self.foreign
            )?;
        }
        if self.timed_out {
            writeln!(f, "timed out before every message arrived")?;
        }
        for e in &self.errors {
            writeln!(f, "error       {e}")?;
        }
        Ok(())
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.5), Some(1));
        let v = [10, 20, 30, 40, 50];
        assert_eq!(percentile(&v, 50.0), Some(30));
        assert_eq!(percentile(&v, 99.0), Some(50));
        assert_eq!(percentile(&v, 20.0), Some(10));
        assert_eq!(percentile(&v, 21.0), Some(20));
    }

    #[test]
    fn one_sample_is_every_percentile() {
        for p in [0.1, 50.0, 99.0, 100.0] {
            assert_eq!(percentile(&[7], p), Some(7));
        }
    }

    #[test]
    fn no_samples_or_bad_percentile_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
        for p in [0.0, -1.0, 100.1, f64::NAN] {
            assert_eq!(percentile(&[1, 2, 3], p), None, "{p}");
        }
    }

    #[test]
    fn latency_sorts_its_samples() {
        let mut samples: Vec<u64> = (1..=1000).rev().collect();
        let l = Latency::from_samples(&mut samples).unwrap();
        assert_eq!(
            l,
            Latency {
                p50_us: 500,
                p99_us: 990,
                max_us: 1000
            }
        );
        assert_eq!(Latency::from_samples(&mut []), None);
    }

    #[test]
    fn rate_without_time_is_zero() {
        assert_eq!(rate(100, 0.0), 0.0);
        assert_eq!(rate(100, 2.0), 50.0);
    }

    #[test]
    fn report_renders_and_serializes() {
        let r = Report {
            broker: "127.0.0.1:18830".into(),
            qos: 1,
            publishers: 5,
            messages: 200,
            payload_bytes: 64,
            subscribers: 1,
            published: 1000,
            publish_secs: 0.5,
            publish_rate: 2000.0,
            expected: 1000,
            delivered: 1000,
            duplicates: 0,
            foreign: 0,
            deliver_secs: 0.6,
            delivery_rate: 1666.7,
            delivery_ratio: 1.0,
            latency: Some(Latency {
                p50_us: 1500,
                p99_us: 9000,
                max_us: 12000,
            }),
            timed_out: false,
            errors: vec![],
        };
        let text = r.to_string();
        assert!(
            text.contains("\nlatency     p50 1.500 ms  p99 9.000 ms  max 12.000 ms\n"),
            "{text}"
        );
        assert!(text.contains("ratio 1.0000"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["delivered"], 1000);
        assert_eq!(json["latency"]["p99_us"], 9000);
        assert_eq!(json["timed_out"], false);
    }
}
