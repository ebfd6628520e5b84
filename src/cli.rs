//! The command line: argument definitions, dispatch, and the one place
//! where errors become exit codes and operator hints.
//!
//! The fixed subcommands are clap derive types. The registry adds the rest:
//! each job's options of `run`, one subcommand per role kind (`forkring
//! <kind> --run NAME --index I`), and each job's own commands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::error::{Error, Failure};
use crate::exit::{EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_RESTART_LIMIT, EXIT_USAGE};
use crate::job::{Common, JobError, Registry};
use crate::settings::RunSettings;
use crate::shm::{CreateError, RunName, SegmentsError};
use crate::supervisor::error::RunError;
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

/// A supervisor for multi-process jobs that talk only through POSIX shared
/// memory and futexes.
#[derive(Debug, Parser)]
#[command(name = "forkring", version = crate::VERSION, propagate_version = true, after_help = EXIT_CODES)]
#[command(
    long_about = "forkring runs a small multi-process system on one Linux host. \
`forkring run` supervises role processes (ping and pong paint an image, producer and consumer \
stream vectors, a client and workers run a task pool) that share state only through named segments in /dev/shm and wait on futexes. \
Roles that die are restarted and resume where the segments say; at the end the results are \
written atomically to --out and the segments are removed."
)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The fixed subcommands (the registry adds roles and job commands).
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start (or resume) a run: create its segments, supervise its roles,
    /// hand the results over to --out.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Show runs in /dev/shm: supervisor, roles, restarts, progress.
    Status(StatusArgs),
    /// Remove the segments of runs whose supervisor is dead.
    Clean(CleanArgs),
    /// Write the results of a run whose handoff failed, then remove its
    /// segments.
    Handoff(HandoffArgs),
    /// Check a result directory: every file against the size and SHA-256 in
    /// summary.json, and each job's files by its own rules.
    Verify(VerifyArgs),
    /// Measure forkring's IPC against the kernel's, between two processes.
    Bench(BenchArgs),
    /// Print a shell completion script: bash, zsh, fish, elvish or PowerShell (see the README
    /// for where to put it).
    Completions(CompletionsArgs),
    /// Print the manual page (roff) of forkring or of one subcommand:
    /// `forkring man | man -l -`.
    Man(ManArgs),
    /// The second process of a `bench` measurement (started by `bench`).
    #[command(hide = true)]
    BenchPeer(crate::bench::peer::PeerArgs),
}

/// Options of `forkring run` shared by every job (each job adds its own).
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Name of the run; its segments are /dev/shm/forkring.NAME.* [default:
    /// default]
    #[arg(long, default_value = "default", hide_default_value = true, value_parser = parse_run_name)]
    pub(crate) name: RunName,

    /// Directory for the results [default: ./forkring-out/NAME]
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,

    /// Jobs to run, comma-separated [default: the jobs marked default]
    #[arg(long, value_delimiter = ',', value_name = "JOBS")]
    pub(crate) jobs: Vec<String>,

    /// Seed of every random choice [default: random, recorded in summary.json]
    #[arg(value_parser = crate::units::whole_u64::<{ 0 }, { u64::MAX }>, long)]
    pub(crate) seed: Option<u64>,

    /// Finish the run after this many seconds of work, counted over every
    /// supervisor of the run (a resume gets what remains), 0.000001 to 1e9;
    /// results are handed off [default: no limit]
    #[arg(long, value_name = "SECS", value_parser = crate::units::parse_seconds, help_heading = "Supervision")]
    pub(crate) duration: Option<Duration>,

    /// Seconds roles get to finish after a stop request before SIGKILL,
    /// 0.000001 to 1e9 [default: 5]
    #[arg(long, value_name = "SECS", default_value = "5", hide_default_value = true, value_parser = crate::units::parse_seconds, help_heading = "Supervision")]
    pub(crate) stop_timeout: Duration,

    /// Give up after more than this many restarts within --restart-window,
    /// 0 to 4,294,967,295 (0: the first role that dies ends the run)
    /// [default: 10]
    #[arg(
        value_parser = crate::units::whole_u32::<{ 0 }, { u32::MAX }>,
        long,
        value_name = "N",
        default_value_t = 10,
        hide_default_value = true,
        help_heading = "Supervision"
    )]
    pub(crate) max_restarts: u32,

    /// Window of the restart limit, seconds, 0.000001 to 1e9 [default: 5]
    #[arg(long, value_name = "SECS", default_value = "5", hide_default_value = true, value_parser = crate::units::parse_seconds, help_heading = "Supervision")]
    pub(crate) restart_window: Duration,

    /// Seconds to reach the NATS server of --export or --from at start-up,
    /// 0.001 to 3600; past it the run fails before anything is created. The
    /// roles keep the value the run was created with: a resume may differ
    /// without being refused, and does not change it [default: 5]
    #[arg(long, value_name = "SECS", default_value = "5", hide_default_value = true, value_parser = crate::units::parse_connect_timeout, help_heading = "NATS (--export, --from)")]
    pub(crate) connect_timeout: f64,

    /// No progress output (the final summary is still printed)
    #[arg(long, short)]
    pub(crate) quiet: bool,

    /// Print summary.json on stdout instead of the summary line
    #[arg(long)]
    pub(crate) json: bool,

    /// Replace the results of another run (another --name) that --out
    /// already holds (summary.json); its result files the new run does not
    /// write are removed at the handoff. Without it such a run is refused
    #[arg(long)]
    pub(crate) overwrite: bool,

    /// Let members of GROUP (a name or gid you belong to) read the run's
    /// segments, read-only: they see it with `forkring status --user
    /// YOU`. The segments get group GROUP and mode 0640; nobody but you
    /// can write them [default: only you (mode 0600)]
    #[arg(long, value_name = "GROUP", value_parser = parse_group, help_heading = "Supervision")]
    pub(crate) group: Option<u32>,
}

/// Options of `forkring completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// Options of `forkring man`.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// A subcommand's page instead of forkring's (`forkring man run`)
    pub(crate) subcommand: Option<String>,
}

/// Options of `forkring status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Only this run
    #[arg(value_parser = parse_run_name)]
    pub(crate) name: Option<RunName>,
    /// One JSON document: an array with an object per run (`[]` if none)
    #[arg(long)]
    pub(crate) json: bool,
    /// Show the status again every SECS seconds (0.1 to 86400) until
    /// interrupted, like watch(1) [default: 2]
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2", value_parser = parse_watch)]
    pub(crate) watch: Option<Duration>,
    /// Look at USER's runs (a name or uid), read-only: only runs USER owns
    /// are shown. Another user's run is readable if it is shared with a
    /// group of yours (`forkring run --group`); root reads every run
    /// [default: your runs; for root, every user's]
    #[arg(long, value_name = "USER", value_parser = parse_user)]
    pub(crate) user: Option<u32>,
}

/// `--user`: a user name or a numeric uid.
fn parse_user(s: &str) -> Result<u32, String> {
    use nix::unistd::{Uid, User};
    let found = match s.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).map(|u| u.map(|u| u.uid.as_raw())),
        Err(_) => User::from_name(s).map(|u| u.map(|u| u.uid.as_raw())),
    };
    match (found, s.parse::<u32>()) {
        (Ok(Some(uid)), _) => Ok(uid),
        // A uid without a name (a container's user) is still a uid.
        (Ok(None), Ok(uid)) => Ok(uid),
        (Ok(None), Err(_)) => Err(format!(
            "no user named {s} on this host; give a user name or a numeric uid (see `getent passwd`)"
        )),
        (Err(e), _) => Err(format!("cannot look up user {s}: {e}")),
    }
}

/// `--group`: a group name or numeric gid that we belong to (root may
/// choose any group). Checked here, before anything is created.
fn parse_group(s: &str) -> Result<u32, String> {
    use nix::unistd::{Gid, Group, getegid, geteuid, getgroups};
    let gid = match s.parse::<u32>() {
        Ok(gid) => gid,
        Err(_) => match Group::from_name(s) {
            Ok(Some(g)) => g.gid.as_raw(),
            Ok(None) => {
                return Err(format!(
                    "no group named {s} on this host; give a group name or a numeric gid (see `id -Gn`)"
                ));
            }
            Err(e) => return Err(format!("cannot look up group {s}: {e}")),
        },
    };
    let member = geteuid().is_root()
        || getegid() == Gid::from_raw(gid)
        || getgroups().is_ok_and(|g| g.contains(&Gid::from_raw(gid)));
    if !member {
        return Err(format!(
            "you are not a member of group {s}, so your segments cannot be given to it; choose one of your groups (`id -Gn`) or ask an administrator to add you (`usermod -aG {s} USER`, then log in again)"
        ));
    }
    Ok(gid)
}

/// `--watch` intervals.
fn parse_watch(s: &str) -> Result<Duration, String> {
    let d = crate::units::parse_seconds(s)?;
    if !(0.1..=86_400.0).contains(&d.as_secs_f64()) {
        return Err(format!("{s} seconds is out of range; give 0.1 to 86400"));
    }
    Ok(d)
}

/// Options of `forkring clean`.
#[derive(Debug, Args)]
pub(crate) struct CleanArgs {
    /// Only this run [default: every run whose supervisor is dead]
    #[arg(value_parser = parse_run_name)]
    pub(crate) name: Option<RunName>,
    /// Only list what would be removed
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// Options of `forkring handoff`.
#[derive(Debug, Args)]
pub(crate) struct HandoffArgs {
    /// The run whose results to write
    #[arg(long, value_parser = parse_run_name)]
    pub(crate) run: RunName,
    /// Directory for the results [default: the run's recorded --out]
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// Replace the results of another run that DIR already holds
    /// (summary.json); without it the handoff is refused and the segments
    /// are kept
    #[arg(long)]
    pub(crate) overwrite: bool,
}

/// Options of `forkring verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// A run's result directory (its --out)
    pub(crate) dir: PathBuf,
    /// Print the result as one JSON object
    #[arg(long)]
    pub(crate) json: bool,
}

/// Options of `forkring bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub(crate) bench: BenchCommand,
}

/// The benchmarks (one variant per benchmark; each parses its own options).
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// One-way latency (futex Turn spinning and sleeping, pipe, unix
    /// socket, eventfd) and 208-byte message throughput (shm ring, pipe,
    /// unix socket) between two processes, verified and compared with the
    /// pipe.
    Transport(TransportArgs),
    /// The image job's stepping solo and alternating (ping and pong
    /// processes), and the Python ping-pong system's size table beside ours.
    Image(BenchImageArgs),
    /// The stream job against generation alone and against the same
    /// pipeline over a pipe and a unix socket; CPU at 1000 Hz.
    Stream(BenchStreamArgs),
    /// The task pool: 512 one-second calls, dispatch of empty tasks against
    /// the same workers behind a pipe and a socket, CPU tasks, relay
    /// chunks, and how soon a killed worker's tasks run again.
    Tasks(BenchTasksArgs),
    /// The NATS JetStream bridge against a local `nats-server -js` it
    /// starts: the stream with and without --export (block, drop), and
    /// empty tasks from a file against the same from a work queue
    Export(BenchExportArgs),
}

/// Options of `forkring bench export`.
#[derive(Debug, Args)]
pub(crate) struct BenchExportArgs {
    /// Vectors per stream run, 1,000 to 100,000,000 [default: 200,000]
    #[arg(long, default_value_t = 200_000, hide_default_value = true, value_parser = crate::units::whole_u64::<1000, 100_000_000>)]
    pub(crate) vectors: u64,
    /// Tasks per pool run, 100 to 10,000,000 [default: 20,000]
    #[arg(long, default_value_t = 20_000, hide_default_value = true, value_parser = crate::units::whole_u64::<100, 10_000_000>)]
    pub(crate) tasks: u64,
    /// Runs per figure; the best is reported (noise from other load)
    #[arg(long, default_value_t = 3, value_parser = crate::units::whole_u32::<1, 100>)]
    pub(crate) repeat: u32,
    /// One JSON object per measurement, one per line
    #[arg(long)]
    pub(crate) json: bool,
}

/// Options of `forkring bench tasks`.
#[derive(Debug, Args)]
pub struct BenchTasksArgs {
    /// One JSON object per measurement, one per line
    #[arg(long)]
    pub json: bool,
    /// Small sizes: checks that every measurement works (figures are not
    /// meaningful)
    #[arg(long)]
    pub quick: bool,
    /// Only these workloads, comma-separated: io, dispatch, cpu, relay,
    /// recovery [default: all]
    #[arg(long, value_delimiter = ',', value_name = "LIST",
          value_parser = clap::builder::PossibleValuesParser::new(crate::bench::tasks::WORKLOADS))]
    pub only: Vec<String>,
}

/// Options of `forkring bench image`.
#[derive(Debug, Args)]
pub(crate) struct BenchImageArgs {
    /// Image size for the solo/alternating comparison [default: 4096]
    #[arg(long, value_parser = crate::image::settings::parse_size)]
    pub(crate) size: Option<(u32, u32)>,
    /// Skip the Python ping-pong system's size table (README)
    #[arg(long, alias = "no-reference")]
    pub(crate) no_python_sizes: bool,
    /// Runs per figure; the best is reported (noise from other load)
    #[arg(long, default_value_t = 3, value_parser = crate::units::whole_u32::<1, 100>)]
    pub(crate) repeat: u32,
    /// One JSON object per measurement, one per line
    #[arg(long)]
    pub(crate) json: bool,
}

/// Options of `forkring bench stream`.
#[derive(Debug, Args)]
pub(crate) struct BenchStreamArgs {
    /// Vectors per throughput measurement, at least 1,000 [default:
    /// 5,000,000]
    #[arg(long, default_value_t = 5_000_000, hide_default_value = true, value_parser = crate::units::whole_u64::<1000, { u64::MAX }>)]
    pub(crate) count: u64,
    /// Seconds of the 1000 Hz CPU measurement, 0.01 to 3600
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_idle_seconds)]
    pub(crate) idle_seconds: f64,
    /// Runs per throughput figure; the best is reported (noise from other load)
    #[arg(long, default_value_t = 3, value_parser = crate::units::whole_u32::<1, 100>)]
    pub(crate) repeat: u32,
    /// One JSON object per measurement, one per line
    #[arg(long)]
    pub(crate) json: bool,
}

/// `bench stream --idle-seconds`: long enough for one tick, short enough to
/// finish.
fn parse_idle_seconds(s: &str) -> Result<f64, String> {
    let v = crate::units::parse_seconds_f64(s)?;
    if !(0.01..=3600.0).contains(&v) {
        return Err(format!("{s} seconds is out of range; give 0.01 to 3600"));
    }
    Ok(v)
}

/// Options of `forkring bench transport`.
#[derive(Debug, Args)]
pub(crate) struct TransportArgs {
    /// One JSON object per measurement, one per line
    #[arg(long)]
    pub(crate) json: bool,
    /// Passes per latency measurement (rounded up to even) [default: per
    /// mechanism]
    #[arg(long, alias = "handoffs", value_name = "N", value_parser = crate::units::whole_u64::<1, { crate::bench::transport::MAX_PASSES }>)]
    pub(crate) passes: Option<u64>,
    /// Messages per throughput measurement [default: per mechanism]
    #[arg(long, value_name = "N", value_parser = crate::units::whole_u64::<2, { u64::MAX }>)]
    pub(crate) messages: Option<u64>,
    /// Only these, comma-separated: turn-spin, turn-sleep, pipe, socket,
    /// eventfd, ring, or a kind (latency, throughput)
    #[arg(long, value_name = "LIST", value_parser = crate::bench::transport::parse_only)]
    pub(crate) only: Option<crate::bench::transport::Selection>,
}

fn parse_run_name(s: &str) -> Result<RunName, String> {
    RunName::new(s).map_err(|e| e.to_string())
}

/// The whole command line for the jobs of `registry`: the fixed
/// subcommands, each job's options of `run`, a subcommand per role kind and
/// each job's own commands.
pub(crate) fn command(registry: Registry) -> clap::Command {
    let names: Vec<&'static str> = registry.iter().map(|j| j.name()).collect();
    let defaults: Vec<&'static str> = registry
        .iter()
        .filter(|j| j.default_on())
        .map(|j| j.name())
        .collect();
    let jobs_help = format!(
        "Jobs to run, comma-separated: {} [default: {}]",
        registry
            .iter()
            .map(|j| format!("{} ({})", j.name(), j.about()))
            .collect::<Vec<_>>()
            .join("; "),
        defaults.join(",")
    );
    let mut cmd = Cli::command().mut_subcommand("run", |run| {
        let run = run.mut_arg("jobs", |a| {
            a.value_parser(clap::builder::PossibleValuesParser::new(names.clone()))
                .help(jobs_help.clone())
        });
        registry.iter().fold(run, |c, j| j.run_options(c))
    });
    for job in registry {
        for kind in job.role_kinds() {
            let sub = clap::Command::new(kind.name)
                .about(kind.about)
                .arg(
                    clap::Arg::new("run")
                        .long("run")
                        .required(true)
                        .value_name("NAME")
                        .value_parser(parse_run_name)
                        .help("The run to join (see `forkring status`)"),
                )
                .arg(
                    clap::Arg::new("index")
                        .long("index")
                        .value_name("I")
                        .default_value("0")
                        .hide_default_value(true)
                        .value_parser(clap::value_parser!(u32))
                        .help("Which role of this kind, from 0 [default: 0]"),
                );
            cmd = cmd.subcommand((kind.options)(sub));
        }
        for c in job.commands() {
            cmd = cmd.subcommand((c.command)());
        }
    }
    cmd
}

/// Parses the process's arguments, runs the command and exits with its
/// code. `main.rs` calls this with the registry; a test harness may call it
/// with its own.
pub fn main(registry: Registry) -> ! {
    // `forkring run` blocks its stop signals before anything else, parsing
    // included: a SIGTERM from the moment the process reaches main is a stop
    // request (documented behaviour), never death by the signal. (Only the
    // instant between exec and main remains, which no program can close.)
    if std::env::args_os().nth(1).is_some_and(|a| a == "run")
        && let Err(errno) = crate::supervisor::signals::block()
    {
        eprintln!("error: cannot block the stop signals: {errno}");
        std::process::exit(EXIT_FAILURE);
    }
    let m = command(registry).get_matches();
    match dispatch(&m, registry) {
        Ok(()) => std::process::exit(0),
        Err(f) => {
            // The same prefix as clap's usage errors.
            eprintln!("error: {}", f.message);
            std::process::exit(f.code);
        }
    }
}

/// Runs the parsed command.
pub(crate) fn dispatch(m: &ArgMatches, registry: Registry) -> Result<(), Failure> {
    let Some((name, sm)) = m.subcommand() else {
        return Err(Failure {
            code: EXIT_USAGE,
            message: "no command given; see `forkring --help`".into(),
        });
    };
    for job in registry {
        if let Some(kind) = job.role_kinds().iter().find(|k| k.name == name) {
            let run = sm.get_one::<RunName>("run").expect("required");
            let index = *sm.get_one::<u32>("index").expect("defaulted");
            // A role's error reaches the supervisor's stderr: name the role.
            let who = if kind.multiple {
                format!("{} {index}", kind.name)
            } else {
                kind.name.to_string()
            };
            return crate::supervisor::role::run_role(registry, kind.name, run, index, sm).map_err(
                |e| {
                    let f = report(e.into(), Some(run));
                    Failure {
                        message: format!("{who}: {}", f.message),
                        ..f
                    }
                },
            );
        }
        if let Some(c) = job
            .commands()
            .iter()
            .find(|c| (c.command)().get_name() == name)
        {
            return (c.run)(sm).map_err(|e| report(e.into(), None));
        }
    }
    let cli = Cli::from_arg_matches(m).map_err(|e| Failure {
        code: EXIT_USAGE,
        message: e.to_string(),
    })?;
    match cli.command {
        Command::Run(a) => {
            // First of all, before any thread starts and before any work:
            // from here on SIGINT/SIGTERM/SIGHUP are stop requests.
            let signals = crate::supervisor::signals::Signals::install().map_err(|errno| {
                report(
                    RunError::Os {
                        what: "cannot block the stop signals".into(),
                        errno,
                    }
                    .into(),
                    None,
                )
            })?;
            let name = a.name.clone();
            let opts = run_options(&a, sm, registry).map_err(|e| report(e, Some(&name)))?;
            crate::supervisor::run::run(opts, signals, registry)
                .map_err(|e| report(e.into(), Some(&name)))
        }
        Command::Status(a) => {
            crate::ops::status(a.name.as_ref(), a.json, a.watch, a.user, registry)
                .map_err(|e| report(e.into(), a.name.as_ref()))
        }
        Command::Completions(a) => {
            let mut cmd = command(registry);
            let mut out = Vec::new();
            clap_complete::generate(a.shell, &mut cmd, "forkring", &mut out);
            write_stdout(&out)
        }
        Command::Man(a) => {
            let cmd = command(registry);
            let page = match &a.subcommand {
                None => cmd,
                Some(name) => {
                    let sub = cmd.find_subcommand(name).cloned().ok_or_else(|| Failure {
                        code: EXIT_USAGE,
                        message: format!(
                            "no subcommand {name:?}; see `forkring --help` for the list"
                        ),
                    })?;
                    // clap names are 'static; this command prints and exits.
                    let full: &'static str =
                        Box::leak(format!("forkring-{}", sub.get_name()).into_boxed_str());
                    sub.name(full).version(crate::VERSION)
                }
            };
            let mut out = Vec::new();
            clap_mangen::Man::new(page)
                .render(&mut out)
                .map_err(|e| Failure {
                    code: EXIT_FAILURE,
                    message: format!("cannot render the manual page: {e}"),
                })?;
            write_stdout(&out)
        }
        Command::Clean(a) => crate::ops::clean(a.name.as_ref(), a.dry_run)
            .map_err(|e| report(e.into(), a.name.as_ref())),
        Command::Handoff(a) => crate::ops::handoff(&a.run, a.out.as_deref(), a.overwrite, registry)
            .map_err(|e| report(e.into(), Some(&a.run))),
        Command::Verify(a) => {
            let result = crate::ops::verify(&a.dir, registry);
            if a.json {
                let doc = crate::ops::verify_json(&a.dir, &result);
                write_stdout(format!("{doc}\n").as_bytes())?;
            }
            let lines = result.map_err(|e| report(e.into(), None))?;
            if !a.json {
                let text: String = lines.iter().map(|l| format!("ok: {l}\n")).collect();
                write_stdout(text.as_bytes())?;
            }
            Ok(())
        }
        Command::Bench(a) => match a.bench {
            BenchCommand::Transport(t) => {
                crate::bench::transport::run(&crate::bench::transport::Options {
                    json: t.json,
                    passes: t.passes,
                    messages: t.messages,
                    only: t.only.map(|s| s.0),
                })
            }
            BenchCommand::Image(i) => crate::bench::image::run(&crate::bench::image::Options {
                size: i.size.unwrap_or((4096, 4096)),
                json: i.json,
                python_sizes: !i.no_python_sizes,
                repeat: i.repeat,
            }),
            BenchCommand::Tasks(t) => crate::bench::tasks::run(&crate::bench::tasks::Options {
                json: t.json,
                quick: t.quick,
                only: t.only,
            }),
            BenchCommand::Export(n) => crate::bench::export::run(&crate::bench::export::Options {
                vectors: n.vectors,
                tasks: n.tasks,
                repeat: n.repeat,
                json: n.json,
            }),
            BenchCommand::Stream(s) => crate::bench::stream::run(&crate::bench::stream::Options {
                count: s.count,
                idle_seconds: s.idle_seconds,
                json: s.json,
                repeat: s.repeat,
            }),
        }
        .map_err(|e| report(e.into(), None)),
        Command::BenchPeer(a) => crate::bench::peer::run(&a).map_err(|e| report(e.into(), None)),
    }
}

/// Writes to stdout; a reader that went away is a failure, not a panic.
fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(bytes)
        .and_then(|()| o.flush())
        .map_err(|e| Failure {
            code: EXIT_FAILURE,
            message: format!("cannot write to stdout: {e}"),
        })
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

/// `forkring run`'s options and settings, every value checked before
/// anything touches the file system or /dev/shm (the output directory is
/// created last).
fn run_options(a: &RunArgs, m: &ArgMatches, registry: Registry) -> Result<RunOptions, Error> {
    let wanted: Vec<&str> = if a.jobs.is_empty() {
        registry
            .iter()
            .filter(|j| j.default_on())
            .map(|j| j.name())
            .collect()
    } else {
        a.jobs.iter().map(String::as_str).collect()
    };
    let seed = a.seed.unwrap_or_else(random_seed);
    let common = Common {
        seed,
        connect_timeout: a.connect_timeout,
    };
    let mut jobs = Vec::new();
    for j in registry.iter() {
        if wanted.contains(&j.name()) {
            jobs.push(j.settings(m, &common)?);
        } else {
            let given = j.options_given(m);
            if !given.is_empty() {
                return Err(JobError::Usage(format!(
                    "{} given, but the {} job is not in --jobs; add it (--jobs {}) or drop the option",
                    given.join(", "),
                    j.name(),
                    wanted
                        .iter()
                        .copied()
                        .chain([j.name()])
                        .collect::<Vec<_>>()
                        .join(",")
                ))
                .into());
            }
        }
    }
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("forkring-out").join(a.name.as_str()));
    let probe = RunSettings {
        out: std::path::absolute(&out).unwrap_or_else(|_| PathBuf::from("/")),
        jobs,
    };
    probe.roles().map_err(RunError::from)?;
    // What the roles will decode must be what was asked for: a job whose
    // recorded settings fail its own checks is refused here, before
    // anything exists, not by every role at start-up.
    RunSettings::decode(&probe.encode(), registry)
        .map_err(|e| RunError::Usage(format!("the settings do not survive recording: {e}")))?;
    let out = crate::outfile::prepare_dir(&out)
        .map_err(|source| RunError::Output { run: None, source })?;
    Ok(RunOptions {
        name: a.name.clone(),
        settings: RunSettings {
            out,
            jobs: probe.jobs,
        },
        stop_timeout: a.stop_timeout,
        policy: RestartPolicy {
            max_restarts: a.max_restarts,
            window: a.restart_window,
        },
        duration: a.duration,
        quiet: a.quiet,
        json: a.json,
        overwrite: a.overwrite,
        seed_given: a.seed.is_some(),
        group: a.group,
    })
}

/// The one place where an error becomes an exit code and a message with
/// what to do about it. `run` is the run the command was about, if any.
pub fn report(e: Error, run: Option<&RunName>) -> Failure {
    let msg = e.to_string();
    let clean = |r: &RunName| format!("; discard it with `forkring clean {r}`");
    let retry = |r: &RunName| {
        format!(". The run's segments are kept; retry with `forkring handoff --run {r} --out DIR`")
    };
    let lost = |r: &RunName| {
        format!(
            ". No retry can bring them back: only `forkring clean {r}` is left, which discards the run"
        )
    };
    const SPACE: &str =
        "; free space (`forkring clean`), enlarge the tmpfs, or with docker use --shm-size";
    // Before the damage hints: `clean` would refuse such a file.
    const FOREIGN: &str = "; forkring did not make that file for this user and will not remove it: its owner may, or use another --name";
    let (code, hint) = match &e {
        e if is_foreign(e) => (EXIT_FAILURE, FOREIGN.into()),
        Error::Run(RunError::Usage(_))
        | Error::Job(JobError::Usage(_))
        | Error::Run(RunError::Job(JobError::Usage(_)))
        | Error::Run(RunError::NoSuchRole { .. })
        | Error::Run(RunError::TooManyRoles(_)) => (EXIT_USAGE, String::new()),
        Error::Run(RunError::RestartLimit { run, .. }) => (
            EXIT_RESTART_LIMIT,
            format!(
                ". The segments are kept: fix the cause, then run the same `forkring run --name {run}` to resume, or discard them with `forkring clean {run}`"
            ),
        ),
        Error::Run(RunError::Interrupted) => (EXIT_INTERRUPTED, String::new()),
        Error::Run(RunError::NoShmSpace { .. }) => (EXIT_FAILURE, SPACE.into()),
        Error::Run(RunError::CannotResume { run, .. }) => (EXIT_FAILURE, clean(run)),
        Error::Run(RunError::DifferentSettings { run, .. }) => (
            EXIT_FAILURE,
            format!(
                "; resume it with the same settings, or discard it with `forkring clean {run}`"
            ),
        ),
        Error::Run(RunError::Control(crate::control::ControlError::Live { .. })) => (
            EXIT_FAILURE,
            "; pick another --name or stop it first".into(),
        ),
        Error::Run(RunError::Control(crate::control::ControlError::RoleTaken { run, .. })) => (
            EXIT_FAILURE,
            format!(
                "; the run's supervisor is dead, and its roles died with it, so another process holds the slot: find it with `fuser -v /dev/shm/forkring.{run}.control`, stop it, then run again"
            ),
        ),
        Error::Run(RunError::Live { .. }) => {
            (EXIT_FAILURE, "; stop it first (SIGTERM), then clean".into())
        }
        Error::Run(RunError::Handoff { run, source, .. })
            if matches!(**source, JobError::Lost(_)) =>
        {
            (EXIT_FAILURE, lost(run))
        }
        Error::Job(JobError::Lost(_)) | Error::Run(RunError::Job(JobError::Lost(_))) => {
            (EXIT_FAILURE, run.map(lost).unwrap_or_default())
        }
        Error::Run(RunError::Handoff { run, .. })
        | Error::Run(RunError::Output { run: Some(run), .. }) => (EXIT_FAILURE, retry(run)),
        Error::Run(RunError::Output { run: None, .. }) => (
            EXIT_FAILURE,
            "; choose a writable directory with --out".into(),
        ),
        Error::Run(RunError::NoSuchRun(_)) => {
            (EXIT_FAILURE, "; `forkring status` lists the runs".into())
        }
        Error::Run(RunError::Unreadable { foreign: true, .. }) => (
            EXIT_FAILURE,
            "; it is another user's or not forkring's. To look at another user's run read-only, pass --user OWNER (root may always look); the owner must share it with a group of yours (`forkring run --group GROUP`)".into(),
        ),
        Error::Run(RunError::Unreadable { run, .. }) => (EXIT_FAILURE, clean(run)),
        Error::Run(RunError::WouldOverwrite { .. }) => (
            EXIT_FAILURE,
            format!(
                "; pass --overwrite to replace them, or write them elsewhere: a new run with another --out, a stopped one (its results are kept in its segments) with `forkring handoff --run {} --out OTHER_DIR`",
                run.map_or("NAME", |r| r.as_str())
            ),
        ),
        Error::Job(JobError::SupervisorGone { run })
        | Error::Run(RunError::Job(JobError::SupervisorGone { run })) => (
            EXIT_FAILURE,
            format!(
                "; stopping (start `forkring run --name {run}` with the same settings to resume)"
            ),
        ),
        e if is_no_space(e) => (EXIT_FAILURE, SPACE.into()),
        e if is_damage(e) => (EXIT_FAILURE, run.map(clean).unwrap_or_default()),
        Error::Bench(b) if b.is_usage() => (EXIT_USAGE, String::new()),
        Error::Bench(crate::bench::BenchError::Interrupted) => (EXIT_INTERRUPTED, String::new()),
        _ => (EXIT_FAILURE, String::new()),
    };
    Failure {
        code,
        message: format!("{msg}{hint}"),
    }
}

fn segments_error(e: &Error) -> Option<&SegmentsError> {
    match e {
        Error::Job(JobError::Segments(s)) | Error::Run(RunError::Job(JobError::Segments(s))) => {
            Some(s)
        }
        _ => None,
    }
}

fn is_no_space(e: &Error) -> bool {
    matches!(
        segments_error(e),
        Some(SegmentsError::Create(CreateError::NoSpace { .. }))
    )
}

/// Whether the error says a segment's name is taken by a file that is not
/// one of our segments (another user's, a FIFO, a link).
fn is_foreign(e: &Error) -> bool {
    fn run(r: &RunError) -> bool {
        match r {
            RunError::Control(c) | RunError::Job(JobError::Control(c)) => c.is_foreign(),
            RunError::Job(JobError::Segments(s)) => s.is_foreign(),
            RunError::CannotResume { source, .. } => run(source),
            _ => false,
        }
    }
    match e {
        Error::Run(r) => run(r),
        Error::Job(JobError::Control(c)) => c.is_foreign(),
        Error::Job(JobError::Segments(s)) => s.is_foreign(),
        _ => false,
    }
}

/// Whether the error says a run's segments exist but cannot be used.
fn is_damage(e: &Error) -> bool {
    match e {
        Error::Run(RunError::Control(c)) | Error::Job(JobError::Control(c)) => c.is_damage(),
        Error::Run(RunError::Settings { .. } | RunError::RoleCount { .. }) => true,
        e => segments_error(e).is_some_and(SegmentsError::is_damage),
    }
}
