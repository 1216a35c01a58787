//! `stark-sweep status`: the campaign, invoices, credits, transfers, totals and the
//! reconciliation (`reconcile`) of every credit against what was transferred for it, and of
//! every transfer against a credit. Reads the store only, and shows only this deployment's own
//! (credits of invoices it did not issue are counted, never listed); exits 3 when something
//! needs a human, so a monitoring timer can alert on it.
//!
//! Its cost follows what is open, not the history: the totals are SQL aggregates, and only the
//! credits that do not add up are read whole. The listing shows what needs a human and what is
//! still on its way; settled history (skipped credits) is counted, and listed with `--all`.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Ctx, Status, count, print, print_json};
use crate::campaign::SlotAt;
use crate::cli::StatusArgs;
use crate::money::brl;
use crate::reconcile::{SKIPPED, reconcile_sums};
use crate::starkbank::time;
use crate::store::{CreditState, Store};

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
    let mut by_status = store.invoice_statuses()?;
    let ours_known = by_status.values().sum::<usize>() as i64;
    if invoice_count > ours_known {
        *by_status.entry("created".into()).or_default() += (invoice_count - ours_known) as usize;
    }

    // Credits and transfers: ours, and strays tagged with our invoices. SQLite sums them; only
    // the credits that do not add up come back whole.
    let totals = store.credit_totals()?;
    let transfers_by_status = store.transfer_totals()?;
    let transferred = transfers_by_status.get("success").map_or(0, |t| t.amount);
    let unsettled = store.unsettled_credits(args.all)?;
    let strays = store.stray_transfers()?;
    let unclaimed = store.count_unclaimed()?;
    let mut discrepancies = reconcile_sums(&unsettled, &store.transfers_without_credit()?, &strays, now, stale);
    // Settled history is counted, not listed (the store already left the skipped credits out).
    let not_listed = if args.all {
        0
    } else {
        discrepancies.retain(crate::reconcile::Discrepancy::listed_by_default);
        store.count_credits_in(CreditState::Skipped)? as usize
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &discrepancies {
        *counts.entry(d.kind).or_default() += 1;
    }
    if not_listed > 0 {
        *counts.entry(SKIPPED).or_default() += not_listed;
    }
    let total = discrepancies.len() + not_listed;
    let without_credit: Vec<&crate::reconcile::Discrepancy> =
        discrepancies.iter().filter(|d| d.kind == "transfer-without-credit").collect();
    let attention = discrepancies.iter().filter(|d| d.needs_attention).count();
    let kill_switch = store.kill_switch()?;
    let outflow_24h = store.outflow_24h(now)?;
    let needs_human = attention + missed.len() + failed.len() + stuck.len() + usize::from(kill_switch.is_some());
    let unapplied = store.has_pending_events()?;

    if args.json {
        print_json(&json!({
            "now": time::format_secs(now),
            "campaign": campaign_json,
            "invoices": {"issued": invoice_count, "total": invoiced, "byStatus": by_status},
            "credits": {"count": totals.count, "amount": totals.amount, "fees": totals.fees, "netDue": totals.net_due},
            "transfers": {
                "byStatus": transfers_by_status.iter().map(|(k, t)| (k.clone(), json!({"count": t.count, "amount": t.amount}))).collect::<serde_json::Map<_, _>>(),
                "transferred": transferred,
                "withoutCredit": without_credit,
            },
            "unclaimedCredits": unclaimed,
            "outflow24h": outflow_24h,
            "killSwitch": kill_switch.as_ref().map(|(reason, since)| json!({"reason": reason, "since": since})),
            "eventsPending": unapplied,
            "discrepancies": discrepancies,
            "discrepancyCounts": counts,
            "discrepanciesNotListed": not_listed,
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
            totals.count,
            brl(totals.amount),
            brl(totals.fees),
            brl(totals.net_due)
        ));
        s.push_str(&format!("transfers: {} transferred", brl(transferred)));
        for (k, t) in &transfers_by_status {
            s.push_str(&format!("; {k} {} ({})", t.count, brl(t.amount)));
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
        if total == 0 && totals.net_due == transferred {
            s.push_str("reconciliation: every credit transferred exactly once, totals equal\n");
        } else {
            s.push_str(&format!(
                "reconciliation: {} ({attention} {} attention); net to transfer {}, transferred {}\n",
                count(total as u64, "discrepancy", "discrepancies"),
                if attention == 1 { "needs" } else { "need" },
                brl(totals.net_due),
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
            if not_listed > 0 {
                s.push_str(&format!(
                    "  - {}: nothing to transfer (settled, not listed; `stark-sweep status --all` lists them)\n",
                    count(not_listed as u64, "skipped credit", "skipped credits")
                ));
            }
        }
        if unapplied {
            s.push_str("events recorded but not yet processed: run `stark-sweep process-events`\n");
        }
        print(&s)?;
    }
    Ok(if needs_human > 0 { Status::Attention } else { Status::Success })
}
