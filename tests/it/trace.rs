//! `stark-sweep trace ID`: a credit's whole life, from the draft to the successful transfer,
//! through a refused request (429), a transfer that failed with the bank's reason and a second
//! attempt; the same story from any of its ids; no payer data unless asked; and the JSON log
//! lines of the runs that handled it carry its ids.

use chrono::Duration;
use serde_json::Value;
use stark_sweep::sandbox::{Faults, PayOptions, SandboxConfig};

use crate::monitoring::Listener;
use crate::util::{World, at, json, stderr, stdout};

const REASON: &str = "Account closed by the receiving bank";

#[test]
fn trace_shows_a_credits_whole_life_including_a_failed_send_and_its_reason() {
    let w = World::new(SandboxConfig { manual_clock: true, pay_rate: 0.0, seed: 1616, ..SandboxConfig::default() });
    let _listener = Listener::start(&w);
    let issued = w.run_expect(&["issue-invoices", "--json", "--now", &at(w.sandbox.now())], 0);
    let invoice = json(&issued)["invoices"][0]["invoiceId"].as_str().unwrap().to_string();
    w.sandbox.set_faults(Faults {
        too_many_requests_next_transfers: 1,
        fail_next_transfers: 1,
        fail_reason: REASON.into(),
        ..Faults::default()
    });
    w.sandbox.pay_invoice(&invoice, PayOptions::default()).unwrap();

    // The transfer timer, every 5 minutes, until the credit is swept.
    let mut logs = String::new();
    for _ in 0..40 {
        w.sandbox.advance(Duration::minutes(5)).unwrap();
        let out = w
            .cmd(&["process-events", "--now", &at(w.sandbox.now())])
            .env("STARK_SWEEP_LOG_FORMAT", "json")
            .output()
            .unwrap();
        assert!(matches!(out.status.code(), Some(0 | 75)), "{}{}", stdout(&out), stderr(&out));
        logs.push_str(&stderr(&out));
        let credit = w.open_store().credit(&invoice).unwrap();
        if credit.is_some_and(|c| c.state == stark_sweep::store::CreditState::Transferred) {
            break;
        }
    }
    let snap = w.sandbox.snapshot();
    let ours: Vec<_> =
        snap.transfers.iter().filter(|t| t.tags.iter().any(|g| *g == format!("invoice-{invoice}"))).collect();
    assert_eq!(ours.iter().map(|t| t.status.as_str()).collect::<Vec<_>>(), ["failed", "success"], "the story to trace");
    let (failed, success) = (ours[0], ours[1]);

    let out = w.run_expect(&["trace", &invoice, "--json"], 0);
    let t = json(&out);
    assert_eq!(t["invoiceId"], invoice.as_str());
    assert_eq!(t["slot"], 1);
    assert_eq!(t["creditState"], "transferred");
    assert_eq!(t["invoiceStatus"], "paid");
    let timeline = t["timeline"].as_array().unwrap();
    let kinds: Vec<&str> = timeline.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(&kinds[..3], ["slot-claimed", "create-sent", "slot-issued"], "{kinds:?}");
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        timeline.iter().map(|e| stark_sweep::starkbank::time::parse(e["at"].as_str().unwrap()).unwrap()).collect();
    assert!(times.windows(2).all(|p| p[0] <= p[1]), "not in time order: {times:?}");

    // Every event received: by webhook, signature verified, applied.
    let invoice_events: Vec<&Value> =
        timeline.iter().filter(|e| e["kind"] == "event" && e["subscription"] == "invoice").collect();
    let types: Vec<&str> = invoice_events.iter().map(|e| e["logType"].as_str().unwrap()).collect();
    assert_eq!(types, ["created", "paid", "credited"]);
    for e in &invoice_events {
        assert_eq!((e["source"].as_str(), e["signatureVerified"].as_bool()), (Some("webhook"), Some(true)), "{e}");
        assert!(e["appliedAt"].is_string(), "{e}");
    }
    let credit = timeline.iter().find(|e| e["kind"] == "credited").unwrap();
    let inv = snap.invoices.iter().find(|i| i.id == invoice).unwrap();
    assert_eq!((credit["amount"].as_i64(), credit["fee"].as_i64()), (Some(inv.amount), Some(inv.fee)));
    assert_eq!(credit["net"].as_i64(), Some(inv.amount - inv.fee));

    // Every send, with its externalId and outcome: the first went twice (a 429 first).
    let sends: Vec<&Value> = timeline.iter().filter(|e| e["kind"] == "send").collect();
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert_eq!(sends[0]["externalId"].as_str(), failed.external_id.as_deref());
    assert_eq!((sends[0]["outcome"].as_str(), sends[0]["tries"].as_u64()), (Some("accepted"), Some(2)));
    assert_eq!(sends[1]["externalId"].as_str(), success.external_id.as_deref());
    // Every status of every transfer, the failure with the bank's reason.
    let statuses = |id: &str| -> Vec<(String, Option<String>)> {
        timeline
            .iter()
            .filter(|e| e["transferId"] == id)
            .map(|e| {
                let status = e["logType"].as_str().or(e["status"].as_str()).unwrap().to_string();
                (status, e["reason"].as_str().map(str::to_string))
            })
            .collect()
    };
    let failed_story = statuses(&failed.id);
    assert!(failed_story.contains(&("failed".into(), Some(REASON.into()))), "{failed_story:?}");
    let success_story: Vec<String> = statuses(&success.id).into_iter().map(|s| s.0).collect();
    assert_eq!(success_story.first().map(String::as_str), Some("created"), "{success_story:?}");
    assert_eq!(success_story.last().map(String::as_str), Some("success"), "{success_story:?}");
    let failed_at = timeline.iter().position(|e| e["transferId"] == failed.id.as_str() && e["logType"] == "failed");
    let second = timeline.iter().position(|e| e["kind"] == "send" && e["attempt"] == 2);
    assert!(failed_at < second, "the second attempt follows the failure");

    // The same story from any of its ids.
    let credited_event = invoice_events[2]["eventId"].as_str().unwrap();
    for id in [credited_event, failed.id.as_str(), failed.external_id.as_deref().unwrap()] {
        let other = json(&w.run_expect(&["trace", id, "--json"], 0));
        assert_eq!(other["invoiceId"], invoice.as_str(), "{id}");
        assert_eq!(other["timeline"], t["timeline"], "{id}");
    }

    // No payer data unless asked.
    let text = stdout(&w.run_expect(&["trace", &invoice], 0));
    for out in [&text, &stdout(&out)] {
        assert!(!out.contains(&inv.name) && !out.contains(&inv.tax_id), "payer data shown:\n{out}");
        let digits: String = inv.tax_id.chars().filter(char::is_ascii_digit).collect();
        assert!(!out.contains(&digits), "payer data shown:\n{out}");
    }
    assert!(text.contains("payer: hidden (--show-payer shows it)"), "{text}");
    assert!(text.contains(REASON), "{text}");
    assert!(text.contains("signature verified"), "{text}");
    let shown = stdout(&w.run_expect(&["trace", &invoice, "--show-payer"], 0));
    assert!(shown.contains(&inv.name) && shown.contains(&inv.tax_id), "{shown}");

    let missing = w.run_expect(&["trace", "no-such-id"], 1);
    assert!(stderr(&missing).contains("no-such-id: no invoice, event, transfer"), "{}", stderr(&missing));

    // The runs' JSON log lines about this invoice carry its ids.
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| !l.starts_with("stark-sweep: ")) // the one-line error of a run, plain text by design
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .filter(|v| v["invoice_id"] == invoice.as_str())
        .collect();
    let sent: Vec<&Value> = lines.iter().filter(|v| v["msg"].as_str().unwrap().starts_with("sent transfer")).collect();
    assert_eq!(sent.len(), 2, "{lines:?}");
    assert_eq!(sent[1]["external_id"].as_str(), success.external_id.as_deref());
    assert_eq!(sent[1]["attempt"], 2);
    assert!(lines.iter().any(|v| v["msg"].as_str().unwrap().contains("swept by transfer")), "{lines:?}");
    assert!(!logs.contains(&inv.name) && !logs.contains(&inv.tax_id), "payer data logged");
}
