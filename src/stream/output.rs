//! The consumer's output: one record per batch, as JSON Lines
//! (`stream.jsonl`) or as a human-readable text file (`stream.txt`, like the
//! reference's: the matrix, a mean/std table and the rate statistics).

use std::io::Write;

use serde::Serialize;

use super::StreamFormat;

/// A finished batch.
#[derive(Debug, Serialize)]
pub(crate) struct BatchRecord<'a> {
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
    /// Column means.
    pub(crate) mean: &'a [f64],
    /// Column (population) standard deviations.
    pub(crate) std: &'a [f64],
    /// Sliding-window rate mean, vectors/s (null while unknown).
    pub(crate) rate_mean: f64,
    /// Sliding-window rate standard deviation.
    pub(crate) rate_std: f64,
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
                "--- batch {}: sequence {}..={}, {} vectors ({} received, {} filled in, marked *) ---",
                r.batch,
                r.first_seq,
                r.last_seq,
                r.received + r.filled,
                r.received,
                r.filled
            );
            let _ = writeln!(buf, "{:>8} {:>12} {:>12}", "column", "mean", "std");
            for (c, (m, s)) in r.mean.iter().zip(r.std).enumerate() {
                let _ = writeln!(buf, "{:>8} {m:>12.6} {s:>12.6}", format!("c{c}"));
            }
            let _ = writeln!(
                buf,
                "rate: mean {:.3} vectors/s, std {:.3} (sliding window)\n",
                r.rate_mean, r.rate_std
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_line_is_one_object() {
        let mut b = Vec::new();
        let r = BatchRecord {
            batch: 2,
            first_seq: 200,
            last_seq: 299,
            received: 99,
            filled: 1,
            mean: &[0.5, -0.25],
            std: &[1.0, 2.0],
            rate_mean: f64::NAN,
            rate_std: 3.0,
        };
        batch_end(StreamFormat::Jsonl, &mut b, &r);
        let s = String::from_utf8(b).unwrap();
        assert_eq!(s.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["batch"], 2);
        assert_eq!(v["mean"][1], -0.25);
        assert!(v["rate_mean"].is_null());
    }

    #[test]
    fn text_has_matrix_and_table() {
        let mut b = Vec::new();
        batch_start(StreamFormat::Text, &mut b, 0, 0, 2);
        row(StreamFormat::Text, &mut b, 0, &[1.0, 2.0], false);
        row(StreamFormat::Text, &mut b, 1, &[1.5, 2.5], true);
        let r = BatchRecord {
            batch: 0,
            first_seq: 0,
            last_seq: 1,
            received: 1,
            filled: 1,
            mean: &[1.25, 2.25],
            std: &[0.25, 0.25],
            rate_mean: 1000.0,
            rate_std: 0.5,
        };
        batch_end(StreamFormat::Text, &mut b, &r);
        let s = String::from_utf8(b).unwrap();
        assert!(s.contains("=== batch 0"));
        assert!(s.contains("           1*"));
        assert!(s.contains("rate: mean 1000.000"));
    }
}
