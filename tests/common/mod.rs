//! Helpers shared by the integration tests: run the real binary, give each
//! run a unique name, clean up segments, serialise heavy tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_forkring")
}

/// Tests in one file that start runs take this lock: two runs that spin on
/// two cores at once would starve each other.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A unique run name for this test process.
pub fn run_name(tag: &str) -> String {
    format!("t-{tag}-{}", std::process::id())
}

/// Segment files of `run` currently in /dev/shm.
pub fn segments_of(run: &str) -> Vec<String> {
    let prefix = format!("forkring.{run}.");
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Removes a run's segments when dropped (tests that fail midway must not
/// leak segments into later tests).
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in segments_of(&self.0) {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(f));
        }
    }
}

/// Runs `forkring args...` to completion.
pub fn forkring(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("forkring runs")
}

/// A background run whose output goes to a file (never to a pipe nobody
/// reads: a full pipe would block the supervisor).
pub struct Bg {
    pub child: Child,
    log: tempfile::NamedTempFile,
}

impl Bg {
    /// Everything the run printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
    /// Pid of the supervisor.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
    /// Waits with a generous limit; kills it and panics after.
    pub fn wait(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return (st, self.log());
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("forkring did not finish within {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A test that fails midway must not leave its run working: the
/// supervisor is killed (its roles die with it: parent-death signal).
impl Drop for Bg {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `forkring args...` in the background, output to a file.
pub fn spawn(args: &[&str]) -> Bg {
    spawn_env(args, &[])
}

/// Like `spawn`, with extra environment variables.
pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Bg {
    let log = tempfile::NamedTempFile::new().expect("log file");
    let out = log.reopen().expect("log file");
    let err = log.reopen().expect("log file");
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    for (k, v) in env {
        cmd.env(k, v);
    }
    // The tests signal what they start: give it the default dispositions,
    // whatever this test process inherited (a background job of a
    // non-interactive shell ignores SIGINT, and exec keeps that).
    // SAFETY: between fork and exec, `signal` is async-signal-safe and
    // touches only the child's dispositions; no memory is allocated.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("forkring starts");
    Bg { child, log }
}

/// Text of stdout + stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A temporary output directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Reads DIR/summary.json.
pub fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json exists");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

/// Path helper.
pub fn p(dir: &Path, f: &str) -> PathBuf {
    dir.join(f)
}

/// Pids of the live roles of `run` as (role label, pid), read from the
/// control segment through the library (read-only).
pub fn live_roles(run: &str) -> Vec<(String, u32)> {
    use forkring::shm::{Access, RunName};
    use forkring::supervisor::opened::OpenRun;
    let Ok(name) = RunName::new(run) else {
        return vec![];
    };
    let Ok(open) = OpenRun::open(&name, Access::ReadOnly, forkring::jobs::ALL) else {
        return vec![];
    };
    open.roles
        .iter()
        .map(|r| (r.label(), open.control.role_view(r.slot)))
        .filter(|(_, v)| v.alive && v.pid != 0)
        .map(|(l, v)| (l, v.pid))
        .collect()
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Sends a signal.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid and a signal number has no memory effects.
    unsafe { libc::kill(pid as i32, sig) };
}

/// A small deterministic generator for test timing choices.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Waits until `run` has all `n` roles alive or `limit` passes.
pub fn wait_roles(run: &str, n: usize, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if live_roles(run).len() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// SIGKILLs random live roles of `run` at random moments (up to
/// `max_gap_us` apart) until `kills` more have been sent or the run exits.
/// Returns the kills sent, by role.
pub fn kill_random_roles(
    bg: &mut Bg,
    run: &str,
    rng: &mut Lcg,
    max_gap_us: u64,
    kills: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut sent = std::collections::BTreeMap::new();
    let mut total = 0;
    while total < kills && !bg.exited() {
        std::thread::sleep(Duration::from_micros(rng.below(max_gap_us)));
        let roles = live_roles(run);
        if roles.is_empty() {
            continue;
        }
        let (role, pid) = roles[rng.below(roles.len() as u64) as usize].clone();
        signal(pid, libc::SIGKILL);
        *sent.entry(role).or_insert(0) += 1;
        total += 1;
    }
    sent
}

/// A test's run: a unique name, its output directory, and removal of its
/// segments when the test ends (passing or not).
pub struct Scene {
    /// The run's name.
    pub name: String,
    /// Its output directory.
    pub dir: tempfile::TempDir,
    _cleanup: Cleanup,
}

impl Scene {
    /// A new scene; `tag` makes the run name readable.
    pub fn new(tag: &str) -> Scene {
        let name = run_name(tag);
        Scene {
            _cleanup: Cleanup(name.clone()),
            name,
            dir: tempdir(),
        }
    }
    /// The output directory as a string.
    pub fn out(&self) -> &str {
        self.dir.path().to_str().expect("temp paths are UTF-8")
    }
    /// `run --name NAME --quiet --out DIR` followed by `extra`.
    pub fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["run", "--name", &self.name, "--quiet", "--out", self.out()];
        v.extend_from_slice(extra);
        v
    }
    /// Runs `forkring run ... extra` to completion.
    pub fn run(&self, extra: &[&str]) -> Output {
        forkring(&self.args(extra))
    }
    /// Starts `forkring run ... extra` in the background.
    pub fn spawn(&self, extra: &[&str]) -> Bg {
        spawn(&self.args(extra))
    }
    /// DIR/summary.json.
    pub fn summary(&self) -> serde_json::Value {
        summary(self.dir.path())
    }
}

/// Pid of the live process playing `role` (a label: `ping`, `worker 3`) in
/// `run` (panics if none).
pub fn role_pid(run: &str, role: &str) -> u32 {
    live_roles(run)
        .into_iter()
        .find(|(r, _)| *r == role)
        .unwrap_or_else(|| panic!("no live {role} in run {run}"))
        .1
}

/// Overwrites `bytes` at `offset` of the file at `path` without truncating
/// it: live processes that map the file see the new bytes, never a SIGBUS.
pub fn patch_in_place(path: &str, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    f.write_all_at(bytes, offset)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// Waits until `run` has `n` roles attached (state `running` in `status
/// --json`: past opening and validating their segments), or `limit`
/// passes. Alive is not enough where a test changes a segment: a role still
/// attaching would read the change.
pub fn wait_attached(run: &str, n: usize, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        let o = forkring(&["status", run, "--json"]);
        let attached = serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .ok()
            .and_then(|v| {
                v[0]["roles"].as_array().map(|r| {
                    r.iter()
                        .filter(|r| r["state"] == "running" && r["alive"] == true)
                        .count()
                })
            })
            .unwrap_or(0);
        if attached >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// The fields of a `stream.jsonl` record that are timing figures (they
/// differ from run to run; everything else must not).
pub const TIMING_FIELDS: [&str; 6] = [
    "sent_ns",
    "time_utc",
    "rate_hz",
    "interval_std_us",
    "lateness_max_us",
    "lateness_p99_us",
];

/// Removes the timing fields from a `stream.jsonl` record; returns those
/// it did not have.
pub fn strip_timing(v: &mut serde_json::Value) -> Vec<&'static str> {
    let o = v.as_object_mut().expect("a record is a JSON object");
    TIMING_FIELDS
        .into_iter()
        .filter(|k| o.remove(*k).is_none())
        .collect()
}

/// Creates run `sc.name`'s control and image segments (`size`², seed 1)
/// with the library and lets go of them: a dead run no process maps.
pub fn dead_image_run(sc: &Scene, size: u32) -> forkring::shm::RunName {
    use forkring::image::ImageSettings;
    use forkring::image::layout::ImageSegments;
    use forkring::settings::RunSettings;
    use forkring::supervisor::opened::OpenRun;
    let run = forkring::shm::RunName::new(&sc.name).unwrap();
    let img = ImageSettings {
        width: size,
        height: size,
        seed: 1,
    };
    let settings = RunSettings {
        out: sc.dir.path().to_path_buf(),
        jobs: vec![Box::new(img.clone())],
    };
    let open = OpenRun::create(&run, &settings).unwrap();
    drop(ImageSegments::create(&run, &img).unwrap());
    drop(open);
    run
}
