//! Summary statistics of a set of round-trip times.

use std::time::Duration;

/// Mean, median and spread of a sample, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    /// The middle value (the mean of the two middle values for an even count).
    pub median: f64,
    pub min: f64,
    /// Nearest-rank 99th percentile.
    pub p99: f64,
    pub max: f64,
}

/// Summarises `samples`; `None` when there are none.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let n = us.len();
    let median = if n % 2 == 1 {
        us[n / 2]
    } else {
        (us[n / 2 - 1] + us[n / 2]) / 2.0
    };
    // Nearest rank: the smallest value with at least 99 % of the sample at
    // or below it (rank ceil(0.99 n), 1-based).
    let rank = (n * 99).div_ceil(100).max(1);
    Some(Summary {
        count: n,
        mean: us.iter().sum::<f64>() / n as f64,
        median,
        min: us[0],
        p99: us[rank - 1],
        max: us[n - 1],
    })
}

/// Bytes per second for `bytes` moved in `elapsed` (0 for no time at all).
pub fn rate(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { bytes as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&u| Duration::from_micros(u)).collect()
    }

    #[test]
    fn odd_and_even_samples() {
        let s = summarize(&us(&[30, 10, 20])).unwrap();
        assert_eq!(s.count, 3);
        assert_eq!(s.median, 20.0);
        assert_eq!(s.mean, 20.0);
        assert_eq!((s.min, s.max, s.p99), (10.0, 30.0, 30.0));
        let s = summarize(&us(&[40, 10, 20, 30])).unwrap();
        assert_eq!(s.median, 25.0);
        assert_eq!(s.mean, 25.0);
    }

    #[test]
    fn p99_is_nearest_rank() {
        // 1..=100: the 99th value is 99.
        let v: Vec<u64> = (1..=100).rev().collect();
        let s = summarize(&us(&v)).unwrap();
        assert_eq!(s.p99, 99.0);
        assert_eq!(s.median, 50.5);
        // 1..=200: rank 198.
        let v: Vec<u64> = (1..=200).collect();
        assert_eq!(summarize(&us(&v)).unwrap().p99, 198.0);
        // One sample: everything is that sample.
        let s = summarize(&us(&[7])).unwrap();
        assert_eq!(
            (s.mean, s.median, s.min, s.p99, s.max),
            (7.0, 7.0, 7.0, 7.0, 7.0)
        );
    }

    #[test]
    fn empty_and_sub_microsecond() {
        assert_eq!(summarize(&[]), None);
        let s = summarize(&[Duration::from_nanos(1500)]).unwrap();
        assert!((s.mean - 1.5).abs() < 1e-9);
    }

    #[test]
    fn rates() {
        assert_eq!(
            rate(1 << 20, Duration::from_millis(500)),
            2.0 * (1 << 20) as f64
        );
        assert_eq!(rate(5, Duration::ZERO), 0.0);
    }
}
