//! One request, from routing to its answer and its log line.
//!
//! Owns: the status of every outcome (200 stored or duplicate, 400 malformed or incomplete, 401
//! unsigned or forged, 403 another workspace's, 404/405, 408 body too slow, 413 too large, 503
//! store, key or workspace unavailable, or too busy), the workspace gate, and the one log line
//! per webhook request (event id, subscription, log type, outcome, latency; never bodies,
//! names, tax ids or keys; "busy" at most once a second), counted in the same place for
//! `/metrics` (`metrics::Intake`). `GET /metrics` reads the store on a connection of its own. A
//! request head over the limit gets 431, and a malformed one 400, from hyper before any of this
//! runs (not logged or counted here). Does not own: connections, limits on them, or timeouts
//! (`httpd`), nor metric names (`metrics`).
//!
//! The workspace gate: a valid signature proves an event is Stark Bank's, for *some*
//! workspace. An event is stored only when it is proven ours: it names the pinned workspace, or
//! (none pinned yet, or it names none) Stark Bank shows it to us when we look it up with our own
//! credentials. Anything else gets 403 and is not stored (Stark Bank stops after 3 retries); a
//! lookup that cannot be made now gets 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::time::Instant;

use super::permits::Permits;
use super::writer::{Msg, Verdict};
use super::{Config, Lookup, LookupEvent};
use crate::httpd::{self, Decision, Head, Request, Response};
use crate::metrics::Intake;
use crate::starkbank::event::{self, EventSummary};
use crate::starkbank::verify::{KeyCache, Signed, WebhookAuthError};
use crate::store::{EventSource, Inserted, NewEvent, Store};

/// The listener's routes, shared by every request.
pub struct Webhooks {
    keys: Arc<KeyCache>,
    store_healthy: Arc<AtomicBool>,
    writer: SyncSender<Msg>,
    permits: Permits,
    body_limit: u64,
    /// `STARKBANK_WORKSPACE_ID`, when set.
    configured: Option<String>,
    /// The pinned workspace, once known.
    pinned: std::sync::RwLock<Option<String>>,
    lookup: Option<LookupEvent>,
    /// Events Stark Bank said are not ours: a replayed one costs no second lookup.
    not_ours: std::sync::Mutex<std::collections::HashSet<String>>,
    /// "Busy" is logged at most once a second, with how many were answered meanwhile.
    busy_log: Throttle,
    /// This listener's own counts, for `/metrics`.
    intake: Intake,
    /// `/metrics` reads the store on a connection of its own (WAL: readers never wait for the
    /// writer), opened at the first scrape and again after a failure.
    figures: std::sync::Mutex<Option<Store>>,
    db: crate::store::Location,
    clock: crate::clock::Clock,
    /// A failed scrape is logged at most once a second.
    metrics_log: Throttle,
}

/// At most one line a second for something that can happen thousands of times a second.
#[derive(Default)]
struct Throttle {
    last: std::sync::Mutex<Option<Instant>>,
    since: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// `Some(count)` when a line is due now (count: occurrences since the last line).
    fn due(&self) -> Option<u64> {
        let n = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().ok()?;
        if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
            return None;
        }
        *last = Some(Instant::now());
        self.since.store(0, Ordering::Relaxed);
        Some(n)
    }
}

/// Most event ids remembered as not ours (replays of the same ones cost nothing; beyond this
/// the set is emptied and refills).
const NOT_OURS_CACHE: usize = 10_000;

/// Whose an event is.
enum Whose {
    Ours,
    Other(String),
    Unknown(String),
}

impl Webhooks {
    pub fn new(
        cfg: &Config,
        keys: Arc<KeyCache>,
        store_healthy: Arc<AtomicBool>,
        writer: SyncSender<Msg>,
        pinned: Option<String>,
    ) -> Self {
        Self {
            keys,
            store_healthy,
            writer,
            permits: Permits::new(cfg.workers),
            body_limit: cfg.body_limit,
            configured: cfg.workspace_id.clone(),
            pinned: std::sync::RwLock::new(pinned),
            lookup: cfg.lookup_event.clone(),
            not_ours: std::sync::Mutex::new(std::collections::HashSet::new()),
            busy_log: Throttle::default(),
            intake: Intake::new(),
            figures: std::sync::Mutex::new(None),
            db: cfg.db.clone(),
            clock: cfg.clock,
            metrics_log: Throttle::default(),
        }
    }

    /// `GET /metrics`: the store's figures now, and this listener's counts. A store that cannot
    /// be read still gets an answer (200, `stark_sweep_store_readable 0`): the listener is up.
    fn metrics(&self) -> Response {
        let now = self.clock.now();
        let figures = {
            let mut slot = self.figures.lock().unwrap_or_else(|p| p.into_inner());
            let read = match slot.as_ref() {
                Some(store) => store.figures(now),
                None => Store::open_for_figures(&self.db).and_then(|store| {
                    let f = store.figures(now);
                    *slot = Some(store);
                    f
                }),
            };
            if read.is_err() {
                *slot = None;
            }
            read
        };
        let figures = match figures {
            Ok(f) => Some(f),
            Err(e) => {
                if self.metrics_log.due().is_some() {
                    log::warn!("/metrics: reading the store failed (scrapes show stark_sweep_store_readable 0): {e:#}");
                }
                None
            }
        };
        self.intake.set_ready(self.store_healthy.load(Ordering::Relaxed) && self.keys.is_loaded());
        match crate::metrics::render(figures, now, Some(&self.intake)) {
            Ok(text) => Response::text(200, crate::metrics::CONTENT_TYPE, text),
            Err(e) => {
                log::error!("/metrics: {e:#}");
                Response::text(500, "text/plain; charset=utf-8", "metrics could not be encoded\n")
            }
        }
    }

    fn ask_writer<T>(&self, msg: impl FnOnce(SyncSender<Result<T, String>>) -> Msg) -> Result<T, String> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.writer.send(msg(tx)).map_err(|_| "the store is unavailable".to_string())?;
        rx.recv().map_err(|_| "the store is unavailable".to_string())?
    }

    fn pinned(&self) -> Result<Option<String>, String> {
        if let Some(ws) = self.pinned.read().map_err(|_| "lock poisoned")?.clone() {
            return Ok(Some(ws));
        }
        // Another process (process-events, issue-invoices) may have pinned it since we started.
        let ws = self.ask_writer(Msg::Workspace)?;
        if let Some(ws) = &ws
            && let Ok(mut p) = self.pinned.write()
        {
            *p = Some(ws.clone());
        }
        Ok(ws)
    }

    /// The gate (see the module doc). On `Ours`, `summary.workspace_id` is the proven workspace.
    fn whose(&self, summary: &mut EventSummary) -> Whose {
        if let Some(c) = &self.configured
            && summary.workspace_id.as_deref() != Some(c.as_str())
        {
            return Whose::Other(format!("names workspace {:?}, not STARKBANK_WORKSPACE_ID={c}", summary.workspace_id));
        }
        let pinned = match self.pinned() {
            Ok(p) => p,
            Err(e) => return Whose::Unknown(e),
        };
        match (&pinned, &summary.workspace_id) {
            (Some(p), Some(w)) if p == w => return Whose::Ours,
            (Some(p), Some(w)) => return Whose::Other(format!("names workspace {w}, not ours ({p})")),
            _ => {}
        }
        if self.not_ours.lock().is_ok_and(|s| s.contains(&summary.id)) {
            return Whose::Other("Stark Bank does not show this event to this project".into());
        }
        let Some(lookup) = &self.lookup else {
            return Whose::Unknown("the workspace is not pinned yet and the listener has no API credentials".into());
        };
        match lookup(&summary.id) {
            Err(e) => Whose::Unknown(format!("looking the event up failed: {e}")),
            Ok(Lookup::NotOurs) => {
                if let Ok(mut s) = self.not_ours.lock() {
                    if s.len() >= NOT_OURS_CACHE {
                        s.clear();
                    }
                    s.insert(summary.id.clone());
                }
                Whose::Other("Stark Bank does not show this event to this project".into())
            }
            Ok(Lookup::Ours { workspace }) => {
                let proven = workspace.or_else(|| summary.workspace_id.clone());
                match (&pinned, proven) {
                    (Some(p), Some(w)) if p != &w => {
                        Whose::Other(format!("Stark Bank says workspace {w}, not ours ({p})"))
                    }
                    (Some(p), _) => {
                        summary.workspace_id = Some(p.clone());
                        Whose::Ours
                    }
                    (None, Some(w)) => match self.ask_writer(|tx| Msg::Pin(w.clone(), tx)) {
                        Ok(now_pinned) if now_pinned == w => {
                            if let Ok(mut p) = self.pinned.write() {
                                *p = Some(w.clone());
                            }
                            summary.workspace_id = Some(w);
                            Whose::Ours
                        }
                        Ok(now_pinned) => Whose::Other(format!("names workspace {w}, not ours ({now_pinned})")),
                        Err(e) => Whose::Unknown(e),
                    },
                    // Ours, but nobody says which workspace that is: store it, pin nothing.
                    (None, None) => Whose::Ours,
                }
            }
        }
    }
}

fn result(status: u16, outcome: &str) -> Response {
    Response::json(status, format!("{{\"result\":\"{outcome}\"}}"))
}

fn signature(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get("Digital-Signature")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl httpd::Handler for Webhooks {
    fn head(&self, head: &Head<'_>) -> Decision {
        match (head.path, head.method) {
            // Too large (declared): 413 whatever else is wrong. Unsigned: 401 before the body is read.
            ("/webhook", "POST") if head.content_length.is_some_and(|n| n > self.body_limit) => {
                Decision::Answer(self.too_large(head))
            }
            ("/webhook", "POST") if signature(head.headers).is_none() => {
                log::info!("webhook -: 401 missing signature");
                self.intake.answered(401, "missing signature", None);
                Decision::Answer(result(401, "missing signature"))
            }
            ("/webhook", "POST") => Decision::Read { limit: self.body_limit },
            ("/health", "GET" | "HEAD") => {
                let store = self.store_healthy.load(Ordering::Relaxed);
                let key = self.keys.is_loaded();
                let ok = store && key;
                let body = serde_json::json!({
                    "status": if ok { "ok" } else { "unavailable" },
                    "store": if store { "ok" } else { "unavailable" },
                    "public_key": if key { "loaded" } else { "missing" },
                });
                Decision::Answer(Response::json(if ok { 200 } else { 503 }, body.to_string()))
            }
            // Read from the store on a blocking thread (`handle`), never here.
            ("/metrics", "GET" | "HEAD") => Decision::Read { limit: 0 },
            ("/webhook", _) => Decision::Answer(result(405, "method not allowed").with_header("Allow", "POST")),
            ("/health" | "/metrics", _) => {
                Decision::Answer(result(405, "method not allowed").with_header("Allow", "GET, HEAD"))
            }
            _ => Decision::Answer(result(404, "not found")),
        }
    }

    fn too_large(&self, head: &Head<'_>) -> Response {
        if head.path != "/webhook" {
            return result(413, "body too large");
        }
        self.intake.answered(413, "body too large", None);
        match head.content_length {
            Some(n) => log::info!("webhook -: 413 body too large (declared {n} bytes)"),
            None => log::info!("webhook -: 413 body too large (chunked, over {} bytes)", self.body_limit),
        }
        result(413, "body too large")
    }

    fn busy(&self, head: &Head<'_>) -> Response {
        if head.path != "/webhook" {
            return result(503, "busy");
        }
        self.intake.answered(503, "busy", None);
        if let Some(n) = self.busy_log.due() {
            log::warn!("webhook -: too many requests in flight; answered 503 ({n} since the last such line)");
        }
        result(503, "busy")
    }

    fn body_timeout(&self, head: &Head<'_>) -> Response {
        if head.path != "/webhook" {
            return result(408, "body not received in time");
        }
        self.intake.answered(408, "body not received in time", None);
        log::info!("webhook -: 408 body not received in time");
        result(408, "body not received in time")
    }

    fn incomplete_body(&self, head: &Head<'_>) -> Response {
        if head.path != "/webhook" {
            return result(400, "incomplete body");
        }
        self.intake.answered(400, "incomplete body", None);
        log::info!("webhook -: 400 incomplete body (the client closed the connection)");
        result(400, "incomplete body")
    }

    fn handle(&self, rq: Request) -> Response {
        if rq.path == "/metrics" {
            return self.metrics();
        }
        let started = Instant::now();
        let answer = self.webhook(rq);
        // Logged and counted before answering, so neither lags behind what a client has seen.
        let took = started.elapsed();
        self.intake.answered(answer.status, answer.outcome, Some(took));
        let ms = took.as_secs_f64() * 1e3;
        match &answer.event {
            Some(e) => {
                let (invoice_id, transfer_id) = match e.subscription.as_str() {
                    "invoice" => (Some(e.resource_id.as_str()), None),
                    "transfer" => (None, Some(e.resource_id.as_str())),
                    _ => (None, None),
                };
                log::info!(
                    event_id = e.id.as_str(), subscription = e.subscription.as_str(), log_type = e.log_type.as_str(),
                    invoice_id = invoice_id, transfer_id = transfer_id, status = answer.status,
                    outcome = answer.outcome, latency_ms = ms;
                    "webhook {} {}/{}: {} {} in {ms:.1} ms",
                    e.id,
                    e.subscription,
                    e.log_type,
                    answer.status,
                    answer.outcome
                )
            }
            None => log::info!(
                status = answer.status, outcome = answer.outcome, latency_ms = ms;
                "webhook -: {} {} in {ms:.1} ms", answer.status, answer.outcome
            ),
        }
        result(answer.status, answer.outcome)
    }
}

struct Answer {
    status: u16,
    outcome: &'static str,
    event: Option<EventSummary>,
}

fn refuse(status: u16, outcome: &'static str) -> Answer {
    Answer { status, outcome, event: None }
}

impl Webhooks {
    fn webhook(&self, rq: Request) -> Answer {
        // Verify before anything else looks at the body.
        let Some(signature) = signature(&rq.headers) else { return refuse(401, "missing signature") };
        if !self.keys.is_loaded() {
            // Fetches happen on the key-loader thread (and on a mismatch, rate-limited, in verify).
            return refuse(503, "public key unavailable");
        }
        let verified = {
            let _permit = self.permits.acquire();
            self.keys.verify(&rq.body, Some(&signature))
        };
        let text = match verified {
            Ok(Signed::Raw) => rq.body,
            Ok(Signed::Canonical(canon)) => canon.into_bytes(),
            Err(WebhookAuthError::Missing) => return refuse(401, "missing signature"),
            Err(WebhookAuthError::Malformed) => return refuse(401, "malformed signature"),
            Err(WebhookAuthError::Invalid) => return refuse(401, "invalid signature"),
            Err(WebhookAuthError::KeyUnavailable(why)) => {
                log::warn!("Stark Bank's public key is unavailable: {why}");
                return refuse(503, "public key unavailable");
            }
        };

        let mut summary = match event::parse_body(&text) {
            Ok(summary) => summary,
            Err(e) => {
                log::debug!("signed but malformed event: {e}");
                return refuse(400, "malformed event");
            }
        };
        match self.whose(&mut summary) {
            Whose::Ours => {}
            Whose::Other(why) => {
                log::warn!(event_id = summary.id.as_str(); "webhook {}: another workspace's event, not stored: {why}", summary.id);
                return Answer { event: Some(summary), ..refuse(403, "other workspace") };
            }
            Whose::Unknown(why) => {
                log::warn!(
                    event_id = summary.id.as_str();
                    "webhook {}: cannot tell whose event this is yet ({why}); answered 503", summary.id
                );
                return Answer { event: Some(summary), ..refuse(503, "workspace unknown") };
            }
        }

        let (reply_tx, reply_rx) = mpsc::sync_channel::<Verdict>(1);
        let new =
            NewEvent { summary: summary.clone(), body: text, signature: Some(signature), source: EventSource::Webhook };
        if self.writer.send(Msg::Store(Box::new(new), reply_tx)).is_err() {
            return Answer { event: Some(summary), ..refuse(503, "store unavailable") };
        }
        let (status, outcome) = match reply_rx.recv() {
            Ok(Ok(Inserted::New)) => (200, "stored"),
            Ok(Ok(Inserted::Duplicate)) => (200, "duplicate"),
            Ok(Err(())) | Err(_) => (503, "store unavailable"),
        };
        Answer { status, outcome, event: Some(summary) }
    }
}
