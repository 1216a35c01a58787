//! `stark-sweep status`: the campaign, invoices, credits, transfers, totals and the
//! reconciliation (`reconcile`) of every credit against what was transferred for it, and of
//! every transfer against a credit. Reads the store only, and shows only this deployment's own
//! (credits of invoices it did not issue are counted, never listed); exits 3 when something
//! needs a human, so a monitoring timer can alert on it.
//!
//! Owns: which figures are read and how they print. The rules are the engines': which
//! slots are missed, stuck or failed and where the campaign stands (`issue`), what does not add
//! up and what is counted rather than listed (`reconcile`).
//!
//! Its cost follows what is open, not the history: the totals are SQL aggregates, and only the
//! credits that do not add up are read whole. The listing shows what needs a human and what is
//! still on its way; settled history (skipped credits) is counted, and listed with `--all`.

use serde_json::json;

use super::{Ctx, Status, count, print, print_json};
use crate::cli::StatusArgs;
use crate::issue::{self, Progress, SlotHealth};
use crate::money::brl;
use crate::reconcile::{Summary, reconcile_sums};
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
    let health = SlotHealth::of(campaign.as_ref(), &slots, now);
    let campaign_json = campaign.as_ref().map(|c| {
        let progress = Progress::of(c, now);
        json!({
            "tag": c.tag,
            "state": progress.state.as_str(),
            "startedAt": time::format_secs(c.started_at),
            "endsAt": time::format_secs(c.started_at + c.shape().length),
            "slots": c.slots(),
            "slotsIssued": health.issued,
            "slotsLeft": c.slots() as usize - slots.len().min(c.slots() as usize),
            "currentSlot": progress.current.map(|k| k + 1),
            "nextSlotAt": progress.next_slot_at.map(time::format_secs),
            "incompleteSlots": health.incomplete,
            "stuckSlots": health.stuck,
            "missedSlots": health.missed,
            "failedSlots": health.failed.iter().map(|(k, r)| json!({"slot": k, "reason": r})).collect::<Vec<_>>(),
        })
    });
    let invoiced: i64 = slots.iter().map(|s| s.total).sum();
    let invoice_count: i64 = slots.iter().map(|s| s.invoices).sum();

    // Invoices by status (from events; issued ones without events yet count as created).
    let by_status = issue::invoice_statuses(store.invoice_statuses()?, invoice_count);

    // Credits and transfers: ours, and strays tagged with our invoices. SQLite sums them; only
    // the credits that do not add up come back whole.
    let totals = store.credit_totals()?;
    let transfers_by_status = store.transfer_totals()?;
    let transferred = transfers_by_status.get("success").map_or(0, |t| t.amount);
    let unsettled = store.unsettled_credits(args.all)?;
    let strays = store.stray_transfers()?;
    let unclaimed = store.count_unclaimed()?;
    let discrepancies = reconcile_sums(&unsettled, &store.transfers_without_credit()?, &strays, now, stale);
    // Settled history is counted, not listed (the store already left the skipped credits out).
    let skipped = if args.all { 0 } else { store.count_credits_in(CreditState::Skipped)? as usize };
    let summary = Summary::of(discrepancies, args.all, skipped);
    let (not_listed, total, attention) = (summary.not_listed, summary.total(), summary.attention);
    let kill_switch = store.kill_switch()?;
    let outflow_24h = store.outflow_24h(now)?;
    let needs_human = attention + health.needing_a_human() + usize::from(kill_switch.is_some());
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
                "withoutCredit": summary.without_credit(),
            },
            "unclaimedCredits": unclaimed,
            "outflow24h": outflow_24h,
            "killSwitch": kill_switch.as_ref().map(|(reason, since)| json!({"reason": reason, "since": since})),
            "eventsPending": unapplied,
            "discrepancies": summary.listed,
            "discrepancyCounts": summary.counts,
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
                    health.issued,
                    c.slots()
                ));
                if let Some(next) = j["nextSlotAt"].as_str() {
                    s.push_str(&format!(", next slot at {next}"));
                }
                if !health.incomplete.is_empty() {
                    s.push_str(&format!(", slots being completed: {:?}", health.incomplete));
                }
                s.push('\n');
                for k in &health.missed {
                    s.push_str(&format!(
                        "  ! slot {k}/{} (from {}): missed: its time passed without it being issued; to issue it now: stark-sweep issue-invoices --slot {k}\n",
                        c.slots(),
                        time::format_secs(c.shape().slot_start(c.started_at, k - 1))
                    ));
                }
                for k in &health.stuck {
                    s.push_str(&format!(
                        "  ! slot {k}/{}: still being completed after its time passed (the issue-invoices log says why each try fails); it completes once that passes, or see `stark-sweep issue-invoices --slot {k}`\n",
                        c.slots()
                    ));
                }
                for (k, reason) in &health.failed {
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
            for d in &summary.listed {
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
