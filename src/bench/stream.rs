//! `forkring bench stream`: the stream job's throughput against its
//! producer's generation alone and against the same pipeline over a pipe
//! and over a unix socket; and the CPU the job costs at 1 kHz.
//!
//! Every pipeline runs the same code at both ends: the producer's
//! `write_slot` (vector generation and timestamp) and the consumer's
//! `Analyzer` (gap detection, batch and rate statistics, JSON Lines output
//! written to a file). Only the transport differs: the shared-memory ring
//! with the real role processes (which also commit their crash-safe state),
//! or one write(2) and one exact read per vector.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use serde_json::json;

use super::BenchError;
use crate::clock::monotonic_ns;
use crate::settings::RunSettings;
use crate::shm::RunName;
use crate::stream::consumer::Analyzer;
use crate::stream::generate::Generator;
use crate::stream::layout::{self, StreamSegments};
use crate::stream::producer::write_slot;
use crate::stream::state::ConsumerState;
use crate::stream::{Distribution, Rate, StreamFormat, StreamSettings};

use super::minirun::MiniRun;
use super::transport::{
    Mechanism, fd_args, on_stall, pipe, read_exact, report_of, stream_pair, write_all,
};
use super::{
    Launcher, Machine, PeerProcess, Scratch, best_of, install_interrupt_handler, thousands,
};

/// Options of `forkring bench stream`.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Vectors per throughput measurement.
    pub(crate) count: u64,
    /// Seconds of the 1 kHz CPU measurement.
    pub(crate) idle_seconds: f64,
    /// One JSON object per line.
    pub(crate) json: bool,
    /// Measurements per throughput figure; the best is reported.
    pub(crate) repeat: u32,
}

const DIM: u32 = 50;
const SEED: u64 = 0xbe4c;

fn settings(rate: Rate, count: u64) -> StreamSettings {
    StreamSettings {
        dim: DIM,
        distribution: Distribution::Normal,
        rate,
        count: Some(count),
        noise: None,
        batch: 100,
        rate_window: 100,
        rate_interval: 1.0,
        format: StreamFormat::Jsonl,
        ring_slots: 4096,
        seed: SEED,
        export: None,
    }
}

/// Seconds for the producer's generation alone (no transport) of `count`
/// vectors.
pub(crate) fn generation(count: u64) -> f64 {
    let g = Generator::new(&settings(Rate::Max, count));
    let mut slot = vec![0u64; settings(Rate::Max, count).slot_size() as usize / 8];
    let start = Instant::now();
    for seq in 0..count {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut slot);
        // Cannot fail: the buffer is u64-aligned.
        let _ = write_slot(bytes, seq, monotonic_ns(), 0, &g);
        std::hint::black_box(&slot);
    }
    start.elapsed().as_secs_f64()
}

/// Runs the stream job (real producer and consumer, ring in shared memory)
/// for `s.count` vectors; returns (seconds from start to both exits, CPU
/// seconds of the two roles as they measured it themselves, start-up
/// included).
fn ring_job(s: &StreamSettings, tag: &str) -> Result<(f64, f64), BenchError> {
    let scratch = Scratch::new(tag)?;
    let run = RunName::new(&format!("bench-{}-{tag}", std::process::id())).expect("valid run name");
    let rs = RunSettings {
        out: scratch.0.clone(),
        jobs: vec![Box::new(s.clone())],
    };
    let mini = MiniRun::create(run, &rs, &layout::PARTS)?;
    let segs = StreamSegments::create(mini.run(), s)?;
    let start = Instant::now();
    mini.run_roles(&mini.roles(), Duration::from_secs(600), || {})?;
    let secs = start.elapsed().as_secs_f64();
    let sc = segs.control()?;
    let cpu = (sc.stats.producer_cpu_ns.get() + sc.stats.consumer_cpu_ns.get()) as f64 / 1e9;
    let p = segs.producer_record()?;
    let rec = segs.consumer_record()?;
    let mut w = vec![0u64; ConsumerState::words(s.dim, s.rate_window, s.batch)];
    rec.load(&mut w)
        .map_err(|e| segs.corrupt(format!("field consumer state: {e}")))?;
    let st = ConsumerState::decode(&w, s.dim, s.rate_window, s.batch)
        .map_err(|e| BenchError::Job(crate::job::JobError::corrupt("stream", e.to_string())))?;
    let want = s.count.unwrap_or(0);
    if p.next_seq != want || st.received != want || !st.finished || st.duplicates != 0 {
        return Err(BenchError::failed(format!(
            "ring pipeline lost or duplicated vectors: produced {}, received {}, duplicates {}",
            p.next_seq, st.received, st.duplicates
        )));
    }
    Ok((secs, cpu))
}

/// The floor of a 1 kHz wake-up on this machine: CPU percent of one core
/// used by a thread that does nothing but sleep to absolute 1 ms deadlines
/// for `seconds` (the producer at 1000 Hz must wake that often).
pub(crate) fn sleeper_floor(seconds: f64) -> f64 {
    std::thread::spawn(move || {
        let n = (seconds * 1000.0).round().max(1.0) as u64;
        let cpu0 = crate::clock::thread_cpu_ns();
        let t0 = monotonic_ns();
        for k in 1..=n {
            crate::clock::sleep_until_ns(t0 + k * 1_000_000);
        }
        let wall = (monotonic_ns() - t0) as f64;
        100.0 * (crate::clock::thread_cpu_ns() - cpu0) as f64 / wall
    })
    .join()
    .unwrap_or(f64::NAN)
}

/// The producer side over a pipe or socket: `count` vectors of `dim`
/// values, one write(2) each (run by `bench-peer`).
pub(crate) fn produce_vectors(
    fd: BorrowedFd<'_>,
    count: u64,
    dim: u32,
    seed: u64,
) -> Result<(), BenchError> {
    let mut s = settings(Rate::Max, count);
    s.dim = dim;
    s.seed = seed;
    let g = Generator::new(&s);
    let mut slot = vec![0u64; s.slot_size() as usize / 8];
    for seq in 0..count {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut slot);
        write_slot(bytes, seq, monotonic_ns(), 0, &g)?;
        write_all(fd, bytes).map_err(|_| BenchError::failed("the bench parent closed its end"))?;
    }
    Ok(())
}

/// The same pipeline over a pipe or a unix socket: a `bench-peer` produces,
/// this process consumes with the `Analyzer` and writes the output file.
fn fd_pipeline(mechanism: Mechanism, count: u64) -> Result<f64, BenchError> {
    let scratch = Scratch::new(mechanism.id())?;
    let (ours, theirs) = if mechanism == Mechanism::PipeStream {
        pipe()?
    } else {
        stream_pair()?
    };
    let mut args = vec![
        mechanism.id().to_string(),
        "--count".into(),
        count.to_string(),
    ];
    args.extend(fd_args(&[&theirs]));
    args.extend([
        "--vectors".into(),
        DIM.to_string(),
        "--seed".into(),
        SEED.to_string(),
    ]);
    let start = Instant::now();
    let mut peer = PeerProcess::spawn(
        &Launcher::this_executable(),
        mechanism.id(),
        &args,
        &[theirs.as_fd()],
        None,
    )?;
    drop(theirs);
    let s = settings(Rate::Max, count);
    let mut an = Analyzer::new(s.clone(), ConsumerState::new(DIM, s.rate_window, s.batch));
    let path = scratch.0.join("stream.jsonl");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&path)
            .map_err(|e| BenchError::failed(format!("{}: {e}", path.display())))?,
    );
    let mut slot = vec![0u8; s.slot_size() as usize];
    for _ in 0..count {
        let mut idles = 0;
        loop {
            match read_exact(ours.as_fd(), &mut slot) {
                Ok(()) => break,
                Err(st) => on_stall(&mut peer, st, &mut idles)?,
            }
        }
        an.on_slot(&slot);
        if an.has_output() {
            out.write_all(&an.take_output())
                .map_err(|e| BenchError::failed(format!("{}: {e}", path.display())))?;
        }
    }
    an.finish_at(count);
    out.write_all(&an.take_output())
        .and_then(|()| out.flush())
        .map_err(|e| BenchError::failed(format!("{}: {e}", path.display())))?;
    let secs = start.elapsed().as_secs_f64();
    report_of(peer)?;
    let st = an.state();
    if st.received != count || st.duplicates != 0 || st.filled != 0 {
        return Err(BenchError::failed(format!(
            "{} pipeline: received {} of {count} vectors",
            mechanism.name(),
            st.received
        )));
    }
    Ok(secs)
}

/// `forkring bench stream`.
pub(crate) fn run(opts: &Options) -> Result<(), BenchError> {
    install_interrupt_handler()?;
    let machine = Machine::detect();
    let n = opts.count;
    if !opts.json {
        println!(
            "forkring bench stream: {DIM}-value normal vectors, generate -> transport -> analytics"
        );
        println!("machine: {}", machine.describe());
        println!(
            "{} vectors per measurement; {}\n",
            thousands(n),
            super::runs_note(opts.repeat)
        );
    }
    let r = opts.repeat;
    let gen_rate = n as f64 / best_of(r, || Ok::<_, BenchError>(generation(n)))?;
    let ring_rate =
        n as f64 / best_of(r, || ring_job(&settings(Rate::Max, n), "ring").map(|x| x.0))?;
    let pipe_rate = n as f64 / best_of(r, || fd_pipeline(Mechanism::PipeStream, n))?;
    let sock_rate = n as f64 / best_of(r, || fd_pipeline(Mechanism::SocketStream, n))?;
    let idle_count = (opts.idle_seconds * 1000.0).round().max(1.0) as u64;
    let floor_pct = sleeper_floor(opts.idle_seconds);
    let (idle_s, idle_cpu) = ring_job(&settings(Rate::Hz(1000.0), idle_count), "1khz")?;
    let idle_pct = 100.0 * idle_cpu / idle_s;

    let rows = [
        ("generation alone", gen_rate),
        ("ring (the job)", ring_rate),
        ("pipe", pipe_rate),
        ("unix socket", sock_rate),
    ];
    if opts.json {
        for (name, r) in rows {
            println!(
                "{}",
                json!({"bench": "stream", "mechanism": name, "vectors_per_s": r,
                       "of_generation": r / gen_rate, "ratio_to_pipe": r / pipe_rate,
                       "count": n, "cpu": machine.cpu, "cpus": machine.cpus})
            );
        }
        println!(
            "{}",
            json!({"bench": "stream", "mechanism": "ring at 1000 Hz", "seconds": idle_s,
                   "cpu_seconds": idle_cpu, "cpu_percent_of_one_core": idle_pct, "count": idle_count,
                   "empty_1khz_sleeper_percent": floor_pct})
        );
        return Ok(());
    }
    println!(
        "{:<18} {:>16} {:>14} {:>9}",
        "pipeline", "vectors/s", "of generation", "vs pipe"
    );
    for (name, r) in rows {
        println!(
            "{:<18} {:>14.2} M {:>13.1}% {:>8.2}x",
            name,
            r / 1e6,
            100.0 * r / gen_rate,
            r / pipe_rate
        );
    }
    println!(
        "\nat 1000 Hz: producer + consumer used {:.3} s of CPU in {:.2} s = {:.2}% of one core",
        idle_cpu, idle_s, idle_pct
    );
    println!(
        "floor: a thread that only sleeps to 1 ms deadlines uses {floor_pct:.2}% of one core here \
         (the producer must wake that often); ratio {:.2}x the floor",
        idle_pct / floor_pct
    );
    println!(
        "targets: ring >= 90% of generation alone ({}), <= 1% of a core at 1000 Hz ({})",
        if ring_rate >= 0.9 * gen_rate {
            "met"
        } else {
            "target not reached"
        },
        if idle_pct <= 1.0 {
            "met"
        } else {
            "target not reached"
        }
    );
    Ok(())
}
