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
    std::thread::sleep(Duration::from_millis(300));
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
    let (status, log) = bg.wait(Duration::from_secs(120));
    assert!(status.success(), "{log}");
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
