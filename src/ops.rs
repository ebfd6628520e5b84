//! Operator verbs that work on existing runs: `status`, `clean`, `handoff`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use crate::error::{CmdResult, Failure};
use crate::shm::{Access, RunName};
use crate::supervisor::control::Control;
use crate::supervisor::handoff::{self, EndCause};
use crate::supervisor::job::{Hosts, Progress, hosts};
use crate::supervisor::progress::describe;
use crate::supervisor::role::Role;
use crate::supervisor::run::{clean_run, segment_files_of};

/// Runs that have at least one segment in /dev/shm.
fn runs_in_shm() -> Result<BTreeSet<RunName>, Failure> {
    Ok(crate::shm::name::list_segments()
        .map_err(|e| Failure::runtime(format!("cannot list /dev/shm: {e}")))?
        .into_iter()
        .map(|(r, _, _)| r)
        .collect())
}

fn status_of(run: &RunName) -> Value {
    let control = match Control::open(run, Access::ReadOnly) {
        Ok(c) => c,
        Err(e) => {
            return json!({ "run": run.as_str(), "error": e.to_string(),
                "segments": segment_files_of(run).unwrap_or_default() });
        }
    };
    let roles: Vec<Value> = Role::ALL
        .iter()
        .map(|r| control.role_view(*r))
        .filter(|v| {
            let s = control.settings();
            match v.role {
                Role::Ping | Role::Pong => s.image.is_some(),
                Role::Producer | Role::Consumer => s.stream.is_some(),
            }
        })
        .map(|v| {
            json!({
                "role": v.role.name(),
                "pid": v.pid,
                "state": v.state.name(),
                "alive": v.alive,
                "restarts": v.restarts,
                "last_exit": v.last_exit.map(|e| e.to_string()),
            })
        })
        .collect();
    let (progress, error) = match hosts(&control, Hosts::Open(Access::ReadOnly)) {
        Ok(jobs) => (
            jobs.iter().map(|j| j.progress()).collect::<Vec<Progress>>(),
            None,
        ),
        Err(f) => (Vec::new(), Some(f.message)),
    };
    json!({
        "run": run.as_str(),
        "supervisor": { "pid": control.supervisor_pid(), "alive": control.supervisor_alive() },
        "phase": control.phase().map(|p| p.name()).unwrap_or("corrupt"),
        "jobs": control.settings().jobs_label(),
        "out": control.settings().out.display().to_string(),
        "seconds": control.prior_seconds(),
        "resumes": control.resumes(),
        "roles": roles,
        "progress": progress,
        "error": error,
    })
}

fn print_status(v: &Value) {
    let run = v["run"].as_str().unwrap_or("?");
    if v["supervisor"].is_null() {
        println!(
            "run {run}: unreadable: {}",
            v["error"].as_str().unwrap_or("?")
        );
        return;
    }
    let alive = v["supervisor"]["alive"].as_bool() == Some(true);
    println!(
        "run {run}: {} (supervisor pid {}{}), jobs {}, {:.1} s of work, {} resumes, out {}",
        v["phase"].as_str().unwrap_or("?"),
        v["supervisor"]["pid"],
        if alive {
            ""
        } else {
            ", dead: resume with `forkring run` or discard with `forkring clean`"
        },
        v["jobs"].as_str().unwrap_or("?"),
        v["seconds"].as_f64().unwrap_or(0.0),
        v["resumes"],
        v["out"].as_str().unwrap_or("?"),
    );
    println!(
        "  {:<9} {:>8} {:<9} {:<6} {:>8}  last failure",
        "role", "pid", "state", "alive", "restarts"
    );
    for r in v["roles"].as_array().into_iter().flatten() {
        println!(
            "  {:<9} {:>8} {:<9} {:<6} {:>8}  {}",
            // serde_json's numbers ignore format widths: print them as u64.
            r["role"].as_str().unwrap_or("?"),
            r["pid"].as_u64().unwrap_or(0),
            r["state"].as_str().unwrap_or("?"),
            if r["alive"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            r["restarts"].as_u64().unwrap_or(0),
            r["last_exit"].as_str().unwrap_or("-"),
        );
    }
    for p in v["progress"].as_array().into_iter().flatten() {
        if let Ok(p) = serde_json::from_value::<Progress>(p.clone()) {
            println!("  {}", describe(&p, None));
        }
    }
    if let Some(e) = v["error"].as_str() {
        println!("  progress unavailable: {e}");
    }
}

/// `forkring status [NAME] [--json]`.
pub fn status(name: Option<&RunName>, as_json: bool) -> CmdResult {
    let runs: Vec<RunName> = match name {
        Some(n) => {
            if segment_files_of(n)?.is_empty() {
                return Err(Failure::runtime(format!(
                    "no run named {n} (nothing in /dev/shm/forkring.{n}.*); `forkring status` lists the runs"
                )));
            }
            vec![n.clone()]
        }
        None => runs_in_shm()?.into_iter().collect(),
    };
    if runs.is_empty() && !as_json {
        println!("no runs in /dev/shm");
    }
    for r in &runs {
        let v = status_of(r);
        if as_json {
            println!("{}", serde_json::to_string(&v).expect("serialisable"));
        } else {
            print_status(&v);
        }
    }
    Ok(())
}

/// `forkring clean [NAME] [--dry-run]`.
pub fn clean(name: Option<&RunName>, dry_run: bool) -> CmdResult {
    let runs: Vec<RunName> = match name {
        Some(n) => vec![n.clone()],
        None => runs_in_shm()?.into_iter().collect(),
    };
    let mut removed = 0usize;
    let mut refused = Vec::new();
    for r in &runs {
        if dry_run {
            let live = Control::open(r, Access::ReadOnly)
                .map(|c| c.supervisor_alive())
                .unwrap_or(false);
            for f in segment_files_of(r)? {
                println!(
                    "{} /dev/shm/{f}",
                    if live {
                        "would keep (live)"
                    } else {
                        "would remove"
                    }
                );
            }
            continue;
        }
        match clean_run(r) {
            Ok(names) => {
                for n in &names {
                    println!("removed /dev/shm/{n}");
                }
                removed += names.len();
            }
            Err(f) => {
                if name.is_some() {
                    return Err(f);
                }
                eprintln!("forkring: {}", f.message);
                refused.push(r.to_string());
            }
        }
    }
    if !dry_run && removed == 0 && refused.is_empty() {
        match name {
            Some(n) => println!("run {n} has no segments; nothing to clean"),
            None => println!("no stale runs in /dev/shm"),
        }
    }
    Ok(())
}

/// `forkring handoff --run NAME [--out DIR]`.
pub fn handoff(run: &RunName, out: Option<&Path>) -> CmdResult {
    let control = Control::open(run, Access::ReadWrite)?;
    // The lock keeps a supervisor from starting on the run meanwhile; this
    // is not a resume, so nothing in the run changes.
    control.lock()?;
    for r in Role::ALL {
        if control.role_alive(r) {
            return Err(Failure::runtime(format!(
                "role {r} of run {run} is still running (pid {}); stop it first",
                control.role_view(r).pid
            )));
        }
    }
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| control.settings().out.clone());
    let jobs = hosts(&control, Hosts::Open(Access::ReadWrite))?;
    hand_off_stopped(&control, &jobs, &out, false)
}

/// Writes the results of a run none of whose processes lives (the caller
/// holds its supervisor lock) into `out`, then removes its segments.
pub fn hand_off_stopped(
    control: &Control,
    jobs: &[Box<dyn crate::supervisor::job::JobHost>],
    out: &Path,
    as_json: bool,
) -> CmdResult {
    let out = crate::outfile::prepare_dir(out)?;
    let summary = handoff::write_results(
        control,
        jobs,
        &out,
        control.prior_seconds(),
        &EndCause::Manual,
    )?;
    handoff::remove_segments(control, jobs);
    if as_json {
        println!("{}", serde_json::to_string(&summary).expect("serialisable"));
    } else {
        println!("{}", handoff::summary_line(&summary));
    }
    Ok(())
}
