//! Metrics in the Prometheus text format (0.0.4): what `serve-webhook` answers on `GET /metrics`,
//! and the textfile the timer jobs write for node_exporter (`textfile`).
//!
//! Owns: the names, help texts and units of every metric, and turning the store's figures
//! (`store::Figures`, read at each scrape, so every process agrees) and the listener's own
//! counts (`Intake`) into text. Does not own: the SQL (`store::metrics`), HTTP (`listener`), or
//! the alert rules (`deploy/prometheus/alerts.yml`, which use these names).
//!
//! Conventions: every name starts with `stark_sweep_`; money is in integer cents and says so
//! (`_cents`); times are seconds (`_seconds`, timestamps as Unix time); counters end in
//! `_total`. No payer data: no label ever holds a name, a tax id or an invoice id.

mod intake;
pub mod textfile;

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, prometheus_text};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

pub use intake::{Intake, LATENCY_BUCKETS, REFUSALS};

use crate::campaign::SlotAt;
use crate::store::Figures;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The exposition: the store's figures at `now` (or, when they could not be read, only
/// `stark_sweep_store_readable 0`), and the listener's own counts when given.
pub fn render(figures: Option<Figures>, now: DateTime<Utc>, intake: Option<&Intake>) -> anyhow::Result<String> {
    let mut registry = Registry::default();
    registry.register(
        "stark_sweep_build",
        "The stark-sweep version serving these metrics",
        Info::new([("version", env!("CARGO_PKG_VERSION"))]),
    );
    if let Some(intake) = intake {
        intake.register(&mut registry);
    }
    registry.register_collector(Box::new(FromStore { figures, now }));
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry).map_err(|e| anyhow::anyhow!("encoding the metrics failed: {e}"))?;
    Ok(text)
}

/// The store's figures as const metrics (read once per scrape by the caller).
#[derive(Debug)]
struct FromStore {
    figures: Option<Figures>,
    now: DateTime<Utc>,
}

/// One unlabelled gauge.
fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl prometheus_client::encoding::EncodeGaugeValue + Send + Sync + std::fmt::Debug,
) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, &format!("{help}."), unit, g.metric_type())?)
}

/// One gauge with a label, a sample per value.
fn gauges(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &'static str,
    rows: &[(&str, i64)],
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, &format!("{help}."), None, ConstGauge::new(0i64).metric_type())?;
    for (value, n) in rows {
        let labels = [(label, *value)];
        ConstGauge::new(*n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// What the campaign calendar says at `now`: (running, slots, due, issued, missed, failed).
fn campaign_figures(f: &Figures, now: DateTime<Utc>) -> (bool, u32, u32, usize, usize, usize) {
    let Some(c) = &f.campaign else { return (false, 0, 0, 0, 0, 0) };
    let shape = c.shape();
    let (running, due) = match shape.slot_at(c.started_at, now) {
        SlotAt::NotStarted => (false, 0),
        SlotAt::Slot(k) => (true, k + 1),
        SlotAt::Ended { .. } => (false, c.slots()),
    };
    let issued = f.slots.iter().filter(|s| s.issued_at.is_some()).count();
    // As `status` counts them: a slot whose window closed without any run claiming it.
    let missed =
        shape.closed_slots(c.started_at, now).into_iter().filter(|k| !f.slots.iter().any(|s| s.slot == *k)).count();
    let failed = f.slots.iter().filter(|s| s.failed_reason.is_some()).count();
    (running, c.slots(), due, issued, missed, failed)
}

impl Collector for FromStore {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        gauge(
            &mut enc,
            "stark_sweep_store_readable",
            "1 when this scrape could read the store; 0 means every other store figure is missing",
            None,
            i64::from(self.figures.is_some()),
        )?;
        let Some(f) = &self.figures else { return Ok(()) };
        let seconds = Some(&Unit::Seconds);

        let states: Vec<(&str, i64)> = f.credits.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        gauges(
            &mut enc,
            "stark_sweep_credits",
            "Credits recorded, by state (unclaimed: an invoice of the workspace this deployment did not issue)",
            "state",
            &states,
        )?;
        gauge(
            &mut enc,
            "stark_sweep_credited_cents",
            "What our credited invoices were paid, in cents (unclaimed credits excluded)",
            None,
            f.credited_cents,
        )?;
        gauge(
            &mut enc,
            "stark_sweep_credited_fees_cents",
            "Stark Bank's fees on our credits, in cents",
            None,
            f.fees_cents,
        )?;
        gauge(
            &mut enc,
            "stark_sweep_credited_net_cents",
            "What must be transferred for our credits (amount - fee, skipped ones excluded), in cents",
            None,
            f.net_due_cents,
        )?;
        gauge(
            &mut enc,
            "stark_sweep_transferred_cents",
            "What our successful transfers carried to the target account, in cents",
            None,
            f.transferred_cents,
        )?;
        let statuses: Vec<(&str, i64)> = f.transfers.iter().map(|(s, n, _)| (s.as_str(), *n)).collect();
        gauges(&mut enc, "stark_sweep_transfers", "Our transfers, by Stark Bank status", "status", &statuses)?;
        gauge(
            &mut enc,
            "stark_sweep_credits_overpaid",
            "Credits whose successful transfers add up to more than their net, or are more than one",
            None,
            f.overpaid_credits,
        )?;
        gauge(
            &mut enc,
            "stark_sweep_transfers_without_credit",
            "Transfers alive or successful for an invoice with no credit of ours, or tagged with our invoice and not sent by us",
            None,
            f.transfers_without_credit,
        )?;
        let age = f.oldest_unswept_credited_at.map_or(0.0, |t| ((self.now - t).num_milliseconds().max(0) as f64) / 1e3);
        gauge(
            &mut enc,
            "stark_sweep_oldest_open_credit_age",
            "Age of the oldest credit not swept yet (open or held), from its credit; 0 when there is none",
            seconds,
            age,
        )?;
        gauge(
            &mut enc,
            "stark_sweep_outflow_24h_cents",
            "Money that left (or may have left) in the last 24 hours, in cents, as the outflow limit counts it",
            None,
            f.outflow_24h_cents,
        )?;
        gauge(
            &mut enc,
            "stark_sweep_kill_switch_engaged",
            "1 while the kill switch stops all outgoing money",
            None,
            i64::from(f.kill_switch),
        )?;

        let (running, slots, due, issued, missed, failed) = campaign_figures(f, self.now);
        gauge(
            &mut enc,
            "stark_sweep_campaign_running",
            "1 while the campaign's window is open",
            None,
            i64::from(running),
        )?;
        gauge(&mut enc, "stark_sweep_campaign_slots", "Slots of the campaign (0 before it starts)", None, slots)?;
        gauge(
            &mut enc,
            "stark_sweep_campaign_slots_due",
            "Slots whose time has come (each should be issued by now)",
            None,
            due,
        )?;
        gauge(&mut enc, "stark_sweep_campaign_slots_issued", "Slots whose every invoice exists", None, issued as i64)?;
        gauge(
            &mut enc,
            "stark_sweep_campaign_slots_missed",
            "Slots whose window closed without any run issuing them",
            None,
            missed as i64,
        )?;
        gauge(
            &mut enc,
            "stark_sweep_campaign_slots_failed",
            "Slots Stark Bank refused for good (not retried until issue-invoices --slot N)",
            None,
            failed as i64,
        )?;
        let last_issued =
            f.slots.iter().filter_map(|s| s.issued_at.as_deref()).filter_map(crate::starkbank::time::parse).max();
        if let Some(t) = last_issued {
            gauge(
                &mut enc,
                "stark_sweep_last_slot_issued_timestamp",
                "When the last slot was issued (Unix time, business clock); absent until one is",
                seconds,
                t.timestamp_millis() as f64 / 1e3,
            )?;
        }
        gauge(
            &mut enc,
            "stark_sweep_events_stored",
            "Events in the store (verified deliveries and events pulled from the API)",
            None,
            f.events_stored,
        )?;
        gauge(
            &mut enc,
            "stark_sweep_events_unapplied",
            "Events stored and not yet processed by process-events",
            None,
            f.events_unapplied,
        )?;
        let state = |s: crate::store::CreditState| f.credits.iter().find(|(k, _)| *k == s).map_or(0, |(_, n)| *n);
        let needs_human = state(crate::store::CreditState::Attention)
            + state(crate::store::CreditState::Held)
            + f.overpaid_credits
            + f.transfers_without_credit
            + missed as i64
            + failed as i64
            + i64::from(f.kill_switch);
        gauge(
            &mut enc,
            "stark_sweep_needs_attention",
            "Things a human must look at: credits in attention or held, overpaid credits, transfers without a credit, missed or failed slots, the kill switch (stark-sweep status says which)",
            None,
            needs_human,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is the failed assertion")]
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let intake = Intake::new();
        intake.answered(200, "stored", Some(std::time::Duration::from_millis(3)));
        let (_dir, store) = crate::store::testing::temp_store();
        let text = render(Some(store.figures(Utc::now()).unwrap()), Utc::now(), Some(&intake)).unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("stark_sweep_"), "{line}");
        }
        assert!(text.contains("\nstark_sweep_webhook_events_stored_total 1\n"), "{text}");
        assert!(text.contains("# TYPE stark_sweep_webhook_intake_seconds histogram\n"), "{text}");
        assert!(text.contains("stark_sweep_webhook_intake_seconds_bucket{le=\"0.005\"} 1\n"), "{text}");
        assert!(
            text.contains("stark_sweep_webhook_events_refused_total{reason=\"invalid_signature\",code=\"401\"} 0\n")
        );
        assert!(text.contains("stark_sweep_credits{state=\"open\"} 0\n"), "{text}");
        assert!(text.contains("stark_sweep_transfers{status=\"success\"} 0\n"), "{text}");
        assert!(text.contains("stark_sweep_build_info{version=\""), "{text}");
        assert!(!text.contains("last_slot_issued"), "absent until a slot is issued");
    }

    #[test]
    fn slots_due_issued_and_missed_follow_the_calendar() {
        let start = crate::starkbank::time::parse("2026-01-01T00:00:00+00:00").unwrap();
        let row = |slot: u32, issued: bool| crate::store::SlotRow {
            slot,
            claimed_at: "t".into(),
            issued_at: issued.then(|| "2026-01-01T00:00:01+00:00".into()),
            invoices: 8,
            total: 8000,
            failed_reason: None,
        };
        let f = Figures {
            campaign: Some(crate::store::CampaignRow {
                tag: "c".into(),
                started_at: start,
                length_seconds: 24 * 3600,
                slot_seconds: 3 * 3600,
            }),
            // Slot 1 issued, slot 2 claimed and unfinished, slot 3 never claimed.
            slots: vec![row(0, true), row(1, false)],
            ..Figures::default()
        };
        let at = |h: i64| start + chrono::Duration::hours(h);
        assert_eq!(campaign_figures(&f, at(-1)), (false, 8, 0, 1, 0, 0), "before it starts");
        assert_eq!(campaign_figures(&f, at(4)), (true, 8, 2, 1, 0, 0));
        assert_eq!(campaign_figures(&f, at(9)), (true, 8, 4, 1, 1, 0), "slot 3's window closed unclaimed");
        assert_eq!(campaign_figures(&f, at(30)), (false, 8, 8, 1, 6, 0), "after it ends, every slot is due");
    }

    #[test]
    fn an_unreadable_store_is_said_not_hidden() {
        let text = render(None, Utc::now(), None).unwrap();
        assert!(text.contains("\nstark_sweep_store_readable 0\n"), "{text}");
        assert!(!text.contains("stark_sweep_credits"), "{text}");
    }
}
