//! Chaos and faults: random SIGKILLs of every role in a combined run, the
//! supervisor killed and resumed, SIGTERM at a random moment, a crash loop,
//! a /dev/shm too small, and segments that are not ours.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The combined run every test here uses (the image part is what is
/// compared; the stream part is checked for conservation).
const COMBINED: [&str; 6] = ["--size", "1024", "--seed", "99", "--rate", "2000"];

/// The image of a fault-free run (image job alone: the image does not
/// depend on the stream).
fn reference_image() -> (Vec<u8>, Vec<u8>) {
    let sc = Scene::new("chref");
    let o = sc.run(&["--jobs", "image", "--size", "1024", "--seed", "99"]);
    assert!(o.status.success(), "{}", text(&o));
    let read = |f| std::fs::read(sc.dir.path().join(f)).unwrap();
    (read("image.png"), read("history.bin"))
}

fn check_result(sc: &Scene, want: &(Vec<u8>, Vec<u8>)) -> serde_json::Value {
    let read = |f| std::fs::read(sc.dir.path().join(f)).unwrap();
    assert!(
        read("image.png") == want.0,
        "image differs from the fault-free run"
    );
    assert!(
        read("history.bin") == want.1,
        "history differs from the fault-free run"
    );
    let s = sc.summary();
    let st = &s["stream"];
    let (p, r, d) = (
        st["produced"].as_u64().unwrap(),
        st["received"].as_u64().unwrap(),
        st["dropped"].as_u64().unwrap(),
    );
    assert_eq!(p, r + d, "stream conservation: {st}");
    assert_eq!(st["duplicates"], 0, "{st}");
    assert_eq!(st["filled"], st["dropped"], "{st}");
    s
}

#[test]
fn fifty_sigkills_of_random_roles() {
    let _g = serial();
    let want = reference_image();
    let sc = Scene::new("chaos50");
    let mut args = COMBINED.to_vec();
    args.extend(["--max-restarts", "10000"]);
    let mut bg = sc.spawn(&args);
    let mut rng = Lcg(50);
    let by_role = kill_random_roles(&mut bg, &sc.name, &mut rng, 20_000, 50);
    let kills: usize = by_role.values().sum();
    assert_eq!(
        kills,
        50,
        "the run ended after only {kills} kills: {}",
        bg.log()
    );
    let (status, log) = bg.wait(Duration::from_secs(120));
    assert!(status.success(), "{log}");
    let s = check_result(&sc, &want);
    let restarts: u64 = s["restarts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(
        restarts >= 40,
        "kills {by_role:?} but only {restarts} restarts recorded: {s}"
    );
    assert!(segments_of(&sc.name).is_empty());
}

#[test]
fn supervisor_killed_then_resumed() {
    let _g = serial();
    let want = reference_image();
    let sc = Scene::new("chresume");
    let mut bg = sc.spawn(&COMBINED);
    assert!(
        wait_roles(&sc.name, 4, Duration::from_secs(60)),
        "{}",
        bg.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    let roles: Vec<u32> = live_roles(&sc.name).iter().map(|(_, p)| *p).collect();
    // Freeze ping: the image cannot complete (and the run hand itself off)
    // before the supervisor dies, however fast the machine. A frozen role
    // still dies with its supervisor (SIGKILL).
    signal(role_pid(&sc.name, "ping"), libc::SIGSTOP);
    signal(bg.pid(), libc::SIGKILL);
    let _ = bg.child.wait();
    let killed = Instant::now();
    // Every role dies with its supervisor (parent-death signal).
    while roles.iter().any(|&p| alive(p)) {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "a role outlived its supervisor by a second"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The segments outlive everything; status says the supervisor is dead.
    assert!(!segments_of(&sc.name).is_empty());
    let st = forkring(&["status", &sc.name, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let v = &v[0];
    assert_eq!(v["supervisor"]["alive"], false, "{v}");
    // Different settings are refused, naming the difference.
    let o = sc.run(&["--size", "512", "--seed", "99", "--rate", "2000"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("--size: the run has 1024x1024, you asked for 512x512"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains(&format!("forkring clean {}", sc.name)),
        "{}",
        text(&o)
    );
    // The same command resumes and finishes with the fault-free result.
    let o = sc.run(&COMBINED);
    assert!(o.status.success(), "{}", text(&o));
    let s = check_result(&sc, &want);
    assert_eq!(s["resumes"], 1, "{s}");
    assert!(segments_of(&sc.name).is_empty());
}

#[test]
fn sigterm_at_a_random_moment() {
    let _g = serial();
    let mut rng = Lcg(0xde1a);
    for round in 0..3 {
        let sc = Scene::new(&format!("chterm{round}"));
        let mut args = COMBINED[..4].to_vec();
        args.extend(["--stop-timeout", "2"]);
        let mut bg = sc.spawn(&args);
        // A random moment of the run's life: from its creation (the
        // control segment exists) to well after the image is done.
        let control = format!("/dev/shm/forkring.{}.control", sc.name);
        let start = Instant::now();
        while !std::path::Path::new(&control).exists() && !bg.exited() {
            assert!(start.elapsed() < Duration::from_secs(30), "{}", bg.log());
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        let roles: Vec<u32> = live_roles(&sc.name).iter().map(|(_, p)| *p).collect();
        let sent = Instant::now();
        signal(bg.pid(), libc::SIGTERM);
        let (status, log) = bg.wait(Duration::from_secs(60));
        let took = sent.elapsed();
        assert!(status.success(), "round {round}: {log}");
        // Roles get --stop-timeout (2 s); the handoff of a 1024x1024
        // image is well under a second more.
        assert!(
            took < Duration::from_secs(10),
            "round {round}: exit took {took:?}"
        );
        for p in roles {
            assert!(!alive(p), "role {p} survived");
        }
        assert!(
            segments_of(&sc.name).is_empty(),
            "round {round}: {:?}",
            segments_of(&sc.name)
        );
        let s = sc.summary();
        // SIGTERM may land before roles start or after the image is done.
        assert!(
            s["stopped_by"] == "SIGTERM" || s["stopped_by"].is_null(),
            "{s}"
        );
        let v = forkring(&["verify", sc.out()]);
        assert!(v.status.success(), "{}", text(&v));
        let st = &s["stream"];
        assert_eq!(
            st["produced"].as_u64().unwrap(),
            st["received"].as_u64().unwrap() + st["dropped"].as_u64().unwrap()
        );
    }
}

#[test]
fn crash_loop_trips_the_restart_limit() {
    let _g = serial();
    let sc = Scene::new("chloop");
    let bg = sc.spawn(&[
        "--jobs",
        "stream",
        "--max-restarts",
        "3",
        "--restart-window",
        "10",
    ]);
    // Both attached (not merely alive): a consumer still validating the
    // ring would meet the corrupt field too.
    assert!(
        wait_attached(&sc.name, 2, Duration::from_secs(60)),
        "{}",
        bg.log()
    );
    // Corrupt the ring's capacity field (first word of the body, after the
    // 128-byte header): every new producer fails to attach and exits 1.
    // Written in place: truncating a segment that live roles map (as
    // std::fs::write does) would SIGBUS them.
    let ring = format!("/dev/shm/forkring.{}.ring", sc.name);
    patch_in_place(&ring, 128, &3u32.to_le_bytes());
    let producer = role_pid(&sc.name, "producer");
    signal(producer, libc::SIGKILL);
    let (status, log) = bg.wait(Duration::from_secs(120));
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(log.contains("role producer exited with status 1"), "{log}");
    assert!(
        !log.contains("consumer exited"),
        "the attached consumer is unaffected: {log}"
    );
    assert!(log.contains("more than 3 restarts"), "{log}");
    assert!(
        log.contains("ring field capacity = 3 is invalid"),
        "the role's own error names the field: {log}"
    );
    // The segments are kept for inspection or resume; status shows why.
    let st = forkring(&["status", &sc.name, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let v = &v[0];
    assert_eq!(v["phase"], "failed", "{v}");
    let o = forkring(&["clean", &sc.name]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(segments_of(&sc.name).is_empty());
}

#[test]
fn dev_shm_too_small() {
    let _g = serial();
    let probe = std::process::Command::new("unshare")
        .args([
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs -o size=1m tmpfs /dev/shm",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
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
    }
    let dir = tempdir();
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {} run --name small --size 512 --quiet --out {}",
        bin(),
        dir.path().display()
    );
    let o = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("needs") && t.contains("free") && t.contains("--shm-size"),
        "{t}"
    );
    assert!(!dir.path().join("summary.json").exists());
}

#[test]
fn foreign_and_garbage_segments_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let _g = serial();
    let sc = Scene::new("chforeign");
    let tiny = ["--size", "64"];
    let control = format!("/dev/shm/forkring.{}.control", sc.name);
    // Mode 0644: someone else made it, or made it readable for others.
    std::fs::write(&control, vec![0u8; 4096]).unwrap();
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = sc.run(&tiny);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("mode 0644, expected 0600"),
        "{}",
        text(&o)
    );
    // Another owner.
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o600)).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&control, Some(4242), None).unwrap();
        let o = sc.run(&tiny);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("owned by uid 4242"), "{}", text(&o));
        std::os::unix::fs::chown(&control, Some(0), None).unwrap();
    }
    // Garbage.
    let garbage: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&control, &garbage).unwrap();
    let o = sc.run(&tiny);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("magic"), "{}", text(&o));
    // `status NAME` reports what it found and exits 1, as `systemctl
    // status` does for a unit it cannot show; the list marks the run.
    let o = forkring(&["status", &sc.name]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("unreadable"), "{}", text(&o));
    let o = forkring(&["status", &sc.name, "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["readable"], false, "{v}");
    let o = forkring(&["status"]);
    assert!(o.status.success(), "the list keeps exit 0: {}", text(&o));
    assert!(
        text(&o).contains(&format!("run {}: unreadable", sc.name)),
        "{}",
        text(&o)
    );
    let o = forkring(&["clean", &sc.name]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(segments_of(&sc.name).is_empty());
    // Garbage in a job segment of a resumable run: the resume is refused
    // with the segment and field named, and nothing crashes.
    let sc2 = Scene::new("chgarbage");
    let args = ["--jobs", "image", "--size", "512", "--seed", "1"];
    let mut bg = sc2.spawn(&args);
    assert!(
        wait_roles(&sc2.name, 2, Duration::from_secs(60)),
        "{}",
        bg.log()
    );
    // The run must still exist when its supervisor dies (see above).
    signal(role_pid(&sc2.name, "ping"), libc::SIGSTOP);
    signal(bg.pid(), libc::SIGKILL);
    let _ = bg.child.wait();
    // The roles die with their supervisor: wait for their locks to go.
    let start = Instant::now();
    while !live_roles(&sc2.name).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "roles outlived the supervisor"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let img = format!("/dev/shm/forkring.{}.image", sc2.name);
    let len = std::fs::metadata(&img).unwrap().len() as usize;
    patch_in_place(&img, 128, &vec![0xa5; len - 128]);
    let o = sc2.run(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("forkring.{}.image", sc2.name)),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("forkring clean"), "{}", text(&o));
}
