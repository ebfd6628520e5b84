//! Corrupted segments of a killed run never become a wrong result.
//!
//! A run of the image job and one of the stream job are killed whole
//! (SIGKILL to the supervisor and every role) half-way, and their segments
//! and output directory are kept as a base. Each trial restores the base,
//! mutates one segment in place (random bytes, a random header field, or a
//! boundary value in a field of the control part), then runs `status`, a
//! resuming `run` and `handoff`, each under a time limit. Every outcome must
//! be a correct result (the same bytes as a fault-free run of the same seed;
//! for the stream, the same records once the timing figures are taken out)
//! or a non-zero exit with a one-line cause; never a signal, a panic, a hang,
//! or a wrong result with exit 0.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Limit for one command of a trial.
const LIMIT: Duration = Duration::from_secs(20);

const IMAGE: &[&str] = &["--jobs", "image", "--size", "256", "--seed", "9"];
const IMAGE_PARTS: [&str; 5] = ["image", "pixels", "posmask", "colmask", "history"];
const STREAM: &[&str] = &[
    "--jobs", "stream", "--rate", "max", "--count", "200000", "--seed", "9",
];
const STREAM_PARTS: [&str; 2] = ["stream", "ring"];
/// Header fields: (offset, size).
const HEADER_FIELDS: [(u64, usize); 8] = [
    (0, 8),
    (8, 4),
    (12, 4),
    (16, 8),
    (24, 8),
    (32, 4),
    (40, 8),
    (48, 16),
];

/// Runs `forkring args` in its own process group; kills the group and
/// fails the test if it takes longer than `LIMIT`.
fn bounded(args: &[&str]) -> Output {
    let log = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.reopen().unwrap()))
        .stderr(Stdio::from(err.reopen().unwrap()))
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > LIMIT {
            signal_group(child.id(), libc::SIGKILL);
            let _ = child.wait();
            panic!(
                "hang: forkring {args:?} did not finish within {LIMIT:?}:\n{}{}",
                std::fs::read_to_string(log.path()).unwrap_or_default(),
                std::fs::read_to_string(err.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Output {
        status,
        stdout: std::fs::read(log.path()).unwrap(),
        stderr: std::fs::read(err.path()).unwrap(),
    }
}

fn signal_group(pgid: u32, sig: i32) {
    // SAFETY: kill(2) on a process group has no memory effects.
    unsafe { libc::kill(-(pgid as i32), sig) };
}

/// The checks every command of a trial must pass: an exit code (no
/// signal), no panic, and a one-line cause when it fails.
fn sane(what: &str, args: &[&str], o: &Output) {
    let all = text(o);
    let code = o.status.code().unwrap_or_else(|| {
        panic!(
            "{what}: forkring {args:?} died by a signal: {:?}\n{all}",
            o.status
        )
    });
    assert!(
        code != 101 && !all.contains("panicked"),
        "{what}: forkring {args:?} panicked:\n{all}"
    );
    if code != 0 && what != "status" {
        let err = String::from_utf8_lossy(&o.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty());
        assert!(
            last.is_some_and(|l| l.starts_with("error") || l.contains("forkring")),
            "{what}: forkring {args:?} exited {code} without a cause on its last line:\n{all}"
        );
    }
}

/// The parts of a result that must not depend on timing.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// image.png and history.bin.
    Image(Vec<u8>, Vec<u8>),
    /// stream.jsonl without its timing figures, and the summary's counts.
    Stream(Vec<Value>, Vec<Value>),
}

fn result_of(dir: &Path) -> Option<Outcome> {
    let summary = std::fs::read_to_string(dir.join("summary.json")).ok()?;
    let summary: Value = serde_json::from_str(&summary).expect("summary.json is JSON");
    if summary.get("image").is_some() {
        return Some(Outcome::Image(
            std::fs::read(dir.join("image.png")).expect("image.png"),
            std::fs::read(dir.join("history.bin")).expect("history.bin"),
        ));
    }
    let records = std::fs::read_to_string(dir.join("stream.jsonl"))
        .expect("stream.jsonl")
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("a JSON line");
            strip_timing(&mut v);
            v
        })
        .collect();
    let s = &summary["stream"];
    let counts = [
        "produced",
        "dropped",
        "received",
        "filled",
        "duplicates",
        "gaps",
        "batches",
        "conservation_ok",
    ]
    .iter()
    .map(|k| s[*k].clone())
    .collect();
    Some(Outcome::Stream(records, counts))
}

/// Whether `got` is a correct partial image: its history a prefix of the
/// fault-free one, its image that history replayed (`forkring verify`).
fn is_correct_partial(dir: &Path, got: &Outcome, want: &Outcome) -> bool {
    let (Outcome::Image(_, h), Outcome::Image(_, w)) = (got, want) else {
        return false;
    };
    // Header (40 bytes, the count at 32..40), then 6 bytes per pair.
    let prefix = h.len() >= 40 && w.len() >= h.len() && h[40..] == w[40..h.len()];
    prefix
        && forkring(&["verify", dir.to_str().unwrap()])
            .status
            .success()
}

/// The `progress` counter of run `name` as `status --json` shows it:
/// (value, total); None while the run is not readable.
fn progress_of(name: &str, progress: &str) -> (Option<u64>, Option<u64>) {
    let st = forkring(&["status", name, "--json"]);
    let v: Value = serde_json::from_slice(&st.stdout).unwrap_or(Value::Null);
    let counter = v[0]["progress"][0]["counters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == progress).cloned())
        .unwrap_or(Value::Null);
    (counter["value"].as_u64(), counter["total"].as_u64())
}

/// A killed run's segments and output directory, to restore before each
/// trial.
struct Base {
    name: String,
    out: PathBuf,
    segments: Vec<(String, Vec<u8>)>,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Base {
    /// Starts `args` and SIGKILLs the whole run once `status` shows it
    /// three quarters done (each trial's resume is then short); retries when the
    /// run finished before the kill landed. Progress, not a delay, decides:
    /// the run's speed varies many-fold with the load on the host.
    fn killed(sc: &Scene, args: &[&str], progress: &str) -> Base {
        for attempt in 0..20 {
            for f in segments_of(&sc.name) {
                let _ = std::fs::remove_file(Path::new("/dev/shm").join(f));
            }
            let _ = std::fs::remove_dir_all(sc.dir.path());
            std::fs::create_dir_all(sc.dir.path()).unwrap();
            let mut child = Command::new(bin())
                .args(sc.args(args))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap();
            let roles_up = wait_roles(&sc.name, 2, Duration::from_secs(20));
            let start = Instant::now();
            while start.elapsed() < LIMIT {
                match progress_of(&sc.name, progress) {
                    (Some(d), Some(t)) if d >= t / 4 * 3 => break,
                    (None, _) if child.try_wait().unwrap().is_some() => break,
                    _ => {}
                }
            }
            let roles = live_roles(&sc.name);
            signal_group(child.id(), libc::SIGKILL);
            for (_, pid) in &roles {
                signal(*pid, libc::SIGKILL);
            }
            let _ = child.wait();
            let start = Instant::now();
            while roles.iter().any(|(_, p)| alive(*p)) || !live_roles(&sc.name).is_empty() {
                assert!(
                    start.elapsed() < LIMIT,
                    "roles of {} outlive SIGKILL",
                    sc.name
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            let (done, total) = progress_of(&sc.name, progress);
            match (roles_up, done, total) {
                (true, Some(d), Some(t)) if d >= t / 2 && d < t => return Base::snapshot(sc),
                _ => eprintln!("attempt {attempt}: killed at {done:?} of {total:?}; again"),
            }
        }
        panic!("could not kill a run of {args:?} half-way");
    }

    fn snapshot(sc: &Scene) -> Base {
        let segments = segments_of(&sc.name)
            .into_iter()
            .map(|f| {
                let bytes = std::fs::read(Path::new("/dev/shm").join(&f)).unwrap();
                (f, bytes)
            })
            .collect();
        let files = std::fs::read_dir(sc.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        Base {
            name: sc.name.clone(),
            out: sc.dir.path().to_path_buf(),
            segments,
            files,
        }
    }

    /// Puts the killed run back: its segments (mode 0600) and its output
    /// directory. No process of the run is alive.
    fn restore(&self) {
        use std::os::unix::fs::OpenOptionsExt;
        for f in segments_of(&self.name) {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(f));
        }
        for (f, bytes) in &self.segments {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(Path::new("/dev/shm").join(f))
                .unwrap();
            std::io::Write::write_all(&mut file, bytes).unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.out);
        std::fs::create_dir_all(&self.out).unwrap();
        for (p, bytes) in &self.files {
            std::fs::write(p, bytes).unwrap();
        }
    }

    fn segment(&self, part: &str) -> (String, usize) {
        let suffix = format!(".{part}");
        self.segments
            .iter()
            .find(|(f, _)| f.ends_with(&suffix))
            .map(|(f, b)| (format!("/dev/shm/{f}"), b.len()))
            .unwrap_or_else(|| panic!("no {part} segment in {:?}", self.segments))
    }
}

/// One mutation of the segment at `path` (`len` bytes): a description.
fn mutate(path: &str, len: usize, rng: &mut Lcg, k: u32) -> String {
    let body_end = len.min(4096) as u64;
    match k % 3 {
        // Random bytes, anywhere (half of them among the control fields).
        0 => {
            let n = 1 + rng.below(8) as usize;
            let at = if rng.below(2) == 0 {
                rng.below(body_end.saturating_sub(n as u64).max(1))
            } else {
                rng.below((len - n) as u64)
            };
            let bytes: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
            patch_in_place(path, at, &bytes);
            format!("{n} random bytes at {at}")
        }
        // A random header field, a random value.
        1 => {
            let (at, size) = HEADER_FIELDS[rng.below(HEADER_FIELDS.len() as u64) as usize];
            let bytes: Vec<u8> = (0..size).map(|_| rng.below(256) as u8).collect();
            patch_in_place(path, at, &bytes);
            format!("header field at {at} ({size} bytes) randomised")
        }
        // A boundary value in an aligned field past the header.
        _ => {
            let words = (body_end - 128) / 8;
            let at = 128 + 8 * rng.below(words.max(1));
            let old = {
                use std::os::unix::fs::FileExt;
                let mut b = [0u8; 8];
                std::fs::File::open(path)
                    .unwrap()
                    .read_exact_at(&mut b, at)
                    .unwrap();
                u64::from_le_bytes(b)
            };
            let lo = old & 0xffff_ffff;
            let values = [
                0,
                1,
                u64::MAX,
                i64::MAX as u64,
                u32::MAX as u64,
                0x8000_0000,
                old.wrapping_add(1),
                old.wrapping_sub(1),
                (old & !0xffff_ffff) | lo.wrapping_add(1) & 0xffff_ffff,
                (old & !0xffff_ffff) | lo.wrapping_sub(1) & 0xffff_ffff,
                old ^ 1 << 32,
                old.wrapping_mul(2),
            ];
            let v = values[rng.below(values.len() as u64) as usize];
            patch_in_place(path, at, &v.to_le_bytes());
            format!("word at {at}: {old:#x} -> {v:#x}")
        }
    }
}

/// Trials for each part of `parts` on `base`; returns (correct results,
/// refusals).
fn trials(
    base: &Base,
    args: &[&str],
    parts: &[&str],
    want: &Outcome,
    per_part: u32,
    seed: u64,
) -> (u32, u32) {
    let mut rng = Lcg(seed);
    let (mut correct, mut refused) = (0, 0);
    let out = base.out.to_str().unwrap().to_string();
    // A role that finds corruption fails each time it is restarted: two
    // restarts show that, where the default ten took 4.6 s per trial.
    let mut run_args = vec![
        "run",
        "--name",
        &base.name,
        "--quiet",
        "--out",
        &out,
        "--max-restarts",
        "2",
    ];
    run_args.extend_from_slice(args);
    let handoff_args = ["handoff", "--run", base.name.as_str()];
    let status_args = ["status", base.name.as_str()];
    for part in parts {
        for k in 0..per_part {
            base.restore();
            let (path, len) = base.segment(part);
            let what = format!("{part}: {}", mutate(&path, len, &mut rng, k));
            let st = bounded(&status_args);
            sane(&format!("{what}: status"), &status_args, &st);
            let run = bounded(&run_args);
            sane(&format!("{what}: run"), &run_args, &run);
            let handoff = bounded(&handoff_args);
            sane(&format!("{what}: handoff"), &handoff_args, &handoff);
            match result_of(&base.out) {
                Some(got) => {
                    assert!(
                        &got == want || is_correct_partial(&base.out, &got, want),
                        "{what}: a wrong result with exit {:?}/{:?}:\nrun: {}\nhandoff: {}",
                        run.status.code(),
                        handoff.status.code(),
                        text(&run),
                        text(&handoff)
                    );
                    correct += 1;
                }
                None => {
                    assert!(
                        !run.status.success() && !handoff.status.success(),
                        "{what}: exit 0 without a result:\nrun: {}\nhandoff: {}",
                        text(&run),
                        text(&handoff)
                    );
                    refused += 1;
                }
            }
            for f in segments_of(&base.name) {
                let _ = std::fs::remove_file(Path::new("/dev/shm").join(f));
            }
        }
    }
    (correct, refused)
}

/// The smallest reproduction: the turn of a killed run patched to
/// "complete". The handoff must refuse, name the segment and the check, and
/// keep the segments.
#[test]
fn handoff_refuses_a_patched_turn() {
    let _g = serial();
    let sc = Scene::new("fz-turn");
    let base = Base::killed(
        &sc,
        &["--jobs", "image", "--size", "256", "--seed", "5"],
        "iterations",
    );
    base.restore();
    // The turn is the first word after the parameters' 128 bytes.
    patch_in_place(
        &format!("/dev/shm/forkring.{}.image", sc.name),
        256,
        &65536u32.to_le_bytes(),
    );
    let o = forkring(&["handoff", "--run", &sc.name]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains(&format!("forkring.{}.posmask", sc.name)), "{t}");
    assert!(t.contains("turn check"), "{t}");
    assert!(!sc.dir.path().join("summary.json").exists());
    assert!(!sc.dir.path().join("image.png").exists());
    assert_eq!(segments_of(&sc.name).len(), 6, "the segments are kept");
    // Pixels painted behind the history's back: the replay check.
    base.restore();
    let (pixels, len) = base.segment("pixels");
    let mut rng = Lcg(3);
    let at = 128 + 3 * rng.below((len as u64 - 128) / 3);
    patch_in_place(&pixels, at, &[0x5a, 0xa5, 0x3c]);
    let o = forkring(&["handoff", "--run", &sc.name]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains(&format!("forkring.{}.pixels", sc.name)), "{t}");
    assert!(t.contains("replay check"), "{t}");
    assert!(!sc.dir.path().join("summary.json").exists());
    // Untouched, the same state hands off a correct partial image.
    base.restore();
    let o = forkring(&["handoff", "--run", &sc.name]);
    assert!(o.status.success(), "{}", text(&o));
    let v = forkring(&["verify", sc.out()]);
    assert!(v.status.success(), "{}", text(&v));
}

#[test]
fn corrupted_segments_never_give_a_wrong_result() {
    let _g = serial();
    let start = Instant::now();
    let mut report = Vec::new();
    for (tag, args, parts, progress, seed) in [
        ("img", IMAGE, &IMAGE_PARTS[..], "iterations", 11),
        ("str", STREAM, &STREAM_PARTS[..], "received", 12),
    ] {
        let reference = Scene::new(&format!("fz-{tag}-ref"));
        let o = reference.run(args);
        assert!(o.status.success(), "{}", text(&o));
        let want = result_of(reference.dir.path()).expect("a result");
        let sc = Scene::new(&format!("fz-{tag}"));
        let base = Base::killed(&sc, args, progress);
        let (correct, refused) = trials(&base, args, parts, &want, 50, seed);
        report.push(format!("{tag}: {correct} correct, {refused} refused"));
    }
    eprintln!("{} in {:?}", report.join("; "), start.elapsed());
}
