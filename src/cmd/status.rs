//! `stark-sweep status`: the campaign, invoices, credits, transfers, totals and a
//! reconciliation of every credit against what was transferred for it. Reads the store only;
//! exits 3 when something needs a human, so a monitoring timer can alert on it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Ctx, Status, brl, print, print_json};
use crate::campaign::SlotAt;
use crate::cli::StatusArgs;
use crate::starkbank::time;
use crate::store::{Credit, Store, TransferRow};

/// One credit whose transfer is not (yet) exactly its net amount.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Discrepancy {
    pub invoice_id: String,
    pub net: i64,
    pub transferred: i64,
    pub kind: &'static str,
    pub detail: String,
    pub needs_attention: bool,
}

/// The reconciliation of every credit; pure over the store's rows (unit-tested).
pub fn reconcile(
    credits: &[Credit],
    transfers: &[TransferRow],
    now: DateTime<Utc>,
    stale: chrono::Duration,
) -> Vec<Discrepancy> {
    let mut out = Vec::new();
    for c in credits {
        let mine: Vec<&TransferRow> = transfers.iter().filter(|t| t.invoice_id == c.invoice_id).collect();
        let transferred: i64 = mine.iter().filter(|t| t.is_success()).map(|t| t.amount).sum();
        let successes = mine.iter().filter(|t| t.is_success()).count();
        let in_flight = mine.iter().any(|t| t.is_alive());
        let failed = mine.iter().filter(|t| matches!(t.status.as_str(), "failed" | "canceled")).count();
        let d = |kind, detail: String, needs_attention| Discrepancy {
            invoice_id: c.invoice_id.clone(),
            net: c.net,
            transferred,
            kind,
            detail,
            needs_attention,
        };
        match c.state.as_str() {
            "skipped" => out.push(d("skipped", c.reason.clone().unwrap_or_default(), false)),
            "attention" => out.push(d("attention", c.reason.clone().unwrap_or_default(), true)),
            _ if successes > 1 || transferred > c.net => out.push(d(
                "overpaid",
                format!("{successes} successful transfers totalling {}", brl(transferred)),
                true,
            )),
            _ if successes == 1 && transferred == c.net => {}
            _ if successes == 1 => out.push(d(
                "amount-mismatch",
                format!("transferred {} for a net of {}", brl(transferred), brl(c.net)),
                true,
            )),
            _ => {
                let since = time::parse(&c.credited_at).map(|t| now - t).unwrap_or_default();
                let minutes = since.num_minutes();
                let (kind, detail) = if in_flight {
                    ("in-flight", format!("transfer in flight; credited {minutes} min ago"))
                } else if failed > 0 {
                    ("failed-transfer", format!("{failed} failed transfer(s), retrying; credited {minutes} min ago"))
                } else {
                    ("not-transferred", format!("credited {minutes} min ago, no transfer yet"))
                };
                out.push(d(kind, detail, since > stale));
            }
        }
    }
    out
}

pub fn run(ctx: &Ctx, args: &StatusArgs) -> anyhow::Result<Status> {
    if !ctx.db.exists() {
        anyhow::bail!(
            "{}: no database yet; to fix: run `stark-sweep issue-invoices` first, or point STARK_SWEEP_DB at the right file",
            ctx.db.display()
        );
    }
    let store = Store::open(&ctx.db)?;
    let now = ctx.clock.now();
    let stale = chrono::Duration::minutes(args.stale_minutes.unwrap_or(30).max(0));

    // Campaign.
    let campaign = store.campaign()?;
    let slots = store.slots()?;
    let issued = slots.iter().filter(|s| s.issued_at.is_some()).count();
    let incomplete: Vec<u32> = slots.iter().filter(|s| s.issued_at.is_none()).map(|s| s.slot).collect();
    let campaign_json = campaign.as_ref().map(|c| {
        let shape = c.shape();
        let (state, current, next) = match shape.slot_at(c.started_at, now) {
            SlotAt::Ended { .. } => ("ended", None, None),
            SlotAt::NotStarted => ("not-started", None, Some(c.started_at)),
            SlotAt::Slot(k) => {
                let next = (k + 1 < c.slots()).then(|| shape.slot_start(c.started_at, k + 1));
                ("running", Some(k), next)
            }
        };
        json!({
            "tag": c.tag,
            "state": state,
            "startedAt": time::format_secs(c.started_at),
            "endsAt": time::format_secs(c.started_at + shape.length),
            "slots": c.slots(),
            "slotsIssued": issued,
            "slotsLeft": c.slots() as usize - slots.len().min(c.slots() as usize),
            "currentSlot": current,
            "nextSlotAt": next.map(time::format_secs),
            "incompleteSlots": incomplete,
        })
    });
    let invoiced: i64 = slots.iter().map(|s| s.total).sum();
    let invoice_count: i64 = slots.iter().map(|s| s.invoices).sum();

    // Invoices by status (from events; issued ones without events yet count as created).
    let known = store.invoices()?;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for inv in known.iter().filter(|i| i.ours) {
        *by_status.entry(inv.status.clone()).or_default() += 1;
    }
    let ours_known = known.iter().filter(|i| i.ours).count() as i64;
    if invoice_count > ours_known {
        *by_status.entry("created".into()).or_default() += (invoice_count - ours_known) as usize;
    }

    // Credits and transfers.
    let credits = store.credits()?;
    let transfers = store.transfers()?;
    let mut transfers_by_status: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for t in &transfers {
        let e = transfers_by_status.entry(t.status.clone()).or_default();
        e.0 += 1;
        e.1 += t.amount;
    }
    let credited: i64 = credits.iter().map(|c| c.amount).sum();
    let fees: i64 = credits.iter().map(|c| c.fee).sum();
    let net_due: i64 = credits.iter().filter(|c| c.state != "skipped").map(|c| c.net).sum();
    let transferred: i64 = transfers.iter().filter(|t| t.is_success()).map(|t| t.amount).sum();
    let discrepancies = reconcile(&credits, &transfers, now, stale);
    let attention = discrepancies.iter().filter(|d| d.needs_attention).count();
    let unapplied = store.pending_events(1)?.len();

    if args.json {
        print_json(&json!({
            "now": time::format_secs(now),
            "campaign": campaign_json,
            "invoices": {"issued": invoice_count, "total": invoiced, "byStatus": by_status},
            "credits": {"count": credits.len(), "amount": credited, "fees": fees, "netDue": net_due},
            "transfers": {
                "byStatus": transfers_by_status.iter().map(|(k, (n, a))| (k.clone(), json!({"count": n, "amount": a}))).collect::<serde_json::Map<_, _>>(),
                "transferred": transferred,
            },
            "eventsPending": unapplied > 0,
            "discrepancies": discrepancies,
            "needsAttention": attention,
        }))?;
    } else {
        let mut s = String::new();
        match (&campaign, &campaign_json) {
            (Some(c), Some(j)) => {
                s.push_str(&format!(
                    "campaign {} ({}): started {}, {} of {} slots issued",
                    c.tag,
                    j["state"].as_str().unwrap_or_default(),
                    time::format_secs(c.started_at),
                    issued,
                    c.slots()
                ));
                if let Some(next) = j["nextSlotAt"].as_str() {
                    s.push_str(&format!(", next slot at {next}"));
                }
                if !incomplete.is_empty() {
                    s.push_str(&format!(", slots being completed: {incomplete:?}"));
                }
                s.push('\n');
            }
            _ => s.push_str("campaign: not started (run `stark-sweep issue-invoices`)\n"),
        }
        s.push_str(&format!("invoices: {invoice_count} issued, {}", brl(invoiced)));
        for (k, n) in &by_status {
            s.push_str(&format!("; {k} {n}"));
        }
        s.push('\n');
        s.push_str(&format!(
            "credits: {} credited, {} (fees {}), net to transfer {}\n",
            credits.len(),
            brl(credited),
            brl(fees),
            brl(net_due)
        ));
        s.push_str(&format!("transfers: {} transferred", brl(transferred)));
        for (k, (n, a)) in &transfers_by_status {
            s.push_str(&format!("; {k} {n} ({})", brl(*a)));
        }
        s.push('\n');
        if discrepancies.is_empty() {
            s.push_str("reconciliation: every credit transferred exactly once, totals equal\n");
        } else {
            s.push_str(&format!(
                "reconciliation: {} discrepancies ({attention} need attention)\n",
                discrepancies.len()
            ));
            for d in &discrepancies {
                s.push_str(&format!(
                    "  {} invoice {}: net {}, transferred {}: {}\n",
                    if d.needs_attention { "!" } else { "-" },
                    d.invoice_id,
                    brl(d.net),
                    brl(d.transferred),
                    d.detail
                ));
            }
        }
        if unapplied > 0 {
            s.push_str("events recorded but not yet processed: run `stark-sweep process-events`\n");
        }
        print(&s)?;
    }
    Ok(if attention > 0 { Status::Attention } else { Status::Success })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credit(id: &str, net: i64, state: &str) -> Credit {
        Credit {
            invoice_id: id.into(),
            event_id: "e".into(),
            amount: net + 10,
            fee: 10,
            net,
            credited_at: "2026-01-01T00:00:00+00:00".into(),
            recorded_at: "t".into(),
            state: state.into(),
            reason: Some("why".into()),
            next_send_at: None,
        }
    }

    fn transfer(invoice: &str, id: &str, amount: i64, status: &str) -> TransferRow {
        TransferRow {
            id: id.into(),
            external_id: format!("x-{id}"),
            invoice_id: invoice.into(),
            amount,
            status: status.into(),
            updated_at: "t".into(),
        }
    }

    #[test]
    fn flags_what_is_wrong_and_nothing_else() {
        let now = time::parse("2026-01-01T01:00:00+00:00").unwrap();
        let credits = vec![
            credit("ok", 100, "transferred"),
            credit("late", 100, "open"),
            credit("failed", 100, "attention"),
            credit("double", 100, "transferred"),
            credit("free", 0, "skipped"),
        ];
        let transfers = vec![
            transfer("ok", "1", 100, "success"),
            transfer("ok", "2", 100, "failed"),
            transfer("double", "3", 100, "success"),
            transfer("double", "4", 100, "success"),
        ];
        let d = reconcile(&credits, &transfers, now, chrono::Duration::minutes(30));
        let kinds: Vec<(&str, &str, bool)> =
            d.iter().map(|d| (d.invoice_id.as_str(), d.kind, d.needs_attention)).collect();
        assert_eq!(
            kinds,
            vec![
                ("late", "not-transferred", true),
                ("failed", "attention", true),
                ("double", "overpaid", true),
                ("free", "skipped", false)
            ]
        );
        assert!(reconcile(&credits[..1], &transfers, now, chrono::Duration::minutes(30)).is_empty());
    }
}
