//! Recovery from states that a SIGKILL at a precise instruction leaves
//! behind, built with the library's own code (a real kill lands there too
//! rarely to test reliably), then handed off or resumed by the real code.

mod common;

use std::time::Duration;

use common::*;
use forkring::control::{Control, RunPhase};
use forkring::image::ImageSettings;
use forkring::image::layout::ImageSegments;
use forkring::image::step::Stepper;
use forkring::job::JobSettings;
use forkring::settings::RunSettings;
use forkring::shm::ring::RingProducer;
use forkring::shm::turn::Party;
use forkring::shm::{Access, RunName};
use forkring::stream::generate::Generator;
use forkring::stream::layout::StreamSegments;
use forkring::stream::producer::write_slot;
use forkring::stream::{Distribution, Rate, StreamFormat, StreamSettings};
use forkring::supervisor::opened::OpenRun;

fn stream_settings() -> StreamSettings {
    StreamSettings {
        dim: 4,
        distribution: Distribution::Normal,
        rate: Rate::Max,
        count: Some(40),
        noise: None,
        batch: 10,
        rate_window: 10,
        rate_interval: 1.0,
        format: StreamFormat::Jsonl,
        ring_slots: 64,
        seed: 3,
        export: None,
    }
}

/// A run with these jobs made through the library, as the supervisor
/// makes one (no process attached).
fn make_run(
    sc: &Scene,
    image: Option<&ImageSettings>,
    stream: Option<&StreamSettings>,
) -> (RunName, OpenRun) {
    let run = RunName::new(&sc.name).unwrap();
    let mut jobs: Vec<Box<dyn JobSettings>> = Vec::new();
    if let Some(i) = image {
        jobs.push(Box::new(i.clone()));
    }
    if let Some(s) = stream {
        jobs.push(Box::new(s.clone()));
    }
    let settings = RunSettings {
        out: sc.dir.path().to_path_buf(),
        jobs,
    };
    (run.clone(), OpenRun::create(&run, &settings).unwrap())
}

fn handoff(sc: &Scene) -> std::process::Output {
    forkring(&["handoff", "--run", &sc.name])
}

/// The producer committed its second chunk but was killed before
/// publishing the ring head; nobody restarted it. The handoff must publish
/// and count those vectors, not invent them.
#[test]
fn stream_handoff_publishes_committed_slots() {
    let sc = Scene::new("rec-stream");
    let s = stream_settings();
    let (run, control) = make_run(&sc, None, Some(&s));
    let segs = StreamSegments::create(&run, &s).unwrap();
    let ctl = segs.control().unwrap();
    let g = Generator::new(&s);
    let mut ring = RingProducer::attach(segs.ring_view().unwrap()).unwrap();
    let (_, mut rec) = ctl.producer.load().unwrap();
    for chunk in 0..2 {
        assert!(ring.free(20).unwrap() >= 20);
        for k in 0..20 {
            write_slot(ring.slot_mut(k), rec.next_seq, 1_000 + rec.next_seq, 0, &g).unwrap();
            rec.next_seq += 1;
        }
        rec.head = rec.head.wrapping_add(20);
        ctl.producer.commit(rec);
        if chunk == 0 {
            ring.publish(20);
        } // chunk 1: killed here, after the commit, before the publication
    }
    // The "killed" producer's mapping goes away with it.
    let _ = ring;
    drop(segs);
    drop(control);
    let o = handoff(&sc);
    assert!(o.status.success(), "{}", text(&o));
    let st = sc.summary()["stream"].clone();
    assert_eq!(st["produced"], 40, "{st}");
    assert_eq!(st["received"], 40, "committed vectors were dropped: {st}");
    assert_eq!(st["filled"], 0, "{st}");
    assert_eq!(st["conservation_ok"], true);
}

/// A role was killed after applying its step but before passing the turn.
/// The handoff must complete that step so image.png and history.bin agree.
#[test]
fn image_handoff_completes_a_half_done_step() {
    let sc = Scene::new("rec-image");
    let img = ImageSettings {
        width: 8,
        height: 6,
        seed: 5,
    };
    let (run, control) = make_run(&sc, Some(&img), None);
    let segs = ImageSegments::create(&run, &img).unwrap();
    let v = segs.view().unwrap();
    let st = Stepper::new(v);
    for s in 0..10 {
        let party = if s % 2 == 0 { Party::Even } else { Party::Odd };
        st.step(v.ctl.turn.try_take(party, v.n).unwrap()).unwrap();
    }
    // Iteration 10: journal armed and data written, turn not passed.
    let r = st.plan(10).unwrap();
    v.ctl.journals[0].arm(10, *r.get());
    st.apply(&r);
    drop(segs);
    drop(control);
    let o = handoff(&sc);
    assert!(o.status.success(), "{}", text(&o));
    let v = forkring(&["verify", sc.out()]);
    assert!(v.status.success(), "{}", text(&v));
    assert_eq!(sc.summary()["image"]["iterations"], 11);
}

/// A run that gave up (restart limit) is resumed by the same command and
/// then completes its stream; the stop did not mark the stream finished.
#[test]
fn a_run_that_gave_up_resumes_to_completion() {
    let _g = serial();
    let sc = Scene::new("rec-giveup");
    let args = [
        "--jobs",
        "stream",
        "--rate",
        "4000",
        "--count",
        "8000",
        "--seed",
        "1",
        "--max-restarts",
        "0",
    ];
    let bg = sc.spawn(&args);
    assert!(
        wait_roles(&sc.name, 2, Duration::from_secs(60)),
        "{}",
        bg.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    let producer = role_pid(&sc.name, "producer");
    signal(producer, libc::SIGKILL);
    let (status, log) = bg.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(3), "{log}");
    let o = sc.run(&args);
    assert!(o.status.success(), "{}", text(&o));
    let st = sc.summary()["stream"].clone();
    assert_eq!(st["produced"], 8000, "{st}");
    assert_eq!(st["received"], 8000, "{st}");
}

/// The handoff failed after the stream file was published (summary.json
/// could not be written); `forkring handoff` retries and succeeds.
#[test]
fn a_failed_handoff_can_be_retried() {
    let _g = serial();
    let sc = Scene::new("rec-retry");
    let blocker = sc.dir.path().join("summary.json");
    std::fs::create_dir(&blocker).unwrap();
    let o = sc.run(&[
        "--jobs", "stream", "--rate", "max", "--count", "5000", "--seed", "1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("forkring handoff --run {}", sc.name)),
        "{}",
        text(&o)
    );
    std::fs::remove_dir(&blocker).unwrap();
    let o = handoff(&sc);
    assert!(o.status.success(), "{}", text(&o));
    let st = sc.summary()["stream"].clone();
    assert_eq!(st["received"], 5000, "{st}");
    let lines = std::fs::read_to_string(sc.dir.path().join("stream.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, 50);
    assert!(!sc.dir.path().join(".stream.partial").exists());
    assert!(segments_of(&sc.name).is_empty());
}

/// A corrupt sequence count in shared memory gives a clear error at once,
/// not an endless gap fill.
#[test]
fn a_corrupt_sequence_count_is_refused() {
    let sc = Scene::new("rec-corrupt");
    let s = stream_settings();
    let (run, control) = make_run(&sc, None, Some(&s));
    let segs = StreamSegments::create(&run, &s).unwrap();
    let ctl = segs.control().unwrap();
    let (_, mut rec) = ctl.producer.load().unwrap();
    rec.next_seq = 1 << 40; // no slot, no dropout: a gap of 2^40 is impossible
    ctl.producer.commit(rec);
    drop(segs);
    drop(control);
    let start = std::time::Instant::now();
    let o = handoff(&sc);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("dropouts"), "{}", text(&o));
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the error took {:?}",
        start.elapsed()
    );
}

/// A supervisor killed while removing the segments of a handed-off run:
/// the next `run` of that name removes every leftover and runs afresh.
#[test]
fn leftovers_of_a_handed_off_run_are_removed() {
    let sc = Scene::new("rec-left");
    let img = ImageSettings {
        width: 4,
        height: 4,
        seed: 1,
    };
    let mut s = stream_settings();
    s.seed = 9; // other settings than the new run: they no longer matter
    let (run, control) = make_run(&sc, Some(&img), Some(&s));
    drop(ImageSegments::create(&run, &img).unwrap());
    drop(StreamSegments::create(&run, &s).unwrap());
    control.control.set_phase(RunPhase::HandedOff);
    for part in forkring::image::layout::PARTS {
        forkring::shm::segment::unlink(&run.segment(part)).unwrap();
    }
    drop(control);
    // A different run under the same name (stream only: in a combined run
    // the stream ends as soon as the image is complete, which for a tiny
    // image can be before the producer's first vector).
    let o = sc.run(&[
        "--jobs",
        "stream",
        "--seed",
        "1",
        "--count",
        "40",
        "--dim",
        "4",
        "--batch",
        "10",
        "--rate-window",
        "10",
        "--ring-slots",
        "64",
        "--rate",
        "max",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("removed the leftovers"), "{}", text(&o));
    let sm = sc.summary();
    assert_eq!(sm["jobs"], serde_json::json!(["stream"]), "{sm}");
    assert_eq!(sm["stream"]["produced"], 40, "{sm}");
    assert!(
        segments_of(&sc.name).is_empty(),
        "left: {:?}",
        segments_of(&sc.name)
    );
    let _ = Control::open(&run, Access::ReadOnly).unwrap_err();
}
