//! The settings of a run: what `forkring run` was asked to do.
//!
//! They are recorded in the run's control segment (bincode, see
//! `supervisor/control.rs`) when the run is created. Roles read their job's
//! settings from there (one source of truth), and a supervisor that resumes a
//! run compares the recorded settings with its own command line and refuses
//! on any difference (`RunSettings::differences`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Number of distinct 24-bit colours: the largest image the job can paint.
pub const MAX_PIXELS: u64 = 1 << 24;

/// Image job settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSettings {
    /// Width in pixels (>= 1).
    pub width: u32,
    /// Height in pixels (>= 1); `width * height <= MAX_PIXELS`.
    pub height: u32,
    /// Seed of every random choice.
    pub seed: u64,
}

impl ImageSettings {
    /// Number of pixels, which is also the number of iterations.
    pub fn pixels(&self) -> u32 {
        // Validated at construction: width * height <= 2^24.
        (self.width as u64 * self.height as u64) as u32
    }
}

/// Distribution of the stream's vector components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Distribution {
    /// Standard normal (mean 0, standard deviation 1).
    Normal,
    /// Uniform on [0, 1).
    Uniform,
}

/// Output format of the stream consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum StreamFormat {
    /// `stream.jsonl`: one JSON object per batch.
    Jsonl,
    /// `stream.txt`: human-readable matrices and tables, like the reference.
    Text,
}

/// Producer rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Rate {
    /// Vectors per second on a drift-free schedule.
    Hz(f64),
    /// As fast as the consumer takes them.
    Max,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Hz(h) => write!(f, "{h} Hz"),
            Rate::Max => f.write_str("max"),
        }
    }
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        let hz: f64 = s.parse().map_err(|_| {
            format!("{s:?} is not a rate; give vectors per second (e.g. 1000) or `max`")
        })?;
        if !(hz.is_finite() && hz > 0.0 && hz <= 1e9) {
            return Err(format!(
                "rate {s} is out of range; give a positive number of vectors per second up to 1e9, or `max`"
            ));
        }
        Ok(Rate::Hz(hz))
    }
}

/// Dropout simulation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    /// Shortest time between drops, seconds (> 0).
    pub low: f64,
    /// Longest time between drops, seconds (>= low).
    pub high: f64,
    /// Consecutive vectors dropped each time (>= 1).
    pub burst: u32,
}

/// Stream job settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamSettings {
    /// Components per vector.
    pub dim: u32,
    /// Distribution of the components.
    pub distribution: Distribution,
    /// Production rate.
    pub rate: Rate,
    /// Stop after this many sequence numbers.
    pub count: Option<u64>,
    /// Dropout simulation, if enabled.
    pub noise: Option<Noise>,
    /// Vectors per analytics batch.
    pub batch: u32,
    /// Vectors in the sliding rate window.
    pub rate_window: u32,
    /// Seconds between rate log lines.
    pub rate_interval: f64,
    /// Output format.
    pub format: StreamFormat,
    /// Ring capacity in slots (a power of two).
    pub ring_slots: u32,
    /// Seed of the vector contents.
    pub seed: u64,
}

impl StreamSettings {
    /// Bytes per ring slot: 16-byte header (sequence, timestamp) + vector.
    pub fn slot_size(&self) -> u32 {
        16 + 4 * self.dim
    }
}

/// Everything recorded about a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// Output directory of the final handoff (absolute).
    pub out: PathBuf,
    /// The image job, if part of the run.
    pub image: Option<ImageSettings>,
    /// The stream job, if part of the run.
    pub stream: Option<StreamSettings>,
}

impl RunSettings {
    /// Human-readable differences between recorded settings (`self`) and
    /// requested ones, as `field: recorded X, requested Y`.
    pub fn differences(&self, requested: &RunSettings) -> Vec<String> {
        let mut d = Vec::new();
        let mut cmp = |field: &str, a: String, b: String| {
            if a != b {
                d.push(format!("{field}: recorded {a}, requested {b}"));
            }
        };
        cmp(
            "--out",
            self.out.display().to_string(),
            requested.out.display().to_string(),
        );
        cmp("jobs", self.jobs_label(), requested.jobs_label());
        if let (Some(a), Some(b)) = (&self.image, &requested.image) {
            cmp(
                "--size",
                format!("{}x{}", a.width, a.height),
                format!("{}x{}", b.width, b.height),
            );
            cmp("--seed (image)", a.seed.to_string(), b.seed.to_string());
        }
        if let (Some(a), Some(b)) = (&self.stream, &requested.stream) {
            cmp("--dim", a.dim.to_string(), b.dim.to_string());
            cmp(
                "--distribution",
                format!("{:?}", a.distribution),
                format!("{:?}", b.distribution),
            );
            cmp("--rate", a.rate.to_string(), b.rate.to_string());
            cmp(
                "--count",
                format!("{:?}", a.count),
                format!("{:?}", b.count),
            );
            cmp(
                "--noise",
                format!("{:?}", a.noise),
                format!("{:?}", b.noise),
            );
            cmp("--batch", a.batch.to_string(), b.batch.to_string());
            cmp(
                "--rate-window",
                a.rate_window.to_string(),
                b.rate_window.to_string(),
            );
            cmp(
                "--rate-interval",
                a.rate_interval.to_string(),
                b.rate_interval.to_string(),
            );
            cmp(
                "--format",
                format!("{:?}", a.format),
                format!("{:?}", b.format),
            );
            cmp(
                "--ring-slots",
                a.ring_slots.to_string(),
                b.ring_slots.to_string(),
            );
            cmp("--seed (stream)", a.seed.to_string(), b.seed.to_string());
        }
        d
    }

    /// "image", "stream" or "image,stream".
    pub fn jobs_label(&self) -> String {
        match (self.image.is_some(), self.stream.is_some()) {
            (true, true) => "image,stream".into(),
            (true, false) => "image".into(),
            (false, true) => "stream".into(),
            (false, false) => "none".into(),
        }
    }

    /// Checks every bound the command line enforces; settings decoded from a
    /// control segment are untrusted and go through this too.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(i) = &self.image {
            let px = i.width as u64 * i.height as u64;
            if i.width == 0 || i.height == 0 || px > MAX_PIXELS {
                return Err(format!(
                    "image size {}x{} is out of range",
                    i.width, i.height
                ));
            }
        }
        if let Some(s) = &self.stream {
            let bad = |what: &str| Err(format!("stream {what} is out of range"));
            if !(1..=65_536).contains(&s.dim) {
                return bad("dim");
            }
            if !(1..=1_000_000).contains(&s.batch) {
                return bad("batch");
            }
            if !(1..=100_000).contains(&s.rate_window) {
                return bad("rate_window");
            }
            if !s.ring_slots.is_power_of_two() || !(2..=1 << 24).contains(&s.ring_slots) {
                return bad("ring_slots");
            }
            if !(s.rate_interval.is_finite() && s.rate_interval > 0.0) {
                return bad("rate_interval");
            }
            if let Rate::Hz(h) = s.rate
                && !(h.is_finite() && h > 0.0 && h <= 1e9)
            {
                return bad("rate");
            }
            if s.count == Some(0) {
                return bad("count");
            }
            if let Some(n) = s.noise
                && !(n.low.is_finite()
                    && n.low > 0.0
                    && n.low <= n.high
                    && n.high.is_finite()
                    && n.burst >= 1)
            {
                return bad("noise");
            }
        }
        Ok(())
    }

    /// Encodes for the control segment.
    pub fn encode(&self) -> Result<Vec<u8>, bincode::error::EncodeError> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
    }

    /// Decodes bytes read from a control segment (untrusted: bounded by
    /// `limit`, every error reported, never a panic).
    pub fn decode(bytes: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        let cfg = bincode::config::standard().with_limit::<{ 64 * 1024 }>();
        let (s, _) = bincode::serde::decode_from_slice(bytes, cfg)?;
        Ok(s)
    }
}

/// Parses `--size`: `N` (square) or `WxH`, each at least 1, at most 2^24
/// pixels in all.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = match s.split_once(['x', 'X']) {
        Some((w, h)) => (w, h),
        None => (s, s),
    };
    let num = |t: &str, what: &str| -> Result<u32, String> {
        t.trim().parse::<u32>().map_err(|_| {
            format!("{what} {t:?} in size {s:?} is not a whole number; use N or WxH, e.g. 4096 or 640x480")
        })
    };
    let (w, h) = (num(w, "width")?, num(h, "height")?);
    if w == 0 || h == 0 {
        return Err(format!(
            "size {s:?} has no pixels; width and height must be at least 1"
        ));
    }
    let pixels = w as u64 * h as u64;
    if pixels > MAX_PIXELS {
        return Err(format!(
            "size {w}x{h} has {pixels} pixels, but there are only {MAX_PIXELS} distinct 24-bit colours and no colour may repeat; use at most 4096x4096 (or any WxH with W*H <= {MAX_PIXELS})"
        ));
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok((4096, 4096)));
        assert_eq!(parse_size("3x5"), Ok((3, 5)));
        assert_eq!(parse_size("1"), Ok((1, 1)));
        assert!(parse_size("0").unwrap_err().contains("at least 1"));
        assert!(
            parse_size("5000")
                .unwrap_err()
                .contains("distinct 24-bit colours")
        );
        assert!(
            parse_size("10x")
                .unwrap_err()
                .contains("not a whole number")
        );
        assert!(parse_size("x").is_err());
        assert!(parse_size("16777216x1").is_ok());
        assert!(parse_size("16777217x1").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("1000".parse::<Rate>(), Ok(Rate::Hz(1000.0)));
        assert!("0".parse::<Rate>().is_err());
        assert!("-3".parse::<Rate>().is_err());
        assert!("nan".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

    fn sample() -> RunSettings {
        RunSettings {
            out: "/tmp/x".into(),
            image: Some(ImageSettings {
                width: 4,
                height: 4,
                seed: 7,
            }),
            stream: None,
        }
    }

    #[test]
    fn encode_decode_and_compare() {
        let s = sample();
        let b = s.encode().unwrap();
        assert_eq!(RunSettings::decode(&b).unwrap(), s);
        assert!(RunSettings::decode(&b[..b.len() / 2]).is_err());
        assert!(RunSettings::decode(&[0xff; 64]).is_err());
        let mut t = s.clone();
        t.image.as_mut().unwrap().seed = 8;
        let d = s.differences(&t);
        assert_eq!(
            d,
            vec!["--seed (image): recorded 7, requested 8".to_string()]
        );
        assert!(s.differences(&s).is_empty());
    }
}
