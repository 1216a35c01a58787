//! The HTTP side: routing and the real API's wire rules (authentication on every /v2 request,
//! 200 for every success, 400 with `{"errors": [...]}` for input errors, singular and plural
//! wrappers, cursors, `/v2//path`, Python's query encoding, tag lowercasing, tax id checks), plus
//! the unauthenticated `/_sandbox/*` control routes. Owns validation, and when a request takes
//! the state lock (`lock`; a slow commit lets go of it while it waits); the model is `state`.
//!
//! Reads and checks the wire JSON itself, never through the client's `starkbank::resources`
//! (nor its tax-id code: `taxid`), on purpose: the emulator is the oracle the client is tested
//! against, and code shared with the client would agree with it whatever the real API says.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::auth::{self, Headers};
use super::faults;
use super::lock::{StateGuard, lock};
use super::state::{ForeignEvent, NewInvoice, NewTransfer, State};
use super::{PayOptions, Shared, taxid};
use crate::starkbank::time;

/// Stark Bank accepts at most this many invoices or transfers per create request. The
/// emulator's own figure, not the client's `starkbank::resources::MAX_BATCH`: a client that
/// changed its own must be refused here as the real API would refuse it.
const MAX_BATCH: usize = 100;
/// Largest request body read; more is refused with 400 `invalidJson`.
const BODY_LIMIT: u64 = 4 * 1024 * 1024;
/// Largest amount accepted, in cents (the real limit is undocumented; 10^15 is refused there).
const MAX_AMOUNT: i64 = 100_000_000_000_000;

/// An error answer: status and `(code, message)` pairs.
#[derive(Debug, Clone)]
pub struct ApiErr {
    pub status: u16,
    pub errors: Vec<(String, String)>,
}

impl ApiErr {
    pub fn bad(code: &str, message: impl Into<String>) -> Self {
        Self { status: 400, errors: vec![(code.to_string(), message.into())] }
    }

    fn many(errors: Vec<(String, String)>) -> Self {
        Self { status: 400, errors }
    }

    fn internal() -> Self {
        Self { status: 500, errors: vec![("internalServerError".into(), "Houston, we have a problem.".into())] }
    }

    fn body(&self) -> Value {
        json!({"errors": self.errors.iter().map(|(c, m)| json!({"code": c, "message": m})).collect::<Vec<_>>()})
    }
}

type Answer = Result<Value, ApiErr>;

/// A parsed query string (`+` is a space, `%2C` a comma).
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(q: &str) -> Self {
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            urlencoding::decode(&s).map(|c| c.into_owned()).unwrap_or(s)
        };
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (decode(k), decode(v)),
                    None => (decode(p), String::new()),
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn list(&self, key: &str) -> Option<Vec<String>> {
        self.get(key).map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
    }

    fn tags(&self) -> Option<Vec<String>> {
        self.list("tags").map(|t| t.into_iter().map(|s| s.to_lowercase()).collect())
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ApiErr> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(ApiErr::bad("invalidParameter", format!("{key}={v} is not true or false"))),
        }
    }

    /// `after`/`before`: a date (whole day, inclusive) or a datetime.
    fn window(&self) -> Result<Window, ApiErr> {
        let bound = |key: &str, end: bool| -> Result<Option<DateTime<Utc>>, ApiErr> {
            let Some(v) = self.get(key) else { return Ok(None) };
            if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
                let day = if end { d.succ_opt().unwrap_or(d) } else { d };
                return Ok(day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()));
            }
            time::parse(v).map(Some).ok_or_else(|| ApiErr::bad("invalidDate", format!("{key}={v} is not a date")))
        };
        Ok(Window { after: bound("after", false)?, before: bound("before", true)? })
    }

    fn limit(&self) -> Result<usize, ApiErr> {
        match self.get("limit") {
            None => Ok(100),
            Some(v) => v
                .parse::<i64>()
                .map(|n| n.clamp(1, 100) as usize)
                .map_err(|_| ApiErr::bad("invalidLimit", format!("limit={v} is not an integer"))),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    after: Option<DateTime<Utc>>,
    /// Exclusive.
    before: Option<DateTime<Utc>>,
}

impl Window {
    fn contains(&self, t: DateTime<Utc>) -> bool {
        self.after.is_none_or(|a| t >= a) && self.before.is_none_or(|b| t < b)
    }
}

fn encode_cursor(seq: u64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("emulator-cursor:{seq}"))
}

fn decode_cursor(c: &str) -> Option<u64> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c.trim()).ok()?;
    String::from_utf8(raw).ok()?.strip_prefix("emulator-cursor:")?.parse().ok()
}

/// One page, newest first: `{"cursor": ..., key: [...]}`.
/// One page of a list, newest first. Only the page's items are turned into JSON, so paging
/// through a long list costs the page, not the list.
fn page<T>(mut items: Vec<(u64, T)>, q: &Query, key: &str, json: impl Fn(T) -> Value) -> Answer {
    items.sort_by_key(|b| std::cmp::Reverse(b.0));
    if let Some(c) = q.get("cursor") {
        let bound = decode_cursor(c).ok_or_else(|| ApiErr::bad("invalidCursor", format!("cursor {c} is not valid")))?;
        items.retain(|(s, _)| *s < bound);
    }
    let limit = q.limit()?;
    let more = items.len() > limit;
    items.truncate(limit);
    let cursor = if more { items.last().map(|(s, _)| json!(encode_cursor(*s))) } else { None };
    let mut out = Map::new();
    out.insert("cursor".into(), cursor.unwrap_or(Value::Null));
    out.insert(key.into(), Value::Array(items.into_iter().map(|(_, v)| json(v)).collect()));
    Ok(Value::Object(out))
}

fn id_filter(q: &Query, key: &str) -> impl Fn(&str) -> bool {
    let ids = q.list(key);
    move |id| ids.as_ref().is_none_or(|ids| ids.iter().any(|i| i == id))
}

fn tag_filter(q: &Query) -> impl Fn(&[String]) -> bool {
    let tags = q.tags();
    move |have| tags.as_ref().is_none_or(|want| want.iter().any(|t| have.contains(t)))
}

// ---- the server's entry point ----------------------------------------------------------------

/// The emulator's routes, as an `httpd` handler.
pub struct Routes(pub std::sync::Arc<Shared>);

impl crate::httpd::Handler for Routes {
    fn head(&self, _head: &crate::httpd::Head<'_>) -> crate::httpd::Decision {
        crate::httpd::Decision::Read { limit: BODY_LIMIT }
    }

    fn too_large(&self, _head: &crate::httpd::Head<'_>) -> crate::httpd::Response {
        let e = ApiErr::bad("invalidJson", format!("Body larger than {BODY_LIMIT} bytes"));
        crate::httpd::Response::json(e.status, e.body().to_string())
    }

    fn handle(&self, request: crate::httpd::Request) -> crate::httpd::Response {
        let (status, value) = serve_one(&self.0, &request);
        crate::httpd::Response::json(status, serde_json::to_string(&value).unwrap_or_default())
    }
}

/// Routes and answers one request. Never panics on input.
fn serve_one(shared: &Shared, request: &crate::httpd::Request) -> (u16, Value) {
    let method = request.method.to_uppercase();
    let path = collapse_slashes(&request.path);
    let query = request.query.as_str();
    let header = |name: &'static str| request.header(name).map(str::to_string);
    let (access_id, access_time, signature) = (header("Access-Id"), header("Access-Time"), header("Access-Signature"));
    let body = &request.body;

    if let Some(rest) = path.strip_prefix("/_sandbox/") {
        match control(shared, &method, rest, body) {
            Ok(v) => (200, v),
            Err(e) => (e.status, e.body()),
        }
    } else if let Some(rest) = path.strip_prefix("/v2/") {
        let latency = lock(shared).faults.latency_ms;
        if latency > 0 {
            std::thread::sleep(std::time::Duration::from_millis(latency));
        }
        let headers = Headers {
            access_id: access_id.as_deref(),
            access_time: access_time.as_deref(),
            signature: signature.as_deref(),
        };
        let public = rest == "public-key" && method == "GET" && access_id.is_none();
        let auth =
            if public { Ok(None) } else { auth::check(&shared.projects, headers, body, shared.max_skew).map(Some) };
        let mut state = lock(shared);
        let now = shared.clock.now();
        let error_rate = state.faults.error_rate;
        let result = match &auth {
            Err(e) => {
                state.auth_failures += 1;
                Err(ApiErr::bad("invalidCredentials", e.to_string()))
            }
            Ok(_) if faults::roll(&mut state.rng, error_rate) => Err(ApiErr::internal()),
            Ok(_) => v2(shared, &mut state, &method, rest, &Query::parse(query), body, now),
        };
        let (status, value) = match result {
            Ok(v) => (200, v),
            Err(e) => (e.status, e.body()),
        };
        state.requests.push(super::snapshot::SnapRequest {
            method: method.clone(),
            path: path.clone(),
            query: query.to_string(),
            access_id: access_id.clone(),
            authenticated: matches!(auth, Ok(Some(_))),
            status,
            error: value.pointer("/errors/0/code").and_then(Value::as_str).map(str::to_string),
        });
        (status, value)
    } else {
        (404, ApiErr::bad("routeNotFound", format!("{method} {path} is not a route of this emulator")).body())
    }
}

/// `/v2//public-key` -> `/v2/public-key` (the Python SDK sends the former).
fn collapse_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

// ---- /v2 --------------------------------------------------------------------------------------

fn v2(
    shared: &Shared,
    s: &mut StateGuard<'_>,
    method: &str,
    rest: &str,
    q: &Query,
    body: &[u8],
    now: DateTime<Utc>,
) -> Answer {
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", ["public-key"]) => Ok(json!({"cursor": null, "publicKeys": [
            {"content": shared.public_key_pem, "created": time::format(shared.key_created)}]})),

        ("POST", ["invoice"]) => create_invoices(shared, s, body, now),
        ("GET", ["invoice"]) => list_invoices(s, q),
        ("GET", ["invoice", "log"]) => list_logs(s, q, true),
        ("GET", ["invoice", "log", id]) => get_log(s, id, true),
        ("GET", ["invoice", id]) => s
            .invoice(id)
            .map(|i| json!({"invoice": State::invoice_json(i)}))
            .ok_or_else(|| ApiErr::bad("invalidInvoice", format!("Invoice {id} not found"))),
        ("PATCH", ["invoice", id]) => update_invoice(s, id, body, now),

        ("POST", ["transfer"]) => create_transfers(shared, s, body, now),
        ("GET", ["transfer"]) => list_transfers(s, q),
        ("GET", ["transfer", "log"]) => list_logs(s, q, false),
        ("GET", ["transfer", "log", id]) => get_log(s, id, false),
        ("GET", ["transfer", id]) => s
            .transfer(id)
            .map(|t| json!({"transfer": State::transfer_json(t)}))
            .ok_or_else(|| ApiErr::bad("invalidTransfer", format!("Transfer {id} not found"))),
        ("DELETE", ["transfer", id]) => {
            s.cancel_transfer(id, now).map(|t| json!({"transfer": t})).map_err(|(code, msg)| ApiErr::bad(code, msg))
        }

        ("GET", ["event"]) => list_events(s, q),
        ("GET", ["event", "attempt"]) => list_attempts(s, q),
        ("GET", ["event", "attempt", id]) => s
            .attempts
            .iter()
            .find(|a| a.id == *id)
            .map(|a| json!({"attempt": a.json()}))
            .ok_or_else(|| ApiErr::bad("invalidEventAttempt", format!("Event attempt {id} not found"))),
        ("GET", ["event", id]) => event_index(s, id).map(|i| json!({"event": s.event_json(&s.events[i])})),
        ("PATCH", ["event", id]) => {
            let i = event_index(s, id)?;
            let obj = object(body)?;
            if let Some(k) = obj.keys().find(|k| *k != "isDelivered") {
                return Err(ApiErr::bad("invalidJson", format!("Unknown field {k}; only isDelivered can be updated")));
            }
            let v = obj
                .get("isDelivered")
                .and_then(Value::as_bool)
                .ok_or_else(|| ApiErr::bad("invalidJson", "isDelivered must be a boolean"))?;
            s.events[i].is_delivered = v;
            Ok(json!({"event": s.event_json(&s.events[i])}))
        }
        ("DELETE", ["event", id]) => {
            let i = event_index(s, id)?;
            s.events[i].deleted = true;
            Ok(json!({"event": s.event_json(&s.events[i])}))
        }

        ("POST", ["webhook"]) => create_webhook(s, body),
        ("GET", ["webhook"]) => {
            let items = s.webhooks.iter().filter(|w| !w.deleted).map(|w| (w.seq, w)).collect();
            page(items, q, "webhooks", |w| w.json())
        }
        ("GET", ["webhook", id]) => webhook_index(s, id).map(|i| json!({"webhook": s.webhooks[i].json()})),
        ("DELETE", ["webhook", id]) => {
            let i = webhook_index(s, id)?;
            s.webhooks[i].deleted = true;
            Ok(json!({"webhook": s.webhooks[i].json()}))
        }
        _ => Err(ApiErr {
            status: 404,
            errors: vec![("routeNotFound".into(), format!("{method} /v2/{rest} is not emulated"))],
        }),
    }
}

fn event_index(s: &State, id: &str) -> Result<usize, ApiErr> {
    s.events
        .iter()
        .position(|e| e.id == id && !e.deleted)
        .ok_or_else(|| ApiErr::bad("invalidEvent", format!("Event {id} not found")))
}

fn webhook_index(s: &State, id: &str) -> Result<usize, ApiErr> {
    s.webhooks
        .iter()
        .position(|w| w.id == id && !w.deleted)
        .ok_or_else(|| ApiErr::bad("invalidWebhookId", format!("Webhook {id} not found")))
}

fn list_invoices(s: &State, q: &Query) -> Answer {
    let (w, ids, tags, status) = (q.window()?, id_filter(q, "ids"), tag_filter(q), q.get("status"));
    let items = s
        .invoices
        .iter()
        .filter(|i| w.contains(i.created) && ids(&i.id) && tags(&i.tags) && status.is_none_or(|st| st == i.status))
        .map(|i| (i.seq, i))
        .collect();
    page(items, q, "invoices", State::invoice_json)
}

fn list_transfers(s: &State, q: &Query) -> Answer {
    let (w, ids, tags, status) = (q.window()?, id_filter(q, "ids"), tag_filter(q), q.get("status"));
    let tax = q.get("taxId").and_then(taxid::normalize);
    let items = s
        .transfers
        .iter()
        .filter(|t| {
            (w.contains(t.created) || w.contains(t.updated))
                && ids(&t.id)
                && tags(&t.tags)
                && status.is_none_or(|st| st == t.status)
                && tax.as_ref().is_none_or(|x| *x == t.tax_id)
        })
        .map(|t| (t.seq, t))
        .collect();
    page(items, q, "transfers", State::transfer_json)
}

fn list_logs(s: &State, q: &Query, invoice: bool) -> Answer {
    let (logs, key) = if invoice { (&s.invoice_logs, "invoiceIds") } else { (&s.transfer_logs, "transferIds") };
    let (w, ids, types) = (q.window()?, id_filter(q, key), q.list("types"));
    let items = logs
        .iter()
        .filter(|l| {
            w.contains(l.created) && ids(&l.resource_id) && types.as_ref().is_none_or(|t| t.contains(&l.log_type))
        })
        .map(|l| (l.seq, l))
        .collect();
    page(items, q, "logs", |l| l.json())
}

fn get_log(s: &State, id: &str, invoice: bool) -> Answer {
    let logs = if invoice { &s.invoice_logs } else { &s.transfer_logs };
    let code = if invoice { "invalidInvoiceLog" } else { "invalidTransferLog" };
    logs.iter()
        .find(|l| l.id == id)
        .map(|l| json!({"log": l.json()}))
        .ok_or_else(|| ApiErr::bad(code, format!("Log {id} not found")))
}

fn list_events(s: &State, q: &Query) -> Answer {
    let (w, delivered) = (q.window()?, q.bool("isDelivered")?);
    let items = s
        .events
        .iter()
        .filter(|e| !e.deleted && w.contains(e.created) && delivered.is_none_or(|d| d == e.is_delivered))
        .map(|e| (e.seq, e))
        .collect();
    page(items, q, "events", |e| s.event_json(e))
}

fn list_attempts(s: &State, q: &Query) -> Answer {
    let (w, events, hooks) = (q.window()?, id_filter(q, "eventIds"), id_filter(q, "webhookIds"));
    let items = s
        .attempts
        .iter()
        .filter(|a| w.contains(a.created) && events(&a.event_id) && hooks(&a.webhook_id))
        .map(|a| (a.seq, a))
        .collect();
    page(items, q, "attempts", |a| a.json())
}

// ---- bodies -----------------------------------------------------------------------------------

fn object(body: &[u8]) -> Result<Map<String, Value>, ApiErr> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiErr::bad("invalidJson", "The body must be a JSON object")),
    }
}

/// The list under `key`, at most `MAX_BATCH` long (more: one `invalidJson` for the request).
fn batch(body: &[u8], key: &str) -> Result<Vec<Value>, ApiErr> {
    let mut obj = object(body)?;
    let Some(Value::Array(items)) = obj.remove(key) else {
        return Err(ApiErr::bad("invalidJson", format!("The body must have a list `{key}`")));
    };
    if items.is_empty() {
        return Err(ApiErr::bad("invalidJson", format!("`{key}` is empty")));
    }
    if items.len() > MAX_BATCH {
        return Err(ApiErr::bad(
            "invalidJson",
            format!("`{key}` has {} elements; at most {MAX_BATCH} are accepted per request", items.len()),
        ));
    }
    Ok(items)
}

/// Field readers that push `(code, message)` errors for element `i`.
struct Fields<'a> {
    i: usize,
    obj: &'a Map<String, Value>,
    errors: &'a mut Vec<(String, String)>,
}

impl Fields<'_> {
    fn err(&mut self, code: &str, message: String) {
        self.errors.push((code.to_string(), format!("Element {}: {message}", self.i)));
    }

    fn int(&mut self, key: &str, code: &str, min: i64, max: i64, required: bool) -> Option<i64> {
        match self.obj.get(key) {
            None | Some(Value::Null) if !required => None,
            Some(Value::Number(n)) if n.as_i64().is_some_and(|v| (min..=max).contains(&v)) => n.as_i64(),
            other => {
                self.err(code, format!("{key} must be an integer from {min} to {max}, got {}", show(other)));
                None
            }
        }
    }

    fn float(&mut self, key: &str, code: &str, min: f64, max: f64) -> Option<f64> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_f64().is_some_and(|v| v >= min && v <= max) => n.as_f64(),
            other => {
                self.err(code, format!("{key} must be a number from {min} to {max}, got {}", show(other)));
                None
            }
        }
    }

    fn string(&mut self, key: &str, code: &str, required: bool) -> Option<String> {
        match self.obj.get(key) {
            None | Some(Value::Null) if !required => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            other => {
                self.err(code, format!("{key} must be a non-empty string, got {}", show(other)));
                None
            }
        }
    }

    fn tax_id(&mut self) -> Option<String> {
        match self.obj.get("taxId") {
            Some(Value::String(s)) => taxid::normalize(s).or_else(|| {
                self.err("invalidTaxId", format!("taxId {s} is not a valid CPF or CNPJ"));
                None
            }),
            other => {
                self.err("invalidTaxId", format!("taxId must be a CPF or CNPJ string, got {}", show(other)));
                None
            }
        }
    }

    fn tags(&mut self) -> Vec<String> {
        match self.obj.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                a.iter().filter_map(Value::as_str).map(str::to_lowercase).collect()
            }
            other => {
                self.err("invalidTags", format!("tags must be a list of strings, got {}", show(other)));
                Vec::new()
            }
        }
    }

    fn date(&mut self, key: &str, code: &str) -> Option<DateTime<Utc>> {
        self.date_as(key, code, parse_due)
    }

    /// A date or datetime, with `parse` saying what a date-only value means.
    fn date_as(&mut self, key: &str, code: &str, parse: fn(&str) -> Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => parse(s).or_else(|| {
                self.err(code, format!("{key} {s} is not a date or datetime"));
                None
            }),
            other => {
                self.err(code, format!("{key} must be a date or datetime string, got {}", show(other)));
                None
            }
        }
    }

    fn list(&mut self, key: &str, code: &str) -> Vec<Value> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            other => {
                self.err(code, format!("{key} must be a list, got {}", show(other)));
                Vec::new()
            }
        }
    }

    fn unknown(&mut self, allowed: &[&str]) {
        let extra: Vec<String> = self.obj.keys().filter(|k| !allowed.contains(&k.as_str())).cloned().collect();
        for k in extra {
            self.err("invalidJson", format!("unknown field {k}"));
        }
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "nothing".to_string(), |v| v.to_string())
}

/// A datetime as given, or a date as the end of that day in Brasília (UTC-3), which is how a
/// date-only due is read.
fn parse_due(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let next = d.succ_opt()?.and_hms_micro_opt(2, 59, 59, 999_999)?;
        return Some(next.and_utc());
    }
    time::parse(s)
}

/// The hour (UTC) a date-only transfer `scheduled` stands for: the real API was seen echoing a
/// date-only `scheduled` as `T11:00:00+00:00` (08:00 in Brasília).
const SCHEDULED_DATE_HOUR: u32 = 11;

/// A datetime as given, or a date as `SCHEDULED_DATE_HOUR` UTC of that day.
fn parse_scheduled(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(SCHEDULED_DATE_HOUR, 0, 0)?.and_utc());
    }
    time::parse(s)
}

const INVOICE_FIELDS: &[&str] = &[
    "amount",
    "taxId",
    "name",
    "due",
    "expiration",
    "fine",
    "interest",
    "discounts",
    "descriptions",
    "tags",
    "rules",
    "splits",
];

/// Validates every element of a create batch with `parse`, which reads its fields through
/// `Fields` (recording one error per bad field). Stark Bank refuses the whole batch when any
/// element is bad, so this returns either every draft or every error.
fn parse_batch<T>(
    body: &[u8],
    key: &str,
    allowed: &[&str],
    mut parse: impl FnMut(&mut Fields<'_>) -> Option<T>,
) -> Result<Vec<T>, ApiErr> {
    let items = batch(body, key)?;
    let mut errors = Vec::new();
    let mut drafts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            errors.push(("invalidJson".into(), format!("Element {i}: not an object")));
            continue;
        };
        let before = errors.len();
        let mut f = Fields { i, obj, errors: &mut errors };
        f.unknown(allowed);
        let draft = parse(&mut f);
        if let Some(d) = draft
            && errors.len() == before
        {
            drafts.push(d);
        }
    }
    if errors.is_empty() { Ok(drafts) } else { Err(ApiErr::many(errors)) }
}

/// 429 when a `too_many_requests_next_*` counter says so (before the body is validated).
fn too_many_requests(counter: &mut u32, what: &str) -> Result<(), ApiErr> {
    if !faults::take(counter) {
        return Ok(());
    }
    Err(ApiErr {
        status: 429,
        errors: vec![(
            faults::TOO_MANY_REQUESTS_CODE.into(),
            format!("Too many {what} requests; wait a moment and try again"),
        )],
    })
}

/// A slow commit when `counter` says so: lets go of the state for `slow_commit_ms` real
/// milliseconds (every other request is served meanwhile), takes it back, and returns the
/// simulated time to commit at.
fn slow_commit(
    shared: &Shared,
    s: &mut StateGuard<'_>,
    counter: fn(&mut faults::Faults) -> &mut u32,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    if !faults::take(counter(&mut s.faults)) {
        return now;
    }
    let wait = Duration::from_millis(s.faults.slow_commit_ms);
    s.unlocked(|| std::thread::sleep(wait));
    shared.clock.now()
}

fn create_invoices(shared: &Shared, s: &mut StateGuard<'_>, body: &[u8], now: DateTime<Utc>) -> Answer {
    too_many_requests(&mut s.faults.too_many_requests_next_invoices, "invoice creation")?;
    if faults::take(&mut s.faults.error_next_invoices) {
        return Err(ApiErr::internal());
    }
    let drafts = parse_batch(body, "invoices", INVOICE_FIELDS, |f| {
        let amount = f.int("amount", "invalidAmount", 0, MAX_AMOUNT, true);
        let tax_id = f.tax_id();
        let name = f.string("name", "invalidName", true);
        let due = f.date("due", "invalidDue");
        let expiration = f.int("expiration", "invalidExpiration", 0, 100 * 365 * 86_400, false);
        let fine = f.float("fine", "invalidFine", 0.0, 20.0);
        let interest = f.float("interest", "invalidInterest", 0.0, 10.0);
        let discounts = discounts(f, due.unwrap_or(now + chrono::Duration::days(2)));
        let descriptions = f.list("descriptions", "invalidDescription");
        if descriptions.len() > 15
            || descriptions.iter().any(|d| d.get("key").and_then(Value::as_str).is_none_or(str::is_empty))
        {
            f.err("invalidDescription", "descriptions: at most 15 entries, each with a non-empty key".into());
        }
        let tags = f.tags();
        let rules = f.list("rules", "invalidRule");
        let splits = f.list("splits", "invalidSplit");
        Some(NewInvoice {
            amount: amount?,
            name: name?,
            tax_id: tax_id?,
            due,
            expiration,
            fine,
            interest,
            discounts,
            descriptions,
            tags,
            rules,
            splits,
        })
    })?;
    if faults::take(&mut s.faults.refuse_next_invoices) {
        let code = faults::text(&s.faults.refuse_code, faults::REFUSE_CODE);
        let message = faults::text(&s.faults.refuse_message, faults::REFUSE_MESSAGE);
        return Err(ApiErr::many(
            (0..drafts.len()).map(|i| (code.clone(), format!("Element {i}: {message}"))).collect(),
        ));
    }
    let now = slow_commit(shared, s, |f| &mut f.slow_commit_next_invoices, now);
    let invoices = s.create_invoices(drafts, now);
    let rate = s.faults.commit_then_500_invoice;
    let fail = faults::take(&mut s.faults.commit_then_500_next_invoices) || faults::roll(&mut s.rng, rate);
    if fail {
        return Err(ApiErr::internal());
    }
    Ok(json!({"message": "Invoice(s) successfully created", "invoices": invoices}))
}

/// Up to 5 discounts, percentages in (0, 100), decreasing as the date gets later, each before due.
fn discounts(f: &mut Fields<'_>, due: DateTime<Utc>) -> Vec<(f64, DateTime<Utc>)> {
    let raw = f.list("discounts", "invalidDiscount");
    let mut out = Vec::new();
    for d in &raw {
        let p = d.get("percentage").and_then(Value::as_f64).filter(|p| *p > 0.0 && *p < 100.0);
        let at = d.get("due").and_then(Value::as_str).and_then(parse_due);
        match (p, at) {
            (Some(p), Some(at)) if at < due => out.push((p, at)),
            (Some(_), Some(_)) => f.err("invalidDiscountDate", "a discount date must be before the due date".into()),
            _ => f.err("invalidDiscount", format!("discount {d} needs a percentage in (0, 100) and a due date")),
        }
    }
    if raw.len() > 5 {
        f.err("invalidDiscount", "at most 5 discounts".into());
    }
    let mut sorted = out.clone();
    sorted.sort_by_key(|a| a.1);
    if sorted.windows(2).any(|w| w[1].0 >= w[0].0 || w[1].1 == w[0].1) {
        f.err("invalidDiscount", "discount percentages must decrease as their dates get later".into());
    }
    out
}

fn update_invoice(s: &mut State, id: &str, body: &[u8], now: DateTime<Utc>) -> Answer {
    if s.invoice(id).is_none() {
        return Err(ApiErr::bad("invalidInvoice", format!("Invoice {id} not found")));
    }
    let obj = object(body)?;
    let mut errors = Vec::new();
    let mut f = Fields { i: 0, obj: &obj, errors: &mut errors };
    f.unknown(&["status", "amount", "due", "expiration"]);
    let status = f.string("status", "invalidStatus", false);
    let amount = f.int("amount", "invalidAmount", 0, MAX_AMOUNT, false);
    let due = f.date("due", "invalidDue");
    let expiration = f.int("expiration", "invalidExpiration", 0, 100 * 365 * 86_400, false);
    if status.as_deref().is_some_and(|st| st != "canceled") {
        f.err("invalidStatus", "status can only be set to canceled".into());
    }
    if !errors.is_empty() {
        // Messages of a single-object body do not need the element prefix.
        let errors = errors.into_iter().map(|(c, m)| (c, m.trim_start_matches("Element 0: ").to_string())).collect();
        return Err(ApiErr::many(errors));
    }
    s.update_invoice(id, status.is_some(), amount, due, expiration, now)
        .map(|inv| json!({"invoice": inv}))
        .map_err(|(code, msg)| ApiErr::bad(code, msg))
}

const TRANSFER_FIELDS: &[&str] = &[
    "amount",
    "name",
    "taxId",
    "bankCode",
    "branchCode",
    "accountNumber",
    "accountType",
    "externalId",
    "scheduled",
    "description",
    "displayDescription",
    "tags",
    "rules",
    "metadata",
];

fn create_transfers(shared: &Shared, s: &mut StateGuard<'_>, body: &[u8], now: DateTime<Utc>) -> Answer {
    too_many_requests(&mut s.faults.too_many_requests_next_transfers, "transfer creation")?;
    if faults::take(&mut s.faults.error_next_transfers) {
        return Err(ApiErr::internal());
    }
    let drafts = parse_batch(body, "transfers", TRANSFER_FIELDS, |f| {
        let amount = f.int("amount", "invalidAmount", 1, MAX_AMOUNT, true);
        let name = f.string("name", "invalidName", true);
        let tax_id = f.tax_id();
        let bank_code = f.string("bankCode", "invalidBankCode", true);
        if bank_code.as_ref().is_some_and(|b| !(b.chars().all(|c| c.is_ascii_digit()) && matches!(b.len(), 1..=3 | 8)))
        {
            f.err("invalidBankCode", "bankCode must be an 8-digit ISPB (Pix) or a 1-3 digit bank code (TED)".into());
        }
        let account_like = |v: &String| v.chars().all(|c| c.is_ascii_digit() || c == '-');
        let branch_code = f.string("branchCode", "invalidBranchCode", true);
        if branch_code.as_ref().is_some_and(|b| !account_like(b)) {
            f.err("invalidBranchCode", "branchCode must be digits, with '-' before a check digit".into());
        }
        let account_number = f.string("accountNumber", "invalidAccountNumber", true);
        if account_number.as_ref().is_some_and(|b| !account_like(b)) {
            f.err("invalidAccountNumber", "accountNumber must be digits, with '-' before the check digit".into());
        }
        let account_type = f.string("accountType", "invalidAccountType", false).unwrap_or_else(|| "checking".into());
        if !matches!(account_type.as_str(), "checking" | "savings" | "salary" | "payment") {
            f.err(
                "invalidAccountType",
                format!("accountType {account_type} is not checking, savings, salary or payment"),
            );
        }
        let external_id = f.string("externalId", "invalidExternalId", false);
        let scheduled = f.date_as("scheduled", "invalidScheduled", parse_scheduled);
        let description = f.string("description", "invalidDescription", false);
        let display_description = f.string("displayDescription", "invalidDisplayDescription", false);
        let tags = f.tags();
        let rules = f.list("rules", "invalidRule");
        let metadata = f.obj.get("metadata").cloned();
        Some(NewTransfer {
            amount: amount?,
            name: name?,
            tax_id: tax_id?,
            bank_code: bank_code?,
            branch_code: branch_code?,
            account_number: account_number?,
            account_type,
            external_id,
            scheduled,
            description,
            display_description,
            tags,
            rules,
            metadata,
        })
    })?;
    if faults::take(&mut s.faults.refuse_next_transfers) {
        let code = faults::text(&s.faults.refuse_code, faults::REFUSE_CODE);
        let message = faults::text(&s.faults.refuse_message, faults::REFUSE_MESSAGE);
        return Err(ApiErr::many(
            (0..drafts.len()).map(|i| (code.clone(), format!("Element {i}: {message}"))).collect(),
        ));
    }
    // Duplicates are judged at commit, so a slow commit sees what landed while it waited.
    let now = slow_commit(shared, s, |f| &mut f.slow_commit_next_transfers, now);
    let transfers = s.create_transfers(drafts, now).map_err(|refusals| {
        ApiErr::many(
            refusals.into_iter().map(|r| (r.code.to_string(), format!("Element {}: {}", r.index, r.message))).collect(),
        )
    })?;
    let rate = s.faults.commit_then_500_transfer;
    let fail = faults::take(&mut s.faults.commit_then_500_next_transfers) || faults::roll(&mut s.rng, rate);
    if fail {
        return Err(ApiErr::internal());
    }
    Ok(json!({"message": "Transfer(s) successfully created", "transfers": transfers}))
}

/// Subscriptions the real API accepts (OAS list plus the SDK README's).
const SUBSCRIPTIONS: &[&str] = &[
    "deposit",
    "invoice",
    "brcode-payment",
    "transfer",
    "utility-payment",
    "boleto",
    "boleto-payment",
    "darf-payment",
    "payment-request",
    "boleto-holmes",
    "tax-payment",
    "invoice-pull-request",
    "invoice-pull-subscription",
];

fn create_webhook(s: &mut State, body: &[u8]) -> Answer {
    let obj = object(body)?;
    let mut errors = Vec::new();
    let mut f = Fields { i: 0, obj: &obj, errors: &mut errors };
    f.unknown(&["url", "subscriptions"]);
    let url = f.string("url", "invalidUrl", true);
    if url.as_ref().is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
        f.err("invalidUrl", "url must be an http(s) URL".into());
    }
    let subs: Vec<String> =
        f.list("subscriptions", "invalidSubscription").iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
    if subs.is_empty() || subs.iter().any(|x| !SUBSCRIPTIONS.contains(&x.as_str())) {
        f.err(
            "invalidSubscription",
            format!("subscriptions must be a non-empty list of: {}", SUBSCRIPTIONS.join(", ")),
        );
    }
    match url {
        Some(url) if errors.is_empty() => Ok(json!({"webhook": s.create_webhook(url, subs)})),
        _ => Err(ApiErr::many(
            errors.into_iter().map(|(c, m)| (c, m.trim_start_matches("Element 0: ").to_string())).collect(),
        )),
    }
}

// ---- /_sandbox (not authenticated: loopback only) --------------------------------------------

/// `POST /_sandbox/clock` with `{"to": RFC 3339}` or `{"advanceSeconds": n}`: moves a manual clock
/// and delivers what falls due (see `Sandbox::advance_to`).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClockMove {
    to: Option<String>,
    advance_seconds: Option<i64>,
}

fn move_clock(shared: &Shared, body: &[u8]) -> Answer {
    let m: ClockMove = serde_json::from_slice(body).map_err(|e| ApiErr::bad("invalidJson", e.to_string()))?;
    let to = match (m.to, m.advance_seconds) {
        (Some(t), None) => super::delivery::MoveTo::At(
            time::parse(&t).ok_or_else(|| ApiErr::bad("invalidDate", format!("{t} is not RFC 3339")))?,
        ),
        (None, Some(s)) if s >= 0 => super::delivery::MoveTo::By(
            chrono::Duration::try_seconds(s)
                .ok_or_else(|| ApiErr::bad("invalidJson", "advanceSeconds is too large"))?,
        ),
        _ => return Err(ApiErr::bad("invalidJson", "give either `to` or a non-negative `advanceSeconds`")),
    };
    let moved = super::delivery::advance_to(shared, to).map_err(|e| ApiErr::bad("invalidOperation", e))?;
    Ok(json!({"now": time::format(moved.now), "deliveries": moved.deliveries}))
}

fn control(shared: &Shared, method: &str, rest: &str, body: &[u8]) -> Answer {
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    if (method, segs.as_slice()) == ("POST", ["clock"].as_slice()) {
        return move_clock(shared, body);
    }
    // The state lock first, then the clock: a move of the clock holds the lock while it runs.
    let mut state = lock(shared);
    let now = shared.clock.now();
    match (method, segs.as_slice()) {
        ("GET", ["state"]) => {
            serde_json::to_value(state.snapshot(now)).map_err(|e| ApiErr::bad("internal", e.to_string()))
        }
        ("GET", ["clock"]) => Ok(json!({"now": time::format(now), "manual": shared.clock.is_manual()})),
        ("GET", ["faults"]) => serde_json::to_value(&state.faults).map_err(|e| ApiErr::bad("internal", e.to_string())),
        ("POST", ["faults"]) => {
            let faults: faults::Faults =
                serde_json::from_slice(body).map_err(|e| ApiErr::bad("invalidJson", e.to_string()))?;
            state.faults = faults;
            serde_json::to_value(&state.faults).map_err(|e| ApiErr::bad("internal", e.to_string()))
        }
        ("POST", ["foreign-events"]) => {
            let spec: ForeignEvent = serde_json::from_slice(if blank(body) { b"{}" } else { body })
                .map_err(|e| ApiErr::bad("invalidJson", e.to_string()))?;
            let signed = state.foreign_event(&spec, now).map_err(|e| ApiErr::bad("invalidOperation", e))?;
            serde_json::to_value(signed).map_err(|e| ApiErr::bad("internal", e.to_string()))
        }
        ("POST", ["transfers", id, "return"]) => {
            let opts: ReturnOptions = if blank(body) {
                ReturnOptions::default()
            } else {
                serde_json::from_slice(body).map_err(|e| ApiErr::bad("invalidJson", e.to_string()))?
            };
            let t = state.return_transfer(id, &opts.reason, now).map_err(|(code, msg)| ApiErr::bad(code, msg))?;
            Ok(json!({"transfer": t}))
        }
        ("POST", ["invoices", id, "pay"]) => {
            let opts: PayOptions = if blank(body) {
                PayOptions::default()
            } else {
                serde_json::from_slice(body).map_err(|e| ApiErr::bad("invalidJson", e.to_string()))?
            };
            state.pay(id, &opts, now, true).map_err(|e| ApiErr::bad("invalidOperation", e))?;
            let inv = state.invoice(id).map(State::invoice_json).unwrap_or(Value::Null);
            Ok(json!({"invoice": inv}))
        }
        _ => Err(ApiErr { status: 404, errors: vec![("routeNotFound".into(), format!("{method} /_sandbox/{rest}"))] }),
    }
}

/// The body of `POST /_sandbox/transfers/{id}/return`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ReturnOptions {
    /// The failed log's error (empty: `RETURN_REASON`).
    reason: String,
}

/// No body (or only whitespace): the control route's defaults.
fn blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn parses_python_query_encoding() {
        let q = Query::parse("limit=5&tags=A+b%2Cc&isDelivered=False&invoiceIds=1%2C2");
        assert_eq!(q.tags().unwrap(), vec!["a b", "c"]);
        assert_eq!(q.bool("isDelivered").unwrap(), Some(false));
        assert_eq!(q.list("invoiceIds").unwrap(), vec!["1", "2"]);
        assert_eq!(q.limit().unwrap(), 5);
        assert_eq!(Query::parse("limit=500").limit().unwrap(), 100);
    }

    #[test]
    fn collapses_double_slashes() {
        assert_eq!(collapse_slashes("/v2//public-key"), "/v2/public-key");
    }

    #[test]
    fn cursors_round_trip() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("nope"), None);
    }

    #[test]
    fn date_due_is_end_of_day_in_brasilia() {
        assert_eq!(time::format(parse_due("2024-01-02").unwrap()), "2024-01-03T02:59:59.999999+00:00");
    }

    #[test]
    fn date_scheduled_is_eleven_utc_of_that_day() {
        assert_eq!(time::format(parse_scheduled("2024-01-02").unwrap()), "2024-01-02T11:00:00.000000+00:00");
        let t = "2024-01-02T15:04:05+00:00";
        assert_eq!(time::format_secs(parse_scheduled(t).unwrap()), t);
    }
}
