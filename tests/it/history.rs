//! A deployment with history: an old database is migrated in place without losing anything and
//! then processed correctly, and `status` lists what needs a human, not the whole history.

use chrono::Duration;
use serde_json::json;
use stark_sweep::sandbox::{PayOptions, Snapshot};
use stark_sweep::starkbank::resources::NewInvoice;

use crate::util::{World, at, json, stderr, stdout};

fn world(seed: u64) -> World {
    crate::util::manual_world(seed)
}

/// Settled credits in the history (besides the skipped one and the open work).
const HISTORY: usize = 300;

fn successes_for(s: &Snapshot, invoice: &str) -> Vec<i64> {
    s.transfers
        .iter()
        .filter(|t| t.status == "success" && t.tags.iter().any(|g| g == &format!("invoice-{invoice}")))
        .map(|t| t.amount)
        .collect()
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Everything a database holds, table by table (what a migration must keep).
fn census(db: &std::path::Path) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    ["campaign", "slots", "invoice_drafts", "events", "invoices", "credits", "sends", "transfers"]
        .iter()
        .map(|t| (t.to_string(), count(&conn, &format!("SELECT COUNT(*) FROM {t}"))))
        .collect()
}

/// A database of schema version 1, as the first release wrote it, with a long settled history
/// (each credit with its send, its successful transfer and two applied events; one skipped),
/// is migrated in place to the current schema: every row is kept, the history stays settled
/// and moves no money, and the open work is done exactly once: an open credit recorded back
/// then, and a credit whose event was never pulled.
#[test]
fn a_version_1_database_with_history_is_migrated_and_then_processed_correctly() {
    let w = world(41);
    let invoice = |name: &str| NewInvoice {
        amount: 5_000,
        tax_id: "337.451.076-08".into(),
        name: name.into(),
        due: stark_sweep::starkbank::time::format_secs(w.sandbox.now() + Duration::days(2)),
        expiration: 86_400,
        tags: vec!["stark-sweep".into()],
    };
    let made = w.client().create_invoices(&[invoice("Ana Lima"), invoice("Rui Costa")]).unwrap();
    let (recorded, unseen) = (made[0].id.clone(), made[1].id.clone());
    for id in [&recorded, &unseen] {
        w.sandbox.pay_invoice(id, PayOptions::default()).unwrap();
    }
    w.sandbox.advance(Duration::minutes(5)).unwrap();
    let start = at(w.sandbox.now() - Duration::minutes(10));
    let long_ago = at(w.sandbox.now() - Duration::days(90));
    {
        let conn = rusqlite::Connection::open(&w.db).unwrap();
        conn.execute_batch(
            &std::fs::read_to_string(crate::util::repo().join("src/store/migrations/0001_init.sql")).unwrap(),
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO campaign (id, tag, started_at, length_seconds, slot_seconds) VALUES (1, 'c1', ?1, 86400, 10800)",
            [&start],
        )
        .unwrap();
        conn.execute("INSERT INTO slots (slot, claimed_at, attempted_at, issued_at) VALUES (0, ?1, ?1, ?1)", [&start])
            .unwrap();
        let due = stark_sweep::starkbank::time::format_secs(w.sandbox.now() + Duration::days(2));
        for (k, id) in [&recorded, &unseen].into_iter().enumerate() {
            conn.execute(
                "INSERT INTO invoice_drafts (draft_key, slot, position, name, tax_id, amount, due, expiration, tags, invoice_id)
                 VALUES (?1, 0, ?2, 'Pagador', '337.451.076-08', 5000, ?3, 86400, '[\"stark-sweep\"]', ?4)",
                rusqlite::params![format!("k{k}"), k as i64, due, id],
            )
            .unwrap();
        }
        // The open credit recorded back then (its event applied); the other one's event was
        // never pulled: the emulator still lists it as undelivered.
        conn.execute(
            "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state)
             VALUES (?1, 'open-event', 5000, 50, 4950, ?2, ?2, 'open')",
            [recorded.as_str(), &start],
        )
        .unwrap();
        // The history: settled credits of invoices issued before this campaign, and one skipped.
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..HISTORY {
            let (inv, external, transfer) = (format!("old{i}"), format!("stark-sweep-old{i}-1"), format!("oldt{i}"));
            tx.execute(
                "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state)
                 VALUES (?1, ?2, 1050, 50, 1000, ?3, ?3, 'transferred')",
                rusqlite::params![inv, format!("oldc{i}"), long_ago],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO sends (external_id, invoice_id, attempt, amount, claimed_at, outcome) VALUES (?1, ?2, 1, 1000, ?3, 'accepted')",
                rusqlite::params![external, inv, long_ago],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO transfers (id, external_id, invoice_id, amount, status, updated_at) VALUES (?1, ?2, ?3, 1000, 'success', ?4)",
                rusqlite::params![transfer, external, inv, long_ago],
            )
            .unwrap();
            for (id, subscription, log_type, resource) in [
                (format!("oldc{i}"), "invoice", "credited", &inv),
                (format!("olds{i}"), "transfer", "success", &transfer),
            ] {
                tx.execute(
                    "INSERT INTO events (id, subscription, log_type, log_id, resource_id, created, body, source, received_at, applied_at, delivered_at)
                     VALUES (?1, ?2, ?3, ?1, ?4, ?5, '{}', 'api', ?5, ?5, ?5)",
                    rusqlite::params![id, subscription, log_type, resource, long_ago],
                )
                .unwrap();
            }
        }
        tx.execute(
            "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, reason)
             VALUES ('free', 'freec', 50, 50, 0, ?1, ?1, 'skipped', 'nothing to transfer')",
            [&long_ago],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let before = census(&w.db);

    let out = w.run(&["process-events", "--json", "--now", &at(w.sandbox.now())]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));

    // Migrated in place: the current schema, its indexes, and every row it held.
    let conn = rusqlite::Connection::open(&w.db).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert!(version >= 5, "schema {version}");
    for index in
        ["credits_state", "credits_by_invoice", "transfers_alive", "transfers_not_ours", "transfers_by_invoice"]
    {
        assert_eq!(count(&conn, &format!("SELECT COUNT(*) FROM sqlite_master WHERE name = '{index}'")), 1, "{index}");
    }
    for ((table, was), (_, now)) in before.iter().zip(census(&w.db)) {
        assert!(now >= *was, "{table}: {was} rows before the migration, {now} after");
    }
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM credits WHERE invoice_id LIKE 'old%' AND state = 'transferred' AND origin = 'legacy'"
        ),
        HISTORY as i64,
        "the history stays settled"
    );
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM events WHERE id LIKE 'old%' AND applied_at IS NOT NULL"),
        2 * HISTORY as i64
    );
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM transfers WHERE id LIKE 'oldt%' AND ours = 1"), HISTORY as i64);
    drop(conn);

    // Processed correctly: the open work went out once each, the history moved nothing.
    for _ in 0..10 {
        w.sandbox.advance(Duration::minutes(5)).unwrap();
        let out = w.run(&["process-events", "--json", "--now", &at(w.sandbox.now())]);
        assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
        if w.open_store().open_credits().unwrap().is_empty() {
            break;
        }
    }
    let snap = w.sandbox.snapshot();
    assert_eq!(successes_for(&snap, &recorded), [4950], "the open credit recorded in version 1");
    assert_eq!(successes_for(&snap, &unseen), [4950], "the credit whose event was never pulled");
    assert_eq!(snap.transfers.len(), 2, "the history moved no money: {:#?}", snap.transfers);

    let v = json(&w.run_expect(&["status", "--json", "--now", &at(w.sandbox.now())], 0));
    assert_eq!(v["credits"]["count"], HISTORY + 3, "{v:#}");
    assert_eq!(v["transfers"]["transferred"], HISTORY as i64 * 1000 + 2 * 4950, "{v:#}");
    assert_eq!((v["discrepancies"].as_array().map(Vec::len), &v["discrepanciesNotListed"]), (Some(0), &json!(1)));
}

/// `status` lists what needs a human and what is still on its way; settled history (credits
/// skipped because nothing was left to transfer) is counted, and listed with `--all`.
#[test]
fn status_lists_what_needs_a_human_and_counts_the_history() {
    let w = world(42);
    let now = at(w.sandbox.now());
    {
        // Any command that opens the store creates it at the current schema.
        w.run_expect(&["kill-switch", "status"], 0);
        let conn = rusqlite::Connection::open(&w.db).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..50 {
            tx.execute(
                "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, reason, origin)
                 VALUES (?1, ?1, 50, 50, 0, ?2, ?2, 'skipped', 'nothing to transfer: amount 50 minus fee 50 is not positive', 'workspace')",
                rusqlite::params![format!("free{i}"), now],
            )
            .unwrap();
        }
        tx.execute(
            "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, reason, origin)
             VALUES ('stuck', 'e', 1050, 50, 1000, ?1, ?1, 'attention', 'Stark Bank refused the transfer: Account not found', 'workspace')",
            [&now],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let out = w.run_expect(&["status", "--now", &now], 3);
    let text = stdout(&out);
    assert!(text.contains("invoice stuck") && text.contains("Account not found"), "{text}");
    assert!(!text.contains("invoice free"), "skipped history is not listed: {text}");
    assert!(text.contains("50 skipped credits") && text.contains("status --all"), "{text}");
    assert!(text.contains("51 discrepancies (1 needs attention)"), "{text}");

    let all = stdout(&w.run_expect(&["status", "--all", "--now", &now], 3));
    assert_eq!(all.matches("invoice free").count(), 50, "{all}");
    assert!(all.contains("invoice stuck"), "{all}");

    let v = json(&w.run_expect(&["status", "--json", "--now", &now], 3));
    let listed: Vec<&str> =
        v["discrepancies"].as_array().unwrap().iter().map(|d| d["invoiceId"].as_str().unwrap()).collect();
    assert_eq!(listed, ["stuck"], "{v:#}");
    assert_eq!(v["discrepanciesNotListed"], 50, "{v:#}");
    assert_eq!(v["discrepancyCounts"], json!({"attention": 1, "skipped": 50}), "{v:#}");
    let v = json(&w.run_expect(&["status", "--json", "--all", "--now", &now], 3));
    assert_eq!((v["discrepancies"].as_array().map(Vec::len), &v["discrepanciesNotListed"]), (Some(51), &json!(0)));
}

/// Undelivered events that are none of ours stay undelivered at Stark Bank for good (another
/// deployment may need them). Regression: every run listed them all again, for ever. Now the
/// pull lists only what was created since a day before the newest event the last complete pull
/// settled (so what it lists follows recent activity, not history), and ours are still found
/// and swept.
#[test]
fn events_left_undelivered_are_not_pulled_again_and_again() {
    let w = world(43);
    let theirs = w
        .client()
        .create_invoices(&[NewInvoice {
            amount: 5_000,
            tax_id: "337.451.076-08".into(),
            name: "Ana Lima".into(),
            due: stark_sweep::starkbank::time::format_secs(w.sandbox.now() + Duration::days(2)),
            expiration: 86_400,
            tags: vec!["someone-else".into()],
        }])
        .unwrap()[0]
        .id
        .clone();
    w.sandbox.pay_invoice(&theirs, PayOptions::default()).unwrap();
    w.sandbox.advance(Duration::minutes(5)).unwrap();
    let process = |w: &World| {
        let out = w.run(&["process-events", "--json", "--now", &at(w.sandbox.now())]);
        assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
        json(&out)
    };
    let first = process(&w);
    let old: Vec<String> =
        w.sandbox.snapshot().events.iter().filter(|e| e.resource_id == theirs).map(|e| e.id.clone()).collect();
    let theirs_events = old.len();
    assert!(theirs_events >= 2, "{theirs_events}");
    assert_eq!(
        (first["eventsPulled"].as_u64(), &first["eventsPulledAfter"]),
        (Some(theirs_events as u64), &json!(null))
    );
    // Still new: listed again (and left undelivered again).
    let again = process(&w);
    assert_eq!(again["eventsPulled"], theirs_events, "{again:#}");
    assert!(again["eventsPulledAfter"].is_string(), "{again:#}");

    // Three days on, our own invoices are issued, and one is paid.
    w.sandbox.advance(Duration::days(3)).unwrap();
    let out = w.run_expect(&["issue-invoices", "--json", "--now", &at(w.sandbox.now())], 0);
    let ours = json(&out)["invoices"][0]["invoiceId"].as_str().unwrap().to_string();
    w.sandbox.pay_invoice(&ours, PayOptions::default()).unwrap();
    w.sandbox.advance(Duration::minutes(5)).unwrap();
    // This run still lists theirs (nothing newer was settled before it); from then on, the
    // window starts a day before our new events.
    process(&w);
    let snap = w.sandbox.snapshot();
    let later = process(&w);
    let after =
        stark_sweep::starkbank::time::parse_date_or_datetime(later["eventsPulledAfter"].as_str().unwrap()).unwrap();
    let undelivered_since: Vec<_> =
        snap.events.iter().filter(|e| !e.deleted && !e.is_delivered && e.created >= after).collect();
    assert!(undelivered_since.iter().all(|e| !old.contains(&e.id)), "theirs are older than the window");
    assert!(snap.events.iter().any(|e| old.contains(&e.id) && !e.is_delivered), "theirs stay undelivered");
    assert_eq!(later["eventsPulled"], undelivered_since.len(), "{later:#}");
    for _ in 0..10 {
        if successes_for(&w.sandbox.snapshot(), &ours) == [4950] {
            break;
        }
        w.sandbox.advance(Duration::minutes(5)).unwrap();
        process(&w);
    }
    let snap = w.sandbox.snapshot();
    let inv = snap.invoices.iter().find(|i| i.id == ours).unwrap();
    assert_eq!(successes_for(&snap, &ours), [inv.amount - inv.fee], "ours is swept once");
    assert!(successes_for(&snap, &theirs).is_empty());
}
