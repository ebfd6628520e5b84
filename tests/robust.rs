//! Robustness against what broke in issue 12: a supervisor killed during
//! start-up, extreme option values, files named like segments that are not
//! segments, stale temporary files, and messages that must point the right
//! way.

mod common;

use std::time::Duration;

use common::*;

/// What must match a fault-free run: for the image, the SHA-256 of each
/// result file; for the stream (whose records carry timing figures), its
/// counts.
fn result_hashes(dir: &std::path::Path, job: &str) -> serde_json::Value {
    if job == "stream" {
        let s = summary(dir)["stream"].clone();
        return serde_json::json!([
            s["produced"],
            s["received"],
            s["dropped"],
            s["filled"],
            s["duplicates"],
            s["batches"],
            s["conservation_ok"]
        ]);
    }
    let files = summary(dir)[job]["files"].clone();
    let obj = files.as_object().expect("summary.json lists the files");
    serde_json::Value::Object(
        obj.iter()
            .map(|(k, v)| (k.clone(), v["sha256"].clone()))
            .collect(),
    )
}

/// Steps of segment creation a crash point counts per segment (see
/// `forkring::shm::segment::CRASH_POINT_ENV`).
const STEPS_PER_SEGMENT: u32 = 4;

/// Kills the supervisor at every step of creating a run's segments (the
/// test hook SIGKILLs it at step k), then runs the same command plainly:
/// each must end with the fault-free result and leave nothing behind.
fn crash_at_every_creation_step(tag: &str, job_args: &[&str], job: &str, segments: u32) {
    let _g = serial();
    let reference = Scene::new(&format!("{tag}-ref"));
    let o = reference.run(job_args);
    assert!(o.status.success(), "{}", text(&o));
    let want = result_hashes(reference.dir.path(), job);

    let points = segments * STEPS_PER_SEGMENT;
    let mut recovered = 0;
    for k in 1..=points + 1 {
        let sc = Scene::new(&format!("{tag}-{k}"));
        let k_s = k.to_string();
        let crashed = spawn_env(
            &sc.args(job_args),
            &[(forkring::shm::segment::CRASH_POINT_ENV, k_s.as_str())],
        );
        let (st, log) = crashed.wait(Duration::from_secs(60));
        if k > points {
            // Past the last step: the hook never fires.
            assert!(st.success(), "step {k}: {log}");
            break;
        }
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL), "step {k}: {log}");
        assert!(
            !segments_of(&sc.name).is_empty(),
            "step {k}: the crash left nothing to recover from"
        );
        let start = std::time::Instant::now();
        let o = sc.run(job_args);
        assert!(o.status.success(), "step {k}: {}", text(&o));
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "step {k}: recovery took {:?}",
            start.elapsed()
        );
        assert_eq!(
            result_hashes(sc.dir.path(), job),
            want,
            "step {k}: {}",
            text(&o)
        );
        let v = forkring(&["verify", sc.out()]);
        assert!(v.status.success(), "step {k}: {}", text(&v));
        assert!(
            segments_of(&sc.name).is_empty(),
            "step {k}: left {:?}",
            segments_of(&sc.name)
        );
        recovered += 1;
    }
    assert_eq!(recovered, points);
}

/// Image job: the control segment and five image segments.
#[test]
fn image_start_up_crash_at_every_step_recovers() {
    crash_at_every_creation_step(
        "su-img",
        &["--jobs", "image", "--size", "64", "--seed", "11"],
        "image",
        6,
    );
}

/// Stream job: the control segment, the stream's control and its ring.
#[test]
fn stream_start_up_crash_at_every_step_recovers() {
    crash_at_every_creation_step(
        "su-str",
        &[
            "--jobs", "stream", "--rate", "max", "--count", "3000", "--seed", "11",
        ],
        "stream",
        3,
    );
}

/// The reproduction: SIGKILL the supervisor after increasing
/// delays during start-up; each time a plain `run` must succeed.
#[test]
fn supervisor_killed_after_increasing_delays_recovers() {
    let _g = serial();
    let args = ["--jobs", "image", "--size", "256", "--seed", "11"];
    let reference = Scene::new("su-delay-ref");
    let o = reference.run(&args);
    assert!(o.status.success(), "{}", text(&o));
    let want = result_hashes(reference.dir.path(), "image");
    for delay_us in [0u64, 200, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000] {
        let sc = Scene::new(&format!("su-delay-{delay_us}"));
        let mut bg = sc.spawn(&args);
        std::thread::sleep(Duration::from_micros(delay_us));
        signal(bg.pid(), libc::SIGKILL);
        let _ = bg.child.wait();
        let o = sc.run(&args);
        assert!(o.status.success(), "after {delay_us} µs: {}", text(&o));
        assert_eq!(result_hashes(sc.dir.path(), "image"), want, "{delay_us} µs");
        assert!(segments_of(&sc.name).is_empty(), "{delay_us} µs");
    }
}

/// Runs `forkring args` with a limit: a hang is a failure, not a stuck test.
fn bounded(args: &[&str], limit: Duration) -> (std::process::ExitStatus, String) {
    spawn(args).wait(limit)
}

/// Values no duration or rate option may take: zero, subnormals, absurd
/// magnitudes, infinities, NaN and negatives.
const EXTREMES: [&str; 16] = [
    "0", "-0", "5e-324", "1e-310", "1e-300", "1e-12", "1e-7", "1e19", "1e20", "1e300", "inf",
    "-inf", "NaN", "-1", "-1e-300", "1.5e9",
];

/// Every float option of every command, with what it needs around it:
/// (leading arguments, the option, trailing arguments).
fn float_options<'a>(
    name: &'a str,
    out: &'a str,
) -> Vec<(Vec<&'a str>, &'static str, Vec<&'a str>)> {
    let run = |jobs: &'a str, extra: &[&'a str]| {
        let mut v = vec![
            "run", "--name", name, "--quiet", "--out", out, "--jobs", jobs,
        ];
        v.extend_from_slice(extra);
        v
    };
    vec![
        (run("stream", &[]), "--duration", vec![]),
        (run("stream", &[]), "--stop-timeout", vec![]),
        (run("stream", &[]), "--restart-window", vec![]),
        (run("stream", &[]), "--connect-timeout", vec![]),
        (run("stream", &[]), "--rate", vec![]),
        (run("stream", &["--noise"]), "--noise-low", vec![]),
        (run("stream", &["--noise"]), "--noise-high", vec![]),
        (run("stream", &[]), "--rate-interval", vec![]),
        (run("tasks", &[]), "--task-timeout", vec![]),
        (
            run("tasks", &["--from", "nats://127.0.0.1:1"]),
            "--ack-wait",
            vec![],
        ),
        (vec!["status"], "--watch", vec![]),
        (vec!["bench", "stream"], "--idle-seconds", vec![]),
        (
            vec!["submit", "--to", "nats://127.0.0.1:1"],
            "--connect-timeout",
            vec!["/dev/null"],
        ),
    ]
}

/// Property: every float option, fed every extreme value, ends with a usage
/// error (exit 2) naming the option's range, at once, creating nothing;
/// never a panic (exit 101), a signal or a hang.
#[test]
fn extreme_floats_are_refused_at_parse_time() {
    let sc = Scene::new("floats");
    let out = sc.dir.path().join("never-made");
    let out = out.to_str().unwrap();
    let mut cases = 0;
    for (head, opt, tail) in float_options(&sc.name, out) {
        for v in EXTREMES {
            let arg = format!("{opt}={v}");
            let mut args = head.clone();
            args.push(&arg);
            args.extend_from_slice(&tail);
            let (st, log) = bounded(&args, Duration::from_secs(20));
            assert_eq!(st.code(), Some(2), "{args:?}: {log}");
            assert!(!log.contains("panicked"), "{args:?}: {log}");
            assert!(
                log.contains("out of range") || log.contains("not a") || log.contains("finite"),
                "{args:?} does not say why: {log}"
            );
            assert!(
                segments_of(&sc.name).is_empty(),
                "{args:?} created segments"
            );
            assert!(
                !std::path::Path::new(out).exists(),
                "{args:?} created --out"
            );
            cases += 1;
        }
    }
    assert_eq!(cases, 13 * EXTREMES.len());
}

/// The ranges are in --help.
#[test]
fn float_ranges_are_in_the_help() {
    let o = forkring(&["run", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for (opt, range) in [
        ("--duration", "0.000001 to 1e9"),
        ("--stop-timeout", "0.000001 to 1e9"),
        ("--restart-window", "0.000001 to 1e9"),
        ("--connect-timeout", "0.001 to 3600"),
        ("--rate", "0.001 to 1e9"),
        ("--noise-low", "0.000001 to 1e9"),
        ("--noise-high", "0.000001 to 1e9"),
        ("--rate-interval", "0.000001 to 1e9"),
        ("--task-timeout", "0.000001 to 1e9"),
        ("--ack-wait", "1 to 86400"),
    ] {
        let at = help
            .find(&format!("{opt} <"))
            .unwrap_or_else(|| panic!("{opt} not in the help"));
        // Up to the next option that takes a value (`--name <VALUE>`).
        let own = at + opt.len() + 2;
        let next = help[own..]
            .find(" <")
            .and_then(|i| help[..own + i].rfind(" --"))
            .unwrap_or(help.len());
        assert!(
            help[at..next].contains(range),
            "{opt}: {range} not in {:?}",
            &help[at..next]
        );
    }
    let o = forkring(&["bench", "stream", "--help"]);
    assert!(text(&o).contains("0.01 to 3600"), "{}", text(&o));
    let o = forkring(&["status", "--help"]);
    assert!(text(&o).contains("0.1 to 86400"), "{}", text(&o));
}

/// The valid extremes of each duration and rate option give a run that
/// ends by itself (its count or its duration) without a panic.
#[test]
fn valid_extreme_floats_run_sanely() {
    let _g = serial();
    let cases: [&[&str]; 13] = [
        &["--duration", "0.000001"],
        &["--duration", "1e9"],
        &["--stop-timeout", "0.000001"],
        &["--stop-timeout", "1e9"],
        &["--restart-window", "0.000001"],
        &["--restart-window", "1e9"],
        &["--rate", "0.001", "--duration", "0.5"],
        &["--rate", "1e9"],
        &[
            "--noise",
            "--noise-low",
            "0.000001",
            "--noise-high",
            "0.000001",
        ],
        &["--noise", "--noise-low", "1e9", "--noise-high", "1e9"],
        &["--rate-interval", "0.000001"],
        &["--rate-interval", "1e9"],
        &[
            "--rate",
            "max",
            "--rate-interval",
            "1e9",
            "--stop-timeout",
            "1e9",
        ],
    ];
    for extra in cases {
        let sc = Scene::new("floats-ok");
        let mut args = vec!["--jobs", "stream", "--count", "2000", "--seed", "1"];
        if !extra.contains(&"--rate") {
            args.extend_from_slice(&["--rate", "max"]);
        }
        args.extend_from_slice(extra);
        let (st, log) = bounded(&sc.args(&args), Duration::from_secs(60));
        assert_eq!(st.code(), Some(0), "{extra:?}: {log}");
        let v = forkring(&["verify", sc.out()]);
        assert!(v.status.success(), "{extra:?}: {}", text(&v));
        assert!(segments_of(&sc.name).is_empty(), "{extra:?}");
    }
}

/// Makes `path` a FIFO owned by uid 65534 (nobody), as another user would.
/// `None` (with the reason) where that is impossible here.
fn nobodys_fifo(path: &str) -> Option<()> {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: making another user's file needs root");
        return None;
    }
    match std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "mkfifo",
            "-m600",
            path,
        ])
        .status()
    {
        Ok(s) if s.success() => Some(()),
        other => {
            eprintln!("skipping: setpriv mkfifo failed: {other:?}");
            None
        }
    }
}

/// The reproduction: another user's FIFO named like a control
/// segment. `status`, `status NAME`, `clean --dry-run`, `clean` and `run`
/// end at once, name the FIFO, and nothing removes it.
#[test]
fn another_users_fifo_named_like_a_segment() {
    let sc = Scene::new("fifo");
    let path = format!("/dev/shm/forkring.{}.control", sc.name);
    if nobodys_fifo(&path).is_none() {
        return;
    }
    let limit = Duration::from_secs(10);
    let (st, log) = bounded(&["status"], limit);
    assert_eq!(st.code(), Some(0), "{log}");
    assert!(
        log.contains(&format!("run {}: unreadable", sc.name)) && log.contains("is a FIFO"),
        "{log}"
    );
    let (st, log) = bounded(&["status", "--json"], limit);
    assert_eq!(st.code(), Some(0), "{log}");
    let (st, log) = bounded(&["status", &sc.name], limit);
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(log.contains("is a FIFO, not a segment"), "{log}");
    assert!(
        !log.contains("forkring clean"),
        "points at clean, which refuses: {log}"
    );
    let (st, log) = bounded(&["clean", "--dry-run"], limit);
    assert_eq!(st.code(), Some(0), "{log}");
    assert!(log.contains("would keep") && log.contains("FIFO"), "{log}");
    // (Not a bare `clean`: it would remove other tests' dead runs.)
    let (st, log) = bounded(&["clean", &sc.name], limit);
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(log.contains("is a FIFO, not a segment"), "{log}");
    assert!(
        std::path::Path::new(&path).exists(),
        "clean NAME removed it"
    );
    let (st, log) = bounded(&sc.args(&["--jobs", "image", "--size", "8"]), limit);
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(log.contains("is a FIFO"), "{log}");
    assert!(!log.contains("forkring clean"), "{log}");
    assert!(std::path::Path::new(&path).exists(), "run removed it");
}

/// A dead run of the library's making, handed to uid 65534 (as if that
/// user had run it).
fn nobodys_dead_run(sc: &Scene) -> Vec<String> {
    dead_image_run(sc, 8);
    let files = segments_of(&sc.name);
    for f in &files {
        std::os::unix::fs::chown(format!("/dev/shm/{f}"), Some(65534), Some(65534)).unwrap();
    }
    files
}

/// Root removes another user's run only when it is provably a dead
/// forkring run: every file a complete segment, no lock held.
#[test]
fn root_cleans_another_users_run_only_when_provably_dead() {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: cleaning another user's run needs root");
        return;
    }
    // A dead, valid run: removed.
    let sc = Scene::new("foreign-ok");
    let files = nobodys_dead_run(&sc);
    assert_eq!(files.len(), 6);
    let o = forkring(&["clean", &sc.name]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(segments_of(&sc.name).is_empty(), "{}", text(&o));

    // One segment is not a valid forkring segment: reported, nothing removed.
    let sc = Scene::new("foreign-bad");
    let files = nobodys_dead_run(&sc);
    let pixels = files.iter().find(|f| f.ends_with(".pixels")).unwrap();
    patch_in_place(&format!("/dev/shm/{pixels}"), 0, b"GARBAGE!");
    let o = forkring(&["clean", &sc.name]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(pixels) && text(&o).contains("no forkring header"),
        "{}",
        text(&o)
    );
    assert_eq!(segments_of(&sc.name), files);
    let o = forkring(&["clean", "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("would keep (/dev/shm/{pixels}")),
        "{}",
        text(&o)
    );

    // A live run (its supervisor lock held): reported, nothing removed.
    let sc = Scene::new("foreign-live");
    let files = nobodys_dead_run(&sc);
    let control = files.iter().find(|f| f.ends_with(".control")).unwrap();
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/{control}"))
        .unwrap();
    let fl = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: a live descriptor and a valid flock that outlives the call.
    let rc = unsafe { libc::fcntl(held.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    assert_eq!(rc, 0);
    let o = forkring(&["clean", &sc.name]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(segments_of(&sc.name), files);
    drop(held);
}

/// A pid that is certainly no process now.
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    assert!(!alive(pid));
    pid
}

/// The next handoff of a run removes the temporary files a killed handoff
/// of it left (its result names, a dead writer), and nothing else.
#[test]
fn stale_temporary_files_are_removed_by_the_next_handoff() {
    let _g = serial();
    let sc = Scene::new("stale");
    let d = sc.dir.path();
    let dead = dead_pid();
    let me = std::process::id();
    let stale = [
        format!(".image.png.tmp-{dead}"),
        format!(".history.bin.tmp-{dead}"),
        format!(".summary.json.tmp-{dead}"),
    ];
    // A live writer's file (this test's pid, started before the file was
    // written) and another name are not the handoff's to remove.
    let kept = [format!(".image.png.tmp-{me}"), format!(".notes.tmp-{dead}")];
    for f in stale.iter().chain(&kept) {
        std::fs::write(d.join(f), b"partial").unwrap();
    }
    let o = sc.run(&["--jobs", "image", "--size", "32", "--seed", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    for f in &stale {
        assert!(!d.join(f).exists(), "{f} remains");
    }
    for f in &kept {
        assert!(d.join(f).exists(), "{f} was removed");
    }
    assert_eq!(sc.summary()["stopped_by"], serde_json::Value::Null);
}

/// The reproduction: SIGKILL the supervisor while a result file is
/// a temporary file; the next `run` leaves none behind and its complete
/// run's summary.json is not "stopped by handoff".
#[test]
fn supervisor_killed_mid_handoff_leaves_no_temporary_file() {
    let _g = serial();
    let args = ["--jobs", "image", "--size", "1024", "--seed", "11"];
    for attempt in 0..10 {
        let sc = Scene::new("midhandoff");
        let mut bg = sc.spawn(&args);
        let d = sc.dir.path().to_path_buf();
        let has_tmp = || {
            std::fs::read_dir(&d)
                .map(|r| {
                    r.flatten()
                        .any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
                })
                .unwrap_or(false)
        };
        let start = std::time::Instant::now();
        while !has_tmp() && !bg.exited() && start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_micros(200));
        }
        signal(bg.pid(), libc::SIGKILL);
        let _ = bg.child.wait();
        if !has_tmp() {
            eprintln!("attempt {attempt}: the handoff was not caught mid-write; again");
            continue;
        }
        let o = sc.run(&args);
        assert!(o.status.success(), "{}", text(&o));
        let left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "left: {left:?}");
        let sm = sc.summary();
        assert_eq!(sm["complete"], true, "{sm}");
        assert_eq!(sm["stopped_by"], serde_json::Value::Null, "{sm}");
        let v = forkring(&["verify", sc.out()]);
        assert!(v.status.success(), "{}", text(&v));
        return;
    }
    panic!("in 10 attempts the supervisor was never killed mid-handoff");
}

/// `--out` naming a file says so.
#[test]
fn out_naming_a_file_says_so() {
    let sc = Scene::new("outfile");
    let f = sc.dir.path().join("a-file");
    std::fs::write(&f, b"x").unwrap();
    let o = forkring(&[
        "run",
        "--name",
        &sc.name,
        "--quiet",
        "--jobs",
        "image",
        "--size",
        "8",
        "--out",
        f.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("it is a file, not a directory"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("File exists"), "{}", text(&o));
    assert!(segments_of(&sc.name).is_empty());
}

/// A size too large for a number says it is out of range, not that it is
/// not a whole number.
#[test]
fn a_huge_size_is_out_of_range() {
    for size in ["4294967296x1", "1x4294967296", "99999999999999999999"] {
        let o = forkring(&["run", "--name", "never", "--jobs", "image", "--size", size]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("out of range"), "{size}: {}", text(&o));
        assert!(!text(&o).contains("whole number"), "{size}: {}", text(&o));
    }
}

/// A segment whose file size differs from what the run's settings give:
/// the message has the found value first and the expected one second.
#[test]
fn a_size_mismatch_names_found_then_expected() {
    let sc = Scene::new("sizes");
    dead_image_run(&sc, 16);
    // No process maps the run: grow one segment as a foreign hand would.
    let path = format!("/dev/shm/forkring.{}.history", sc.name);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let want = f.metadata().unwrap().len();
    let grown = want + (1 << 20);
    f.set_len(grown).unwrap();
    drop(f);
    let o = forkring(&["handoff", "--run", &sc.name]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("file size is {grown} bytes, expected {want}")),
        "{}",
        text(&o)
    );
}

/// Whether process `pid` blocks signal `sig` (from /proc/PID/status).
fn blocks(pid: u32, sig: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        })
        .is_some_and(|m| m & (1 << (sig - 1)) != 0)
}

/// SIGTERM as soon as `forkring run` is running its own code (it blocks the
/// stop signals first of all): a stop request, results handed off, exit 0.
#[test]
fn sigterm_right_after_start_is_a_stop_request() {
    let _g = serial();
    for i in 0..10 {
        let sc = Scene::new("early-term");
        let mut bg = sc.spawn(&[
            "--jobs", "stream", "--rate", "1000", "--count", "100000", "--seed", "1",
        ]);
        let start = std::time::Instant::now();
        while !blocks(bg.pid(), libc::SIGTERM) {
            assert!(!bg.exited(), "{}", bg.log());
            assert!(start.elapsed() < Duration::from_secs(20), "never blocked");
            std::hint::spin_loop();
        }
        signal(bg.pid(), libc::SIGTERM);
        let (st, log) = bg.wait(Duration::from_secs(60));
        assert_eq!(st.code(), Some(0), "attempt {i}: {log}");
        assert_eq!(sc.summary()["stopped_by"], "SIGTERM", "attempt {i}: {log}");
        assert!(segments_of(&sc.name).is_empty(), "attempt {i}");
    }
}

/// Committed batches of `sc`'s stream so far (0 while unreadable).
fn batches(run: &str) -> u64 {
    let o = forkring(&["status", run, "--json"]);
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| {
            v[0]["progress"].as_array().and_then(|p| {
                p.iter()
                    .flat_map(|j| j["counters"].as_array().cloned().unwrap_or_default())
                    .find(|c| c["name"] == "batches")
                    .and_then(|c| c["value"].as_u64())
            })
        })
        .unwrap_or(0)
}

/// Waits until `run` has committed at least `n` batches.
fn wait_batches(run: &str, n: u64, bg: &mut Bg) {
    let start = std::time::Instant::now();
    while batches(run) < n {
        assert!(!bg.exited(), "{}", bg.log());
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no batches: {}",
            bg.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a 40,000-vector stream into `DIR/out`, removes the directory once
/// 20 batches are committed, SIGKILLs the consumer too if `kill_consumer`,
/// and checks that the run ends complete, with every vector, in the
/// directory it was given, and passes `verify`. Returns the summary and
/// the output directory.
fn remove_output_mid_run(
    sc: &Scene,
    kill_consumer: bool,
) -> (serde_json::Value, std::path::PathBuf) {
    let out = sc.dir.path().join("out");
    let out_s = out.to_str().unwrap();
    let args = [
        "run", "--name", &sc.name, "--quiet", "--out", out_s, "--jobs", "stream", "--rate",
        "20000", "--count", "40000", "--seed", "11",
    ];
    let mut bg = spawn(&args);
    wait_batches(&sc.name, 20, &mut bg);
    std::fs::remove_dir_all(&out).unwrap();
    if kill_consumer {
        signal(role_pid(&sc.name, "consumer"), libc::SIGKILL);
    }
    let (st, log) = bg.wait(Duration::from_secs(120));
    assert_eq!(st.code(), Some(0), "{log}");
    let sm = summary(&out);
    assert_eq!(sm["stream"]["received"], 40000, "{sm}");
    let v = forkring(&["verify", out_s]);
    assert!(v.status.success(), "{}", text(&v));
    (sm, out)
}

/// The reproduction: the output directory removed while the stream
/// runs. Every committed record survives: the run ends complete, with all
/// its batches, in the directory it was given.
#[test]
fn stream_output_directory_removed_mid_run() {
    let _g = serial();
    let sc = Scene::new("rmout");
    let (_, out) = remove_output_mid_run(&sc, false);
    let lines = std::fs::read_to_string(out.join("stream.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, 400, "committed batches were lost");
    assert!(!out.join(".stream.partial").exists());
    assert!(segments_of(&sc.name).is_empty());
}

/// The output directory removed, then the consumer killed: the restarted
/// consumer finds its records put back and carries on.
#[test]
fn stream_output_directory_removed_then_consumer_killed() {
    let _g = serial();
    let sc = Scene::new("rmout-kill");
    let (sm, _) = remove_output_mid_run(&sc, true);
    assert_eq!(sm["restarts"]["consumer"], 1, "{sm}");
}

/// Records lost for good (the working file removed while no supervisor
/// held it): the consumer cannot resume, and the run's final message says
/// why (the role's own words) and that only `clean` is left.
#[test]
fn the_final_message_names_the_roles_cause() {
    let _g = serial();
    let sc = Scene::new("cause");
    let args = [
        "--jobs",
        "stream",
        "--rate",
        "20000",
        "--count",
        "400000",
        "--seed",
        "11",
        "--max-restarts",
        "1",
    ];
    let mut bg = sc.spawn(&args);
    wait_batches(&sc.name, 20, &mut bg);
    signal(bg.pid(), libc::SIGKILL);
    let _ = bg.child.wait();
    std::fs::remove_file(sc.dir.path().join(".stream.partial")).unwrap();
    let (st, log) = bounded(&sc.args(&args), Duration::from_secs(120));
    assert_eq!(st.code(), Some(3), "{log}");
    let last = log.lines().last().unwrap_or("");
    assert!(
        last.contains("gave up") && last.contains(".stream.partial is missing"),
        "the final line does not name the cause: {log}"
    );
    assert!(!segments_of(&sc.name).is_empty(), "the segments are kept");
}

/// `forkring run` blocks its stop signals before it parses its arguments:
/// caught writing its help into a full pipe (during parsing), it blocks
/// SIGTERM, and a SIGTERM then does not kill it.
#[test]
fn stop_signals_are_blocked_before_parsing() {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned here alone.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ on a live pipe descriptor; no memory is passed.
    let size = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert_eq!(size, 4096);
    let mut child = std::process::Command::new(bin())
        .args(["run", "--help"])
        .stdout(std::process::Stdio::from(w))
        .spawn()
        .unwrap();
    let pid = child.id();
    // Waiting to write into the full pipe.
    let full = || {
        std::fs::read_to_string(format!("/proc/{pid}/wchan"))
            .is_ok_and(|w| w.contains("pipe_write"))
    };
    let start = std::time::Instant::now();
    while !(full() && blocks(pid, libc::SIGTERM)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not seen blocking SIGTERM with its help half written"
        );
        assert!(child.try_wait().unwrap().is_none(), "the help fit the pipe");
        std::thread::sleep(Duration::from_millis(1));
    }
    signal(pid, libc::SIGTERM);
    let mut help = String::new();
    std::fs::File::from(r).read_to_string(&mut help).unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0), "killed by the SIGTERM: {st:?}");
    assert!(help.contains("--duration"), "{help}");
}
