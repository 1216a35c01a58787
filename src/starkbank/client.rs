//! The one HTTP client for the Stark Bank API v2.
//!
//! Owns: signed requests (`Access-Id`, `Access-Time`, `Access-Signature` over the exact bytes
//! sent), timeouts, turning a status and Stark Bank's `errors[]` into one readable line, retries
//! (transport errors and 5xx only, only for requests that are idempotent by construction, capped
//! exponential backoff with jitter), the "outcome unknown" verdict for non-idempotent requests,
//! and cursor pagination.
//! Does not own: the shape of resources (see `resources`) or what a caller does with a failure.

use std::time::Duration;

use k256::ecdsa::SigningKey;
use rand::RngExt as _;
use serde_json::Value;

use super::sign;

/// Total time for one HTTP request, in seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 15.0;
/// Time to establish a connection, in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: f64 = 5.0;

/// Where and as whom to call the API.
#[derive(Clone)]
pub struct ClientConfig {
    /// `https://sandbox.api.starkbank.com` or an emulator such as `http://127.0.0.1:9000`.
    pub base_url: String,
    pub project_id: String,
    pub key: SigningKey,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Attempts for a retryable request, first included.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub language: String,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("project_id", &self.project_id)
            .field("key", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ClientConfig {
    /// The longest one call may take, retries included: every try its whole `timeout` (which
    /// reqwest counts from the connect on) and every backoff at its ceiling. A request whose
    /// outcome matters after the run (an invoice create) stays in flight this long.
    pub fn longest_call(&self) -> Duration {
        let tries = self.max_attempts.max(1);
        let backoffs: Duration = (1..tries).map(|n| self.backoff_ceiling(n)).sum();
        self.timeout.saturating_mul(tries) + backoffs
    }

    /// The longest wait before try `attempt + 1`: min(cap, base * 2^(attempt-1)).
    fn backoff_ceiling(&self, attempt: u32) -> Duration {
        self.backoff_base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(self.backoff_cap)
    }

    pub fn new(base_url: impl Into<String>, project_id: impl Into<String>, key: SigningKey) -> Self {
        Self {
            base_url: base_url.into(),
            project_id: project_id.into(),
            key,
            connect_timeout: Duration::from_secs_f64(DEFAULT_CONNECT_TIMEOUT_SECS),
            timeout: Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS),
            max_attempts: 4,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(5),
            language: "en-US".into(),
        }
    }
}

/// One entry of Stark Bank's `{"errors": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ApiErrorItem {
    pub code: String,
    pub message: String,
}

/// A failed API call, classified by what the caller may do next.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Stark Bank refused the request (4xx): do not retry it unchanged.
    #[error("Stark Bank refused {what} (HTTP {status}): {}", summarize(.errors))]
    Rejected { what: String, status: u16, errors: Vec<ApiErrorItem> },
    /// The request did not complete, and it certainly had no effect, or it is safe to repeat.
    #[error("{what} failed: {cause}")]
    Temporary { what: String, cause: String },
    /// A request that is not idempotent was (or may have been) received, but no answer came:
    /// the caller must look up what exists before sending it again.
    #[error("{what}: outcome unknown ({cause}); look up what was created before sending it again")]
    OutcomeUnknown {
        what: String,
        cause: String,
        /// Every try was answered (a 5xx, a refused retry): Stark Bank is done with the request.
        /// `false` when one timed out or the connection broke: it may still be processing it.
        answered: bool,
    },
    /// A 200 answer that is not the JSON we expect.
    #[error("{what}: unexpected answer from Stark Bank: {cause}")]
    Decode { what: String, cause: String },
}

impl ApiError {
    /// True when running again later may succeed without anyone changing anything (a rate
    /// limit included).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            ApiError::Temporary { .. } | ApiError::OutcomeUnknown { .. } | ApiError::Rejected { status: 429, .. }
        )
    }

    /// True for authentication and configuration refusals an operator must fix.
    pub fn is_credentials(&self) -> bool {
        matches!(self, ApiError::Rejected { status, errors, .. }
            if *status == 401 || *status == 403 || errors.iter().any(|e| matches!(e.code.as_str(), "invalidCredentials" | "invalidAccessId" | "invalidSignature" | "invalidIp" | "invalidAccessTime")))
    }

    /// The same error with `r` applied to every text that came from Stark Bank (for errors of
    /// requests whose payers the caller knows).
    pub fn redacted(self, r: &super::redact::Redactor) -> Self {
        match self {
            ApiError::Rejected { what, status, errors } => ApiError::Rejected {
                what,
                status,
                errors: errors
                    .into_iter()
                    .map(|e| ApiErrorItem { code: e.code, message: r.apply(&e.message) })
                    .collect(),
            },
            ApiError::Temporary { what, cause } => ApiError::Temporary { what, cause: r.apply(&cause) },
            ApiError::OutcomeUnknown { what, cause, answered } => {
                ApiError::OutcomeUnknown { what, cause: r.apply(&cause), answered }
            }
            ApiError::Decode { what, cause } => ApiError::Decode { what, cause: r.apply(&cause) },
        }
    }

    pub fn codes(&self) -> Vec<&str> {
        match self {
            ApiError::Rejected { errors, .. } => errors.iter().map(|e| e.code.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

fn summarize(errors: &[ApiErrorItem]) -> String {
    if errors.is_empty() {
        return "no error details".into();
    }
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        let line = format!("{}: {}", e.code, e.message);
        if !seen.contains(&line) {
            seen.push(line);
        }
    }
    let shown = seen.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
    if seen.len() > 3 { format!("{shown}; and {} more", seen.len() - 3) } else { shown }
}

/// Whether a request may be repeated after an unknown outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// GET, DELETE, event PATCH, transfers that all carry an `externalId`.
    Safe,
    /// Invoice creation and anything else without a deduplication key.
    Unsafe,
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::blocking::Client,
    cfg: ClientConfig,
    access_id: String,
    /// No try starts that could not finish by then (see [`Client::finishing_by`]).
    finish_by: Option<std::time::Instant>,
}

impl Client {
    pub fn new(cfg: ClientConfig) -> anyhow::Result<Self> {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            .user_agent(concat!("stark-sweep/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("could not build the HTTP client: {e}"))?;
        let access_id = format!("project/{}", cfg.project_id);
        Ok(Self { http, cfg, access_id, finish_by: None })
    }

    /// This client, starting no try (first or retry) that its timeout would let run past
    /// `deadline`: for a request whose in-flight window other runs trust (an invoice create),
    /// a run that stalled (stopped, starved) sends nothing late instead of racing the window.
    pub fn finishing_by(&self, deadline: std::time::Instant) -> Client {
        Client { finish_by: Some(deadline), ..self.clone() }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// `{base}/v2/{path}?{query}` with the SDK's query encoding (comma lists, `+` for spaces).
    fn url(&self, path: &str, query: &[(&str, String)]) -> String {
        let mut url = format!("{}/v2/{}", self.cfg.base_url.trim_end_matches('/'), path.trim_start_matches('/'));
        let mut first = true;
        for (k, v) in query {
            url.push(if first { '?' } else { '&' });
            first = false;
            url.push_str(k);
            url.push('=');
            url.push_str(&urlencoding::encode(v).replace("%20", "+"));
        }
        url
    }

    fn access_time() -> String {
        // Always the real clock: Stark Bank checks it against its own.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        format!("{}.{:06}", now.as_secs(), now.subsec_micros())
    }

    /// Sends one request; retries per the policy. `what` names the call in error messages.
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        idempotency: Idempotency,
        what: &str,
    ) -> Result<Value, ApiError> {
        let body_text = match body {
            Some(v) => {
                serde_json::to_string(v).map_err(|e| ApiError::Decode { what: what.into(), cause: e.to_string() })?
            }
            None => String::new(),
        };
        let url = self.url(path, query);
        let mut attempt: u32 = 0;
        // Once a non-idempotent request may have reached the server, no answer can be trusted
        // to mean "nothing happened"; for idempotent ones we remember it to explain refusals.
        let mut maybe_received = false;
        // A try that got no answer at all may still be processed by the server.
        let mut unanswered = false;
        loop {
            attempt += 1;
            if self.finish_by.is_some_and(|by| std::time::Instant::now() + self.cfg.timeout > by) {
                let cause = format!("try {attempt} could not finish before this call's deadline, so it was not sent");
                return Err(if maybe_received && method == reqwest::Method::POST {
                    ApiError::OutcomeUnknown { what: what.into(), cause, answered: !unanswered }
                } else {
                    ApiError::Temporary { what: what.into(), cause }
                });
            }
            let outcome = self.send_once(&method, &url, &body_text);
            let retryable_failure = match outcome {
                Ok(Response { status: 200, text }) => {
                    return serde_json::from_str(&text)
                        .map_err(|e| ApiError::Decode { what: what.into(), cause: format!("not JSON ({e})") });
                }
                Ok(Response { status, text }) if (400..500).contains(&status) => {
                    let errors = parse_errors(&text);
                    if maybe_received && idempotency == Idempotency::Safe && method == reqwest::Method::POST {
                        // A repeat of a create that may already have landed was refused (for
                        // example a duplicate externalId): that says nothing about the first try.
                        return Err(ApiError::OutcomeUnknown {
                            what: what.into(),
                            cause: format!("a retry was refused with HTTP {status}: {}", summarize(&errors)),
                            answered: !unanswered,
                        });
                    }
                    return Err(ApiError::Rejected { what: what.into(), status, errors });
                }
                Ok(Response { status, text }) => {
                    maybe_received = true;
                    // A gateway that gave up waiting (502, 504) says nothing about the backend,
                    // which may still be processing the request: as good as no answer.
                    if matches!(status, 502 | 504) {
                        unanswered = true;
                    }
                    format!(
                        "HTTP {status}{}",
                        if status == 500 || text.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", super::redact::tax_ids(&truncate(&text, 200)))
                        }
                    )
                }
                Err(SendError::NotSent(cause)) => cause,
                Err(SendError::MaybeSent(cause)) => {
                    maybe_received = true;
                    unanswered = true;
                    cause
                }
            };
            let may_retry = idempotency == Idempotency::Safe || !maybe_received;
            if !may_retry {
                return Err(ApiError::OutcomeUnknown {
                    what: what.into(),
                    cause: retryable_failure,
                    answered: !unanswered,
                });
            }
            if attempt >= self.cfg.max_attempts {
                return Err(if maybe_received && method == reqwest::Method::POST {
                    ApiError::OutcomeUnknown { what: what.into(), cause: retryable_failure, answered: !unanswered }
                } else {
                    ApiError::Temporary {
                        what: what.into(),
                        cause: format!("{retryable_failure} (after {attempt} attempts)"),
                    }
                });
            }
            let delay = self.backoff(attempt);
            log::warn!(
                "{what}: {retryable_failure}; retrying in {} ms (attempt {}/{})",
                delay.as_millis(),
                attempt + 1,
                self.cfg.max_attempts
            );
            std::thread::sleep(delay);
        }
    }

    /// Equal jitter over a capped exponential: uniform in [c/2, c], c = min(cap, base * 2^(n-1)).
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.cfg.backoff_ceiling(attempt);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(if millis == 0 { 0 } else { rand::rng().random_range(millis / 2..=millis) })
    }

    fn send_once(&self, method: &reqwest::Method, url: &str, body: &str) -> Result<Response, SendError> {
        let access_time = Self::access_time();
        let message = sign::request_message(&self.access_id, &access_time, body.as_bytes());
        let signature = sign::sign(&self.cfg.key, &message);
        let req = self
            .http
            .request(method.clone(), url)
            .header("Access-Id", &self.access_id)
            .header("Access-Time", &access_time)
            .header("Access-Signature", signature)
            .header("Accept-Language", &self.cfg.language)
            .header("Content-Type", "application/json")
            .body(body.to_string());
        match req.send() {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.text() {
                    Ok(text) => Ok(Response { status, text }),
                    Err(e) => Err(SendError::MaybeSent(format!("reading the answer failed: {}", error_chain(&e)))),
                }
            }
            Err(e) if e.is_connect() => {
                Err(SendError::NotSent(format!("could not connect to {}: {}", self.cfg.base_url, error_chain(&e))))
            }
            Err(e) if e.is_builder() => Err(SendError::NotSent(format!("invalid request: {}", error_chain(&e)))),
            Err(e) if e.is_timeout() => {
                Err(SendError::MaybeSent(format!("no answer within {} s", self.cfg.timeout.as_secs_f32())))
            }
            Err(e) => Err(SendError::MaybeSent(error_chain(&e))),
        }
    }

    // ---- convenience verbs ------------------------------------------------------------------

    pub fn get(&self, path: &str, query: &[(&str, String)], what: &str) -> Result<Value, ApiError> {
        self.call(reqwest::Method::GET, path, query, None, Idempotency::Safe, what)
    }

    /// Every page of a list: follows `cursor` until it is empty. `key` is the plural wrapper.
    pub fn get_all(&self, path: &str, key: &str, query: &[(&str, String)], what: &str) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        self.for_each_page(path, key, query, what, |items| {
            out.extend(items);
            Ok::<(), ApiError>(())
        })?;
        Ok(out)
    }

    /// Hands each page of a list to `each` as it arrives, so a long list is never held whole.
    pub fn for_each_page<E: From<ApiError>>(
        &self,
        path: &str,
        key: &str,
        query: &[(&str, String)],
        what: &str,
        mut each: impl FnMut(Vec<Value>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut cursor: Option<String> = None;
        loop {
            let mut q: Vec<(&str, String)> = query.to_vec();
            q.push(("limit", "100".into()));
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            let mut page = self.get(path, &q, what)?;
            let items = match page.get_mut(key).map(Value::take) {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(ApiError::Decode {
                        what: what.into(),
                        cause: format!("no `{key}` list in the answer"),
                    }
                    .into());
                }
            };
            cursor = page.get("cursor").and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_string);
            each(items)?;
            if cursor.is_none() {
                return Ok(());
            }
        }
    }
}

struct Response {
    status: u16,
    text: String,
}

enum SendError {
    /// Nothing reached the server (connection refused, DNS): always safe to retry.
    NotSent(String),
    /// The request may have been received and acted on.
    MaybeSent(String),
}

fn parse_errors(text: &str) -> Vec<ApiErrorItem> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ApiErrorItem>,
    }
    // Stark Bank's messages can echo request fields: no tax id leaves this function.
    match serde_json::from_str::<Errors>(text) {
        Ok(e) => e
            .errors
            .into_iter()
            .map(|e| ApiErrorItem { code: e.code, message: super::redact::tax_ids(&e.message) })
            .collect(),
        Err(_) => vec![ApiErrorItem { code: "unknown".into(), message: super::redact::tax_ids(&truncate(text, 200)) }],
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}...", s.chars().take(n).collect::<String>()) }
}

/// `what failed: why: deeper why` on one line: each cause once (a cause whose text an outer
/// one already repeats is left out), newlines flattened. The one flattener of error chains
/// (`error::one_line` uses it too).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string().replace('\n', " ");
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string().replace('\n', " ");
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_errors_in_one_line() {
        let errors = vec![
            ApiErrorItem { code: "invalidTaxId".into(), message: "bad CPF".into() },
            ApiErrorItem { code: "invalidTaxId".into(), message: "bad CPF".into() },
            ApiErrorItem { code: "invalidAmount".into(), message: "zero".into() },
        ];
        let e = ApiError::Rejected { what: "creating invoices".into(), status: 400, errors };
        assert_eq!(
            e.to_string(),
            "Stark Bank refused creating invoices (HTTP 400): invalidTaxId: bad CPF; invalidAmount: zero"
        );
        assert!(!e.is_temporary());
    }

    #[test]
    fn encodes_queries_like_the_sdk() {
        let c = Client::new(ClientConfig::new("http://x/", "1", crate::starkbank::keys::generate())).unwrap();
        assert_eq!(c.url("/public-key", &[("limit", "1".into())]), "http://x/v2/public-key?limit=1");
        assert_eq!(c.url("transfer", &[("tags", "a b,c".into())]), "http://x/v2/transfer?tags=a+b%2Cc");
    }

    /// A server that answers every request with `status` and an empty body.
    fn answering(status: u16) -> String {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 8192];
                let _ = conn.read(&mut buf);
                let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        url
    }

    fn create_against(url: &str) -> ApiError {
        let mut cfg = ClientConfig::new(url, "1", crate::starkbank::keys::generate());
        cfg.backoff_base = Duration::from_millis(1);
        let c = Client::new(cfg).unwrap();
        c.call(reqwest::Method::POST, "invoice", &[], Some(&serde_json::json!({})), Idempotency::Unsafe, "creating")
            .unwrap_err()
    }

    /// Found by review of #18: a run stopped during the backoff after a refused connection
    /// could send its create after the in-flight window closed, when another run may have
    /// created the slot already. No try starts that its timeout would let outlast the deadline.
    #[test]
    fn no_try_starts_that_could_outlast_the_deadline() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        let mut cfg = ClientConfig::new(url.as_str(), "1", crate::starkbank::keys::generate());
        cfg.timeout = Duration::from_secs(2);
        let c = Client::new(cfg).unwrap();
        let create = |c: &Client| {
            c.call(reqwest::Method::POST, "invoice", &[], Some(&serde_json::json!({})), Idempotency::Unsafe, "creating")
        };
        let late = c.finishing_by(std::time::Instant::now() + Duration::from_secs(1));
        let err = create(&late).unwrap_err();
        assert!(matches!(err, ApiError::Temporary { .. }), "nothing was sent, so nothing is in flight: {err}");
        assert!(err.to_string().contains("not sent"), "{err}");
        assert_eq!(seen.load(Ordering::SeqCst), 0, "no connection was made");
        // With time for the try, it is sent.
        let _ = create(&c.finishing_by(std::time::Instant::now() + Duration::from_secs(60)));
        assert!(seen.load(Ordering::SeqCst) >= 1);
    }

    /// Found by review of #12: a 504 from a gateway counted as an answer, so a rerun during a
    /// slow create could issue a second batch. A 502/504 is as good as no answer; a 500 from
    /// the backend itself is an answer (it finished, one way or another).
    #[test]
    fn a_gateway_timeout_on_a_create_is_not_an_answer() {
        for (status, answered) in [(504, false), (502, false), (500, true)] {
            match create_against(&answering(status)) {
                ApiError::OutcomeUnknown { answered: a, .. } => assert_eq!(a, answered, "HTTP {status}"),
                other => panic!("HTTP {status}: {other}"),
            }
        }
    }

    #[test]
    fn backoff_is_capped() {
        let mut cfg = ClientConfig::new("http://x", "1", crate::starkbank::keys::generate());
        cfg.backoff_cap = Duration::from_millis(300);
        let c = Client::new(cfg).unwrap();
        for attempt in 1..30 {
            assert!(c.backoff(attempt) <= Duration::from_millis(300));
        }
    }

    #[test]
    fn the_longest_call_counts_every_try_and_every_backoff() {
        let mut cfg = ClientConfig::new("http://x", "1", crate::starkbank::keys::generate());
        cfg.timeout = Duration::from_secs(3);
        cfg.max_attempts = 4;
        cfg.backoff_base = Duration::from_millis(200);
        cfg.backoff_cap = Duration::from_millis(500);
        // 4 tries of 3 s, and waits of at most 200, 400 and 500 ms between them.
        assert_eq!(cfg.longest_call(), Duration::from_millis(4 * 3000 + 200 + 400 + 500));
        cfg.max_attempts = 1;
        assert_eq!(cfg.longest_call(), Duration::from_secs(3));
    }
}
