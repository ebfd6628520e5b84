//! The stream job through the real binary: exact dropout detection,
//! interpolation, batch statistics, SIGKILL crash safety, bad input.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn run_stream(sc: &Scene, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--jobs", "stream"];
    args.extend_from_slice(extra);
    sc.run(&args)
}

fn jsonl(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("stream.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// A row of stream.txt: sequence number, filled in, values.
type Row = (u64, bool, Vec<f64>);
/// A batch's printed (mean, std) per column.
type Table = Vec<(f64, f64)>;

/// Rows of stream.txt, and per batch the printed statistics table.
fn parse_text(dir: &std::path::Path) -> (Vec<Row>, Vec<Table>) {
    let text = std::fs::read_to_string(dir.join("stream.txt")).unwrap();
    let mut rows = Vec::new();
    let mut tables = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with("===") {
            continue;
        }
        if line.starts_with("---") {
            tables.push(Vec::new());
            in_table = true;
            continue;
        }
        if line.trim_start().starts_with("seq")
            || line.trim_start().starts_with("column")
            || line.is_empty()
        {
            continue;
        }
        if line.starts_with("rate ") || line.starts_with("filled in:") {
            in_table = false;
            continue;
        }
        let mut it = line.split_whitespace();
        let first = it.next().unwrap();
        if in_table {
            let m: f64 = it.next().unwrap().parse().unwrap();
            let s: f64 = it.next().unwrap().parse().unwrap();
            tables.last_mut().unwrap().push((m, s));
        } else {
            let filled = first.ends_with('*');
            let seq: u64 = first.trim_end_matches('*').parse().unwrap();
            let vals = it.map(|v| v.parse().unwrap()).collect();
            rows.push((seq, filled, vals));
        }
    }
    (rows, tables)
}

#[test]
fn noise_dropouts_are_detected_exactly() {
    let _g = serial();
    let sc = Scene::new("noise");
    // 6000 vectors at 2000/s: about 3 s, with a dropout every 0.2-0.3 s.
    let o = run_stream(
        &sc,
        &[
            "--rate",
            "2000",
            "--count",
            "6000",
            "--noise",
            "--noise-low",
            "0.2",
            "--noise-high",
            "0.3",
            "--seed",
            "9",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let s = sc.summary()["stream"].clone();
    let (produced, received, dropped) = (
        s["produced"].as_u64().unwrap(),
        s["received"].as_u64().unwrap(),
        s["dropped"].as_u64().unwrap(),
    );
    assert_eq!(produced, 6000);
    assert_eq!(produced, received + dropped, "{s}");
    assert_eq!(
        s["filled"], s["dropped"],
        "every dropout filled exactly once: {s}"
    );
    assert_eq!(
        s["gaps"], s["drop_events"],
        "one gap per dropout event: {s}"
    );
    assert_eq!(s["duplicates"], 0);
    let events = s["drop_events"].as_u64().unwrap();
    // About 3 s of production; one event every 0.2-0.3 s.
    assert!(
        (8..=16).contains(&events),
        "{events} dropout events in ~3 s: {s}"
    );
    // The per-batch records add up to the same figures.
    let lines = jsonl(sc.dir.path());
    assert_eq!(lines.len() as u64, s["batches"].as_u64().unwrap());
    let rx: u64 = lines.iter().map(|l| l["received"].as_u64().unwrap()).sum();
    let ex: u64 = lines.iter().map(|l| l["filled"].as_u64().unwrap()).sum();
    assert_eq!((rx, ex), (received, dropped));
    assert_eq!(lines.last().unwrap()["last_seq"], 5999);
    assert!(segments_of(&sc.name).is_empty());
}

#[test]
fn gaps_are_interpolated_and_batch_statistics_are_exact() {
    let _g = serial();
    let sc = Scene::new("interp");
    let o = run_stream(
        &sc,
        &[
            "--rate",
            "4000",
            "--count",
            "2000",
            "--noise",
            "--noise-low",
            "0.05",
            "--noise-high",
            "0.1",
            "--format",
            "text",
            "--dim",
            "4",
            "--batch",
            "50",
            "--seed",
            "3",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let (rows, tables) = parse_text(sc.dir.path());
    assert_eq!(rows.len(), 2000);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.0, i as u64, "rows are in sequence order");
    }
    let mut filled = 0;
    for i in 0..rows.len() {
        if !rows[i].1 {
            continue;
        }
        filled += 1;
        // Neighbours: the closest received rows on each side.
        let a = (0..i).rev().find(|&k| !rows[k].1);
        let b = (i + 1..rows.len()).find(|&k| !rows[k].1);
        let want: Vec<f64> = match (a, b) {
            (Some(a), Some(b)) => {
                let t = (i - a) as f64 / (b - a) as f64;
                rows[a]
                    .2
                    .iter()
                    .zip(&rows[b].2)
                    .map(|(x, y)| x + (y - x) * t)
                    .collect()
            }
            (Some(a), None) => rows[a].2.clone(),
            (None, Some(b)) => rows[b].2.clone(),
            (None, None) => unreachable!(),
        };
        for (got, w) in rows[i].2.iter().zip(&want) {
            assert!(
                (got - w).abs() < 2e-4,
                "row {i}: {got} vs straight line {w}"
            );
        }
    }
    assert!(filled > 0, "the run had no dropout to fill");
    // Batch statistics against a direct computation from the printed rows.
    assert_eq!(tables.len(), 40);
    for (b, table) in tables.iter().enumerate() {
        let batch = &rows[b * 50..(b + 1) * 50];
        for (c, (m, s)) in table.iter().enumerate() {
            let col: Vec<f64> = batch.iter().map(|r| r.2[c]).collect();
            let mean = col.iter().sum::<f64>() / 50.0;
            let std = (col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 50.0).sqrt();
            assert!(
                (m - mean).abs() < 1e-4,
                "batch {b} column {c}: mean {m} vs {mean}"
            );
            assert!(
                (s - std).abs() < 1e-4,
                "batch {b} column {c}: std {s} vs {std}"
            );
        }
    }
}

/// SIGKILL the producer or the consumer at random moments, at least 20
/// times, during a --rate max run of a fixed number of vectors: nothing
/// lost, nothing counted twice, and the batch statistics identical to an
/// uninterrupted run.
#[test]
fn sigkill_of_producer_and_consumer_loses_nothing() {
    let _g = serial();
    let args = ["--rate", "max", "--count", "400000", "--seed", "5"];
    let reference = Scene::new("skref");
    let o = run_stream(&reference, &args);
    assert!(o.status.success(), "{}", text(&o));
    let strip = |v: &Vec<Value>| -> Vec<Value> {
        v.iter()
            .map(|l| {
                let mut l = l.clone();
                // Timing figures differ from run to run; everything else
                // (counts, filled ranges, statistics) must not.
                let missing = strip_timing(&mut l);
                assert!(missing.is_empty(), "fields {missing:?} missing");
                l
            })
            .collect()
    };
    let want = strip(&jsonl(reference.dir.path()));

    let mut rng = Lcg(77);
    let mut kills = 0;
    let mut attempt = 0;
    while kills < 20 {
        attempt += 1;
        assert!(attempt <= 20, "could not land 20 kills in 20 runs");
        let sc = Scene::new(&format!("sk{attempt}"));
        let mut run_args = vec!["--jobs", "stream", "--max-restarts", "1000"];
        run_args.extend_from_slice(&args);
        let mut bg = sc.spawn(&run_args);
        kills += kill_random_roles(&mut bg, &sc.name, &mut rng, 40_000, 20 - kills)
            .values()
            .sum::<usize>();
        let (status, log) = bg.wait(Duration::from_secs(300));
        assert!(status.success(), "{log}");
        let s = sc.summary()["stream"].clone();
        assert_eq!(s["produced"].as_u64(), Some(400_000), "{s}");
        assert_eq!(s["received"].as_u64(), Some(400_000), "{s}");
        assert_eq!(s["dropped"], 0);
        assert_eq!(s["filled"], 0, "a killed role must not create gaps: {s}");
        assert_eq!(s["duplicates"], 0, "{s}");
        assert_eq!(s["conservation_ok"], true);
        assert_eq!(
            strip(&jsonl(sc.dir.path())),
            want,
            "batch records differ from the uninterrupted run"
        );
        assert!(segments_of(&sc.name).is_empty());
    }
}

#[test]
fn bad_stream_input_is_refused_and_leaves_nothing() {
    let sc = Scene::new("badstream");
    for (args, needle) in [
        (vec!["--dim", "0"], "--dim"),
        (vec!["--rate", "0"], "rate 0"),
        (
            vec!["--noise", "--noise-low", "3", "--noise-high", "2"],
            "above --noise-high",
        ),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--rate", "fast"], "not a rate"),
        (vec!["--ring-slots", "1000"], "power of two"),
        (vec!["--noise-low", "1"], "only apply with --noise"),
    ] {
        let o = run_stream(&sc, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
        assert!(segments_of(&sc.name).is_empty(), "{args:?} left segments");
    }
    let o = sc.run(&["--jobs", "image", "--dim", "4"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("stream job is not in --jobs"));
}

#[test]
fn roles_by_hand_are_checked_against_the_run() {
    let _g = serial();
    let sc = Scene::new("byhand");
    let bg = sc.spawn(&["--jobs", "stream"]);
    assert!(
        wait_roles(&sc.name, 2, Duration::from_secs(60)),
        "roles did not start: {}",
        bg.log()
    );
    // A second producer would break the single-producer ring: refused.
    let o = forkring(&["producer", "--run", &sc.name]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("already running"), "{}", text(&o));
    // Options that disagree with the run: refused as a usage error.
    let o = forkring(&["consumer", "--run", &sc.name, "--batch", "7"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("differs from run"), "{}", text(&o));
    // A second supervisor for the same name: refused, naming the live one.
    let o = sc.run(&["--jobs", "stream"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("supervisor pid {}", bg.pid())),
        "{}",
        text(&o)
    );
    signal(bg.pid(), libc::SIGTERM);
    let (status, log) = bg.wait(Duration::from_secs(60));
    assert!(status.success(), "{log}");
    let s = sc.summary();
    assert_eq!(s["stopped_by"], "SIGTERM");
    let st = &s["stream"];
    assert_eq!(
        st["produced"].as_u64(),
        Some(st["received"].as_u64().unwrap() + st["dropped"].as_u64().unwrap())
    );
    assert!(segments_of(&sc.name).is_empty());
}

/// Runs a 3 s, 1 kHz stream beside one CPU hog per core (standing in for
/// the image job's two spinning roles), as nobody without capabilities or
/// as we are. Returns the batch records and the stream's summary section.
fn stream_beside_a_hog(tag: &str, as_nobody: bool) -> (Vec<Value>, Value) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let _g = serial();
    let sc = Scene::new(tag);
    let mut cmd = std::process::Command::new(if as_nobody { "setpriv" } else { bin() });
    if as_nobody {
        // Another user without capabilities: no realtime policy, so the
        // producer's unprivileged short slice is what holds the schedule.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(sc.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            bin(),
        ]);
    }
    cmd.args(sc.args(&[
        "--jobs", "stream", "--rate", "1000", "--count", "3000", "--seed", "4",
    ]));
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs: Vec<_> = (0..cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let o = cmd.output().expect("forkring runs");
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    assert!(o.status.success(), "{}", text(&o));
    let lines = jsonl(sc.dir.path());
    assert_eq!(lines.len(), 30);
    for l in &lines {
        assert!(l["rate_hz"].as_f64().is_some(), "{l}");
        assert_eq!(l["window_vectors"], 100, "{l}");
        for k in ["interval_std_us", "lateness_p99_us", "lateness_max_us"] {
            assert!(l[k].as_f64().is_some_and(|x| x >= 0.0), "{k}: {l}");
        }
        assert!(l["lateness_p99_us"].as_f64() <= l["lateness_max_us"].as_f64());
    }
    (lines, sc.summary()["stream"].clone())
}

/// The rate figures under load (the acceptance): every batch's
/// window rate within ±5% of 1000 Hz beside the hog. As root, which the
/// machine's default run is, the producer takes SCHED_FIFO.
#[test]
fn rate_figures_hold_beside_a_cpu_hog() {
    let (lines, s) = stream_beside_a_hog("hog", false);
    for l in &lines {
        let rate = l["rate_hz"].as_f64().unwrap();
        assert!(
            (950.0..=1050.0).contains(&rate),
            "batch {} reports {rate} Hz beside the hog: {l}",
            l["batch"]
        );
    }
    let rate = s["rate_hz"].as_f64().unwrap();
    assert!((950.0..=1050.0).contains(&rate), "{s}");
}

/// Without any privilege (an ordinary user, the systemd unit): the stream
/// runs beside the hog and reports every figure. How close to 1000 Hz it
/// stays is measured, not asserted: it depends on the fair scheduler and
/// on other load (94-100% of records within ±2% here; README).
#[test]
fn rate_figures_are_reported_without_privileges() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "skipped: needs root to become another user (the test above already runs unprivileged)"
        );
        return;
    }
    let ok = std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: setpriv (util-linux) is not available");
        return;
    }
    let (lines, _) = stream_beside_a_hog("hognobody", true);
    let within = lines
        .iter()
        .filter(|l| (l["rate_hz"].as_f64().unwrap() - 1000.0).abs() <= 50.0)
        .count();
    eprintln!("unprivileged beside the hog: {within} of 30 batch records within ±5%");
}
