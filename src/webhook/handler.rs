//! One request, from routing to its answer and its log line.
//!
//! Owns: the status of every outcome (200 stored or duplicate, 400 malformed, 401 unsigned or
//! forged, 403 other workspace, 404/405, 413 too large, 431 headers too large, 503 store or key
//! unavailable or too busy) and the one log line per request (event id, subscription, log type,
//! outcome, latency; never bodies, names, tax ids or keys).
//! tiny_http drops `Connection` headers from responses, so we cannot ask a client to close;
//! it decides keep-alive from the request alone.

use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tiny_http::{Header, Method, Request, Response};

use super::pool::Permits;
use super::writer::{Msg, Verdict};
use super::{Config, HEADER_LIMIT};
use crate::starkbank::event::{self, EventSummary};
use crate::starkbank::verify::{KeyCache, Signed, WebhookAuthError};
use crate::store::{EventSource, Inserted, NewEvent};

/// State every request thread shares.
pub struct Shared {
    keys: Arc<KeyCache>,
    store_healthy: Arc<AtomicBool>,
    writer: SyncSender<Msg>,
    permits: Permits,
    body_limit: u64,
    workspace_id: Option<String>,
    /// Answers 503 to overflow requests whose body is still on the socket, so that reading it
    /// away (tiny_http does so when a request is dropped) never blocks the accept loop.
    refuser: Mutex<Option<SyncSender<Request>>>,
}

impl Shared {
    pub fn new(cfg: &Config, keys: Arc<KeyCache>, store_healthy: Arc<AtomicBool>, writer: SyncSender<Msg>) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Request>(1024);
        let refuser = std::thread::Builder::new().name("refuser".into()).spawn(move || {
            for rq in rx {
                let _ = rq.respond(text(503, "busy"));
            }
        });
        Self {
            keys,
            store_healthy,
            writer,
            permits: Permits::new(cfg.workers),
            body_limit: cfg.body_limit,
            workspace_id: cfg.workspace_id.clone(),
            refuser: Mutex::new(refuser.ok().map(|_| tx)),
        }
    }
}

type Answered = Response<std::io::Cursor<Vec<u8>>>;

/// Adds a header; our names and values are constant ASCII, so the parse cannot fail.
fn with(response: Answered, name: &'static str, value: &'static str) -> Answered {
    match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        Ok(h) => response.with_header(h),
        Err(()) => response,
    }
}

fn json(status: u16, body: String) -> Answered {
    with(Response::from_string(body).with_status_code(status), "Content-Type", "application/json")
}

fn text(status: u16, outcome: &str) -> Answered {
    json(status, format!("{{\"result\":\"{outcome}\"}}"))
}

fn path(rq: &Request) -> &str {
    rq.url().split('?').next().unwrap_or_default()
}

fn has_header(rq: &Request, name: &'static str) -> bool {
    rq.headers().iter().any(|h| h.field.equiv(name))
}

/// True when dropping the request cannot block: tiny_http has already buffered its body (1 KiB
/// or less without `Expect`) or it has none. Otherwise dropping it reads the rest off the socket.
fn body_is_settled(rq: &Request) -> bool {
    match rq.body_length() {
        Some(0) => true,
        Some(n) => n <= 1024 && !has_header(rq, "Expect"),
        None => !has_header(rq, "Transfer-Encoding"),
    }
}

/// Declared bodies above this are never read away. tiny_http 0.12 drains the unread rest of a
/// body when a request is dropped, with one allocation of the whole remaining length: a
/// request declaring `Content-Length: 1000000000000000` aborts the process ("memory allocation
/// failed"). Such requests are answered and their connection deliberately leaked instead.
const DRAIN_MAX: usize = 64 * 1024 * 1024;

fn must_abandon(rq: &Request) -> bool {
    rq.body_length().is_some_and(|n| n > DRAIN_MAX)
}

/// Answers 413 without ever dropping the request (see `DRAIN_MAX`). The connection (two file
/// descriptors and tiny_http's thread for it) stays open until the process exits; only a client
/// talking to the listener directly can cause this, since the proxy caps bodies. If descriptors
/// run out, accepting fails and `serve` exits with an error, for systemd to restart it.
fn abandon(rq: Request) {
    log::warn!("webhook -: 413 declared body of {:?} bytes; connection abandoned", rq.body_length());
    let stream = rq.upgrade("close", text(413, "body too large"));
    std::mem::forget(stream);
}

/// Answers what needs no request thread; hands back `POST /webhook` and anything with a body.
pub fn answer_inline(shared: &Shared, rq: Request) -> Option<Request> {
    if (path(&rq) == "/webhook" && *rq.method() == Method::Post) || !body_is_settled(&rq) {
        return Some(rq);
    }
    simple_route(shared, rq);
    None
}

/// Past the request cap: 503 so Stark Bank retries, without waiting for a body.
pub fn refuse_busy(shared: &Shared, rq: Request) {
    log::warn!("webhook -: too many requests in flight; answered 503");
    if must_abandon(&rq) {
        abandon(rq);
        return;
    }
    if body_is_settled(&rq) {
        let _ = rq.respond(text(503, "busy"));
        return;
    }
    let refuser = shared.refuser.lock().unwrap_or_else(|p| p.into_inner());
    let sent = match refuser.as_ref() {
        Some(tx) => tx.try_send(rq),
        None => Err(mpsc::TrySendError::Disconnected(rq)),
    };
    if let Err(mpsc::TrySendError::Full(rq) | mpsc::TrySendError::Disconnected(rq)) = sent {
        // Last resort: answer here, even if reading the body away takes a while.
        let _ = rq.respond(text(503, "busy"));
    }
}

fn simple_route(shared: &Shared, rq: Request) {
    let started = Instant::now();
    let p = path(&rq).to_string();
    let response = match (p.as_str(), rq.method()) {
        ("/health", Method::Get | Method::Head) => {
            let store = shared.store_healthy.load(Ordering::Relaxed);
            let key = shared.keys.is_loaded();
            let ok = store && key;
            let body = serde_json::json!({
                "status": if ok { "ok" } else { "unavailable" },
                "store": if store { "ok" } else { "unavailable" },
                "public_key": if key { "loaded" } else { "missing" },
            });
            json(if ok { 200 } else { 503 }, body.to_string())
        }
        ("/webhook", _) => with(text(405, "method not allowed"), "Allow", "POST"),
        ("/health", _) => with(text(405, "method not allowed"), "Allow", "GET, HEAD"),
        _ => text(404, "not found"),
    };
    let status = response.status_code().0;
    let _ = rq.respond(response);
    log::debug!("{p}: {status} in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
}

/// A request thread: the webhook itself, or another route whose body must be read away here.
pub fn handle(shared: &Shared, mut rq: Request) {
    if must_abandon(&rq) {
        abandon(rq);
        return;
    }
    if !(path(&rq) == "/webhook" && *rq.method() == Method::Post) {
        simple_route(shared, rq);
        return;
    }
    let started = Instant::now();
    let answer = webhook(shared, &mut rq);
    // Logged before answering, so the log never lags behind what a client has seen.
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match &answer.event {
        Some(e) => log::info!(
            "webhook {} {}/{}: {} {} in {ms:.1} ms",
            e.id,
            e.subscription,
            e.log_type,
            answer.status,
            answer.outcome
        ),
        None => log::info!("webhook -: {} {} in {ms:.1} ms", answer.status, answer.outcome),
    }
    let _ = rq.respond(text(answer.status, answer.outcome));
}

struct Answer {
    status: u16,
    outcome: &'static str,
    event: Option<EventSummary>,
}

fn refuse(status: u16, outcome: &'static str) -> Answer {
    Answer { status, outcome, event: None }
}

fn webhook(shared: &Shared, rq: &mut Request) -> Answer {
    let head: usize = rq.url().len()
        + rq.headers().iter().map(|h| h.field.as_str().as_str().len() + h.value.as_str().len() + 4).sum::<usize>();
    if head > HEADER_LIMIT {
        return refuse(431, "headers too large");
    }
    let limit = shared.body_limit;
    if rq.body_length().is_some_and(|n| n as u64 > limit) {
        return refuse(413, "body too large");
    }
    let signature =
        rq.headers().iter().find(|h| h.field.equiv("Digital-Signature")).map(|h| h.value.as_str().trim().to_string());

    let capacity = rq.body_length().unwrap_or(8 * 1024).min(limit as usize);
    let mut body = Vec::with_capacity(capacity);
    if let Err(e) = rq.as_reader().take(limit + 1).read_to_end(&mut body) {
        log::debug!("reading a webhook body failed: {e}");
        return refuse(400, "incomplete body");
    }
    if body.len() as u64 > limit {
        return refuse(413, "body too large");
    }

    // Verify before anything else looks at the body.
    let signature = match signature.filter(|s| !s.is_empty()) {
        None => return refuse(401, "missing signature"),
        Some(s) => s,
    };
    if !shared.keys.is_loaded() {
        // Fetches happen on the key-loader thread (and on a mismatch, rate-limited, in verify).
        return refuse(503, "public key unavailable");
    }
    let verified = {
        let _permit = shared.permits.acquire();
        shared.keys.verify(&body, Some(&signature))
    };
    let text = match verified {
        Ok(Signed::Raw) => body,
        Ok(Signed::Canonical(canon)) => canon.into_bytes(),
        Err(WebhookAuthError::Missing) => return refuse(401, "missing signature"),
        Err(WebhookAuthError::Malformed) => return refuse(401, "malformed signature"),
        Err(WebhookAuthError::Invalid) => return refuse(401, "invalid signature"),
        Err(WebhookAuthError::KeyUnavailable(why)) => {
            log::warn!("Stark Bank's public key is unavailable: {why}");
            return refuse(503, "public key unavailable");
        }
    };

    let summary = match event::parse_body(&text) {
        Ok(summary) => summary,
        Err(e) => {
            log::debug!("signed but malformed event: {e}");
            return refuse(400, "malformed event");
        }
    };
    if let Some(ours) = &shared.workspace_id
        && summary.workspace_id.as_deref() != Some(ours.as_str())
    {
        return Answer { event: Some(summary), ..refuse(403, "other workspace") };
    }

    let (reply_tx, reply_rx) = mpsc::sync_channel::<Verdict>(1);
    let new =
        NewEvent { summary: summary.clone(), body: text, signature: Some(signature), source: EventSource::Webhook };
    if shared.writer.send(Msg::Store(Box::new(new), reply_tx)).is_err() {
        return Answer { event: Some(summary), ..refuse(503, "store unavailable") };
    }
    let (status, outcome) = match reply_rx.recv() {
        Ok(Ok(Inserted::New)) => (200, "stored"),
        Ok(Ok(Inserted::Duplicate)) => (200, "duplicate"),
        Ok(Err(())) | Err(_) => (503, "store unavailable"),
    };
    Answer { status, outcome, event: Some(summary) }
}
