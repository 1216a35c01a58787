//! `stark-sweep process-events`: turns recorded credits into transfers (see `sweep`), and prints
//! what the run did or, with `--dry-run`, would do.

use super::{Ctx, Status, count, print, print_json};
use crate::cli::ProcessArgs;
use crate::error;
use crate::money::brl;
use crate::store::Store;
use crate::sweep::{self, Options, Report};

pub fn run(ctx: &Ctx, args: &ProcessArgs) -> anyhow::Result<Status> {
    let production = super::config::is_production(&ctx.api);
    super::config::refuse_drill_clock_in_production(&ctx.clock, &ctx.api)?;
    if args.dry_run {
        return dry_run(ctx, args, production);
    }
    let opts = Options::new(&super::config::sweep_settings(&args.sweep), !args.no_reconcile, production)?;
    let client = super::config::client(&ctx.api)?;
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
    if !report.attention.is_empty() || !report.held.is_empty() {
        return Ok(Status::Attention);
    }
    if report.unknown > 0 {
        return Err(error::temporary(format!(
            "{} an unknown outcome; the next run resolves them by tag before sending anything",
            count(report.unknown as u64, "transfer has", "transfers have")
        )));
    }
    if !report.errors.is_empty() {
        return Err(error::temporary(format!(
            "{} failed (first: {}); the next run retries them",
            count(report.errors.len() as u64, "step", "steps"),
            report.errors[0]
        )));
    }
    Ok(Status::Success)
}

/// `--dry-run`: what a run would send and what would stop it, from an in-memory copy of the
/// store; Stark Bank is only read, and the database file is never written.
fn dry_run(ctx: &Ctx, args: &ProcessArgs, production: bool) -> anyhow::Result<Status> {
    // An unconfirmed production target stops a real run; here it is one of the things shown.
    let settings = super::config::sweep_settings(&args.sweep);
    let (opts, stopped) = match Options::new(&settings, !args.no_reconcile, production) {
        Ok(opts) => (opts, None),
        Err(e) if production && error::classify(&e) == error::ExitKind::Config => {
            let unconfirmed =
                sweep::Settings { confirm_target_account: Some(settings.target.confirmation()), ..settings.clone() };
            (Options::new(&unconfirmed, !args.no_reconcile, production)?, Some(error::one_line(&e)))
        }
        Err(e) => return Err(e),
    };
    if !ctx.db.exists() {
        print(&format!("dry run: {} does not exist yet: nothing would be sent\n", ctx.db.display()))?;
        return Ok(Status::Success);
    }
    let client = super::config::client(&ctx.api)?;
    let mut copy = Store::copy_of(&ctx.db)?;
    if args.retry_attention {
        sweep::retry_attention(&mut copy)?;
    }
    let report = sweep::dry_run(&client, &mut copy, &opts, ctx.clock.now())?;
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["dryRun"] = serde_json::json!(true);
        v["stoppedBy"] = serde_json::json!(stopped);
        print_json(&v)?;
    } else {
        let mut s = String::from("dry run: nothing is sent, claimed or written\n");
        if let Some(why) = &stopped {
            s.push_str(&format!("would stop: {why}\n"));
        }
        if let Some(k) = &report.kill_switch {
            s.push_str(&format!("would stop: kill switch engaged: {k}\n"));
        }
        for w in &report.would_send {
            s.push_str(&format!(
                "would send {} for invoice {} to {} as {}{}\n",
                brl(w.amount),
                w.invoice_id,
                w.target,
                w.external_id,
                if w.resend { " (again: its first outcome is not known)" } else { "" }
            ));
        }
        for h in &report.held {
            s.push_str(&format!("would hold invoice {}: {}\n", h.invoice_id, h.reason));
        }
        for a in &report.attention {
            s.push_str(&format!("would need attention: invoice {}: {}\n", a.invoice_id, a.reason));
        }
        if report.would_send.is_empty() && report.held.is_empty() {
            s.push_str("nothing would be sent\n");
        }
        print(&s)?;
    }
    Ok(Status::Success)
}

pub fn summary(r: &Report) -> String {
    let mut s = format!(
        "events: {} pulled from Stark Bank, {} applied\ncredits seen: {}\ntransfers sent: {} ({}) in {}; {} settled\nskipped: {}   failed (will retry): {}   waiting: {}   unknown: {}\n",
        r.events_pulled,
        r.events_applied,
        r.credits_seen,
        r.transfers_sent,
        brl(r.sent_total),
        count(r.transfer_requests as u64, "request", "requests"),
        count(r.transferred as u64, "credit", "credits"),
        r.skipped,
        r.failed,
        r.waiting,
        r.unknown
    );
    if r.marked_delivered > 0 {
        s.push_str(&format!("events marked delivered: {}\n", r.marked_delivered));
    }
    if let Some(k) = &r.kill_switch {
        s.push_str(&format!("kill switch engaged: {k}; nothing was sent (to resume: stark-sweep kill-switch off)\n"));
    }
    for a in &r.held {
        s.push_str(&format!("  invoice {}: {}\n", a.invoice_id, a.reason));
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
