//! The job interface is enough: a job compiled only for this test, added by
//! one registry line, with a role kind of multiplicity 8 (`--workers`), is
//! started, restarted, stopped, resumed and handed off by the real
//! supervisor, and `status --json` shows its counters.
//!
//! This file has its own `main` (harness = false): run with
//! `FORKRING_TEST_CLI=1` it *is* forkring, with the test registry, so the
//! supervisor it starts spawns this same executable as the job's roles.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use clap::{Arg, ArgMatches, value_parser};
use forkring::job::{
    Common, Counter, Difference, HandoffCtx, Job, JobError, JobHost, JobSettings, Place, Progress,
    Registry, RoleCtx, RoleId, RoleKind, no_check, no_options,
};
use forkring::shm::header::HEADER_SIZE;
use forkring::shm::layout::Fingerprint;
use forkring::shm::segment::{Access, Segment, SegmentSpec};
use forkring::shm::{CachePadded, Flag, RunName, Stat64};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use common::*;

/// The registry of this test: forkring's jobs plus one line.
static REGISTRY: Registry = &[
    &forkring::image::JOB as &dyn Job,
    &forkring::stream::JOB,
    &COUNTER,
];

// ---------------------------------------------------------------------------
// The job: N workers each count to --steps, one step every 2 ms; a step's
// commit point is the store of the worker's counter.
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct CounterJob;
static COUNTER: CounterJob = CounterJob;

static KINDS: [RoleKind; 1] = [RoleKind {
    name: "counter-worker",
    about: "Counts to --steps (test job)",
    multiple: true,
    options: no_options,
    check: no_check,
    run: worker,
}];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CounterSettings {
    workers: u32,
    steps: u64,
}

const STEP: Duration = Duration::from_millis(2);

fn spec(workers: u32) -> SegmentSpec {
    SegmentSpec {
        part: "counter",
        version: 1,
        fingerprint: Fingerprint::new("counter").num(128).finish(),
        size: Some(HEADER_SIZE + 128 * (1 + workers as usize)),
    }
}

struct CounterSegment {
    seg: Segment,
    workers: u32,
}

impl std::fmt::Debug for CounterSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.seg.name())
    }
}

impl CounterSegment {
    fn finish(&self) -> &Flag {
        let f: &CachePadded<Flag> = self.seg.body().expect("sized by spec");
        f
    }
    fn count(&self, w: u32) -> &Stat64 {
        let c: &CachePadded<Stat64> = self
            .seg
            .view(HEADER_SIZE + 128 * (1 + w.min(self.workers - 1) as usize))
            .expect("sized by spec");
        c
    }
    fn total(&self) -> u64 {
        (0..self.workers).map(|w| self.count(w).get()).sum()
    }
}

#[derive(Debug)]
struct CounterHost {
    seg: CounterSegment,
    settings: CounterSettings,
}

fn worker(ctx: &RoleCtx<'_>) -> Result<(), JobError> {
    let s: &CounterSettings = ctx.settings()?;
    let seg = CounterSegment {
        seg: Segment::open(
            ctx.run,
            &spec(s.workers),
            Access::ReadWrite,
            Duration::from_secs(2),
        )
        .map_err(|e| JobError::Segments(e.into()))?,
        workers: s.workers,
    };
    ctx.attached();
    let mine = seg.count(ctx.role.index);
    let mut last_check = Instant::now();
    loop {
        let n = mine.get();
        if n >= s.steps || seg.finish().is_set() || ctx.stop().is_set() {
            return Ok(());
        }
        std::thread::sleep(STEP);
        mine.set(n + 1);
        if last_check.elapsed() > Duration::from_millis(200) {
            ctx.require_supervisor()?;
            last_check = Instant::now();
        }
    }
}

impl Job for CounterJob {
    fn name(&self) -> &'static str {
        "counter"
    }
    fn about(&self) -> &'static str {
        "workers count (a test job)"
    }
    fn role_kinds(&self) -> &'static [RoleKind] {
        &KINDS
    }
    fn run_options(&self, cmd: clap::Command) -> clap::Command {
        cmd.arg(
            Arg::new("workers")
                .long("workers")
                .value_parser(value_parser!(u32))
                .help("Counter workers [default: 8]"),
        )
        .arg(
            Arg::new("steps")
                .long("steps")
                .value_parser(value_parser!(u64))
                .help("Steps per worker [default: 200]"),
        )
    }
    fn options_given(&self, m: &ArgMatches) -> Vec<String> {
        forkring::job::given(m, &["workers", "steps"])
    }
    fn settings(&self, m: &ArgMatches, _: &Common) -> Result<Box<dyn JobSettings>, JobError> {
        let workers = m.get_one::<u32>("workers").copied().unwrap_or(8);
        if workers == 0 {
            return Err(JobError::Usage("--workers 0: give at least 1".into()));
        }
        Ok(Box::new(CounterSettings {
            workers,
            steps: m.get_one::<u64>("steps").copied().unwrap_or(200),
        }))
    }
    fn decode(&self, bytes: &[u8]) -> Result<Box<dyn JobSettings>, String> {
        let s: CounterSettings = forkring::job::decode_bincode(bytes)?;
        Ok(Box::new(s))
    }
    fn result_files(&self) -> &'static [&'static str] {
        &["counter.json"]
    }
    fn summary_line(&self, s: &Value) -> String {
        format!("counter {} steps", s["steps"])
    }
    fn verify(&self, dir: &Path, s: &Value) -> Result<String, JobError> {
        let text = std::fs::read_to_string(dir.join("counter.json"))
            .map_err(|e| JobError::Failed(format!("counter.json: {e}")))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| JobError::Failed(e.to_string()))?;
        if v["steps"] != s["steps"] {
            return Err(JobError::Failed("counter.json disagrees".into()));
        }
        Ok(format!("counter: {} steps", s["steps"]))
    }
}

impl JobSettings for CounterSettings {
    fn job(&self) -> &'static dyn Job {
        &COUNTER
    }
    fn encode(&self) -> Vec<u8> {
        forkring::job::encode_bincode(self)
    }
    fn clone_box(&self) -> Box<dyn JobSettings> {
        Box::new(self.clone())
    }
    fn roles(&self) -> Vec<(&'static RoleKind, u32)> {
        vec![(&KINDS[0], self.workers)]
    }
    fn shm_bytes(&self) -> u64 {
        spec(self.workers).size.unwrap() as u64
    }
    fn differences(&self, requested: &dyn JobSettings) -> Vec<Difference> {
        let b = requested.downcast::<CounterSettings>().unwrap();
        [
            Difference::of("--workers", Some(self.workers), Some(b.workers)),
            Difference::of("--steps", Some(self.steps), Some(b.steps)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
    fn ends_run(&self) -> bool {
        true
    }
    fn to_json(&self) -> Value {
        json!({ "workers": self.workers, "steps": self.steps })
    }
    fn create(&self, at: Place<'_>) -> Result<Box<dyn JobHost>, JobError> {
        let seg = Segment::create(at.run, &spec(self.workers), |_| {})
            .map_err(|e| JobError::Segments(e.into()))?;
        Ok(Box::new(CounterHost {
            seg: CounterSegment {
                seg,
                workers: self.workers,
            },
            settings: self.clone(),
        }))
    }
    fn open(&self, at: Place<'_>, access: Access) -> Result<Box<dyn JobHost>, JobError> {
        let seg = Segment::open(at.run, &spec(self.workers), access, Duration::from_secs(2))
            .map_err(|e| JobError::Segments(e.into()))?;
        Ok(Box::new(CounterHost {
            seg: CounterSegment {
                seg,
                workers: self.workers,
            },
            settings: self.clone(),
        }))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl JobHost for CounterHost {
    fn job(&self) -> &'static dyn Job {
        &COUNTER
    }
    fn kick(&self) {}
    fn request_finish(&self) {
        self.seg.finish().set();
    }
    fn is_complete(&self) -> bool {
        self.seg.total() >= self.settings.steps * self.settings.workers as u64
    }
    fn role_exited(&self, _role: &RoleId, _failed: bool, _stopping: bool) {}
    fn progress(&self) -> Progress {
        Progress {
            job: "counter".into(),
            counters: vec![Counter::count(
                "steps",
                self.seg.total(),
                "steps",
                Some(self.settings.steps * self.settings.workers as u64),
            )],
        }
    }
    fn handoff(&self, out: &Path, _ctx: &HandoffCtx<'_>) -> Result<Value, JobError> {
        let per: Vec<u64> = (0..self.settings.workers)
            .map(|w| self.seg.count(w).get())
            .collect();
        let body = json!({ "steps": self.seg.total(), "per_worker": per });
        let w = forkring::outfile::write_atomic(&out.join("counter.json"), |w| {
            w.write_all(body.to_string().as_bytes())
        })?;
        Ok(json!({
            "steps": self.seg.total(),
            "per_worker": per,
            "files": { "counter.json": { "bytes": w.bytes, "sha256": w.sha256 } },
        }))
    }
    fn segment_names(&self) -> Vec<String> {
        vec![self.seg.seg.name().to_string()]
    }
}

// ---------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------

const AS_CLI: &str = "FORKRING_TEST_CLI";

fn me() -> Command {
    let mut c = Command::new(std::env::current_exe().expect("own path"));
    c.env(AS_CLI, "1");
    c
}

fn forkring_here(args: &[&str]) -> Output {
    me().args(args).output().expect("runs")
}

fn spawn_here(args: &[&str]) -> std::process::Child {
    let log = std::fs::File::create(
        std::env::temp_dir().join(format!("plugin-job-{}.log", std::process::id())),
    )
    .expect("log");
    me().args(args)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("starts")
}

fn live_workers(run: &str) -> Vec<(String, u32)> {
    let Ok(name) = RunName::new(run) else {
        return vec![];
    };
    let Ok(open) = forkring::supervisor::opened::OpenRun::open(&name, Access::ReadOnly, REGISTRY)
    else {
        return vec![];
    };
    open.roles
        .iter()
        .map(|r| (r.label(), open.control.role_view(r.slot)))
        .filter(|(_, v)| v.alive && v.pid != 0)
        .map(|(l, v)| (l, v.pid))
        .collect()
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(t.elapsed() < limit, "the run did not end within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn full_lifecycle() {
    let sc = Scene::new("plugin");
    let args = sc.args(&["--jobs", "counter", "--workers", "8", "--steps", "1000"]);
    let mut bg = spawn_here(&args);
    assert!(
        wait_until(Duration::from_secs(60), || live_workers(&sc.name).len()
            == 8),
        "8 workers did not start"
    );
    // status --json shows the job's counters, through the interface alone.
    let st = forkring_here(&["status", &sc.name, "--json"]);
    assert!(st.status.success(), "{}", text(&st));
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    let v = &v[0];
    assert_eq!(v["jobs"], json!(["counter"]), "{v}");
    assert_eq!(v["roles"].as_array().unwrap().len(), 8, "{v}");
    assert_eq!(v["roles"][3]["role"], "counter-worker 3", "{v}");
    assert_eq!(v["progress"][0]["job"], "counter", "{v}");
    assert_eq!(v["progress"][0]["counters"][0]["name"], "steps", "{v}");
    assert_eq!(v["progress"][0]["counters"][0]["total"], 8000, "{v}");

    // A killed worker is restarted.
    let (_, pid) = live_workers(&sc.name)
        .into_iter()
        .find(|(l, _)| l == "counter-worker 3")
        .expect("worker 3 is live");
    signal(pid, libc::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(30), || live_workers(&sc.name)
            .iter()
            .any(|(l, p)| l == "counter-worker 3" && *p != pid)),
        "worker 3 was not restarted"
    );

    // The supervisor killed: the workers die with it; the same command
    // resumes the run and completes it.
    signal(bg.id(), libc::SIGKILL);
    let _ = bg.wait();
    assert!(
        wait_until(Duration::from_secs(5), || live_workers(&sc.name).is_empty()),
        "workers outlived their supervisor"
    );
    let mut again = spawn_here(&args);
    let st = wait_exit(&mut again, Duration::from_secs(120));
    assert!(st.success(), "the resumed run failed");
    let s = sc.summary();
    assert_eq!(s["resumes"], 1, "{s}");
    assert_eq!(s["complete"], true, "{s}");
    assert_eq!(s["counter"]["steps"], 8000, "{s}");
    assert!(
        s["restarts"]["counter-worker 3"].as_u64().unwrap() >= 1,
        "{s}"
    );
    let v = forkring_here(&["verify", sc.out()]);
    assert!(v.status.success(), "{}", text(&v));
    assert!(segments_of(&sc.name).is_empty());

    // Stopped by SIGTERM: handed off, partial.
    let sc = Scene::new("plugin-term");
    let mut bg = spawn_here(&sc.args(&["--jobs", "counter", "--steps", "100000"]));
    assert!(wait_until(Duration::from_secs(60), || live_workers(
        &sc.name
    )
    .len()
        == 8));
    std::thread::sleep(Duration::from_millis(100));
    signal(bg.id(), libc::SIGTERM);
    let st = wait_exit(&mut bg, Duration::from_secs(60));
    assert!(st.success());
    let s = sc.summary();
    assert_eq!(s["stopped_by"], "SIGTERM", "{s}");
    assert_eq!(s["complete"], false, "{s}");
    assert!(s["counter"]["steps"].as_u64().unwrap() > 0, "{s}");
    assert!(segments_of(&sc.name).is_empty());

    // Bad input of the job: a usage error, nothing created.
    let sc = Scene::new("plugin-bad");
    let o = forkring_here(&sc.args(&["--jobs", "counter", "--workers", "0"]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = forkring_here(&sc.args(&["--jobs", "counter", "--workers", "1025"]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("at most 1024"), "{}", text(&o));
    assert!(segments_of(&sc.name).is_empty());
}

fn main() {
    if std::env::var_os(AS_CLI).is_some() {
        forkring::cli::main(REGISTRY);
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: [(&str, fn()); 1] = [("full_lifecycle", full_lifecycle)];
    let mut failed = 0;
    for (name, t) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let _g = serial();
        let start = Instant::now();
        match std::panic::catch_unwind(t) {
            Ok(()) => println!(
                "test {name} ... ok ({:.1} s)",
                start.elapsed().as_secs_f64()
            ),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
}
