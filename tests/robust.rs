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
