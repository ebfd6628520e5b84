//! The image job through the real binary: valid images at several sizes,
//! determinism, SIGKILL crash safety, time travel, bad input.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use forkring::image::history::History;

fn run_image(
    name: &str,
    size: &str,
    seed: &str,
    out: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "run", "--jobs", "image", "--name", name, "--size", size, "--seed", seed, "--quiet",
        "--out",
    ];
    let out_s = out.to_str().unwrap();
    args.push(out_s);
    args.extend_from_slice(extra);
    forkring(&args)
}

fn check_valid(dir: &std::path::Path, w: u32, h: u32) {
    let hist = History::read(&dir.join("history.bin")).unwrap();
    assert_eq!((hist.header.width, hist.header.height), (w, h));
    assert_eq!(hist.len(), w as u64 * h as u64);
    let mut pos = HashSet::new();
    let mut col = HashSet::new();
    for (p, c) in hist.pairs() {
        assert!(p < w * h);
        assert!(pos.insert(p), "position {p} twice");
        assert!(col.insert(c), "colour {c:06x} twice");
    }
    assert_eq!(pos.len() as u64, w as u64 * h as u64);
    let v = forkring(&["verify", dir.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
}

#[test]
fn small_sizes_are_valid() {
    let _g = serial();
    for (size, w, h) in [
        ("1", 1, 1),
        ("3x5", 3, 5),
        ("64", 64, 64),
        ("256", 256, 256),
    ] {
        let name = run_name(&format!("small{w}x{h}"));
        let _c = Cleanup(name.clone());
        let dir = tempdir();
        let o = run_image(&name, size, "11", dir.path(), &[]);
        assert!(o.status.success(), "{size}: {}", text(&o));
        check_valid(dir.path(), w, h);
        let s = summary(dir.path());
        assert_eq!(s["image"]["iterations"], w as u64 * h as u64);
        assert_eq!(s["image"]["complete"], true);
        assert_eq!(s["image"]["seed"], 11);
        assert!(
            segments_of(&name).is_empty(),
            "segments left: {:?}",
            segments_of(&name)
        );
    }
}

#[test]
fn same_seed_gives_identical_files() {
    let _g = serial();
    let (a, b) = (tempdir(), tempdir());
    for (dir, tag) in [(&a, "seedA"), (&b, "seedB")] {
        let name = run_name(tag);
        let _c = Cleanup(name.clone());
        let o = run_image(&name, "128x96", "42", dir.path(), &[]);
        assert!(o.status.success(), "{}", text(&o));
    }
    for f in ["history.bin", "image.png"] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
            "{f} differs between two runs with the same seed"
        );
    }
    let c = tempdir();
    let name = run_name("seedC");
    let _c = Cleanup(name.clone());
    assert!(
        run_image(&name, "128x96", "43", c.path(), &[])
            .status
            .success()
    );
    assert_ne!(
        std::fs::read(a.path().join("history.bin")).unwrap(),
        std::fs::read(c.path().join("history.bin")).unwrap()
    );
}

/// SIGKILL ping or pong at random moments, at least 20 times, while a
/// 512x512 image is painted; the result must be bit-identical to an
/// uninterrupted run with the same seed.
#[test]
fn sigkill_of_ping_and_pong_changes_nothing() {
    let _g = serial();
    let reference = tempdir();
    let name = run_name("killref");
    {
        let _c = Cleanup(name.clone());
        let o = run_image(&name, "512", "7", reference.path(), &[]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let want_png = std::fs::read(reference.path().join("image.png")).unwrap();
    let want_hist = std::fs::read(reference.path().join("history.bin")).unwrap();

    let mut rng = Lcg(0x5eed);
    let mut kills = 0;
    let mut attempt = 0;
    while kills < 20 {
        attempt += 1;
        assert!(attempt <= 20, "could not land 20 kills in 20 runs");
        let name = run_name(&format!("kill{attempt}"));
        let _c = Cleanup(name.clone());
        let dir = tempdir();
        let mut bg = spawn(&[
            "run",
            "--jobs",
            "image",
            "--name",
            &name,
            "--size",
            "512",
            "--seed",
            "7",
            "--quiet",
            "--max-restarts",
            "1000",
            "--out",
            dir.path().to_str().unwrap(),
        ]);
        kills += kill_random_roles(&mut bg, &name, &mut rng, 15_000, 20 - kills)
            .values()
            .sum::<usize>();
        let (status, log) = bg.wait(Duration::from_secs(120));
        assert!(status.success(), "{log}");
        assert_eq!(
            std::fs::read(dir.path().join("image.png")).unwrap(),
            want_png,
            "image differs after kills"
        );
        assert_eq!(
            std::fs::read(dir.path().join("history.bin")).unwrap(),
            want_hist,
            "history differs after kills"
        );
        let s = summary(dir.path());
        let restarts =
            s["restarts"]["ping"].as_u64().unwrap() + s["restarts"]["pong"].as_u64().unwrap();
        assert!(
            restarts > 0 || kills == 0,
            "kills were not seen as restarts: {s}"
        );
        assert!(segments_of(&name).is_empty());
    }
}

#[test]
fn render_time_travel() {
    let _g = serial();
    let dir = tempdir();
    let name = run_name("render");
    let _c = Cleanup(name.clone());
    assert!(
        run_image(&name, "40x30", "5", dir.path(), &[])
            .status
            .success()
    );
    let hist_path = dir.path().join("history.bin");
    let hist = History::read(&hist_path).unwrap();
    let n = hist.len();
    for it in [0, 1, n / 2, n] {
        let png = dir.path().join(format!("r{it}.png"));
        let o = forkring(&[
            "render",
            hist_path.to_str().unwrap(),
            "--iteration",
            &it.to_string(),
            "--out",
            png.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let (w, h, rgb) = forkring::outfile::decode_png(&png).unwrap();
        assert_eq!((w, h), (40, 30));
        assert_eq!(rgb, hist.replay(it));
        let painted = rgb.chunks(3).filter(|p| p != &[0, 0, 0]).count() as u64;
        // Colour #000000 may be among the first `it` colours.
        assert!(
            painted == it || painted + 1 == it,
            "{painted} pixels after {it} iterations"
        );
    }
    let (_, _, full) = forkring::outfile::decode_png(&dir.path().join("image.png")).unwrap();
    assert_eq!(full, hist.replay(n));
    // A bare file name, as the README writes it: in the current directory.
    let o = std::process::Command::new(bin())
        .current_dir(dir.path())
        .args([
            "render",
            "history.bin",
            "--iteration",
            "7",
            "--out",
            "x.png",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let (_, _, seven) = forkring::outfile::decode_png(&dir.path().join("x.png")).unwrap();
    assert_eq!(seven, hist.replay(7));
    let o = forkring(&[
        "render",
        hist_path.to_str().unwrap(),
        "--iteration",
        &(n + 1).to_string(),
        "--out",
        "/tmp/x.png",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("past the end"));
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let name = run_name("bad");
    let dir = tempdir();
    for (args, code, needle) in [
        (vec!["--size", "0"], 2, "no pixels"),
        (vec!["--size", "5000"], 2, "distinct 24-bit colours"),
        (vec!["--size", "10x"], 2, "not a whole number"),
        (
            vec!["--size", "64", "--out", "/proc/forkring-test/out"],
            1,
            "choose a writable directory",
        ),
    ] {
        let mut a = vec!["run", "--jobs", "image", "--name", &name];
        let out_s = dir.path().to_str().unwrap().to_string();
        if !args.contains(&"--out") {
            a.extend_from_slice(&["--out", &out_s]);
        }
        a.extend_from_slice(&args);
        let o = forkring(&a);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
        assert!(segments_of(&name).is_empty(), "{args:?} left segments");
    }
    let o = forkring(&["verify", "/nonexistent-dir"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("history.bin"));
}
