//! Numbers and tables: latency histograms (HDR, microseconds), the summary
//! of one run, medians over rounds, and plain-text table rendering.
//!
//! Everything here is pure and deterministic, so it is unit-tested below;
//! nothing here measures time itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram records, in microseconds (longer samples
/// are clamped): one minute is far past any request timeout.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// Significant decimal digits the histograms keep (0.1 % resolution).
const SIGNIFICANT_DIGITS: u8 = 3;

/// A new latency histogram (microseconds, 1 µs to [`MAX_LATENCY_US`]).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Records `d` in `h`, in microseconds (at least 1, at most the bound).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.clamp(1, MAX_LATENCY_US));
}

/// Latency percentiles of a histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub samples: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            samples: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// The result of one load run (one target, one level, one client count).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// Operations that succeeded in the measured window.
    pub ops: u64,
    /// Operations that failed in the measured window.
    pub errors: u64,
    /// Failures by kind (`timeout`, `unavailable`, `redis`, `io`, ...).
    pub error_kinds: BTreeMap<String, u64>,
    /// The first failure's message, to say what went wrong.
    pub first_error: Option<String>,
    /// Length of the measured window, in seconds.
    pub elapsed_s: f64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Latency of successful operations.
    pub latency: Latency,
    /// Log fsyncs the server did during the run (warm-up included), when
    /// known (an in-process node, or `--metrics` on a Meridian target).
    pub fsyncs: Option<u64>,
    /// Operations (warm-up included) per fsync, when `fsyncs` is known.
    pub ops_per_fsync: Option<f64>,
}

/// The median of `xs` (mean of the middle two for an even count); 0 for
/// none.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The smallest and largest of `xs` ((0, 0) for none).
pub fn min_max(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// `a / b`, or `None` when `b` is zero (no meaningful ratio).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0).then(|| a / b)
}

/// A rate for humans: `950`, `12.3k`, `1.25M` (per second implied).
pub fn fmt_rate(per_s: f64) -> String {
    if per_s >= 999_500.0 {
        format!("{:.2}M", per_s / 1e6)
    } else if per_s >= 9_995.0 {
        format!("{:.1}k", per_s / 1e3)
    } else if per_s >= 1_000.0 {
        format!("{:.2}k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}

/// Microseconds as milliseconds with enough digits: `0.412`, `12.3`, `1234`.
pub fn fmt_ms(us: f64) -> String {
    let ms = us / 1000.0;
    if ms < 10.0 {
        format!("{ms:.3}")
    } else if ms < 100.0 {
        format!("{ms:.2}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// A signed difference in milliseconds (`+1.20`, `-0.35`).
pub fn fmt_signed_ms(us: f64) -> String {
    format!("{:+.2}", us / 1000.0)
}

/// A ratio: `0.83×`, or `-` when there is none.
pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{r:.2}×"),
        None => "-".into(),
    }
}

/// A plain-text table: a header row and rows, columns padded to their
/// widest cell; numeric-looking columns are right-aligned.
#[derive(Clone, Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are an error of the
    /// caller (a bug).
    pub fn row(&mut self, cells: Vec<String>) {
        assert!(
            cells.len() <= self.headers.len(),
            "a row of {} cells in a table of {} columns",
            cells.len(),
            self.headers.len()
        );
        self.rows.push(cells);
    }

    /// The table as text, one line per row, no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        fn cell(row: &[String], i: usize) -> &str {
            row.get(i).map(String::as_str).unwrap_or("")
        }
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| cell(r, i).chars().count())
                .chain([self.headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        // A column is numeric if every non-empty cell starts with a digit,
        // a sign or a dash placeholder.
        let numeric: Vec<bool> = (0..columns)
            .map(|i| {
                self.rows.iter().all(|r| {
                    cell(r, i)
                        .chars()
                        .next()
                        .is_none_or(|c| c.is_ascii_digit() || c == '+' || c == '-')
                })
            })
            .collect();
        let mut out = String::new();
        let mut line = |cells: &dyn Fn(usize) -> String| {
            let mut text = String::new();
            for i in 0..columns {
                let c = cells(i);
                let pad = widths[i].saturating_sub(c.chars().count());
                if i > 0 {
                    text.push_str("  ");
                }
                if numeric[i] {
                    text.push_str(&" ".repeat(pad));
                    text.push_str(&c);
                } else {
                    text.push_str(&c);
                    text.push_str(&" ".repeat(pad));
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(&|i| self.headers[i].clone());
        for row in &self.rows {
            line(&|i| cell(row, i).to_owned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ranges() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(min_max(&[2.0, 9.0, -1.0]), (-1.0, 9.0));
        assert_eq!(min_max(&[]), (0.0, 0.0));
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
        assert_eq!(ratio(1.0, 0.0), None);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        record(&mut h, Duration::from_secs(3600)); // clamped, not dropped
        record(&mut h, Duration::ZERO); // counted as 1 µs
        let l = Latency::of(&h);
        assert_eq!(l.samples, 1002);
        assert!((499..=501).contains(&l.p50_us), "{l:?}");
        assert!((989..=992).contains(&l.p99_us), "{l:?}");
        assert!((999..=1001).contains(&l.p999_us), "{l:?}");
        assert!(l.max_us >= MAX_LATENCY_US - MAX_LATENCY_US / 500, "{l:?}");
        assert_eq!(Latency::of(&histogram()), Latency::default());
    }

    #[test]
    fn numbers_read_well() {
        let rates = [
            (0.4, "0"),
            (950.0, "950"),
            (1234.0, "1.23k"),
            (12_345.0, "12.3k"),
            (999_499.0, "999.5k"),
            (1_250_000.0, "1.25M"),
        ];
        for (x, s) in rates {
            assert_eq!(fmt_rate(x), s, "{x}");
        }
        let times = [
            (412.0, "0.412"),
            (12_345.0, "12.35"),
            (123_456.0, "123.5"),
            (1_234_567.0, "1235"),
        ];
        for (x, s) in times {
            assert_eq!(fmt_ms(x), s, "{x}");
        }
        assert_eq!(fmt_signed_ms(1200.0), "+1.20");
        assert_eq!(fmt_signed_ms(-350.0), "-0.35");
        assert_eq!(fmt_ratio(Some(0.8333)), "0.83×");
        assert_eq!(fmt_ratio(None), "-");
    }

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let mut t = Table::new(&["target", "ops/s", "note"]);
        t.row(vec!["redis".into(), "12.3k".into(), "ok".into()]);
        t.row(vec!["meridian".into(), "950".into()]);
        assert_eq!(
            t.render(),
            "target    ops/s  note\n\
             redis     12.3k  ok\n\
             meridian    950\n"
        );
    }

    #[test]
    fn run_stats_round_trip_through_json() {
        let s = RunStats {
            ops: 10,
            errors: 1,
            error_kinds: BTreeMap::from([("timeout".to_owned(), 1)]),
            first_error: Some("timed out".into()),
            elapsed_s: 1.5,
            throughput: 6.67,
            latency: Latency {
                samples: 10,
                mean_us: 12.5,
                p50_us: 10,
                p99_us: 20,
                p999_us: 20,
                max_us: 21,
            },
            fsyncs: Some(3),
            ops_per_fsync: Some(3.67),
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<RunStats>(&text).unwrap(), s);
    }
}
