//! The command line: argument definitions (clap derive) and dispatch.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::{CmdResult, Failure};
use crate::settings::{
    self, Distribution, ImageSettings, Noise, Rate, RunSettings, StreamFormat, StreamSettings,
};
use crate::shm::RunName;
use crate::shm::turn::Party;
use crate::supervisor::policy::RestartPolicy;
use crate::supervisor::run::RunOptions;

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    failure (the message says what and what to do)
  2    usage error (bad arguments or options)
  3    the run gave up: a role exceeded the restart limit (segments kept)
  130  interrupted by SIGINT (results so far were handed off)";

const RUN_EXAMPLES: &str = "\
Examples:
  forkring run                                      image 4096x4096 + a 1 kHz stream (defaults)
  forkring run --jobs image --size 1024 --seed 7    a reproducible 1024x1024 image
  forkring run --jobs stream --noise --duration 60  a minute of vectors with simulated dropouts
  forkring run --jobs stream --rate max --count 10000000 --json
  forkring run --name NAME ...                      after a crash, the same command resumes the run";

/// forkring: a supervisor for multi-process jobs that talk only through
/// POSIX shared memory and futexes.
#[derive(Debug, Parser)]
#[command(name = "forkring", version, propagate_version = true, after_help = EXIT_CODES)]
#[command(
    long_about = "forkring runs a small multi-process system on one Linux host. \
`forkring run` supervises role processes (ping and pong paint an image, producer and consumer \
stream vectors) that share state only through named segments in /dev/shm and wait on futexes. \
Roles that die are restarted and resume where the segments say; at the end the results are \
written atomically to --out and the segments are removed."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start (or resume) a run: create its segments, supervise its roles,
    /// hand the results over to --out.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Image role for even iterations (normally started by `run`).
    Ping(RoleArgs),
    /// Image role for odd iterations (normally started by `run`).
    Pong(RoleArgs),
    /// Stream role that generates vectors into the ring (normally started by
    /// `run`; options, if given, must match the run's).
    Producer(ProducerArgs),
    /// Stream role that analyses the vectors (normally started by `run`;
    /// options, if given, must match the run's).
    Consumer(ConsumerArgs),
    /// Show runs in /dev/shm: supervisor, roles, restarts, progress.
    Status(StatusArgs),
    /// Remove the segments of runs whose supervisor is dead.
    Clean(CleanArgs),
    /// Write the results of a run whose handoff failed, then remove its
    /// segments.
    Handoff(HandoffArgs),
    /// Draw the image as it was after N iterations, from a history.bin.
    Render(RenderArgs),
    /// Check a result directory: positions and colours unique, image.png
    /// equal to the replayed history, checksums as in summary.json.
    Verify(VerifyArgs),
    /// Measure forkring's IPC against the kernel's, between two processes.
    Bench(BenchArgs),
    /// The second process of a `bench` measurement (started by `bench`).
    #[command(hide = true)]
    BenchPeer(crate::bench::peer::PeerArgs),
}

/// Options of `forkring run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name of the run; its segments are /dev/shm/forkring.NAME.*
    #[arg(long, default_value = "default", value_parser = parse_run_name)]
    pub name: RunName,

    /// Directory for the results [default: ./forkring-out/NAME]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Jobs to run, comma-separated; with both, the stream ends when the
    /// image is complete [default: image,stream]
    #[arg(long, value_delimiter = ',', value_name = "JOBS")]
    pub jobs: Vec<JobKind>,

    /// Seed of every random choice [default: random, recorded in summary.json]
    #[arg(long)]
    pub seed: Option<u64>,

    /// Image size: N (square) or WxH; at most 2^24 pixels [default: 4096]
    #[arg(long, value_parser = settings::parse_size, help_heading = "Image job")]
    pub size: Option<(u32, u32)>,

    #[command(flatten)]
    pub vector: VectorOpts,

    #[command(flatten)]
    pub producer: ProducerOpts,

    #[command(flatten)]
    pub consumer: ConsumerOpts,

    /// Ring capacity in slots, a power of two [default: 4096]
    #[arg(long, value_parser = parse_ring_slots, help_heading = "Stream job")]
    pub ring_slots: Option<u32>,

    /// Stop the run after this many seconds (results are handed off)
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, help_heading = "Supervision")]
    pub duration: Option<Duration>,

    /// Seconds roles get to finish after a stop request before SIGKILL
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds, help_heading = "Supervision")]
    pub stop_timeout: Duration,

    /// Give up after more than this many restarts within --restart-window
    #[arg(long, default_value_t = 10, help_heading = "Supervision")]
    pub max_restarts: u32,

    /// Window of the restart limit, seconds
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds, help_heading = "Supervision")]
    pub restart_window: Duration,

    /// No progress output (the final summary line is still printed)
    #[arg(long, short)]
    pub quiet: bool,

    /// Print the final summary as JSON on stdout (progress goes to stderr)
    #[arg(long)]
    pub json: bool,
}

/// The jobs a run can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobKind {
    /// ping and pong paint an all-RGB image.
    Image,
    /// producer and consumer stream vectors through a ring.
    Stream,
}

/// The shape of the stream's vectors (shared by producer and consumer).
#[derive(Debug, Clone, Default, Args)]
pub struct VectorOpts {
    /// Float32 values per vector [default: 50]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536), help_heading = "Stream job")]
    pub dim: Option<u32>,
}

/// Producer options.
#[derive(Debug, Clone, Default, Args)]
pub struct ProducerOpts {
    /// Distribution of the values [default: normal]
    #[arg(long, value_enum, help_heading = "Stream job")]
    pub distribution: Option<Distribution>,
    /// Vectors per second on a drift-free schedule, or `max` [default: 1000]
    #[arg(long, value_parser = parse_rate, help_heading = "Stream job")]
    pub rate: Option<Rate>,
    /// Stop after this many sequence numbers (dropped ones included)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Stream job")]
    pub count: Option<u64>,
    /// Simulate dropouts: drop a vector every X seconds, X uniform in
    /// [--noise-low, --noise-high]
    #[arg(long, help_heading = "Stream job")]
    pub noise: bool,
    /// Shortest time between dropouts, seconds [default: 2]
    #[arg(long, value_name = "SECS", value_parser = parse_positive, help_heading = "Stream job")]
    pub noise_low: Option<f64>,
    /// Longest time between dropouts, seconds [default: 3]
    #[arg(long, value_name = "SECS", value_parser = parse_positive, help_heading = "Stream job")]
    pub noise_high: Option<f64>,
    /// Consecutive vectors dropped each time [default: 1]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000), help_heading = "Stream job")]
    pub noise_burst: Option<u32>,
}

/// Consumer options.
#[derive(Debug, Clone, Default, Args)]
pub struct ConsumerOpts {
    /// Vectors per statistics batch, filled-in ones included [default: 100]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000), help_heading = "Stream job")]
    pub batch: Option<u32>,
    /// Intervals in the sliding rate window [default: 100]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000), help_heading = "Stream job")]
    pub rate_window: Option<u32>,
    /// Seconds between rate log lines [default: 1]
    #[arg(long, value_name = "SECS", value_parser = parse_positive, help_heading = "Stream job")]
    pub rate_interval: Option<f64>,
    /// Output: stream.jsonl (one JSON object per batch) or stream.txt
    /// (matrices and tables) [default: jsonl]
    #[arg(long, value_enum, help_heading = "Stream job")]
    pub format: Option<StreamFormat>,
}

impl VectorOpts {
    fn given(&self) -> bool {
        self.dim.is_some()
    }
}
impl ProducerOpts {
    fn given(&self) -> bool {
        self.distribution.is_some()
            || self.rate.is_some()
            || self.count.is_some()
            || self.noise
            || self.noise_low.is_some()
            || self.noise_high.is_some()
            || self.noise_burst.is_some()
    }
    /// The noise settings, validated.
    fn noise(&self) -> Result<Option<Noise>, Failure> {
        let low = self.noise_low.unwrap_or(2.0);
        let high = self.noise_high.unwrap_or(3.0);
        if low > high {
            return Err(Failure::usage(format!(
                "--noise-low {low} is above --noise-high {high}; the interval between dropouts is drawn from [low, high]"
            )));
        }
        let detail =
            self.noise_low.is_some() || self.noise_high.is_some() || self.noise_burst.is_some();
        if detail && !self.noise {
            return Err(Failure::usage(
                "--noise-low/--noise-high/--noise-burst only apply with --noise; add --noise to simulate dropouts",
            ));
        }
        Ok(self.noise.then_some(Noise {
            low,
            high,
            burst: self.noise_burst.unwrap_or(1),
        }))
    }
}
impl ConsumerOpts {
    fn given(&self) -> bool {
        self.batch.is_some()
            || self.rate_window.is_some()
            || self.rate_interval.is_some()
            || self.format.is_some()
    }
}

/// Options of a role started by hand.
#[derive(Debug, Args)]
pub struct RoleArgs {
    /// The run to join (see `forkring status`)
    #[arg(long, value_parser = parse_run_name)]
    pub run: RunName,
}

/// Options of `forkring producer`.
#[derive(Debug, Args)]
pub struct ProducerArgs {
    /// The run to join (see `forkring status`)
    #[arg(long, value_parser = parse_run_name)]
    pub run: RunName,
    #[command(flatten)]
    pub vector: VectorOpts,
    #[command(flatten)]
    pub opts: ProducerOpts,
}

/// Options of `forkring consumer`.
#[derive(Debug, Args)]
pub struct ConsumerArgs {
    /// The run to join (see `forkring status`)
    #[arg(long, value_parser = parse_run_name)]
    pub run: RunName,
    #[command(flatten)]
    pub vector: VectorOpts,
    #[command(flatten)]
    pub opts: ConsumerOpts,
}

/// Options of `forkring status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this run
    #[arg(value_parser = parse_run_name)]
    pub name: Option<RunName>,
    /// One JSON object per run, one per line
    #[arg(long)]
    pub json: bool,
}

/// Options of `forkring clean`.
#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Only this run [default: every run whose supervisor is dead]
    #[arg(value_parser = parse_run_name)]
    pub name: Option<RunName>,
    /// Only list what would be removed
    #[arg(long)]
    pub dry_run: bool,
}

/// Options of `forkring handoff`.
#[derive(Debug, Args)]
pub struct HandoffArgs {
    /// The run whose results to write
    #[arg(long, value_parser = parse_run_name)]
    pub run: RunName,
    /// Directory for the results [default: the run's recorded --out]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Options of `forkring render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The history file (DIR/history.bin of a run)
    pub history: PathBuf,
    /// Iterations to apply, from 0 (black) to all [default: all]
    #[arg(long, short)]
    pub iteration: Option<u64>,
    /// PNG file to write
    #[arg(long, short)]
    pub out: PathBuf,
}

/// Options of `forkring verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A run's result directory (its --out)
    pub dir: PathBuf,
}

/// Options of `forkring bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub bench: BenchCommand,
}

/// The benchmarks (one variant per benchmark; each parses its own options).
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Handoff latency (futex Turn spinning and sleeping, pipe, unix socket,
    /// eventfd) and 208-byte message throughput (shm ring, pipe, unix
    /// socket) between two processes, verified and compared with the pipe.
    Transport(TransportArgs),
    /// The image job's stepping solo and alternating (ping and pong
    /// processes), and the reference system's size table beside ours.
    Image(BenchImageArgs),
    /// The stream job against generation alone and against the same
    /// pipeline over a pipe and a unix socket; CPU at 1000 Hz.
    Stream(BenchStreamArgs),
}

/// Options of `forkring bench image`.
#[derive(Debug, Args)]
pub struct BenchImageArgs {
    /// Image size for the solo/alternating comparison [default: 4096]
    #[arg(long, value_parser = settings::parse_size)]
    pub size: Option<(u32, u32)>,
    /// Skip the reference system's size table
    #[arg(long)]
    pub no_reference: bool,
    /// Runs per figure; the best is reported (noise from other load)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    /// One JSON object per measurement, one per line
    #[arg(long)]
    pub json: bool,
}

/// Options of `forkring bench stream`.
#[derive(Debug, Args)]
pub struct BenchStreamArgs {
    /// Vectors per throughput measurement
    #[arg(long, default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1000..))]
    pub count: u64,
    /// Seconds of the 1000 Hz CPU measurement
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_positive)]
    pub idle_seconds: f64,
    /// Runs per throughput figure; the best is reported (noise from other load)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    /// One JSON object per measurement, one per line
    #[arg(long)]
    pub json: bool,
}

/// Options of `forkring bench transport`.
#[derive(Debug, Args)]
pub struct TransportArgs {
    /// One JSON object per measurement, one per line
    #[arg(long)]
    pub json: bool,
    /// Handoffs per handoff measurement (rounded up to even) [default: per
    /// mechanism]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=crate::bench::transport::MAX_HANDOFFS))]
    pub handoffs: Option<u64>,
    /// Messages per throughput measurement [default: per mechanism]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(2..))]
    pub messages: Option<u64>,
    /// Only these, comma-separated: turn-spin, turn-sleep, pipe, socket,
    /// eventfd, ring, or a kind (handoff, throughput)
    #[arg(long, value_name = "LIST", value_parser = crate::bench::transport::parse_only)]
    pub only: Option<crate::bench::transport::Selection>,
}

fn parse_run_name(s: &str) -> Result<RunName, String> {
    RunName::new(s).map_err(|e| e.to_string())
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    s.parse()
}

fn parse_positive(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s} must be a positive number"));
    }
    Ok(v)
}

fn parse_ring_slots(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if !v.is_power_of_two() || !(2..=1 << 24).contains(&v) {
        return Err(format!("{v} slots: give a power of two from 2 to 16777216"));
    }
    Ok(v)
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(format!(
            "{s} seconds is out of range; give a positive number"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A seed from the kernel's generator (the time and pid if that fails).
fn random_seed() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 ^ ((std::process::id() as u64) << 32))
            .unwrap_or(0),
    }
}

impl RunArgs {
    fn options(&self) -> Result<RunOptions, Failure> {
        let jobs = if self.jobs.is_empty() {
            vec![JobKind::Image, JobKind::Stream]
        } else {
            self.jobs.clone()
        };
        let image = jobs.contains(&JobKind::Image);
        let stream = jobs.contains(&JobKind::Stream);
        if !image && self.size.is_some() {
            return Err(Failure::usage(
                "--size applies to the image job, which is not in --jobs",
            ));
        }
        let stream_opts = self.vector.given()
            || self.producer.given()
            || self.consumer.given()
            || self.ring_slots.is_some();
        if !stream && stream_opts {
            return Err(Failure::usage(
                "stream options were given, but the stream job is not in --jobs",
            ));
        }
        // Validate before anything touches the file system or /dev/shm.
        let noise = self.producer.noise()?;
        let seed = self.seed.unwrap_or_else(random_seed);
        let (width, height) = self.size.unwrap_or((4096, 4096));
        let image = image.then_some(ImageSettings {
            width,
            height,
            seed,
        });
        let stream = stream.then(|| StreamSettings {
            dim: self.vector.dim.unwrap_or(50),
            distribution: self.producer.distribution.unwrap_or(Distribution::Normal),
            rate: self.producer.rate.unwrap_or(Rate::Hz(1000.0)),
            count: self.producer.count,
            noise,
            batch: self.consumer.batch.unwrap_or(100),
            rate_window: self.consumer.rate_window.unwrap_or(100),
            rate_interval: self.consumer.rate_interval.unwrap_or(1.0),
            format: self.consumer.format.unwrap_or(StreamFormat::Jsonl),
            ring_slots: self.ring_slots.unwrap_or(4096),
            seed,
        });
        let out = out_dir(&self.out, &self.name)?;
        let settings = RunSettings { out, image, stream };
        Ok(RunOptions {
            name: self.name.clone(),
            settings,
            stop_timeout: self.stop_timeout,
            policy: RestartPolicy {
                max_restarts: self.max_restarts,
                window: self.restart_window,
            },
            duration: self.duration,
            quiet: self.quiet,
            json: self.json,
            seed_given: self.seed.is_some(),
        })
    }
}

/// Resolves and checks the output directory (creating it if needed).
fn out_dir(out: &Option<PathBuf>, name: &RunName) -> Result<PathBuf, Failure> {
    let out = out
        .clone()
        .unwrap_or_else(|| PathBuf::from("forkring-out").join(name.as_str()));
    crate::outfile::prepare_dir(&out)
        .map_err(|e| Failure::runtime(format!("{e}; choose a writable directory with --out")))
}

/// A role's options must agree with the run it joins: the run's recorded
/// settings are the single source of truth.
fn check_role_options(
    role: &str,
    run: &RunName,
    given: &[(&str, Option<String>, String)],
) -> Result<(), Failure> {
    for (flag, value, recorded) in given {
        if let Some(v) = value
            && v != recorded
        {
            return Err(Failure::usage(format!(
                "{role} {flag} {v} differs from run {run}, which has {flag} {recorded}; a role takes its settings from the run it joins, so omit the option"
            )));
        }
    }
    Ok(())
}

fn run_stream_settings(run: &RunName) -> Result<StreamSettings, Failure> {
    let c = crate::supervisor::control::Control::open(run, crate::shm::Access::ReadOnly)?;
    c.settings()
        .stream
        .clone()
        .ok_or_else(|| Failure::usage(format!("run {run} has no stream job")))
}

fn producer_role(a: &ProducerArgs) -> CmdResult {
    let s = run_stream_settings(&a.run)?;
    let noise = a.opts.noise()?;
    let dist = |d: Distribution| format!("{d:?}").to_lowercase();
    check_role_options(
        "producer",
        &a.run,
        &[
            (
                "--dim",
                a.vector.dim.map(|d| d.to_string()),
                s.dim.to_string(),
            ),
            (
                "--distribution",
                a.opts.distribution.map(dist),
                dist(s.distribution),
            ),
            (
                "--rate",
                a.opts.rate.map(|r| r.to_string()),
                s.rate.to_string(),
            ),
            (
                "--count",
                a.opts.count.map(|c| c.to_string()),
                format!("{:?}", s.count)
                    .replace("Some(", "")
                    .replace(')', ""),
            ),
            (
                "--noise",
                a.opts.noise.then(|| format!("{noise:?}")),
                format!("{:?}", s.noise),
            ),
        ],
    )?;
    crate::stream::producer::run(&a.run)
}

fn consumer_role(a: &ConsumerArgs) -> CmdResult {
    let s = run_stream_settings(&a.run)?;
    check_role_options(
        "consumer",
        &a.run,
        &[
            (
                "--dim",
                a.vector.dim.map(|d| d.to_string()),
                s.dim.to_string(),
            ),
            (
                "--batch",
                a.opts.batch.map(|b| b.to_string()),
                s.batch.to_string(),
            ),
            (
                "--rate-window",
                a.opts.rate_window.map(|w| w.to_string()),
                s.rate_window.to_string(),
            ),
            (
                "--rate-interval",
                a.opts.rate_interval.map(|i| i.to_string()),
                s.rate_interval.to_string(),
            ),
            (
                "--format",
                a.opts.format.map(|f| format!("{f:?}").to_lowercase()),
                format!("{:?}", s.format).to_lowercase(),
            ),
        ],
    )?;
    crate::stream::consumer::run(&a.run)
}

/// Runs the parsed command.
pub fn dispatch(cli: Cli) -> CmdResult {
    match cli.command {
        Command::Run(a) => {
            // First of all, before any thread starts and before any work:
            // from here on SIGINT/SIGTERM/SIGHUP are stop requests.
            let signals = crate::supervisor::signals::Signals::install()?;
            crate::supervisor::run::run(a.options()?, signals)
        }
        Command::Ping(a) => crate::image::role::run(&a.run, Party::Even),
        Command::Pong(a) => crate::image::role::run(&a.run, Party::Odd),
        Command::Producer(a) => producer_role(&a),
        Command::Consumer(a) => consumer_role(&a),
        Command::Status(a) => crate::ops::status(a.name.as_ref(), a.json),
        Command::Clean(a) => crate::ops::clean(a.name.as_ref(), a.dry_run),
        Command::Handoff(a) => crate::ops::handoff(&a.run, a.out.as_deref()),
        Command::Render(a) => crate::image::render::render(&a.history, a.iteration, &a.out),
        Command::Verify(a) => crate::image::render::verify(&a.dir),
        Command::Bench(a) => match a.bench {
            BenchCommand::Transport(t) => {
                crate::bench::transport::run(&crate::bench::transport::Options {
                    json: t.json,
                    handoffs: t.handoffs,
                    messages: t.messages,
                    only: t.only.map(|s| s.0),
                })
            }
            BenchCommand::Image(i) => crate::bench::image::run(&crate::bench::image::Options {
                size: i.size.unwrap_or((4096, 4096)),
                json: i.json,
                reference: !i.no_reference,
                repeat: i.repeat,
            }),
            BenchCommand::Stream(s) => crate::bench::stream::run(&crate::bench::stream::Options {
                count: s.count,
                idle_seconds: s.idle_seconds,
                json: s.json,
                repeat: s.repeat,
            }),
        },
        Command::BenchPeer(a) => crate::bench::peer::run(&a),
    }
}
