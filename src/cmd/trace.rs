//! `stark-sweep trace ID`: the whole life of one invoice, in time order (see `trace`). Reads the
//! store only.

use super::{Ctx, Status, print, print_json};
use crate::cli::TraceArgs;
use crate::money::brl;
use crate::store::Store;

pub fn run(ctx: &Ctx, args: &TraceArgs) -> anyhow::Result<Status> {
    if !ctx.db.exists() {
        anyhow::bail!(
            "{}: no database yet; to fix: point STARK_SWEEP_DB (or --db) at the deployment's database",
            ctx.db.display()
        );
    }
    let store = Store::open(&ctx.db)?;
    let Some(t) = crate::trace::trace(&store, &args.id, args.show_payer)? else {
        anyhow::bail!(
            "{}: no invoice, event, transfer, externalId or draft key by that id in {}; to fix: check the id (`stark-sweep status` names the invoices that need attention), or point STARK_SWEEP_DB at the right database",
            args.id.trim(),
            ctx.db.display()
        );
    };
    if args.json {
        print_json(&serde_json::to_value(&t)?)?;
        return Ok(Status::Success);
    }
    let mut s = match &t.invoice_id {
        Some(inv) if inv == &t.id => format!("invoice {inv}\n"),
        Some(inv) => format!("invoice {inv} (traced from {} {})\n", by(t.traced_by), t.id),
        None => format!("draft {} (no invoice yet)\n", t.id),
    };
    if let (Some(k), Some(amount)) = (t.slot, t.amount) {
        s.push_str(&format!(
            "campaign {}, slot {k}/{}, draft {}: {}, due {}\n",
            t.campaign.as_deref().unwrap_or("?"),
            t.slots.map_or("?".to_string(), |n| n.to_string()),
            t.draft_key.as_deref().unwrap_or("?"),
            brl(amount),
            t.due.as_deref().unwrap_or("?")
        ));
        match &t.payer {
            Some(p) => s.push_str(&format!("payer: {} ({})\n", p.name, p.tax_id)),
            None => s.push_str("payer: hidden (--show-payer shows it)\n"),
        }
    } else {
        s.push_str("not an invoice this deployment issued (no draft)\n");
    }
    let credit = match (t.credit_state, &t.credit_reason) {
        (Some(state), Some(why)) => format!("credit {} ({why})", state.as_str()),
        (Some(state), None) => format!("credit {}", state.as_str()),
        (None, _) => "no credit recorded".to_string(),
    };
    s.push_str(&format!("now: invoice {}; {credit}\n\n", t.invoice_status.as_deref().unwrap_or("status unknown")));
    for e in &t.timeline {
        let at = if e.at.is_empty() { "-" } else { e.at.as_str() };
        s.push_str(&format!("{at:<32}  {:<12}  {}\n", e.kind, e.summary));
    }
    print(&s)?;
    Ok(Status::Success)
}

fn by(traced_by: crate::store::TracedBy) -> &'static str {
    match traced_by {
        crate::store::TracedBy::Invoice => "invoice",
        crate::store::TracedBy::Event => "event",
        crate::store::TracedBy::Transfer => "transfer",
        crate::store::TracedBy::ExternalId => "externalId",
        crate::store::TracedBy::DraftKey => "draft key",
    }
}
