//! `stark-sweep serve-webhook`: the real binary on port 0, real HTTP, a real SQLite file, a
//! stand-in key server for `GET /v2/public-key`, events signed by the official ECDSA library,
//! and nginx in front with the shipped `deploy/nginx/stark-sweep.conf`.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stark_sweep::starkbank::{keys, sign};

use crate::util::{cmd, fixture, repo, run_python};

// ---- a stand-in for Stark Bank's GET /v2/public-key ------------------------------------------

struct KeyServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl KeyServer {
    /// Serves `pem` as `{"cursor": null, "publicKeys": [{"content": PEM, ...}]}`, after
    /// answering 500 to the first `fail_first` requests.
    fn start(pem: &str, fail_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ok = json!({"cursor": null, "publicKeys": [{"content": pem, "created": "2020-03-24T03:58:00+00:00"}]})
            .to_string();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let head = read_head(&mut s);
                let n = h.fetch_add(1, Ordering::SeqCst);
                // As the real API answers an event id it does not show this project.
                let unknown_event = r#"{"errors": [{"code": "invalidEvent", "message": "Event not found"}]}"#;
                let (status, body) = if head.contains("/v2/event/") {
                    (400, unknown_event.to_string())
                } else if n < fail_first || !head.contains("/public-key") {
                    (500, "{}".to_string())
                } else {
                    (200, ok.clone())
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { addr, hits }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

// ---- the listener under test -----------------------------------------------------------------

struct Listener {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    db: PathBuf,
}

/// The workspace every synthetic test event names (that of the real 2021 invoice vector).
const WORKSPACE: &str = "5078376503050240";

/// The listener's database belongs to `WORKSPACE`, as if `process-events` had learned it.
fn pin_workspace(db: &Path) {
    let mut store = stark_sweep::store::Store::open(db).unwrap();
    stark_sweep::workspace::pin(&mut store, WORKSPACE, "test", None, chrono::Utc::now()).unwrap();
}

impl Listener {
    /// Starts `serve-webhook --listen 127.0.0.1:0` in `dir`, with API credentials pointing at
    /// `api`, on a database pinned to `WORKSPACE`.
    fn start(dir: &Path, api: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let log = dir.join(format!("listener-{n}.log"));
        let db = dir.join("sweep.db");
        pin_workspace(&db);
        let mut c = cmd(dir);
        c.args(["serve-webhook", "--listen", "127.0.0.1:0"]).arg("--db").arg(&db).args(args);
        c.env("STARKBANK_PROJECT_ID", "5656565656565656")
            .env("STARKBANK_PRIVATE_KEY", keys::private_key_pem(&keys::generate()).unwrap())
            .env("STARKBANK_API_URL", api);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        let mut child = c.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(rest) = text.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                return Self { child, addr, log, db };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("serve-webhook exited ({status}) before listening:\n{text}");
            }
            assert!(Instant::now() < deadline, "serve-webhook did not start listening:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `start`, then waits for /health to say the key is loaded (it is fetched in the background).
    fn ready(dir: &Path, api: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let l = Self::start(dir, api, args, env);
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(l.addr, "/health").status != 200 {
            assert!(Instant::now() < deadline, "the listener never became healthy:\n{}", l.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        l
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit on its own.
    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve-webhook did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- raw HTTP/1.1, so that tests control every byte --------------------------------------------

struct Answer {
    status: u16,
    head: String,
    body: String,
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Reads one response (head, then `Content-Length` bytes) without waiting for the connection to close.
fn read_answer(s: &mut TcpStream) -> Answer {
    let mut head = read_head(s);
    while head.starts_with("HTTP/1.1 100") {
        head = read_head(s);
    }
    let status =
        head.split_whitespace().nth(1).unwrap_or_else(|| panic!("no status line in {head:?}")).parse().unwrap();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    Answer { status, head, body: String::from_utf8_lossy(&body).into_owned() }
}

fn send(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let mut s = connect(addr);
    // The server may answer (413) before reading everything; a failed write is not the verdict.
    let _ = s.write_all(bytes);
    read_answer(&mut s)
}

fn post_request(body: &[u8], signature: Option<&str>) -> Vec<u8> {
    let mut head = format!(
        "POST /webhook HTTP/1.1\r\nHost: sweep.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(sig) = signature {
        head.push_str(&format!("Digital-Signature: {sig}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn post(addr: SocketAddr, body: &[u8], signature: Option<&str>) -> Answer {
    send(addr, &post_request(body, signature))
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, format!("GET {path} HTTP/1.1\r\nHost: sweep.test\r\nConnection: close\r\n\r\n").as_bytes())
}

// ---- events and the database -------------------------------------------------------------------

fn event(id: &str, subscription: &str, log_type: &str, workspace: Option<&str>) -> String {
    let resource = subscription.rsplit('-').next().unwrap();
    let mut e = json!({"event": {
        "created": "2026-11-29T12:00:00.000000+00:00",
        "id": id,
        "log": {"created": "2026-11-29T12:00:00+00:00", "errors": [], "id": format!("log{id}"), "type": log_type,
                resource: {"id": format!("res{id}"), "amount": 1000, "fee": 0, "status": "paid"}},
        "subscription": subscription,
    }});
    if let Some(w) = workspace {
        e["event"]["workspaceId"] = json!(w);
    }
    e.to_string()
}

fn credit(id: &str) -> String {
    event(id, "invoice", "credited", Some(WORKSPACE))
}

fn db(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

fn count(path: &Path) -> i64 {
    db(path).query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap()
}

fn stored(path: &Path, id: &str) -> Option<(Vec<u8>, Option<String>)> {
    db(path).query_row("SELECT body, signature FROM events WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?))).ok()
}

struct Signer {
    key: k256::ecdsa::SigningKey,
    keys: KeyServer,
}

impl Signer {
    fn new() -> Self {
        let key = keys::generate();
        let keys = KeyServer::start(&keys::public_key_pem(key.verifying_key()).unwrap(), 0);
        Self { key, keys }
    }

    fn sign(&self, body: &str) -> String {
        sign::sign(&self.key, body.as_bytes())
    }
}

// ---- tests -------------------------------------------------------------------------------------

/// Events signed by the official library (ellipticcurve `Ecdsa.sign`), low-S and high-S
/// (`s -> n - s`, as Stark Bank's own signatures are), are stored verbatim with their signature.
#[test]
fn events_signed_by_the_official_library_are_stored_low_and_high_s() {
    let signed: Value = serde_json::from_str(&run_python("sign_events.py", &["12", "py"], &[])).unwrap();
    let keys = KeyServer::start(signed["public_key"].as_str().unwrap(), 0);
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::ready(dir.path(), &keys.url(), &[], &[]);
    let events = signed["events"].as_array().unwrap();
    for (i, e) in events.iter().enumerate() {
        let body = e["body"].as_str().unwrap();
        let sig = if i % 2 == 0 { e["signature"].as_str().unwrap() } else { e["signature_high_s"].as_str().unwrap() };
        let a = post(listener.addr, body.as_bytes(), Some(sig));
        assert_eq!((a.status, a.body.as_str()), (200, r#"{"result":"stored"}"#), "event {i}");
        let (stored_body, stored_sig) = stored(&listener.db, e["id"].as_str().unwrap()).unwrap();
        assert_eq!(stored_body, body.as_bytes());
        assert_eq!(stored_sig.as_deref(), Some(sig));
    }
    // The other form of each signature is a duplicate delivery: 200, nothing new.
    for (i, e) in events.iter().enumerate() {
        let sig = if i % 2 == 0 { e["signature_high_s"].as_str().unwrap() } else { e["signature"].as_str().unwrap() };
        let a = post(listener.addr, e["body"].as_str().unwrap().as_bytes(), Some(sig));
        assert_eq!((a.status, a.body.as_str()), (200, r#"{"result":"duplicate"}"#), "event {i}");
    }
    assert_eq!(count(&listener.db), events.len() as i64);
    assert!(keys.hits.load(Ordering::SeqCst) >= 1);
    let log = listener.log();
    assert!(log.contains("invoice/credited: 200 stored"), "{log}");
    assert!(!log.contains("S\\u00e3o") && !log.contains("São"), "names must never be logged:\n{log}");
}

/// Every fixture vector, against the sandbox key served as `GET /v2/public-key`:
/// expected_valid=false -> 401 and nothing stored; valid events of the listener's workspace ->
/// 200 with the signed text stored; valid events of the other workspaces these real vectors
/// come from (or naming none, which the stand-in API does not know) -> 403, nothing stored;
/// valid signatures over non-events (the bare-uuid bodies) -> 400.
#[test]
fn every_fixture_vector_gets_the_right_answer() {
    let pem = std::fs::read_to_string(fixture("vectors/starkbank-sandbox-public-key.pem")).unwrap();
    let keys = KeyServer::start(&pem, 0);
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::ready(dir.path(), &keys.url(), &[], &[]);
    let mut vectors = Vec::new();
    for sub in ["negative", "real", "extra", "derived"] {
        let mut files: Vec<_> =
            std::fs::read_dir(fixture(&format!("vectors/{sub}"))).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            vectors.push((format!("{sub}/{}", f.file_name().unwrap().to_string_lossy()), v));
        }
    }
    assert!(vectors.len() >= 35, "expected the full vector set, found {}", vectors.len());
    let mut wrong = Vec::new();
    let mut accepted = HashSet::new();
    for (name, v) in &vectors {
        let body = v["body"].as_str().unwrap();
        let sig = v["signature"].as_str().unwrap();
        let valid = v["expected_valid"].as_bool().unwrap();
        let parsed = stark_sweep::starkbank::event::parse_body(body.as_bytes());
        let is_event = parsed.is_ok();
        let ours = parsed.is_ok_and(|e| e.workspace_id.as_deref() == Some(WORKSPACE));
        let expected = match (valid, is_event, ours) {
            (false, _, _) => 401,
            (true, true, true) => 200,
            (true, true, false) => 403,
            (true, false, _) => 400,
        };
        let a = post(listener.addr, body.as_bytes(), Some(sig));
        if a.status != expected {
            wrong.push(format!("{name}: expected {expected}, got {} {}", a.status, a.body));
        }
        if !valid {
            // Negatives come first: nothing may be stored while only they have been sent.
            if accepted.is_empty() {
                assert_eq!(count(&listener.db), 0, "{name} stored something");
            }
        } else if expected == 403 {
            let id = stark_sweep::starkbank::event::parse_body(body.as_bytes()).unwrap().id;
            assert!(stored(&listener.db, &id).is_none(), "{name}: another workspace's event was stored");
        } else if expected == 200 {
            let id = stark_sweep::starkbank::event::parse_body(body.as_bytes()).unwrap().id;
            let (stored_body, _) = stored(&listener.db, &id).unwrap();
            // Stored as signed: the raw bytes, or Python's sorted form when only that verifies.
            if accepted.insert(id) {
                let want = if v["verifies_raw"].as_bool().unwrap() {
                    body.to_string()
                } else {
                    stark_sweep::starkbank::pyjson::canonicalize(body.as_bytes()).unwrap()
                };
                assert_eq!(String::from_utf8_lossy(&stored_body), want, "{name}");
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(count(&listener.db), accepted.len() as i64);
}

/// Forged, tampered, unsigned, malformed, oversized and misrouted requests get 401/400/413/
/// 431/404/405 and store nothing; a declared body of 10^15 bytes does not take the process down.
#[test]
fn refused_requests_store_nothing() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::ready(dir.path(), &signer.keys.url(), &["--body-limit", "4096"], &[]);
    let addr = listener.addr;
    let body = credit("r1");
    let good = signer.sign(&body);
    let forger = keys::generate();

    let expect = |what: &str, a: Answer, status: u16| {
        assert_eq!(a.status, status, "{what}: {} {}", a.head, a.body);
    };
    expect("unsigned", post(addr, body.as_bytes(), None), 401);
    expect("empty signature", post(addr, body.as_bytes(), Some("")), 401);
    expect("garbage signature", post(addr, body.as_bytes(), Some("something is definitely wrong")), 401);
    expect("forged", post(addr, body.as_bytes(), Some(&sign::sign(&forger, body.as_bytes()))), 401);
    let tampered = body.replace("1000", "9000");
    assert_ne!(tampered, body);
    expect("tampered", post(addr, tampered.as_bytes(), Some(&good)), 401);
    expect("signed over another body", post(addr, credit("r2").as_bytes(), Some(&good)), 401);

    for (what, malformed) in [
        ("not JSON", "hello".to_string()),
        ("no event", r#"{"events": []}"#.to_string()),
        ("event without fields", r#"{"event": {"id": "x1"}}"#.to_string()),
        (
            "event without log type",
            json!({"event": {"id": "x2", "subscription": "invoice", "created": "2026-01-01",
            "log": {"id": "l", "invoice": {"id": "i"}}}})
            .to_string(),
        ),
    ] {
        expect(what, post(addr, malformed.as_bytes(), Some(&signer.sign(&malformed))), 400);
    }

    // Too large: declared, chunked without a length, and absurdly declared.
    let big = format!("{{\"event\": {{\"pad\": \"{}\"}}}}", "x".repeat(5000));
    expect("declared too large", post(addr, big.as_bytes(), Some(&signer.sign(&big))), 413);
    let mut chunked = format!(
        "POST /webhook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nDigital-Signature: {}\r\n\r\n",
        signer.sign(&big)
    )
    .into_bytes();
    for piece in big.as_bytes().chunks(1000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    expect("chunked too large", send(addr, &chunked), 413);
    for huge in ["1000000000000000", "10000000000000000000"] {
        let a = send(addr, format!("POST /webhook HTTP/1.1\r\nHost: t\r\nContent-Length: {huge}\r\n\r\n{{").as_bytes());
        expect("absurd Content-Length", a, 413);
    }
    let head =
        format!("POST /webhook HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\nContent-Length: 2\r\n\r\n{{}}", "p".repeat(40_000));
    expect("oversized header", send(addr, head.as_bytes()), 431);

    expect("unknown path", get(addr, "/nope"), 404);
    expect("GET /webhook", get(addr, "/webhook"), 405);
    expect("POST /health", send(addr, b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), 405);
    assert_eq!(count(&listener.db), 0, "refused requests stored something:\n{}", listener.log());

    // Still serving, and a chunked body within the limit is fine.
    let health = get(addr, "/health");
    assert_eq!(health.status, 200, "{}", health.body);
    let h: Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!((h["store"].as_str(), h["public_key"].as_str()), (Some("ok"), Some("loaded")));
    let mut ok = format!(
        "POST /webhook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nDigital-Signature: {good}\r\n\r\n"
    )
    .into_bytes();
    for piece in body.as_bytes().chunks(100) {
        ok.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        ok.extend_from_slice(piece);
        ok.extend_from_slice(b"\r\n");
    }
    ok.extend_from_slice(b"0\r\n\r\n");
    expect("chunked within the limit", send(addr, &ok), 200);
    assert_eq!(count(&listener.db), 1);
    let log = listener.log();
    assert!(!log.contains(&good), "signatures must not be logged:\n{log}");
}

/// `GET /metrics` counts every answer to `POST /webhook` by outcome and reason, times those that
/// got as far as verification, and says what the store holds; the JSON log line of a delivery
/// carries its event id and invoice id as fields.
#[test]
fn metrics_count_every_answer_by_outcome_and_reason() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::ready(
        dir.path(),
        &signer.keys.url(),
        &["--body-limit", "4096"],
        &[("STARK_SWEEP_LOG_FORMAT", "json")],
    );
    let addr = listener.addr;
    let body = credit("m1");
    let status = |a: Answer| a.status;
    assert_eq!(status(post(addr, body.as_bytes(), Some(&signer.sign(&body)))), 200);
    assert_eq!(status(post(addr, body.as_bytes(), Some(&signer.sign(&body)))), 200);
    assert_eq!(status(post(addr, body.as_bytes(), Some(&sign::sign(&keys::generate(), body.as_bytes())))), 401);
    assert_eq!(status(post(addr, body.as_bytes(), None)), 401);
    assert_eq!(status(post(addr, b"hello", Some(&signer.sign("hello")))), 400);
    let theirs = event("m2", "invoice", "credited", Some("theirs"));
    assert_eq!(status(post(addr, theirs.as_bytes(), Some(&signer.sign(&theirs)))), 403);
    let big = format!("{{\"event\": {{\"pad\": \"{}\"}}}}", "x".repeat(5000));
    assert_eq!(status(post(addr, big.as_bytes(), Some(&signer.sign(&big)))), 413);
    // Not deliveries: not counted.
    assert_eq!(status(get(addr, "/health")), 200);
    assert_eq!(status(get(addr, "/nope")), 404);
    assert_eq!(status(send(addr, b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")), 405);

    let m = get(addr, "/metrics");
    assert_eq!(m.status, 200, "{}", m.body);
    assert!(m.head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{}", m.head);
    let v =
        |series: &str| crate::util::metric(&m.body, series).unwrap_or_else(|| panic!("no {series} in:\n{}", m.body));
    assert_eq!(v("stark_sweep_webhook_events_received_total"), 7.0);
    assert_eq!(v("stark_sweep_webhook_events_stored_total"), 1.0);
    assert_eq!(v("stark_sweep_webhook_events_duplicate_total"), 1.0);
    for (reason, code) in [
        ("invalid_signature", 401),
        ("missing_signature", 401),
        ("malformed_event", 400),
        ("other_workspace", 403),
        ("body_too_large", 413),
    ] {
        assert_eq!(v(&format!("stark_sweep_webhook_events_refused_total{{reason=\"{reason}\",code=\"{code}\"}}")), 1.0);
    }
    assert_eq!(v("stark_sweep_webhook_events_refused_total{reason=\"busy\",code=\"503\"}"), 0.0);
    // Answered before the body was read (401 unsigned, 413) are not timed.
    assert_eq!(v("stark_sweep_webhook_intake_seconds_count"), 5.0);
    assert_eq!(v("stark_sweep_webhook_intake_seconds_bucket{le=\"+Inf\"}"), 5.0);
    assert_eq!(v("stark_sweep_webhook_ready"), 1.0);
    assert_eq!(v("stark_sweep_store_readable"), 1.0);
    assert_eq!(v("stark_sweep_events_stored"), 1.0);
    assert_eq!(v("stark_sweep_events_unapplied"), 1.0);
    assert_eq!(v("stark_sweep_credits{state=\"open\"}"), 0.0, "credits are recorded by process-events");

    let line = listener
        .log()
        .lines()
        .find(|l| l.contains("200 stored"))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .unwrap_or_else(|| panic!("no stored line:\n{}", listener.log()));
    assert_eq!(line["event_id"], "m1");
    assert_eq!(line["invoice_id"], "resm1");
    assert_eq!((line["status"].as_u64(), line["outcome"].as_str()), (Some(200), Some("stored")));
}

/// STARKBANK_WORKSPACE_ID: events of another workspace, or naming none, get 403 and are not
/// stored; a configured id that contradicts the database's pinned workspace stops the listener
/// at start (exit 78).
#[test]
fn other_workspaces_are_refused_with_403() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::ready(dir.path(), &signer.keys.url(), &[], &[("STARKBANK_WORKSPACE_ID", WORKSPACE)]);
    for (id, ws, status) in [("w1", Some(WORKSPACE), 200), ("w2", Some("theirs"), 403), ("w3", None, 403)] {
        let body = event(id, "invoice", "credited", ws);
        let a = post(listener.addr, body.as_bytes(), Some(&signer.sign(&body)));
        assert_eq!(a.status, status, "{id}: {}", a.body);
    }
    assert_eq!(count(&listener.db), 1);
    assert!(stored(&listener.db, "w1").is_some());
    let out = cmd(dir.path())
        .args(["serve-webhook", "--listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(&listener.db)
        .env("STARKBANK_WORKSPACE_ID", "another")
        .env("STARKBANK_PROJECT_ID", "5656565656565656")
        .env("STARKBANK_PRIVATE_KEY", keys::private_key_pem(&keys::generate()).unwrap())
        .env("STARKBANK_API_URL", signer.keys.url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("STARKBANK_WORKSPACE_ID=another"));
}

/// Stark Bank delivers duplicates: the same event sent 20 times at once stores one row.
#[test]
fn concurrent_duplicates_store_one_row() {
    let signer = Arc::new(Signer::new());
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::ready(dir.path(), &signer.keys.url(), &[], &[]);
    let body = Arc::new(credit("dup1"));
    let sig = Arc::new(signer.sign(&body));
    let addr = listener.addr;
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (body, sig) = (body.clone(), sig.clone());
            std::thread::spawn(move || post(addr, body.as_bytes(), Some(&sig)))
        })
        .collect();
    let answers: Vec<Answer> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(answers.iter().filter(|a| a.body.contains("stored")).count(), 1);
    assert_eq!(count(&listener.db), 1);
}

/// 200 means durable: after `kill -9` in the middle of a burst, every acknowledged event is in the file.
#[test]
fn every_acknowledged_event_survives_kill_9_during_a_burst() {
    let signer = Arc::new(Signer::new());
    let dir = tempfile::tempdir().unwrap();
    let mut listener = Listener::ready(dir.path(), &signer.keys.url(), &[], &[]);
    let addr = listener.addr;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|t| {
            let (signer, acked, stop) = (signer.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let id = format!("k{t}-{i}");
                    let body = credit(&id);
                    let sig = signer.sign(&body);
                    let Ok(mut s) = TcpStream::connect(addr) else { return };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    if s.write_all(&post_request(body.as_bytes(), Some(&sig))).is_err() {
                        return;
                    }
                    let mut answer = Vec::new();
                    let _ = s.read_to_end(&mut answer);
                    if answer.starts_with(b"HTTP/1.1 200") {
                        acked.lock().unwrap().push(id);
                    } else if answer.is_empty() {
                        return; // the listener is gone
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "the burst did not get going:\n{}", listener.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    listener.child.kill().unwrap(); // SIGKILL, mid-burst
    listener.child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let conn = db(&listener.db);
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| {
            !conn
                .query_row("SELECT EXISTS (SELECT 1 FROM events WHERE id = ?1)", [id.as_str()], |r| r.get::<_, bool>(0))
                .unwrap()
        })
        .collect();
    assert!(missing.is_empty(), "{} of {} acknowledged events lost: {missing:?}", missing.len(), acked.len());
    assert!(count(&listener.db) >= acked.len() as i64);
}

/// 100 stalled clients (mid-headers, mid-body small and large) and an oversized header must not
/// keep genuine deliveries from being answered.
#[test]
fn stalled_clients_and_oversized_headers_do_not_block_deliveries() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::ready(dir.path(), &signer.keys.url(), &[], &[]);
    let addr = listener.addr;
    let mut stalled = Vec::new();
    for i in 0..100 {
        let mut s = connect(addr);
        let bytes = match i % 4 {
            0 => "POST /webhook HTTP/1.1\r\nHost: t\r\nDigital-Sig".to_string(),
            1 => "POST /webhook HTTP/1.1\r\nHost: t\r\nContent-Length: 800\r\n\r\n{\"event\": ".to_string(),
            _ => format!(
                "POST /webhook HTTP/1.1\r\nHost: t\r\nDigital-Signature: {}\r\nContent-Length: 50000\r\n\r\n{{\"event\": ",
                signer.sign("x")
            ),
        };
        s.write_all(bytes.as_bytes()).unwrap();
        stalled.push(s);
    }
    let big = format!(
        "POST /webhook HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\nContent-Length: 2\r\n\r\n{{}}",
        "h".repeat(256 * 1024)
    );
    assert_eq!(send(addr, big.as_bytes()).status, 431);
    for i in 0..20 {
        let body = credit(&format!("live{i}"));
        let a = post(addr, body.as_bytes(), Some(&signer.sign(&body)));
        assert_eq!(a.status, 200, "delivery {i} while 100 clients stall: {}", a.body);
    }
    assert_eq!(get(addr, "/health").status, 200);
    assert_eq!(count(&listener.db), 20);
    drop(stalled);
}

/// SIGTERM: stop accepting, finish the request in flight (commit and answer), exit 0.
#[test]
fn sigterm_finishes_requests_in_flight_and_exits_zero() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let mut listener = Listener::ready(dir.path(), &signer.keys.url(), &[], &[]);
    // A body over 1 KiB with `Expect: 100-continue`: the "100 Continue" proves a request
    // thread is reading it when the signal arrives.
    let body = json!({"event": {"id": "term1", "subscription": "invoice", "created": "2026-11-29T12:00:00+00:00",
        "workspaceId": WORKSPACE,
        "log": {"id": "l1", "type": "credited", "invoice": {"id": "i1", "pad": "z".repeat(3000)}}}})
    .to_string();
    let mut s = connect(listener.addr);
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nDigital-Signature: {}\r\nContent-Length: {}\r\n\r\n",
        signer.sign(&body),
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 100"));
    s.write_all(&body.as_bytes()[..1000]).unwrap();

    listener.sigterm();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !listener.log().contains("shutting down") {
        assert!(Instant::now() < deadline, "no shutdown:\n{}", listener.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    s.write_all(&body.as_bytes()[1000..]).unwrap();
    let a = read_answer(&mut s);
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"result":"stored"}"#));
    let status = listener.wait();
    assert_eq!(status.code(), Some(0), "{}", listener.log());
    assert!(stored(&listener.db, "term1").is_some());
    assert!(TcpStream::connect(listener.addr).is_err(), "still accepting after exit");
}

/// No key yet (Stark Bank unreachable or failing): /health and POSTs answer 503 so Stark Bank
/// retries; the fetch is retried in the background and the listener recovers by itself.
#[test]
fn missing_public_key_answers_503_until_a_fetch_succeeds() {
    let signer = Signer::new();
    let flaky = KeyServer::start(&keys::public_key_pem(signer.key.verifying_key()).unwrap(), 2);
    let dir = tempfile::tempdir().unwrap();
    let listener = Listener::start(dir.path(), &flaky.url(), &[], &[]);
    let body = credit("late1");
    let sig = signer.sign(&body);
    let mut saw_503 = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let health = get(listener.addr, "/health");
        if health.status == 200 {
            break;
        }
        assert_eq!(health.status, 503);
        assert!(health.body.contains(r#""public_key":"missing""#), "{}", health.body);
        let a = post(listener.addr, body.as_bytes(), Some(&sig));
        if a.status == 200 {
            break; // loaded between the two requests
        }
        assert_eq!(a.status, 503, "{}", a.body);
        assert_eq!(count(&listener.db), 0);
        saw_503 = true;
        assert!(Instant::now() < deadline, "the key never loaded:\n{}", listener.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(saw_503, "the first fetches fail, so at least one 503 is expected");
    assert_eq!(post(listener.addr, body.as_bytes(), Some(&sig)).status, 200);
    assert!(flaky.hits.load(Ordering::SeqCst) >= 3);

    // A listener that cannot reach Stark Bank at all keeps answering /health with 503.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let dir2 = tempfile::tempdir().unwrap();
    let offline = Listener::start(dir2.path(), &dead_url, &[], &[]);
    assert_eq!(get(offline.addr, "/health").status, 503);
    assert_eq!(post(offline.addr, body.as_bytes(), Some(&sig)).status, 503);
    assert_eq!(count(&offline.db), 0);
}

/// The `--process` seam: the on-credit hook runs after new credits are committed, not for
/// duplicates or other log types (in process, through `listener::serve` on port 0).
#[test]
fn on_credit_hook_runs_after_new_credits() {
    use stark_sweep::listener;
    use stark_sweep::starkbank::verify::KeyCache;

    let key = keys::generate();
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let db_path = dir.path().join("hook.db");
    pin_workspace(&db_path);
    let mut cfg = listener::Config::new(db_path.clone());
    let r = runs.clone();
    let hook: listener::OnCreditStored = Arc::new(move || {
        // The credit is on disk before the hook runs.
        assert!(count(&r_db()) >= 1);
        r.fetch_add(1, Ordering::SeqCst);
    });
    fn r_db() -> PathBuf {
        HOOK_DB.lock().unwrap().clone().unwrap()
    }
    static HOOK_DB: Mutex<Option<PathBuf>> = Mutex::new(None);
    *HOOK_DB.lock().unwrap() = Some(db_path.clone());
    cfg.on_credit = Some(hook);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = listener::Shutdown::new();
    let server = {
        let shutdown = shutdown.clone();
        let keys = Arc::new(KeyCache::fixed(*key.verifying_key()));
        std::thread::spawn(move || listener::serve(listener, cfg, keys, shutdown))
    };
    let deliver = |body: &str| post(addr, body.as_bytes(), Some(&sign::sign(&key, body.as_bytes()))).status;
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while runs.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "the hook did not run {n} time(s)");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    assert_eq!(deliver(&credit("h1")), 200);
    wait_for(1);
    assert_eq!(deliver(&credit("h1")), 200); // duplicate
    assert_eq!(deliver(&event("h2", "invoice", "paid", Some(WORKSPACE))), 200);
    assert_eq!(deliver(&event("h3", "transfer", "credited", Some(WORKSPACE))), 200);
    assert_eq!(deliver(&credit("h4")), 200);
    wait_for(2);
    shutdown.trigger();
    server.join().unwrap().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one run per new credit, none for the rest");
    assert_eq!(count(&db_path), 4);
}

// ---- nginx in front ------------------------------------------------------------------------

fn find_tool(name: &str, env: &str, install: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("{name} not found (needed by the reverse-proxy test); to fix: {install}, or set {env}")
    })
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "deploy/nginx/stark-sweep.conf: expected one `{from}`");
    text.replacen(from, to, 1)
}

/// The shipped nginx config, run for real in front of the real listener: TLS terminates, a
/// signed delivery gets 200 through it, and nginx itself refuses an oversized body (413) and an
/// oversized header before the listener sees them.
#[test]
fn nginx_config_terminates_tls_and_enforces_limits() {
    let install = "run `sudo apt-get install -y nginx-light openssl` (scripts/test does it)";
    let nginx = find_tool("nginx", "STARK_SWEEP_NGINX", install);
    let openssl = find_tool("openssl", "STARK_SWEEP_OPENSSL", install);
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let listener = Listener::ready(d, &signer.keys.url(), &[], &[]);

    let out = Command::new(openssl)
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(d.join("tls.key"))
        .arg("-out")
        .arg(d.join("tls.crt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));

    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let shipped = std::fs::read_to_string(repo().join("deploy/nginx/stark-sweep.conf")).unwrap();
    let mut site = replace_once(&shipped, "listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;"));
    site = replace_once(&site, "listen [::]:443 ssl;", "");
    site = replace_once(&site, "server 127.0.0.1:8000;", &format!("server {};", listener.addr));
    site = replace_once(
        &site,
        "/etc/letsencrypt/live/sweep.example.com/fullchain.pem",
        &d.join("tls.crt").display().to_string(),
    );
    site = replace_once(
        &site,
        "/etc/letsencrypt/live/sweep.example.com/privkey.pem",
        &d.join("tls.key").display().to_string(),
    );
    site = replace_once(&site, "/var/log/nginx/stark-sweep.access.log", &d.join("access.log").display().to_string());
    std::fs::write(d.join("site.conf"), site).unwrap();
    let p = |name: &str| d.join(name).display().to_string();
    let main = format!(
        "daemon off;\nmaster_process off;\npid {pid};\nerror_log {err} info;\nevents {{ worker_connections 64; }}\n\
         http {{\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  fastcgi_temp_path {t}/fcgi;\n\
         uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n  include {site};\n}}\n",
        pid = p("nginx.pid"),
        err = p("nginx-error.log"),
        t = d.display(),
        site = p("site.conf"),
    );
    std::fs::write(d.join("nginx.conf"), main).unwrap();
    let test = Command::new(&nginx)
        .arg("-t")
        .arg("-p")
        .arg(d)
        .arg("-e")
        .arg(d.join("nginx-error.log"))
        .arg("-c")
        .arg(d.join("nginx.conf"))
        .output()
        .unwrap();
    assert!(test.status.success(), "nginx -t: {}", String::from_utf8_lossy(&test.stderr));
    let _nginx = Nginx(
        Command::new(&nginx)
            .arg("-p")
            .arg(d)
            .arg("-e")
            .arg(d.join("nginx-error.log"))
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(d.join("nginx-error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let client = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/webhook");
    let body = credit("tls1");
    let resp = client.post(&url).header("Digital-Signature", signer.sign(&body)).body(body.clone()).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().unwrap(), r#"{"result":"stored"}"#);
    assert!(stored(&listener.db, "tls1").is_some());

    let unsigned = client.post(&url).body(credit("tls2")).send().unwrap();
    assert_eq!(unsigned.status().as_u16(), 401, "the listener's verdict passes through");

    let seen_before = listener.log().matches("webhook ").count();
    let big = format!("{{\"pad\": \"{}\"}}", "b".repeat(2 * 1024 * 1024));
    let resp = client.post(&url).header("Digital-Signature", signer.sign(&big)).body(big).send().unwrap();
    assert_eq!(resp.status().as_u16(), 413, "nginx must refuse bodies over 1 MiB");

    let resp = client
        .post(&url)
        .header("Digital-Signature", signer.sign(&body))
        .header("X-Pad", "h".repeat(16 * 1024))
        .body(body.clone())
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    assert!(status == 400 && text.contains("Too Large"), "an oversized header must be refused: {status} {text}");
    assert_eq!(listener.log().matches("webhook ").count(), seen_before, "nginx forwarded a refused request");

    let wrong = client.get(&url).send().unwrap();
    assert_eq!(wrong.status().as_u16(), 403, "only POST reaches /webhook");
    assert_eq!(client.get(format!("https://localhost:{port}/other")).send().unwrap().status().as_u16(), 404);
    assert_eq!(count(&listener.db), 1);

    // /metrics answers on the listener's own (loopback) address, never through the public server.
    let public = client.get(format!("https://localhost:{port}/metrics")).send().unwrap();
    assert_eq!(public.status().as_u16(), 404, "nginx must not expose /metrics");
    assert!(!public.text().unwrap().contains("stark_sweep_"), "nginx forwarded /metrics");
    let direct = get(listener.addr, "/metrics");
    assert_eq!(direct.status, 200);
    assert!(direct.body.contains("\nstark_sweep_webhook_events_stored_total 1\n"), "{}", direct.body);
}
