//! A connection to a NATS server on a current-thread tokio runtime.
//!
//! Async stays here and in the two roles that talk to NATS (the stream's
//! exporter and the task pool's intake); the shared-memory paths never
//! await. The runtime runs on the calling thread only while the caller is
//! inside [`Session::block_on`]: the connection's own tasks (pings, acks,
//! reconnects) run then, so a caller must not block that thread for long
//! outside it.
//!
//! Reconnects back off from 25 ms, doubling to 1 s. The log gets one line
//! per change of the link's state (connected, lost, unreachable), never one
//! per retry.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::error::NatsError;
use super::names::Endpoint;

/// Longest pause between reconnect attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How a connection's link stands, as the log and `status` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Not yet connected.
    Connecting,
    /// Connected.
    Up,
    /// Lost; reconnecting.
    Down,
}

#[derive(Debug)]
struct Link {
    state: LinkState,
    /// Whether the current outage (or first attempt) was logged.
    logged_failure: bool,
}

/// How [`Session::connect`] treats a server it cannot reach.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Connect {
    /// Fail if not connected within this long (start-up checks).
    Within(Duration),
    /// Return at once and keep trying in the background (a role restarted
    /// mid-run, which must wait for the server rather than fail).
    Retry,
}

/// A connection and its JetStream context.
pub(crate) struct Session {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    js: jetstream::Context,
    url: Endpoint,
    link: Arc<Mutex<Link>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn lock(link: &Mutex<Link>) -> std::sync::MutexGuard<'_, Link> {
    link.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Session {
    /// Connects to `url` as `who` (the role, for log lines and the
    /// server's connection list). `api_timeout` bounds every JetStream
    /// request and every wait for a publish acknowledgement.
    pub(crate) fn connect(
        url: &Endpoint,
        how: Connect,
        who: &'static str,
        api_timeout: Duration,
    ) -> Result<Session, NatsError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NatsError::Failed {
                what: "starting the NATS client's runtime".into(),
                detail: e.to_string(),
            })?;
        let link = Arc::new(Mutex::new(Link {
            state: LinkState::Connecting,
            logged_failure: false,
        }));
        let shown = url.clone();
        let events = link.clone();
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("forkring {who}"))
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis(25u64 << attempt.min(6)).min(MAX_BACKOFF)
            })
            .event_callback(move |ev| {
                let events = events.clone();
                let url = shown.clone();
                async move { on_event(&events, &url, who, ev) }
            });
        let within = match how {
            Connect::Within(t) => {
                opts = opts.connection_timeout(t);
                Some(t)
            }
            Connect::Retry => {
                opts = opts.retry_on_initial_connect();
                None
            }
        };
        let client = rt.block_on(async {
            let connecting = opts.connect(url.as_str());
            match within {
                // The handshake is bounded by connection_timeout; the outer
                // bound also covers name resolution.
                Some(t) => {
                    match tokio::time::timeout(t + Duration::from_millis(100), connecting).await {
                        Ok(r) => r.map_err(|e| NatsError::Unreachable {
                            url: url.clone(),
                            timeout_s: t.as_secs_f64(),
                            detail: e.to_string(),
                        }),
                        Err(_) => Err(NatsError::Unreachable {
                            url: url.clone(),
                            timeout_s: t.as_secs_f64(),
                            detail: "timed out".into(),
                        }),
                    }
                }
                None => connecting.await.map_err(|e| NatsError::Unreachable {
                    url: url.clone(),
                    timeout_s: 0.0,
                    detail: e.to_string(),
                }),
            }
        })?;
        if within.is_some() {
            let mut l = lock(&link);
            if l.state == LinkState::Connecting {
                l.state = LinkState::Up;
            }
        }
        // The context spawns its ack handler: inside the runtime.
        let js = {
            let _in = rt.enter();
            jetstream::ContextBuilder::new()
                .timeout(api_timeout)
                .build(client.clone())
        };
        Ok(Session {
            rt,
            client,
            js,
            url: url.clone(),
            link,
        })
    }

    /// Runs `f` on the session's runtime, on this thread.
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The client.
    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }
    /// The JetStream context.
    pub(crate) fn js(&self) -> &jetstream::Context {
        &self.js
    }
    /// The server's URL.
    pub(crate) fn url(&self) -> &Endpoint {
        &self.url
    }
    /// The link's state.
    pub(crate) fn state(&self) -> LinkState {
        lock(&self.link).state
    }
    /// Fails unless the server runs JetStream.
    pub(crate) fn require_jetstream(&self) -> Result<(), NatsError> {
        if self.client.server_info().jetstream {
            Ok(())
        } else {
            Err(NatsError::NoJetStream {
                url: self.url.clone(),
            })
        }
    }

    /// Finds or creates the stream for `spec`; see [`StreamSpec`]. Says
    /// so on standard error when it creates one.
    pub(crate) fn ensure_stream(&self, spec: &StreamSpec) -> Result<StreamFound, NatsError> {
        let found = self.block_on(ensure_stream(&self.js, &self.url, spec))?;
        if found.created {
            eprintln!(
                "forkring: created JetStream stream {} ({}) for subject {} at {} (dedup window {} s)",
                found.name,
                if spec.work_queue {
                    "work queue"
                } else {
                    "file storage, limits retention"
                },
                spec.subjects.join(", "),
                self.url,
                found.duplicate_window.as_secs_f64()
            );
        }
        Ok(found)
    }
}

fn on_event(link: &Mutex<Link>, url: &Endpoint, who: &str, ev: async_nats::Event) {
    use async_nats::Event;
    let mut l = lock(link);
    match ev {
        Event::Connected => {
            if l.state != LinkState::Up && (l.state == LinkState::Down || l.logged_failure) {
                eprintln!("forkring {who}: connected to {url}");
            }
            l.state = LinkState::Up;
            l.logged_failure = false;
        }
        Event::Disconnected => {
            if l.state == LinkState::Up {
                eprintln!(
                    "forkring {who}: lost the connection to {url}; reconnecting (backoff up to {} s)",
                    MAX_BACKOFF.as_secs_f64()
                );
                l.logged_failure = true;
            }
            l.state = LinkState::Down;
        }
        Event::ClientError(e) if l.state != LinkState::Up && !l.logged_failure => {
            eprintln!(
                "forkring {who}: cannot reach {url} ({e}); retrying (backoff up to {} s)",
                MAX_BACKOFF.as_secs_f64()
            );
            l.logged_failure = true;
        }
        _ => {}
    }
}

/// A JetStream stream forkring needs.
#[derive(Debug, Clone)]
pub(crate) struct StreamSpec {
    /// The name to create it under.
    pub(crate) name: String,
    /// Whether the user named it (then a stream of another name that
    /// already captures the subjects is an error, not a match).
    pub(crate) named: bool,
    /// The subjects it must capture.
    pub(crate) subjects: Vec<String>,
    /// A work queue (each message taken once) rather than a log.
    pub(crate) work_queue: bool,
    /// Deduplication window of a stream we create.
    pub(crate) duplicate_window: Duration,
    /// The option that names it, for errors.
    pub(crate) option: &'static str,
}

/// The stream found or created for a [`StreamSpec`].
#[derive(Debug, Clone)]
pub(crate) struct StreamFound {
    /// Its name.
    pub(crate) name: String,
    /// Its deduplication window.
    pub(crate) duplicate_window: Duration,
    /// Whether forkring created it just now.
    pub(crate) created: bool,
}

/// Finds the stream that captures `spec.subjects`, or creates one.
///
/// - If a stream already captures a subject, it is used: every subject
///   must be in that one stream, it must be named `spec.name` if the user
///   named it, and it must be a work queue exactly when `spec.work_queue`.
/// - Otherwise a file-backed stream `spec.name` is created; the server's
///   refusal (permissions, a name taken by a stream with other subjects)
///   comes back as [`NatsError::Refused`] with the server's words.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    url: &Endpoint,
    spec: &StreamSpec,
) -> Result<StreamFound, NatsError> {
    use async_nats::jetstream::context::GetStreamByNameErrorKind as K;
    let mut found: Option<(String, &str)> = None;
    for s in &spec.subjects {
        match js.stream_by_subject(s.as_str()).await {
            Ok(name) => match &found {
                Some((other, o)) if *other != name => {
                    return Err(NatsError::Mismatch {
                        stream: name.clone(),
                        detail: format!(
                            "subject {s} is in stream {name} but subject {o} is in stream {other}; they must be in one stream"
                        ),
                    });
                }
                _ => found = Some((name, s)),
            },
            Err(e) if matches!(e.kind(), K::NotFound) => {
                if let Some((name, o)) = &found {
                    return Err(NatsError::Mismatch {
                        stream: name.clone(),
                        detail: format!(
                            "it captures subject {o} but not {s}; add {s} to it, or choose another subject"
                        ),
                    });
                }
            }
            Err(e) => {
                return Err(NatsError::Failed {
                    what: format!("looking up the stream of subject {s} at {url}"),
                    detail: e.to_string(),
                });
            }
        }
    }
    if let Some((name, s)) = found {
        if spec.named && name != spec.name {
            return Err(NatsError::Mismatch {
                stream: spec.name.clone(),
                detail: format!(
                    "subject {s} is already captured by stream {name}; give {} {name}, or choose another subject",
                    spec.option
                ),
            });
        }
        let mut st = js
            .get_stream(name.as_str())
            .await
            .map_err(|e| NatsError::Failed {
                what: format!("reading stream {name} at {url}"),
                detail: e.to_string(),
            })?;
        let info = st.info().await.map_err(|e| NatsError::Failed {
            what: format!("reading stream {name} at {url}"),
            detail: e.to_string(),
        })?;
        let is_wq = info.config.retention == stream::RetentionPolicy::WorkQueue;
        if is_wq != spec.work_queue {
            return Err(NatsError::Mismatch {
                stream: name.clone(),
                detail: if spec.work_queue {
                    format!(
                        "it captures {s} but is not a work queue (its retention is {:?}); tasks must be taken once: use a work-queue stream or another subject",
                        info.config.retention
                    )
                } else {
                    format!(
                        "it captures {s} but is a work queue, which lets one reader take each message; use another subject"
                    )
                },
            });
        }
        return Ok(StreamFound {
            name,
            duplicate_window: info.config.duplicate_window,
            created: false,
        });
    }
    let config = stream::Config {
        name: spec.name.clone(),
        subjects: spec.subjects.clone(),
        retention: if spec.work_queue {
            stream::RetentionPolicy::WorkQueue
        } else {
            stream::RetentionPolicy::Limits
        },
        storage: stream::StorageType::File,
        duplicate_window: spec.duplicate_window,
        ..Default::default()
    };
    let created = js
        .create_stream(config)
        .await
        .map_err(|e| NatsError::Refused {
            what: format!(
                "creating stream {} for subject {}",
                spec.name,
                spec.subjects.join(", ")
            ),
            detail: e.to_string(),
        })?;
    Ok(StreamFound {
        name: spec.name.clone(),
        duplicate_window: created.cached_info().config.duplicate_window,
        created: true,
    })
}

/// The start-up check of `--export` and `--from`, before any segment
/// exists: the server answers within `timeout`, runs JetStream, and every
/// stream of `specs` exists or can be created. Returns the session and the
/// streams found, in `specs` order.
pub(crate) fn preflight(
    url: &Endpoint,
    timeout: Duration,
    who: &'static str,
    specs: &[StreamSpec],
) -> Result<(Session, Vec<StreamFound>), NatsError> {
    let session = Session::connect(url, Connect::Within(timeout), who, timeout)?;
    session.require_jetstream()?;
    let found = specs
        .iter()
        .map(|s| session.ensure_stream(s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((session, found))
}

/// Finds or creates every stream of `specs`, waiting for the server while
/// it is unreachable (a role restarted mid-run). A stream that does not fit
/// or that JetStream refuses to create is an error at once. Gives up with
/// `None` as soon as `keep_going` says so (the run is stopping).
pub(crate) async fn ensure_streams_retrying(
    session: &Session,
    specs: &[StreamSpec],
    keep_going: &dyn Fn() -> bool,
) -> Result<Option<Vec<StreamFound>>, NatsError> {
    loop {
        let mut found = Vec::with_capacity(specs.len());
        let mut failed = false;
        for spec in specs {
            match ensure_stream(session.js(), session.url(), spec).await {
                Ok(f) => found.push(f),
                Err(e @ (NatsError::Mismatch { .. } | NatsError::Refused { .. }))
                    if session.state() == LinkState::Up =>
                {
                    return Err(e);
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            return Ok(Some(found));
        }
        if !keep_going() {
            return Ok(None);
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Pause between attempts while the server is unreachable.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(200);
