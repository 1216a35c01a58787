//! The trust boundary: a valid signature proves an event is Stark Bank's, for *some*
//! workspace. Only our own workspace's events, about invoices this deployment issued and
//! transfers it sent, move or settle money. The emulator signs foreign events with the bank
//! key, as Stark Bank does for every workspace.

use std::process::{Child, Stdio};

use chrono::Duration;
use stark_sweep::sandbox::{ForeignEvent, Kind, PayOptions, SandboxConfig, Snapshot};
use stark_sweep::starkbank::resources::NewTransfer;

use crate::util::{World, at, json, stderr, stdout, wait_for};

/// A world whose clock moves only when a test says so; nobody pays unless told to.
fn world(seed: u64) -> World {
    World::new(SandboxConfig {
        manual_clock: true,
        pay_rate: 0.0,
        initial_balance: 100_000_000,
        seed,
        ..SandboxConfig::default()
    })
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
