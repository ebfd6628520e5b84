//! What the supervisor shows while a run works: a live display on a
//! terminal (indicatif), plain log lines otherwise, nothing with `--quiet`.
//! Counters are sampled from shared memory a few times a second; the hot
//! loops of the roles never do anything for the display.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::job::{Counter, CounterValue, Progress};
use crate::units::{short, thousands};

/// Default time between log lines (and rate samples); a job's
/// `log_interval` (the stream's `--rate-interval`) replaces it.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How progress is shown.
#[derive(Debug)]
enum Mode {
    /// Live bars on a terminal: one per job, then a status line.
    Bars {
        multi: MultiProgress,
        /// Per job: a bar if its main counter has a total, else a line.
        jobs: Vec<(ProgressBar, bool)>,
        status: ProgressBar,
    },
    /// A log line every `interval`.
    Lines,
    /// Nothing but the final summary and warnings.
    Quiet,
}

/// The progress display.
#[derive(Debug)]
pub(crate) struct Display {
    mode: Mode,
    started: Instant,
    last_line: Instant,
    /// When the main counters were last sampled, and their values.
    last_sample: Option<(Instant, Vec<u64>)>,
    rates: Vec<Option<f64>>,
    /// Time between log lines and rate samples.
    interval: Duration,
}

fn counter_text(c: &Counter) -> String {
    match c.value {
        CounterValue::Count(n) => format!("{} {}", c.name, thousands(n)),
        CounterValue::Figure(Some(x)) => format!("{} {x:.1} {}", c.name, c.unit),
        CounterValue::Figure(None) => format!("{} -", c.name),
    }
}

/// One-line description of a job's progress (log lines, systemd's
/// `STATUS=`, `forkring status`), from its counters alone. `per_s` is the
/// recent rate of the main counter.
pub(crate) fn describe(p: &Progress, per_s: Option<f64>) -> String {
    let mut parts = Vec::new();
    if let Some(main) = p.counters.first() {
        let v = main.as_count();
        let mut s = match main.total {
            Some(total) => {
                let pct = if total > 0 {
                    100.0 * v as f64 / total as f64
                } else {
                    100.0
                };
                format!(
                    "{} {}/{} {} ({pct:.1}%)",
                    p.job,
                    thousands(v),
                    thousands(total),
                    main.name
                )
            }
            None => format!("{} {}", p.job, counter_text(main)),
        };
        if let Some(r) = per_s {
            s += &format!(", {} {}/s", short(r), main.unit);
            if let Some(total) = main.total
                && r > 0.0
                && v < total
            {
                s += &format!(", ETA {:.1} s", (total - v) as f64 / r);
            }
        }
        parts.push(s);
    } else {
        parts.push(p.job.clone());
    }
    parts.extend(p.counters.iter().skip(1).map(counter_text));
    parts.join(", ")
}

impl Display {
    /// Chooses the mode: quiet, bars when stderr is a terminal, else lines
    /// on stderr. Never stdout: it carries the results only (the summary
    /// line or `--json`), whether or not it is a terminal.
    pub(crate) fn new(quiet: bool, jobs: &[Progress], interval: Duration) -> Display {
        let now = Instant::now();
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let bars = jobs
                .iter()
                .map(|p| {
                    let main = p.counters.first();
                    match main.and_then(|c| c.total) {
                        Some(total) => {
                            let b = multi.add(ProgressBar::new(total));

                            b.set_style(
                                // 44 columns of bar, then a message cut
                                // to the terminal's width at each redraw.
                                ProgressStyle::with_template(&format!(
                                    "{:<6} [{{bar:20.cyan/blue}}] {{percent:>3}}% ETA {{eta:<4}} {{wide_msg}}",
                                    p.job
                                ))
                                .expect("valid template")
                                .progress_chars("=> "),
                            );
                            (b, true)
                        }
                        None => {
                            let b = multi.add(ProgressBar::new_spinner());
                            b.set_style(
                                ProgressStyle::with_template("{wide_msg}")
                                    .expect("valid template"),
                            );
                            (b, false)
                        }
                    }
                })
                .collect();
            let status = multi.add(ProgressBar::new_spinner());
            status.set_style(ProgressStyle::with_template("{wide_msg}").expect("valid template"));
            Mode::Bars {
                multi,
                jobs: bars,
                status,
            }
        } else {
            Mode::Lines
        };
        Display {
            mode,
            started: now,
            last_line: now,
            last_sample: Some((now, jobs.iter().map(Progress::main).collect())),
            rates: Vec::new(),
            interval,
        }
    }

    /// Prints a log line (above the bars on a terminal); nothing when quiet.
    pub(crate) fn log(&self, msg: &str) {
        let line = format!("[{:>7.1}s] {msg}", self.started.elapsed().as_secs_f64());
        match &self.mode {
            Mode::Quiet => {}
            Mode::Bars { multi, .. } => {
                let _ = multi.println(line);
            }
            // stdout carries results only (the summary line or JSON).
            Mode::Lines => eprintln!("{line}"),
        }
    }

    /// Prints a line a role wrote on its stderr, as it is (always, even
    /// when quiet: roles print errors and warnings only).
    pub(crate) fn passthrough(&self, line: &str) {
        match &self.mode {
            Mode::Bars { multi, .. } => multi.suspend(|| eprintln!("{line}")),
            _ => eprintln!("{line}"),
        }
    }

    /// Prints a warning (always, even when quiet) on stderr.
    pub(crate) fn warn(&self, msg: &str) {
        match &self.mode {
            Mode::Bars { multi, .. } => {
                multi.suspend(|| eprintln!("warning: {msg}"));
            }
            _ => eprintln!("warning: {msg}"),
        }
    }

    /// Updates the display with fresh samples. Rates are computed over
    /// `interval`, which is also how often a log line is printed.
    pub(crate) fn update(&mut self, progress: &[Progress], restarts: u64, status: &str) {
        let now = Instant::now();
        let due = now.duration_since(self.last_line) >= self.interval;
        if due {
            let mains: Vec<u64> = progress.iter().map(Progress::main).collect();
            self.rates = match &self.last_sample {
                Some((t, prev)) if prev.len() == mains.len() => {
                    let dt = now.duration_since(*t).as_secs_f64();
                    mains
                        .iter()
                        .zip(prev)
                        .map(|(p, q)| (dt > 0.0).then(|| p.saturating_sub(*q) as f64 / dt))
                        .collect()
                }
                _ => vec![None; mains.len()],
            };
            self.last_sample = Some((now, mains));
            self.last_line = now;
        }
        match &self.mode {
            Mode::Quiet => {}
            Mode::Bars {
                jobs, status: sbar, ..
            } => {
                for (i, (p, (bar, is_bar))) in progress.iter().zip(jobs).enumerate() {
                    if *is_bar {
                        bar.set_position(p.main());
                        let main = &p.counters[0];
                        let mut parts = vec![format!(
                            "{}/{} {}",
                            thousands(p.main()),
                            thousands(main.total.unwrap_or(0)),
                            main.unit
                        )];
                        if let Some(r) = self.rates.get(i).copied().flatten() {
                            parts.push(format!("{}/s", short(r)));
                        }
                        parts.extend(p.counters.iter().skip(1).map(counter_text));
                        bar.set_message(parts.join(", "));
                    } else {
                        bar.set_message(describe(p, self.rates.get(i).copied().flatten()));
                    }
                }
                sbar.set_message(format!(
                    "{status}, {}",
                    crate::units::plural(restarts, "restart", "restarts")
                ));
            }
            Mode::Lines => {
                if due {
                    self.log(&self.line(progress, restarts));
                }
            }
        }
    }

    /// Every job's progress with the rates of the last `interval`, and
    /// the restart count, on one line: a log line, and systemd's `STATUS=`.
    pub(crate) fn line(&self, progress: &[Progress], restarts: u64) -> String {
        let parts: Vec<String> = progress
            .iter()
            .enumerate()
            .map(|(i, p)| describe(p, self.rates.get(i).copied().flatten()))
            .collect();
        format!(
            "{} | {}",
            parts.join(" | "),
            crate::units::plural(restarts, "restart", "restarts")
        )
    }

    /// Removes the live display; later log lines are plain lines on
    /// stderr. Called as soon as the run stops (a Ctrl-C's `^C` echo would
    /// otherwise leave a cut-off bar on screen) and when it ends.
    pub(crate) fn finish(&mut self) {
        if let Mode::Bars {
            multi,
            jobs,
            status,
        } = &self.mode
        {
            for (b, _) in jobs {
                b.finish_and_clear();
            }
            status.finish_and_clear();
            let _ = multi.clear();
            // Start below whatever the terminal echoed (`^C`).
            eprintln!();
            self.mode = Mode::Lines;
        }
    }
}
