//! What the supervisor shows while a run works: a live display on a
//! terminal (indicatif), plain log lines otherwise, nothing with `--quiet`.
//! Counters are sampled from shared memory a few times a second; the hot
//! loops of the roles never do anything for the display.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::job::Progress;

/// Default time between log lines (and rate samples); a stream job's
/// `--rate-interval` replaces it.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How progress is shown.
#[derive(Debug)]
enum Mode {
    /// Live bars on a terminal.
    Bars {
        multi: MultiProgress,
        image: Option<ProgressBar>,
        stream: Option<ProgressBar>,
        status: ProgressBar,
    },
    /// A log line every `interval`.
    Lines,
    /// Nothing but the final summary and warnings.
    Quiet,
}

/// The progress display.
#[derive(Debug)]
pub struct Display {
    mode: Mode,
    started: Instant,
    last_line: Instant,
    last_sample: Option<(Instant, Vec<Progress>)>,
    rates: Vec<Option<f64>>,
    /// Log lines go to stderr instead of stdout (stdout carries JSON).
    log_to_stderr: bool,
    /// Time between log lines and rate samples.
    interval: Duration,
}

fn human(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// One-line description of a job's progress (used by log lines and
/// `forkring status`). `per_s` is the recent rate of the main counter.
pub fn describe(p: &Progress, per_s: Option<f64>) -> String {
    match p {
        Progress::Image {
            iteration, total, ..
        } => {
            let pct = if *total > 0 {
                100.0 * *iteration as f64 / *total as f64
            } else {
                100.0
            };
            let mut s = format!("image {iteration}/{total} iterations ({pct:.1}%)");
            if let Some(r) = per_s {
                s += &format!(", {} it/s", human(r));
                if r > 0.0 && iteration < total {
                    s += &format!(", ETA {:.1}s", (*total - *iteration) as f64 / r);
                }
            }
            s
        }
        Progress::Stream {
            produced,
            received,
            dropped,
            extrapolated,
            rate_mean,
            rate_std,
            ..
        } => {
            let mut s = format!(
                "stream {received} received of {produced} produced, {dropped} dropped, {extrapolated} filled"
            );
            if let Some(r) = per_s {
                s += &format!(", {} vectors/s", human(r));
            }
            if let (Some(m), Some(sd)) = (rate_mean, rate_std) {
                s += &format!(", rate {m:.1} ± {sd:.1} Hz");
            }
            s
        }
    }
}

fn main_counter(p: &Progress) -> u64 {
    match p {
        Progress::Image { iteration, .. } => *iteration,
        Progress::Stream { received, .. } => *received,
    }
}

impl Display {
    /// Chooses the mode: quiet, bars when stdout is a terminal, else lines.
    pub fn new(quiet: bool, json: bool, jobs: &[Progress], interval: Duration) -> Display {
        let now = Instant::now();
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stdout().is_terminal() && !json {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(10));
            let mut image = None;
            let mut stream = None;
            for p in jobs {
                match p {
                    Progress::Image { total, .. } => {
                        let b = multi.add(ProgressBar::new(*total));
                        b.set_style(
                            ProgressStyle::with_template(
                                "image  [{bar:32.cyan/blue}] {percent:>3}% {human_pos}/{human_len} it  {rate} it/s  ETA {eta}",
                            )
                            .expect("valid template")
                            .with_key(
                                "rate",
                                |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                                    let _ = w.write_str(&human(st.per_sec()));
                                },
                            )
                            .progress_chars("=> "),
                        );
                        image = Some(b);
                    }
                    Progress::Stream { .. } => {
                        let b = multi.add(ProgressBar::new_spinner());
                        b.set_style(
                            ProgressStyle::with_template("stream {msg}").expect("valid template"),
                        );
                        stream = Some(b);
                    }
                }
            }
            let status = multi.add(ProgressBar::new_spinner());
            status.set_style(ProgressStyle::with_template("{msg}").expect("valid template"));
            Mode::Bars {
                multi,
                image,
                stream,
                status,
            }
        } else {
            Mode::Lines
        };
        Display {
            mode,
            started: now,
            last_line: now,
            last_sample: Some((now, jobs.to_vec())),
            rates: Vec::new(),
            log_to_stderr: json,
            interval,
        }
    }

    /// Prints a log line (above the bars on a terminal); nothing when quiet.
    pub fn log(&self, msg: &str) {
        let line = format!("[{:>7.1}s] {msg}", self.started.elapsed().as_secs_f64());
        match &self.mode {
            Mode::Quiet => {}
            Mode::Bars { multi, .. } => {
                let _ = multi.println(line);
            }
            _ if self.log_to_stderr => eprintln!("{line}"),
            _ => println!("{line}"),
        }
    }

    /// Prints a warning (always, even when quiet) on stderr.
    pub fn warn(&self, msg: &str) {
        match &self.mode {
            Mode::Bars { multi, .. } => {
                multi.suspend(|| eprintln!("forkring: warning: {msg}"));
            }
            _ => eprintln!("forkring: warning: {msg}"),
        }
    }

    /// Updates the display with fresh samples. Rates are computed over
    /// `interval`, which is also how often a log line is printed.
    pub fn update(&mut self, progress: &[Progress], restarts: u64, status: &str) {
        let now = Instant::now();
        let due = now.duration_since(self.last_line) >= self.interval;
        if due {
            self.rates = match &self.last_sample {
                Some((t, prev)) if prev.len() == progress.len() => {
                    let dt = now.duration_since(*t).as_secs_f64();
                    progress
                        .iter()
                        .zip(prev)
                        .map(|(p, q)| {
                            (dt > 0.0).then(|| {
                                main_counter(p).saturating_sub(main_counter(q)) as f64 / dt
                            })
                        })
                        .collect()
                }
                _ => vec![None; progress.len()],
            };
            self.last_sample = Some((now, progress.to_vec()));
            self.last_line = now;
        }
        let rate = |i: usize| self.rates.get(i).copied().flatten();
        match &self.mode {
            Mode::Quiet => {}
            Mode::Bars {
                image,
                stream,
                status: sbar,
                ..
            } => {
                for (i, p) in progress.iter().enumerate() {
                    match p {
                        Progress::Image { iteration, .. } => {
                            if let Some(b) = image {
                                b.set_position(*iteration);
                            }
                        }
                        Progress::Stream { .. } => {
                            if let Some(b) = stream {
                                let d = describe(p, rate(i));
                                b.set_message(d.trim_start_matches("stream ").to_string());
                            }
                        }
                    }
                }
                sbar.set_message(format!("{status}, restarts {restarts}"));
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
    pub fn line(&self, progress: &[Progress], restarts: u64) -> String {
        let parts: Vec<String> = progress
            .iter()
            .enumerate()
            .map(|(i, p)| describe(p, self.rates.get(i).copied().flatten()))
            .collect();
        format!("{} | restarts {restarts}", parts.join(" | "))
    }

    /// Removes the live display.
    pub fn finish(&mut self) {
        if let Mode::Bars {
            image,
            stream,
            status,
            ..
        } = &self.mode
        {
            for b in [image.as_ref(), stream.as_ref(), Some(status)]
                .into_iter()
                .flatten()
            {
                b.finish_and_clear();
            }
        }
    }
}
