//! `process-events` against the emulator: every credited invoice becomes exactly one
//! successful transfer of amount - fee, whatever fails on the way.

use std::collections::HashMap;

use chrono::Duration;
use stark_sweep::sandbox::{DuplicateMode, Faults, PayOptions, SandboxConfig, Snapshot};

use crate::util::{World, at, json, stderr, stdout, wait_for};

/// Manual payments only, an hour of simulated time per real second.
fn world(dup: DuplicateMode) -> World {
    World::new(SandboxConfig {
        pay_rate: 0.0,
        time_scale: 3600.0,
        duplicate_external_id: dup,
        seed: 11,
        ..SandboxConfig::default()
    })
}

/// Issues one slot and returns the invoice ids.
fn issue(w: &World) -> Vec<String> {
    let v = json(&w.run_expect(&["issue-invoices", "--json", "--now", &at(w.sandbox.now())], 0));
    v["invoices"].as_array().unwrap().iter().map(|i| i["invoiceId"].as_str().unwrap().to_string()).collect()
}

fn credited(s: &Snapshot) -> Vec<String> {
    s.invoices.iter().filter(|i| i.logs.iter().any(|l| l.log_type == "credited")).map(|i| i.id.clone()).collect()
}

fn wait_credited(w: &World, n: usize) {
    wait_for("credits at the emulator", || credited(&w.sandbox.snapshot()).len() >= n);
}

/// Successful transfers per invoice tag, from the emulator.
fn successes(s: &Snapshot) -> HashMap<String, Vec<i64>> {
    let mut out: HashMap<String, Vec<i64>> = HashMap::new();
    for t in s.transfers.iter().filter(|t| t.status == "success") {
        let inv = t.tags.iter().find_map(|tag| tag.strip_prefix("invoice-")).unwrap_or("?").to_string();
        out.entry(inv).or_default().push(t.amount);
    }
    out
}

/// Runs process-events until every transfer has settled at the emulator (no created/processing).
fn settle(w: &World) {
    settle_with(w, &[]);
}

fn settle_with(w: &World, extra: &[&str]) {
    for _ in 0..50 {
        let out = w.run(&[&["process-events", "--json"], extra].concat());
        let code = out.status.code();
        assert!(matches!(code, Some(0) | Some(75)), "process-events exited {code:?}: {}", stderr(&out));
        let snap = w.sandbox.snapshot();
        let busy = snap.transfers.iter().any(|t| t.status == "created" || t.status == "processing");
        let open = w.open_store().open_credits().unwrap().len();
        if code == Some(0) && !busy && open == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("process-events did not settle: {:#?}", w.open_store().credits().unwrap());
}

/// Exactly one successful transfer of amount - fee per credited invoice with a positive net.
fn assert_exactly_once(w: &World) {
    let snap = w.sandbox.snapshot();
    let ok = successes(&snap);
    let target = stark_sweep::sweep::Target::default();
    for inv in snap.invoices.iter().filter(|i| i.logs.iter().any(|l| l.log_type == "credited")) {
        let net = inv.amount - inv.fee;
        match ok.get(&inv.id) {
            Some(amounts) if net > 0 => {
                assert_eq!(amounts, &vec![net], "invoice {} (amount {}, fee {})", inv.id, inv.amount, inv.fee)
            }
            None if net <= 0 => {}
            other => panic!("invoice {} net {net}: successful transfers {other:?}", inv.id),
        }
    }
    for t in snap.transfers.iter().filter(|t| t.status == "success") {
        assert_eq!(
            (
                t.bank_code.as_str(),
                t.branch_code.as_str(),
                t.account_number.as_str(),
                t.name.as_str(),
                t.account_type.as_str()
            ),
            (
                target.bank_code.as_str(),
                target.branch_code.as_str(),
                target.account_number.as_str(),
                target.name.as_str(),
                target.account_type.as_str()
            )
        );
        assert_eq!(
            stark_sweep::sandbox::normalize_tax_id(&t.tax_id),
            stark_sweep::sandbox::normalize_tax_id(&target.tax_id)
        );
        assert!(t.external_id.as_deref().is_some_and(|x| x.starts_with("stark-sweep-")));
    }
    // No invoice is paid without being credited-and-transferred, and nothing else moved.
    let credited_ids = credited(&snap);
    assert!(ok.keys().all(|k| credited_ids.contains(k)), "a transfer for an invoice that was not credited");
}

#[test]
fn varied_credits_become_exact_transfers_once() {
    let w = world(DuplicateMode::Sync);
    let ids = issue(&w);
    assert!(ids.len() >= 8);
    // A discounted invoice of our workspace that issue-invoices did not issue (made directly
    // through the API, tagged like ours): swept only with --all-credits.
    let client = w.client();
    let due = w.sandbox.now() + Duration::days(3);
    let discounted = serde_json::json!({"invoices": [{
        "amount": 10_000, "taxId": "337.451.076-08", "name": "Ana Lima", "due": stark_sweep::starkbank::time::format_secs(due),
        "expiration": 86_400, "tags": ["stark-sweep"],
        "discounts": [{"percentage": 10.5, "due": stark_sweep::starkbank::time::format_secs(due - Duration::days(1))}]
    }]});
    let made = client
        .call(
            reqwest::Method::POST,
            "invoice",
            &[],
            Some(&discounted),
            stark_sweep::starkbank::client::Idempotency::Unsafe,
            "test",
        )
        .unwrap();
    let discounted_id = made["invoices"][0]["id"].as_str().unwrap().to_string();
    // Pay: on time, late (fine and interest), the same net twice, a fee eating everything,
    // paid but never credited, and the discounted one.
    w.sandbox.pay_invoice(&ids[0], PayOptions::default()).unwrap();
    w.sandbox.pay_invoice(&ids[1], PayOptions { days_late: Some(4), ..PayOptions::default() }).unwrap();
    w.sandbox.pay_invoice(&ids[2], PayOptions { amount: Some(5_000), fee: Some(75), ..PayOptions::default() }).unwrap();
    w.sandbox.pay_invoice(&ids[3], PayOptions { amount: Some(5_000), fee: Some(75), ..PayOptions::default() }).unwrap();
    w.sandbox
        .pay_invoice(&ids[4], PayOptions { amount: Some(3_000), fee: Some(3_000), ..PayOptions::default() })
        .unwrap();
    w.sandbox.pay_invoice(&ids[5], PayOptions { skip_credit: true, ..PayOptions::default() }).unwrap();
    w.sandbox.pay_invoice(&discounted_id, PayOptions::default()).unwrap();
    wait_credited(&w, 6);
    let snap = w.sandbox.snapshot();
    let late = snap.invoices.iter().find(|i| i.id == ids[1]).unwrap();
    assert!(late.fine_amount > 0 && late.interest_amount > 0, "late payment carries fine and interest");
    let disc = snap.invoices.iter().find(|i| i.id == discounted_id).unwrap();
    assert!(disc.discount_amount > 0 && disc.amount < disc.nominal_amount);

    settle(&w);
    assert!(
        !successes(&w.sandbox.snapshot()).contains_key(&discounted_id),
        "an invoice this deployment did not issue is not swept because of its tags"
    );
    settle_with(&w, &["--all-credits"]);
    assert_exactly_once(&w);
    let ok = successes(&w.sandbox.snapshot());
    assert_eq!(ok.len(), 5, "on-time, late, two same-net and the discounted one: {ok:?}");
    assert!(!ok.contains_key(&ids[4]) && !ok.contains_key(&ids[5]), "net <= 0 and paid-only invoices send nothing");
    // The store says the same, and a second run sends nothing.
    let credits = w.open_store().credits().unwrap();
    assert_eq!(credits.iter().filter(|c| c.state.as_str() == "transferred").count(), 5);
    assert_eq!(credits.iter().filter(|c| c.state.as_str() == "skipped").count(), 1);
    let before = w.sandbox.snapshot().transfers.len();
    let v = json(&w.run_expect(&["process-events", "--json"], 0));
    assert_eq!(v["transfersSent"], 0);
    assert_eq!(w.sandbox.snapshot().transfers.len(), before);
    // No webhook was registered: every credit came from undelivered events, now marked delivered.
    let snap = w.sandbox.snapshot();
    assert!(snap.webhooks.is_empty());
    assert!(snap.events.iter().all(|e| e.is_delivered), "pulled events are marked delivered");
}

#[test]
fn commit_then_500_on_transfers_ends_with_one_success_each() {
    for mode in [DuplicateMode::Sync, DuplicateMode::Late] {
        let w = world(mode);
        let ids = issue(&w);
        for id in &ids[..4] {
            w.sandbox.pay_invoice(id, PayOptions::default()).unwrap();
        }
        wait_credited(&w, 4);
        w.sandbox.set_faults(Faults { commit_then_500_next_transfers: 1, ..Faults::default() });
        let out = w.run(&["process-events"]);
        assert!(matches!(out.status.code(), Some(0) | Some(75)), "{mode:?}: {}", stderr(&out));
        settle(&w);
        assert_exactly_once(&w);
        assert_eq!(successes(&w.sandbox.snapshot()).len(), 4, "{mode:?}");
    }
}

#[test]
fn a_kill_while_the_transfer_request_is_in_flight_is_resolved() {
    let w = world(DuplicateMode::Sync);
    let ids = issue(&w);
    for id in &ids[..3] {
        w.sandbox.pay_invoice(id, PayOptions::default()).unwrap();
    }
    wait_credited(&w, 3);
    // Every API answer is slow: the run pulls the credits, claims its sends, and is killed
    // while its transfer request waits for an answer.
    w.sandbox.set_faults(Faults { latency_ms: 1_500, ..Faults::default() });
    let mut child = w.cmd(&["process-events"]).spawn().unwrap();
    wait_for("the sends to be claimed", || w.db.exists() && w.open_store().sends().unwrap().len() >= 3);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    w.sandbox.set_faults(Faults::default());
    settle(&w);
    assert_exactly_once(&w);
    assert_eq!(successes(&w.sandbox.snapshot()).len(), 3);
}

#[test]
fn insufficient_balance_is_retried_with_a_new_external_id_then_succeeds() {
    let w = world(DuplicateMode::Sync);
    let ids = issue(&w);
    w.sandbox.pay_invoice(&ids[0], PayOptions::default()).unwrap();
    wait_credited(&w, 1);
    let until = w.sandbox.now() + Duration::hours(2);
    w.sandbox.set_faults(Faults { insufficient_balance_until: Some(until), ..Faults::default() });
    // The business clock follows the emulator's (one simulated hour per real second); with a
    // 1-minute first backoff doubling, 12 attempts outlast the 2-hour outage.
    wait_for("the transfer to succeed after the outage", || {
        let out = w.run(&[
            "process-events",
            "--json",
            "--retry-backoff",
            "60",
            "--transfer-attempts",
            "12",
            "--now",
            &at(w.sandbox.now()),
        ]);
        assert!(matches!(out.status.code(), Some(0) | Some(75)), "{}", stderr(&out));
        std::thread::sleep(std::time::Duration::from_millis(100)); // a timer tick, not a spin
        successes(&w.sandbox.snapshot()).len() == 1
    });
    assert_exactly_once(&w);
    let snap = w.sandbox.snapshot();
    assert!(snap.transfers.iter().any(|t| t.status == "failed"), "at least one attempt failed for balance");
    let externals: std::collections::HashSet<_> = snap.transfers.iter().filter_map(|t| t.external_id.clone()).collect();
    assert!(externals.len() >= 2, "a really failed transfer is re-sent with a new externalId");
}

#[test]
fn a_credit_that_keeps_failing_needs_attention_and_status_flags_it() {
    let w = world(DuplicateMode::Sync);
    let ids = issue(&w);
    w.sandbox.pay_invoice(&ids[0], PayOptions::default()).unwrap();
    wait_credited(&w, 1);
    // Every transfer fails for a reason that does not pass (an insufficient balance would: it is
    // retried without end, see recovery.rs).
    w.sandbox.set_faults(Faults {
        fail_next_transfers: 100,
        fail_reason: "Invalid account".into(),
        ..Faults::default()
    });
    let base = w.sandbox.now();
    let mut last = None;
    for minute in (0..24 * 60).step_by(30) {
        let out = w.run(&[
            "process-events",
            "--transfer-attempts",
            "2",
            "--retry-backoff",
            "60",
            "--now",
            &at(base + Duration::minutes(minute)),
        ]);
        last = out.status.code();
        if last == Some(3) {
            assert!(stdout(&out).contains(&ids[0]), "{}", stdout(&out));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(last, Some(3), "process-events exits 3 when a credit needs attention");
    let out = w.run_expect(&["status"], 3);
    assert!(stdout(&out).contains("needs attention"), "{}", stdout(&out));
    let v = json(&w.run_expect(&["status", "--json"], 3));
    assert_eq!(v["needsAttention"], 1);
    assert!(successes(&w.sandbox.snapshot()).is_empty());
}

/// The listener with `--process`: Stark Bank's (the emulator's) webhook delivers the credit,
/// out of order (credited before paid), and the transfer goes out without any process-events
/// run. A later process-events run sends nothing more.
#[test]
fn serve_webhook_process_transfers_a_delivered_credit_at_once() {
    let w = world(DuplicateMode::Sync);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut listener = w
        .cmd(&["serve-webhook", "--process", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the listener", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    w.run_expect(&["webhook", "register", "--url", &format!("http://127.0.0.1:{port}/webhook")], 0);
    w.sandbox.set_faults(Faults { out_of_order: true, ..Faults::default() });
    let ids = issue(&w);
    for id in &ids[..2] {
        w.sandbox.pay_invoice(id, PayOptions::default()).unwrap();
    }
    wait_for("transfers sent by the listener", || successes(&w.sandbox.snapshot()).len() == 2);
    wait_for("both logs delivered", || {
        let s = w.sandbox.snapshot();
        ["paid", "credited"]
            .iter()
            .all(|t| s.deliveries.iter().any(|d| s.events.iter().any(|e| e.id == d.event_id && e.log_type == *t)))
    });
    listener.kill().unwrap();
    listener.wait().unwrap();
    let snap = w.sandbox.snapshot();
    assert!(
        snap.requests
            .iter()
            .filter(|r| r.path.ends_with("/event") && r.method == "GET" && r.query.contains("isDelivered"))
            .count()
            == 0,
        "no reconciliation ran"
    );
    let credited_first =
        snap.deliveries.iter().position(|d| snap.events.iter().any(|e| e.id == d.event_id && e.log_type == "credited"));
    let paid_first =
        snap.deliveries.iter().position(|d| snap.events.iter().any(|e| e.id == d.event_id && e.log_type == "paid"));
    let (credited_first, paid_first) = (credited_first.unwrap(), paid_first.unwrap_or(usize::MAX));
    assert!(credited_first < paid_first, "the emulator delivered credited before paid");
    settle(&w);
    assert_exactly_once(&w);
    assert_eq!(successes(&w.sandbox.snapshot()).len(), 2);
}
