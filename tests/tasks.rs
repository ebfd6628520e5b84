//! The task pool through the real binary: every task kind, random SIGKILLs
//! of workers and the client plus a supervisor kill and resume, a poison
//! task quarantined, external `submit` clients (one killed and re-run), bad
//! input, and a combined run of all three jobs.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Lines of DIR/tasks.jsonl, by task id; panics on a duplicate id.
fn results(dir: &Path) -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(dir.join("tasks.jsonl")).expect("tasks.jsonl");
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("JSON line");
        let id = v["id"].as_str().unwrap().to_string();
        assert!(
            m.insert(id.clone(), v).is_none(),
            "task {id} recorded twice"
        );
    }
    m
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// A table of `n` calls of 2–12 ms, and a task file using them.
fn calls(dir: &Path, n: usize) -> (String, String, HashMap<String, String>) {
    let mut table = String::new();
    let mut tasks = String::new();
    let mut replies = HashMap::new();
    for i in 0..n {
        let key = format!("10.0.{}.{}:cmd{i}", i / 250, i % 250);
        let reply = format!("reply {i}");
        table += &format!("{key}\t{}\t{reply}\n", 0.002 + (i % 11) as f64 * 0.001);
        tasks += &format!("{key}\n");
        replies.insert(key, reply);
    }
    (
        write(dir, "table.tsv", &table),
        write(dir, "tasks.txt", &tasks),
        replies,
    )
}

#[test]
fn every_kind_of_task_gets_its_result() {
    let _g = serial();
    let sc = Scene::new("tasks-kinds");
    let inp = tempdir();
    let table = write(inp.path(), "t.tsv", "10.0.0.1:uptime\t0.05\tup 3 days\n");
    let tasks = write(
        inp.path(),
        "t.txt",
        "spin 1000\n10.0.0.1:uptime\n# a comment\n10.0.0.9:nope\nexec echo hello world\nexec sh -c 'exit 3'\nexec /nonexistent/program\n",
    );
    let o = sc.run(&[
        "--jobs",
        "tasks",
        "--tasks",
        &tasks,
        "--table",
        &table,
        "--workers",
        "3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = results(sc.dir.path());
    assert_eq!(r.len(), 6, "{r:?}");
    let at = |line: u64| &r[&format!("client/{line}")];
    assert_eq!(at(1)["status"], "ok");
    assert_eq!(at(1)["reply"].as_str().unwrap().len(), 16);
    assert_eq!(at(2)["reply"], "up 3 days");
    assert!(at(2)["run_s"].as_f64().unwrap() >= 0.05);
    assert_eq!(at(4)["status"], "error");
    assert!(
        at(4)["error"]
            .as_str()
            .unwrap()
            .contains("not in the command table")
    );
    assert_eq!(at(5)["reply"], "hello world\n");
    assert_eq!(at(5)["exit_status"], 0);
    assert_eq!(at(6)["status"], "error");
    assert_eq!(at(6)["exit_status"], 3);
    assert_eq!(at(7)["status"], "error");
    assert_eq!(at(7)["exit_status"], 127);
    for v in r.values() {
        assert!(v["attempts"].as_u64().unwrap() >= 1, "{v}");
    }
    let s = sc.summary();
    assert_eq!(s["tasks"]["recorded"], 6, "{s}");
    assert_eq!(s["tasks"]["completed"], 3, "{s}");
    assert_eq!(s["tasks"]["errors"], 3, "{s}");
    assert_eq!(s["complete"], true);
    let v = forkring(&["verify", sc.out()]);
    assert!(v.status.success(), "{}", text(&v));
    assert!(segments_of(&sc.name).is_empty());
}

#[test]
fn a_hundred_sigkills_and_a_supervisor_kill_lose_and_duplicate_nothing() {
    let _g = serial();
    let sc = Scene::new("tasks-kill");
    let inp = tempdir();
    let (table, tasks, replies) = calls(inp.path(), 3000);
    let args = [
        "--jobs",
        "tasks",
        "--tasks",
        &tasks,
        "--table",
        &table,
        "--workers",
        "4",
        "--concurrency",
        "4",
        "--queue",
        "64",
        "--max-restarts",
        "100000",
        // A task may be held by several workers that die: keep it out of
        // quarantine here (quarantine has its own test).
        "--max-attempts",
        "100",
    ];
    let mut bg = sc.spawn(&args);
    assert!(
        wait_roles(&sc.name, 5, Duration::from_secs(60)),
        "{}",
        bg.log()
    );
    let mut rng = Lcg(0x7a5c);
    let sent = kill_random_roles(&mut bg, &sc.name, &mut rng, 8_000, 100);
    let kills: usize = sent.values().sum();
    assert_eq!(
        kills,
        100,
        "the run ended after {kills} kills ({sent:?}): {}",
        bg.log()
    );
    // Then the supervisor itself: its roles die with it.
    signal(bg.pid(), libc::SIGKILL);
    let _ = bg.child.wait();
    let start = Instant::now();
    while !live_roles(&sc.name).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "roles outlived the supervisor"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The same command resumes and finishes.
    let o = sc.run(&args);
    assert!(o.status.success(), "{}", text(&o));
    let r = results(sc.dir.path());
    assert_eq!(r.len(), 3000, "tasks lost: {} of 3000 recorded", r.len());
    for (id, v) in &r {
        let key = v["task"].as_str().unwrap();
        assert_eq!(v["status"], "ok", "{id}: {v}");
        assert_eq!(
            v["reply"].as_str(),
            Some(replies[key].as_str()),
            "{id}: {v}"
        );
        assert!(v["attempts"].as_u64().unwrap() >= 1, "{id}: {v}");
    }
    let s = sc.summary();
    assert_eq!(s["resumes"], 1, "{s}");
    assert_eq!(s["tasks"]["recorded"], 3000, "{s}");
    let restarts: u64 = s["restarts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(restarts >= 50, "{kills} kills but {restarts} restarts: {s}");
    assert!(segments_of(&sc.name).is_empty());
}

#[test]
fn a_poison_task_is_quarantined_and_the_others_complete() {
    let _g = serial();
    let sc = Scene::new("tasks-poison");
    let inp = tempdir();
    let tasks = write(
        inp.path(),
        "t.txt",
        "spin 10\nexec sh -c 'kill -KILL $PPID'\nspin 20\nexec echo after\n",
    );
    let o = sc.run(&[
        "--jobs",
        "tasks",
        "--tasks",
        &tasks,
        "--workers",
        "2",
        "--max-attempts",
        "3",
        "--max-restarts",
        "100",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = results(sc.dir.path());
    assert_eq!(r.len(), 4);
    let poison = &r["client/2"];
    assert_eq!(poison["status"], "quarantined", "{poison}");
    assert_eq!(poison["worker_deaths"], 3, "{poison}");
    assert!(
        poison["error"].as_str().unwrap().contains("died 3 times"),
        "{poison}"
    );
    for id in ["client/1", "client/3", "client/4"] {
        assert_eq!(r[id]["status"], "ok", "{id}: {}", r[id]);
    }
    let s = sc.summary();
    assert_eq!(s["tasks"]["quarantined"], 1, "{s}");
}

#[test]
fn external_clients_submit_to_a_service_and_a_killed_submit_resumes() {
    let _g = serial();
    let sc = Scene::new("tasks-svc");
    let inp = tempdir();
    let (table, tasks, replies) = calls(inp.path(), 400);
    let svc = sc.spawn(&["--jobs", "tasks", "--workers", "3", "--concurrency", "16"]);
    assert!(
        wait_roles(&sc.name, 4, Duration::from_secs(60)),
        "{}",
        svc.log()
    );
    // A submit killed part-way, then run again with the same arguments.
    let first = spawn(&[
        "submit", "--run", &sc.name, &tasks, "--table", &table, "--json",
    ]);
    let start = Instant::now();
    loop {
        if first.log().lines().count() >= 50 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{}", first.log());
        std::thread::sleep(Duration::from_millis(2));
    }
    signal(first.pid(), libc::SIGKILL);
    let (_, before) = first.wait(Duration::from_secs(10));
    let o = forkring(&[
        "submit", "--run", &sc.name, &tasks, "--table", &table, "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // Together the two printed every reply (a reply printed just before the
    // kill may be printed again: at least once).
    let mut printed = HashMap::new();
    for line in before
        .lines()
        .chain(String::from_utf8_lossy(&o.stdout).lines())
    {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        printed.insert(v["line"].as_u64().unwrap(), v);
    }
    assert_eq!(printed.len(), 400, "replies missing");
    for v in printed.values() {
        let key = v["task"].as_str().unwrap();
        assert_eq!(v["reply"].as_str(), Some(replies[key].as_str()), "{v}");
    }
    // A second client with its own identity, alongside.
    let other = write(inp.path(), "o.txt", "spin 5\nexec echo two\n");
    let o = forkring(&["submit", "--run", &sc.name, &other]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("line 2 ok: two"), "{}", text(&o));
    // Bad submissions.
    let o = forkring(&["submit", "--run", "no-such-run-here", &other]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no run named"), "{}", text(&o));
    let bad = write(inp.path(), "bad.txt", "spin 1\nfrobnicate\n");
    let o = forkring(&["submit", "--run", &sc.name, &bad]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("line 2"), "{}", text(&o));
    signal(svc.pid(), libc::SIGTERM);
    let (st, log) = svc.wait(Duration::from_secs(60));
    assert!(st.success(), "{log}");
    // The run recorded every task of both clients exactly once.
    let r = results(sc.dir.path());
    assert_eq!(r.len(), 402, "{}", r.len());
    assert!(segments_of(&sc.name).is_empty());
    // Submitting to a run that is not a task pool.
    let sc2 = Scene::new("tasks-notpool");
    let bg = sc2.spawn(&["--jobs", "stream"]);
    assert!(
        wait_roles(&sc2.name, 2, Duration::from_secs(60)),
        "{}",
        bg.log()
    );
    let o = forkring(&["submit", "--run", &sc2.name, &other]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no task pool"), "{}", text(&o));
    signal(bg.pid(), libc::SIGTERM);
    let (st, log) = bg.wait(Duration::from_secs(60));
    assert!(st.success(), "{log}");
}

#[test]
fn bad_task_input_is_refused_and_leaves_nothing() {
    let sc = Scene::new("tasks-bad");
    let inp = tempdir();
    let good = write(inp.path(), "g.txt", "spin 1\n");
    let malformed = write(inp.path(), "m.txt", "spin 1\nspin 2\nwhat is this\n");
    let bad_table = write(inp.path(), "bt.tsv", "a:b\t1\tx\na:c\tzero\ty\n");
    let dup_table = write(inp.path(), "dt.tsv", "a:b\t1\tx\na:b\t2\ty\n");
    let big = write(
        inp.path(),
        "big.txt",
        &format!("exec echo {}\n", "x".repeat(5000)),
    );
    let unreadable = inp.path().join("no-such-file.txt");
    let unreadable = unreadable.to_str().unwrap();
    for (args, code, needle) in [
        (vec!["--tasks", unreadable], 2, "no-such-file.txt"),
        (vec!["--tasks", &malformed], 2, "line 3"),
        (vec!["--tasks", &good, "--table", &bad_table], 2, "line 2"),
        (
            vec!["--tasks", &good, "--table", &dup_table],
            2,
            "listed twice",
        ),
        (
            vec!["--tasks", &good, "--workers", "0"],
            2,
            "'--workers <N>': 0 is out of range; give 1 to 1,000",
        ),
        (
            vec!["--tasks", &good, "--workers", "1001"],
            2,
            "'--workers <N>': 1001 is out of range",
        ),
        (
            vec!["--tasks", &good, "--concurrency", "0"],
            2,
            "'--concurrency <K>': 0 is out of range",
        ),
        (vec!["--tasks", &big], 2, "--task-max"),
        (
            vec!["--tasks", &good, "--task-timeout", "nan"],
            2,
            "task-timeout",
        ),
        (
            vec!["--tasks", &good, "--pipeline", "sum"],
            2,
            "exclude each other",
        ),
        (vec!["--pipeline", "sum,square"], 2, "last stage"),
        (vec!["--elements", "5"], 2, "only apply with --pipeline"),
    ] {
        let mut a = vec!["--jobs", "tasks"];
        a.extend_from_slice(&args);
        let o = sc.run(&a);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
        assert!(segments_of(&sc.name).is_empty(), "{args:?} left segments");
        assert!(!sc.dir.path().join("summary.json").exists());
    }
    let o = sc.run(&["--jobs", "image", "--workers", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("tasks job is not in --jobs"),
        "{}",
        text(&o)
    );
}

#[test]
fn relay_pipeline_matches_a_single_process() {
    let _g = serial();
    let sc = Scene::new("tasks-relay");
    let o = sc.run(&[
        "--jobs",
        "tasks",
        "--pipeline",
        "square,scale:3,add:1,sum",
        "--elements",
        "100000",
        "--chunk",
        "777",
        "--workers",
        "3",
        "--seed",
        "5",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = sc.summary();
    let r = &s["tasks"]["relay"];
    assert_eq!(r["matches_single_process"], true, "{r}");
    assert_eq!(r["elements_differing"], 0, "{r}");
    assert_eq!(r["chunks"], 129, "{r}");
    assert_eq!(
        std::fs::metadata(sc.dir.path().join("relay.bin"))
            .unwrap()
            .len(),
        800_000
    );
    let v = forkring(&["verify", sc.out()]);
    assert!(v.status.success(), "{}", text(&v));
}

#[test]
fn all_three_jobs_run_together() {
    let _g = serial();
    let sc = Scene::new("tasks-all");
    let inp = tempdir();
    let (table, tasks, _) = calls(inp.path(), 200);
    let o = sc.run(&[
        "--jobs",
        "image,stream,tasks",
        "--size",
        "256",
        "--seed",
        "3",
        "--rate",
        "2000",
        "--tasks",
        &tasks,
        "--table",
        &table,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = sc.summary();
    assert_eq!(
        s["jobs"],
        serde_json::json!(["image", "stream", "tasks"]),
        "{s}"
    );
    assert_eq!(s["image"]["complete"], true, "{s}");
    assert_eq!(s["tasks"]["recorded"], 200, "{s}");
    let v = forkring(&["verify", sc.out()]);
    assert!(v.status.success(), "{}", text(&v));
    assert!(segments_of(&sc.name).is_empty());
}

#[test]
fn a_stopped_run_hands_off_what_is_done_and_the_same_run_continues() {
    let _g = serial();
    let sc = Scene::new("tasks-stop");
    let inp = tempdir();
    let table = write(inp.path(), "t.tsv", "10.0.0.1:a\t0.1\tA\n");
    let tasks = write(inp.path(), "t.txt", &"10.0.0.1:a\n".repeat(120));
    let args = [
        "--jobs",
        "tasks",
        "--tasks",
        &tasks,
        "--table",
        &table,
        "--workers",
        "2",
        "--concurrency",
        "4",
    ];
    let bg = sc.spawn(&args);
    // Wait until some tasks are done, then stop: in-flight calls finish
    // within --stop-timeout, the rest stays undone.
    let start = Instant::now();
    loop {
        let st = forkring(&["status", &sc.name, "--json"]);
        let v: Value = serde_json::from_slice(&st.stdout).unwrap_or(Value::Null);
        if v[0]["progress"][0]["counters"][0]["value"]
            .as_u64()
            .unwrap_or(0)
            >= 16
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{}", bg.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(bg.pid(), libc::SIGTERM);
    let (st, log) = bg.wait(Duration::from_secs(60));
    assert!(st.success(), "{log}");
    let s = sc.summary();
    assert_eq!(s["stopped_by"], "SIGTERM", "{s}");
    assert_eq!(s["tasks"]["complete"], false, "{s}");
    let first = results(sc.dir.path());
    assert!(first.len() >= 16 && first.len() < 120, "{}", first.len());
    // The same run started again continues with the rest.
    let o = sc.run(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("continuing"), "{}", text(&o));
    let all = results(sc.dir.path());
    assert_eq!(all.len(), 120);
    for (id, v) in &first {
        assert_eq!(all[id]["done"], v["done"], "task {id} ran again");
    }
    let v = forkring(&["verify", sc.out()]);
    assert!(v.status.success(), "{}", text(&v));
}
