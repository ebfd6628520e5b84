//! Relay pipelines: a numeric array split into chunks, each chunk sent
//! through a pipeline of stages by a worker, the chunk results reassembled
//! in order by the client.
//!
//! `--pipeline STAGES` is a comma-separated list of stages:
//! - element-wise: `square`, `scale:K` (times K), `add:K` (plus K), `abs`,
//!   `sqrt` (of the absolute value);
//! - a reduction, only as the last stage: `sum`, `min`, `max`.
//!
//! The array holds `--elements N` f64 values: uniform on [0, 1) from the
//! seed, or read from `--data FILE` (numbers separated by white space).
//! Chunks of `--chunk C` elements are tasks; a worker reads its chunk from
//! the run's `relay` segment and writes the element-wise results back there
//! (idempotent: a chunk run twice writes the same values). A reduction's
//! chunk result is its reply, and the client combines them in chunk order.
//! The handoff checks the result against a single-process computation.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::job::JobError;

use super::settings::FileRef;

/// A pipeline stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) enum Stage {
    /// x².
    Square,
    /// x·K.
    Scale(f64),
    /// x + K.
    Add(f64),
    /// |x|.
    Abs,
    /// √|x|.
    Sqrt,
    /// Σ (a reduction).
    Sum,
    /// min (a reduction).
    Min,
    /// max (a reduction).
    Max,
}

impl Stage {
    fn parse(s: &str) -> Result<Stage, String> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (s.trim(), None),
        };
        let k = |what: &str| -> Result<f64, String> {
            let a = arg.ok_or_else(|| format!("stage {what} needs a number: {what}:K"))?;
            let v: f64 = a
                .parse()
                .map_err(|_| format!("stage {what}:{a}: {a:?} is not a number"))?;
            if !(v.is_finite() && v.abs() <= 1e12) {
                return Err(format!(
                    "stage {what}:{a}: give a finite number up to 1e12 in size"
                ));
            }
            Ok(v)
        };
        let plain = |st: Stage| match arg {
            None => Ok(st),
            Some(a) => Err(format!("stage {name} takes no argument, found :{a}")),
        };
        match name {
            "square" => plain(Stage::Square),
            "abs" => plain(Stage::Abs),
            "sqrt" => plain(Stage::Sqrt),
            "sum" => plain(Stage::Sum),
            "min" => plain(Stage::Min),
            "max" => plain(Stage::Max),
            "scale" => Ok(Stage::Scale(k("scale")?)),
            "add" => Ok(Stage::Add(k("add")?)),
            _ => Err(format!(
                "unknown stage {name:?}; use square, scale:K, add:K, abs, sqrt, and last sum, min or max"
            )),
        }
    }

    fn is_reduction(self) -> bool {
        matches!(self, Stage::Sum | Stage::Min | Stage::Max)
    }

    fn text(self) -> String {
        match self {
            Stage::Square => "square".into(),
            Stage::Scale(k) => format!("scale:{k}"),
            Stage::Add(k) => format!("add:{k}"),
            Stage::Abs => "abs".into(),
            Stage::Sqrt => "sqrt".into(),
            Stage::Sum => "sum".into(),
            Stage::Min => "min".into(),
            Stage::Max => "max".into(),
        }
    }

    #[inline]
    fn apply(self, x: f64) -> f64 {
        match self {
            Stage::Square => x * x,
            Stage::Scale(k) => x * k,
            Stage::Add(k) => x + k,
            Stage::Abs => x.abs(),
            Stage::Sqrt => x.abs().sqrt(),
            Stage::Sum | Stage::Min | Stage::Max => x,
        }
    }
}

/// Largest `--elements`.
pub(crate) const MAX_ELEMENTS: u64 = 100_000_000;
/// Largest `--chunk`.
pub(crate) const MAX_CHUNK: u32 = 10_000_000;

/// A relay pipeline's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Relay {
    /// The stages, in order; a reduction only last.
    pub(crate) stages: Vec<Stage>,
    /// Elements of the array.
    pub(crate) elements: u64,
    /// Elements per chunk.
    pub(crate) chunk: u32,
    /// The data file, if the array is read rather than generated.
    pub(crate) data: Option<FileRef>,
}

impl Relay {
    /// Checks the bounds.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.stages.is_empty() {
            return Err("--pipeline needs at least one stage".into());
        }
        if let Some(i) = self.stages.iter().position(|s| s.is_reduction())
            && i + 1 != self.stages.len()
        {
            return Err(format!(
                "--pipeline: the reduction {} must be the last stage",
                self.stages[i].text()
            ));
        }
        if !(1..=MAX_ELEMENTS).contains(&self.elements) {
            return Err(format!(
                "--elements {} is out of range; give 1 to {}",
                self.elements,
                crate::units::thousands(MAX_ELEMENTS)
            ));
        }
        if !(1..=MAX_CHUNK).contains(&self.chunk) {
            return Err(format!(
                "--chunk {} is out of range; give 1 to {}",
                self.chunk,
                crate::units::thousands(MAX_CHUNK.into())
            ));
        }
        Ok(())
    }

    /// Number of chunks.
    pub(crate) fn chunks(&self) -> u64 {
        self.elements.div_ceil(self.chunk as u64)
    }

    /// The reduction, if the pipeline ends with one.
    pub(crate) fn reduction(&self) -> Option<Stage> {
        self.stages.last().copied().filter(|s| s.is_reduction())
    }

    /// The stages as typed.
    pub(crate) fn describe(&self) -> String {
        self.stages
            .iter()
            .map(|s| s.text())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The settings for `summary.json`.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "stages": self.describe(),
            "elements": self.elements,
            "chunk": self.chunk,
            "chunks": self.chunks(),
            "data": self.data.as_ref().map(|d| json!({"path": d.path, "sha256": d.sha256})),
        })
    }

    /// Elements `start..start+len` through the pipeline: element-wise
    /// results in `out` (cleared first); a reduction's value returned.
    pub(crate) fn run_chunk(&self, input: &[f64], out: &mut Vec<f64>) -> Option<f64> {
        out.clear();
        out.extend(input.iter().map(|&x| {
            self.stages.iter().fold(
                x,
                |acc, s| if s.is_reduction() { acc } else { s.apply(acc) },
            )
        }));
        self.reduction().map(|r| reduce(r, out))
    }

    /// Combines chunk results in chunk order.
    pub(crate) fn combine(&self, parts: &[f64]) -> Option<f64> {
        self.reduction().map(|r| reduce(r, parts))
    }
}

fn reduce(r: Stage, xs: &[f64]) -> f64 {
    match r {
        Stage::Sum => xs.iter().sum(),
        Stage::Min => xs.iter().copied().fold(f64::INFINITY, f64::min),
        Stage::Max => xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        _ => unreachable!("only reductions reduce"),
    }
}

/// Element `i` of the generated array: uniform on [0, 1) from (seed, i).
pub(crate) fn generated(seed: u64, i: u64) -> f64 {
    let mut z = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Reads a data file: numbers separated by white space.
pub(crate) fn read_data(path: &std::path::Path) -> Result<Vec<f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for w in line.split_whitespace() {
            let x: f64 = w
                .parse()
                .map_err(|_| format!("{} line {}: {w:?} is not a number", path.display(), i + 1))?;
            if !x.is_finite() {
                return Err(format!(
                    "{} line {}: {w} is not a finite number",
                    path.display(),
                    i + 1
                ));
            }
            v.push(x);
            if v.len() as u64 > MAX_ELEMENTS {
                return Err(format!(
                    "{} holds more than {MAX_ELEMENTS} numbers",
                    path.display()
                ));
            }
        }
    }
    if v.is_empty() {
        return Err(format!("{} holds no number", path.display()));
    }
    Ok(v)
}

// (clap: no doc comment, which would become the help of `run`)
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct RelayOpts {
    /// Relay pipeline over a numeric array, instead of --tasks: stages
    /// square, scale:K, add:K, abs, sqrt, then optionally sum, min or max
    #[arg(long, value_name = "STAGES", help_heading = "Task pool job")]
    pub(crate) pipeline: Option<String>,
    /// Elements of the array, 1 to 100,000,000 [default: 500,000]
    #[arg(value_parser = crate::units::whole_u64::<{ 1 }, { MAX_ELEMENTS }>, long, value_name = "N", help_heading = "Task pool job")]
    pub(crate) elements: Option<u64>,
    /// Elements per chunk (one task each), 1 to 10,000,000 [default: 10,000]
    #[arg(value_parser = crate::units::whole_u32::<{ 1 }, { MAX_CHUNK }>, long, value_name = "C", help_heading = "Task pool job")]
    pub(crate) chunk: Option<u32>,
    /// Read the array from this file (numbers separated by white space)
    /// [default: generated from the seed]
    #[arg(long, value_name = "FILE", help_heading = "Task pool job")]
    pub(crate) data: Option<PathBuf>,
}

impl RelayOpts {
    /// The relay settings the options ask for, if any.
    pub(crate) fn settings(&self) -> Result<Option<Relay>, JobError> {
        let Some(p) = &self.pipeline else {
            if self.elements.is_some() || self.chunk.is_some() || self.data.is_some() {
                return Err(JobError::Usage(
                    "--elements/--chunk/--data only apply with --pipeline STAGES".into(),
                ));
            }
            return Ok(None);
        };
        let stages = p
            .split(',')
            .map(Stage::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| JobError::Usage(format!("--pipeline {p}: {e}")))?;
        let (elements, data) = match &self.data {
            Some(path) => {
                if self.elements.is_some() {
                    return Err(JobError::Usage(
                        "--elements and --data exclude each other: the file sets the count".into(),
                    ));
                }
                let v = read_data(path).map_err(JobError::Usage)?;
                let abs = std::fs::canonicalize(path)
                    .map_err(|e| JobError::Usage(format!("--data {}: {e}", path.display())))?;
                let sha256 = crate::outfile::sha256_file(&abs)
                    .map_err(|e| JobError::Usage(format!("--data {}: {e}", abs.display())))?;
                (v.len() as u64, Some(FileRef { path: abs, sha256 }))
            }
            None => (self.elements.unwrap_or(500_000), None),
        };
        let r = Relay {
            stages,
            elements,
            chunk: self.chunk.unwrap_or(10_000),
            data,
        };
        r.validate().map_err(JobError::Usage)?;
        Ok(Some(r))
    }
}

/// The single-process computation the pool's result is checked against,
/// with its time: (element-wise output, reduction, seconds).
pub(crate) fn single_process(r: &Relay, input: &[f64]) -> (Vec<f64>, Option<f64>, f64) {
    let t = std::time::Instant::now();
    let mut out = Vec::with_capacity(input.len());
    let mut parts = Vec::new();
    let mut buf = Vec::new();
    for chunk in input.chunks(r.chunk as usize) {
        let v = r.run_chunk(chunk, &mut buf);
        out.extend_from_slice(&buf);
        parts.extend(v);
    }
    let red = r.combine(&parts);
    (out, red, t.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(p: &str, n: u64, c: u32) -> Relay {
        RelayOpts {
            pipeline: Some(p.into()),
            elements: Some(n),
            chunk: Some(c),
            data: None,
        }
        .settings()
        .unwrap()
        .unwrap()
    }

    #[test]
    fn stages_parse_and_apply() {
        let r = relay("square,scale:2,add:1,sum", 10, 3);
        assert_eq!(r.chunks(), 4);
        let mut out = Vec::new();
        assert_eq!(r.run_chunk(&[1.0, 2.0], &mut out), Some(3.0 + 9.0));
        assert_eq!(out, vec![3.0, 9.0]);
        assert_eq!(r.combine(&[1.0, 2.5]), Some(3.5));
        assert!(Stage::parse("scale").is_err());
        assert!(Stage::parse("scale:inf").is_err());
        assert!(Stage::parse("square:3").is_err());
        assert!(Stage::parse("cube").is_err());
        let bad = RelayOpts {
            pipeline: Some("sum,square".into()),
            ..RelayOpts::default()
        }
        .settings()
        .unwrap_err();
        assert!(bad.to_string().contains("last stage"), "{bad}");
    }

    #[test]
    fn generated_data_is_uniform_and_reproducible() {
        let xs: Vec<f64> = (0..10_000).map(|i| generated(7, i)).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert_eq!(generated(7, 3), xs[3]);
        assert_ne!(generated(8, 3), xs[3]);
    }
}
