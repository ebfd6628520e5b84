//! `forkring bench image` and `bench stream` run, verify their pipelines
//! and report every figure (no timing is asserted).

mod common;

use common::*;
use serde_json::Value;

fn json_lines(o: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn bench_image_reports_solo_and_alternating() {
    let _g = serial();
    let o = forkring(&[
        "bench",
        "image",
        "--size",
        "96x64",
        "--no-python-sizes",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["mode"], "solo");
    assert_eq!(lines[1]["mode"], "alternating");
    for l in &lines {
        assert_eq!(l["iterations"], 96 * 64);
        assert!(l["seconds"].as_f64().unwrap() > 0.0);
    }
    assert!(
        bench_segments().is_empty(),
        "left behind: {:?}",
        bench_segments()
    );
    let o = forkring(&["bench", "image", "--size", "5000"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bench_stream_reports_every_pipeline() {
    let _g = serial();
    let o = forkring(&[
        "bench",
        "stream",
        "--count",
        "20000",
        "--idle-seconds",
        "0.3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let lines = json_lines(&o);
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["mechanism"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "generation alone",
            "ring (the job)",
            "pipe",
            "unix socket",
            "ring at 1000 Hz"
        ]
    );
    for l in &lines[..4] {
        assert!(l["vectors_per_s"].as_f64().unwrap() > 0.0, "{l}");
    }
    assert!(lines[4]["cpu_percent_of_one_core"].as_f64().unwrap() > 0.0);
    assert!(lines[4]["empty_1khz_sleeper_percent"].as_f64().unwrap() > 0.0);
    assert!(
        bench_segments().is_empty(),
        "left behind: {:?}",
        bench_segments()
    );
}

/// Benchmark segments in /dev/shm (the tests of this file run one at a
/// time, and no other test binary runs meanwhile).
fn bench_segments() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with("forkring.bench-"))
        .collect()
}

#[test]
fn bench_tasks_reports_every_workload() {
    let _g = serial();
    let o = forkring(&["bench", "tasks", "--quick", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let lines = json_lines(&o);
    let workloads: Vec<&str> = lines
        .iter()
        .map(|l| l["workload"].as_str().unwrap())
        .collect();
    assert_eq!(
        workloads,
        [
            "io", "dispatch", "dispatch", "dispatch", "cpu", "relay", "relay", "recovery"
        ],
        "{lines:?}"
    );
    for l in &lines {
        assert_eq!(l["bench"], "tasks");
        assert!(l["cpus"].as_u64().unwrap() >= 1, "{l}");
    }
    let transports: Vec<&str> = lines[1..4]
        .iter()
        .map(|l| l["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["shm task table", "pipe", "unix socket"]);
    assert!(lines[1]["tasks_per_s"].as_f64().unwrap() > 0.0);
    assert!(lines[7]["p50_ns"].as_f64().unwrap() > 0.0);
    assert!(
        bench_segments().is_empty(),
        "left behind: {:?}",
        bench_segments()
    );
}

#[test]
fn bench_export_compares_export_and_intake_with_local() {
    let _g = serial();
    let o = forkring(&[
        "bench",
        "export",
        "--repeat",
        "1",
        "--vectors",
        "5000",
        "--tasks",
        "300",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let lines = json_lines(&o);
    let what: Vec<(&str, bool)> = lines
        .iter()
        .map(|l| {
            (
                l["workload"].as_str().unwrap(),
                l["ratio_to_local"].is_f64(),
            )
        })
        .collect();
    assert_eq!(
        what,
        [
            ("stream", false),
            ("stream", true),
            ("stream", true),
            ("tasks", false),
            ("tasks", true)
        ],
        "{lines:?}"
    );
    for l in &lines {
        assert_eq!(l["bench"], "export");
        assert!(l["per_s"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["cpus"].as_u64().unwrap() >= 1, "{l}");
    }
    // block exports everything; drop accounts for everything.
    let b = &lines[1]["export"];
    assert_eq!(b["exported_vectors"], 5000, "{b}");
    let d = &lines[2]["export"];
    assert_eq!(
        d["exported_vectors"].as_u64().unwrap() + d["dropped_vectors"].as_u64().unwrap(),
        5000,
        "{d}"
    );
    assert!(
        bench_segments().is_empty(),
        "left behind: {:?}",
        bench_segments()
    );
}
