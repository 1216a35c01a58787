//! `stark-sweep issue-invoices`: reads the campaign flags, refuses what production forbids,
//! runs the invoice step (`issue`) and prints what it did.
//!
//! Owns: the production refusals (random payers, the drill clock) and the summary, as text or
//! JSON. Does not own: the exactly-once rules, claiming or completing slots (`issue`).

use serde_json::json;

use super::{Ctx, Status, print, print_json};
use crate::cli::IssueArgs;
use crate::error;
use crate::issue::{self, Outcome, Plan, Settings};
use crate::money::brl;
use crate::starkbank::time;
use crate::store::{CampaignRow, Draft, Store};

/// The campaign flags, as the engine's settings.
fn settings(a: &IssueArgs) -> Settings {
    Settings {
        campaign_hours: a.campaign.campaign_hours,
        slot_hours: a.campaign.slot_hours,
        invoices_min: a.invoices_min,
        invoices_max: a.invoices_max,
        amount_min: a.amount_min,
        amount_max: a.amount_max,
        due_days: a.due_days,
        expiration_days: a.expiration_days,
        in_flight_margin_secs: a.in_flight_margin,
    }
}

pub fn run(ctx: &Ctx, args: &IssueArgs) -> anyhow::Result<Status> {
    let plan = Plan::new(&settings(args))?;
    // Invoices to made-up people are real charges to real tax ids in production.
    super::config::refuse_drill_clock_in_production(&ctx.clock, &ctx.api)?;
    if super::config::is_production(&ctx.api) && !args.allow_random_payers_in_production && !args.dry_run {
        return Err(error::config(
            "production: this campaign issues invoices to randomly generated people, real charges to whoever holds those tax ids; refused; to fix: use the sandbox, or pass --allow-random-payers-in-production (STARK_SWEEP_ALLOW_RANDOM_PAYERS_IN_PRODUCTION=true) if that is really intended",
        ));
    }
    let now = ctx.clock.now();
    let run = if args.dry_run {
        // Never create the database for a dry run.
        let store = if ctx.db.exists() { Some(Store::open(&ctx.db)?) } else { None };
        issue::dry_run(store.as_ref(), &plan, now)?
    } else {
        // Configuration is checked before anything is written.
        let client = super::config::client(&ctx.api)?;
        let mut store = Store::open(&ctx.db)?;
        issue::issue(&client, &mut store, &plan, args.workspace.configured().as_deref(), args.slot, now)?
    };
    report(&plan, run.campaign.as_ref(), &run.outcome, args.json, args.show_payer)?;
    match run.earlier_failures.into_iter().next() {
        Some(e) => Err(e.context("an earlier slot is still unfinished")),
        None => Ok(Status::Success),
    }
}

fn report(
    plan: &Plan,
    campaign: Option<&CampaignRow>,
    outcome: &Outcome,
    json: bool,
    show_payer: bool,
) -> anyhow::Result<()> {
    let tag = campaign.map(|c| c.tag.clone()).unwrap_or_default();
    let slots = campaign.map(CampaignRow::slots).unwrap_or(plan.shape().slots());
    let invoices = |drafts: &[Draft], with_people: bool| -> Vec<serde_json::Value> {
        drafts
            .iter()
            .map(|d| {
                let mut v =
                    json!({"draftKey": d.draft_key, "invoiceId": d.invoice_id, "amount": d.amount, "due": d.due});
                if with_people {
                    v["name"] = json!(d.name);
                    v["taxId"] = json!(d.tax_id);
                }
                v
            })
            .collect()
    };
    let total = |drafts: &[Draft]| drafts.iter().map(|d| d.amount).sum::<i64>();
    let (slot, drafts, text): (Option<u32>, &[Draft], String) = match outcome {
        Outcome::Ended { ended_at } => {
            (None, &[], format!("campaign {tag} ended at {}; nothing to do\n", time::format_secs(*ended_at)))
        }
        Outcome::NotStarted { starts_at } => {
            (None, &[], format!("campaign {tag} starts at {}; nothing to do yet\n", time::format_secs(*starts_at)))
        }
        Outcome::Busy => {
            (None, &[], "another issue-invoices run is in progress; it will issue this slot\n".to_string())
        }
        Outcome::Taken { slot } => {
            (Some(*slot), &[], format!("slot {}/{slots} was just taken by another run; nothing to do\n", slot + 1))
        }
        Outcome::AlreadyIssued { slot, drafts } => (
            Some(*slot),
            drafts,
            format!(
                "slot {}/{slots} of campaign {tag} is already issued ({}, {}); nothing to do\n",
                slot + 1,
                invoices_count(drafts),
                brl(total(drafts))
            ),
        ),
        Outcome::Issued { slot, drafts, created_now } => {
            let ids: Vec<&str> = drafts.iter().filter_map(|d| d.invoice_id.as_deref()).collect();
            (
                Some(*slot),
                drafts,
                format!(
                    "issued slot {}/{slots} of campaign {tag}: {} ({} created by this run), total {}\ninvoice ids: {}\n",
                    slot + 1,
                    invoices_count(drafts),
                    created_now,
                    brl(total(drafts)),
                    ids.join(" ")
                ),
            )
        }
        Outcome::DryRun { slot, drafts } => {
            let mut text = format!(
                "dry run: slot {}/{slots} of campaign {tag} would issue {}, total {}\n",
                slot + 1,
                invoices_count(drafts),
                brl(total(drafts))
            );
            for d in drafts.iter() {
                if show_payer {
                    text.push_str(&format!("  {:>14}  {}  {}  due {}\n", brl(d.amount), d.tax_id, d.name, d.due));
                } else {
                    text.push_str(&format!(
                        "  {:>14}  due {}  (payer hidden; --show-payer shows it)\n",
                        brl(d.amount),
                        d.due
                    ));
                }
            }
            (Some(*slot), drafts, text)
        }
    };
    if json {
        print_json(&json!({
            "status": outcome.kind().as_str(),
            "campaign": tag,
            // Slots for humans, as in the text: 1 to 8.
            "slot": slot.map(|k| k + 1),
            "slots": slots,
            "count": drafts.len(),
            "total": total(drafts),
            "invoices": invoices(drafts, show_payer && matches!(outcome, Outcome::DryRun { .. })),
        }))
    } else {
        print(&text)
    }
}

fn invoices_count<T>(drafts: &[T]) -> String {
    super::count(drafts.len() as u64, "invoice", "invoices")
}
