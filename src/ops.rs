//! Operator verbs that work on existing runs and results: `status`,
//! `clean`, `handoff`, `verify`.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::Path;

use serde_json::{Value, json};

use crate::control::{self, Control};
use crate::job::{Progress, Registry};
use crate::outfile::sha256_file;
use crate::shm::{Access, RunName, segment};
use crate::supervisor::error::RunError;
use crate::supervisor::handoff;
use crate::supervisor::opened::{Hosts, OpenRun};
use crate::supervisor::progress::describe;
use crate::supervisor::run::segment_files_of;

/// Runs that have at least one segment in /dev/shm.
fn runs_in_shm() -> Result<BTreeSet<RunName>, RunError> {
    Ok(crate::shm::name::list_segments()
        .map_err(RunError::ListShm)?
        .into_iter()
        .map(|(r, _, _)| r)
        .collect())
}

/// `schema_version` of each run object of `status --json` (documented in
/// `docs/schemas.md`).
pub(crate) const STATUS_SCHEMA_VERSION: u32 = 2;

fn status_of(run: &RunName, access: Access, registry: Registry) -> Value {
    let open = match OpenRun::open(run, access, registry) {
        Ok(c) => c,
        Err(e) => {
            return json!({ "schema_version": STATUS_SCHEMA_VERSION, "run": run.as_str(),
                "readable": false, "error": e.to_string(),
                "segments": segment_files_of(run).unwrap_or_default() });
        }
    };
    let c = &open.control;
    let roles: Vec<Value> = open
        .roles
        .iter()
        .map(|r| {
            let v = c.role_view(r.slot);
            json!({
                "role": r.label(),
                "job": r.job,
                "kind": r.kind,
                "index": r.index,
                "pid": v.pid,
                "state": v.state.name(),
                "alive": v.alive,
                "restarts": v.restarts,
                "last_exit": v.last_exit.map(|e| e.to_string()),
            })
        })
        .collect();
    let (progress, error) = match open.hosts(Hosts::Open(access)) {
        Ok(jobs) => (
            jobs.iter().map(|j| j.progress()).collect::<Vec<Progress>>(),
            None,
        ),
        Err(f) => (Vec::new(), Some(f.to_string())),
    };
    json!({
        "schema_version": STATUS_SCHEMA_VERSION,
        "run": run.as_str(),
        "readable": true,
        "supervisor": { "pid": c.supervisor_pid(), "alive": c.supervisor_alive() },
        "phase": c.phase().map(|p| p.name()).unwrap_or("corrupt"),
        "jobs": open.settings.job_names(),
        "out": open.settings.out.display().to_string(),
        "started": crate::units::rfc3339_utc(c.created_unix_ms()),
        "seconds": c.prior_seconds(),
        "resumes": c.resumes(),
        "roles": roles,
        "progress": progress,
        "error": error,
    })
}

/// A run's status as text (the lines `forkring status` prints).
fn status_text(v: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let run = v["run"].as_str().unwrap_or("?");
    if v["readable"] != true {
        let _ = writeln!(
            out,
            "run {run}: unreadable: {}",
            v["error"].as_str().unwrap_or("?")
        );
        return out;
    }
    let alive = v["supervisor"]["alive"].as_bool() == Some(true);
    let jobs: Vec<&str> = v["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let _ = writeln!(
        out,
        "run {run}: {} (supervisor pid {}{}), jobs {}, {:.1} s of work, {}, out {}",
        v["phase"].as_str().unwrap_or("?"),
        v["supervisor"]["pid"],
        if alive {
            ""
        } else {
            ", dead: resume with `forkring run` or discard with `forkring clean`"
        },
        jobs.join(","),
        v["seconds"].as_f64().unwrap_or(0.0),
        crate::units::plural(v["resumes"].as_u64().unwrap_or(0), "resume", "resumes"),
        v["out"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        out,
        "  {:<12} {:>8} {:<9} {:<6} {:>8}  last failure",
        "role", "pid", "state", "alive", "restarts"
    );
    for r in v["roles"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<12} {:>8} {:<9} {:<6} {:>8}  {}",
            // serde_json's numbers ignore format widths: print them as u64.
            r["role"].as_str().unwrap_or("?"),
            r["pid"].as_u64().unwrap_or(0),
            r["state"].as_str().unwrap_or("?"),
            if r["alive"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            crate::units::thousands(r["restarts"].as_u64().unwrap_or(0)),
            r["last_exit"].as_str().unwrap_or("-"),
        );
    }
    for p in v["progress"].as_array().into_iter().flatten() {
        if let Ok(p) = serde_json::from_value::<Progress>(p.clone()) {
            let _ = writeln!(out, "  {}", describe(&p, None));
        }
    }
    if let Some(e) = v["error"].as_str() {
        let _ = writeln!(out, "  progress unavailable: {e}");
    }
    out
}

/// Writes `text` to stdout; a closed pipe is an error, not a panic.
fn emit(text: &str) -> Result<(), RunError> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())
        .and_then(|()| o.flush())
        .map_err(RunError::Stdout)
}

/// One view of `status`: the text or JSON document, and the run that was
/// asked for by name but could not be read.
fn status_view(
    name: Option<&RunName>,
    as_json: bool,
    user: Option<u32>,
    registry: Registry,
) -> Result<(String, Option<RunError>), RunError> {
    let runs: Vec<RunName> = match name {
        Some(n) => {
            if segment_files_of(n)?.is_empty() {
                return Err(RunError::NoSuchRun(n.clone()));
            }
            vec![n.clone()]
        }
        None => runs_in_shm()?
            .into_iter()
            .filter(|r| user.is_none_or(|uid| owned_by(r, uid)))
            .collect(),
    };
    let access = user.map_or(Access::ReadOnly, Access::ReadOnlyOf);
    let views: Vec<Value> = runs
        .iter()
        .map(|r| status_of(r, access, registry))
        .collect();
    let unreadable = match (name, views.first()) {
        (Some(n), Some(v)) if v["readable"] != true => Some(RunError::Unreadable {
            run: n.clone(),
            detail: v["error"].as_str().unwrap_or("?").to_string(),
            foreign: segment_files_of(n)?
                .iter()
                .any(|f| matches!(segment::foreign(f), Ok(Some(_)))),
        }),
        _ => None,
    };
    let text = if as_json {
        // One JSON document: an array of runs, `[]` when there are none.
        let mut t = serde_json::to_string(&views).expect("JSON values serialise");
        t.push('\n');
        t
    } else if views.is_empty() {
        "no runs in /dev/shm\n".to_string()
    } else {
        views.iter().map(status_text).collect()
    };
    Ok((text, unreadable))
}

/// Whether run `run`'s control file (or, without one, any file of it)
/// belongs to `uid`. Follows no link.
fn owned_by(run: &RunName, uid: u32) -> bool {
    let owner = |n: &str| {
        nix::sys::stat::lstat(
            std::path::Path::new(crate::shm::name::SHM_DIR)
                .join(n)
                .as_path(),
        )
        .ok()
        .map(|st| st.st_uid)
    };
    match owner(&run.segment(control::PART)) {
        Some(o) => o == uid,
        None => segment_files_of(run)
            .unwrap_or_default()
            .iter()
            .any(|n| owner(n) == Some(uid)),
    }
}

/// `forkring status [NAME] [--json] [--watch SECS] [--user USER]`. `status NAME` fails
/// (after printing what it could) when the run is unreadable; the list of
/// every run marks such runs instead. With `watch`, the view is printed
/// again every interval (on a terminal, in place) until interrupted.
pub(crate) fn status(
    name: Option<&RunName>,
    as_json: bool,
    watch: Option<std::time::Duration>,
    user: Option<u32>,
    registry: Registry,
) -> Result<(), RunError> {
    let Some(every) = watch else {
        let (text, unreadable) = status_view(name, as_json, user, registry)?;
        emit(&text)?;
        return unreadable.map_or(Ok(()), Err);
    };
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal() && !as_json;
    loop {
        let text = match status_view(name, as_json, user, registry) {
            Ok((text, _)) => text,
            // A run that ended (or not yet started) is part of the view.
            Err(e @ RunError::NoSuchRun(_)) => format!("{e}\n"),
            Err(e) => return Err(e),
        };
        if tty {
            let now = crate::units::rfc3339_utc(crate::clock::unix_ms());
            // Home, clear the screen, then the view, as watch(1) does.
            emit(&format!(
                "\x1b[H\x1b[2JEvery {:.1} s: forkring status{}    {now}\n\n{text}",
                every.as_secs_f64(),
                name.map(|n| format!(" {n}")).unwrap_or_default()
            ))?;
        } else {
            emit(&text)?;
        }
        std::thread::sleep(every);
    }
}

/// Checks that every file of `run` may be removed and returns their names
/// with what keeps the run from being taken meanwhile (its control file's
/// supervisor lock, held while the descriptor is open).
///
/// Refused, with the reason: a file that is not a regular file (a FIFO
/// named like a segment is not forkring's, whoever made it); a run with a
/// live supervisor, role or segment creator; and a run with files of
/// another user, unless we may remove them (root) and the run is provably a
/// dead forkring run: every file a complete forkring segment, no lock held.
fn clean_check(run: &RunName) -> Result<(Vec<String>, Option<std::os::fd::OwnedFd>), RunError> {
    let names: Vec<String> = segment_files_of(run)?;
    if names.is_empty() {
        return Ok((names, None));
    }
    let not_ours = |file: &str, detail: String| RunError::NotOurs {
        run: run.clone(),
        file: file.to_string(),
        detail,
    };
    let euid = nix::unistd::geteuid().as_raw();
    let mut other_users = false;
    for n in &names {
        match segment::foreign(n) {
            Ok(None) => {}
            Ok(Some(segment::Foreign::OtherUser(_))) if euid == 0 => other_users = true,
            Ok(Some(why)) => return Err(not_ours(n, why.to_string())),
            // Removed meanwhile: nothing to check.
            Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(not_ours(n, format!("cannot be examined ({e})"))),
        }
    }
    let control_name = run.segment(control::PART);
    if other_users {
        if !names.contains(&control_name) {
            return Err(not_ours(
                &names[0],
                "belongs to another user's run without a control segment, which could prove it dead".into(),
            ));
        }
        for n in &names {
            let part = crate::shm::name::parse_segment_file(n).map_or("", |(_, p)| p);
            segment::check_foreign_segment(n, part)
                .map_err(|why| not_ours(n, format!("{why} (another user's run)")))?;
        }
    }
    // The supervisor lock lives on the control file whatever its content, so
    // probe it raw (the segment may be corrupt). Holding the lock while
    // removing keeps a supervisor from starting on the run meanwhile.
    let guard = match segment::open_raw(&control_name) {
        Ok(fd) => match crate::shm::lock::try_lock(fd.as_fd(), control::SUPERVISOR_LOCK_BYTE) {
            Ok(true) => fd,
            Ok(false) => {
                let pid = Control::open(run, Access::ReadOnly)
                    .map(|c| c.supervisor_pid().to_string())
                    .unwrap_or_else(|_| "unknown".into());
                return Err(RunError::Live {
                    run: run.clone(),
                    pid,
                });
            }
            Err(e) => {
                return Err(RunError::Os {
                    what: format!("cannot lock /dev/shm/{control_name}"),
                    errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                });
            }
        },
        Err(_) => {
            // No control file (a benchmark's segments, or a run half
            // removed): each segment's creator holds its byte 0 while alive.
            for n in &names {
                if let Ok(fd) = segment::open_raw(n)
                    && crate::shm::lock::is_locked(fd.as_fd(), 0).unwrap_or(false)
                {
                    return Err(RunError::InUse { segment: n.clone() });
                }
            }
            return Ok((names, None));
        }
    };
    if other_users {
        // Not even a role of it may be alive (each holds its byte).
        let roles =
            crate::shm::lock::is_range_locked(guard.as_fd(), 1, u64::from(control::MAX_ROLES));
        if !matches!(roles, Ok(false)) {
            return Err(not_ours(
                &control_name,
                "belongs to another user's run with a live role".into(),
            ));
        }
    }
    Ok((names, Some(guard)))
}

/// Removes every segment of `run` if it may be removed (see
/// `clean_check`). Returns the names removed.
pub(crate) fn clean_run(run: &RunName) -> Result<Vec<String>, RunError> {
    let (names, _guard) = clean_check(run)?;
    let control_name = run.segment(control::PART);
    for n in names.iter().filter(|n| **n != control_name) {
        segment::unlink(n).map_err(|errno| RunError::Remove {
            name: n.clone(),
            errno,
        })?;
    }
    if names.contains(&control_name) {
        segment::unlink(&control_name).map_err(|errno| RunError::Remove {
            name: control_name.clone(),
            errno,
        })?;
    }
    Ok(names)
}

/// `forkring clean [NAME] [--dry-run]`.
pub(crate) fn clean(name: Option<&RunName>, dry_run: bool) -> Result<(), RunError> {
    let runs: Vec<RunName> = match name {
        Some(n) => vec![n.clone()],
        None => runs_in_shm()?.into_iter().collect(),
    };
    let mut removed = 0usize;
    let mut refused = Vec::new();
    let mut listed = 0usize;
    for r in &runs {
        if dry_run {
            let verdict = match clean_check(r) {
                Ok(_) => "would remove".to_string(),
                Err(RunError::Live { .. }) => "would keep (live)".to_string(),
                Err(e) => format!("would keep ({e})"),
            };
            for f in segment_files_of(r)? {
                listed += 1;
                println!("{verdict} /dev/shm/{f}");
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
            Err(e) => {
                if name.is_some() {
                    return Err(e);
                }
                if matches!(e, RunError::NotOurs { .. }) {
                    eprintln!("warning: {e}");
                } else {
                    eprintln!("warning: {e}; not cleaning run {r}");
                }
                refused.push(r.to_string());
            }
        }
    }
    let nothing = if dry_run {
        listed == 0
    } else {
        removed == 0 && refused.is_empty()
    };
    if nothing {
        match name {
            Some(n) => println!("run {n} has no segments; nothing to clean"),
            None => println!("no runs in /dev/shm; nothing to clean"),
        }
    }
    Ok(())
}

/// `forkring handoff --run NAME [--out DIR]`.
pub(crate) fn handoff(
    run: &RunName,
    out: Option<&Path>,
    overwrite: bool,
    registry: Registry,
) -> Result<(), RunError> {
    let open = OpenRun::open(run, Access::ReadWrite, registry)?;
    // The lock keeps a supervisor from starting on the run meanwhile; this
    // is not a resume, so nothing in the run changes.
    open.control.lock()?;
    for r in open.roles.iter() {
        if open.control.role_alive(r.slot) {
            return Err(RunError::RoleRunning {
                run: run.clone(),
                role: r.label(),
                pid: open.control.role_view(r.slot).pid,
            });
        }
    }
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| open.settings.out.clone());
    let jobs = open.hosts(Hosts::Open(Access::ReadWrite))?;
    handoff::hand_off_stopped(&open, &jobs, &out, registry, false, overwrite)?;
    Ok(())
}

/// `forkring verify DIR`: every file `summary.json` lists has its recorded
/// size and SHA-256, and each job's files pass the job's own checks.
/// Without a `summary.json`, each job whose files are there is checked.
pub(crate) fn verify(dir: &Path, registry: Registry) -> Result<Vec<String>, RunError> {
    let fail = |d: String| RunError::verify(dir, d);
    let summary_path = dir.join("summary.json");
    let summary: Option<Value> = match std::fs::read_to_string(&summary_path) {
        Ok(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| fail(format!("summary.json: not JSON: {e}")))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail(format!("summary.json: {e}"))),
    };
    let mut lines = Vec::new();
    let jobs: Vec<&'static dyn crate::job::Job> = match &summary {
        Some(s) => {
            let names: Vec<&str> = s["jobs"]
                .as_array()
                .ok_or_else(|| fail("summary.json has no list of jobs".into()))?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let mut jobs = Vec::new();
            for n in names {
                let j = registry
                    .iter()
                    .find(|j| j.name() == n)
                    .ok_or_else(|| fail(format!("summary.json names job {n:?}, unknown here")))?;
                jobs.push(*j);
            }
            jobs
        }
        None => registry
            .iter()
            .copied()
            .filter(|j| j.result_files().iter().any(|f| dir.join(f).exists()))
            .collect(),
    };
    for j in &jobs {
        let section = summary
            .as_ref()
            .and_then(|s| s.get(j.name()))
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(files) = section.get("files").and_then(Value::as_object) {
            for (f, rec) in files {
                let path = dir.join(f);
                let bytes = std::fs::metadata(&path)
                    .map_err(|e| fail(format!("{f}: {e}")))?
                    .len();
                if let Some(want) = rec["bytes"].as_u64()
                    && want != bytes
                {
                    return Err(fail(format!(
                        "{f} is {bytes} bytes, summary.json recorded {want}"
                    )));
                }
                if let Some(want) = rec["sha256"].as_str() {
                    let got = sha256_file(&path).map_err(|e| fail(format!("{f}: {e}")))?;
                    if got != want {
                        return Err(fail(format!(
                            "{f}: SHA-256 {got} differs from summary.json's {want}"
                        )));
                    }
                }
            }
        }
        lines.push(j.verify(dir, &section).map_err(|e| fail(e.to_string()))?);
    }
    if jobs.is_empty() {
        let files: Vec<&str> = registry
            .iter()
            .flat_map(|j| j.result_files().iter().copied())
            .collect();
        return Err(fail(format!(
            "no summary.json, and none of {} to check; give a run's result directory (its --out)",
            files.join(", ")
        )));
    }
    Ok(lines)
}

/// `verify --json`: the result as one JSON object.
pub(crate) fn verify_json(dir: &Path, result: &Result<Vec<String>, RunError>) -> Value {
    let (ok, checks, error) = match result {
        Ok(lines) => (true, lines.clone(), None),
        Err(e) => (false, Vec::new(), Some(e.to_string())),
    };
    json!({
        "schema_version": 1,
        "dir": dir.display().to_string(),
        "ok": ok,
        "checks": checks,
        "error": error,
    })
}
