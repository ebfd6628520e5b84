//! `forkring bench tasks`: the task pool measured in one run on this
//! machine, five ways:
//! 1. the client/worker pool's I/O workload: 512 simulated calls of 1 s;
//! 2. dispatch: round trips of empty tasks (`spin 0`) with 2 workers,
//!    through the pool's shared-memory table and, beside it, through the
//!    same worker code behind a pipe and a unix socket (one message each way
//!    per task): tasks/s and single-task round-trip latency;
//! 3. the CPU workload: tasks of about 70 ms of `spin` on 2 workers against
//!    the ideal wall time (tasks × task time ÷ 2);
//! 4. the relay workload: 500,000 multiplications in chunks of 500 and of
//!    10,000, beside a single-process loop;
//! 5. recovery: a worker holding tasks is SIGKILLed; how soon those tasks
//!    are claimed again.
//!
//! Workloads 1, 3, 4 and 5 are real `forkring run --jobs tasks` runs (their
//! figures come from the run's own timestamps, so start-up is excluded);
//! workload 2 runs the real worker processes against this process as the
//! client.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::minirun::MiniRun;
use super::transport::{Mechanism, fd_args, pipe, report_of, stream_pair};
use super::{
    BenchError, Launcher, Machine, PeerProcess, Scratch, SegmentGuard, install_interrupt_handler,
    thousands,
};
use crate::clock::monotonic_ns;
use crate::control::Control;
use crate::settings::RunSettings;
use crate::shm::taskq::{SlotState, TaskTable};
use crate::shm::{Access, RunName};
use crate::tasks::TasksSettings;
use crate::tasks::layout::TasksSegments;
use crate::tasks::spec::{self, ResultWire, Status, TaskSpec, TaskWire};

/// Options of `forkring bench tasks`.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// One JSON object per line.
    pub(crate) json: bool,
    /// Smaller sizes (a check that every measurement works, not figures).
    pub(crate) quick: bool,
    /// Only these workloads (`io`, `dispatch`, `cpu`, `relay`, `recovery`);
    /// all when empty.
    pub(crate) only: Vec<String>,
}

/// The workloads, in the order they run.
pub(crate) const WORKLOADS: [&str; 5] = ["io", "dispatch", "cpu", "relay", "recovery"];

/// One measured figure.
#[derive(Debug, Clone)]
struct Row {
    workload: &'static str,
    what: String,
    value: String,
    target: String,
    json: Value,
}

fn bench_run(tag: &str) -> RunName {
    RunName::new(&format!("bench-{}-{tag}", std::process::id())).expect("valid bench run name")
}

// ---------------------------------------------------------------------------
// Real runs
// ---------------------------------------------------------------------------

/// Runs `forkring run --jobs tasks ARGS` to completion in `dir` (quietly)
/// and returns its summary and its tasks.jsonl lines.
fn real_run(tag: &str, dir: &Path, args: &[String]) -> Result<(Value, Vec<Value>), BenchError> {
    let run = bench_run(tag);
    let mut full = vec!["--jobs".to_string(), "tasks".to_string()];
    full.extend_from_slice(args);
    let out = super::forkring_run(&run, &["tasks", "relay"], dir, tag, &full)?;
    read_results(&out)
}

fn read_results(out: &Path) -> Result<(Value, Vec<Value>), BenchError> {
    let io = |e: std::io::Error| BenchError::failed(format!("{}: {e}", out.display()));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).map_err(io)?)
            .map_err(|e| BenchError::failed(e.to_string()))?;
    let mut lines = Vec::new();
    for l in std::io::BufReader::new(File::open(out.join("tasks.jsonl")).map_err(io)?).lines() {
        lines.push(
            serde_json::from_str(&l.map_err(io)?).map_err(|e| BenchError::failed(e.to_string()))?,
        );
    }
    Ok((summary, lines))
}

/// Milliseconds since the epoch of an RFC 3339 UTC time this program wrote.
fn parse_utc_ms(s: &str) -> Option<i64> {
    let (d, t) = s.trim_end_matches('Z').split_once('T')?;
    let mut dp = d.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (dp.next()?.ok()?, dp.next()?.ok()?, dp.next()?.ok()?);
    let (hms, ms) = t.split_once('.')?;
    let mut tp = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi, sec) = (tp.next()?.ok()?, tp.next()?.ok()?, tp.next()?.ok()?);
    // Days from civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms.parse::<i64>().ok()?)
}

/// Seconds from the first task queued to the last one done, by the run's
/// own timestamps (its start-up excluded). Resolution: 1 ms.
fn span_s(lines: &[Value]) -> Result<f64, BenchError> {
    let mut first = i64::MAX;
    let mut last = i64::MIN;
    for l in lines {
        let q = l["queued"].as_str().and_then(parse_utc_ms);
        let d = l["done"].as_str().and_then(parse_utc_ms);
        let (Some(q), Some(d)) = (q, d) else {
            return Err(BenchError::failed(format!("unreadable times in {l}")));
        };
        first = first.min(q);
        last = last.max(d);
    }
    if lines.is_empty() {
        return Err(BenchError::failed("the run recorded no task"));
    }
    Ok((last - first) as f64 / 1000.0)
}

fn write(dir: &Path, name: &str, text: &str) -> Result<String, BenchError> {
    let p = dir.join(name);
    std::fs::write(&p, text).map_err(|e| BenchError::failed(format!("{}: {e}", p.display())))?;
    Ok(p.display().to_string())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------
// 1. The I/O workload
// ---------------------------------------------------------------------------

fn io_workload(dir: &Path, quick: bool) -> Result<Row, BenchError> {
    let (n, secs) = if quick { (64, 0.2) } else { (512, 1.0) };
    let mut table = String::new();
    let mut tasks = String::new();
    for i in 0..n {
        table += &format!("10.0.{}.{}:status\t{secs}\tok {i}\n", i / 256, i % 256);
        tasks += &format!("10.0.{}.{}:status\n", i / 256, i % 256);
    }
    let t = write(dir, "io-table.tsv", &table)?;
    let f = write(dir, "io-tasks.txt", &tasks)?;
    let (_, lines) = real_run(
        "io",
        dir,
        &strings(&[
            "--tasks",
            &f,
            "--table",
            &t,
            "--workers",
            "2",
            "--concurrency",
            "256",
        ]),
    )?;
    if lines.len() != n || lines.iter().any(|l| l["status"] != "ok") {
        return Err(BenchError::failed("the I/O workload lost or failed tasks"));
    }
    let span = span_s(&lines)?;
    let target = 1.05 * secs;
    Ok(Row {
        workload: "I/O",
        what: format!(
            "{n} calls of {secs} s, 2 workers x 256 in flight: first queued to last done"
        ),
        value: format!("{span:.3} s (limit {secs:.3} s)"),
        target: format!(
            "<= {target:.2} s: {}",
            if span <= target {
                "met"
            } else {
                "target not reached"
            }
        ),
        json: json!({"workload": "io", "tasks": n, "call_seconds": secs, "seconds": span, "target_seconds": target}),
    })
}

// ---------------------------------------------------------------------------
// 2. Dispatch
// ---------------------------------------------------------------------------

fn empty_task() -> Vec<u8> {
    spec::encode(&TaskWire {
        line: 1,
        text: "spin 0".into(),
        queued_ns: 0,
        spec: TaskSpec::Spin { n: 0 },
        queue: None,
    })
}

fn check_result(bytes: &[u8]) -> Result<(), BenchError> {
    let r: ResultWire = spec::decode(bytes).map_err(BenchError::failed)?;
    if r.status != Status::Ok {
        return Err(BenchError::failed(format!("an empty task failed: {r:?}")));
    }
    Ok(())
}

fn pool_settings(workers: u32, seed: u64) -> TasksSettings {
    let mut s = crate::tasks::settings::service(workers, seed);
    s.concurrency = 1;
    s
}

/// Waits for `epoch` to change, spinning briefly first (the dispatch loop
/// is a latency measurement).
fn wait_done(table: &TaskTable<'_>, epoch: u32) {
    for _ in 0..20_000 {
        if table.done_epoch() != epoch {
            return;
        }
        std::hint::spin_loop();
    }
    let _ = table.wait_done(epoch, Duration::from_millis(50));
}

/// The pool: real worker processes, this process as the client. Returns
/// (tasks/s over `n`, round-trip latencies in ns over `m`).
fn dispatch_pool(n: u64, m: u64) -> Result<(f64, Vec<u64>), BenchError> {
    let run = bench_run("dispatch");
    let s = pool_settings(2, 1);
    let settings = RunSettings {
        out: std::env::temp_dir(),
        jobs: vec![Box::new(s.clone())],
    };
    let mini = MiniRun::create(run, &settings, &["tasks"])?;
    let segs = TasksSegments::create(mini.run(), &s, None)?;
    let table = segs.table()?;
    let workers: Vec<_> = mini
        .roles()
        .into_iter()
        .filter(|r| r.kind == "worker")
        .collect();
    let live = mini.start(&workers)?;
    let task = empty_task();
    let mut res = Vec::new();
    // Throughput: keep the table full.
    let t0 = Instant::now();
    let (mut sent, mut done) = (0u64, 0u64);
    let mut from = 0;
    while done < n {
        while sent < n {
            let Some(r) = table.reserve(0) else { break };
            table.write_task(&r, &task);
            table.publish(r);
            sent += 1;
        }
        let e = table.done_epoch();
        // As the run's client collects: in submission order, a chunk at a
        // time.
        let finished = table.next_in_state(SlotState::Done, &mut from, 64);
        for d in &finished {
            table.read_result(d.slot, &mut res)?;
            check_result(&res)?;
            table.finish_raw(d.slot, d.raw(), true);
        }
        done += finished.len() as u64;
        if finished.is_empty() {
            wait_done(&table, e);
        }
        if t0.elapsed() > Duration::from_secs(600) {
            return Err(BenchError::failed(
                "the dispatch measurement took over 10 minutes",
            ));
        }
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    // Latency: one task at a time.
    let mut lat = Vec::with_capacity(m as usize);
    for _ in 0..m {
        let t = monotonic_ns();
        let r = table
            .reserve(0)
            .ok_or_else(|| BenchError::failed("the table is full"))?;
        let slot = r.slot;
        table.write_task(&r, &task);
        let e = table.done_epoch();
        table.publish(r);
        let seen = loop {
            let w = table.word(slot)?;
            if w.word.state == SlotState::Done {
                break w;
            }
            wait_done(&table, e);
        };
        table.read_result(slot, &mut res)?;
        check_result(&res)?;
        table.finish_raw(slot, seen.raw(), true);
        lat.push(monotonic_ns() - t);
    }
    segs.control()?.finish.set();
    table.kick();
    live.wait(Duration::from_secs(30))?;
    Ok((rate, lat))
}

/// The task pool's worker behind a pipe or socket, run by `bench-peer`:
/// length-prefixed task records in, result records out, until end of file.
pub(crate) fn fd_worker(rx: OwnedFd, tx: OwnedFd) -> Result<u64, BenchError> {
    let mut rx = std::io::BufReader::new(File::from(rx));
    let mut tx = File::from(tx);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut n = 0u64;
    loop {
        let mut len = [0u8; 4];
        match rx.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(n),
            Err(e) => return Err(BenchError::failed(format!("read: {e}"))),
        }
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        rx.read_exact(&mut buf)
            .map_err(|e| BenchError::failed(format!("read: {e}")))?;
        let t: TaskWire = spec::decode(&buf).map_err(BenchError::failed)?;
        let started = monotonic_ns();
        let (status, reply, error) = crate::tasks::worker::run_inline(&t.spec)
            .ok_or_else(|| BenchError::failed("the fd worker only runs spin tasks"))?;
        let r = spec::encode(&ResultWire {
            status,
            reply,
            truncated: false,
            error,
            exit_status: None,
            worker: 0,
            started_ns: started,
            done_ns: monotonic_ns(),
        });
        out.clear();
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(&r);
        tx.write_all(&out)
            .map_err(|e| BenchError::failed(format!("write: {e}")))?;
        n += 1;
    }
}

/// A worker over a pipe pair or a socket: our ends.
struct FdWorker {
    peer: PeerProcess,
    tx: File,
    rx: std::io::BufReader<File>,
    outstanding: u64,
}

fn start_fd_worker(mechanism: Mechanism) -> Result<FdWorker, BenchError> {
    let (our_rx, our_tx, their) = if mechanism == Mechanism::PipeStream {
        let (r1, w1) = pipe()?; // parent -> worker
        let (r2, w2) = pipe()?; // worker -> parent
        (r2, w1, vec![r1, w2])
    } else {
        let (a, b) = stream_pair()?;
        let a2 = a
            .try_clone()
            .map_err(|e| BenchError::failed(format!("dup: {e}")))?;
        let b2 = b
            .try_clone()
            .map_err(|e| BenchError::failed(format!("dup: {e}")))?;
        (a, a2, vec![b, b2])
    };
    let refs: Vec<&OwnedFd> = their.iter().collect();
    let mut args = vec![mechanism.id().to_string(), "--count".into(), "0".into()];
    args.extend(fd_args(&refs));
    args.push("--tasks-worker".into());
    let fds: Vec<_> = their.iter().map(|f| f.as_fd()).collect();
    let peer = PeerProcess::spawn(
        &Launcher::this_executable(),
        "tasks worker",
        &args,
        &fds,
        None,
    )?;
    drop(their);
    Ok(FdWorker {
        peer,
        tx: File::from(our_tx),
        rx: std::io::BufReader::new(File::from(our_rx)),
        outstanding: 0,
    })
}

impl FdWorker {
    fn send(&mut self, task: &[u8]) -> Result<(), BenchError> {
        let mut m = Vec::with_capacity(4 + task.len());
        m.extend_from_slice(&(task.len() as u32).to_le_bytes());
        m.extend_from_slice(task);
        self.tx.write_all(&m).map_err(|_| self.peer.gone())?;
        self.outstanding += 1;
        Ok(())
    }
    fn receive(&mut self, buf: &mut Vec<u8>) -> Result<(), BenchError> {
        let mut len = [0u8; 4];
        self.rx.read_exact(&mut len).map_err(|_| self.peer.gone())?;
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        self.rx.read_exact(buf).map_err(|_| self.peer.gone())?;
        self.outstanding -= 1;
        check_result(buf)
    }
    fn close(self) -> Result<(), BenchError> {
        // A socket's other end sees end of file only once we shut down our
        // write side (the read side shares the socket); a pipe ignores it.
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&self.tx),
            nix::sys::socket::Shutdown::Write,
        );
        drop(self.tx);
        report_of(self.peer).map(|_| ())
    }
}

/// The same worker code behind pipes or sockets: (tasks/s, latencies).
fn dispatch_fd(mechanism: Mechanism, n: u64, m: u64) -> Result<(f64, Vec<u64>), BenchError> {
    const WINDOW: u64 = 32;
    let mut ws = [start_fd_worker(mechanism)?, start_fd_worker(mechanism)?];
    let task = empty_task();
    let mut buf = Vec::new();
    let t0 = Instant::now();
    let (mut sent, mut done) = (0u64, 0u64);
    let mut k = 0;
    while done < n {
        let w = &mut ws[k % 2];
        k += 1;
        if sent < n && w.outstanding < WINDOW {
            w.send(&task)?;
            sent += 1;
        } else if w.outstanding > 0 {
            w.receive(&mut buf)?;
            done += 1;
        }
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(m as usize);
    for i in 0..m {
        let w = &mut ws[(i % 2) as usize];
        let t = monotonic_ns();
        w.send(&task)?;
        w.receive(&mut buf)?;
        lat.push(monotonic_ns() - t);
    }
    let [a, b] = ws;
    a.close()?;
    b.close()?;
    Ok((rate, lat))
}

fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64
}

fn dispatch(quick: bool) -> Result<Vec<Row>, BenchError> {
    let (n, m) = if quick {
        (20_000, 2_000)
    } else {
        (400_000, 20_000)
    };
    let pool = dispatch_pool(n, m)?;
    let pipe = dispatch_fd(Mechanism::PipeStream, n, m)?;
    let sock = dispatch_fd(Mechanism::SocketStream, n, m)?;
    let mut rows = Vec::new();
    for (name, (rate, mut lat)) in [
        ("shm task table", pool),
        ("pipe", pipe),
        ("unix socket", sock),
    ] {
        lat.sort_unstable();
        let (p50, p99) = (pct(&lat, 0.5), pct(&lat, 0.99));
        rows.push((name, rate, p50, p99));
    }
    let pipe_rate = rows[1].1;
    Ok(rows
        .into_iter()
        .map(|(name, rate, p50, p99)| {
            let ratio = rate / pipe_rate;
            let target = if name == "shm task table" {
                format!(
                    ">= 2 M tasks/s and >= 10x pipe: {}",
                    if rate >= 2e6 && ratio >= 10.0 {
                        "met"
                    } else {
                        "target not reached"
                    }
                )
            } else {
                String::new()
            };
            Row {
                workload: "dispatch",
                what: format!("empty tasks, 2 workers, {name}"),
                value: format!(
                    "{:.0} k tasks/s ({ratio:.2}x pipe); round trip p50 {:.1} µs, p99 {:.1} µs",
                    rate / 1e3,
                    p50 / 1e3,
                    p99 / 1e3
                ),
                target,
                json: json!({"workload": "dispatch", "transport": name, "tasks": n,
                    "tasks_per_s": rate, "ratio_to_pipe": ratio,
                    "round_trip_p50_ns": p50, "round_trip_p99_ns": p99, "round_trips": m}),
            }
        })
        .collect())
}

// ---------------------------------------------------------------------------
// 3. The CPU workload
// ---------------------------------------------------------------------------

fn cpu_workload(dir: &Path, quick: bool) -> Result<Row, BenchError> {
    let want_ms = if quick { 10.0 } else { 70.0 };
    // Calibrate `spin N` to about `want_ms` on this machine.
    let probe = 20_000_000u64;
    let t = Instant::now();
    std::hint::black_box(crate::tasks::worker::spin(probe));
    let per = t.elapsed().as_secs_f64() / probe as f64;
    let n = ((want_ms / 1e3) / per).round() as u64;
    let count = if quick { 8 } else { 40 };
    let f = write(dir, "cpu-tasks.txt", &format!("spin {n}\n").repeat(count))?;
    let (_, lines) = real_run("cpu", dir, &strings(&["--tasks", &f, "--workers", "2"]))?;
    let work: f64 = lines.iter().filter_map(|l| l["run_s"].as_f64()).sum();
    let ideal = work / 2.0;
    let span = span_s(&lines)?;
    let over = span / ideal - 1.0;
    Ok(Row {
        workload: "CPU",
        what: format!(
            "{count} tasks of spin {} (~{:.0} ms each), 2 workers",
            thousands(n),
            1e3 * work / count as f64
        ),
        value: format!(
            "{span:.3} s; ideal {ideal:.3} s (task times / 2): {:+.1}%",
            100.0 * over
        ),
        target: format!(
            "within 3% of ideal: {}",
            if over <= 0.03 {
                "met"
            } else {
                "target not reached"
            }
        ),
        json: json!({"workload": "cpu", "tasks": count, "spin": n, "seconds": span,
            "ideal_seconds": ideal, "over_ideal": over}),
    })
}

// ---------------------------------------------------------------------------
// 4. The relay workload
// ---------------------------------------------------------------------------

fn relay_workload(dir: &Path, quick: bool) -> Result<Vec<Row>, BenchError> {
    let elements = if quick { 50_000 } else { 500_000 };
    let mut rows = Vec::new();
    for chunk in [500u32, 10_000] {
        let (summary, lines) = real_run(
            &format!("relay{chunk}"),
            dir,
            &strings(&[
                "--pipeline",
                "scale:2",
                "--elements",
                &elements.to_string(),
                "--chunk",
                &chunk.to_string(),
                "--workers",
                "2",
            ]),
        )?;
        let r = &summary["tasks"]["relay"];
        if r["matches_single_process"] != true {
            return Err(BenchError::failed(format!("relay result differs: {r}")));
        }
        let chunks = r["chunks"].as_u64().unwrap_or(1).max(1);
        let pool = span_s(&lines)?;
        let single = r["single_process_seconds"].as_f64().unwrap_or(f64::NAN);
        let per_chunk_us = 1e6 * (pool - single) / chunks as f64;
        rows.push(Row {
            workload: "relay",
            what: format!(
                "{} multiplications in {} chunks of {}",
                thousands(elements),
                thousands(chunks),
                thousands(chunk as u64)
            ),
            value: format!(
                "pool {pool:.4} s, single process {single:.4} s: {per_chunk_us:.1} us overhead per chunk"
            ),
            target: String::new(),
            json: json!({"workload": "relay", "elements": elements, "chunk": chunk, "chunks": chunks,
                "pool_seconds": pool, "single_process_seconds": single,
                "overhead_per_chunk_us": per_chunk_us}),
        });
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------
// 5. Recovery
// ---------------------------------------------------------------------------

fn recovery(dir: &Path, quick: bool) -> Result<Row, BenchError> {
    let kills = if quick { 5 } else { 40 };
    // Calls that never finish during the measurement: whoever holds them
    // holds them until killed.
    let held = 4;
    let mut table = String::new();
    let mut tasks = String::new();
    for i in 0..held {
        table += &format!("10.1.0.{i}:hold\t3600\tdone\n");
        tasks += &format!("10.1.0.{i}:hold\n");
    }
    let t = write(dir, "rec-table.tsv", &table)?;
    let f = write(dir, "rec-tasks.txt", &tasks)?;
    let run = bench_run("recovery");
    let _guards: Vec<SegmentGuard> = ["control", "tasks"]
        .iter()
        .map(|p| SegmentGuard::new(&run, p))
        .collect();
    let out = dir.join("out-recovery");
    let mut sup = Command::new("/proc/self/exe")
        .arg("run")
        .args([
            "--name",
            run.as_str(),
            "--jobs",
            "tasks",
            "--quiet",
            "--out",
        ])
        .arg(&out)
        .args([
            "--tasks",
            &f,
            "--table",
            &t,
            "--workers",
            "2",
            "--concurrency",
            "8",
        ])
        .args(["--max-restarts", "100000", "--max-attempts", "100"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| BenchError::failed(format!("cannot start a run: {e}")))?;
    super::register_peer(sup.id());
    let result = measure_recovery(&run, held, kills);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = sup.wait();
    super::unregister_peer(sup.id());
    let mut lat = result?;
    lat.sort_unstable();
    let (p50, p99, max) = (
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        *lat.last().unwrap_or(&0) as f64,
    );
    Ok(Row {
        workload: "recovery",
        what: format!("{kills} SIGKILLs of a worker holding {held} tasks: kill to claimed again"),
        value: format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            p50 / 1e6,
            p99 / 1e6,
            max / 1e6
        ),
        target: format!(
            "p50 <= 2 ms, p99 <= 10 ms: {}",
            if p50 <= 2e6 && p99 <= 10e6 {
                "met"
            } else {
                "target not reached"
            }
        ),
        json: json!({"workload": "recovery", "kills": kills, "tasks_held": held,
            "p50_ns": p50, "p99_ns": p99, "max_ns": max}),
    })
}

/// Kills the worker that holds the `held` tasks, `kills` times; returns
/// for each task and kill the ns from the kill to the task's next claim.
fn measure_recovery(run: &RunName, held: usize, kills: usize) -> Result<Vec<u64>, BenchError> {
    let wait = |what: &str, limit: Duration, mut f: Box<dyn FnMut() -> bool + '_>| {
        let t = Instant::now();
        while !f() {
            if t.elapsed() > limit {
                return Err(BenchError::failed(format!(
                    "recovery: {what} within {limit:?}"
                )));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    };
    // Wait for the run and both workers.
    let mut open = None;
    wait(
        "the run did not start",
        Duration::from_secs(60),
        Box::new(|| {
            open =
                crate::supervisor::opened::OpenRun::open(run, Access::ReadOnly, crate::jobs::ALL)
                    .ok();
            open.is_some()
        }),
    )?;
    let open = open.expect("waited for");
    let s = open
        .settings
        .job("tasks")
        .and_then(|j| j.downcast::<TasksSettings>())
        .cloned()
        .ok_or_else(|| BenchError::failed("recovery: no task pool"))?;
    // The control segment exists before the pool's: the supervisor may
    // still be creating it (a file of 0 bytes for a moment).
    let mut segs = None;
    wait(
        "the task pool's segment did not appear",
        Duration::from_secs(60),
        Box::new(|| {
            segs = TasksSegments::open(run, &s, Access::ReadOnly).ok();
            segs.is_some()
        }),
    )?;
    let segs = segs.expect("waited for");
    let table = segs.table()?;
    let control: &Control = &open.control;
    let slot_of = |w: u32| {
        open.roles
            .find("worker", w)
            .map(|(r, _)| r.slot)
            .expect("2 workers")
    };
    let mut lat = Vec::new();
    for _ in 0..kills {
        // The holder: the worker whose claims cover every held task.
        let mut holder = None;
        wait(
            "the tasks were not all held by one live worker",
            Duration::from_secs(30),
            Box::new(|| {
                let claimed = table.in_state(SlotState::Claimed);
                let who: Vec<u32> = claimed.iter().map(|c| c.word.who).collect();
                let both_alive = control.role_alive(slot_of(0)) && control.role_alive(slot_of(1));
                holder = (claimed.len() == held && who.iter().all(|w| *w == who[0]) && both_alive)
                    .then(|| who[0]);
                holder.is_some()
            }),
        )?;
        let w = holder.expect("waited for");
        let before: BTreeMap<u32, u32> = table
            .in_state(SlotState::Claimed)
            .iter()
            .map(|c| (c.slot, c.word.attempts))
            .collect();
        let pid = control.role_view(slot_of(w)).pid;
        let t0 = monotonic_ns();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| BenchError::failed(format!("kill {pid}: {e}")))?;
        wait(
            "the killed worker's tasks were not claimed again",
            Duration::from_secs(30),
            Box::new(|| {
                before.iter().all(|(slot, a)| {
                    table
                        .word(*slot)
                        .is_ok_and(|s| s.word.state == SlotState::Claimed && s.word.attempts > *a)
                })
            }),
        )?;
        for slot in before.keys() {
            lat.push(table.claimed_ns(*slot).saturating_sub(t0));
        }
    }
    Ok(lat)
}

// ---------------------------------------------------------------------------

/// `forkring bench tasks`.
pub(crate) fn run(opts: &Options) -> Result<(), BenchError> {
    install_interrupt_handler()?;
    let machine = Machine::detect();
    if !opts.json {
        println!("forkring bench tasks: the task pool, measured in one run");
        println!("machine: {}\n", machine.describe());
    }
    let scratch = Scratch::new("tasks")?;
    let dir = &scratch.0;
    let want = |w: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == w);
    let mut rows = Vec::new();
    if want("io") {
        rows.push(io_workload(dir, opts.quick)?);
    }
    if want("dispatch") {
        rows.extend(dispatch(opts.quick)?);
    }
    if want("cpu") {
        rows.push(cpu_workload(dir, opts.quick)?);
    }
    if want("relay") {
        rows.extend(relay_workload(dir, opts.quick)?);
    }
    if want("recovery") {
        rows.push(recovery(dir, opts.quick)?);
    }
    if opts.json {
        for r in rows {
            let mut v = r.json;
            v["bench"] = json!("tasks");
            v["cpu"] = json!(machine.cpu);
            v["cpus"] = json!(machine.cpus);
            println!("{v}");
        }
        return Ok(());
    }
    for r in rows {
        println!("{:<9} {}", r.workload, r.what);
        println!("{:<9}   {}", "", r.value);
        if !r.target.is_empty() {
            println!("{:<9}   target {}", "", r.target);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_parse_back() {
        for ms in [0u64, 951_782_400_000, 1_796_195_081_123] {
            assert_eq!(
                parse_utc_ms(&crate::units::rfc3339_utc(ms)),
                Some(ms as i64)
            );
        }
    }
}
