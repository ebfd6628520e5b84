//! The intake (`--from nats://HOST:PORT`): the client's link to a
//! JetStream work queue. Task lines arrive as messages on
//! `--tasks-subject`; each result goes to `--results-subject` with
//! `Nats-Msg-Id` = the task's id (`SUBJECT/STREAM-SEQUENCE`), and only then
//! is the message acknowledged.
//!
//! The intake runs on its own thread of the client process, on a
//! current-thread tokio runtime; the client's shared-memory loop never
//! awaits. They talk through two in-process channels, and the intake rings
//! the recorder's bell (the table's done epoch) when it hands over work.
//!
//! - Pulls: from a durable pull consumer (`--consumer`, shared by every run
//!   that drains the queue), explicit acks, at most as many messages as
//!   the client has room for.
//! - While a task runs, its message's ack wait is extended (`+WPI`) every
//!   third of `--ack-wait`, so a long task is not redelivered elsewhere.
//! - A result is published with its id as `Nats-Msg-Id` (a republish is
//!   dropped by the results stream's deduplication), and once the
//!   publish is acknowledged the task's message is acked (`+ACK`), or
//!   terminated (`+TERM`) if the result is a quarantine.
//! - A message delivered more than `--max-attempts` times (the runs that
//!   took it died) is not run again: it gets a quarantined result.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, context::PublishErrorKind};
use clap::Args;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::job::JobError;
use crate::nats::names::{self, Endpoint};
use crate::nats::session::{Connect, LinkState, Session, StreamSpec};
use crate::nats::{NatsError, session};
use crate::shm::taskq::RecorderBell;

/// Most messages asked for in one pull.
const MAX_PULL: usize = 256;
/// How long one pull waits for messages.
const PULL_WAIT: Duration = Duration::from_millis(500);
/// How long a closing intake keeps trying to deliver its results.
const CLOSE_FLUSH: Duration = Duration::from_secs(3);

/// Bounds of `--ack-wait`, seconds.
pub(crate) const ACK_WAIT: (f64, f64) = (1.0, 86_400.0);

/// The intake's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IntakeSettings {
    /// The server.
    pub(crate) url: Endpoint,
    /// Subject the task lines arrive on.
    pub(crate) tasks_subject: String,
    /// Subject results are published to.
    pub(crate) results_subject: String,
    /// Stream of the task queue (found by subject, or created).
    pub(crate) tasks_stream: String,
    /// Whether the user named it.
    pub(crate) tasks_stream_named: bool,
    /// Stream of the results.
    pub(crate) results_stream: String,
    /// Whether the user named it.
    pub(crate) results_stream_named: bool,
    /// Durable consumer shared by the runs that drain the queue.
    pub(crate) consumer: String,
    /// Seconds before an unacknowledged message is delivered again.
    pub(crate) ack_wait: f64,
    /// Seconds to connect at start-up.
    pub(crate) connect_timeout: f64,
    /// Finish once the queue is empty and nothing is left to acknowledge.
    pub(crate) drain: bool,
    /// `--max-attempts`: deliveries before a message is quarantined.
    pub(crate) max_attempts: u32,
}

const HEADING: &str = "Task pool: intake from a NATS JetStream work queue";

// (clap: no doc comment, which would become the help of `run`)
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct IntakeOpts {
    /// Pull the tasks from a JetStream work queue on this server instead
    /// of --tasks (e.g. nats://127.0.0.1:4222)
    #[arg(long, value_name = "URL", help_heading = HEADING)]
    pub(crate) from: Option<String>,
    /// Subject the task lines arrive on [default: forkring.tasks]
    #[arg(long, value_name = "SUBJECT", help_heading = HEADING)]
    pub(crate) tasks_subject: Option<String>,
    /// Subject the results are published to, one JSON line each with
    /// Nats-Msg-Id = the task id [default: forkring.results]
    #[arg(long, value_name = "SUBJECT", help_heading = HEADING)]
    pub(crate) results_subject: Option<String>,
    /// Work-queue stream of the tasks [default: the stream that captures
    /// --tasks-subject, else one created as the subject in upper case]
    #[arg(long, value_name = "NAME", help_heading = HEADING)]
    pub(crate) tasks_stream: Option<String>,
    /// Stream of the results [default: the stream that captures
    /// --results-subject, else one created as the subject in upper case]
    #[arg(long, value_name = "NAME", help_heading = HEADING)]
    pub(crate) results_stream: Option<String>,
    /// Durable consumer shared by every run that drains the queue
    /// [default: forkring]
    #[arg(long, value_name = "NAME", help_heading = HEADING)]
    pub(crate) consumer: Option<String>,
    /// Seconds before a message taken by a run that died is delivered
    /// again, 1 to 86400 (used when the consumer is created) [default: 30]
    #[arg(long, value_name = "SECS", value_parser = crate::units::parse_seconds_f64, help_heading = HEADING)]
    pub(crate) ack_wait: Option<f64>,
    /// End the run once the queue is empty and every task taken from it,
    /// here or by another run, is acknowledged [default: serve until
    /// stopped]
    #[arg(long, help_heading = HEADING)]
    pub(crate) drain: bool,
}

/// Ids of the intake's options, for "given without --jobs tasks".
pub(crate) const OPTION_IDS: [&str; 8] = [
    "from",
    "tasks_subject",
    "results_subject",
    "tasks_stream",
    "results_stream",
    "consumer",
    "ack_wait",
    "drain",
];

impl IntakeOpts {
    /// The settings, if `--from` is given; every value checked.
    pub(crate) fn settings(
        &self,
        connect_timeout: f64,
        max_attempts: u32,
    ) -> Result<Option<IntakeSettings>, JobError> {
        let Some(url) = &self.from else {
            let stray = [
                ("--tasks-subject", self.tasks_subject.is_some()),
                ("--results-subject", self.results_subject.is_some()),
                ("--tasks-stream", self.tasks_stream.is_some()),
                ("--results-stream", self.results_stream.is_some()),
                ("--consumer", self.consumer.is_some()),
                ("--ack-wait", self.ack_wait.is_some()),
                ("--drain", self.drain),
            ];
            if let Some((opt, _)) = stray.iter().find(|(_, given)| *given) {
                return Err(JobError::Usage(format!(
                    "{opt} applies to the intake from NATS; give --from nats://HOST:PORT too"
                )));
            }
            return Ok(None);
        };
        let usage = JobError::Usage;
        let url = Endpoint::parse("--from", url).map_err(usage)?;
        let tasks_subject = names::subject(
            "--tasks-subject",
            self.tasks_subject.as_deref().unwrap_or("forkring.tasks"),
        )
        .map_err(usage)?;
        let results_subject = names::subject(
            "--results-subject",
            self.results_subject
                .as_deref()
                .unwrap_or("forkring.results"),
        )
        .map_err(usage)?;
        if tasks_subject == results_subject {
            return Err(JobError::Usage(format!(
                "--tasks-subject and --results-subject are both {tasks_subject}; results must go elsewhere"
            )));
        }
        let stream = |opt: &str, given: &Option<String>, subject: &str| match given {
            Some(n) => names::name(opt, n).map(|n| (n, true)),
            None => Ok((names::stream_for(subject), false)),
        };
        let (tasks_stream, tasks_stream_named) =
            stream("--tasks-stream", &self.tasks_stream, &tasks_subject).map_err(usage)?;
        let (results_stream, results_stream_named) =
            stream("--results-stream", &self.results_stream, &results_subject).map_err(usage)?;
        if tasks_stream == results_stream {
            return Err(JobError::Usage(format!(
                "the tasks and the results would share stream {tasks_stream}; a work queue cannot hold the results: name them apart with --tasks-stream and --results-stream"
            )));
        }
        let consumer = names::name("--consumer", self.consumer.as_deref().unwrap_or("forkring"))
            .map_err(usage)?;
        let ack_wait = self.ack_wait.unwrap_or(30.0);
        if !(ACK_WAIT.0..=ACK_WAIT.1).contains(&ack_wait) {
            return Err(JobError::Usage(format!(
                "--ack-wait {ack_wait} is out of range; give {} to {} seconds",
                ACK_WAIT.0, ACK_WAIT.1
            )));
        }
        let s = IntakeSettings {
            url,
            tasks_subject,
            results_subject,
            tasks_stream,
            tasks_stream_named,
            results_stream,
            results_stream_named,
            consumer,
            ack_wait,
            connect_timeout,
            drain: self.drain,
            max_attempts,
        };
        s.validate().map_err(JobError::Usage)?;
        Ok(Some(s))
    }
}

impl IntakeSettings {
    /// Checks every value again (settings decoded from a segment are
    /// untrusted).
    pub(crate) fn validate(&self) -> Result<(), String> {
        Endpoint::parse("--from", self.url.as_str())?;
        names::subject("--tasks-subject", &self.tasks_subject)?;
        names::subject("--results-subject", &self.results_subject)?;
        names::name("--tasks-stream", &self.tasks_stream)?;
        names::name("--results-stream", &self.results_stream)?;
        names::name("--consumer", &self.consumer)?;
        if !(ACK_WAIT.0..=ACK_WAIT.1).contains(&self.ack_wait) {
            return Err(format!("--ack-wait {} is out of range", self.ack_wait));
        }
        crate::units::check_connect_timeout(self.connect_timeout)?;
        Ok(())
    }

    /// The id of the task from stream sequence `seq`.
    pub(crate) fn task_id(&self, seq: u64) -> String {
        format!("{}/{seq}", self.tasks_subject)
    }

    fn stream_specs(&self) -> [StreamSpec; 2] {
        [
            StreamSpec {
                name: self.tasks_stream.clone(),
                named: self.tasks_stream_named,
                subjects: vec![self.tasks_subject.clone()],
                work_queue: true,
                duplicate_window: Duration::ZERO,
                option: "--tasks-stream",
            },
            StreamSpec {
                name: self.results_stream.clone(),
                named: self.results_stream_named,
                subjects: vec![self.results_subject.clone()],
                work_queue: false,
                duplicate_window: Duration::ZERO,
                option: "--results-stream",
            },
        ]
    }

    fn consumer_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.consumer.clone()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs_f64(self.ack_wait),
            // One delivery past --max-attempts, to quarantine it.
            max_deliver: self.max_attempts as i64 + 1,
            ..Default::default()
        }
    }

    /// For `summary.json` and `status`.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "url": self.url.as_str(),
            "tasks_subject": self.tasks_subject,
            "results_subject": self.results_subject,
            "tasks_stream": self.tasks_stream,
            "results_stream": self.results_stream,
            "consumer": self.consumer,
            "ack_wait_s": self.ack_wait,
            "drain": self.drain,
            "connect_timeout_s": self.connect_timeout,
        })
    }
}

/// The start-up check, before any segment exists: the server answers
/// within `--connect-timeout`, runs JetStream, and the task queue, its
/// consumer and the results stream exist or can be created.
pub(crate) fn preflight(s: &IntakeSettings) -> Result<(), JobError> {
    let timeout = Duration::from_secs_f64(s.connect_timeout);
    let (session, found) = session::preflight(&s.url, timeout, "intake", &s.stream_specs())?;
    session.block_on(consumer(&session, &found[0].name, s))?;
    Ok(())
}

async fn consumer(
    session: &Session,
    stream: &str,
    s: &IntakeSettings,
) -> Result<jetstream::consumer::PullConsumer, NatsError> {
    let st = session
        .js()
        .get_stream(stream)
        .await
        .map_err(|e| NatsError::Failed {
            what: format!("reading stream {stream}"),
            detail: e.to_string(),
        })?;
    st.get_or_create_consumer(&s.consumer, s.consumer_config())
        .await
        .map_err(|e| NatsError::Refused {
            what: format!("creating consumer {} on stream {stream}", s.consumer),
            detail: e.to_string(),
        })
}

/// A message taken from the queue.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// Its stream sequence number (the task's number).
    pub(crate) seq: u64,
    /// Deliveries so far, this one included.
    pub(crate) delivered: u64,
    /// The task line.
    pub(crate) text: Result<String, String>,
    /// Its ack subject.
    pub(crate) ack: String,
}

/// What the client tells the intake.
#[derive(Debug)]
pub(crate) enum ToIntake {
    /// The pool can take this many more tasks from the queue.
    Room(usize),
    /// A result is committed: publish it, then acknowledge its message.
    Result {
        /// Stream sequence of the task.
        seq: u64,
        /// Ack subject of its message.
        ack: String,
        /// The result line (JSON).
        json: Vec<u8>,
        /// Terminate the message rather than ack it.
        term: bool,
    },
    /// No more pulls; deliver the results handed over, then stop.
    Close,
}

/// What the intake tells the client.
#[derive(Debug)]
pub(crate) enum FromIntake {
    /// A task.
    Task(Delivery),
    /// A result is published and its message acknowledged (counted).
    Acked,
    /// (`--drain`) The queue is empty and nothing taken from it is
    /// unacknowledged.
    Drained,
    /// The link's state changed.
    Link(LinkState),
    /// The intake cannot go on.
    Failed(NatsError),
}

/// The client's handle on its intake thread.
#[derive(Debug)]
pub(crate) struct Intake {
    to: tokio::sync::mpsc::UnboundedSender<ToIntake>,
    from: mpsc::Receiver<FromIntake>,
}

impl Intake {
    /// Starts the intake on a thread of `scope`. Connects in the
    /// background (the start-up check already refused an unreachable
    /// server; a restarted client waits for it).
    pub(crate) fn start<'scope, 'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        s: IntakeSettings,
        bell: RecorderBell<'env>,
    ) -> Intake {
        let (to, rx) = tokio::sync::mpsc::unbounded_channel();
        let (tx, from) = mpsc::channel();
        scope.spawn(move || {
            let notify = |m: FromIntake| {
                let _ = tx.send(m);
                bell.ring();
            };
            if let Err(e) = serve(&s, rx, &notify) {
                notify(FromIntake::Failed(e));
            }
        });
        Intake { to, from }
    }

    /// Sends to the intake (ignored once it has ended).
    pub(crate) fn send(&self, m: ToIntake) {
        let _ = self.to.send(m);
    }

    /// The next message from the intake, if any.
    pub(crate) fn try_recv(&self) -> Option<FromIntake> {
        self.from.try_recv().ok()
    }
}

/// A result on its way out.
#[derive(Debug)]
struct Outgoing {
    seq: u64,
    ack: String,
    json: bytes::Bytes,
    term: bool,
}

fn serve(
    s: &IntakeSettings,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<ToIntake>,
    notify: &dyn Fn(FromIntake),
) -> Result<(), NatsError> {
    let api = Duration::from_secs_f64(s.connect_timeout.max(2.0));
    let session = Session::connect(&s.url, Connect::Retry, "intake", api)?;
    session.block_on(async {
        // Wait for the server (a restarted client may start while it is
        // down); the session logs the outage once. The client closing its
        // end ends the wait.
        let keep_going = || !rx.is_closed();
        let Some(found) =
            session::ensure_streams_retrying(&session, &s.stream_specs(), &keep_going).await?
        else {
            return Ok(());
        };
        let tasks_stream = &found[0];
        let consumer = loop {
            match consumer(&session, &tasks_stream.name, s).await {
                Ok(c) => break c,
                Err(e @ NatsError::Refused { .. }) if session.state() == LinkState::Up => {
                    return Err(e);
                }
                Err(_) if rx.is_closed() => return Ok(()),
                Err(_) => tokio::time::sleep(session::RETRY_PAUSE).await,
            }
        };
        Pump {
            s,
            session: &session,
            consumer,
            notify,
            room: 0,
            running: HashMap::new(),
            outgoing: VecDeque::new(),
            link: LinkState::Connecting,
            closing: false,
        }
        .run(&mut rx)
        .await
    })
}

struct Pump<'a> {
    s: &'a IntakeSettings,
    session: &'a Session,
    consumer: jetstream::consumer::PullConsumer,
    notify: &'a dyn Fn(FromIntake),
    /// Tasks the client can still take.
    room: usize,
    /// Tasks handed to the client and not yet resulted: seq → ack subject
    /// (the latest delivery's).
    running: HashMap<u64, String>,
    /// Results to publish, oldest first.
    outgoing: VecDeque<Outgoing>,
    link: LinkState,
    closing: bool,
}

impl Pump<'_> {
    async fn run(
        mut self,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<ToIntake>,
    ) -> Result<(), NatsError> {
        let beat = Duration::from_secs_f64(self.s.ack_wait / 3.0);
        let mut heartbeat = tokio::time::interval(beat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch: Option<std::pin::Pin<Box<pull::Batch>>> = None;
        let mut got_in_batch = 0usize;
        let mut close_by: Option<tokio::time::Instant> = None;
        let mut drained_sent = false;
        loop {
            self.report_link();
            self.flush().await;
            if self.closing {
                let by = *close_by.get_or_insert_with(|| tokio::time::Instant::now() + CLOSE_FLUSH);
                if self.outgoing.is_empty() || tokio::time::Instant::now() >= by {
                    return Ok(());
                }
            }
            if batch.is_none() && !self.closing && self.room > 0 {
                match self
                    .consumer
                    .batch()
                    .max_messages(self.room.min(MAX_PULL))
                    .expires(PULL_WAIT)
                    .messages()
                    .await
                {
                    Ok(b) => {
                        batch = Some(Box::pin(b));
                        got_in_batch = 0;
                    }
                    Err(_) => tokio::time::sleep(session::RETRY_PAUSE).await,
                }
            }
            tokio::select! {
                cmd = rx.recv() => {
                    self.on_command(cmd);
                    // Everything else already sent goes into the same
                    // flush: its publishes are pipelined, so results cost
                    // one round trip per flush, not one each.
                    while let Ok(cmd) = rx.try_recv() {
                        self.on_command(Some(cmd));
                    }
                }
                m = next(&mut batch) => match m {
                    Some(Ok(msg)) => {
                        got_in_batch += 1;
                        self.take(msg);
                    }
                    Some(Err(_)) => {
                        batch = None;
                        tokio::time::sleep(session::RETRY_PAUSE).await;
                    }
                    None => {
                        batch = None;
                        if got_in_batch == 0 && self.s.drain && !drained_sent && self.idle() && self.queue_empty().await {
                            drained_sent = true;
                            (self.notify)(FromIntake::Drained);
                        }
                    }
                },
                _ = heartbeat.tick() => {
                    for ack in self.running.values() {
                        let _ = self.session.client().publish(ack.clone(), "+WPI".into()).await;
                    }
                }
                _ = tokio::time::sleep(PULL_WAIT), if batch.is_none() => {}
            }
        }
    }

    fn on_command(&mut self, cmd: Option<ToIntake>) {
        match cmd {
            Some(ToIntake::Room(n)) => self.room = n,
            Some(ToIntake::Result {
                seq,
                ack,
                json,
                term,
            }) => {
                self.running.remove(&seq);
                self.outgoing.push_back(Outgoing {
                    seq,
                    ack,
                    json: json.into(),
                    term,
                });
            }
            Some(ToIntake::Close) | None => self.closing = true,
        }
    }

    fn report_link(&mut self) {
        let now = self.session.state();
        if now != self.link {
            self.link = now;
            (self.notify)(FromIntake::Link(now));
        }
    }

    fn idle(&self) -> bool {
        self.running.is_empty() && self.outgoing.is_empty()
    }

    /// Whether nothing is left in the queue for anyone: no message waiting
    /// and none taken but unacknowledged (a run that died holds some until
    /// their ack wait ends).
    async fn queue_empty(&mut self) -> bool {
        match self.consumer.info().await {
            Ok(i) => i.num_pending == 0 && i.num_ack_pending == 0,
            Err(_) => false,
        }
    }

    fn take(&mut self, msg: jetstream::Message) {
        let Ok(info) = msg.info() else {
            return;
        };
        let Some(ack) = msg.reply.as_ref().map(|r| r.to_string()) else {
            return;
        };
        let seq = info.stream_sequence;
        let delivered = info.delivered.max(1) as u64;
        let text = std::str::from_utf8(&msg.payload)
            .map(|t| t.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|_| "the message is not UTF-8 text".to_string());
        let again = self.running.insert(seq, ack.clone()).is_some();
        if !again {
            self.room = self.room.saturating_sub(1);
        }
        (self.notify)(FromIntake::Task(Delivery {
            seq,
            delivered,
            text,
            ack,
        }));
    }

    /// Publishes the waiting results (pipelined) and acknowledges each
    /// task's message once its result's publish is acknowledged. What
    /// fails stays queued, to be published again with the same id.
    async fn flush(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        let js = self.session.js();
        let mut acks = Vec::with_capacity(self.outgoing.len());
        for o in &self.outgoing {
            let msg = jetstream::message::PublishMessage::build()
                .payload(o.json.clone())
                .message_id(self.s.task_id(o.seq));
            acks.push(js.send_publish(self.s.results_subject.clone(), msg).await);
        }
        let mut keep = VecDeque::new();
        for (o, sent) in std::mem::take(&mut self.outgoing).into_iter().zip(acks) {
            let stored = match sent {
                Ok(fut) => fut.await,
                Err(e) => Err(e),
            };
            match stored {
                Ok(_) => {
                    let word = if o.term { "+TERM" } else { "+ACK" };
                    let _ = self
                        .session
                        .client()
                        .publish(o.ack.clone(), word.into())
                        .await;
                    (self.notify)(FromIntake::Acked);
                }
                Err(e) if matches!(e.kind(), PublishErrorKind::MaxPayloadExceeded) => {
                    // Cannot ever fit: say so in a result that does.
                    let line = json!({
                        "id": self.s.task_id(o.seq),
                        "status": "error",
                        "error": format!("the result is larger than the server's max_payload: {e}"),
                    });
                    keep.push_back(Outgoing {
                        json: serde_json::to_vec(&line).unwrap_or_default().into(),
                        ..o
                    });
                }
                Err(_) => keep.push_back(o),
            }
        }
        if !keep.is_empty() {
            let _ = self.session.client().flush().await;
            tokio::time::sleep(session::RETRY_PAUSE).await;
        }
        self.outgoing = keep;
    }
}

async fn next(
    batch: &mut Option<std::pin::Pin<Box<pull::Batch>>>,
) -> Option<Result<jetstream::Message, async_nats::Error>> {
    match batch {
        Some(b) => b.next().await,
        None => std::future::pending().await,
    }
}

/// A work queue to put task lines on (`forkring submit --to`).
#[derive(Debug)]
pub(crate) struct Queue<'a> {
    /// The server.
    pub(crate) url: &'a Endpoint,
    /// The queue's subject.
    pub(crate) subject: &'a str,
    /// Its stream.
    pub(crate) stream: &'a str,
    /// Whether the user named the stream.
    pub(crate) named: bool,
    /// Connect and request timeout.
    pub(crate) timeout: Duration,
}

impl Queue<'_> {
    /// Publishes `(message id, line)` pairs; returns (stored, duplicates).
    pub(crate) fn enqueue(&self, lines: &[(String, String)]) -> Result<(u64, u64), JobError> {
        let session = Session::connect(
            self.url,
            Connect::Within(self.timeout),
            "submit",
            self.timeout,
        )?;
        session.require_jetstream()?;
        session.ensure_stream(&StreamSpec {
            name: self.stream.to_string(),
            named: self.named,
            subjects: vec![self.subject.to_string()],
            work_queue: true,
            duplicate_window: Duration::ZERO,
            option: "--tasks-stream",
        })?;
        let js = session.js();
        session.block_on(async {
            let (mut stored, mut dups) = (0u64, 0u64);
            for chunk in lines.chunks(1024) {
                let mut acks = Vec::with_capacity(chunk.len());
                for (id, line) in chunk {
                    let msg = jetstream::message::PublishMessage::build()
                        .payload(line.clone().into())
                        .message_id(id.as_str());
                    acks.push(js.send_publish(self.subject.to_string(), msg).await);
                }
                for (a, (id, _)) in acks.into_iter().zip(chunk) {
                    let r = match a {
                        Ok(f) => f.await,
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(ack) if ack.duplicate => dups += 1,
                        Ok(_) => stored += 1,
                        Err(e) => {
                            return Err(JobError::Nats(NatsError::Failed {
                                what: format!(
                                    "queueing task {id} on {} ({stored} queued before it; the same command again queues the rest)",
                                    self.subject
                                ),
                                detail: e.to_string(),
                            }));
                        }
                    }
                }
            }
            Ok((stored, dups))
        })
    }
}
