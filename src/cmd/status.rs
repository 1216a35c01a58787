//! `stark-sweep status`: the campaign, invoices, credits, transfers, totals and the
//! reconciliation (`reconcile`) of every credit against what was transferred for it, and of
//! every transfer against a credit. Reads the store only, and shows only this deployment's own
//! (credits of invoices it did not issue are counted, never listed); exits 3 when something
//! needs a human, so a monitoring timer can alert on it.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Ctx, Status, brl, count, print, print_json};
use crate::campaign::SlotAt;
use crate::cli::StatusArgs;
use crate::reconcile::reconcile;
use crate::starkbank::time;
use crate::store::{CreditState, Store, TransferRow};

pub fn run(ctx: &Ctx, args: &StatusArgs) -> anyhow::Result<Status> {
    if !ctx.db.exists() {
        // Before the first run: nothing to watch yet, which is not a failure (a monitoring
        // timer installed with the units must not page before the first slot).
        let db = ctx.db.display().to_string();
        return if args.json {
            print_json(&json!({ "database": db, "campaign": null, "needsAttention": false }))
        } else {
            print(&format!(
                "no campaign yet: {db} does not exist (the first issue-invoices run creates it; --db or STARK_SWEEP_DB names another file)\n"
            ))
        }
        .map(|()| Status::Success);
    }
    let store = Store::open(&ctx.db)?;
    crate::workspace::check_configured(&store, args.workspace.configured().as_deref())?;
    let now = ctx.clock.now();
    let stale = chrono::Duration::minutes(args.stale_minutes.max(0));

    // Campaign.
    let campaign = store.campaign()?;
    let slots = store.slots()?;
    let issued = slots.iter().filter(|s| s.issued_at.is_some()).count();
    // Slots for humans: 1 to 8. In progress, failed for good, or missed (window closed unissued).
    let incomplete: Vec<u32> =
        slots.iter().filter(|s| s.issued_at.is_none() && s.failed_reason.is_none()).map(|s| s.slot + 1).collect();
    let failed: Vec<(u32, String)> =
        slots.iter().filter_map(|s| s.failed_reason.clone().map(|r| (s.slot + 1, r))).collect();
    let missed: Vec<u32> = campaign
        .as_ref()
        .map(|c| c.shape().closed_slots(c.started_at, now))
        .unwrap_or_default()
        .into_iter()
        .filter(|k| !slots.iter().any(|s| s.slot == *k))
        .map(|k| k + 1)
        .collect();
    // Claimed but still unfinished after its window closed: the timer keeps retrying it, and a
    // human should know why it does not end.
    let closed: Vec<u32> = campaign.as_ref().map(|c| c.shape().closed_slots(c.started_at, now)).unwrap_or_default();
    let stuck: Vec<u32> = incomplete.iter().copied().filter(|k| closed.contains(&(k - 1))).collect();
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
            "currentSlot": current.map(|k| k + 1),
            "nextSlotAt": next.map(time::format_secs),
            "incompleteSlots": incomplete,
            "stuckSlots": stuck,
            "missedSlots": missed,
            "failedSlots": failed.iter().map(|(k, r)| json!({"slot": k, "reason": r})).collect::<Vec<_>>(),
        })
    });
    let invoiced: i64 = slots.iter().map(|s| s.total).sum();
    let invoice_count: i64 = slots.iter().map(|s| s.invoices).sum();

    // Invoices by status (from events; issued ones without events yet count as created).
    let known = store.invoices()?;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for inv in &known {
        *by_status.entry(inv.status.clone()).or_default() += 1;
    }
    let ours_known = known.len() as i64;
    if invoice_count > ours_known {
        *by_status.entry("created".into()).or_default() += (invoice_count - ours_known) as usize;
    }

    // Credits and transfers: ours, and strays tagged with our invoices.
    let credits = store.credits()?;
    let transfers: Vec<TransferRow> = store.transfers()?.into_iter().filter(|t| t.ours).collect();
    let strays = store.stray_transfers()?;
    let unclaimed = store.count_unclaimed()?;
    let mut transfers_by_status: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for t in &transfers {
        let e = transfers_by_status.entry(t.status.clone()).or_default();
        e.0 += 1;
        e.1 += t.amount;
    }
    let credited: i64 = credits.iter().map(|c| c.amount).sum();
    let fees: i64 = credits.iter().map(|c| c.fee).sum();
    let net_due: i64 = credits.iter().filter(|c| c.state != CreditState::Skipped).map(|c| c.net).sum();
    let transferred: i64 = transfers.iter().filter(|t| t.is_success()).map(|t| t.amount).sum();
    let discrepancies = reconcile(&credits, &transfers, &strays, now, stale);
    let without_credit: Vec<&crate::reconcile::Discrepancy> =
        discrepancies.iter().filter(|d| d.kind == "transfer-without-credit").collect();
    let attention = discrepancies.iter().filter(|d| d.needs_attention).count();
    let kill_switch = store.kill_switch()?;
    let outflow_24h = store.outflow_24h(now)?;
    let needs_human = attention + missed.len() + failed.len() + stuck.len() + usize::from(kill_switch.is_some());
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
                "withoutCredit": without_credit,
            },
            "unclaimedCredits": unclaimed,
            "outflow24h": outflow_24h,
            "killSwitch": kill_switch.as_ref().map(|(reason, since)| json!({"reason": reason, "since": since})),
            "eventsPending": unapplied > 0,
            "discrepancies": discrepancies,
            "needsAttention": needs_human,
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
                for k in &missed {
                    s.push_str(&format!(
                        "  ! slot {k}/{} (from {}): missed: its time passed without it being issued; to issue it now: stark-sweep issue-invoices --slot {k}\n",
                        c.slots(),
                        time::format_secs(c.shape().slot_start(c.started_at, k - 1))
                    ));
                }
                for k in &stuck {
                    s.push_str(&format!(
                        "  ! slot {k}/{}: still being completed after its time passed (the issue-invoices log says why each try fails); it completes once that passes, or see `stark-sweep issue-invoices --slot {k}`\n",
                        c.slots()
                    ));
                }
                for (k, reason) in &failed {
                    s.push_str(&format!(
                        "  ! slot {k}/{}: failed: {reason}; after fixing the cause: stark-sweep issue-invoices --slot {k}\n",
                        c.slots()
                    ));
                }
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
        s.push_str(&format!("outflow in the last 24 hours: {}\n", brl(outflow_24h)));
        if let Some((reason, since)) = &kill_switch {
            s.push_str(&format!(
                "! kill switch engaged since {since}: {reason}; no money leaves (to resume: stark-sweep kill-switch off)\n"
            ));
        }
        if unclaimed > 0 {
            s.push_str(&format!(
                "credits of invoices this deployment did not issue: {unclaimed} (ignored: not ours to sweep)\n"
            ));
        }
        if discrepancies.is_empty() && net_due == transferred {
            s.push_str("reconciliation: every credit transferred exactly once, totals equal\n");
        } else {
            s.push_str(&format!(
                "reconciliation: {} ({attention} {} attention); net to transfer {}, transferred {}\n",
                count(discrepancies.len() as u64, "discrepancy", "discrepancies"),
                if attention == 1 { "needs" } else { "need" },
                brl(net_due),
                brl(transferred)
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
    Ok(if needs_human > 0 { Status::Attention } else { Status::Success })
}
