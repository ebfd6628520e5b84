//! The consumer's output: one record per batch, as JSON Lines
//! (`stream.jsonl`, schema in `docs/schemas.md`) or as a human-readable text
//! file (`stream.txt`: the matrix, a mean/std table and the rate figures).

use std::io::Write;

use serde::Serialize;

use super::StreamFormat;
use super::state::WindowStats;

/// `schema_version` of every `stream.jsonl` record.
pub(crate) const JSONL_SCHEMA_VERSION: u32 = 2;

/// The rate window's figures as written (null while unknown).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct WindowFigures {
    /// Received vectors in the window.
    pub(crate) window_vectors: u32,
    /// (n − 1) / (t_last − t_first), vectors per second.
    pub(crate) rate_hz: Option<f64>,
    /// Population standard deviation of the send intervals, µs.
    pub(crate) interval_std_us: Option<f64>,
    /// Largest lateness against the producer's schedule, µs.
    pub(crate) lateness_max_us: Option<f64>,
    /// 99th percentile (nearest rank) of the lateness, µs.
    pub(crate) lateness_p99_us: Option<f64>,
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl From<WindowStats> for WindowFigures {
    fn from(w: WindowStats) -> Self {
        WindowFigures {
            window_vectors: w.vectors,
            rate_hz: finite(w.rate_hz),
            interval_std_us: finite(w.interval_std_us),
            lateness_max_us: finite(w.lateness_max_us),
            lateness_p99_us: finite(w.lateness_p99_us),
        }
    }
}

/// The window's figures in one phrase: `rate 1000.0 Hz (window 100),
/// interval std 12.3 µs, lateness p99 40.1 µs, max 52.0 µs`.
pub(crate) fn window_text(w: &WindowFigures) -> String {
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut s = format!(
        "rate {} Hz (window {}), interval std {} µs",
        f(w.rate_hz),
        w.window_vectors,
        f(w.interval_std_us)
    );
    if w.lateness_max_us.is_some() {
        s += &format!(
            ", lateness p99 {} µs, max {} µs",
            f(w.lateness_p99_us),
            f(w.lateness_max_us)
        );
    }
    s
}

/// A finished batch.
#[derive(Debug, Serialize)]
pub(crate) struct BatchRecord<'a> {
    /// Version of this record's schema.
    pub(crate) schema_version: u32,
    /// Batch number, from 0.
    pub(crate) batch: u64,
    /// First sequence number.
    pub(crate) first_seq: u64,
    /// Last sequence number.
    pub(crate) last_seq: u64,
    /// Vectors received.
    pub(crate) received: u32,
    /// Vectors filled in.
    pub(crate) filled: u32,
    /// The filled-in sequence numbers as inclusive ranges.
    pub(crate) filled_seqs: &'a [[u64; 2]],
    /// Send time (CLOCK_MONOTONIC ns) of the last vector received up to the
    /// batch's end; null if none was received yet.
    pub(crate) sent_ns: Option<u64>,
    /// The same instant in UTC (RFC 3339, ms).
    pub(crate) time_utc: Option<String>,
    /// Column means.
    pub(crate) mean: &'a [f64],
    /// Column population standard deviations (divided by n).
    pub(crate) std: &'a [f64],
    /// The rate window at the batch's end.
    #[serde(flatten)]
    pub(crate) window: WindowFigures,
}

/// File name of the final output for a format.
pub(crate) fn file_name(f: StreamFormat) -> &'static str {
    match f {
        StreamFormat::Jsonl => "stream.jsonl",
        StreamFormat::Text => "stream.txt",
    }
}

/// Name of the working file in the output directory while the run lives.
pub(crate) const PARTIAL_NAME: &str = ".stream.partial";

/// Appends the opening of a batch (text format only).
pub(crate) fn batch_start(
    f: StreamFormat,
    buf: &mut Vec<u8>,
    batch: u64,
    first_seq: u64,
    dim: usize,
) {
    if f == StreamFormat::Text {
        let _ = writeln!(buf, "=== batch {batch}, from sequence {first_seq} ===");
        let _ = write!(buf, "{:>12} ", "seq");
        for c in 0..dim {
            let _ = write!(buf, " {:>9}", format!("c{c}"));
        }
        buf.push(b'\n');
    }
}

/// Appends one row of the matrix (text format only).
pub(crate) fn row(f: StreamFormat, buf: &mut Vec<u8>, seq: u64, v: &[f32], filled: bool) {
    if f == StreamFormat::Text {
        let _ = write!(buf, "{seq:>12}{}", if filled { "*" } else { " " });
        for x in v {
            let _ = write!(buf, " {x:>9.4}");
        }
        buf.push(b'\n');
    }
}

/// Appends a finished batch.
pub(crate) fn batch_end(f: StreamFormat, buf: &mut Vec<u8>, r: &BatchRecord<'_>) {
    match f {
        StreamFormat::Jsonl => {
            serde_json::to_writer(&mut *buf, r).expect("writing JSON to a Vec cannot fail");
            buf.push(b'\n');
        }
        StreamFormat::Text => {
            let _ = writeln!(
                buf,
                "--- batch {}: sequences {} to {}, {} vectors ({} received, {} filled in, marked *) ---",
                r.batch,
                r.first_seq,
                r.last_seq,
                r.received + r.filled,
                r.received,
                r.filled
            );
            // Population standard deviation (divided by n), as in stream.jsonl.
            let _ = writeln!(buf, "{:>8} {:>12} {:>12}", "column", "mean", "std (pop.)");
            for (c, (m, s)) in r.mean.iter().zip(r.std).enumerate() {
                let _ = writeln!(buf, "{:>8} {m:>12.6} {s:>12.6}", format!("c{c}"));
            }
            let ranges: Vec<String> = r
                .filled_seqs
                .iter()
                .map(|[a, b]| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            if !ranges.is_empty() {
                let _ = writeln!(buf, "filled in: {}", ranges.join(", "));
            }
            let _ = writeln!(
                buf,
                "{}; last vector sent {}\n",
                window_text(&r.window),
                r.time_utc.as_deref().unwrap_or("-")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(rate: f64) -> WindowFigures {
        WindowStats {
            vectors: 100,
            rate_hz: rate,
            interval_std_us: 3.0,
            lateness_max_us: f64::NAN,
            lateness_p99_us: f64::NAN,
        }
        .into()
    }

    #[test]
    fn jsonl_line_is_one_object() {
        let mut b = Vec::new();
        let r = BatchRecord {
            schema_version: JSONL_SCHEMA_VERSION,
            batch: 2,
            first_seq: 200,
            last_seq: 299,
            received: 99,
            filled: 1,
            filled_seqs: &[[250, 250]],
            sent_ns: Some(5),
            time_utc: Some("2026-12-02T07:04:41.123Z".into()),
            mean: &[0.5, -0.25],
            std: &[1.0, 2.0],
            window: window(f64::NAN),
        };
        batch_end(StreamFormat::Jsonl, &mut b, &r);
        let s = String::from_utf8(b).unwrap();
        assert_eq!(s.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["schema_version"], JSONL_SCHEMA_VERSION);
        assert_eq!(v["batch"], 2);
        assert_eq!(v["mean"][1], -0.25);
        assert_eq!(v["filled_seqs"], serde_json::json!([[250, 250]]));
        assert!(v["rate_hz"].is_null());
        assert_eq!(v["interval_std_us"], 3.0);
        assert_eq!(v["window_vectors"], 100);
    }

    #[test]
    fn text_has_matrix_and_table() {
        let mut b = Vec::new();
        batch_start(StreamFormat::Text, &mut b, 0, 0, 2);
        row(StreamFormat::Text, &mut b, 0, &[1.0, 2.0], false);
        row(StreamFormat::Text, &mut b, 1, &[1.5, 2.5], true);
        let r = BatchRecord {
            schema_version: JSONL_SCHEMA_VERSION,
            batch: 0,
            first_seq: 0,
            last_seq: 1,
            received: 1,
            filled: 1,
            filled_seqs: &[[1, 1]],
            sent_ns: None,
            time_utc: None,
            mean: &[1.25, 2.25],
            std: &[0.25, 0.25],
            window: window(1000.0),
        };
        batch_end(StreamFormat::Text, &mut b, &r);
        let s = String::from_utf8(b).unwrap();
        assert!(s.contains("=== batch 0"));
        assert!(s.contains("           1*"));
        assert!(s.contains("filled in: 1\n"), "{s}");
        assert!(
            s.contains("rate 1000.0 Hz (window 100), interval std 3.0 µs"),
            "{s}"
        );
    }
}
