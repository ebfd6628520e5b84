//! Supervisor behaviour through the real binary: restarts, graceful stop,
//! status, clean and handoff. (The restart limit is in `chaos.rs`.)

mod common;

use std::time::Duration;

use common::*;

#[test]
fn killed_role_is_restarted_and_the_run_completes() {
    let _g = serial();
    let sc = Scene::new("restart");
    let bg = sc.spawn(&["--jobs", "image", "--size", "1024", "--seed", "2"]);
    assert!(
        wait_roles(&sc.name, 2, Duration::from_secs(60)),
        "{}",
        bg.log()
    );
    let ping = role_pid(&sc.name, "ping");
    signal(ping, libc::SIGKILL);
    let (status, log) = bg.wait(Duration::from_secs(300));
    assert!(status.success(), "{log}");
    let s = sc.summary();
    assert!(s["restarts"]["ping"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["image"]["complete"], true);
    assert!(forkring(&["verify", sc.out()]).status.success());
}

#[test]
fn sigterm_stops_everything_and_hands_off() {
    let _g = serial();
    let sc = Scene::new("term");
    let bg = sc.spawn(&["--size", "2048", "--seed", "4"]);
    assert!(
        wait_roles(&sc.name, 4, Duration::from_secs(60)),
        "{}",
        bg.log()
    );
    // Ping is frozen until the stop has begun: the image cannot complete
    // first, however fast this machine paints (the result is partial by
    // construction, not by timing).
    let ping = role_pid(&sc.name, "ping");
    signal(ping, libc::SIGSTOP);
    let pids: Vec<u32> = live_roles(&sc.name).iter().map(|(_, p)| *p).collect();
    assert_eq!(pids.len(), 4);
    // Status sees the live run.
    let st = forkring(&["status", &sc.name, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let v = &v[0];
    assert_eq!(v["supervisor"]["alive"], true, "{v}");
    assert_eq!(v["roles"].as_array().unwrap().len(), 4);
    // Clean never touches a live run.
    let o = forkring(&["clean", &sc.name]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("live"));
    assert!(!segments_of(&sc.name).is_empty());

    signal(bg.pid(), libc::SIGTERM);
    let start = std::time::Instant::now();
    while status_phase(&sc.name) != "stopping" {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", bg.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(ping, libc::SIGCONT);
    let (status, log) = bg.wait(Duration::from_secs(120));
    assert!(status.success(), "{log}");
    assert!(
        !log.contains("did not stop in time"),
        "ping stopped gracefully: {log}"
    );
    for p in pids {
        assert!(!alive(p), "role {p} survived the stop");
    }
    assert!(
        segments_of(&sc.name).is_empty(),
        "{:?}",
        segments_of(&sc.name)
    );
    let s = sc.summary();
    assert_eq!(s["stopped_by"], "SIGTERM");
    assert_eq!(s["image"]["complete"], false);
    assert!(s["image"]["iterations"].as_u64().unwrap() > 0);
    // The partial image is consistent with its history.
    let v = forkring(&["verify", sc.out()]);
    assert!(v.status.success(), "{}", text(&v));
    assert!(text(&v).contains("partial image"));
    assert!(sc.dir.path().join("stream.jsonl").exists());
}

#[test]
fn status_and_clean_with_nothing_there() {
    let name = run_name("none");
    let o = forkring(&["status", &name]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no run named"));
    let o = forkring(&["clean", &name]);
    assert!(o.status.success());
    assert!(text(&o).contains("nothing to clean"));
    let o = forkring(&["run", "--name", "bad/name"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("letters, digits"));
}

#[test]
fn handoff_writes_a_dead_runs_results_elsewhere() {
    let _g = serial();
    let sc = Scene::new("handoff");
    let mut bg = sc.spawn(&["--size", "1024", "--seed", "8", "--rate", "2000"]);
    assert!(
        wait_roles(&sc.name, 4, Duration::from_secs(60)),
        "{}",
        bg.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    // Freeze ping so the image cannot complete (and the run hand itself
    // off) before the supervisor is killed; its death kills ping anyway.
    signal(role_pid(&sc.name, "ping"), libc::SIGSTOP);
    signal(bg.pid(), libc::SIGKILL);
    let _ = bg.child.wait();
    // The roles die with the supervisor; wait until their locks are gone.
    let start = std::time::Instant::now();
    while !live_roles(&sc.name).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "roles outlived the supervisor"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let elsewhere = tempdir();
    let o = forkring(&[
        "handoff",
        "--run",
        &sc.name,
        "--out",
        elsewhere.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["image.png", "history.bin", "stream.jsonl", "summary.json"] {
        assert!(
            elsewhere.path().join(f).exists(),
            "{f} missing: {}",
            text(&o)
        );
    }
    let s = summary(elsewhere.path());
    assert_eq!(s["stopped_by"], "handoff");
    let st = &s["stream"];
    assert_eq!(
        st["produced"].as_u64().unwrap(),
        st["received"].as_u64().unwrap() + st["dropped"].as_u64().unwrap(),
        "{st}"
    );
    let v = forkring(&["verify", elsewhere.path().to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    assert!(segments_of(&sc.name).is_empty());
    assert!(
        !sc.dir.path().join(".stream.partial").exists(),
        "working file left behind"
    );
}

/// The phase of a run, as `status --json` reports it ("" if unreadable).
fn status_phase(run: &str) -> String {
    let o = forkring(&["status", run, "--json"]);
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| v[0]["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Seconds of work of a live run, as `status --json` reports them.
fn seconds_of(run: &str) -> f64 {
    let o = forkring(&["status", run, "--json"]);
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| v[0]["seconds"].as_f64())
        .unwrap_or(0.0)
}

/// Starts `args`, waits until the run has `secs` of work, then SIGKILLs
/// its supervisor and waits until its roles are gone.
fn kill_after_work(sc: &Scene, args: &[&str], secs: f64) {
    let mut bg = spawn(args);
    let start = std::time::Instant::now();
    while seconds_of(&sc.name) < secs {
        assert!(
            start.elapsed() < Duration::from_secs(60) && !bg.exited(),
            "{}",
            bg.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(bg.pid(), libc::SIGKILL);
    let _ = bg.child.wait();
    let start = std::time::Instant::now();
    while !live_roles(&sc.name).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "roles outlived the supervisor"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `--duration` counts the work of every supervisor of a run: a resumed
/// run gets what remains, and one already past it finishes at once.
#[test]
fn duration_counts_the_work_of_every_supervisor() {
    let _g = serial();
    let sc = Scene::new("dur");
    let args = |d: &'static str| -> Vec<String> {
        [
            "run",
            "--name",
            &sc.name,
            "--out",
            sc.out(),
            "--jobs",
            "stream",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--seed", "1", "--duration", d].map(String::from))
        .collect()
    };
    let a3 = args("3");
    let a3: Vec<&str> = a3.iter().map(String::as_str).collect();
    kill_after_work(&sc, &a3, 1.5);
    let o = forkring(&a3);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("--duration 3.0 s counts the run's earlier")
            && text(&o).contains("s remain"),
        "{}",
        text(&o)
    );
    let s = sc.summary();
    assert_eq!(s["stopped_by"], "duration", "{s}");
    assert_eq!(s["resumes"], 1, "{s}");
    let secs = s["seconds"].as_f64().unwrap();
    // At least the duration; well below the 1.5 s already worked plus a
    // fresh 3 s, which a resume that restarted the clock would give.
    assert!((3.0..4.5).contains(&secs), "{secs} s of work: {s}");
    assert!(segments_of(&sc.name).is_empty());

    let sc = Scene::new("dur2");
    let args = |d: &'static str| -> Vec<String> {
        [
            "run",
            "--name",
            &sc.name,
            "--out",
            sc.out(),
            "--jobs",
            "stream",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--seed", "1", "--duration", d].map(String::from))
        .collect()
    };
    let a10 = args("10");
    kill_after_work(
        &sc,
        &a10.iter().map(String::as_str).collect::<Vec<_>>(),
        1.5,
    );
    let a1 = args("1");
    let o = forkring(&a1.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("--duration 1.0 s was already reached"),
        "{}",
        text(&o)
    );
    assert_eq!(sc.summary()["stopped_by"], "duration");
}

/// A new run into a directory holding another run's results is refused
/// (nothing created) unless --overwrite; the same run into its own
/// directory is not refused.
#[test]
fn results_are_not_overwritten_without_asking() {
    let _g = serial();
    let sc = Scene::new("ow");
    let quick = [
        "--jobs", "stream", "--rate", "max", "--count", "500", "--seed", "1",
    ];
    let o = sc.run(&quick);
    assert!(o.status.success(), "{}", text(&o));
    let first = std::fs::read(sc.dir.path().join("summary.json")).unwrap();
    let other = run_name("ow-other");
    let _c = Cleanup(other.clone());
    let mut args = vec!["run", "--name", &other, "--quiet", "--out", sc.out()];
    args.extend_from_slice(&quick);
    let o = forkring(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("already holds the results of run {}", sc.name))
            && text(&o).contains("--overwrite"),
        "{}",
        text(&o)
    );
    assert!(segments_of(&other).is_empty());
    assert_eq!(
        std::fs::read(sc.dir.path().join("summary.json")).unwrap(),
        first
    );
    // The same run started again into its own directory is fine.
    let o = sc.run(&quick);
    assert!(o.status.success(), "{}", text(&o));
    // --overwrite with another job: the earlier run's stream.jsonl goes
    // (it would sit beside the new results looking current); a file of
    // the user's stays.
    std::fs::write(sc.dir.path().join("notes.txt"), "mine").unwrap();
    let mut args = vec!["run", "--name", &other, "--quiet", "--out", sc.out()];
    args.extend_from_slice(&["--jobs", "image", "--size", "64", "--overwrite"]);
    let o = forkring(&args);
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(sc.dir.path());
    assert_eq!(s["run"], other.as_str());
    assert!(!sc.dir.path().join("stream.jsonl").exists(), "{s}");
    assert!(sc.dir.path().join("image.png").exists(), "{s}");
    assert!(sc.dir.path().join("notes.txt").exists());
    let o = forkring(&["verify", sc.out()]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Nothing to show is still an answer, in a /dev/shm of our own (a private
/// mount namespace), where no other test's run can appear.
#[test]
fn status_and_clean_say_when_there_is_nothing() {
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs /dev/shm && {b} status && {b} status --json && {b} clean --dry-run && {b} clean",
        b = bin()
    );
    let o = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output();
    let o = match o {
        Ok(o) if !text(&o).contains("unshare:") && !text(&o).contains("mount:") => o,
        Ok(o) => {
            eprintln!(
                "skipped: cannot mount a private tmpfs here: {}",
                text(&o).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("skipped: unshare is not available: {e}");
            return;
        }
    };
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "no runs in /dev/shm",
            "[]",
            "no runs in /dev/shm; nothing to clean",
            "no runs in /dev/shm; nothing to clean"
        ],
        "{}",
        text(&o)
    );
}

/// A role can claim its slot and attach before its supervisor has recorded
/// the fork; the role's state must still read "running" and the run's
/// phase must reach "running" (systemd's READY=1 waits for it). Caught
/// when a fast producer was left "starting" for its whole run.
#[test]
fn every_run_reaches_the_running_phase() {
    let _g = serial();
    for _ in 0..10 {
        let sc = Scene::new("phase");
        let mut bg = sc.spawn(&["--jobs", "stream", "--rate", "2000", "--dim", "2"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while status_phase(&sc.name) != "running" {
            assert!(
                std::time::Instant::now() < deadline,
                "phase {}: {}",
                status_phase(&sc.name),
                text(&forkring(&["status", &sc.name]))
            );
            assert!(!bg.exited(), "{}", bg.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        signal(bg.pid(), libc::SIGINT);
        let (st, log) = bg.wait(Duration::from_secs(30));
        assert_eq!(st.code(), Some(130), "{log}");
    }
}

/// Root sees another user's run (the systemd unit's `forkring` user)
/// read-only: `status` shows its roles and progress; `clean` refuses it
/// while it is live. (Removing a dead one is in tests/robust.rs.)
#[test]
fn root_sees_another_users_run_read_only() {
    let _g = serial();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a second user's run");
        return;
    }
    let name = run_name("otheruser");
    let _c = Cleanup(name.clone());
    let dir = tempdir();
    let out = dir.path().join("o");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let child = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()])
        .args(["run", "--name", &name, "--quiet", "--jobs", "stream"])
        .args(["--rate", "200", "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("skipped: setpriv (util-linux) is not available");
        return;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let v = loop {
        let o = forkring(&["status", &name, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v[0]["phase"] == "running" {
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            break v;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("root never saw the run running: {}", text(&o));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v[0]["readable"], true, "{v}");
    assert_eq!(v[0]["supervisor"]["alive"], true, "{v}");
    let roles = v[0]["roles"].as_array().unwrap();
    assert!(roles.iter().all(|r| r["alive"] == true), "{v}");
    let o = forkring(&["clean", &name]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("is live"), "{}", text(&o));
    assert!(!segments_of(&name).is_empty(), "root removed nothing");
    signal(child.id(), libc::SIGTERM);
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0), "a SIGTERM is a clean stop");
    assert!(out.join("summary.json").exists());
}

/// Runs `forkring ARGS` as `user` (primary group nogroup, plus the user's
/// supplementary groups), as a second user of the host would.
fn forkring_as(user: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid", user, "--regid", "65534", "--init-groups", bin()])
        .args(args)
        .output()
        .expect("setpriv runs")
}

/// Makes group `group` and the users `(name, member of group)` unless they
/// exist. `Err` says why it cannot (not root, no useradd).
fn make_users(group: &str, users: &[(&str, bool)]) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root to create users".into());
    }
    let run = |cmd: &str, args: &[&str]| -> Result<(), String> {
        match std::process::Command::new(cmd).args(args).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!("{cmd} {args:?} failed: {}", text(&o).trim())),
            Err(e) => Err(format!("{cmd} is not available: {e}")),
        }
    };
    run("groupadd", &["-f", group])?;
    for (u, member) in users {
        if nix::unistd::User::from_name(u).ok().flatten().is_some() {
            continue;
        }
        let mut args = vec!["-M", "-N", "-g", "65534", "-s", "/usr/sbin/nologin"];
        if *member {
            args.extend(["-G", group]);
        }
        args.push(u);
        run("useradd", &args)?;
    }
    Ok(())
}

/// `run --group` shares a run read-only with a group: a member sees it with
/// `status --user OWNER`; without `--user`, or outside the group, the run
/// is unreadable (exit 1); nobody but the owner can write a segment or
/// clean the live run; a `--group` the caller does not belong to is refused
/// before anything is created.
#[test]
fn a_group_member_sees_a_shared_run_with_status_user() {
    let _g = serial();
    let (group, owner, peer, stranger) = ("fkrt-share", "fkrt-owner", "fkrt-peer", "fkrt-stranger");
    if let Err(why) = make_users(group, &[(owner, true), (peer, true), (stranger, false)]) {
        eprintln!("skipped: {why}");
        return;
    }
    let gid = nix::unistd::Group::from_name(group)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let name = run_name("shared");
    let _c = Cleanup(name.clone());
    let dir = tempdir();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = dir.path().join("o");

    // Outside the group: refused with exit 2, nothing created.
    let o = forkring_as(
        stranger,
        &["run", "--name", &name, "--jobs", "stream", "--group", group],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not a member of group"), "{}", text(&o));
    assert!(segments_of(&name).is_empty(), "{:?}", segments_of(&name));

    let mut child = std::process::Command::new("setpriv")
        .args(["--reuid", owner, "--regid", "65534", "--init-groups", bin()])
        .args(["run", "--name", &name, "--quiet", "--jobs", "stream"])
        .args(["--rate", "200", "--group", group])
        .args(["--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let v = loop {
        let o = forkring_as(peer, &["status", &name, "--json", "--user", owner]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v[0]["phase"] == "running" {
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            break v;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the group member never saw the run running: {}", text(&o));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v[0]["supervisor"]["alive"], true, "{v}");
    let roles = v[0]["roles"].as_array().unwrap();
    assert!(
        !roles.is_empty() && roles.iter().all(|r| r["alive"] == true),
        "{v}"
    );
    // Every segment: the owner's, the group's, mode 0640.
    for f in segments_of(&name) {
        let st = nix::sys::stat::stat(format!("/dev/shm/{f}").as_str()).unwrap();
        assert_eq!(st.st_mode & 0o7777, 0o640, "{f}");
        assert_eq!(st.st_gid, gid, "{f}");
    }
    // The list with --user shows the owner's runs only.
    let o = forkring_as(peer, &["status", "--json", "--user", owner]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["run"].as_str())
        .collect();
    assert!(runs.contains(&name.as_str()), "{list}");
    // Without --user: not ours, exit 1, and the hint names --user.
    let o = forkring_as(peer, &["status", &name]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--user"), "{}", text(&o));
    // Naming another owner than the real one is refused too.
    let o = forkring_as(peer, &["status", &name, "--user", "root"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // Outside the group: the kernel refuses, exit 1.
    let o = forkring_as(stranger, &["status", &name, "--user", owner]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not shared with a group"), "{}", text(&o));
    // A member can neither write a segment nor clean the run.
    let seg = format!("/dev/shm/forkring.{name}.control");
    let o = std::process::Command::new("setpriv")
        .args(["--reuid", peer, "--regid", "65534", "--init-groups"])
        .args(["sh", "-c", &format!("printf x >> {seg}")])
        .output()
        .unwrap();
    assert!(!o.status.success(), "a group member wrote into {seg}");
    let o = forkring_as(peer, &["clean", &name]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!segments_of(&name).is_empty(), "the member removed the run");
    let o = forkring_as(peer, &["run", "--name", &name, "--jobs", "stream"]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));

    signal(child.id(), libc::SIGTERM);
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0), "a SIGTERM is a clean stop");
    assert!(out.join("summary.json").exists());
    assert!(segments_of(&name).is_empty(), "{:?}", segments_of(&name));
}

/// A resume started the moment its SIGKILLed supervisor is reaped finds the dead
/// supervisor's roles still exiting (the kernel kills them through
/// `PR_SET_PDEATHSIG`): it waits for them instead of starting roles that
/// fail on their taken slots and count as restarts.
#[test]
fn a_resume_right_after_a_supervisor_kill_counts_no_restart() {
    let _g = serial();
    for round in 0..3 {
        let sc = Scene::new("quickresume");
        let args = ["--jobs", "image", "--size", "4096"];
        let mut bg = sc.spawn(&args);
        assert!(
            wait_attached(&sc.name, 2, Duration::from_secs(20)),
            "{}",
            bg.log()
        );
        std::thread::sleep(Duration::from_millis(200));
        signal(bg.pid(), libc::SIGKILL);
        // Reaped: its lock is gone (a resume a microsecond after the kill
        // rightly finds the supervisor still alive); its roles may not be.
        let _ = bg.child.wait();
        let o = sc.run(&[&args[..], &["--duration", "0.5"]].concat());
        assert_eq!(o.status.code(), Some(0), "round {round}: {}", text(&o));
        assert!(
            !text(&o).contains("already running") && !text(&o).contains("restarting"),
            "round {round}: {}",
            text(&o)
        );
        let s = sc.summary();
        assert_eq!(s["resumes"], 1, "{s}");
        for role in ["ping", "pong"] {
            assert_eq!(s["restarts"][role], 0, "round {round}: {s}");
        }
        drop(bg);
    }
}

/// Another run may hand off into the same --out while this one works, and
/// `forkring handoff --out` may name a directory with another run's
/// results: neither replaces (or removes) those results without
/// --overwrite, and the refused run keeps its results in its segments.
#[test]
fn no_handoff_replaces_another_runs_results() {
    let _g = serial();
    let a = Scene::new("ow-late");
    let b_name = run_name("ow-early");
    let _c = Cleanup(b_name.clone());
    // A: about 2.5 s of stream work into its own directory.
    let bg = a.spawn(&["--jobs", "stream", "--rate", "1000", "--count", "2500"]);
    assert!(
        wait_attached(&a.name, 2, Duration::from_secs(20)),
        "{}",
        bg.log()
    );
    // B, started and finished meanwhile into the same directory.
    let o = forkring(&[
        "run",
        "--name",
        &b_name,
        "--quiet",
        "--out",
        a.out(),
        "--jobs",
        "image",
        "--size",
        "64",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let b_summary = std::fs::read(a.dir.path().join("summary.json")).unwrap();
    let (st, log) = bg.wait(Duration::from_secs(60));
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("already holds the results of run {b_name}"))
            && log.contains("forkring handoff --run"),
        "{log}"
    );
    // B's results are untouched; A's are still in its segments.
    assert_eq!(
        std::fs::read(a.dir.path().join("summary.json")).unwrap(),
        b_summary
    );
    assert!(a.dir.path().join("image.png").exists());
    assert!(!a.dir.path().join("stream.jsonl").exists());
    assert!(!segments_of(&a.name).is_empty());
    // `handoff --out` into B's directory: refused alike, nothing changes.
    let o = forkring(&["handoff", "--run", &a.name, "--out", a.out()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--overwrite"), "{}", text(&o));
    assert_eq!(
        std::fs::read(a.dir.path().join("summary.json")).unwrap(),
        b_summary
    );
    assert!(a.dir.path().join("image.png").exists());
    // Elsewhere, the results are complete.
    let elsewhere = tempdir();
    let o = forkring(&[
        "handoff",
        "--run",
        &a.name,
        "--out",
        elsewhere.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(summary(elsewhere.path())["stream"]["received"], 2500);
    assert!(segments_of(&a.name).is_empty());
    let o = forkring(&["verify", elsewhere.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}
