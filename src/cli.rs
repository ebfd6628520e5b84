//! The command line: argument definitions (clap derive) and dispatch.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::{CmdResult, Failure};
use crate::settings::{self, ImageSettings, RunSettings};
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
    Run(RunArgs),
    /// Image role for even iterations (normally started by `run`).
    Ping(RoleArgs),
    /// Image role for odd iterations (normally started by `run`).
    Pong(RoleArgs),
    /// Show runs in /dev/shm: supervisor, roles, restarts, progress.
    Status(StatusArgs),
    /// Remove the segments of runs whose supervisor is dead.
    Clean(CleanArgs),
    /// Write the results of a run whose handoff failed, then remove its
    /// segments.
    Handoff(HandoffArgs),
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

    /// Image size: N (square) or WxH; at most 2^24 pixels
    #[arg(long, default_value = "4096", value_parser = settings::parse_size, help_heading = "Image job")]
    pub size: (u32, u32),

    /// Seed of every random choice [default: random, recorded in summary.json]
    #[arg(long, help_heading = "Image job")]
    pub seed: Option<u64>,

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

/// Options of a role started by hand.
#[derive(Debug, Args)]
pub struct RoleArgs {
    /// The run to join (see `forkring status`)
    #[arg(long, value_parser = parse_run_name)]
    pub run: RunName,
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
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("forkring-out").join(self.name.as_str()));
        let out = crate::outfile::prepare_dir(&out).map_err(|e| {
            Failure::runtime(format!("{e}; choose a writable directory with --out"))
        })?;
        let seed = self.seed.unwrap_or_else(random_seed);
        let (width, height) = self.size;
        let settings = RunSettings {
            out,
            image: Some(ImageSettings {
                width,
                height,
                seed,
            }),
            stream: None,
        };
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
        })
    }
}

/// Runs the parsed command.
pub fn dispatch(cli: Cli) -> CmdResult {
    match cli.command {
        Command::Run(a) => crate::supervisor::run::run(a.options()?),
        Command::Ping(a) => crate::image::role::run(&a.run, Party::Even),
        Command::Pong(a) => crate::image::role::run(&a.run, Party::Odd),
        Command::Status(a) => crate::ops::status(a.name.as_ref(), a.json),
        Command::Clean(a) => crate::ops::clean(a.name.as_ref(), a.dry_run),
        Command::Handoff(a) => crate::ops::handoff(&a.run, a.out.as_deref()),
        Command::Bench(a) => match a.bench {
            BenchCommand::Transport(t) => {
                crate::bench::transport::run(&crate::bench::transport::Options {
                    json: t.json,
                    handoffs: t.handoffs,
                    messages: t.messages,
                    only: t.only.map(|s| s.0),
                })
            }
        },
        Command::BenchPeer(a) => crate::bench::peer::run(&a),
    }
}
