//! The stream job's settings and its options of `forkring run`, `forkring
//! producer` and `forkring consumer`.
//!
//! Every bound is checked in one place, [`StreamSettings::validate`], for
//! the command line and for settings decoded from a control segment alike.

use clap::{ArgMatches, Args, FromArgMatches};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::job::{Common, Difference, Job, JobError, JobHost, JobSettings, Place, RoleKind};
use crate::shm::{Access, RunName};

use super::JOB;
use super::export::{ExportOpts, ExportSettings};
use super::host::StreamHost;

/// Distribution of the stream's vector components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Distribution {
    /// Standard normal (mean 0, standard deviation 1).
    Normal,
    /// Uniform on [0, 1).
    Uniform,
}

impl Distribution {
    fn name(self) -> &'static str {
        match self {
            Distribution::Normal => "normal",
            Distribution::Uniform => "uniform",
        }
    }
}

/// Output format of the stream consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum StreamFormat {
    /// `stream.jsonl`: one JSON object per batch.
    Jsonl,
    /// `stream.txt`: human-readable matrices and tables.
    Text,
}

impl StreamFormat {
    fn name(self) -> &'static str {
        match self {
            StreamFormat::Jsonl => "jsonl",
            StreamFormat::Text => "text",
        }
    }
}

/// Lowest `--rate`, vectors per second (one every 1000 s).
pub(crate) const MIN_RATE_HZ: f64 = 1e-3;
/// Highest `--rate`, vectors per second.
pub(crate) const MAX_RATE_HZ: f64 = 1e9;

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
            Rate::Hz(h) => write!(f, "{h}"),
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
        let hz: f64 = s.trim().parse().map_err(|_| {
            format!("{s:?} is not a rate; give vectors per second (e.g. 1000) or `max`")
        })?;
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
    /// Export to NATS JetStream (`--export`), with its `exporter` role.
    pub export: Option<ExportSettings>,
}

/// The ranges of the stream's options, checked by
/// [`StreamSettings::validate`] (documented in `--help` and the README).
pub(crate) mod bounds {
    /// `--dim`.
    pub(crate) const DIM: (u32, u32) = (1, 65_536);
    /// `--batch`.
    pub(crate) const BATCH: (u32, u32) = (1, 1_000_000);
    /// `--rate-window`.
    pub(crate) const RATE_WINDOW: (u32, u32) = (2, 100_000);
    /// `--noise-burst`.
    pub(crate) const NOISE_BURST: (u32, u32) = (1, 1_000_000);
    /// `--ring-slots` (powers of two).
    pub(crate) const RING_SLOTS: (u32, u32) = (2, 1 << 24);
    /// Seconds: `--rate-interval`, `--noise-low`, `--noise-high`.
    pub(crate) const SECONDS: (f64, f64) = (crate::units::MIN_SECONDS, crate::units::MAX_SECONDS);
}

impl StreamSettings {
    /// Bytes per ring slot: the header (sequence, send time, scheduled
    /// time), the vector, padding to a multiple of 8.
    pub fn slot_size(&self) -> u32 {
        (super::layout::SLOT_HEADER as u32 + 4 * self.dim).next_multiple_of(8)
    }

    /// Checks every bound; the message names the option.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let int = |opt: &str, v: u32, (lo, hi): (u32, u32)| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{opt} {v} is out of range; give {} to {}",
                    crate::units::thousands(lo.into()),
                    crate::units::thousands(hi.into())
                ))
            }
        };
        let secs = |opt: &str, v: f64| {
            let (lo, hi) = bounds::SECONDS;
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{opt} {v} is out of range; give {lo} to {hi:e} seconds"
                ))
            }
        };
        int("--dim", self.dim, bounds::DIM)?;
        int("--batch", self.batch, bounds::BATCH)?;
        int("--rate-window", self.rate_window, bounds::RATE_WINDOW)?;
        int("--ring-slots", self.ring_slots, bounds::RING_SLOTS)?;
        if !self.ring_slots.is_power_of_two() {
            return Err(format!(
                "--ring-slots {} is not a power of two; give one of 2, 4, 8, ... 16,777,216",
                self.ring_slots
            ));
        }
        secs("--rate-interval", self.rate_interval)?;
        if let Rate::Hz(h) = self.rate
            && !(h.is_finite() && (MIN_RATE_HZ..=MAX_RATE_HZ).contains(&h))
        {
            return Err(format!(
                "--rate {h} is out of range; give {MIN_RATE_HZ} to {MAX_RATE_HZ:e} vectors per second, or `max`"
            ));
        }
        if self.count == Some(0) {
            return Err("--count 0 would produce nothing; give at least 1".into());
        }
        if let Some(n) = self.noise {
            secs("--noise-low", n.low)?;
            secs("--noise-high", n.high)?;
            int("--noise-burst", n.burst, bounds::NOISE_BURST)?;
            if n.low > n.high {
                return Err(format!(
                    "--noise-low {} is above --noise-high {}; the interval between dropouts is drawn from [low, high]",
                    n.low, n.high
                ));
            }
        }
        if let Some(x) = &self.export {
            x.validate(self.dim)?;
        }
        Ok(())
    }
}

const HEADING: &str = "Stream job";

// (clap: no doc comment, which would become the help of the command it is added to)
// The shape of the stream's vectors (shared by producer and consumer).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct VectorOpts {
    /// Float32 values per vector, 1 to 65,536 [default: 50]
    #[arg(value_parser = crate::units::whole_u32::<{ bounds::DIM.0 }, { bounds::DIM.1 }>, long, help_heading = HEADING)]
    pub(crate) dim: Option<u32>,
}

// (clap: no doc comment, which would become the help of the command it is added to)
// Producer options.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ProducerOpts {
    /// Distribution of the values [default: normal]
    #[arg(long, value_enum, help_heading = HEADING)]
    pub(crate) distribution: Option<Distribution>,
    /// Vectors per second on a drift-free schedule, 0.001 to 1e9, or `max`
    /// [default: 1000]
    #[arg(long, value_name = "HZ|max", help_heading = HEADING)]
    pub(crate) rate: Option<Rate>,
    /// Stop after this many sequence numbers (dropped ones included)
    /// [default: no end]
    #[arg(value_parser = crate::units::whole_u64::<{ 0 }, { u64::MAX }>, long, value_name = "N", help_heading = HEADING)]
    pub(crate) count: Option<u64>,
    /// Simulate dropouts: drop --noise-burst vectors every X seconds, X
    /// uniform in [--noise-low, --noise-high]
    #[arg(long, help_heading = HEADING)]
    pub(crate) noise: bool,
    /// Shortest time between dropouts, seconds, 0.000001 to 1e9 [default: 2]
    #[arg(long, value_name = "SECS", value_parser = crate::units::parse_seconds_f64, help_heading = HEADING)]
    pub(crate) noise_low: Option<f64>,
    /// Longest time between dropouts, seconds, 0.000001 to 1e9 [default: 3]
    #[arg(long, value_name = "SECS", value_parser = crate::units::parse_seconds_f64, help_heading = HEADING)]
    pub(crate) noise_high: Option<f64>,
    /// Consecutive vectors dropped each time, 1 to 1,000,000 [default: 1]
    #[arg(value_parser = crate::units::whole_u32::<{ bounds::NOISE_BURST.0 }, { bounds::NOISE_BURST.1 }>, long, value_name = "N", help_heading = HEADING)]
    pub(crate) noise_burst: Option<u32>,
}

// (clap: no doc comment, which would become the help of the command it is added to)
// Consumer options.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ConsumerOpts {
    /// Vectors per statistics batch, filled-in ones included, 1 to 1,000,000
    /// [default: 100]
    #[arg(value_parser = crate::units::whole_u32::<{ bounds::BATCH.0 }, { bounds::BATCH.1 }>, long, value_name = "N", help_heading = HEADING)]
    pub(crate) batch: Option<u32>,
    /// Received vectors in the sliding rate window, 2 to 100,000 [default:
    /// 100]. Its figures (stream.jsonl, status): rate_hz = (n - 1) /
    /// (t_last - t_first), vectors/s; interval_std_us = population standard
    /// deviation of the send intervals, µs; lateness_p99_us, lateness_max_us
    /// = send time - scheduled time, 99th percentile (nearest rank) and
    /// maximum, µs
    #[arg(value_parser = crate::units::whole_u32::<{ bounds::RATE_WINDOW.0 }, { bounds::RATE_WINDOW.1 }>, long, value_name = "N", help_heading = HEADING)]
    pub(crate) rate_window: Option<u32>,
    /// Seconds between rate log lines, 0.000001 to 1e9 [default: 1]
    #[arg(long, value_name = "SECS", value_parser = crate::units::parse_seconds_f64, help_heading = HEADING)]
    pub(crate) rate_interval: Option<f64>,
    /// Output: stream.jsonl (one JSON object per batch) or stream.txt
    /// (matrices and tables) [default: jsonl]
    #[arg(long, value_enum, help_heading = HEADING)]
    pub(crate) format: Option<StreamFormat>,
}

// (clap: no doc comment, which would become the help of the command it is added to)
// Ring options.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct RingOpts {
    /// Ring capacity in slots, a power of two from 2 to 16,777,216 [default:
    /// 4,096]
    #[arg(value_parser = crate::units::whole_u32::<{ bounds::RING_SLOTS.0 }, { bounds::RING_SLOTS.1 }>, long, value_name = "N", help_heading = HEADING)]
    pub(crate) ring_slots: Option<u32>,
}

impl ProducerOpts {
    /// The noise settings, checked for options given without `--noise`.
    fn noise(&self) -> Result<Option<Noise>, String> {
        let detail =
            self.noise_low.is_some() || self.noise_high.is_some() || self.noise_burst.is_some();
        if detail && !self.noise {
            return Err(
                "--noise-low/--noise-high/--noise-burst only apply with --noise; add --noise to simulate dropouts"
                    .into(),
            );
        }
        Ok(self.noise.then_some(Noise {
            low: self.noise_low.unwrap_or(2.0),
            high: self.noise_high.unwrap_or(3.0),
            burst: self.noise_burst.unwrap_or(1),
        }))
    }
}

/// Adds the stream's options to `forkring run`.
pub(super) fn run_options(cmd: clap::Command) -> clap::Command {
    let cmd = VectorOpts::augment_args(cmd);
    let cmd = ProducerOpts::augment_args(cmd);
    let cmd = ConsumerOpts::augment_args(cmd);
    let cmd = RingOpts::augment_args(cmd);
    ExportOpts::augment_args(cmd)
}

/// The ids of every stream option of `forkring run`.
const OPTION_IDS: [&str; 13] = [
    "dim",
    "distribution",
    "rate",
    "count",
    "noise",
    "noise_low",
    "noise_high",
    "noise_burst",
    "batch",
    "rate_window",
    "rate_interval",
    "format",
    "ring_slots",
];

pub(super) fn options_given(m: &ArgMatches) -> Vec<String> {
    let mut v = crate::job::given(m, &OPTION_IDS);
    v.extend(crate::job::given(m, &super::export::OPTION_IDS));
    v
}

fn parse<T: FromArgMatches>(m: &ArgMatches) -> Result<T, JobError> {
    T::from_arg_matches(m).map_err(|e| JobError::Usage(e.to_string()))
}

pub(super) fn from_args(m: &ArgMatches, common: &Common) -> Result<StreamSettings, JobError> {
    let v: VectorOpts = parse(m)?;
    let p: ProducerOpts = parse(m)?;
    let c: ConsumerOpts = parse(m)?;
    let r: RingOpts = parse(m)?;
    let x: ExportOpts = parse(m)?;
    let dim = v.dim.unwrap_or(50);
    let s = StreamSettings {
        dim,
        distribution: p.distribution.unwrap_or(Distribution::Normal),
        rate: p.rate.unwrap_or(Rate::Hz(1000.0)),
        count: p.count,
        noise: p.noise().map_err(JobError::Usage)?,
        batch: c.batch.unwrap_or(100),
        rate_window: c.rate_window.unwrap_or(100),
        rate_interval: c.rate_interval.unwrap_or(1.0),
        format: c.format.unwrap_or(StreamFormat::Jsonl),
        ring_slots: r.ring_slots.unwrap_or(4096),
        seed: common.seed,
        export: x.settings(common.connect_timeout, dim)?,
    };
    s.validate().map_err(JobError::Usage)?;
    Ok(s)
}

/// Options given to a role started by hand must agree with the run it
/// joins: the run's recorded settings are the single source of truth.
fn check_role_options(
    role: &str,
    run: &RunName,
    given: &[Option<Difference>],
) -> Result<(), JobError> {
    for d in given.iter().flatten() {
        if d.requested.is_some() {
            return Err(JobError::Usage(format!(
                "{role} {} {} differs from run {run}, which has {} {}; a role takes its settings from the run it joins, so omit the option",
                d.option,
                d.requested.as_deref().unwrap_or(""),
                d.option,
                d.recorded.as_deref().unwrap_or("none"),
            )));
        }
    }
    Ok(())
}

/// Adds the producer's options (which must match the run's) to
/// `forkring producer`.
pub(super) fn producer_options(cmd: clap::Command) -> clap::Command {
    ProducerOpts::augment_args(VectorOpts::augment_args(cmd))
}

/// Adds the consumer's options to `forkring consumer`.
pub(super) fn consumer_options(cmd: clap::Command) -> clap::Command {
    ConsumerOpts::augment_args(VectorOpts::augment_args(cmd))
}

/// The run's stream settings, for a role's check.
fn stream_of(s: &dyn JobSettings) -> Result<&StreamSettings, JobError> {
    s.downcast::<StreamSettings>()
        .ok_or_else(|| JobError::Failed("a stream role was given another job's settings".into()))
}

/// Checks `forkring producer`'s options against the run's settings.
pub(super) fn check_producer(
    m: &ArgMatches,
    s: &dyn JobSettings,
    run: &RunName,
) -> Result<(), JobError> {
    let s = stream_of(s)?;
    let v: VectorOpts = parse(m)?;
    let p: ProducerOpts = parse(m)?;
    let noise = p.noise().map_err(JobError::Usage)?;
    let given = |opt: &str, rec: String, req: Option<String>| {
        req.and_then(|r| Difference::of(opt, Some(rec), Some(r)))
    };
    check_role_options(
        "producer",
        run,
        &[
            given("--dim", s.dim.to_string(), v.dim.map(|d| d.to_string())),
            given(
                "--distribution",
                s.distribution.name().into(),
                p.distribution.map(|d| d.name().to_string()),
            ),
            given("--rate", s.rate.to_string(), p.rate.map(|r| r.to_string())),
            given(
                "--count",
                s.count.map_or("none".into(), |c| c.to_string()),
                p.count.map(|c| c.to_string()),
            ),
            given(
                "--noise",
                noise_text(s.noise),
                p.noise.then(|| noise_text(noise)),
            ),
        ],
    )
}

/// Checks `forkring consumer`'s options against the run's settings.
pub(super) fn check_consumer(
    m: &ArgMatches,
    s: &dyn JobSettings,
    run: &RunName,
) -> Result<(), JobError> {
    let s = stream_of(s)?;
    let v: VectorOpts = parse(m)?;
    let c: ConsumerOpts = parse(m)?;
    let given = |opt: &str, rec: String, req: Option<String>| {
        req.and_then(|r| Difference::of(opt, Some(rec), Some(r)))
    };
    check_role_options(
        "consumer",
        run,
        &[
            given("--dim", s.dim.to_string(), v.dim.map(|d| d.to_string())),
            given(
                "--batch",
                s.batch.to_string(),
                c.batch.map(|b| b.to_string()),
            ),
            given(
                "--rate-window",
                s.rate_window.to_string(),
                c.rate_window.map(|w| w.to_string()),
            ),
            given(
                "--rate-interval",
                s.rate_interval.to_string(),
                c.rate_interval.map(|i| i.to_string()),
            ),
            given(
                "--format",
                s.format.name().into(),
                c.format.map(|f| f.name().to_string()),
            ),
        ],
    )
}

fn noise_text(n: Option<Noise>) -> String {
    match n {
        None => "off".into(),
        Some(n) => format!(
            "on (--noise-low {} --noise-high {} --noise-burst {})",
            n.low, n.high, n.burst
        ),
    }
}

pub(super) fn decode(bytes: &[u8]) -> Result<Box<dyn JobSettings>, String> {
    let s: StreamSettings = crate::job::decode_bincode(bytes)?;
    s.validate()?;
    Ok(Box::new(s))
}

impl JobSettings for StreamSettings {
    fn job(&self) -> &'static dyn Job {
        &JOB
    }
    fn encode(&self) -> Vec<u8> {
        crate::job::encode_bincode(self)
    }
    fn clone_box(&self) -> Box<dyn JobSettings> {
        Box::new(self.clone())
    }
    fn roles(&self) -> Vec<(&'static RoleKind, u32)> {
        let exporters = self.export.is_some() as u32;
        vec![
            (&super::KINDS[0], 1),
            (&super::KINDS[1], 1),
            (&super::KINDS[2], exporters),
        ]
    }
    fn shm_bytes(&self) -> u64 {
        super::layout::shm_bytes(self)
    }
    fn differences(&self, requested: &dyn JobSettings) -> Vec<Difference> {
        let Some(b) = requested.downcast::<StreamSettings>() else {
            return Vec::new();
        };
        let a = self;
        [
            Difference::of("--dim", Some(a.dim), Some(b.dim)),
            Difference::of(
                "--distribution",
                Some(a.distribution.name()),
                Some(b.distribution.name()),
            ),
            Difference::of("--rate", Some(a.rate.to_string()), Some(b.rate.to_string())),
            Difference::of("--count", a.count, b.count),
            Difference::of(
                "--noise",
                Some(noise_text(a.noise)),
                Some(noise_text(b.noise)),
            ),
            Difference::of("--batch", Some(a.batch), Some(b.batch)),
            Difference::of("--rate-window", Some(a.rate_window), Some(b.rate_window)),
            Difference::of(
                "--rate-interval",
                Some(a.rate_interval.to_string()),
                Some(b.rate_interval.to_string()),
            ),
            Difference::of("--format", Some(a.format.name()), Some(b.format.name())),
            Difference::of("--ring-slots", Some(a.ring_slots), Some(b.ring_slots)),
            Difference::of("--seed", Some(a.seed), Some(b.seed)),
        ]
        .into_iter()
        .flatten()
        .chain(Difference::of_group(
            &[
                ("url", "--export"),
                ("subject", "--export-subject"),
                ("stream", "--export-stream"),
                ("policy", "--export-policy"),
                ("buffer", "--export-buffer"),
            ],
            a.export.as_ref().map(|x| x.to_json()).as_ref(),
            b.export.as_ref().map(|x| x.to_json()).as_ref(),
        ))
        .collect()
    }
    fn adopt_seed(&mut self, recorded: &dyn JobSettings) {
        if let Some(r) = recorded.downcast::<StreamSettings>() {
            self.seed = r.seed;
        }
    }
    fn ends_run(&self) -> bool {
        false
    }
    fn log_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs_f64(self.rate_interval))
    }
    fn to_json(&self) -> Value {
        json!({
            "dim": self.dim,
            "distribution": self.distribution.name(),
            // Vectors per second; null for --rate max (as fast as the
            // consumer takes them).
            "rate_hz": match self.rate { Rate::Hz(h) => Some(h), Rate::Max => None },
            "count": self.count,
            "noise": self.noise.map(|n| json!({"low_s": n.low, "high_s": n.high, "burst": n.burst})),
            "batch": self.batch,
            "rate_window": self.rate_window,
            "rate_interval_s": self.rate_interval,
            "format": self.format.name(),
            "ring_slots": self.ring_slots,
            "seed": self.seed,
            "export": self.export.as_ref().map(ExportSettings::to_json),
        })
    }
    fn create(&self, at: Place<'_>) -> Result<Box<dyn JobHost>, JobError> {
        Ok(Box::new(StreamHost::create(at.run, self, at.out)?))
    }
    fn open(&self, at: Place<'_>, access: Access) -> Result<Box<dyn JobHost>, JobError> {
        Ok(Box::new(StreamHost::open(at.run, self, at.out, access)?))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StreamSettings {
        StreamSettings {
            dim: 4,
            distribution: Distribution::Normal,
            rate: Rate::Hz(1000.0),
            count: None,
            noise: None,
            batch: 10,
            rate_window: 10,
            rate_interval: 1.0,
            format: StreamFormat::Jsonl,
            ring_slots: 64,
            export: None,
            seed: 1,
        }
    }

    #[test]
    fn rates() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("1000".parse::<Rate>(), Ok(Rate::Hz(1000.0)));
        assert!("fast".parse::<Rate>().is_err());
        for bad in [0.0, -3.0, f64::NAN, f64::INFINITY, 1e-12, 1e-300, 1e300] {
            let mut s = sample();
            s.rate = Rate::Hz(bad);
            assert!(s.validate().unwrap_err().contains("--rate"), "{bad}");
        }
    }

    #[test]
    fn bounds_name_the_option() {
        let mut s = sample();
        s.dim = 0;
        assert!(s.validate().unwrap_err().starts_with("--dim 0"));
        let mut s = sample();
        s.ring_slots = 100;
        assert!(s.validate().unwrap_err().contains("power of two"));
        let mut s = sample();
        s.rate_interval = 1e20;
        assert!(s.validate().unwrap_err().contains("--rate-interval"));
        let mut s = sample();
        s.noise = Some(Noise {
            low: 3.0,
            high: 2.0,
            burst: 1,
        });
        assert!(s.validate().unwrap_err().contains("above --noise-high"));
        assert!(sample().validate().is_ok());
    }

    #[test]
    fn differences_read_as_typed() {
        let a = sample();
        let mut b = sample();
        b.count = Some(6000);
        let d = a.differences(&b);
        assert_eq!(
            d[0].to_string(),
            "--count: the run has none, you asked for 6000"
        );
    }

    /// The export's options are compared one by one, as typed; its
    /// start-up timeout is not a setting of the run.
    #[test]
    fn export_differences_name_the_option() {
        let export = |subject: &str, connect_timeout: f64| {
            Some(crate::stream::export::ExportSettings {
                url: crate::nats::names::Endpoint::parse("--export", "nats://127.0.0.1:4222")
                    .unwrap(),
                subject: subject.into(),
                stream: "S".into(),
                stream_named: false,
                policy: crate::stream::export::ExportPolicy::Block,
                buffer: 64,
                connect_timeout,
            })
        };
        let mut a = sample();
        a.export = export("a.b", 5.0);
        let mut b = sample();
        b.export = export("a.b", 2.5);
        assert!(a.differences(&b).is_empty());
        b.export = export("a.c", 5.0);
        let d: Vec<String> = a.differences(&b).iter().map(|d| d.to_string()).collect();
        assert_eq!(d, ["--export-subject: the run has a.b, you asked for a.c"]);
        b.export = None;
        let d: Vec<String> = a.differences(&b).iter().map(|d| d.to_string()).collect();
        assert_eq!(
            d,
            ["--export: the run has nats://127.0.0.1:4222, you did not give it"]
        );
    }
}
