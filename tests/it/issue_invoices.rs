//! `issue-invoices` against the emulator: one batch per slot, exactly once, whatever happens.

use std::collections::HashSet;
use std::process::Stdio;

use chrono::Duration;
use stark_sweep::sandbox::{Faults, SandboxConfig};

use crate::util::{World, at, json, stderr};

fn world() -> World {
    // Nobody pays: these tests are about issuing.
    World::new(SandboxConfig { pay_rate: 0.0, seed: 7, ..SandboxConfig::default() })
}

fn invoice_posts(w: &World) -> usize {
    w.sandbox.snapshot().requests.iter().filter(|r| r.method == "POST" && r.path.ends_with("/invoice")).count()
}

#[test]
fn walking_24_hours_issues_eight_batches_and_nothing_after() {
    let w = world();
    let start = w.sandbox.now();
    let mut issued_slots = Vec::new();
    let mut total = 0;
    // Every hour for 27 hours, twice per hour: only the first run in each slot issues.
    for hour in 0..27 {
        for _ in 0..2 {
            let out = w.run_expect(&["issue-invoices", "--json", "--now", &at(start + Duration::hours(hour))], 0);
            let v = json(&out);
            match v["status"].as_str().unwrap() {
                "issued" => {
                    let n = v["count"].as_u64().unwrap();
                    assert!((8..=12).contains(&n), "{n} invoices in a slot");
                    issued_slots.push(v["slot"].as_u64().unwrap());
                    total += n;
                }
                "already-issued" => assert!(hour < 24),
                "ended" => assert!(hour >= 24, "ended at hour {hour}"),
                other => panic!("unexpected status {other} at hour {hour}"),
            }
        }
    }
    assert_eq!(issued_slots, (1..=8).collect::<Vec<_>>(), "slots are numbered 1 to 8, as in the text");
    let snap = w.sandbox.snapshot();
    assert_eq!(snap.invoices.len() as u64, total);
    assert!((64..=96).contains(&total));
    assert_eq!(invoice_posts(&w), 8, "one request per slot");
    // Every request was signed correctly; every invoice has a valid CPF and a distinct name.
    assert!(snap.requests.iter().all(|r| r.authenticated), "unsigned requests reached the emulator");
    assert_eq!(snap.auth_failures, 0);
    let mut names = HashSet::new();
    for inv in &snap.invoices {
        assert!(stark_sweep::people::is_valid_cpf(&inv.tax_id), "{}", inv.tax_id);
        assert!(names.insert(inv.name.clone()), "name used twice: {}", inv.name);
        assert!(inv.tags.iter().any(|t| t == "stark-sweep"));
        assert!(inv.due > inv.created + Duration::hours(24), "due date too close for the sandbox to pay");
    }
    // The store agrees.
    let store = w.open_store();
    assert_eq!(store.slots().unwrap().iter().filter(|s| s.issued_at.is_some()).count(), 8);
    // And the official SDK reads every one of them back as issued.
    let key = w.sandbox.private_key_path().unwrap();
    let read = crate::util::run_python(
        "read_invoices.py",
        &[],
        &[
            ("SANDBOX_URL", &w.sandbox.url()),
            ("SANDBOX_PROJECT_ID", &w.sandbox.project_id()),
            ("SANDBOX_PRIVATE_KEY_PATH", &key.to_string_lossy()),
        ],
    );
    let read: Vec<serde_json::Value> = serde_json::from_str(&read).unwrap();
    assert_eq!(read.len(), snap.invoices.len());
    let drafts: Vec<_> = (0..8).flat_map(|k| store.drafts(k).unwrap()).collect();
    for d in &drafts {
        let got = read.iter().find(|r| Some(r["id"].as_str().unwrap()) == d.invoice_id.as_deref()).unwrap();
        assert_eq!(got["name"], d.name.as_str());
        assert_eq!(got["amount"], d.amount);
        assert_eq!(got["taxId"], d.tax_id.as_str());
        assert!(got["tags"].as_array().unwrap().iter().any(|t| t == format!("draft-{}", d.draft_key).as_str()));
    }
}

#[test]
fn two_runs_at_the_same_instant_issue_one_batch() {
    let w = world();
    let now = at(w.sandbox.now());
    for _ in 0..3 {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                w.cmd(&["issue-invoices", "--json", "--now", &now])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for r in runs {
            let out = r.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            let status = json(&out)["status"].as_str().unwrap().to_string();
            assert!(["issued", "in-progress", "taken", "already-issued"].contains(&status.as_str()), "{status}");
        }
    }
    assert_eq!(invoice_posts(&w), 1);
    let n = w.sandbox.snapshot().invoices.len();
    assert!((8..=12).contains(&n));
}

#[test]
fn commit_then_500_is_completed_by_the_next_run_without_duplicates() {
    let w = world();
    let now = at(w.sandbox.now());
    w.sandbox.set_faults(Faults { commit_then_500_next_invoices: 1, ..Faults::default() });
    let out = w.run_expect(&["issue-invoices", "--now", &now], 75);
    assert_eq!(stderr(&out).lines().filter(|l| l.starts_with("stark-sweep: ")).count(), 1, "{}", stderr(&out));
    let created = w.sandbox.snapshot().invoices.len();
    assert!((8..=12).contains(&created), "the emulator committed the batch");
    let v = json(&w.run_expect(&["issue-invoices", "--json", "--now", &now], 0));
    assert_eq!(v["status"], "issued");
    assert_eq!(v["count"].as_u64().unwrap() as usize, created);
    assert_eq!(w.sandbox.snapshot().invoices.len(), created, "no invoice was created twice");
    assert_eq!(invoice_posts(&w), 1, "found by tag, not re-sent");
    let again = json(&w.run_expect(&["issue-invoices", "--json", "--now", &now], 0));
    assert_eq!(again["status"], "already-issued");
}

#[test]
fn a_500_before_commit_is_completed_by_the_next_run() {
    // The client cannot tell this from commit-then-500: the next run looks up by tag, finds
    // nothing, and creates the batch once.
    let w = world();
    let now = at(w.sandbox.now());
    w.sandbox.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    // 500 before anything is done: the outcome is unknown to the client.
    w.run_expect(&["issue-invoices", "--now", &now], 75);
    assert_eq!(w.sandbox.snapshot().invoices.len(), 0);
    w.sandbox.set_faults(Faults::default());
    let v = json(&w.run_expect(&["issue-invoices", "--json", "--now", &now], 0));
    assert_eq!(v["status"], "issued");
    assert_eq!(w.sandbox.snapshot().invoices.len() as u64, v["count"].as_u64().unwrap());
}

#[test]
fn a_broken_configuration_claims_nothing() {
    let w = world();
    let out = w.cmd(&["issue-invoices"]).env("STARKBANK_PROJECT_ID", "").output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(!w.db.exists() || w.open_store().campaign().unwrap().is_none());
    assert_eq!(invoice_posts(&w), 0);
}

#[test]
fn dry_run_writes_nothing_and_calls_nothing() {
    let w = world();
    let v = json(&w.run_expect(&["issue-invoices", "--dry-run", "--json"], 0));
    assert_eq!(v["status"], "dry-run");
    assert!(!w.db.exists());
    assert_eq!(w.sandbox.snapshot().requests.len(), 0);
}

/// Regression: exit 75 promises that the next run completes the slot, even when that run
/// already falls in the next slot (a 3-hour timer usually does).
#[test]
fn an_unfinished_slot_is_completed_by_a_run_in_the_next_slot() {
    let w = world();
    let start = w.sandbox.now();
    w.sandbox.set_faults(Faults { commit_then_500_next_invoices: 1, ..Faults::default() });
    w.run_expect(&["issue-invoices", "--now", &at(start)], 75);
    let first = w.sandbox.snapshot().invoices.len();
    let v = json(&w.run_expect(&["issue-invoices", "--json", "--now", &at(start + Duration::hours(3))], 0));
    assert_eq!((v["status"].as_str(), v["slot"].as_u64()), (Some("issued"), Some(2)));
    let store = w.open_store();
    let slots = store.slots().unwrap();
    assert_eq!(slots.len(), 2);
    assert!(slots.iter().all(|s| s.issued_at.is_some()), "{slots:?}");
    assert_eq!(slots[0].invoices as usize, first, "slot 0 was completed from the invoices found by tag");
    assert_eq!(w.sandbox.snapshot().invoices.len() as i64, slots[0].invoices + slots[1].invoices);
    assert_eq!(invoice_posts(&w), 2, "no batch was sent twice");
}
