//! `forkring bench export`: what the NATS JetStream bridge costs, measured in
//! one run against a `nats-server -js` this command starts on a free local
//! port (its store in a scratch directory):
//! 1. the stream at `--rate max`: without export, with `--export` and
//!    `--export-policy block` (every vector acknowledged by JetStream), and
//!    with `drop`; vectors/s of each and their ratio to the plain stream;
//! 2. the task pool: empty tasks (`spin 0`) from a file against the same
//!    tasks queued with `submit --to` and pulled with `--from --drain`;
//!    tasks/s and their ratio.
//!
//! Every figure comes from a real `forkring run`'s `summary.json` (work
//! seconds, so the supervisor's start-up is excluded); each is the best of
//! `--repeat` runs.

use std::path::Path;

use serde_json::{Value, json};

use super::{BenchError, Machine, Scratch, install_interrupt_handler, thousands};
use crate::nats::server::LocalServer;
use crate::shm::RunName;

/// Options of `forkring bench export`.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Vectors per stream run.
    pub(crate) vectors: u64,
    /// Tasks per pool run.
    pub(crate) tasks: u64,
    /// Runs per figure (the best is reported).
    pub(crate) repeat: u32,
    /// One JSON object per line.
    pub(crate) json: bool,
}

/// One measured figure.
#[derive(Debug)]
struct Row {
    workload: &'static str,
    what: String,
    per_s: f64,
    unit: &'static str,
    /// Against the local baseline of the same workload.
    ratio: Option<f64>,
    extra: Value,
}

fn bench_run(tag: &str) -> RunName {
    RunName::new(&format!("bench-{}-{tag}", std::process::id())).expect("valid bench run name")
}

fn summary(out: &Path) -> Result<Value, BenchError> {
    let p = out.join("summary.json");
    let text = std::fs::read_to_string(&p)
        .map_err(|e| BenchError::failed(format!("{}: {e}", p.display())))?;
    serde_json::from_str(&text).map_err(|e| BenchError::failed(format!("{}: {e}", p.display())))
}

fn field(v: &Value, path: &[&str]) -> Result<f64, BenchError> {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_f64().ok_or_else(|| {
        BenchError::failed(format!("summary.json has no number at {}", path.join(".")))
    })
}

/// Best vectors/s of `repeat` stream runs with `extra` options, and the
/// last run's export section.
fn stream(
    dir: &Path,
    tag: &str,
    opts: &Options,
    extra: &[String],
) -> Result<(f64, Value), BenchError> {
    let mut best = 0.0f64;
    let mut export = Value::Null;
    for i in 0..opts.repeat.max(1) {
        let t = format!("{tag}-{i}");
        let mut args: Vec<String> = ["--jobs", "stream", "--rate", "max", "--count"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(opts.vectors.to_string());
        args.extend_from_slice(extra);
        let out = super::forkring_run(
            &bench_run(&t),
            &["stream", "ring", "export"],
            dir,
            &t,
            &args,
        )?;
        let s = summary(&out)?;
        best = best.max(field(&s, &["stream", "vectors_per_second"])?);
        export = s["stream"]["export"].clone();
        let _ = std::fs::remove_dir_all(&out);
    }
    Ok((best, export))
}

/// Best tasks/s of `repeat` pool runs; `queue` = Some(url) pulls the tasks
/// from a fresh subject on that server, else reads them from `file`.
fn pool(
    dir: &Path,
    tag: &str,
    opts: &Options,
    file: &Path,
    queue: Option<&str>,
) -> Result<f64, BenchError> {
    let mut best = 0.0f64;
    for i in 0..opts.repeat.max(1) {
        let t = format!("{tag}-{i}");
        let mut args: Vec<String> = vec!["--jobs".into(), "tasks".into()];
        args.extend(["--workers".into(), "2".into()]);
        match queue {
            Some(url) => {
                let subject = format!("bench.tasks.{}.{i}", std::process::id());
                let results = format!("bench.results.{}.{i}", std::process::id());
                let o = std::process::Command::new("/proc/self/exe")
                    .args(["submit", "--to", url, "--tasks-subject", &subject])
                    .arg(file)
                    .output()
                    .map_err(|e| BenchError::failed(format!("cannot run submit: {e}")))?;
                if !o.status.success() {
                    return Err(BenchError::failed(format!(
                        "submit --to {url}: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    )));
                }
                args.extend([
                    "--from".into(),
                    url.to_string(),
                    "--tasks-subject".into(),
                    subject,
                    "--results-subject".into(),
                    results,
                    "--drain".into(),
                ]);
            }
            None => args.extend(["--tasks".into(), file.display().to_string()]),
        }
        let out = super::forkring_run(&bench_run(&t), &["tasks", "relay"], dir, &t, &args)?;
        let s = summary(&out)?;
        let recorded = field(&s, &["tasks", "recorded"])?;
        if recorded as u64 != opts.tasks {
            return Err(BenchError::failed(format!(
                "the {t} run recorded {recorded} tasks of {}",
                opts.tasks
            )));
        }
        best = best.max(field(&s, &["tasks", "tasks_per_second"])?);
        let _ = std::fs::remove_dir_all(&out);
    }
    Ok(best)
}

/// Runs the benchmark.
pub(crate) fn run(opts: &Options) -> Result<(), BenchError> {
    install_interrupt_handler()?;
    let machine = Machine::detect();
    let srv = LocalServer::start(true).map_err(BenchError::failed)?;
    let url = srv.url();
    if !opts.json {
        println!("forkring bench export: the NATS JetStream bridge, measured in one run");
        println!("machine: {}", machine.describe());
        println!(
            "server: nats-server -js on {url} (local, file store); {}\n",
            super::runs_note(opts.repeat)
        );
    }
    let scratch = Scratch::new("export")?;
    let dir = &scratch.0;
    let mut rows = Vec::new();

    let (plain, _) = stream(dir, "plain", opts, &[])?;
    rows.push(Row {
        workload: "stream",
        what: format!("--rate max, {} vectors, no export", thousands(opts.vectors)),
        per_s: plain,
        unit: "vectors/s",
        ratio: None,
        extra: json!({}),
    });
    for policy in ["block", "drop"] {
        let subject = format!("bench.vectors.{}.{policy}", std::process::id());
        let (v, export) = stream(
            dir,
            policy,
            opts,
            &[
                "--export".into(),
                url.clone(),
                "--export-subject".into(),
                subject,
                "--export-policy".into(),
                policy.into(),
            ],
        )?;
        rows.push(Row {
            workload: "stream",
            what: format!(
                "--export-policy {policy}: {} exported, {} dropped",
                thousands(export["exported_vectors"].as_u64().unwrap_or(0)),
                thousands(export["dropped_vectors"].as_u64().unwrap_or(0))
            ),
            per_s: v,
            unit: "vectors/s",
            ratio: Some(v / plain),
            extra: json!({ "policy": policy, "export": export }),
        });
    }

    let file = dir.join("tasks.txt");
    std::fs::write(&file, "spin 0\n".repeat(opts.tasks as usize))
        .map_err(|e| BenchError::failed(format!("{}: {e}", file.display())))?;
    let local = pool(dir, "file", opts, &file, None)?;
    rows.push(Row {
        workload: "tasks",
        what: format!(
            "{} empty tasks from --tasks FILE, 2 workers",
            thousands(opts.tasks)
        ),
        per_s: local,
        unit: "tasks/s",
        ratio: None,
        extra: json!({}),
    });
    let queued = pool(dir, "queue", opts, &file, Some(&url))?;
    rows.push(Row {
        workload: "tasks",
        what: "the same from a JetStream work queue (--from --drain): pull, run, publish the result, ack".to_string(),
        per_s: queued,
        unit: "tasks/s",
        ratio: Some(queued / local),
        extra: json!({}),
    });
    drop(srv);

    for r in rows {
        if opts.json {
            let mut v = json!({
                "bench": "export",
                "workload": r.workload,
                "what": r.what,
                "per_s": r.per_s,
                "unit": r.unit,
                "ratio_to_local": r.ratio,
                "cpu": machine.cpu,
                "cpus": machine.cpus,
            });
            if let (Some(o), Value::Object(x)) = (v.as_object_mut(), r.extra) {
                o.extend(x);
            }
            println!("{v}");
        } else {
            println!("{:<7} {}", r.workload, r.what);
            let ratio = r
                .ratio
                .map(|x| format!("  ({x:.3}x of the local figure)"))
                .unwrap_or_default();
            println!(
                "{:<7}   {} {}{ratio}",
                "",
                thousands(r.per_s.round() as u64),
                r.unit
            );
        }
    }
    Ok(())
}
