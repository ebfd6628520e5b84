//! The command line's own services: completions, manual pages, --version,
//! status --watch, verify (and its --json) on a stream-only run and on a
//! tampered file, and help texts free of insider wording.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn completions_cover_the_registry_options() {
    let o = forkring(&["completions", "bash"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    // Job options come from the registry at run time: they are there.
    for want in [
        "_forkring",
        "--rate-window",
        "--size",
        "status",
        "completions",
    ] {
        assert!(t.contains(want), "bash completion lacks {want}");
    }
    for shell in ["zsh", "fish"] {
        let o = forkring(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("rate-window"),
            "{shell}"
        );
    }
    let o = forkring(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn manual_pages_and_version() {
    let o = forkring(&["man"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.starts_with(".ie") || t.contains(".TH forkring"), "{t}");
    assert!(t.contains("status"), "the page lists the subcommands");
    let o = forkring(&["man", "run"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains(".TH forkring-run") && t.contains("rate\\-window"),
        "{t}"
    );
    let o = forkring(&["man", "nope"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).starts_with("error: "), "{}", text(&o));
    let o = forkring(&["--version"]);
    assert!(o.status.success());
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(
        v.starts_with("forkring 0.") && v.contains("(commit "),
        "{v}"
    );
}

#[test]
fn status_watch_refreshes_until_stopped() {
    let name = run_name("watch");
    let mut bg = spawn(&["status", &name, "--watch", "0.2"]);
    let start = Instant::now();
    while bg.log().matches("no run named").count() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(30) && !bg.exited(),
            "{}",
            bg.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(bg.pid(), libc::SIGINT);
    let (_, log) = bg.wait(Duration::from_secs(10));
    assert!(!log.contains("panicked"), "{log}");
    for bad in ["0.01", "0", "100000", "x"] {
        let o = forkring(&["status", "--watch", bad]);
        assert_eq!(o.status.code(), Some(2), "--watch {bad}: {}", text(&o));
    }
}

#[test]
fn verify_checks_every_listed_file_and_speaks_json() {
    let _g = serial();
    let sc = Scene::new("verify");
    let o = sc.run(&[
        "--jobs", "stream", "--rate", "max", "--count", "1000", "--seed", "2",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // A stream-only run has no image files, and needs none.
    let o = forkring(&["verify", sc.out()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("ok: stream: 1,000 produced"),
        "{}",
        text(&o)
    );
    let o = forkring(&["verify", sc.out(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["schema_version"], 1, "{v}");
    // One line appended: the recorded size and checksum no longer match.
    let f = sc.dir.path().join("stream.jsonl");
    let mut t = std::fs::read_to_string(&f).unwrap();
    t.push_str("{}\n");
    std::fs::write(&f, t).unwrap();
    let o = forkring(&["verify", sc.out(), "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("stream.jsonl"), "{v}");
}

#[test]
fn help_has_no_insider_wording() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["bench", "--help"],
        vec!["bench", "image", "--help"],
        vec!["bench", "stream", "--help"],
    ] {
        let o = forkring(&args);
        assert!(o.status.success(), "{args:?}");
        let t = text(&o).to_lowercase();
        assert!(!t.contains("reference"), "{args:?}: {t}");
    }
    let o = forkring(&["run", "--help"]);
    let t = text(&o);
    // Every default is shown the same way: inline, as [default: ...].
    // (clap would print its own as a paragraph of their own.)
    assert!(!t.contains("\n          \n          [default:"), "{t}");
    assert!(t.contains("--noise-burst"), "{t}");
}

/// Every key of summary.json (top level, each job's settings and results,
/// the supervisor's options) is documented in docs/schemas.md.
#[test]
fn every_summary_field_is_documented() {
    let _g = serial();
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schemas.md")).unwrap();
    let sc = Scene::new("schema");
    let tasks = sc.dir.path().join("tasks.txt");
    std::fs::write(&tasks, "spin 1\nspin 2\n").unwrap();
    let o = sc.run(&[
        "--jobs",
        "image,stream,tasks",
        "--size",
        "64",
        "--rate",
        "max",
        "--count",
        "500",
        "--noise",
        "--tasks",
        tasks.to_str().unwrap(),
        "--duration",
        "60",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = sc.summary();
    let mut missing = Vec::new();
    let mut check = |path: &str, v: &serde_json::Value| {
        for k in v.as_object().unwrap().keys() {
            if !doc.contains(&format!("`{k}`")) && !doc.contains(&format!("`{k},")) {
                missing.push(format!("{path}{k}"));
            }
        }
    };
    check("", &s);
    check("supervisor.", &s["supervisor"]);
    for job in ["image", "stream", "tasks"] {
        check(&format!("settings.{job}."), &s["settings"][job]);
        check(&format!("{job}."), &s[job]);
    }
    assert!(missing.is_empty(), "not in docs/schemas.md: {missing:?}");
}
