//! The emulator against the Rust client and raw signed requests: flows, wire rules, money,
//! deliveries and retries, faults, and the `stark-sweep sandbox` command itself.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stark_sweep::httpd;
use stark_sweep::sandbox::{DuplicateMode, Faults, PayOptions, Sandbox, SandboxConfig, Snapshot};
use stark_sweep::starkbank::resources::{ListFilter, NewInvoice, NewTransfer};
use stark_sweep::starkbank::{Client, ClientConfig, keys, pyjson, sign, time, verify};

use crate::util;

// ---- helpers ------------------------------------------------------------------------------------

/// A quiet emulator: nothing gets paid unless a test says so.
pub fn config() -> SandboxConfig {
    SandboxConfig { pay_rate: 0.0, seed: 7, ..SandboxConfig::default() }
}

pub fn client(sb: &Sandbox) -> Client {
    let key = keys::parse_private_key(&sb.private_key_pem().unwrap()).unwrap();
    let mut cfg = ClientConfig::new(sb.url(), sb.project_id(), key);
    cfg.max_attempts = 1;
    Client::new(cfg).unwrap()
}

/// Polls `cond` until it holds; panics (with `what`) if it never does. A liveness bound, not a
/// timing assertion: the deadline is far above what any run needs.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn real_time() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{}.{:06}", now.as_secs(), now.subsec_micros())
}

/// One request signed with `key` as `project/{project}`; `None` key: no auth headers at all.
fn raw_as(
    url: &str,
    project: &str,
    key: Option<&k256::ecdsa::SigningKey>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let http = reqwest::blocking::Client::new();
    let mut req = http.request(method.parse().unwrap(), format!("{url}{path}")).body(body.to_string());
    if let Some(key) = key {
        let access_id = format!("project/{project}");
        let t = real_time();
        let sig = sign::sign(key, &sign::request_message(&access_id, &t, body.as_bytes()));
        req = req.header("Access-Id", access_id).header("Access-Time", t).header("Access-Signature", sig);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A request signed as the project, to send with a client of the test's choosing.
fn signed(
    http: &reqwest::blocking::Client,
    sb: &Sandbox,
    method: &str,
    path: &str,
    body: &str,
) -> reqwest::blocking::RequestBuilder {
    let key = keys::parse_private_key(&sb.private_key_pem().unwrap()).unwrap();
    let (access_id, t) = (format!("project/{}", sb.project_id()), real_time());
    let sig = sign::sign(&key, &sign::request_message(&access_id, &t, body.as_bytes()));
    http.request(method.parse().unwrap(), format!("{}{path}", sb.url()))
        .header("Access-Id", access_id)
        .header("Access-Time", t)
        .header("Access-Signature", sig)
        .body(body.to_string())
}

pub fn raw(sb: &Sandbox, method: &str, path: &str, body: &str) -> (u16, Value) {
    let key = keys::parse_private_key(&sb.private_key_pem().unwrap()).unwrap();
    raw_as(&sb.url(), &sb.project_id(), Some(&key), method, path, body)
}

fn codes(v: &Value) -> Vec<String> {
    v["errors"].as_array().unwrap().iter().map(|e| e["code"].as_str().unwrap().to_string()).collect()
}

pub fn new_invoice(amount: i64, tag: &str) -> NewInvoice {
    NewInvoice {
        amount,
        tax_id: "012.345.678-90".into(),
        name: "Maria Souza".into(),
        due: time::format(chrono::Utc::now() + chrono::Duration::days(2)),
        expiration: 5 * 86_400,
        tags: vec![tag.to_string()],
    }
}

fn invoice_at(amount: i64, due: chrono::DateTime<chrono::Utc>) -> Value {
    json!({"amount": amount, "taxId": "33745107608", "name": "Joao", "due": time::format_secs(due)})
}

pub fn new_transfer(amount: i64, external_id: Option<&str>) -> NewTransfer {
    NewTransfer {
        amount,
        name: "Stark Bank S.A.".into(),
        tax_id: "20018183000180".into(),
        bank_code: "20018183".into(),
        branch_code: "0001".into(),
        account_number: "6341320293482496".into(),
        account_type: "payment".into(),
        external_id: external_id.map(str::to_string),
        tags: vec!["Sweep".into()],
    }
}

/// A webhook receiver on port 0 that answers `status` and keeps (signature, body) pairs.
pub struct Receiver {
    pub url: String,
    pub status: Arc<AtomicU16>,
    pub got: Arc<Mutex<Vec<(String, String)>>>,
    stop: httpd::Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Keep {
    status: Arc<AtomicU16>,
    got: Arc<Mutex<Vec<(String, String)>>>,
}

impl httpd::Handler for Keep {
    fn head(&self, _head: &httpd::Head<'_>) -> httpd::Decision {
        httpd::Decision::Read { limit: 1 << 20 }
    }

    fn handle(&self, rq: httpd::Request) -> httpd::Response {
        let sig = rq.header("Digital-Signature").unwrap_or_default().to_string();
        self.got.lock().unwrap().push((sig, String::from_utf8(rq.body).unwrap()));
        httpd::Response::text(self.status.load(Ordering::SeqCst), "text/plain", "ok")
    }
}

impl Receiver {
    pub fn start(status: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        let (status, got) = (Arc::new(AtomicU16::new(status)), Arc::new(Mutex::new(Vec::new())));
        let keep = Arc::new(Keep { status: Arc::clone(&status), got: Arc::clone(&got) });
        let stop = httpd::Shutdown::new();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            httpd::serve(listener, keep, &httpd::Options::new("receiver"), &s).unwrap();
        });
        Receiver { url, status, got, stop, thread: Some(thread) }
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.got.lock().unwrap().iter().map(|(_, b)| serde_json::from_str(b).unwrap()).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn invoice_logs(snap: &Snapshot, id: &str) -> Vec<String> {
    snap.invoices.iter().find(|i| i.id == id).unwrap().logs.iter().map(|l| l.log_type.clone()).collect()
}

/// Every string in `v` that looks like a timestamp ends in `+00:00` (never `Z`).
fn assert_utc_offsets(v: &Value) {
    match v {
        Value::String(s)
            if s.len() >= 19 && s.as_bytes().get(10) == Some(&b'T') && s[..4].chars().all(|c| c.is_ascii_digit()) =>
        {
            assert!(s.ends_with("+00:00"), "timestamp {s} must end in +00:00");
            assert!(chrono::DateTime::parse_from_rfc3339(s).is_ok(), "{s}");
        }
        Value::Array(a) => a.iter().for_each(assert_utc_offsets),
        Value::Object(o) => o.values().for_each(assert_utc_offsets),
        _ => {}
    }
}

// ---- flows with the Rust client ------------------------------------------------------------------

#[test]
fn rust_client_invoice_flow() {
    let sb = Sandbox::start(config()).unwrap();
    let c = client(&sb);
    let drafts: Vec<NewInvoice> = (0..3).map(|i| new_invoice(1000 + i, "Campaign-A")).collect();
    let created = c.create_invoices(&drafts).unwrap();
    assert_eq!(created.len(), 3);
    for inv in &created {
        assert_eq!(inv.id.len(), 16, "16-digit id: {}", inv.id);
        assert!(inv.id.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(inv.status, "created");
        assert_eq!(inv.fee, 0);
        assert_eq!(inv.tax_id, "012.345.678-90");
        assert_eq!(inv.tags, vec!["campaign-a"], "tags are stored lowercased");
        assert_eq!(inv.nominal_amount, inv.amount);
    }
    c.create_invoices(&[new_invoice(5, "other")]).unwrap();
    let listed = c.query_invoices(&ListFilter::tags(["CAMPAIGN-A"])).unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].id, created[2].id, "newest first");
    let by_ids = c.query_invoices(&ListFilter::ids([created[0].id.clone()])).unwrap();
    assert_eq!(by_ids.len(), 1);
    assert_eq!(c.get_invoice(&created[1].id).unwrap(), created[1]);

    // Pages of 2 with an opaque cursor, then the end (cursor null).
    let (s, p1) = raw(&sb, "GET", "/v2/invoice?limit=2", "");
    assert_eq!(s, 200);
    assert_eq!(p1["invoices"].as_array().unwrap().len(), 2);
    let cursor = p1["cursor"].as_str().unwrap().to_string();
    let (_, p2) = raw(&sb, "GET", &format!("/v2/invoice?limit=2&cursor={cursor}"), "");
    assert_eq!(p2["invoices"].as_array().unwrap().len(), 2);
    assert!(p2["cursor"].is_null());

    // Change the amount, then cancel; each answers the invoice in a singular wrapper.
    let id = &created[0].id;
    let (s, v) = raw(&sb, "PATCH", &format!("/v2/invoice/{id}"), r#"{"amount": 777}"#);
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["invoice"]["amount"].as_i64(), v["invoice"]["nominalAmount"].as_i64()), (Some(777), Some(777)));
    let (s, v) = raw(&sb, "PATCH", &format!("/v2/invoice/{id}"), r#"{"status": "canceled"}"#);
    assert_eq!((s, v["invoice"]["status"].as_str()), (200, Some("canceled")));
    let (s, v) = raw(&sb, "PATCH", &format!("/v2/invoice/{id}"), r#"{"amount": 1}"#);
    assert_eq!((s, codes(&v)), (400, vec!["invalidOperation".to_string()]));

    let logs = c.invoice_logs(std::slice::from_ref(id)).unwrap();
    let types: Vec<&str> = logs.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["canceled", "created"]);
    let log_id = logs[0]["id"].as_str().unwrap();
    let (s, one) = raw(&sb, "GET", &format!("/v2/invoice/log/{log_id}"), "");
    assert_eq!((s, one["log"]["invoice"]["id"].as_str()), (200, Some(id.as_str())));
    let (_, typed) = raw(&sb, "GET", "/v2/invoice/log?types=created&limit=100", "");
    assert_eq!(typed["logs"].as_array().unwrap().len(), 4);
}

#[test]
fn rust_client_transfer_flow() {
    let sb = Sandbox::start(SandboxConfig {
        initial_balance: 100_000,
        transfer_fee: 10,
        time_scale: 600.0,
        transfer_step: Duration::from_secs(30),
        ..config()
    })
    .unwrap();
    let c = client(&sb);
    let t = c.create_transfers(&[new_transfer(3619, Some("sweep-1")), new_transfer(100, Some("sweep-2"))]).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].status.as_str(), t[0].external_id.as_str(), t[0].fee), ("created", "sweep-1", 10));
    assert_eq!(t[0].tax_id, "20.018.183/0001-80");
    assert_eq!(t[0].tags, vec!["sweep"]);
    assert_eq!(sb.snapshot().balance, 100_000 - 3619 - 100 - 20);
    assert_eq!(c.query_transfers(&ListFilter::tags(["sweep"])).unwrap().len(), 2);
    assert_eq!(c.query_transfers(&ListFilter::ids([t[1].id.clone()])).unwrap()[0].amount, 100);
    wait_for("transfers to succeed", || {
        c.query_transfers(&ListFilter { status: Some("success".into()), ..ListFilter::default() }).unwrap().len() == 2
    });
    assert_eq!(c.get_transfer(&t[0].id).unwrap().status, "success");
    let (s, logs) = raw(&sb, "GET", &format!("/v2/transfer/log?transferIds={}", t[0].id), "");
    assert_eq!(s, 200);
    let types: Vec<&str> = logs["logs"].as_array().unwrap().iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["success", "processing", "created"]);
    let log_id = logs["logs"][0]["id"].as_str().unwrap();
    let (s, one) = raw(&sb, "GET", &format!("/v2/transfer/log/{log_id}"), "");
    assert_eq!((s, one["log"]["transfer"]["status"].as_str()), (200, Some("success")));
}

#[test]
fn rust_client_events_and_webhooks() {
    let sb = Sandbox::start(config()).unwrap();
    let c = client(&sb);
    let rx = Receiver::start(200);
    let hook = c.create_webhook(&rx.url, &["invoice", "transfer"]).unwrap();
    assert_eq!(hook.id.len(), 16);
    assert_eq!(c.list_webhooks().unwrap(), vec![hook.clone()]);
    let inv = c.create_invoices(&[new_invoice(4100, "ev")]).unwrap().remove(0);
    sb.pay_invoice(&inv.id, PayOptions { credit_delay_seconds: Some(0), ..PayOptions::default() }).unwrap();
    wait_for("three deliveries", || rx.got.lock().unwrap().len() >= 3);

    // What was POSTed verifies with the key the API serves, is in Python's sorted form, and
    // has no isDelivered.
    let key = keys::parse_public_key(&c.public_key().unwrap()).unwrap();
    for (sig, body) in rx.got.lock().unwrap().iter() {
        assert!(matches!(verify::verify_body(&key, body.as_bytes(), sig), Ok(verify::Signed::Raw)));
        assert_eq!(pyjson::canonicalize(body.as_bytes()).as_deref(), Some(body.as_str()));
        let v: Value = serde_json::from_str(body).unwrap();
        assert!(v["event"].get("isDelivered").is_none());
        assert_eq!(v["event"]["workspaceId"].as_str(), Some(sb.workspace_id().as_str()));
        assert_eq!(v["event"]["subscription"], "invoice");
    }
    let mut types: Vec<String> =
        rx.bodies().iter().map(|b| b["event"]["log"]["type"].as_str().unwrap().to_string()).collect();
    types.sort();
    assert_eq!(types, ["created", "credited", "paid"]);

    wait_for("all delivered", || sb.snapshot().events.iter().all(|e| e.is_delivered));
    assert!(c.query_events(Some(false)).unwrap().is_empty());
    let events = c.query_events(Some(true)).unwrap();
    assert_eq!(events.len(), 3);
    let id = events[0]["id"].as_str().unwrap().to_string();
    let (s, v) = raw(&sb, "PATCH", &format!("/v2/event/{id}"), r#"{"isDelivered": false}"#);
    assert_eq!((s, v["event"]["isDelivered"].as_bool()), (200, Some(false)));
    assert_eq!(c.query_events(Some(false)).unwrap().len(), 1);
    c.mark_event_delivered(&id).unwrap();
    assert_eq!(c.get_event(&id).unwrap().is_delivered, Some(true));
    let (s, v) = raw(&sb, "DELETE", &format!("/v2/event/{id}"), "");
    assert_eq!((s, v["event"]["id"].as_str()), (200, Some(id.as_str())));
    let (s, v) = raw(&sb, "GET", &format!("/v2/event/{id}"), "");
    assert_eq!((s, codes(&v)), (400, vec!["invalidEvent".to_string()]));
    assert_eq!(c.query_events(None).unwrap().len(), 2);

    assert_eq!(c.delete_webhook(&hook.id).unwrap().id, hook.id);
    let (s, v) = raw(&sb, "GET", &format!("/v2/webhook/{}", hook.id), "");
    assert_eq!((s, codes(&v)), (400, vec!["invalidWebhookId".to_string()]));
    assert!(c.list_webhooks().unwrap().is_empty());
}

// ---- wire rules ---------------------------------------------------------------------------------

#[test]
fn wire_rules_of_the_real_api() {
    let sb = Sandbox::start(config()).unwrap();
    let url = sb.url();

    // Unknown ids are 400 invalid<Resource>, never 404.
    for (path, code) in [
        ("/v2/invoice/0", "invalidInvoice"),
        ("/v2/transfer/0", "invalidTransfer"),
        ("/v2/event/0", "invalidEvent"),
        ("/v2/webhook/0", "invalidWebhookId"),
    ] {
        let (s, v) = raw(&sb, "GET", path, "");
        assert_eq!((s, codes(&v)), (400, vec![code.to_string()]), "{path}");
        assert!(v["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // 105 items: exactly one invalidJson, for invoices and transfers alike.
    let many: Vec<Value> = (0..105).map(|_| invoice_at(100, chrono::Utc::now() + chrono::Duration::days(1))).collect();
    let (s, v) = raw(&sb, "POST", "/v2/invoice", &json!({ "invoices": many }).to_string());
    assert_eq!((s, codes(&v)), (400, vec!["invalidJson".to_string()]));
    let t = serde_json::to_value(new_transfer(1, None)).unwrap();
    let (s, v) = raw(&sb, "POST", "/v2/transfer", &json!({ "transfers": vec![t; 105] }).to_string());
    assert_eq!((s, codes(&v)), (400, vec!["invalidJson".to_string()]));
    assert!(sb.snapshot().invoices.is_empty());

    // One error per bad element; nothing is created.
    let body = json!({"invoices": [
        {"amount": 100, "taxId": "000.000.000-00", "name": "A"},
        {"amount": -5, "taxId": "33745107608", "name": "B"},
        {"amount": 0, "taxId": "33745107608", "name": "C", "color": "red"},
        {"amount": 0, "taxId": "33745107608", "name": "D"},
    ]});
    let (s, v) = raw(&sb, "POST", "/v2/invoice", &body.to_string());
    assert_eq!((s, codes(&v)), (400, vec!["invalidTaxId".into(), "invalidAmount".into(), "invalidJson".into()]));
    assert!(sb.snapshot().invoices.is_empty());
    let (s, v) = raw(&sb, "POST", "/v2/invoice", "[]");
    assert_eq!((s, codes(&v)), (400, vec!["invalidJson".to_string()]));
    for amount in [json!(0), json!(-5), json!("123"), json!({})] {
        let mut t = serde_json::to_value(new_transfer(1, None)).unwrap();
        t["amount"] = amount.clone();
        let (s, v) = raw(&sb, "POST", "/v2/transfer", &json!({ "transfers": [t] }).to_string());
        assert_eq!((s, codes(&v)), (400, vec!["invalidAmount".to_string()]), "amount {amount}");
    }

    // An invoice of 0 (any amount) is valid; the tax id comes back formatted; tags lowercased.
    let body = json!({"invoices": [{"amount": 0, "taxId": "33745107608", "name": "Z", "tags": ["A B", "Mixed"]}]});
    let (s, v) = raw(&sb, "POST", "/v2/invoice", &body.to_string());
    assert_eq!(s, 200, "{v}");
    let inv = &v["invoices"][0];
    assert_eq!(inv["taxId"], "337.451.076-08");
    assert_eq!(inv["tags"], json!(["a b", "mixed"]));
    for key in [
        "id",
        "amount",
        "nominalAmount",
        "fee",
        "fineAmount",
        "interestAmount",
        "discountAmount",
        "status",
        "name",
        "taxId",
        "due",
        "expiration",
        "fine",
        "interest",
        "discounts",
        "descriptions",
        "tags",
        "brcode",
        "link",
        "pdf",
        "transactionIds",
        "created",
        "updated",
    ] {
        assert!(inv.get(key).is_some(), "invoice field {key} missing: {inv}");
    }
    assert!(inv["brcode"].as_str().unwrap().starts_with("000201"));
    // Python's query encoding: `+` for the space, %2C for the comma.
    let (_, v) = raw(&sb, "GET", "/v2/invoice?tags=a+b%2Cnothing", "");
    assert_eq!(v["invoices"].as_array().unwrap().len(), 1);

    // /v2//public-key (what the Python SDK sends) works signed and unsigned.
    let (s, signed) = raw(&sb, "GET", "/v2//public-key?limit=1", "");
    assert_eq!(s, 200);
    let (s, open) = raw_as(&url, "", None, "GET", "/v2//public-key?limit=1", "");
    assert_eq!(s, 200);
    assert_eq!(signed, open);
    assert_eq!(open["publicKeys"][0]["content"].as_str(), Some(sb.public_key_pem().as_str()));
    assert!(open["cursor"].is_null());

    // isDelivered in any case.
    for q in ["isDelivered=False", "isDelivered=false", "isDelivered=FALSE"] {
        let (s, v) = raw(&sb, "GET", &format!("/v2/event?{q}"), "");
        assert_eq!((s, v["events"].as_array().unwrap().len()), (200, 1), "{q}");
    }
    let (_, v) = raw(&sb, "GET", "/v2/event?isDelivered=True", "");
    assert!(v["events"].as_array().unwrap().is_empty());

    // Every timestamp answered ends in +00:00.
    for path in ["/v2/invoice", "/v2/invoice/log", "/v2/event", "/v2/public-key"] {
        let (_, v) = raw(&sb, "GET", path, "");
        assert_utc_offsets(&v);
    }

    // Only 200 for success, including creates and deletes.
    let (s, _) = raw(&sb, "POST", "/v2/webhook", r#"{"url": "http://127.0.0.1:9/x", "subscriptions": ["invoice"]}"#);
    assert_eq!(s, 200);
    let (s, v) = raw(&sb, "POST", "/v2/webhook", r#"{"url": "http://127.0.0.1:9/x", "subscriptions": ["nope"]}"#);
    assert_eq!((s, codes(&v)), (400, vec!["invalidSubscription".to_string()]));
}

#[test]
fn authentication_is_enforced_on_every_v2_request() {
    let sb = Sandbox::start(config()).unwrap();
    let url = sb.url();
    let pid = sb.project_id();
    let stranger = keys::generate();
    let (s, v) = raw_as(&url, &pid, Some(&stranger), "GET", "/v2/invoice", "");
    assert_eq!((s, codes(&v)), (400, vec!["invalidCredentials".to_string()]));
    let (s, v) = raw_as(&url, "1234", Some(&stranger), "GET", "/v2/invoice", "");
    assert_eq!((s, codes(&v)), (400, vec!["invalidCredentials".to_string()]));
    let (s, v) = raw_as(&url, &pid, None, "GET", "/v2/invoice", "");
    assert_eq!((s, codes(&v)), (400, vec!["invalidCredentials".to_string()]));
    // A signed /public-key must be signed right.
    let (s, _) = raw_as(&url, &pid, Some(&stranger), "GET", "/v2/public-key", "");
    assert_eq!(s, 400);

    // Integer Access-Time, high-S signature, body covered byte for byte.
    let key = keys::parse_private_key(&sb.private_key_pem().unwrap()).unwrap();
    let t = chrono::Utc::now().timestamp().to_string();
    let access_id = format!("project/{pid}");
    let body = r#"{"url": "http://127.0.0.1:9/x", "subscriptions": ["transfer"]}"#;
    let sig = sign::high_s_twin(&sign::sign(&key, &sign::request_message(&access_id, &t, body.as_bytes()))).unwrap();
    let send = |body: &str, time: &str| {
        reqwest::blocking::Client::new()
            .post(format!("{url}/v2/webhook"))
            .header("Access-Id", &access_id)
            .header("Access-Time", time)
            .header("Access-Signature", &sig)
            .body(body.to_string())
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(send(body, &t), 200);
    assert_eq!(send(&body.replace("transfer", "invoice"), &t), 400, "the body is signed");
    // A stale Access-Time is refused even with a valid signature.
    let old = (chrono::Utc::now().timestamp() - 3600).to_string();
    let (s, v) = {
        let sig = sign::sign(&key, &sign::request_message(&access_id, &old, b""));
        let r = reqwest::blocking::Client::new()
            .get(format!("{url}/v2/invoice"))
            .header("Access-Id", &access_id)
            .header("Access-Time", &old)
            .header("Access-Signature", sig)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    assert_eq!((s, codes(&v)), (400, vec!["invalidCredentials".to_string()]));

    let snap = sb.snapshot();
    assert_eq!(snap.auth_failures, 6);
    let failed: Vec<_> = snap.requests.iter().filter(|r| !r.authenticated).collect();
    assert_eq!(failed.len(), 6);
    assert!(failed.iter().all(|r| r.status == 400 && r.error.as_deref() == Some("invalidCredentials")));
    assert_eq!(snap.webhooks.len(), 1, "only the well-signed create landed");
}

// ---- transfers: duplicates and balance ---------------------------------------------------------

#[test]
fn duplicate_external_id_is_refused_synchronously() {
    let sb = Sandbox::start(SandboxConfig { initial_balance: 10_000, ..config() }).unwrap();
    let c = client(&sb);
    c.create_transfers(&[new_transfer(100, Some("ext-1"))]).unwrap();
    let err = c.create_transfers(&[new_transfer(200, Some("ext-2")), new_transfer(100, Some("ext-1"))]).unwrap_err();
    assert_eq!(err.codes(), vec![stark_sweep::sandbox::DUPLICATE_EXTERNAL_ID_CODE]);
    // Within one batch too.
    let err = c.create_transfers(&[new_transfer(300, Some("ext-3")), new_transfer(301, Some("ext-3"))]).unwrap_err();
    assert_eq!(err.codes(), vec![stark_sweep::sandbox::DUPLICATE_EXTERNAL_ID_CODE]);
    assert_eq!(sb.snapshot().transfers.len(), 1, "a refused batch creates nothing");
}

#[test]
fn duplicate_external_id_fails_late_when_so_configured() {
    let sb = Sandbox::start(SandboxConfig {
        initial_balance: 10_000,
        duplicate_external_id: DuplicateMode::Late,
        time_scale: 600.0,
        ..config()
    })
    .unwrap();
    let c = client(&sb);
    let first = c.create_transfers(&[new_transfer(100, Some("ext-1"))]).unwrap().remove(0);
    let dup = c.create_transfers(&[new_transfer(100, Some("ext-1"))]).unwrap().remove(0);
    assert_ne!(first.id, dup.id);
    assert_eq!(dup.status, "created", "answered 200 with a new transfer");
    wait_for("the duplicate to fail", || c.get_transfer(&dup.id).unwrap().status == "failed");
    let (_, logs) = raw(&sb, "GET", &format!("/v2/transfer/log?transferIds={}&types=failed", dup.id), "");
    assert_eq!(logs["logs"][0]["errors"], json!([stark_sweep::sandbox::DUPLICATE_FAILED_MESSAGE]));
    wait_for("the first to succeed", || c.get_transfer(&first.id).unwrap().status == "success");
    assert_eq!(sb.snapshot().balance, 10_000 - 100, "the failed duplicate moved no money");
}

#[test]
fn same_amount_same_account_same_day_needs_an_external_id() {
    let sb = Sandbox::start(SandboxConfig { initial_balance: 10_000, ..config() }).unwrap();
    let c = client(&sb);
    c.create_transfers(&[new_transfer(500, None)]).unwrap();
    let err = c.create_transfers(&[new_transfer(500, None)]).unwrap_err();
    assert_eq!(err.codes(), vec![stark_sweep::sandbox::SAME_DAY_DUPLICATE_CODE]);
    c.create_transfers(&[new_transfer(501, None)]).unwrap();
    c.create_transfers(&[new_transfer(500, Some("explicit"))]).unwrap();
    assert_eq!(sb.snapshot().transfers.len(), 3);
}

#[test]
fn insufficient_balance_fails_the_transfer() {
    let sb = Sandbox::start(SandboxConfig { initial_balance: 1_000, time_scale: 600.0, ..config() }).unwrap();
    let c = client(&sb);
    let t = c.create_transfers(&[new_transfer(5_000, Some("big"))]).unwrap().remove(0);
    assert_eq!(t.status, "created");
    wait_for("failure", || c.get_transfer(&t.id).unwrap().status == "failed");
    // The switch: refused until a simulated time even with money.
    let until = sb.now() + chrono::Duration::days(1);
    sb.set_faults(Faults { insufficient_balance_until: Some(until), ..Faults::default() });
    let t = c.create_transfers(&[new_transfer(10, Some("small"))]).unwrap().remove(0);
    wait_for("failure", || c.get_transfer(&t.id).unwrap().status == "failed");
    let snap = sb.snapshot();
    assert_eq!(snap.balance, 1_000);
    let logs = &snap.transfers.iter().find(|x| x.id == t.id).unwrap().logs;
    assert_eq!(logs[1].errors, vec![stark_sweep::sandbox::INSUFFICIENT_BALANCE_MESSAGE.to_string()]);
}

#[test]
fn scheduled_transfers_wait_and_created_ones_can_be_deleted() {
    let sb = Sandbox::start(SandboxConfig { initial_balance: 10_000, transfer_fee: 5, time_scale: 3600.0, ..config() })
        .unwrap();
    let c = client(&sb);
    let rx = Receiver::start(200);
    c.create_webhook(&rx.url, &["transfer"]).unwrap();
    let tomorrow = (sb.now() + chrono::Duration::days(1)).date_naive();
    let soon = sb.now() + chrono::Duration::hours(2);
    let with = |amount: i64, ext: &str, scheduled: Option<String>| {
        let mut t = serde_json::to_value(new_transfer(amount, Some(ext))).unwrap();
        if let Some(s) = scheduled {
            t["scheduled"] = json!(s);
        }
        t
    };
    let body = json!({"transfers": [
        with(1000, "tomorrow", Some(time::format_date(tomorrow))),
        with(2000, "in-2h", Some(time::format_secs(soon))),
        with(3000, "now", None),
    ]});
    let (s, v) = raw(&sb, "POST", "/v2/transfer", &body.to_string());
    assert_eq!(s, 200, "{v}");
    let ids: Vec<String> =
        v["transfers"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().into()).collect();
    // A date-only scheduled is 11:00 UTC of that day (the real API echoed T11:00:00+00:00).
    assert_eq!(v["transfers"][0]["scheduled"].as_str().unwrap(), format!("{tomorrow}T11:00:00.000000+00:00"));
    assert_eq!(sb.snapshot().balance, 10_000 - 1005 - 2005 - 3005, "debited at creation, scheduled or not");

    wait_for("the unscheduled one to succeed", || c.get_transfer(&ids[2]).unwrap().status == "success");
    assert_eq!(c.get_transfer(&ids[0]).unwrap().status, "created");
    assert_eq!(c.get_transfer(&ids[1]).unwrap().status, "created", "waits for its scheduled time");

    // DELETE of a created transfer: canceled, refunded, a canceled log and event; still listed.
    let (s, v) = raw(&sb, "DELETE", &format!("/v2/transfer/{}", ids[0]), "");
    assert_eq!((s, v["transfer"]["status"].as_str()), (200, Some("canceled")), "{v}");
    assert_eq!(v["transfer"]["id"].as_str(), Some(ids[0].as_str()));
    assert_eq!(sb.snapshot().balance, 10_000 - 2005 - 3005);
    let canceled = c.query_transfers(&ListFilter { status: Some("canceled".into()), ..ListFilter::default() }).unwrap();
    assert_eq!(canceled.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [ids[0].as_str()]);
    wait_for("the canceled event", || {
        rx.bodies()
            .iter()
            .any(|b| b["event"]["log"]["type"] == "canceled" && b["event"]["log"]["transfer"]["id"] == json!(ids[0]))
    });

    wait_for("the scheduled one to succeed", || c.get_transfer(&ids[1]).unwrap().status == "success");
    let snap = sb.snapshot();
    let logs = |id: &str| snap.transfers.iter().find(|t| t.id == id).unwrap().logs.clone();
    let scheduled = snap.transfers.iter().find(|t| t.id == ids[1]).unwrap().scheduled;
    assert_eq!(time::format_secs(scheduled), time::format_secs(soon));
    let processing = logs(&ids[1]).into_iter().find(|l| l.log_type == "processing").unwrap();
    assert!(processing.created >= scheduled, "processing at {} before the scheduled {scheduled}", processing.created);
    assert_eq!(logs(&ids[0]).iter().map(|l| l.log_type.as_str()).collect::<Vec<_>>(), ["created", "canceled"]);

    // Only a created transfer can be canceled; an unknown id is invalidTransfer.
    let refused = vec![stark_sweep::sandbox::CANCEL_REFUSED_CODE.to_string()];
    for id in [&ids[0], &ids[1]] {
        let (s, v) = raw(&sb, "DELETE", &format!("/v2/transfer/{id}"), "");
        assert_eq!((s, codes(&v)), (400, refused.clone()), "{v}");
    }
    let (s, v) = raw(&sb, "DELETE", "/v2/transfer/0", "");
    assert_eq!((s, codes(&v)), (400, vec!["invalidTransfer".to_string()]));
    assert_eq!(sb.snapshot().balance, 10_000 - 2005 - 3005);
}

// ---- money --------------------------------------------------------------------------------------

#[test]
fn automatic_payment_credits_amount_minus_fee() {
    let sb = Sandbox::start(SandboxConfig {
        pay_rate: 1.0,
        pay_delay_min: Duration::from_secs(60),
        pay_delay_max: Duration::from_secs(120),
        time_scale: 3600.0,
        ..config()
    })
    .unwrap();
    let c = client(&sb);
    let invs = c.create_invoices(&[new_invoice(4100, "auto"), new_invoice(1000, "auto")]).unwrap();
    wait_for("credits", || sb.snapshot().invoices.iter().all(|i| i.logs.len() == 3));
    let snap = sb.snapshot();
    for inv in &invs {
        assert_eq!(invoice_logs(&snap, &inv.id), ["created", "paid", "credited"]);
        let now = c.get_invoice(&inv.id).unwrap();
        assert_eq!((now.status.as_str(), now.amount, now.fee), ("paid", inv.amount, 50));
    }
    let logs = c.invoice_logs(&[invs[0].id.clone()]).unwrap();
    let fee_of = |t: &str| logs.iter().find(|l| l["type"] == t).unwrap()["invoice"]["fee"].as_i64().unwrap();
    assert_eq!((fee_of("created"), fee_of("paid"), fee_of("credited")), (0, 0, 50));
    assert_eq!(snap.balance, 4100 - 50 + 1000 - 50);
}

#[test]
fn overdue_invoices_are_never_paid_automatically() {
    let sb = Sandbox::start(SandboxConfig {
        pay_rate: 1.0,
        pay_delay_min: Duration::from_secs(600),
        pay_delay_max: Duration::from_secs(1200),
        time_scale: 3600.0,
        ..config()
    })
    .unwrap();
    let due = sb.now() + chrono::Duration::minutes(1);
    let (s, v) = raw(&sb, "POST", "/v2/invoice", &json!({"invoices": [invoice_at(1000, due)]}).to_string());
    assert_eq!(s, 200, "{v}");
    let id = v["invoices"][0]["id"].as_str().unwrap().to_string();
    let pay_at = sb.snapshot().invoices[0].will_pay_at.unwrap();
    wait_for("the planned payment time to pass", || sb.now() > pay_at + chrono::Duration::minutes(1));
    let snap = sb.snapshot();
    assert_eq!(invoice_logs(&snap, &id), ["created", "overdue"]);
    assert_eq!(snap.invoices[0].status, "overdue");
    assert_eq!(snap.balance, 0);
}

#[test]
fn manual_payments_cover_discount_fine_interest_fee_and_net_below_zero() {
    let sb = Sandbox::start(SandboxConfig { time_scale: 3600.0, ..config() }).unwrap();
    let now = sb.now();
    let due = now + chrono::Duration::days(10);
    let discounted = json!({"amount": 4100, "taxId": "33745107608", "name": "D", "due": time::format_secs(due),
        "discounts": [{"percentage": 10.5, "due": time::format_secs(now + chrono::Duration::days(5))}]});
    let body = json!({"invoices": [discounted, invoice_at(10_000, due), invoice_at(0, due), invoice_at(2_000, due)]});
    let (s, v) = raw(&sb, "POST", "/v2/invoice", &body.to_string());
    assert_eq!(s, 200, "{v}");
    let ids: Vec<String> = v["invoices"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().into()).collect();
    let quick = |o: PayOptions| PayOptions { credit_delay_seconds: Some(0), ..o };

    sb.pay_invoice(&ids[0], quick(PayOptions::default())).unwrap();
    sb.pay_invoice(&ids[1], quick(PayOptions { days_late: Some(15), fee: Some(0), ..PayOptions::default() })).unwrap();
    sb.pay_invoice(&ids[2], quick(PayOptions { amount: Some(30), ..PayOptions::default() })).unwrap();
    sb.pay_invoice(&ids[3], quick(PayOptions { fee: Some(2_500), ..PayOptions::default() })).unwrap();
    assert!(sb.pay_invoice(&ids[3], PayOptions::default()).is_err(), "paid twice");
    wait_for("four credits", || sb.snapshot().invoices.iter().all(|i| i.logs.len() == 3));

    let snap = sb.snapshot();
    let inv = |i: usize| snap.invoices.iter().find(|x| x.id == ids[i]).unwrap().clone();
    // 4100 with 10.5% off: 431 discount, 3669 paid (the real sandbox example), fee 50.
    let a = inv(0);
    assert_eq!((a.nominal_amount, a.discount_amount, a.amount, a.fee), (4100, 431, 3669, 50));
    // 15 days late: 2% fine (200) + 1%/month interest for half a month (50).
    let b = inv(1);
    assert_eq!((b.fine_amount, b.interest_amount, b.amount, b.fee), (200, 50, 10_250, 0));
    // Open amount paid 30 with fee 50: net -20. Fee above the amount: net -500.
    let c = inv(2);
    assert_eq!((c.nominal_amount, c.amount, c.fee), (0, 30, 50));
    let d = inv(3);
    assert_eq!((d.amount, d.fee), (2_000, 2_500));
    assert!(snap.invoices.iter().all(|i| i.status == "paid"));
    assert_eq!(snap.balance, (3669 - 50) + 10_250 + (30 - 50) + (2_000 - 2_500));
}

#[test]
fn a_returned_transfer_fails_after_success_and_its_money_comes_back() {
    let sb = Sandbox::start(SandboxConfig { initial_balance: 10_000, transfer_fee: 7, time_scale: 600.0, ..config() })
        .unwrap();
    let c = client(&sb);
    let rx = Receiver::start(200);
    c.create_webhook(&rx.url, &["transfer"]).unwrap();
    let t = c.create_transfers(&[new_transfer(3_000, Some("ret-1")), new_transfer(1_000, Some("ret-2"))]).unwrap();
    assert!(sb.return_transfer(&t[0].id, "too early").is_err(), "only a successful transfer can be returned");
    wait_for("success", || t.iter().all(|x| c.get_transfer(&x.id).unwrap().status == "success"));
    assert_eq!(sb.snapshot().balance, 10_000 - 3_007 - 1_007);

    sb.return_transfer(&t[0].id, "Pix return: receiver account closed").unwrap();
    let back = c.get_transfer(&t[0].id).unwrap();
    assert_eq!(back.status, "failed");
    let snap = sb.snapshot();
    let returned = snap.transfers.iter().find(|x| x.id == t[0].id).unwrap();
    assert_eq!(returned.transaction_ids.len(), 2, "the debit and the return");
    let types: Vec<&str> = returned.logs.iter().map(|l| l.log_type.as_str()).collect();
    assert_eq!(types, ["created", "processing", "success", "failed"]);
    assert_eq!(returned.logs[3].errors, vec!["Pix return: receiver account closed".to_string()]);
    assert_eq!(snap.balance, 10_000 - 1_007, "amount and fee came back");
    wait_for("the failed event", || {
        rx.bodies()
            .iter()
            .any(|b| b["event"]["log"]["type"] == "failed" && b["event"]["log"]["transfer"]["id"] == json!(t[0].id))
    });

    // The control route: a second return is refused; no body means the default reason.
    let http = reqwest::blocking::Client::new();
    let url = |id: &str| format!("{}/_sandbox/transfers/{id}/return", sb.url());
    let r = http.post(url(&t[0].id)).body(r#"{"reason": "again"}"#).send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(codes(&r.json().unwrap()), vec!["invalidOperation".to_string()]);
    let r = http.post(url("0")).send().unwrap();
    assert_eq!((r.status().as_u16(), codes(&r.json().unwrap())), (400, vec!["invalidTransfer".to_string()]));
    let r = http.post(url(&t[1].id)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(
        (v["transfer"]["status"].as_str(), v["transfer"]["transactionIds"].as_array().unwrap().len()),
        (Some("failed"), 2)
    );
    let (_, logs) = raw(&sb, "GET", &format!("/v2/transfer/log?transferIds={}&types=failed", t[1].id), "");
    assert_eq!(logs["logs"][0]["errors"], json!([stark_sweep::sandbox::RETURN_REASON]));
    assert_eq!(sb.snapshot().balance, 10_000);
}

#[test]
fn patching_a_paid_invoice_to_a_lower_amount_reverses_the_difference() {
    let sb = Sandbox::start(SandboxConfig { invoice_fee: 50, time_scale: 3600.0, ..config() }).unwrap();
    let c = client(&sb);
    let rx = Receiver::start(200);
    c.create_webhook(&rx.url, &["invoice"]).unwrap();
    let invs = c.create_invoices(&[new_invoice(4_100, "rev"), new_invoice(2_000, "rev")]).unwrap();
    let (id, uncredited) = (&invs[0].id, &invs[1].id);
    let quick = PayOptions { credit_delay_seconds: Some(0), ..PayOptions::default() };
    sb.pay_invoice(id, quick).unwrap();
    sb.pay_invoice(uncredited, PayOptions { skip_credit: true, ..PayOptions::default() }).unwrap();
    wait_for("the credit", || sb.snapshot().balance == 4_100 - 50);
    let patch = |id: &str, body: &str| raw(&sb, "PATCH", &format!("/v2/invoice/{id}"), body);

    let (s, v) = patch(id, r#"{"amount": 1000}"#);
    assert_eq!(s, 200, "{v}");
    let inv = &v["invoice"];
    assert_eq!(
        (inv["amount"].as_i64(), inv["nominalAmount"].as_i64(), inv["fee"].as_i64()),
        (Some(1_000), Some(4_100), Some(50))
    );
    assert_eq!((inv["status"].as_str(), inv["transactionIds"].as_array().unwrap().len()), (Some("paid"), 2));
    assert_eq!(sb.snapshot().balance, 4_100 - 50 - 3_100, "the reversed cents left the balance");

    // Raising the amount, the same amount, or any other field of a paid invoice: refused.
    let refused = vec!["invalidOperation".to_string()];
    for body in [
        r#"{"amount": 2000}"#,
        r#"{"amount": 1000}"#,
        r#"{"status": "canceled"}"#,
        r#"{"amount": 10, "expiration": 60}"#,
    ] {
        let (s, v) = patch(id, body);
        assert_eq!((s, codes(&v)), (400, refused.clone()), "{body}");
    }
    let due = time::format_secs(sb.now() + chrono::Duration::days(9));
    let (s, v) = patch(id, &json!({ "due": due }).to_string());
    assert_eq!((s, codes(&v)), (400, refused.clone()));
    // Paid but not credited yet: nothing to reverse from.
    let (s, v) = patch(uncredited, r#"{"amount": 10}"#);
    assert_eq!((s, codes(&v)), (400, refused.clone()));

    // All the rest, through the Sandbox method.
    sb.reverse_invoice(id, 0).unwrap();
    assert!(sb.reverse_invoice(id, 0).is_err(), "nothing left to reverse");
    let snap = sb.snapshot();
    let after = snap.invoices.iter().find(|i| i.id == *id).unwrap();
    assert_eq!((after.amount, after.status.as_str(), after.transaction_ids.len()), (0, "paid", 3));
    assert_eq!(invoice_logs(&snap, id), ["created", "paid", "credited", "reversed", "reversed"]);
    assert_eq!(snap.balance, -50, "a full reversal leaves the fee charged");
    let logs = c.invoice_logs(std::slice::from_ref(id)).unwrap();
    let reversed: Vec<i64> =
        logs.iter().filter(|l| l["type"] == "reversed").map(|l| l["invoice"]["amount"].as_i64().unwrap()).collect();
    assert_eq!(reversed, [0, 1_000], "newest first, each log with the amount after it");
    wait_for("both reversed events", || {
        rx.bodies().iter().filter(|b| b["event"]["log"]["type"] == "reversed").count() == 2
    });
}

// ---- webhooks: retries and faults ---------------------------------------------------------------

#[test]
fn failed_deliveries_retry_after_5_30_120_minutes_then_stop() {
    let sb = Sandbox::start(SandboxConfig { time_scale: 36_000.0, ..config() }).unwrap();
    let c = client(&sb);
    let rx = Receiver::start(500);
    let hook = c.create_webhook(&rx.url, &["invoice"]).unwrap();
    c.create_invoices(&[new_invoice(100, "retry")]).unwrap();
    wait_for("four attempts", || sb.snapshot().attempts.len() == 4);
    // Three simulated hours later there is still nothing more.
    let later = sb.now() + chrono::Duration::hours(3);
    wait_for("three more simulated hours", || sb.now() > later);
    let snap = sb.snapshot();
    assert_eq!(snap.attempts.len(), 4);
    assert_eq!(rx.got.lock().unwrap().len(), 4);
    let mut times: Vec<_> = snap.attempts.iter().map(|a| a.created).collect();
    times.sort();
    let gaps: Vec<i64> = times.windows(2).map(|w| (w[1] - w[0]).num_minutes()).collect();
    assert_eq!(gaps, stark_sweep::sandbox::RETRY_DELAYS_MINUTES);
    assert!(snap.attempts.iter().all(|a| a.code == "badHttpStatus"
        && a.message == "HTTP POST request returned status 500"
        && a.webhook_id == hook.id));
    assert!(!snap.events[0].is_delivered);
    // The attempts through the API.
    let event_id = &snap.events[0].id;
    let (s, v) = raw(&sb, "GET", &format!("/v2/event/attempt?eventIds={event_id}"), "");
    assert_eq!((s, v["attempts"].as_array().unwrap().len()), (200, 4));
    let attempt_id = v["attempts"][0]["id"].as_str().unwrap();
    let (s, one) = raw(&sb, "GET", &format!("/v2/event/attempt/{attempt_id}"), "");
    assert_eq!((s, one["attempt"]["eventId"].as_str()), (200, Some(event_id.as_str())));
    assert_eq!(c.query_events(Some(false)).unwrap().len(), 1);
}

#[test]
fn a_later_success_marks_the_event_delivered() {
    // Slow enough (5 simulated minutes = 0.5 s) that the receiver recovers before the retries end.
    let sb = Sandbox::start(SandboxConfig { time_scale: 600.0, ..config() }).unwrap();
    let c = client(&sb);
    let rx = Receiver::start(503);
    c.create_webhook(&rx.url, &["invoice"]).unwrap();
    c.create_invoices(&[new_invoice(100, "x")]).unwrap();
    wait_for("one attempt", || !sb.snapshot().attempts.is_empty());
    rx.status.store(200, Ordering::SeqCst);
    wait_for("delivery", || sb.snapshot().events[0].is_delivered);
    assert!(sb.snapshot().attempts.len() < 4);
}

#[test]
fn delivery_faults_drop_duplicate_and_reorder() {
    let sb = Sandbox::start(SandboxConfig { time_scale: 3600.0, ..config() }).unwrap();
    let c = client(&sb);
    let rx = Receiver::start(200);
    c.create_webhook(&rx.url, &["invoice"]).unwrap();

    sb.set_faults(Faults { drop_delivery_rate: 1.0, ..Faults::default() });
    let dropped = c.create_invoices(&[new_invoice(100, "drop")]).unwrap().remove(0);
    sb.set_faults(Faults { duplicate_delivery_rate: 1.0, ..Faults::default() });
    let doubled = c.create_invoices(&[new_invoice(100, "dup")]).unwrap().remove(0);
    sb.set_faults(Faults { out_of_order: true, ..Faults::default() });
    let reordered = c.create_invoices(&[new_invoice(100, "order")]).unwrap().remove(0);
    sb.pay_invoice(&reordered.id, PayOptions { credit_delay_seconds: Some(60), ..PayOptions::default() }).unwrap();
    wait_for("deliveries", || {
        rx.bodies().iter().filter(|b| b["event"]["log"]["invoice"]["id"] == json!(reordered.id)).count() == 3
    });
    wait_for("the duplicate", || {
        rx.bodies().iter().filter(|b| b["event"]["log"]["invoice"]["id"] == json!(doubled.id)).count() == 2
    });

    let bodies = rx.bodies();
    assert!(!bodies.iter().any(|b| b["event"]["log"]["invoice"]["id"] == json!(dropped.id)), "never POSTed");
    let snap = sb.snapshot();
    let dropped_event = snap.events.iter().find(|e| e.resource_id == dropped.id).unwrap();
    assert!(!dropped_event.is_delivered);
    assert!(snap.deliveries.iter().any(|d| d.event_id == dropped_event.id && d.outcome == "dropped"));
    assert!(snap.attempts.is_empty(), "a dropped delivery is not an attempt");
    let dup_ids: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["event"]["log"]["invoice"]["id"] == json!(doubled.id))
        .map(|b| &b["event"]["id"])
        .collect();
    assert_eq!(dup_ids[0], dup_ids[1], "the same event twice");
    let order: Vec<&str> = bodies
        .iter()
        .filter(|b| b["event"]["log"]["invoice"]["id"] == json!(reordered.id))
        .map(|b| b["event"]["log"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["created", "credited", "paid"]);
}

#[test]
fn request_faults_error_rate_and_commit_then_500() {
    let sb = Sandbox::start(SandboxConfig { initial_balance: 10_000, ..config() }).unwrap();
    let c = client(&sb);
    sb.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let (s, v) = raw(&sb, "GET", "/v2/invoice", "");
    assert_eq!((s, codes(&v)), (500, vec!["internalServerError".to_string()]));
    sb.set_faults(Faults { commit_then_500_next_invoices: 1, commit_then_500_next_transfers: 1, ..Faults::default() });
    let err = c.create_invoices(&[new_invoice(100, "c500")]).unwrap_err();
    assert!(err.is_temporary(), "{err}");
    assert_eq!(c.query_invoices(&ListFilter::tags(["c500"])).unwrap().len(), 1, "committed before the 500");
    c.create_invoices(&[new_invoice(100, "c500")]).unwrap();
    let err = c.create_transfers(&[new_transfer(100, Some("t-1"))]).unwrap_err();
    assert!(err.is_temporary(), "{err}");
    assert_eq!(sb.snapshot().transfers.len(), 1);
    assert_eq!(sb.snapshot().faults.commit_then_500_next_transfers, 0);
}

fn messages(v: &Value) -> Vec<String> {
    v["errors"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_string()).collect()
}

fn transfers_body(drafts: &[NewTransfer]) -> String {
    json!({ "transfers": drafts }).to_string()
}

#[test]
fn too_many_requests_faults_answer_429_and_create_nothing() {
    let sb = Sandbox::start(SandboxConfig { initial_balance: 10_000, ..config() }).unwrap();
    sb.set_faults(Faults {
        too_many_requests_next_invoices: 1,
        too_many_requests_next_transfers: 2,
        ..Faults::default()
    });
    let invoice = json!({"invoices": [invoice_at(100, sb.now() + chrono::Duration::days(1))]}).to_string();
    let (s, v) = raw(&sb, "POST", "/v2/invoice", &invoice);
    assert_eq!((s, codes(&v)), (429, vec![stark_sweep::sandbox::TOO_MANY_REQUESTS_CODE.to_string()]));
    assert!(!messages(&v)[0].is_empty());
    assert!(sb.snapshot().invoices.is_empty());
    assert_eq!(raw(&sb, "POST", "/v2/invoice", &invoice).0, 200, "only the next one");
    for ext in ["a", "b"] {
        let (s, v) = raw(&sb, "POST", "/v2/transfer", &transfers_body(&[new_transfer(100, Some(ext))]));
        assert_eq!((s, codes(&v)), (429, vec!["tooManyRequests".to_string()]));
    }
    assert!(sb.snapshot().transfers.is_empty());
    assert_eq!(sb.snapshot().balance, 10_000);
    // Reads are not limited; the counter is spent.
    assert_eq!(raw(&sb, "GET", "/v2/transfer", "").0, 200);
    assert_eq!(raw(&sb, "POST", "/v2/transfer", &transfers_body(&[new_transfer(100, Some("a"))])).0, 200);
    assert_eq!(sb.snapshot().faults.too_many_requests_next_transfers, 0);
}

#[test]
fn refuse_next_transfers_answers_one_error_per_element() {
    let sb = Sandbox::start(SandboxConfig { initial_balance: 10_000, ..config() }).unwrap();
    let c = client(&sb);
    sb.set_faults(Faults {
        refuse_next_transfers: 2,
        refuse_code: "invalidAccountNumber".into(),
        refuse_message: "Receiver account is closed".into(),
        ..Faults::default()
    });
    let (s, v) = raw(
        &sb,
        "POST",
        "/v2/transfer",
        &transfers_body(&[new_transfer(100, Some("r-1")), new_transfer(200, Some("r-2"))]),
    );
    assert_eq!((s, codes(&v)), (400, vec!["invalidAccountNumber".to_string(); 2]));
    assert_eq!(messages(&v), ["Element 0: Receiver account is closed", "Element 1: Receiver account is closed"]);
    // An invalid request is answered its own errors and spends no refusal.
    let (s, v) = raw(&sb, "POST", "/v2/transfer", &transfers_body(&[new_transfer(0, Some("r-3"))]));
    assert_eq!((s, codes(&v)), (400, vec!["invalidAmount".to_string()]));
    assert_eq!(sb.snapshot().faults.refuse_next_transfers, 1);
    let err = c.create_transfers(&[new_transfer(100, Some("r-1"))]).unwrap_err();
    assert_eq!(err.codes(), vec!["invalidAccountNumber"]);
    let snap = sb.snapshot();
    assert!(snap.transfers.is_empty(), "refusals create nothing");
    assert_eq!(snap.balance, 10_000);
    // The same externalIds go through afterwards: nothing was recorded.
    c.create_transfers(&[new_transfer(100, Some("r-1")), new_transfer(200, Some("r-2"))]).unwrap();
    // Empty code and message: the defaults.
    sb.set_faults(Faults { refuse_next_transfers: 1, ..Faults::default() });
    let (s, v) = raw(&sb, "POST", "/v2/transfer", &transfers_body(&[new_transfer(300, Some("r-4"))]));
    assert_eq!((s, codes(&v)), (400, vec![stark_sweep::sandbox::REFUSE_CODE.to_string()]));
    assert_eq!(messages(&v), [format!("Element 0: {}", stark_sweep::sandbox::REFUSE_MESSAGE)]);
}

#[test]
fn fail_next_transfers_accepts_then_fails_without_moving_money() {
    let sb = Sandbox::start(SandboxConfig { initial_balance: 10_000, time_scale: 600.0, ..config() }).unwrap();
    let c = client(&sb);
    sb.set_faults(Faults {
        fail_next_transfers: 1,
        fail_reason: "Receiver account is closed".into(),
        ..Faults::default()
    });
    let t = c.create_transfers(&[new_transfer(1_000, Some("f-1")), new_transfer(2_000, Some("f-2"))]).unwrap();
    assert_eq!((t[0].status.as_str(), t[1].status.as_str()), ("created", "created"), "accepted");
    assert_eq!(sb.snapshot().balance, 10_000 - 2_000, "the doomed one debited nothing");
    wait_for("the first to fail", || c.get_transfer(&t[0].id).unwrap().status == "failed");
    wait_for("the second to succeed", || c.get_transfer(&t[1].id).unwrap().status == "success");
    let (_, logs) = raw(&sb, "GET", &format!("/v2/transfer/log?transferIds={}", t[0].id), "");
    let types: Vec<&str> = logs["logs"].as_array().unwrap().iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["failed", "created"], "fails at its first step");
    assert_eq!(logs["logs"][0]["errors"], json!(["Receiver account is closed"]));
    assert_eq!(sb.snapshot().balance, 10_000 - 2_000);
    // Empty reason: the default.
    sb.set_faults(Faults { fail_next_transfers: 1, ..Faults::default() });
    let t = c.create_transfers(&[new_transfer(10, Some("f-3"))]).unwrap().remove(0);
    wait_for("failure", || c.get_transfer(&t.id).unwrap().status == "failed");
    let logs = &sb.snapshot().transfers.iter().find(|x| x.id == t.id).unwrap().logs.clone();
    assert_eq!(logs[1].errors, vec![stark_sweep::sandbox::FAIL_REASON.to_string()]);
}

#[test]
fn slow_commits_wait_unlocked_then_commit_after_the_client_gave_up() {
    let sb = Sandbox::start(SandboxConfig { initial_balance: 10_000, ..config() }).unwrap();
    let c = client(&sb);
    sb.set_faults(Faults {
        slow_commit_ms: 1_500,
        slow_commit_next_invoices: 1,
        slow_commit_next_transfers: 1,
        ..Faults::default()
    });
    let impatient = reqwest::blocking::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();

    // An invoice: the client times out, the emulator serves others meanwhile, then commits.
    let body = json!({"invoices": [invoice_at(100, sb.now() + chrono::Duration::days(1))]}).to_string();
    let post = signed(&impatient, &sb, "POST", "/v2/invoice", &body);
    let gave_up = std::thread::spawn(move || post.send().unwrap_err().is_timeout());
    wait_for("the slow invoice commit to start", || sb.snapshot().faults.slow_commit_next_invoices == 0);
    let (s, v) = raw(&sb, "GET", "/v2/invoice", "");
    assert_eq!((s, v["invoices"].as_array().unwrap().len()), (200, 0), "served while the slow one waits");
    assert!(gave_up.join().unwrap(), "the client timed out");
    wait_for("the invoice to be committed anyway", || sb.snapshot().invoices.len() == 1);
    wait_for("the answer to be recorded", || {
        sb.snapshot().requests.iter().any(|r| r.method == "POST" && r.path == "/v2/invoice" && r.status == 200)
    });

    // A transfer: validated, then judged at commit, so a duplicate that landed meanwhile wins.
    let post = signed(&impatient, &sb, "POST", "/v2/transfer", &transfers_body(&[new_transfer(500, Some("slow-1"))]));
    let gave_up = std::thread::spawn(move || post.send().unwrap_err().is_timeout());
    wait_for("the slow transfer commit to start", || sb.snapshot().faults.slow_commit_next_transfers == 0);
    let fast = c.create_transfers(&[new_transfer(500, Some("slow-1"))]).unwrap().remove(0);
    assert!(gave_up.join().unwrap());
    wait_for("the slow request to be answered", || {
        sb.snapshot().requests.iter().any(|r| r.path == "/v2/transfer" && r.status == 400)
    });
    let snap = sb.snapshot();
    let refused = snap.requests.iter().find(|r| r.path == "/v2/transfer" && r.status == 400).unwrap();
    assert_eq!(refused.error.as_deref(), Some(stark_sweep::sandbox::DUPLICATE_EXTERNAL_ID_CODE));
    assert_eq!(snap.transfers.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [fast.id.as_str()]);
    assert_eq!(snap.balance, 10_000 - 500);
    // Spent: the next creation is immediate.
    let (s, _) = raw(&sb, "POST", "/v2/invoice", &body);
    assert_eq!(s, 200);
}

#[test]
fn control_routes_read_state_set_faults_and_pay() {
    let sb = Sandbox::start(SandboxConfig { time_scale: 3600.0, ..config() }).unwrap();
    let c = client(&sb);
    let inv = c.create_invoices(&[new_invoice(2000, "ctl")]).unwrap().remove(0);
    let http = reqwest::blocking::Client::new();
    let url = sb.url();
    let r = http.post(format!("{url}/_sandbox/invoices/{}/pay", inv.id)).body(r#"{"fee": 75}"#).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait_for("credit", || sb.snapshot().balance == 2000 - 75);
    let r =
        http.post(format!("{url}/_sandbox/faults")).body(r#"{"latency_ms": 1, "out_of_order": true}"#).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(sb.snapshot().faults.out_of_order);
    let r = http.post(format!("{url}/_sandbox/faults")).body(r#"{"no_such_fault": 1}"#).send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let state: Snapshot = http.get(format!("{url}/_sandbox/state")).send().unwrap().json().unwrap();
    assert_eq!(state.invoices[0].fee, 75);
    assert_eq!(state.balance, 1925);
    assert!(state.requests.iter().any(|r| r.method == "POST" && r.path == "/v2/invoice" && r.authenticated));
}

#[test]
fn foreign_events_are_signed_with_the_bank_key_and_invisible_to_our_api() {
    use stark_sweep::sandbox::{ForeignEvent, Kind};
    let sb = Sandbox::start(SandboxConfig { invoice_fee: 50, ..config() }).unwrap();
    let c = client(&sb);
    let key = keys::parse_public_key(&sb.public_key_pem()).unwrap();
    let ours = c.create_invoices(&[new_invoice(100, "ours")]).unwrap().remove(0);

    let credited = sb
        .foreign_event(&ForeignEvent {
            amount: Some(4100),
            tags: vec!["Other-Campaign".into()],
            ..ForeignEvent::default()
        })
        .unwrap();
    assert!(matches!(
        verify::verify_body(&key, credited.body.as_bytes(), &credited.signature),
        Ok(verify::Signed::Raw)
    ));
    assert_eq!(pyjson::canonicalize(credited.body.as_bytes()).as_deref(), Some(credited.body.as_str()));
    let v: Value = serde_json::from_str(&credited.body).unwrap();
    let event = &v["event"];
    let keys_of = |o: &Value| o.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys_of(event), ["created", "id", "log", "subscription", "workspaceId"], "the delivered form");
    assert_eq!(event["id"].as_str(), Some(credited.event_id.as_str()));
    let workspace = event["workspaceId"].as_str().unwrap();
    assert!(workspace.len() == 16 && workspace.chars().all(|c| c.is_ascii_digit()), "{workspace}");
    assert_ne!(workspace, sb.workspace_id());
    assert_eq!((event["subscription"].as_str(), event["log"]["type"].as_str()), (Some("invoice"), Some("credited")));
    let inv = &event["log"]["invoice"];
    assert_eq!(
        (inv["amount"].as_i64(), inv["fee"].as_i64(), inv["status"].as_str()),
        (Some(4100), Some(50), Some("paid"))
    );
    assert_eq!(inv["tags"], json!(["other-campaign"]));
    assert_ne!(inv["id"].as_str(), Some(ours.id.as_str()));
    // Every field of one of our invoices, no more.
    let (_, mine) = raw(&sb, "GET", &format!("/v2/invoice/{}", ours.id), "");
    assert_eq!(keys_of(inv), keys_of(&mine["invoice"]));

    // Invisible to our API, and not in our state.
    let (s, v) = raw(&sb, "GET", &format!("/v2/event/{}", credited.event_id), "");
    assert_eq!((s, codes(&v)), (400, vec!["invalidEvent".to_string()]));
    let (s, v) = raw(&sb, "GET", &format!("/v2/invoice/{}", inv["id"].as_str().unwrap()), "");
    assert_eq!((s, codes(&v)), (400, vec!["invalidInvoice".to_string()]));
    assert!(!sb.snapshot().events.iter().any(|e| e.id == credited.event_id));

    // A transfer of a given workspace, with the given fields; POSTed as a delivery thread would.
    let transfer = sb
        .foreign_event(&ForeignEvent {
            workspace_id: Some("5078376503050240".into()),
            subscription: Kind::Transfer,
            log_type: Some("failed".into()),
            errors: vec!["Duplicated transfer".into()],
            id: Some("6000000000000001".into()),
            amount: Some(3619),
            fee: Some(0),
            external_id: Some("sweep-elsewhere".into()),
            ..ForeignEvent::default()
        })
        .unwrap();
    let rx = Receiver::start(200);
    assert_eq!(sb.deliver(&rx.url, &transfer.body, &transfer.signature).unwrap(), 200);
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got, vec![(transfer.signature.clone(), transfer.body.clone())]);
    let v: Value = serde_json::from_str(&transfer.body).unwrap();
    let (event, t) = (&v["event"], &v["event"]["log"]["transfer"]);
    assert_eq!(event["workspaceId"], "5078376503050240");
    assert_eq!(event["log"]["errors"], json!(["Duplicated transfer"]));
    assert_eq!(
        (t["id"].as_str(), t["status"].as_str(), t["amount"].as_i64()),
        (Some("6000000000000001"), Some("failed"), Some(3619))
    );
    assert_eq!(t["externalId"], "sweep-elsewhere");
    rx.status.store(401, Ordering::SeqCst);
    assert_eq!(sb.deliver(&rx.url, &transfer.body, "bad").unwrap(), 401, "the receiver's status, as is");

    // Never one of ours: our workspace, our invoice id; nor an invoice externalId.
    for spec in [
        ForeignEvent { workspace_id: Some(sb.workspace_id()), ..ForeignEvent::default() },
        ForeignEvent { id: Some(ours.id.clone()), ..ForeignEvent::default() },
        ForeignEvent { external_id: Some("x".into()), ..ForeignEvent::default() },
    ] {
        assert!(sb.foreign_event(&spec).is_err(), "{spec:?}");
    }

    // The control route, high-S with the fault on.
    sb.set_faults(Faults { high_s_signatures: true, ..Faults::default() });
    let http = reqwest::blocking::Client::new();
    let r = http
        .post(format!("{}/_sandbox/foreign-events", sb.url()))
        .body(r#"{"subscription": "transfer", "log_type": "success", "amount": 100}"#)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let answer: Value = r.json().unwrap();
    let (body, sig) = (answer["body"].as_str().unwrap(), answer["signature"].as_str().unwrap());
    assert!(verify::verify_body(&key, body.as_bytes(), sig).is_ok());
    use base64::Engine as _;
    let low = base64::engine::general_purpose::STANDARD.encode(sign::decode(sig).unwrap().to_der().as_bytes());
    assert_ne!(low, sig, "the high-S form");
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["event"]["id"], answer["eventId"]);
    assert_eq!(v["event"]["log"]["transfer"]["status"], "success");
    let r = http.post(format!("{}/_sandbox/foreign-events", sb.url())).body(r#"{"colour": "red"}"#).send().unwrap();
    assert_eq!(r.status().as_u16(), 400, "unknown fields are refused");
    assert!(sb.snapshot().events.len() == 1, "only our invoice's created event");
}

// ---- the command --------------------------------------------------------------------------------

#[test]
fn sandbox_command_prints_env_reuses_its_key_and_stops_on_sigterm() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let mut child = util::cmd(dir.path())
            .args(["sandbox", "--listen", "127.0.0.1:0", "--seed", "42", "--pay-rate", "0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut env = std::collections::HashMap::new();
        let mut banner = String::new();
        while env.len() < 3 {
            let line = lines.next().unwrap().unwrap();
            banner.push_str(&line);
            if let Some((k, v)) = line.split_once('=').filter(|(k, _)| k.starts_with("STARKBANK_")) {
                env.insert(k.to_string(), v.to_string());
            }
        }
        assert!(banner.contains("seed 42"), "{banner}");
        // The printed credentials work.
        let key =
            keys::parse_private_key(&std::fs::read_to_string(&env["STARKBANK_PRIVATE_KEY_PATH"]).unwrap()).unwrap();
        let (s, _) =
            raw_as(&env["STARKBANK_API_URL"], &env["STARKBANK_PROJECT_ID"], Some(&key), "GET", "/v2/invoice", "");
        assert_eq!(s, 200);
        let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "SIGTERM ends it cleanly: {status:?}");
        env
    };
    let first = run();
    let key_path = dir.path().join("private-key.pem");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
    let second = run();
    assert_eq!(first["STARKBANK_PROJECT_ID"], second["STARKBANK_PROJECT_ID"], "the key is reused, not replaced");
}

// ---- the official Python SDK --------------------------------------------------------------------

#[test]
fn official_python_sdk_flows() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(SandboxConfig {
        key_dir: Some(dir.path().to_path_buf()),
        time_scale: 600.0,
        initial_balance: 100_000,
        ..config()
    })
    .unwrap();
    let key_path = sb.private_key_path().unwrap();
    let out = util::run_python(
        "sandbox_sdk.py",
        &[],
        &[
            ("SANDBOX_URL", sb.url().as_str()),
            ("SANDBOX_PROJECT_ID", sb.project_id().as_str()),
            ("SANDBOX_PRIVATE_KEY_PATH", key_path.to_str().unwrap()),
            ("NO_PROXY", "127.0.0.1,localhost"),
        ],
    );
    for name in [
        "webhook_create_list_get",
        "invoice_create_query_page_get_update_cancel_logs",
        "invoice_errors",
        "event_parse_of_a_delivered_webhook",
        "event_query_page_get_update_delete",
        "event_attempts_of_a_failing_webhook",
        "transfer_create_query_page_get_logs",
        "transfer_webhook_event_parses",
        "transfer_scheduled_tomorrow_is_deleted",
        "webhook_delete",
        "wrong_key_is_refused",
    ] {
        assert!(out.contains(&format!("ok {name}\n")), "{name} did not report ok:\n{out}");
    }
    let snap = sb.snapshot();
    // The SDK's `/v2//public-key` fetch arrived, signed, and was served.
    assert!(snap.requests.iter().any(|r| r.path == "/v2/public-key" && r.authenticated && r.status == 200));
    assert_eq!(snap.auth_failures, 1, "only the wrong-key request was refused");
    let refused: Vec<_> = snap.requests.iter().filter(|r| !r.authenticated).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].error.as_deref(), Some("invalidCredentials"));
    assert!(snap.requests.iter().any(|r| r.query.contains("isDelivered=False")), "Python's capitalized booleans");
    assert_eq!(snap.transfers.iter().filter(|t| t.status == "success").count(), 2);
    assert_eq!(snap.transfers.iter().filter(|t| t.status == "canceled").count(), 1, "the scheduled one, refunded");
    assert_eq!(snap.balance, 100_000 - 100 - 101 + (4102 - 205 - 50));
}

#[test]
fn high_s_fault_signs_webhooks_like_stark_bank_and_they_still_verify() {
    use base64::Engine as _;
    let sb =
        Sandbox::start(SandboxConfig { faults: Faults { high_s_signatures: true, ..Faults::default() }, ..config() })
            .unwrap();
    let c = client(&sb);
    let rx = Receiver::start(200);
    c.create_webhook(&rx.url, &["invoice"]).unwrap();
    c.create_invoices(&[new_invoice(100, "high-s")]).unwrap();
    wait_for("a delivery", || !rx.got.lock().unwrap().is_empty());
    let (sig, body) = rx.got.lock().unwrap()[0].clone();
    let low = base64::engine::general_purpose::STANDARD.encode(sign::decode(&sig).unwrap().to_der().as_bytes());
    assert_ne!(low, sig, "the POSTed signature is the high-S form");
    let key = keys::parse_public_key(&sb.public_key_pem()).unwrap();
    assert!(verify::verify_body(&key, body.as_bytes(), &sig).is_ok());
}
