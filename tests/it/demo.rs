//! `stark-sweep demo` end to end, and the emulator's manual clock it runs on.

use chrono::Duration;
use stark_sweep::sandbox::{PayOptions, Sandbox, SandboxConfig};

use crate::sandbox::{Receiver, client, new_invoice};
use crate::util;

/// The README's first command: the whole campaign, a verdict computed from the emulator and the
/// store, one line per slot run saying what it did.
#[test]
fn the_demo_runs_the_whole_campaign_and_its_verdict_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    let out = util::cmd(dir.path()).args(["demo", "--dir", "d", "--seed", "11"]).output().unwrap();
    let text = util::stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", util::stderr(&out));
    assert!(text.contains("verdict: OK"), "{text}");
    for k in 1..=8 {
        let line = text.lines().find(|l| l.contains(&format!("] slot {k}/8: "))).unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains(": issued "), "slot {k}: {line}");
    }
    assert_eq!(text.matches("] slot ").count(), 8, "one line per slot run:\n{text}");
}

/// The clock stands still until moved; a move returns once every delivery due by then has been
/// POSTed and answered, and nothing due later has happened.
#[test]
fn a_manual_clock_stands_still_and_each_move_delivers_what_is_due() {
    let sb = Sandbox::start(SandboxConfig {
        manual_clock: true,
        pay_rate: 0.0,
        credit_delay: std::time::Duration::from_secs(120),
        seed: 5,
        ..SandboxConfig::default()
    })
    .unwrap();
    let rx = Receiver::start(200);
    let c = client(&sb);
    c.create_webhook(&rx.url, &["invoice"]).unwrap();
    let t0 = sb.now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(sb.now(), t0, "a manual clock does not move by itself");

    let inv = c.create_invoices(&[new_invoice(1000, "manual")]).unwrap().remove(0);
    assert!(rx.got.lock().unwrap().is_empty(), "nothing is delivered before the clock moves");
    let moved = sb.advance(Duration::seconds(1)).unwrap();
    assert_eq!(moved.deliveries, 1, "the created event");
    assert_eq!(rx.bodies().len(), 1);

    sb.pay_invoice(&inv.id, PayOptions::default()).unwrap();
    assert_eq!(sb.advance(Duration::seconds(60)).unwrap().deliveries, 1, "paid, not yet credited");
    let types = |rx: &Receiver| -> Vec<String> {
        rx.bodies().iter().map(|b| b["event"]["log"]["type"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(types(&rx), ["created", "paid"]);

    // The same move over HTTP, for an emulator started with `stark-sweep sandbox --manual-clock`.
    let http = reqwest::blocking::Client::new();
    let answer: serde_json::Value = http
        .post(format!("{}/_sandbox/clock", sb.url()))
        .body(r#"{"advanceSeconds": 120}"#)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["deliveries"], 1, "{answer}");
    assert_eq!(types(&rx), ["created", "paid", "credited"]);
    assert!(sb.advance_to(t0).is_err(), "the clock never goes back");
    let scaled = Sandbox::start(SandboxConfig { pay_rate: 0.0, ..SandboxConfig::default() }).unwrap();
    assert!(scaled.advance(Duration::seconds(1)).is_err(), "a scaled clock cannot be moved by hand");
}
