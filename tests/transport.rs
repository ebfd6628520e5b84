//! End-to-end tests of `forkring bench transport`: the real binary, a real
//! peer process, real segments in /dev/shm. They fork and spin, so they run
//! one at a time (SERIAL), and their counts are small except where the
//! point is volume.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn start(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_forkring"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start forkring")
}

/// Runs forkring to completion; asserts it succeeded and left no segments
/// of its bench run behind.
fn run_ok(args: &[&str]) -> String {
    let child = start(args);
    let pid = child.id();
    let out: Output = child.wait_with_output().expect("wait for forkring");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "forkring {args:?} failed ({}): {stderr}",
        out.status
    );
    assert_eq!(
        bench_segments(pid),
        Vec::<String>::new(),
        "segments left behind"
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Segments of the bench run of process `pid` in /dev/shm.
fn bench_segments(pid: u32) -> Vec<String> {
    let prefix = format!("forkring.bench-{pid}.");
    std::fs::read_dir("/dev/shm")
        .expect("list /dev/shm")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[test]
fn ring_carries_ten_million_messages_in_order() {
    let _s = serial();
    let out = run_ok(&[
        "bench",
        "transport",
        "--only",
        "ring",
        "--messages",
        "10000000",
        "--json",
    ]);
    // The receiver checked every sequence number and the checksum; success
    // means all 10M arrived in order and intact.
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{out}");
    let l = &lines[0];
    assert_eq!(l["mechanism"], "ring");
    assert_eq!(l["kind"], "throughput");
    assert_eq!(l["count"], 10_000_000);
    assert!(l["msgs_per_s"].as_f64().unwrap() > 0.0);
    assert!(l["ratio_to_pipe"].is_null(), "no pipe measured: {l}");
}

#[test]
fn turn_makes_a_million_handoffs() {
    let _s = serial();
    let out = run_ok(&[
        "bench",
        "transport",
        "--only",
        "turn-spin",
        "--passes",
        "1000000",
        "--json",
    ]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{out}");
    let l = &lines[0];
    assert_eq!(l["mechanism"], "turn-spin");
    assert_eq!(l["kind"], "latency");
    assert_eq!(l["count"], 1_000_000);
    assert!(l["latency_ns"].as_f64().unwrap() > 0.0);
}

#[test]
fn quick_run_shows_every_mechanism() {
    let _s = serial();
    let out = run_ok(&[
        "bench",
        "transport",
        "--passes",
        "2000",
        "--messages",
        "20000",
    ]);
    assert!(out.contains("machine: "), "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() >= 2 && (w[1] == "latency" || w[1] == "throughput"))
        .collect();
    let names: Vec<(&str, &str)> = rows.iter().map(|w| (w[0], w[1])).collect();
    assert_eq!(
        names,
        [
            ("turn-spin", "latency"),
            ("turn-sleep", "latency"),
            ("pipe", "latency"),
            ("socket", "latency"),
            ("eventfd", "latency"),
            ("ring", "throughput"),
            ("pipe", "throughput"),
            ("socket", "throughput"),
        ],
        "{out}"
    );
    for w in &rows {
        let count = if w[1] == "latency" { "2,000" } else { "20,000" };
        assert_eq!(w[2], count, "{out}");
        assert!(w.last().unwrap().ends_with('x'), "ratio missing: {out}");
    }
}

#[test]
fn json_ratios_are_relative_to_the_pipe() {
    let _s = serial();
    let out = run_ok(&[
        "bench",
        "transport",
        "--only",
        "pipe,eventfd",
        "--passes",
        "1000",
        "--messages",
        "5000",
        "--json",
    ]);
    let lines = json_lines(&out);
    let mechs: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["mechanism"].as_str().unwrap(),
                l["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        mechs,
        [
            ("pipe", "latency"),
            ("eventfd", "latency"),
            ("pipe", "throughput")
        ]
    );
    assert_eq!(lines[0]["ratio_to_pipe"], 1.0);
    assert_eq!(lines[2]["ratio_to_pipe"], 1.0);
    let expect =
        lines[0]["latency_ns"].as_f64().unwrap() / lines[1]["latency_ns"].as_f64().unwrap();
    let got = lines[1]["ratio_to_pipe"].as_f64().unwrap();
    assert!(
        (got - expect).abs() < 1e-9 * expect.max(1.0),
        "{got} vs {expect}"
    );
}

#[test]
fn bad_options_are_usage_errors() {
    let _s = serial();
    let out = start(&["bench", "transport", "--only", "carrier-pigeon"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown mechanism"), "{err}");

    // The peer on its own: a clear one-line error, exit 1.
    let out = start(&[
        "bench-peer",
        "ring",
        "--count",
        "10",
        "--run",
        "no-such-run",
    ])
    .wait_with_output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn sigint_removes_segments_and_kills_the_peer() {
    let _s = serial();
    // A long sleeping-turn measurement: it idles in futex waits until we
    // interrupt it.
    let mut child = start(&[
        "bench",
        "transport",
        "--only",
        "turn-sleep",
        "--passes",
        "1000000000",
    ]);
    let pid = child.id();
    let end = Instant::now() + Duration::from_secs(20);
    let peer = loop {
        if let Some(p) = find_peer(pid) {
            break p;
        }
        assert!(Instant::now() < end, "the bench peer never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!bench_segments(pid).is_empty());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(bench_segments(pid), Vec::<String>::new());
    let end = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{peer}")).exists() && !is_zombie(peer) {
        assert!(Instant::now() < end, "bench peer {peer} survived");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pid of the `bench-peer` of bench process `parent`, once it runs.
fn find_peer(parent: u32) -> Option<u32> {
    let run = format!("bench-{parent}");
    for e in std::fs::read_dir("/proc").ok()? {
        let Some(pid) = e
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.contains(&b"bench-peer".as_slice()) && args.contains(&run.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
