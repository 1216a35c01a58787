//! Defence in depth for real money: production is opted into, outflow is limited per transfer
//! and per 24 hours (in the transaction that claims a send), a kill switch stops all outgoing
//! money, and a dry run shows what would happen without changing anything.

use chrono::Duration;
use stark_sweep::sandbox::PayOptions;

use crate::util::{World, at, json, stderr, stdout};

fn world(seed: u64) -> World {
    crate::util::manual_world(seed)
}

fn issue(w: &World) -> Vec<String> {
    let v = json(&w.run_expect(&["issue-invoices", "--json", "--now", &at(w.sandbox.now())], 0));
    v["invoices"].as_array().unwrap().iter().map(|i| i["invoiceId"].as_str().unwrap().to_string()).collect()
}

fn credit(w: &World, ids: &[String], amount: Option<i64>) {
    for id in ids {
        w.sandbox.pay_invoice(id, PayOptions { amount, fee: Some(0), ..PayOptions::default() }).unwrap();
    }
    w.sandbox.advance(Duration::minutes(5)).unwrap();
}

fn requests(w: &World, method: &str, suffix: &str) -> usize {
    w.sandbox.snapshot().requests.iter().filter(|r| r.method == method && r.path.ends_with(suffix)).count()
}

fn process(w: &World, extra: &[&str]) -> std::process::Output {
    w.cmd(&[&["process-events", "--json", "--now", &at(w.sandbox.now())], extra].concat()).output().unwrap()
}

fn successes(w: &World) -> usize {
    w.sandbox.snapshot().transfers.iter().filter(|t| t.status == "success").count()
}

/// Runs process-events (with `extra`) moving the clock until nothing is in flight.
fn drain(w: &World, extra: &[&str]) {
    for _ in 0..10 {
        process(w, extra);
        w.sandbox.advance(Duration::minutes(5)).unwrap();
    }
}

#[test]
fn production_is_opted_into_not_stumbled_into() {
    let w = world(41);
    let now = at(w.sandbox.now());
    let before = w.sandbox.snapshot().requests.len();
    // A drill clock is refused where money is real (found by review: --now moved the 24-hour
    // outflow window); the production runs below use the real clock.
    for cmd in
        [&["issue-invoices", "--now", &now][..], &["process-events", "--now", &now], &["serve-webhook", "--now", &now]]
    {
        let out = w.cmd(cmd).env("STARKBANK_ENVIRONMENT", "production").output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{cmd:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("STARK_SWEEP_NOW"), "{}", stderr(&out));
    }
    let out = w.cmd(&["issue-invoices"]).env("STARKBANK_ENVIRONMENT", "production").output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("--allow-random-payers-in-production"), "{}", stderr(&out));
    assert_eq!(w.sandbox.snapshot().requests.len(), before, "no request was sent");
    // Opted in, it issues.
    let out = w
        .cmd(&["issue-invoices", "--json", "--allow-random-payers-in-production"])
        .env("STARKBANK_ENVIRONMENT", "production")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ids: Vec<String> = json(&out)["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["invoiceId"].as_str().unwrap().to_string())
        .collect();
    credit(&w, &ids[..1], None);

    // The sweep refuses until the target account is typed again, and refuses a wrong one.
    let sweep = |confirm: Option<&str>| {
        let mut c = w.cmd(&["process-events"]);
        c.env("STARKBANK_ENVIRONMENT", "production");
        if let Some(confirm) = confirm {
            c.env("STARK_SWEEP_CONFIRM_TARGET_ACCOUNT", confirm);
        }
        c.output().unwrap()
    };
    let requests_before = w.sandbox.snapshot().requests.len();
    // Only the bank, branch and account typed again confirm; the account alone, a typo, or a
    // confirmation of another bank code (found by review: only the account was compared) do not.
    for confirm in
        [None, Some("6341320293482496"), Some("20018183/0001/6341320293482495"), Some("341/0001/6341320293482496")]
    {
        let out = sweep(confirm);
        assert_eq!(out.status.code(), Some(78), "{confirm:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "one line: {}", stderr(&out));
        assert!(stderr(&out).contains("STARK_SWEEP_CONFIRM_TARGET_ACCOUNT"), "{}", stderr(&out));
    }
    assert_eq!(w.sandbox.snapshot().requests.len(), requests_before, "nothing was sent, not even read");
    let out = sweep(Some("20018183/0001/6341320293482496"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(requests(&w, "POST", "/transfer"), 1);
}

#[test]
fn a_credit_over_the_per_transfer_limit_waits_with_the_reason_until_raised() {
    let w = world(42);
    let ids = issue(&w);
    credit(&w, &ids[..1], Some(50_000));
    credit(&w, &ids[1..2], Some(2_000));
    let out = process(&w, &["--max-transfer", "10000"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let v = json(&out);
    assert_eq!(v["held"][0]["invoiceId"], ids[0], "{v:#}");
    assert!(v["held"][0]["reason"].as_str().unwrap().contains("STARK_SWEEP_MAX_TRANSFER"), "{v:#}");
    assert_eq!(v["transfersSent"], 1, "the other one goes");
    let status = w.run_expect(&["status", "--now", &at(w.sandbox.now())], 3);
    assert!(stdout(&status).contains("held"), "{}", stdout(&status));
    // Raising the limit releases it on the next run.
    drain(&w, &["--max-transfer", "100000"]);
    assert_eq!(successes(&w), 2);
    assert_eq!(w.run(&["status", "--now", &at(w.sandbox.now())]).status.code(), Some(0));
}

/// The rolling 24-hour limit holds across runs that race for the claim: checked and claimed in
/// one transaction, so two at once never both pass under it.
#[test]
fn the_daily_limit_holds_with_runs_racing_and_retry_attention_approves_once() {
    let w = world(43);
    let ids = issue(&w);
    credit(&w, &ids[..6], Some(10_000));
    // Up to 3 of 6 fit under 30,000 cents. Four runs race (the process lock lets one sweep at a
    // time; the claim transaction is what holds the limit, also without the lock).
    let racers: Vec<_> = (0..4)
        .map(|_| {
            w.cmd(&["process-events", "--json", "--max-outflow-24h", "30000", "--now", &at(w.sandbox.now())])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut r in racers {
        r.wait().unwrap();
    }
    drain(&w, &["--max-outflow-24h", "30000"]);
    assert_eq!(successes(&w), 3, "exactly three fit under the limit");
    let v = json(&w.run_expect(&["status", "--json", "--now", &at(w.sandbox.now())], 3));
    let held: Vec<_> = v["discrepancies"].as_array().unwrap().iter().filter(|d| d["kind"] == "held").collect();
    assert_eq!(held.len(), 3, "{v:#}");
    // --retry-attention approves the held ones once, above the limit.
    let out = process(&w, &["--max-outflow-24h", "30000", "--retry-attention"]);
    assert_eq!(json(&out)["transfersSent"], 3, "{}", stdout(&out));
    drain(&w, &["--max-outflow-24h", "30000"]);
    assert_eq!(successes(&w), 6);
}

/// The same guarantee in the store, with two connections claiming at the same instant.
#[test]
fn two_claims_at_once_never_both_pass_under_the_limit() {
    use stark_sweep::store::{OutflowLimits, SendRow, Store};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("race.db");
    {
        let store = Store::open(&db).unwrap();
        drop(store);
        let conn = rusqlite::Connection::open(&db).unwrap();
        for i in 0..40 {
            conn.execute(
                "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, origin)
                 VALUES (?1, 'e', 100, 0, 100, 't', 't', 'open', 'issued')",
                [format!("i{i}")],
            )
            .unwrap();
        }
    }
    let limits = OutflowLimits { max_transfer: 1_000, max_24h: 1_000 };
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|half| {
            let (db, barrier) = (db.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut store = Store::open(&db).unwrap();
                let sends: Vec<SendRow> = (0..20)
                    .map(|j| {
                        let i = half * 20 + j;
                        SendRow {
                            external_id: format!("x{i}"),
                            invoice_id: format!("i{i}"),
                            attempt: 1,
                            amount: 100,
                            claimed_at: stark_sweep::starkbank::time::format(chrono::Utc::now()),
                            outcome: None,
                            error: None,
                            target: None,
                            tries: 1,
                        }
                    })
                    .collect();
                barrier.wait();
                store.claim_sends_within(&sends, &[], &limits, chrono::Utc::now()).unwrap().claimed.len()
            })
        })
        .collect();
    let claimed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(claimed, 10, "1,000 cents of 100-cent sends, whoever claims first");
}

#[test]
fn the_kill_switch_stops_all_outgoing_money_and_its_undo_resumes_exactly_once() {
    let w = world(44);
    let ids = issue(&w);
    credit(&w, &ids[..2], None);
    let out = w.run_expect(&["kill-switch", "on", "--reason", "suspected leak"], 0);
    assert!(stdout(&out).contains("engaged"), "{}", stdout(&out));
    w.run_expect(&["kill-switch", "status"], 3);
    let more = &ids[2..3];
    credit(&w, more, None);
    let out = process(&w, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert!(v["killSwitch"].as_str().unwrap().contains("suspected leak"), "{v:#}");
    assert_eq!(requests(&w, "POST", "/transfer"), 0, "no money left");
    assert!(v["eventsRecorded"].as_u64().unwrap() > 0, "intake goes on: {v:#}");
    let status = w.run_expect(&["status", "--now", &at(w.sandbox.now())], 3);
    assert!(
        stdout(&status).contains("kill switch engaged") && stdout(&status).contains("suspected leak"),
        "{}",
        stdout(&status)
    );
    w.run_expect(&["kill-switch", "off"], 0);
    drain(&w, &[]);
    assert_eq!(successes(&w), 3, "each credit once, after the undo");
    assert_eq!(requests(&w, "POST", "/transfer"), 1, "one batch");
}

#[test]
fn a_dry_run_sends_nothing_and_writes_nothing() {
    let w = world(45);
    let ids = issue(&w);
    credit(&w, &ids[..3], Some(20_000));
    // The store as the timers left it, and a limit that holds one back.
    // Names, sizes and digests: a failing comparison prints three short lines, not the file.
    // A read-only SQLite reader of a WAL database creates an empty -wal beside it: empty
    // files hold nothing, so they are left out.
    let files = |w: &World| -> Vec<(String, usize, u64)> {
        use std::hash::{Hash, Hasher};
        let mut out: Vec<_> = std::fs::read_dir(w.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                name.starts_with("stark-sweep.db") && !name.ends_with("-shm")
            })
            .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                (p.file_name().unwrap().to_string_lossy().to_string(), bytes.len(), h.finish())
            })
            .collect();
        out.sort();
        out
    };
    let before = files(&w);
    let writes_before = requests(&w, "POST", "") + requests(&w, "PATCH", "");
    let out = w.run(&["process-events", "--dry-run", "--max-outflow-24h", "45000", "--now", &at(w.sandbox.now())]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for id in &ids[..2] {
        assert!(text.contains(&format!("for invoice {id}")) && text.contains(&format!("stark-sweep-{id}-1")), "{text}");
    }
    assert!(text.contains("20018183/0001/6341320293482496/20018183000180"), "the target is shown: {text}");
    assert!(text.contains(&format!("would hold invoice {}", ids[2])), "the limit that would stop it: {text}");
    assert_eq!(requests(&w, "POST", "") + requests(&w, "PATCH", ""), writes_before, "nothing sent or marked");
    assert_eq!(files(&w), before, "the store is byte-for-byte unchanged");
    // The real run then does what the dry run said.
    let v = json(&process(&w, &["--max-outflow-24h", "45000"]));
    assert_eq!(v["transfersSent"], 2, "{v:#}");
}

/// Found by review: a held credit whose invoice was reversed stayed held, and raising the limit
/// later sent the money the payer had got back. A reversal reaches held credits too.
#[test]
fn a_held_credit_that_is_reversed_is_never_sent() {
    let w = world(47);
    let ids = issue(&w);
    credit(&w, &ids[..1], Some(50_000));
    let out = process(&w, &["--max-transfer", "10000"]);
    assert_eq!(out.status.code(), Some(3), "held: {}", stdout(&out));
    w.sandbox.reverse_invoice(&ids[0], 0).unwrap();
    w.sandbox.advance(Duration::minutes(1)).unwrap();
    drain(&w, &["--max-transfer", "100000"]);
    assert_eq!(requests(&w, "POST", "/transfer"), 0, "nothing sent for a reversed invoice");
    let status = w.run_expect(&["status", "--now", &at(w.sandbox.now())], 3);
    assert!(stdout(&status).contains("reversed"), "{}", stdout(&status));
}
