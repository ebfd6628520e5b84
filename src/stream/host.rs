//! The stream job as the supervisor sees it: progress and the final handoff.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde_json::json;

use crate::job::{Counter, HandoffCtx, Job, JobError, JobHost, Progress};
use crate::outfile::{OutputError, sha256_file, sync_dir, write_atomic};
use crate::shm::{Access, RunName};

use super::StreamSettings;
use super::consumer::{Consumer, final_name};
use super::export::ExportFigures;
use super::layout::{StreamSegmentError, StreamSegments};
use super::output::PARTIAL_NAME;
use super::output::WindowFigures;
use super::state::{ConsumerState, WindowStats};

/// The stream job's segments, held by the supervisor.
#[derive(Debug)]
pub(crate) struct StreamHost {
    segs: StreamSegments,
    /// Directory holding the consumer's working file.
    out: std::path::PathBuf,
    /// The consumer's working file, held open by the supervisor (`None` for
    /// a read-only look): the records the consumer committed to it survive
    /// the removal of the output directory, and are put back from here
    /// (see [`StreamHost::restore_working`]).
    working: RefCell<Option<File>>,
}

impl StreamHost {
    /// Creates the segments of a new run.
    pub(crate) fn create(run: &RunName, s: &StreamSettings, out: &Path) -> Result<Self, JobError> {
        if let Some(x) = &s.export {
            // Before anything exists: a bad server fails the run here.
            super::export::preflight(x)?;
        }
        // A working file left by an earlier run of the same name belongs to
        // state that no longer exists.
        let path = out.join(PARTIAL_NAME);
        let _ = std::fs::remove_file(&path);
        let segs = StreamSegments::create(run, s)?;
        let working = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(|err| OutputError {
                op: "create",
                path: path.display().to_string(),
                err,
            })?;
        Ok(StreamHost {
            segs,
            out: out.to_path_buf(),
            working: RefCell::new(Some(working)),
        })
    }
    /// Opens the segments of an existing run.
    pub(crate) fn open(
        run: &RunName,
        s: &StreamSettings,
        out: &Path,
        access: Access,
    ) -> Result<Self, StreamSegmentError> {
        // A resumed run's file as it is (gone if the output directory went
        // while no supervisor held it: the consumer says what was lost).
        let working = if access.writable() {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(out.join(PARTIAL_NAME))
                .ok()
        } else {
            None
        };
        Ok(StreamHost {
            segs: StreamSegments::open(run, s, access)?,
            out: out.to_path_buf(),
            working: RefCell::new(working),
        })
    }

    /// Puts the working file back where the consumer opens it if it is
    /// gone or replaced there (the output directory was removed): its
    /// content is copied out of the descriptor held since the run began.
    /// Called while no consumer runs (after one exited, and at the
    /// handoff), so the held file is the one the consumer last wrote.
    fn restore_working(&self) -> Result<(), OutputError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.out.join(PARTIAL_NAME);
        let restored = {
            let held = self.working.borrow();
            let Some(f) = held.as_ref() else {
                return Ok(());
            };
            let same = match (std::fs::metadata(&path), f.metadata()) {
                (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
                _ => false,
            };
            if same {
                return Ok(());
            }
            std::fs::create_dir_all(&self.out).map_err(|err| OutputError {
                op: "create directory",
                path: self.out.display().to_string(),
                err,
            })?;
            write_atomic(&path, |w| {
                let mut r: &File = f;
                r.seek(SeekFrom::Start(0))?;
                std::io::copy(&mut r, w).map(|_| ())
            })?
        };
        *self.working.borrow_mut() = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&restored.path)
            .ok();
        Ok(())
    }

    fn consumer_state(&self) -> Option<ConsumerState> {
        let s = self.segs.settings();
        let rec = self.segs.consumer_record().ok()?;
        let mut w = vec![0u64; ConsumerState::words(s.dim, s.rate_window, s.batch)];
        if rec.snapshot(&mut w) != Ok(true) {
            return None;
        }
        ConsumerState::decode(&w, s.dim, s.rate_window, s.batch).ok()
    }

    /// The export's figures (with `--export`); `total` is every vector
    /// the consumer has seen. A torn read shows as all zero.
    fn export_figures(&self, total: u64) -> Option<ExportFigures> {
        let e = self.segs.export()?;
        Some(e.figures(total).unwrap_or_default())
    }
}

/// The stream's end, when it has one (`--count`), as the main counter's
/// total.
fn s_count(h: &StreamHost) -> Option<u64> {
    h.segs.settings().count
}

impl JobHost for StreamHost {
    fn job(&self) -> &'static dyn Job {
        &super::JOB
    }
    fn kick(&self) {
        if let Ok(v) = self.segs.ring_view() {
            v.control().kick();
        }
        if let Some(e) = self.segs.export() {
            e.kick();
        }
    }
    fn request_finish(&self) {
        if let Ok(c) = self.segs.control() {
            if !c.finish.is_set() {
                c.finish.set();
            }
        }
        self.kick();
    }
    fn is_complete(&self) -> bool {
        self.consumer_state().is_some_and(|s| s.finished)
            && self.export_figures(0).is_none_or(|f| f.finished)
    }
    fn prepare_resume(&self) {
        // A finish requested of the dead supervisor's roles is requested
        // again by this supervisor if it still holds (image complete,
        // --duration reached).
        if let Ok(c) = self.segs.control() {
            c.finish.clear();
        }
    }
    fn role_exited(&self, role: &crate::job::RoleId, _failed: bool, _stopping: bool) {
        // The next consumer opens the working file by name.
        if role.kind == "consumer" {
            let _ = self.restore_working();
        }
    }
    fn handoff_done(&self) {
        let _ = std::fs::remove_file(self.out.join(PARTIAL_NAME));
    }
    fn progress(&self) -> Progress {
        let p = self
            .segs
            .control()
            .ok()
            .and_then(|c| c.producer.snapshot().ok().flatten())
            .unwrap_or_default();
        let c = self.consumer_state();
        let of = |f: fn(&ConsumerState) -> u64| c.as_ref().map_or(0, f);
        let w = c.as_ref().map_or(WindowStats::UNKNOWN, |c| c.published);
        let total = of(|c| c.received.saturating_add(c.filled));
        Progress {
            job: "stream".into(),
            counters: vec![
                Counter::count("received", of(|c| c.received), "vectors", s_count(self)),
                Counter::count("produced", p.next_seq, "vectors", None),
                Counter::count("dropped", p.dropped, "vectors", None),
                Counter::count("filled", of(|c| c.filled), "vectors", None),
                Counter::count("batches", of(|c| c.batches), "batches", None),
                Counter::figure("rate", w.rate_hz, "Hz"),
                Counter::figure("interval_std", w.interval_std_us, "µs"),
                Counter::figure("lateness_p99", w.lateness_p99_us, "µs"),
                Counter::figure("lateness_max", w.lateness_max_us, "µs"),
            ]
            .into_iter()
            .chain(self.export_figures(total).into_iter().flat_map(|f| {
                [
                    Counter::count("exported", f.exported, "vectors", None),
                    Counter::count("export_dropped", f.dropped, "vectors", None),
                    Counter::count("export_pending", f.pending, "vectors", None),
                    Counter::count("nats_connected", f.connected as u64, "link", None),
                ]
            }))
            .collect(),
        }
    }
    fn handoff(&self, out: &Path, ctx: &HandoffCtx<'_>) -> Result<serde_json::Value, JobError> {
        let s = self.segs.settings();
        let sc = self.segs.control()?;
        // Every role has exited. If the producer did not get to commit its
        // end (killed at the stop timeout), its committed record is the end.
        let mut p = self.segs.producer_record()?;
        if p.finished != 1 {
            p.finished = 1;
            sc.producer.commit(p);
        }
        // A producer killed between committing its record and publishing
        // the ring head committed slots the consumer cannot see yet: publish
        // them, as a restarted producer would.
        crate::shm::ring::RingProducer::resume_at(self.segs.ring_view()?, p.head)?;
        // Likewise finish the consumer's work from its committed state: drain
        // what is left in the ring, fill the end, write the last batch. Its
        // working file first goes back where it belongs if it went.
        self.restore_working()?;
        let mut c = Consumer::attach(&self.segs, &self.out)?;
        while c.process_available(super::consumer::CHUNK)? > 0 {}
        if !c.state().finished {
            c.finish_at(p)?;
        }
        let st = c.state().clone();
        let working = c.path().to_path_buf();
        drop(c);
        let name = final_name(s.format);
        (ctx.note)(&format!("writing {name}"));
        let dest = out.join(name);
        // Publish the working file under its final name without giving it
        // up: it stays until summary.json is written (`handoff_done`), so a
        // failed handoff can be retried. Same directory: a hard link, then
        // an atomic rename; elsewhere: an atomic copy.
        let tmp = out.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let written = if std::fs::hard_link(&working, &tmp).is_ok() {
            std::fs::rename(&tmp, &dest).map_err(|err| {
                let _ = std::fs::remove_file(&tmp);
                OutputError {
                    op: "rename into place",
                    path: dest.display().to_string(),
                    err,
                }
            })?;
            sync_dir(out)?;
            // A handoff that cannot checksum its own output fails (and can
            // be retried): summary.json never records an empty checksum.
            let bytes = std::fs::metadata(&dest)
                .map_err(|err| OutputError {
                    op: "read the size of",
                    path: dest.display().to_string(),
                    err,
                })?
                .len();
            let sha = sha256_file(&dest).map_err(|err| OutputError {
                op: "checksum",
                path: dest.display().to_string(),
                err,
            })?;
            (bytes, sha)
        } else {
            let w = write_atomic(&dest, |w| {
                let mut f = std::fs::File::open(&working)?;
                std::io::copy(&mut f, w).map(|_| ())
            })?;
            (w.bytes, w.sha256)
        };
        let conserved = p.next_seq == st.received + p.dropped && st.duplicates == 0;
        let w = WindowFigures::from(st.window_stats());
        Ok(json!({
            "produced": p.next_seq,
            "dropped": p.dropped,
            "drop_events": p.drop_events,
            "received": st.received,
            "filled": st.filled,
            "duplicates": st.duplicates,
            "gaps": st.gaps,
            "batches": st.batches,
            "window_vectors": w.window_vectors,
            "rate_hz": w.rate_hz,
            "interval_std_us": w.interval_std_us,
            "lateness_max_us": w.lateness_max_us,
            "lateness_p99_us": w.lateness_p99_us,
            "seconds": ctx.seconds,
            "vectors_per_second": if ctx.seconds > 0.0 { st.received as f64 / ctx.seconds } else { 0.0 },
            "conservation_ok": conserved,
            "cpu_seconds": {
                "producer": sc.stats.producer_cpu_ns.get() as f64 / 1e9,
                "consumer": sc.stats.consumer_cpu_ns.get() as f64 / 1e9,
            },
            "files": { name: { "bytes": written.0, "sha256": written.1 } },
            "export": s.export.as_ref().map(|x| {
                self.export_figures(st.received.saturating_add(st.filled))
                    .unwrap_or_default()
                    .to_json(x)
            }),
        }))
    }
    fn segment_names(&self) -> Vec<String> {
        self.segs.names().iter().map(|s| s.to_string()).collect()
    }
}
