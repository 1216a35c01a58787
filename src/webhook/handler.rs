//! One request, from routing to its answer and its log line.
//!
//! Owns: the status of every outcome (200 stored or duplicate, 400 malformed, 401 unsigned or
//! forged, 403 other workspace, 404/405, 413 too large, 431 headers too large (hyper, before we
//! see the request), 503 store or key unavailable or too busy) and the one log line per webhook
//! request (event id, subscription, log type, outcome, latency; never bodies, names, tax ids or
//! keys). Does not own: connections, limits on them, or timeouts (`httpd`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::time::Instant;

use super::Config;
use super::permits::Permits;
use super::writer::{Msg, Verdict};
use crate::httpd::{self, Decision, Head, Request, Response};
use crate::starkbank::event::{self, EventSummary};
use crate::starkbank::verify::{KeyCache, Signed, WebhookAuthError};
use crate::store::{EventSource, Inserted, NewEvent};

/// The listener's routes, shared by every request.
pub struct Webhooks {
    keys: Arc<KeyCache>,
    store_healthy: Arc<AtomicBool>,
    writer: SyncSender<Msg>,
    permits: Permits,
    body_limit: u64,
    workspace_id: Option<String>,
}

impl Webhooks {
    pub fn new(cfg: &Config, keys: Arc<KeyCache>, store_healthy: Arc<AtomicBool>, writer: SyncSender<Msg>) -> Self {
        Self {
            keys,
            store_healthy,
            writer,
            permits: Permits::new(cfg.workers),
            body_limit: cfg.body_limit,
            workspace_id: cfg.workspace_id.clone(),
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
            ("/webhook", _) => Decision::Answer(result(405, "method not allowed").with_header("Allow", "POST")),
            ("/health", _) => Decision::Answer(result(405, "method not allowed").with_header("Allow", "GET, HEAD")),
            _ => Decision::Answer(result(404, "not found")),
        }
    }

    fn too_large(&self, head: &Head<'_>) -> Response {
        log::info!("webhook -: 413 body too large (declared {:?} bytes)", head.content_length);
        result(413, "body too large")
    }

    fn busy(&self) -> Response {
        log::warn!("webhook -: too many requests in flight; answered 503");
        result(503, "busy")
    }

    fn handle(&self, rq: Request) -> Response {
        let started = Instant::now();
        let answer = self.webhook(rq);
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

        let summary = match event::parse_body(&text) {
            Ok(summary) => summary,
            Err(e) => {
                log::debug!("signed but malformed event: {e}");
                return refuse(400, "malformed event");
            }
        };
        if let Some(ours) = &self.workspace_id
            && summary.workspace_id.as_deref() != Some(ours.as_str())
        {
            return Answer { event: Some(summary), ..refuse(403, "other workspace") };
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
