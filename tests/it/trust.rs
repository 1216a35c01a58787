//! The trust boundary: a valid signature proves an event is Stark Bank's, for *some*
//! workspace. Only our own workspace's events, about invoices this deployment issued and
//! transfers it sent, move or settle money. The emulator signs foreign events with the bank
//! key, as Stark Bank does for every workspace.

use std::process::{Child, Stdio};

use chrono::Duration;
use stark_sweep::sandbox::{ForeignEvent, Kind, PayOptions, Snapshot};
use stark_sweep::starkbank::resources::NewTransfer;

use crate::util::{World, at, json, stderr, stdout, wait_for};

/// A world whose clock moves only when a test says so; nobody pays unless told to.
fn world(seed: u64) -> World {
    crate::util::manual_world(seed)
}

/// `serve-webhook` on a free port, registered as the workspace's webhook.
struct Listener {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Listener {
    fn start(w: &World, db: &std::path::Path, name: &str) -> Listener {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = w.dir.path().join(format!("{name}.log"));
        let child = w
            .cmd(&["serve-webhook", "--listen", &format!("127.0.0.1:{port}")])
            .env("STARK_SWEEP_DB", db)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let health = format!("http://127.0.0.1:{port}/health");
        wait_for("the listener to be healthy", || {
            reqwest::blocking::get(&health).is_ok_and(|r| r.status().is_success())
        });
        let url = format!("http://127.0.0.1:{port}/webhook");
        let out = w.cmd(&["webhook", "register", "--url", &url]).env("STARK_SWEEP_DB", db).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        Listener { child, url, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn issue(w: &World, db: &std::path::Path) -> Vec<String> {
    let out =
        w.cmd(&["issue-invoices", "--json", "--now", &at(w.sandbox.now())]).env("STARK_SWEEP_DB", db).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    json(&out)["invoices"].as_array().unwrap().iter().map(|i| i["invoiceId"].as_str().unwrap().to_string()).collect()
}

fn process(w: &World, db: &std::path::Path) -> std::process::Output {
    let out =
        w.cmd(&["process-events", "--json", "--now", &at(w.sandbox.now())]).env("STARK_SWEEP_DB", db).output().unwrap();
    assert!(matches!(out.status.code(), Some(0 | 3 | 75)), "process-events: {}{}", stdout(&out), stderr(&out));
    out
}

/// Runs process-events for each database, moving the clock between runs, until every run exits
/// 0, nothing is in flight at the emulator and no credit is left open.
fn settle(w: &World, dbs: &[&std::path::Path]) {
    for _ in 0..40 {
        let codes: Vec<_> = dbs.iter().map(|db| process(w, db).status.code()).collect();
        let busy = w.sandbox.snapshot().transfers.iter().any(|t| t.status == "created" || t.status == "processing");
        let open =
            dbs.iter().any(|db| !stark_sweep::store::Store::open(db).unwrap().open_credits().unwrap().is_empty());
        if !busy && !open && codes.iter().all(|c| *c == Some(0)) {
            return;
        }
        w.sandbox.advance(Duration::minutes(5)).unwrap();
    }
    panic!("process-events did not settle");
}

fn successes_for(s: &Snapshot, invoice: &str) -> Vec<(i64, Option<String>)> {
    s.transfers
        .iter()
        .filter(|t| t.status == "success" && t.tags.iter().any(|g| g == &format!("invoice-{invoice}")))
        .map(|t| (t.amount, t.external_id.clone()))
        .collect()
}

/// Regression: a genuine, signed `credited` event of ANOTHER workspace, for an invoice we never
/// created but tagged like ours, was stored and swept (R$ 9.876,54 left our balance).
#[test]
fn a_foreign_workspaces_credited_invoice_moves_no_money() {
    let w = world(21);
    let db = w.db.clone();
    issue(&w, &db);
    let listener = Listener::start(&w, &db, "listener");
    let ours = w.open_store().campaign().unwrap().unwrap();
    let foreign = w
        .sandbox
        .foreign_event(&ForeignEvent {
            subscription: Kind::Invoice,
            log_type: Some("credited".into()),
            amount: Some(987_654),
            fee: Some(0),
            tags: vec![
                "stark-sweep".into(),
                stark_sweep::campaign::campaign_label(&ours.tag),
                stark_sweep::campaign::slot_tag(&ours.tag, 0),
            ],
            ..ForeignEvent::default()
        })
        .unwrap();
    let status = w.sandbox.deliver(&listener.url, &foreign.body, &foreign.signature).unwrap();
    assert_ne!(status, 200, "a foreign workspace's event is not accepted as ours:\n{}", listener.log());
    assert!(listener.log().contains("other workspace"), "the refusal is logged:\n{}", listener.log());
    settle(&w, &[&db]);
    let snap = w.sandbox.snapshot();
    assert!(snap.transfers.is_empty(), "no money moved: {:#?}", snap.transfers);
    assert!(!w.open_store().event_exists(&foreign.event_id).unwrap(), "nothing that could act later is stored");
    let v = json(&w.run_expect(&["status", "--json", "--now", &at(w.sandbox.now())], 0));
    assert_eq!(v["credits"]["count"], 0, "{v:#}");
}

/// Regression: a `success` transfer tagged `invoice-<ours>` that we did not send (here a real
/// transfer in our own workspace, made by someone else) settled our credit, so ours was never
/// sent. A foreign workspace's transfer event is refused outright. `status` reports the stray.
#[test]
fn a_transfer_we_did_not_send_never_stands_in_for_ours() {
    let w = world(22);
    let db = w.db.clone();
    let ids = issue(&w, &db);
    let listener = Listener::start(&w, &db, "listener");
    w.sandbox.pay_invoice(&ids[0], PayOptions::default()).unwrap();
    w.sandbox.advance(Duration::minutes(5)).unwrap();
    // Someone with access to the workspace sends money tagged for our credit.
    let stray = NewTransfer {
        amount: 100_000,
        name: "Stark Bank S.A.".into(),
        tax_id: "20.018.183/0001-80".into(),
        bank_code: "20018183".into(),
        branch_code: "0001".into(),
        account_number: "6341320293482496".into(),
        account_type: "payment".into(),
        external_id: Some("someone-else-1".into()),
        tags: vec!["stark-sweep".into(), format!("invoice-{}", ids[0])],
    };
    w.client().create_transfers(&[stray]).unwrap();
    // And a foreign workspace's genuine event says a transfer for our credit succeeded.
    let foreign = w
        .sandbox
        .foreign_event(&ForeignEvent {
            subscription: Kind::Transfer,
            log_type: Some("success".into()),
            external_id: Some(format!("stark-sweep-{}-1", ids[0])),
            tags: vec!["stark-sweep".into(), format!("invoice-{}", ids[0])],
            ..ForeignEvent::default()
        })
        .unwrap();
    assert_ne!(w.sandbox.deliver(&listener.url, &foreign.body, &foreign.signature).unwrap(), 200);
    w.sandbox.advance(Duration::minutes(5)).unwrap(); // the stray succeeds, its events arrive
    settle(&w, &[&db]);
    let snap = w.sandbox.snapshot();
    let inv = snap.invoices.iter().find(|i| i.id == ids[0]).unwrap();
    let mine: Vec<_> = successes_for(&snap, &ids[0])
        .into_iter()
        .filter(|(_, x)| x.as_deref().is_some_and(|x| x.starts_with("stark-sweep-")))
        .collect();
    assert_eq!(mine, [(inv.amount - inv.fee, Some(format!("stark-sweep-{}-1", ids[0])))], "ours was sent, once");
    let out = w.run_expect(&["status", "--now", &at(w.sandbox.now())], 3);
    assert!(stdout(&out).contains("someone-else-1"), "status names the stray transfer:\n{}", stdout(&out));
    let v = json(&w.run_expect(&["status", "--json", "--now", &at(w.sandbox.now())], 3));
    assert_eq!(v["transfers"]["withoutCredit"].as_array().map(Vec::len), Some(1), "{v:#}");
}

/// Two deployments (two databases) share one workspace: each sweeps exactly its own credits,
/// found by its webhook or, for the one whose listener is down while the other's marks events
/// delivered, by reconciliation; each one's status shows only its own.
#[test]
fn two_databases_in_one_workspace_each_sweep_their_own_exactly_once() {
    let w = world(23);
    let (db_a, db_b) = (w.dir.path().join("a.db"), w.dir.path().join("b.db"));
    let ids_a = issue(&w, &db_a);
    let ids_b = issue(&w, &db_b);
    let _listener_a = Listener::start(&w, &db_a, "listener-a");
    // B has no listener: Stark Bank delivers every event to A's, which answers 200.
    for id in ids_a.iter().chain(&ids_b) {
        w.sandbox.pay_invoice(id, PayOptions::default()).unwrap();
    }
    w.sandbox.advance(Duration::minutes(5)).unwrap();
    settle(&w, &[&db_a, &db_b]);
    let snap = w.sandbox.snapshot();
    for (ids, db) in [(&ids_a, &db_a), (&ids_b, &db_b)] {
        let store = stark_sweep::store::Store::open(db).unwrap();
        let sends = store.sends().unwrap();
        assert!(
            sends.iter().all(|s| ids.contains(&s.invoice_id)),
            "a deployment sent for another's invoice: {sends:#?}"
        );
        let sent: Vec<String> = sends.into_iter().map(|s| s.external_id).collect();
        for id in ids {
            let inv = snap.invoices.iter().find(|i| &i.id == id).unwrap();
            let got = successes_for(&snap, id);
            assert_eq!(got.len(), 1, "invoice {id}: {got:?}");
            assert_eq!(got[0].0, inv.amount - inv.fee);
            assert!(
                sent.contains(got[0].1.as_ref().unwrap()),
                "invoice {id} was swept by the deployment that issued it"
            );
        }
        let out =
            w.cmd(&["status", "--json", "--now", &at(w.sandbox.now())]).env("STARK_SWEEP_DB", db).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        let v = json(&out);
        assert_eq!(v["credits"]["count"].as_u64(), Some(ids.len() as u64), "each status shows only its own: {v:#}");
    }
}

/// `status` reconciles both ways: transferred money without a credit is a discrepancy, and
/// "totals equal" only when they are.
#[test]
fn status_flags_a_transfer_without_a_credit() {
    let w = world(24);
    let db = w.db.clone();
    let ids = issue(&w, &db);
    w.sandbox.pay_invoice(&ids[0], PayOptions::default()).unwrap();
    w.sandbox.advance(Duration::minutes(5)).unwrap();
    settle(&w, &[&db]);
    let clean = w.run_expect(&["status", "--now", &at(w.sandbox.now())], 0);
    assert!(stdout(&clean).contains("totals equal"), "{}", stdout(&clean));
    // A transfer tagged for one of our invoices that was never credited.
    let stray = NewTransfer {
        amount: 100_000,
        name: "Stark Bank S.A.".into(),
        tax_id: "20.018.183/0001-80".into(),
        bank_code: "20018183".into(),
        branch_code: "0001".into(),
        account_number: "6341320293482496".into(),
        account_type: "payment".into(),
        external_id: Some("by-hand-1".into()),
        tags: vec!["stark-sweep".into(), format!("invoice-{}", ids[1])],
    };
    w.client().create_transfers(&[stray]).unwrap();
    w.sandbox.advance(Duration::minutes(5)).unwrap();
    process(&w, &db);
    let out = w.run_expect(&["status", "--now", &at(w.sandbox.now())], 3);
    let text = stdout(&out);
    assert!(!text.contains("totals equal"), "{text}");
    assert!(text.contains("by-hand-1") && text.contains("without a credit"), "{text}");
}

/// No payer's name or CPF appears in any output of a campaign at `-vv` (text and JSON logs,
/// stdout and stderr of every subcommand, the listener's log), nor in a dry run unless asked.
#[test]
fn no_payer_name_or_cpf_appears_in_any_output_at_vv() {
    let w = world(25);
    let db = w.db.clone();
    let seen = std::cell::RefCell::new(String::new());
    let run = |args: &[&str]| {
        let out = w.cmd(args).output().unwrap();
        seen.borrow_mut().push_str(&stdout(&out));
        seen.borrow_mut().push_str(&stderr(&out));
        out
    };
    for format in ["text", "json"] {
        let now = at(w.sandbox.now());
        let out = run(&["-vv", "--log-format", format, "issue-invoices", "--now", &now]);
        assert!(out.status.success(), "{}", stderr(&out));
        w.sandbox.advance(Duration::hours(3)).unwrap();
    }
    let listener = Listener::start(&w, &db, "listener-vv");
    let ids: Vec<String> = w.open_store().drafts(0).unwrap().into_iter().filter_map(|d| d.invoice_id).collect();
    for id in &ids {
        w.sandbox.pay_invoice(id, PayOptions::default()).unwrap();
    }
    for _ in 0..4 {
        w.sandbox.advance(Duration::minutes(5)).unwrap();
        let now = at(w.sandbox.now());
        run(&["-vv", "--log-format", "json", "process-events", "--now", &now]);
        run(&["-vv", "process-events", "--json", "--now", &now]);
    }
    let now = at(w.sandbox.now());
    run(&["-vv", "status", "--now", &now]);
    run(&["-vv", "status", "--json", "--now", &now]);
    run(&["-vv", "webhook", "list"]);
    run(&["-vv", "issue-invoices", "--dry-run", "--now", &now]);
    run(&["-vv", "issue-invoices", "--dry-run", "--json", "--now", &now]);
    seen.borrow_mut().push_str(&listener.log());
    let seen = seen.borrow().clone();
    let snap = w.sandbox.snapshot();
    assert!(snap.invoices.len() >= 16 && !seen.is_empty());
    for inv in &snap.invoices {
        let digits: String = inv.tax_id.chars().filter(char::is_ascii_digit).collect();
        let escaped = stark_sweep::starkbank::pyjson::dumps(&serde_json::Value::String(inv.name.clone()));
        for needle in [inv.name.as_str(), inv.tax_id.as_str(), digits.as_str(), escaped.trim_matches('"')] {
            assert!(!seen.contains(needle), "payer data {needle:?} appeared in the output");
        }
    }
    // Asked for, a dry run shows them (it is for checking what would be issued).
    let shown = w.cmd(&["issue-invoices", "--dry-run", "--show-payer", "--now", &now]).output().unwrap();
    assert!(
        stdout(&shown).lines().any(|l| l.contains(".") && l.contains("-") && l.contains("due")),
        "{}",
        stdout(&shown)
    );
}

/// One captured request: Access-Id, Access-Time, the raw body, Access-Signature.
type Captured = (String, String, Vec<u8>, String);

/// Records every request's signing headers and raw body, and answers like an empty create.
struct Capture(std::sync::Mutex<Vec<Captured>>);

impl stark_sweep::httpd::Handler for Capture {
    fn head(&self, _head: &stark_sweep::httpd::Head<'_>) -> stark_sweep::httpd::Decision {
        stark_sweep::httpd::Decision::Read { limit: 1 << 20 }
    }

    fn handle(&self, rq: stark_sweep::httpd::Request) -> stark_sweep::httpd::Response {
        let h = |n: &str| rq.header(n).unwrap_or_default().to_string();
        let (id, time, sig) = (h("Access-Id"), h("Access-Time"), h("Access-Signature"));
        self.0.lock().unwrap().push((id, time, rq.body, sig));
        stark_sweep::httpd::Response::json(200, r#"{"invoices": []}"#)
    }
}

/// The bytes we sign are the bytes we send, also with non-ASCII payer names: requests captured
/// off the wire verify with the official `ellipticcurve` library over exactly those bytes.
#[test]
fn requests_with_non_ascii_names_verify_with_the_official_library() {
    use stark_sweep::starkbank::{Client, ClientConfig, keys, resources::NewInvoice};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let capture = std::sync::Arc::new(Capture(std::sync::Mutex::new(Vec::new())));
    let stop = stark_sweep::httpd::Shutdown::new();
    let (c, s) = (capture.clone(), stop.clone());
    let server = std::thread::spawn(move || {
        stark_sweep::httpd::serve(listener, c, &stark_sweep::httpd::Options::new("capture"), &s).unwrap()
    });
    let key = keys::generate();
    let client = Client::new(ClientConfig::new(url, "5656565656565656", key.clone())).unwrap();
    let names = ["João da Silva", "Maria da Conceição", "Jürgen Müller", "Zoë Ñandú"];
    for name in names {
        let invoice = NewInvoice {
            amount: 1000,
            tax_id: "337.451.076-08".into(),
            name: name.into(),
            due: "2030-01-01T00:00:00+00:00".into(),
            expiration: 86_400,
            tags: vec!["stark-sweep".into()],
        };
        client.create_invoices(&[invoice]).unwrap();
    }
    stop.trigger();
    server.join().unwrap();
    let captured = capture.0.lock().unwrap().clone();
    assert_eq!(captured.len(), names.len());
    let public = keys::public_key_pem(key.verifying_key()).unwrap();
    let mut items = Vec::new();
    for ((id, time, body, sig), name) in captured.iter().zip(names) {
        let body = String::from_utf8(body.clone()).unwrap();
        assert!(
            body.contains(name) || body.contains(&stark_sweep::starkbank::pyjson::dumps(&serde_json::json!(name))[1..])
        );
        let message = format!("{id}:{time}:{body}");
        let digest = {
            use sha2::Digest as _;
            sha2::Sha256::digest(message.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        items.push(serde_json::json!({"message": message, "message_sha256": digest, "signature": sig,
            "public_key_pem": public, "expect_valid": true}));
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("captured.json");
    std::fs::write(&input, serde_json::json!({"items": items}).to_string()).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&crate::util::run_python("verify_rust_signatures.py", &[input.to_str().unwrap()], &[]))
            .unwrap();
    assert_eq!(report["valid"], names.len(), "{report}");
    assert_eq!(report["failures"].as_array().unwrap().len(), 0, "{report}");
}

/// A database of schema version 1 is migrated in place: its own credit is swept exactly once;
/// an open credit recorded back then for an invoice it never issued (what the old, tag-based
/// rule let in) becomes unclaimed and moves no money; history is kept.
#[test]
fn a_version_1_database_keeps_working_and_its_foreign_credit_moves_no_money() {
    use stark_sweep::starkbank::resources::NewInvoice;
    let w = world(26);
    let invoice = |name: &str| NewInvoice {
        amount: 5_000,
        tax_id: "337.451.076-08".into(),
        name: name.into(),
        due: stark_sweep::starkbank::time::format_secs(w.sandbox.now() + Duration::days(2)),
        expiration: 86_400,
        tags: vec!["stark-sweep".into()],
    };
    let made = w.client().create_invoices(&[invoice("Ana Lima"), invoice("Rui Costa")]).unwrap();
    let (ours, foreign) = (made[0].id.clone(), made[1].id.clone());
    for id in [&ours, &foreign] {
        w.sandbox.pay_invoice(id, PayOptions::default()).unwrap();
    }
    w.sandbox.advance(Duration::minutes(5)).unwrap();
    // Schema version 1, as the previous release wrote it.
    {
        let conn = rusqlite::Connection::open(&w.db).unwrap();
        conn.execute_batch(
            &std::fs::read_to_string(crate::util::repo().join("src/store/migrations/0001_init.sql")).unwrap(),
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let start = at(w.sandbox.now() - Duration::minutes(10));
        conn.execute(
            "INSERT INTO campaign (id, tag, started_at, length_seconds, slot_seconds) VALUES (1, 'c1', ?1, 86400, 10800)",
            [&start],
        )
        .unwrap();
        conn.execute("INSERT INTO slots (slot, claimed_at, attempted_at, issued_at) VALUES (0, ?1, ?1, ?1)", [&start])
            .unwrap();
        conn.execute(
            "INSERT INTO invoice_drafts (draft_key, slot, position, name, tax_id, amount, due, expiration, tags, invoice_id)
             VALUES ('k0', 0, 0, 'Ana Lima', '337.451.076-08', 5000, ?1, 86400, '[\"stark-sweep\"]', ?2)",
            [stark_sweep::starkbank::time::format_secs(w.sandbox.now() + Duration::days(2)), ours.clone()],
        )
        .unwrap();
        for (id, event) in [(&ours, "e1"), (&foreign, "e2")] {
            conn.execute(
                "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state)
                 VALUES (?1, ?2, 5000, 50, 4950, ?3, ?3, 'open')",
                [id.as_str(), event, &start],
            )
            .unwrap();
        }
    }
    settle(&w, &[&w.db]);
    let snap = w.sandbox.snapshot();
    assert_eq!(successes_for(&snap, &ours).len(), 1, "the deployment's own credit is swept once");
    assert!(successes_for(&snap, &foreign).is_empty(), "the legacy foreign credit moves no money");
    let store = w.open_store();
    assert_eq!(store.credit(&foreign).unwrap().unwrap().state.as_str(), "unclaimed");
    let v = json(&w.run_expect(&["status", "--json", "--now", &at(w.sandbox.now())], 0));
    assert_eq!((v["credits"]["count"].as_u64(), v["unclaimedCredits"].as_u64()), (Some(1), Some(1)), "{v:#}");
}

/// Someone with access to the workspace pre-creates a transfer with the externalId we send next
/// (ours are predictable), for another account: it is not ours (the target differs) and never
/// settles the credit. Since the review of #11 it stops the credit for a human (such a transfer
/// may be this invoice's sweep from elsewhere: another attempt could pay twice); after
/// `--retry-attention`, ours goes out once, under a new externalId.
#[test]
fn a_transfer_squatting_on_our_external_id_is_not_ours() {
    let w = world(27);
    let db = w.db.clone();
    let ids = issue(&w, &db);
    w.sandbox.pay_invoice(&ids[0], PayOptions::default()).unwrap();
    w.sandbox.advance(Duration::minutes(5)).unwrap();
    let inv = w.sandbox.snapshot().invoices.into_iter().find(|i| i.id == ids[0]).unwrap();
    let squat = NewTransfer {
        amount: inv.amount - inv.fee,
        name: "Someone Else".into(),
        tax_id: "337.451.076-08".into(),
        bank_code: "341".into(),
        branch_code: "0001".into(),
        account_number: "12345-6".into(),
        account_type: "checking".into(),
        external_id: Some(format!("stark-sweep-{}-1", ids[0])),
        tags: vec!["stark-sweep".into(), format!("invoice-{}", ids[0])],
    };
    w.client().create_transfers(&[squat]).unwrap();
    w.sandbox.advance(Duration::minutes(5)).unwrap();
    for _ in 0..3 {
        process(&w, &db);
        w.sandbox.advance(Duration::minutes(5)).unwrap();
    }
    let to_target = |s: &Snapshot| s.transfers.iter().filter(|t| t.account_number == "6341320293482496").count();
    assert_eq!(to_target(&w.sandbox.snapshot()), 0, "nothing more is sent while a human has not looked");
    let out = w.run_expect(&["status", "--now", &at(w.sandbox.now())], 3);
    assert!(stdout(&out).contains("may already be swept from elsewhere"), "says why: {}", stdout(&out));
    w.run(&["process-events", "--retry-attention", "--now", &at(w.sandbox.now())]);
    settle(&w, &[&db]);
    let snap = w.sandbox.snapshot();
    let ours: Vec<_> = snap
        .transfers
        .iter()
        .filter(|t| t.status == "success" && t.account_number == "6341320293482496")
        .map(|t| (t.amount, t.external_id.clone()))
        .collect();
    assert_eq!(
        ours,
        [(inv.amount - inv.fee, Some(format!("stark-sweep-{}-2", ids[0])))],
        "ours went out once, as attempt 2"
    );
    let out = w.run_expect(&["status", "--now", &at(w.sandbox.now())], 3);
    assert!(stdout(&out).contains("not sent by this deployment"), "the squatter is reported: {}", stdout(&out));
}

/// Found by review: once a workspace was pinned, `process-events` never asked which workspace
/// its credentials act on; another workspace's key swept our credits out of that workspace's
/// balance. Now every run that would send proves it first: another workspace's credentials
/// (with events of their own, or with none at all) stop it, exit 78, and nothing is sent.
#[test]
fn credentials_of_another_workspace_never_send_for_a_pinned_database() {
    let ours = world(51);
    let ids = {
        let v = json(&ours.run_expect(&["issue-invoices", "--json", "--now", &at(ours.sandbox.now())], 0));
        v["invoices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["invoiceId"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    ours.sandbox.pay_invoice(&ids[0], PayOptions::default()).unwrap();
    ours.sandbox.advance(Duration::minutes(5)).unwrap();
    // Record the credit without sending it: the kill switch holds the money.
    ours.run_expect(&["kill-switch", "on", "--reason", "test"], 0);
    ours.run_expect(&["process-events", "--now", &at(ours.sandbox.now())], 0);
    ours.run_expect(&["kill-switch", "off"], 0);
    let db = ours.db.to_str().unwrap().to_string();

    // Another workspace, first with no event at all, then with events of its own.
    let other = world(52);
    assert_ne!(other.sandbox.workspace_id(), ours.sandbox.workspace_id());
    let run = |w: &World| {
        w.cmd(&["process-events", "--no-reconcile", "--now", &at(w.sandbox.now())])
            .env("STARK_SWEEP_DB", &db)
            .output()
            .unwrap()
    };
    let out = run(&other);
    assert_eq!(out.status.code(), Some(78), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("another workspace"), "{}", stderr(&out));
    other.run_expect(&["issue-invoices", "--now", &at(other.sandbox.now())], 0);
    let out = run(&other);
    assert_eq!(out.status.code(), Some(78), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("belongs to workspace"), "{}", stderr(&out));
    assert!(other.sandbox.snapshot().transfers.is_empty(), "nothing left the other workspace");
    // Our own credentials still sweep it.
    ours.run_expect(&["process-events", "--now", &at(ours.sandbox.now())], 0);
    assert_eq!(ours.sandbox.snapshot().transfers.len(), 1);
}

/// Found by review: a wrong STARKBANK_WORKSPACE_ID on the very first run was only a warning
/// (exit 0), while the listener refused our own events as another workspace's.
#[test]
fn a_wrong_workspace_id_on_the_first_run_is_a_configuration_error() {
    let w = world(53);
    let out = w
        .cmd(&["issue-invoices", "--now", &at(w.sandbox.now())])
        .env("STARKBANK_WORKSPACE_ID", "999")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("STARKBANK_WORKSPACE_ID"), "{}", stderr(&out));
}
