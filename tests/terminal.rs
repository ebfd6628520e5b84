//! The live display on a real terminal (a pseudo-terminal made by
//! util-linux `script`), 80 columns wide: rows fit, a Ctrl-C leaves no
//! stale bar, the handoff says what it writes, and NO_COLOR is honoured.

mod common;

use common::*;

/// Runs `forkring run ARGS` on an 80-column pseudo-terminal, sends it
/// SIGINT after `sigint_after` seconds, and returns everything the terminal
/// received (None: no `script` here).
fn on_terminal(sc: &Scene, args: &str, env: &str, sigint_after: f64) -> Option<String> {
    let typescript = sc.dir.path().join("typescript");
    let cmd = format!(
        "stty cols 80 rows 24; {env} {bin} run --name {name} --out {out}/o {args} & p=$!; \
         sleep {sigint_after}; kill -INT $p; wait $p; echo \"rc=$?\"",
        bin = bin(),
        name = sc.name,
        out = sc.out(),
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd])
        .arg(&typescript)
        .output();
    match o {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "skipped: `script` cannot make a terminal here: {}",
                text(&o)
            );
            return None;
        }
        Err(e) => {
            eprintln!("skipped: util-linux `script` is not available: {e}");
            return None;
        }
    }
    Some(String::from_utf8_lossy(&std::fs::read(typescript).unwrap()).into_owned())
}

/// The rows the terminal showed: text between cursor movements and line
/// ends, a full 80-column row being followed directly by the next one (the
/// terminal wraps by itself).
fn rows(t: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params letter. Colours (m) stay in the row;
                // cursor movements and erases end it.
                let mut end = ' ';
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if d.is_ascii_alphabetic() {
                            end = d;
                            break;
                        }
                    }
                }
                if end != 'm' {
                    out.push(std::mem::take(&mut cur));
                }
            }
            '\r' | '\n' => out.push(std::mem::take(&mut cur)),
            c => {
                cur.push(c);
                if cur.chars().count() == 80 {
                    out.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    out.push(cur);
    out.retain(|r| !r.trim().is_empty());
    out
}

#[test]
fn bars_fit_80_columns_and_go_at_ctrl_c() {
    let _g = serial();
    let sc = Scene::new("tty");
    // 4096² takes several seconds even on a fast host (2048² finished in
    // 1.4 s on a CI machine, before the SIGINT), so the stop lands mid-run.
    let Some(t) = on_terminal(&sc, "--size 4096 --seed 1", "", 1.5) else {
        return;
    };
    assert!(t.contains("rc=130"), "{t}");
    let bar = t.find("ETA").expect("a progress bar was drawn");
    let stop = t.find("stopping (SIGINT)").expect("the stop is logged");
    assert!(bar < stop, "{t}");
    // Every row fits: a row cut at 80 columns by the terminal would start
    // the next one mid-token.
    let starts = [
        "image ", "stream ", "starting", "running", "stopping", "[", "run ", "error:", "rc=",
        "Script",
    ];
    // Up to the final summary (plain text with a path, which may wrap);
    // `script` adds a first line of its own.
    let end = t.rfind(&format!("run {}: ", sc.name)).expect("the summary");
    let body = &t[t.find('\n').unwrap() + 1..end];
    for r in rows(body) {
        assert!(
            starts.iter().any(|s| r.starts_with(s)),
            "a row does not start like one (wrapped?): {r:?}\n{t:?}"
        );
    }
    // After the stop, plain lines only: no bar, no cursor movement.
    let after = &t[stop..];
    assert!(
        !after.contains("ETA") && !after.contains("\x1b[1A"),
        "{after:?}"
    );
    assert!(after.contains("writing image.png …"), "{after:?}");
    assert!(after.contains("error: interrupted by SIGINT"), "{after:?}");
    // Colour by default on a terminal.
    assert!(t.contains("\x1b[36m"), "the bar is coloured on a terminal");
}

#[test]
fn no_color_is_honoured() {
    let _g = serial();
    let sc = Scene::new("nocolor");
    let Some(t) = on_terminal(&sc, "--jobs image --size 1024 --seed 1", "NO_COLOR=1", 0.8) else {
        return;
    };
    assert!(t.contains("ETA"), "a progress bar was drawn: {t:?}");
    assert!(!t.contains("\x1b[36m") && !t.contains("\x1b[34m"), "{t:?}");
}

/// stdout carries the results only: redirected to a file while stderr is a
/// terminal, the bars still show on the terminal and the file holds the
/// summary alone.
#[test]
fn bars_go_to_stderr_and_stdout_holds_the_summary() {
    let _g = serial();
    let sc = Scene::new("ttyout");
    let file = sc.dir.path().join("stdout.txt");
    let args = format!("--jobs image --size 4096 --seed 1 >{}", file.display());
    let Some(t) = on_terminal(&sc, &args, "", 1.0) else {
        return;
    };
    assert!(t.contains("rc=130"), "{t}");
    assert!(t.contains("ETA"), "a progress bar was drawn: {t:?}");
    let out = std::fs::read_to_string(&file).unwrap();
    assert!(
        out.starts_with(&format!("run {}: ", sc.name)),
        "stdout holds the summary first: {out:?}"
    );
    assert!(
        !out.contains('\x1b') && !out.contains("ETA") && !out.contains("error:"),
        "stdout holds the summary alone: {out:?}"
    );
}
