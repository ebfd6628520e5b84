//! The NATS JetStream bridge against a real `nats-server` started by each
//! test on a free port (no mock): the task pool's intake from a work queue
//! (two runs drain one queue while one is SIGKILLed; poison messages; bad
//! input), and the stream's exporter.
//!
//! A machine without `nats-server` fails these tests with the command that
//! installs it; they never skip quietly.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::*;
use forkring::nats::server::LocalServer;
use futures_util::StreamExt;
use serde_json::Value;

fn server(jetstream: bool) -> LocalServer {
    LocalServer::start(jetstream).unwrap_or_else(|e| panic!("{e}"))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn js(url: &str) -> jetstream::Context {
    let c = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .expect("the test connects to its server");
    jetstream::new(c)
}

/// Every message of `stream` now: (Nats-Msg-Id, payload), in order.
fn read_stream(url: &str, stream: &str) -> Vec<(String, Vec<u8>)> {
    rt().block_on(async {
        let js = js(url).await;
        let mut st = js.get_stream(stream).await.expect("stream exists");
        let last = st.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        if st.info().await.unwrap().state.messages == 0 {
            return out;
        }
        let consumer = st
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut msgs = consumer.messages().await.unwrap();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), msgs.next()).await {
            let m = m.unwrap();
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.to_string())
                .unwrap_or_default();
            let seq = m.info().unwrap().stream_sequence;
            out.push((id, m.payload.to_vec()));
            if seq >= last {
                break;
            }
        }
        out
    })
}

/// Messages in `stream` (0 if it does not exist).
fn stream_messages(url: &str, stream: &str) -> u64 {
    rt().block_on(async {
        let js = js(url).await;
        match js.get_stream(stream).await {
            Ok(mut s) => s.info().await.unwrap().state.messages,
            Err(_) => 0,
        }
    })
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// The results in the results stream, by id; panics on an id stored twice.
fn results(url: &str) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for (id, payload) in read_stream(url, "FORKRING_RESULTS") {
        let v: Value = serde_json::from_slice(&payload).expect("a result is JSON");
        assert_eq!(
            v["id"].as_str(),
            Some(id.as_str()),
            "Nats-Msg-Id is the task id"
        );
        assert!(
            m.insert(id.clone(), v).is_none(),
            "result {id} stored twice"
        );
    }
    m
}

/// Kills a whole run: its supervisor and every role (a host that dies).
fn kill_run(run: &str, bg: &mut Bg) {
    signal(bg.pid(), libc::SIGKILL);
    for (_, pid) in live_roles(run) {
        signal(pid, libc::SIGKILL);
    }
    let _ = bg.child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live_roles(run).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_runs_drain_one_queue_while_one_is_killed() {
    let _g = serial();
    let srv = server(true);
    let url = srv.url();
    let inp = tempdir();
    let n = 2000;
    // Simulated calls of 20 ms: slow enough to kill a run mid-way.
    let table = write(inp.path(), "table.tsv", "10.0.0.1:work\t0.02\tdone\n");
    let mut lines = String::new();
    for i in 0..n {
        if i % 4 == 0 {
            lines.push_str(&format!("spin {i}\n"));
        } else {
            lines.push_str("10.0.0.1:work\n");
        }
    }
    let tasks = write(inp.path(), "tasks.txt", &lines);
    let o = forkring(&["submit", "--to", &url, &tasks]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("queued {n} tasks")),
        "{}",
        text(&o)
    );

    let (a, b) = (run_name("q-a"), run_name("q-b"));
    let (_ca, _cb) = (Cleanup(a.clone()), Cleanup(b.clone()));
    let (oa, ob) = (tempdir(), tempdir());
    let args = |name: &str, out: &str| -> Vec<String> {
        [
            "run",
            "--jobs",
            "tasks",
            "--name",
            name,
            "--out",
            out,
            "--from",
            &url,
            "--table",
            &table,
            "--drain",
            "--ack-wait",
            "2",
            "--workers",
            "2",
            "--concurrency",
            "4",
            "--max-restarts",
            "100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let aa = args(&a, oa.path().to_str().unwrap());
    let ab = args(&b, ob.path().to_str().unwrap());
    let mut run_a = spawn(&aa.iter().map(String::as_str).collect::<Vec<_>>());
    let run_b = spawn(&ab.iter().map(String::as_str).collect::<Vec<_>>());
    // Kill run A once a quarter of the results are out, while it holds
    // tasks it has not finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = stream_messages(&url, "FORKRING_RESULTS");
        if done >= n / 4 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {}", run_a.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Also kill B's client role a few times: it restarts and carries on.
    for _ in 0..3 {
        let pid = role_pid(&b, "client");
        signal(pid, libc::SIGKILL);
        std::thread::sleep(Duration::from_millis(150));
    }
    kill_run(&a, &mut run_a);
    let (st, log) = run_b.wait(Duration::from_secs(120));
    assert!(st.success(), "run B: {log}");
    let r = results(&url);
    assert_eq!(r.len(), n as usize, "every task has one result");
    for (id, v) in &r {
        assert_eq!(v["status"], "ok", "{id}: {v}");
    }
    let ids: Vec<u64> = r
        .keys()
        .map(|k| k.strip_prefix("forkring.tasks/").unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.iter().min(), Some(&1));
    assert_eq!(ids.iter().max(), Some(&n));
    assert_eq!(stream_messages(&url, "FORKRING_RESULTS"), n);
    assert_eq!(
        stream_messages(&url, "FORKRING_TASKS"),
        0,
        "the queue is empty"
    );
    // B's own file holds what B did, each once; tasks A had taken and not
    // finished were redelivered to B.
    let jsonl = std::fs::read_to_string(ob.path().join("tasks.jsonl")).unwrap();
    let mut seen = std::collections::HashSet::new();
    for l in jsonl.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(seen.insert(v["id"].as_str().unwrap().to_string()), "{l}");
    }
    assert!(seen.len() < n as usize, "run A did part of the work");
    let redelivered = r
        .values()
        .filter(|v| v["delivered"].as_u64() > Some(1))
        .count();
    assert!(redelivered > 0, "A's unfinished tasks were delivered again");
    let o = forkring(&["clean", &a]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn poison_messages_end_quarantined_and_terminated() {
    let _g = serial();
    let srv = server(true);
    let url = srv.url();
    let inp = tempdir();
    // One task kills its worker every time; one line is not a task.
    let tasks = write(
        inp.path(),
        "t.txt",
        "spin 5\nexec sh -c 'kill -KILL $PPID'\nexec echo fine\n",
    );
    // A message that runs killed before (delivered, never acked): queue
    // it alone, take it twice through the shared consumer and let the ack
    // wait pass each time.
    let held = write(inp.path(), "held.txt", "spin 7\n");
    let o = forkring(&["submit", "--to", &url, &held]);
    assert!(o.status.success(), "{}", text(&o));
    rt().block_on(async {
        let js = js(&url).await;
        let stream = js.get_stream("FORKRING_TASKS").await.unwrap();
        let c = stream
            .get_or_create_consumer(
                "forkring",
                jetstream::consumer::pull::Config {
                    durable_name: Some("forkring".into()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(1),
                    max_deliver: 3,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        for _ in 0..2 {
            let mut b = c.fetch().max_messages(10).messages().await.unwrap();
            let mut got = 0;
            while let Some(m) = b.next().await {
                assert_eq!(m.unwrap().payload.as_ref(), b"spin 7");
                got += 1;
            }
            assert_eq!(got, 1);
            tokio::time::sleep(Duration::from_millis(1300)).await;
        }
        js.publish("forkring.tasks", "not a task at all".into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let o = forkring(&["submit", "--to", &url, &tasks]);
    assert!(o.status.success(), "{}", text(&o));
    let sc = Scene::new("q-poison");
    let o = sc.run(&[
        "--jobs",
        "tasks",
        "--from",
        &url,
        "--drain",
        "--ack-wait",
        "1",
        "--max-attempts",
        "2",
        "--max-restarts",
        "100",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = results(&url);
    assert_eq!(r.len(), 5, "{r:?}");
    let by_task = |t: &str| {
        r.values()
            .find(|v| v["task"] == t)
            .unwrap_or_else(|| panic!("no result for {t}: {r:?}"))
            .clone()
    };
    assert_eq!(by_task("spin 5")["status"], "ok");
    assert_eq!(by_task("exec echo fine")["reply"], "fine\n");
    let killer = by_task("exec sh -c 'kill -KILL $PPID'");
    assert_eq!(killer["status"], "quarantined", "{killer}");
    assert_eq!(killer["worker_deaths"], 2, "{killer}");
    let held = by_task("spin 7");
    assert_eq!(held["status"], "quarantined", "{held}");
    assert!(
        held["error"]
            .as_str()
            .unwrap()
            .contains("delivered 3 times"),
        "{held}"
    );
    let bad = by_task("not a task at all");
    assert_eq!(bad["status"], "error", "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("not a task"),
        "{bad}"
    );
    assert_eq!(
        stream_messages(&url, "FORKRING_TASKS"),
        0,
        "nothing left to redeliver"
    );
}

#[test]
fn bad_nats_input_is_refused_before_anything_exists() {
    let _g = serial();
    let plain = server(false);
    let dead = {
        // A port with nothing listening.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        format!("nats://127.0.0.1:{p}")
    };
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec![
                "--from".into(),
                dead.clone(),
                "--connect-timeout".into(),
                "0.5".into(),
            ],
            1,
            "cannot reach the NATS server",
        ),
        (
            vec!["--from".into(), "http://127.0.0.1:4222".into()],
            2,
            "is not a NATS server URL",
        ),
        (
            vec![
                "--from".into(),
                dead.clone(),
                "--tasks-subject".into(),
                "a..b".into(),
            ],
            2,
            "is not a NATS subject",
        ),
        (
            vec![
                "--from".into(),
                dead.clone(),
                "--tasks-subject".into(),
                "x.>".into(),
            ],
            2,
            "wildcards",
        ),
        (
            vec!["--from".into(), plain.url()],
            1,
            "does not have JetStream enabled",
        ),
        (vec!["--drain".into()], 2, "give --from"),
        (
            vec![
                "--jobs".into(),
                "stream".into(),
                "--export".into(),
                dead.clone(),
                "--connect-timeout".into(),
                "0.5".into(),
            ],
            1,
            "cannot reach the NATS server",
        ),
        (
            vec![
                "--jobs".into(),
                "stream".into(),
                "--export".into(),
                plain.url(),
            ],
            1,
            "does not have JetStream enabled",
        ),
        (
            vec![
                "--jobs".into(),
                "stream".into(),
                "--export".into(),
                dead.clone(),
                "--export-buffer".into(),
                "6".into(),
            ],
            2,
            "--export-buffer 6 is not a power of two",
        ),
        (
            vec![
                "--jobs".into(),
                "stream".into(),
                "--export".into(),
                dead.clone(),
                "--export-subject".into(),
                "v.*".into(),
            ],
            2,
            "wildcards",
        ),
        (
            vec![
                "--jobs".into(),
                "stream".into(),
                "--export".into(),
                dead.clone(),
                "--dim".into(),
                "5000".into(),
            ],
            2,
            "--export takes --dim up to 4096",
        ),
        (
            vec![
                "--jobs".into(),
                "stream".into(),
                "--export-policy".into(),
                "drop".into(),
            ],
            2,
            "give --export nats://HOST:PORT too",
        ),
        (
            vec![
                "--jobs".into(),
                "stream".into(),
                "--export".into(),
                dead.clone(),
                "--export-policy".into(),
                "sometimes".into(),
            ],
            2,
            "invalid value 'sometimes'",
        ),
        (
            vec![
                "--from".into(),
                dead.clone(),
                "--connect-timeout".into(),
                "0".into(),
            ],
            2,
            "--connect-timeout",
        ),
    ];
    for (extra, code, says) in cases {
        let sc = Scene::new("q-bad");
        let mut args: Vec<&str> = if extra.iter().any(|a| a == "--jobs") {
            vec![]
        } else {
            vec!["--jobs", "tasks"]
        };
        args.extend(extra.iter().map(String::as_str));
        let t0 = Instant::now();
        let o = sc.run(&args);
        let took = t0.elapsed();
        let out = text(&o);
        assert_eq!(o.status.code(), Some(code), "{extra:?}: {out}");
        assert!(out.contains(says), "{extra:?}: {out}");
        assert!(!out.contains("panicked"), "{extra:?}: {out}");
        let lines = String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| l.starts_with("forkring: error") || l.starts_with("error"))
            .count();
        assert!(lines <= 1, "one line of error: {out}");
        assert!(took < Duration::from_secs(4), "{extra:?} took {took:?}");
        assert!(segments_of(&sc.name).is_empty(), "{extra:?} left segments");
        assert!(!sc.dir.path().join("summary.json").exists());
    }
}

/// The exported stream as read back: vectors by sequence number (values,
/// filled-in flag), how often each was stored, and the batch records.
struct Exported {
    vectors: BTreeMap<u64, (Vec<f32>, bool)>,
    stored_twice: u64,
    records: BTreeMap<u64, Value>,
}

fn exported(url: &str, run: &str) -> Exported {
    let mut e = Exported {
        vectors: BTreeMap::new(),
        stored_twice: 0,
        records: BTreeMap::new(),
    };
    for (id, payload) in read_stream(url, "FORKRING_VECTORS") {
        if id.contains(":stats:") {
            let v: Value = serde_json::from_slice(&payload).expect("a batch record is JSON");
            assert_eq!(v["run"], run, "{v}");
            assert_eq!(id, format!("{run}:stats:{}", v["batch"]));
            let b = v["batch"].as_u64().unwrap();
            if e.records.insert(b, v).is_some() {
                e.stored_twice += 1;
            }
            continue;
        }
        let m = forkring::stream::wire::decode(&payload).expect("a vectors message decodes");
        assert_eq!(m.run, run);
        assert_eq!(id, format!("{run}:{}", m.first), "Nats-Msg-Id is RUN:FIRST");
        let dim = m.dim as usize;
        for (i, f) in m.filled.iter().enumerate() {
            let v = m.values[i * dim..(i + 1) * dim].to_vec();
            if e.vectors.insert(m.first + i as u64, (v, *f)).is_some() {
                e.stored_twice += 1;
            }
        }
    }
    e
}

/// Waits until a live `role` of `run` other than `old` exists; its pid.
fn next_pid(run: &str, role: &str, old: u32, bg: &Bg) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((_, p)) = live_roles(run)
            .into_iter()
            .find(|(r, p)| r == role && *p != old)
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no {role} restarted: {}",
            bg.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every vector the consumer wrote to stream.txt (sequence number, filled
/// flag, values as printed), against the exported ones printed alike.
fn same_as_text_output(dir: &std::path::Path, e: &Exported) {
    let txt = std::fs::read_to_string(dir.join("stream.txt")).unwrap();
    let mut n = 0u64;
    // Vector rows: a sequence number in the first 12 columns.
    let rows = txt
        .lines()
        .filter_map(|l| Some((l.get(..12)?.trim().parse::<u64>().ok()?, l)));
    for (seq, l) in rows {
        let (v, filled) = e
            .vectors
            .get(&seq)
            .unwrap_or_else(|| panic!("vector {seq} was not exported"));
        let mut row = format!("{seq:>12}{}", if *filled { "*" } else { " " });
        for x in v {
            row.push_str(&format!(" {x:>9.4}"));
        }
        assert_eq!(row, l, "vector {seq} differs from what the consumer wrote");
        n += 1;
    }
    assert_eq!(
        n,
        e.vectors.len() as u64,
        "no vector exported that the consumer did not see"
    );
}

#[test]
fn export_is_exactly_once_across_exporter_and_consumer_kills() {
    let _g = serial();
    let srv = server(true);
    let url = srv.url();
    let sc = Scene::new("x-kill");
    let count = 120_000u64;
    let mut bg = sc.spawn(&[
        "--jobs",
        "stream",
        "--count",
        &count.to_string(),
        "--rate",
        "30000",
        "--dim",
        "3",
        "--format",
        "text",
        "--noise",
        "--noise-low",
        "0.05",
        "--noise-high",
        "0.1",
        "--noise-burst",
        "3",
        "--export",
        &url,
        "--export-buffer",
        "8",
        "--max-restarts",
        "200",
    ]);
    assert!(
        wait_attached(&sc.name, 3, Duration::from_secs(20)),
        "{}",
        bg.log()
    );
    // 20 exporter kills and 5 consumer kills, while the stream flows.
    let mut rng = Lcg(7);
    let (mut ex, mut co) = (0u32, 0u32);
    for k in 0..25 {
        let role = if k % 5 == 4 { "consumer" } else { "exporter" };
        let old = if role == "consumer" { co } else { ex };
        let pid = next_pid(&sc.name, role, old, &bg);
        std::thread::sleep(Duration::from_millis(20 + rng.below(60)));
        if bg.exited() {
            break;
        }
        signal(pid, libc::SIGKILL);
        if role == "consumer" {
            co = pid;
        } else {
            ex = pid;
        }
    }
    let (st, log) = bg.wait(Duration::from_secs(120));
    assert!(st.success(), "{log}");
    let s = sc.summary();
    let x = &s["stream"]["export"];
    let e = exported(&url, &sc.name);
    assert_eq!(e.stored_twice, 0, "JetStream stored a message twice: {x}");
    let seen = s["stream"]["received"].as_u64().unwrap() + s["stream"]["filled"].as_u64().unwrap();
    assert_eq!(seen, count, "{s}");
    assert_eq!(x["exported_vectors"], count, "{x}");
    assert_eq!(x["dropped_vectors"], 0, "{x}");
    assert_eq!(x["pending_vectors"], 0, "{x}");
    assert_eq!(x["finished"], true, "{x}");
    assert_eq!(e.vectors.len() as u64, count);
    assert_eq!(e.vectors.keys().next(), Some(&0));
    assert_eq!(e.vectors.keys().last(), Some(&(count - 1)));
    let filled = e.vectors.values().filter(|(_, f)| *f).count() as u64;
    assert_eq!(filled, s["stream"]["filled"].as_u64().unwrap());
    assert!(
        filled > 0,
        "--noise dropped vectors, filled in and exported"
    );
    assert_eq!(
        e.records.len() as u64,
        s["stream"]["batches"].as_u64().unwrap()
    );
    same_as_text_output(sc.dir.path(), &e);
    assert!(
        x["exporter_attaches"].as_u64().unwrap() > 20,
        "the exporter was killed and restarted: {x}"
    );
}

#[test]
fn server_outages_block_loses_nothing_and_drop_counts_every_loss() {
    let _g = serial();
    for policy in ["block", "drop"] {
        let mut srv = server(true);
        let url = srv.url();
        let sc = Scene::new("x-out");
        // Five seconds of stream: the outage (1.5 s) falls inside it.
        let count = 40_000u64;
        let bg = sc.spawn(&[
            "--jobs",
            "stream",
            "--count",
            &count.to_string(),
            "--rate",
            "8000",
            "--dim",
            "4",
            "--export",
            &url,
            "--export-policy",
            policy,
            "--export-buffer",
            "4",
        ]);
        assert!(
            wait_attached(&sc.name, 3, Duration::from_secs(20)),
            "{}",
            bg.log()
        );
        std::thread::sleep(Duration::from_millis(300));
        srv.kill();
        std::thread::sleep(Duration::from_millis(1500));
        srv.restart().unwrap();
        let (st, log) = bg.wait(Duration::from_secs(120));
        assert!(st.success(), "{policy}: {log}");
        assert!(
            log.contains("forkring exporter: lost the connection to"),
            "{policy}: the outage is logged: {log}"
        );
        let s = sc.summary();
        let x = &s["stream"]["export"];
        let e = exported(&url, &sc.name);
        assert_eq!(e.stored_twice, 0, "{policy}: {x}");
        let exported = x["exported_vectors"].as_u64().unwrap();
        let dropped = x["dropped_vectors"].as_u64().unwrap();
        assert_eq!(exported, e.vectors.len() as u64, "{policy}: {x}");
        assert_eq!(x["pending_vectors"], 0, "{policy}: {x}");
        assert_eq!(exported + dropped, count, "{policy}: {x}");
        match policy {
            "block" => assert_eq!(dropped, 0, "{x}"),
            _ => assert!(dropped > 0, "the outage dropped vectors: {x}"),
        }
        // The batch records exported are the consumer's own, run added.
        let jsonl = std::fs::read_to_string(sc.dir.path().join("stream.jsonl")).unwrap();
        let mut matched = 0;
        for l in jsonl.lines() {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let b = v["batch"].as_u64().unwrap();
            if let Some(r) = e.records.get(&b) {
                v["run"] = sc.name.clone().into();
                assert_eq!(&v, r, "{policy}: batch {b}");
                matched += 1;
            }
        }
        if policy == "block" {
            assert_eq!(matched, jsonl.lines().count(), "every record exported");
        }
        assert_eq!(
            matched,
            e.records.len(),
            "no record the consumer did not write"
        );
    }
}
