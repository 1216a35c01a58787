//! The Postgres backend end to end, with the real binary: moving a SQLite deployment with
//! `migrate-store`, and an outage (the timer jobs exit 75, the listener's /health answers 503
//! and recovers, nothing recorded is lost). The chaos campaign on Postgres is in `chaos.rs`;
//! the store's own tests run on both backends (`scripts/test`, STARK_SWEEP_TEST_POSTGRES).

use std::process::Stdio;

use chrono::Duration;

use stark_sweep::sandbox::Faults;

use crate::util::{OwnPostgres, at, fresh_postgres_db, json, manual_world, postgres_admin_url, stderr, stdout};

#[test]
fn migrate_store_moves_a_sqlite_deployment_into_an_empty_postgres_and_refuses_a_full_one() {
    let w = manual_world(7);
    let start = w.sandbox.now();
    for hour in [0, 3] {
        w.run_expect(&["issue-invoices", "-q", "--now", &at(start + Duration::hours(hour))], 0);
    }
    w.run_expect(&["process-events", "-q", "--now", &at(start + Duration::hours(4))], 0);
    let before = json(&w.run_expect(&["status", "--json", "--now", &at(start + Duration::hours(4))], 0));

    let url = fresh_postgres_db(&postgres_admin_url());
    let password = w.dir.path().join("db-password");
    std::fs::write(&password, "never-shown-anywhere\n").unwrap();
    let db = w.db.display().to_string();
    let out =
        w.run_expect(&["migrate-store", "--from", &db, "--to", &url, "--password-file", password.to_str().unwrap()], 0);
    let text = stdout(&out);
    assert!(text.contains("both sides agree") && text.contains("invoice_drafts"), "{text}");
    assert!(!format!("{text}{}", stderr(&out)).contains("never-shown"), "{text}");

    // The same deployment, now on Postgres: status reads the same campaign and money.
    let pg = w.on_store(&url);
    let after = json(&pg.run_expect(&["status", "--json", "--now", &at(start + Duration::hours(4))], 0));
    for key in ["campaign", "totals", "discrepancies", "invoices"] {
        assert_eq!(before[key], after[key], "{key} differs after the move:\n{before:#}\n{after:#}");
    }
    // And it carries on there: the next slot is issued once, not the earlier ones again.
    let next = json(&pg.run_expect(&["issue-invoices", "--json", "-q", "--now", &at(start + Duration::hours(6))], 0));
    assert_eq!(next["slot"], 3, "{next:#}");

    // A target that holds anything is refused, and nothing in it changes.
    let refused = pg.run(&["migrate-store", "--from", &db, "--to", &url]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(stderr(&refused).contains("not empty"), "{}", stderr(&refused));
    let still = json(&pg.run_expect(&["status", "--json", "--now", &at(start + Duration::hours(6))], 0));
    assert_eq!(still["campaign"]["slotsIssued"], 3, "{still:#}");
}

#[test]
fn a_postgres_outage_is_temporary_for_every_job_and_the_listener_recovers() {
    let cluster = OwnPostgres::start();
    let w = manual_world(11).on_store(&fresh_postgres_db(&cluster.url));
    let start = w.sandbox.now();
    w.run_expect(&["issue-invoices", "-q", "--now", &at(start)], 0);

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut listener = w
        .cmd(&["serve-webhook", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let health = || -> Option<u16> {
        let r = reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{port}/health"))
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .ok()?;
        Some(r.status().as_u16())
    };
    crate::util::wait_for("the listener to be healthy", || health() == Some(200));

    cluster.pg_cluster("stop");
    let now = at(start + Duration::hours(1));
    for args in [
        vec!["process-events", "--now", now.as_str()],
        vec!["issue-invoices", "--now", now.as_str()],
        vec!["status", "--now", now.as_str()],
    ] {
        let out = w.run(&args);
        assert_eq!(out.status.code(), Some(75), "{args:?} during the outage: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("database") && !err.contains("password"), "{args:?}: {err}");
    }
    crate::util::wait_for("the listener to say the store is unavailable", || health() == Some(503));

    cluster.pg_cluster("start");
    crate::util::wait_for("the listener to be healthy again", || health() == Some(200));
    w.run_expect(&["process-events", "-q", "--now", &now], 0);
    let v = json(&w.run_expect(&["status", "--json", "--now", &now], 0));
    assert_eq!(v["campaign"]["slotsIssued"], 1, "{v:#}");
    listener.kill().unwrap();
    listener.wait().unwrap();
}

/// The reviewer's case: a run stops (SIGSTOP: a VM pause, a stalled host) just as it sends a
/// slot's create request, long enough for its lease to expire. The run that takes the lease
/// over must not send the same drafts again while that request may still be processed, and
/// the stopped run, when it wakes, sends nothing it has not already sent. In the end the slot
/// holds exactly its drafts at the emulator.
#[test]
fn a_run_stopped_past_its_lease_mid_attempt_is_not_repeated_by_the_run_that_takes_over() {
    let w = manual_world(13)
        .on_store(&fresh_postgres_db(&postgres_admin_url()))
        .with_env("STARK_SWEEP_LEASE_SECONDS", "2")
        .with_env("STARK_SWEEP_HTTP_TIMEOUT", "4")
        .with_env("STARK_SWEEP_IN_FLIGHT_MARGIN", "2");
    let start = w.sandbox.now();
    w.sandbox.set_faults(Faults { latency_ms: 1500, ..Faults::default() });
    let issue = || w.cmd(&["issue-invoices", "--json", "-q", "--now", &at(start)]);
    let a = issue().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let store = w.open_store();
    crate::util::wait_for("the first run to start its attempt", || {
        store.slot_attempt(0).unwrap().is_some_and(|s| s.attempted)
    });
    let signal = |sig: &str| {
        assert!(std::process::Command::new("kill").args([sig, &a.id().to_string()]).status().unwrap().success());
    };
    signal("-STOP");
    std::thread::sleep(std::time::Duration::from_millis(2500)); // its lease expires

    let b = w.run(&["issue-invoices", "--json", "-q", "--now", &at(start)]);
    assert_eq!(b.status.code(), Some(75), "{}{}", stdout(&b), stderr(&b));
    assert!(stderr(&b).contains("may still be processed by Stark Bank until"), "{}", stderr(&b));

    signal("-CONT");
    let a = a.wait_with_output().unwrap();
    assert!(matches!(a.status.code(), Some(0 | 75)), "{}{}", stdout(&a), stderr(&a));
    // After the window, a run completes the slot by tag, whatever the stopped run did.
    crate::util::sleep_past_the_window_named_in(&stderr(&b));
    w.sandbox.set_faults(Faults::default());
    let c = json(&w.run_expect(&["issue-invoices", "--json", "-q", "--now", &at(start)], 0));
    assert!(matches!(c["status"].as_str(), Some("issued" | "already-issued")), "{c:#}");
    let slot = &store.slots().unwrap()[0];
    let tag = stark_sweep::campaign::slot_tag(&store.campaign().unwrap().unwrap().tag, 0);
    let at_emulator = w.sandbox.snapshot().invoices.iter().filter(|i| i.tags.contains(&tag)).count() as i64;
    assert_eq!(at_emulator, slot.invoices, "every draft exists once at the emulator: {slot:?}");
    assert!(slot.issued_at.is_some(), "{slot:?}");
}
