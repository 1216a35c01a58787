//! `stark-sweep process-events`: turns recorded credits into transfers (see `sweep`).

use super::{Ctx, Status, brl, print, print_json};
use crate::cli::{ProcessArgs, SweepArgs};
use crate::error;
use crate::store::Store;
use crate::sweep::{self, Options, Report, Target};

/// Validates the transfer-step flags once.
pub fn options(a: &SweepArgs, reconcile: bool) -> anyhow::Result<Options> {
    let d = Target::default();
    let target = Target {
        bank_code: a.target_bank_code.clone().unwrap_or(d.bank_code),
        branch_code: a.target_branch.clone().unwrap_or(d.branch_code),
        account_number: a.target_account.clone().unwrap_or(d.account_number),
        name: a.target_name.clone().unwrap_or(d.name),
        tax_id: a.target_tax_id.clone().unwrap_or(d.tax_id),
        account_type: a.target_account_type.clone().unwrap_or(d.account_type),
    };
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).count();
    if !(target.bank_code.chars().all(|c| c.is_ascii_digit()) && matches!(target.bank_code.len(), 1..=3 | 8)) {
        return Err(error::config(format!(
            "STARK_SWEEP_TARGET_BANK_CODE=`{}`: use an 8-digit ISPB (Pix, e.g. 20018183) or a 1-3 digit bank code (TED)",
            target.bank_code
        )));
    }
    if target.branch_code.is_empty() || target.account_number.is_empty() || target.name.trim().is_empty() {
        return Err(error::config(
            "STARK_SWEEP_TARGET_BRANCH, STARK_SWEEP_TARGET_ACCOUNT and STARK_SWEEP_TARGET_NAME must not be empty",
        ));
    }
    if !matches!(digits(&target.tax_id), 11 | 14) {
        return Err(error::config(format!(
            "STARK_SWEEP_TARGET_TAX_ID=`{}` is neither a CPF (11 digits) nor a CNPJ (14 digits)",
            target.tax_id
        )));
    }
    if !matches!(target.account_type.as_str(), "checking" | "savings" | "salary" | "payment") {
        return Err(error::config(format!(
            "STARK_SWEEP_TARGET_ACCOUNT_TYPE=`{}`: use checking, savings, salary or payment",
            target.account_type
        )));
    }
    let max_attempts = a.transfer_attempts.unwrap_or(5);
    if !(1..=20).contains(&max_attempts) {
        return Err(error::config("STARK_SWEEP_TRANSFER_ATTEMPTS must be between 1 and 20"));
    }
    Ok(Options {
        target,
        all_credits: a.all_credits,
        max_attempts,
        backoff: chrono::Duration::seconds(a.retry_backoff.unwrap_or(60).min(86_400) as i64),
        reconcile,
        workspace_id: a.workspace.configured(),
    })
}

pub fn run(ctx: &Ctx, args: &ProcessArgs) -> anyhow::Result<Status> {
    let opts = options(&args.sweep, !args.no_reconcile)?;
    let client = crate::config::client(&ctx.global.api)?;
    let mut store = Store::open(&ctx.db)?;
    if args.retry_attention {
        let n = sweep::retry_attention(&mut store)?;
        log::info!("{n} credits that needed attention are back in play");
    }
    let Some(report) = sweep::run_if_free(&client, &mut store, &opts, ctx.clock.now())? else {
        if args.json {
            print_json(&serde_json::json!({"status": "in-progress"}))?;
        } else {
            print("another process-events run is in progress; nothing to do\n")?;
        }
        return Ok(Status::Success);
    };
    if args.json {
        print_json(&serde_json::to_value(&report)?)?;
    } else {
        print(&summary(&report))?;
    }
    // A human is needed (exit 3) outranks what the next run repairs by itself (exit 75).
    if !report.attention.is_empty() {
        return Ok(Status::Attention);
    }
    if report.unknown > 0 {
        return Err(error::temporary(format!(
            "{} transfers have an unknown outcome; the next run resolves them by tag before sending anything",
            report.unknown
        )));
    }
    if !report.errors.is_empty() {
        return Err(error::temporary(format!(
            "{} steps failed (first: {}); the next run retries them",
            report.errors.len(),
            report.errors[0]
        )));
    }
    Ok(Status::Success)
}

pub fn summary(r: &Report) -> String {
    let mut s = format!(
        "events: {} pulled from Stark Bank, {} applied\ncredits seen: {}\ntransfers sent: {} ({}) in {} requests; {} credits settled\nskipped: {}   failed (will retry): {}   waiting: {}   unknown: {}\n",
        r.events_pulled,
        r.events_applied,
        r.credits_seen,
        r.transfers_sent,
        brl(r.sent_total),
        r.transfer_requests,
        r.transferred,
        r.skipped,
        r.failed,
        r.waiting,
        r.unknown
    );
    if r.marked_delivered > 0 {
        s.push_str(&format!("events marked delivered: {}\n", r.marked_delivered));
    }
    for a in &r.retrying {
        s.push_str(&format!("  invoice {}: {}\n", a.invoice_id, a.reason));
    }
    if r.attention.is_empty() {
        s.push_str("needs attention: none\n");
    } else {
        s.push_str(&format!("needs attention: {}\n", r.attention.len()));
        for a in &r.attention {
            s.push_str(&format!("  invoice {}: {}\n", a.invoice_id, a.reason));
        }
    }
    s
}
