//! The transfer step: every credited invoice becomes exactly one successful transfer of
//! `amount - fee` to the target account.
//!
//! One run, under the `sweep` process lock (so at most one sender is alive per database):
//! 1. know our workspace (pinned, or learned from the API with our credentials);
//! 2. pull undelivered events from Stark Bank and record them like the listener does; fetch the
//!    credited logs of invoices we issued that have no credit yet (so a credit is found even
//!    when another deployment in the same workspace took its webhook);
//! 3. apply recorded events: invoice states, credits (on `credited` only), transfer states;
//! 4. `--all-credits`: confirm credits of invoices we did not issue by fetching each invoice;
//! 5. refresh transfers still in flight;
//! 6. resolve sends whose outcome is unknown by looking the invoice's transfers up by tag;
//! 7. decide, per open credit, whether to wait, send, re-send or ask for attention;
//! 8. claim the sends in SQLite, then send them in batches of up to 100;
//! 9. mark delivered the pulled events that concern us, only now that their effects are durable.
//!
//! Whose money: a credit is ours only when this deployment issued its invoice (tags are labels,
//! not proof); a transfer counts for a credit only when its externalId, amount and target are
//! those of one of our sends; events of any other workspace have no effect.
//!
//! The rule that keeps money from moving twice: a new `externalId` (a new attempt) is only
//! used after Stark Bank has said the previous attempt failed AND a lookup by the invoice's
//! tag shows nothing of ours alive or successful. Re-sending the same `externalId` is always
//! safe: Stark Bank refuses duplicates.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::campaign::OWNER_TAG;
use crate::starkbank::event::summarize_event;
use crate::starkbank::resources::{Invoice, ListFilter, MAX_BATCH, NewTransfer, Transfer};
use crate::starkbank::{ApiError, Client};
use crate::store::{
    Credit, CreditState, CreditedLog, EventEffects, EventSource, InvoiceState, NewEvent, RunLock, SendRow, Store,
    TransferRow, target_key, ts,
};

/// Where swept money goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub bank_code: String,
    pub branch_code: String,
    pub account_number: String,
    pub name: String,
    pub tax_id: String,
    pub account_type: String,
}

impl Target {
    /// How this target is compared with a transfer's (see `store::target_key`).
    pub fn key(&self) -> String {
        target_key(&self.bank_code, &self.branch_code, &self.account_number, &self.tax_id)
    }
}

impl Default for Target {
    fn default() -> Self {
        Self {
            bank_code: "20018183".into(),
            branch_code: "0001".into(),
            account_number: "6341320293482496".into(),
            name: "Stark Bank S.A.".into(),
            tax_id: "20.018.183/0001-80".into(),
            account_type: "payment".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    pub all_credits: bool,
    /// Sends of a transfer that really failed before the credit needs attention.
    pub max_attempts: u32,
    /// Wait before re-sending a failed transfer; doubles per attempt.
    pub backoff: chrono::Duration,
    pub reconcile: bool,
    /// `STARKBANK_WORKSPACE_ID`, when set: must agree with the workspace proven by the API.
    pub workspace_id: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            target: Target::default(),
            all_credits: false,
            max_attempts: 5,
            backoff: chrono::Duration::seconds(60),
            reconcile: true,
            workspace_id: None,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub events_pulled: usize,
    pub events_recorded: usize,
    pub events_applied: usize,
    /// Events of another workspace found among the recorded ones (no effect).
    pub events_foreign: usize,
    pub credits_seen: usize,
    /// Credited logs fetched for invoices we issued that had no credit yet.
    pub credits_reconciled: usize,
    pub transfers_sent: usize,
    pub sent_total: i64,
    pub transfer_requests: usize,
    pub lookups: usize,
    pub transferred: usize,
    pub skipped: usize,
    pub failed: usize,
    pub waiting: usize,
    pub unknown: usize,
    pub attention: Vec<Attention>,
    pub marked_delivered: usize,
    pub errors: Vec<String>,
    /// Ids pulled as undelivered in this run, to mark delivered once applied.
    #[serde(skip)]
    pulled: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attention {
    pub invoice_id: String,
    pub reason: String,
}

/// The tag every transfer for `invoice_id` carries: how it is found after any failure.
pub fn invoice_tag(invoice_id: &str) -> String {
    format!("invoice-{invoice_id}")
}

/// Deterministic per (invoice, attempt), with our own prefix: Stark Bank reportedly reserves
/// `invoice-{id}` for the invoice's own credit entry.
pub fn external_id(invoice_id: &str, attempt: u32) -> String {
    format!("stark-sweep-{invoice_id}-{attempt}")
}

/// The amount to transfer for a credited invoice: what was paid (discounts taken off, fine and
/// interest added) minus Stark Bank's fee. `None` when nothing is left to send.
pub fn net_amount(amount: i64, fee: i64) -> Option<i64> {
    amount.checked_sub(fee).filter(|n| *n > 0)
}

/// A transfer to the target for `credit`, for `attempt`.
pub fn transfer_for(target: &Target, invoice_id: &str, amount: i64, attempt: u32) -> NewTransfer {
    NewTransfer {
        amount,
        name: target.name.clone(),
        tax_id: target.tax_id.clone(),
        bank_code: target.bank_code.clone(),
        branch_code: target.branch_code.clone(),
        account_number: target.account_number.clone(),
        account_type: target.account_type.clone(),
        external_id: Some(external_id(invoice_id, attempt)),
        tags: vec![OWNER_TAG.to_string(), invoice_tag(invoice_id)],
    }
}

fn invoice_id_of_transfer(t: &Transfer) -> Option<String> {
    t.tags.iter().find_map(|tag| tag.strip_prefix("invoice-").map(str::to_string))
}

/// What Stark Bank says of a transfer, as a row. Whether it is ours, and for which invoice when
/// it is, the store decides from our sends; a transfer with neither our tag nor an invoice tag
/// is none of our business (`None`).
fn transfer_row(t: &Transfer, fallback_time: DateTime<Utc>) -> Option<TransferRow> {
    let invoice_id = invoice_id_of_transfer(t);
    if invoice_id.is_none() && !t.tags.iter().any(|tag| tag == OWNER_TAG) {
        return None;
    }
    Some(TransferRow {
        id: t.id.clone(),
        external_id: t.external_id.clone(),
        invoice_id: invoice_id.unwrap_or_default(),
        amount: t.amount,
        status: t.status.clone(),
        updated_at: if t.updated.is_empty() { ts(fallback_time) } else { t.updated.clone() },
        ours: false,
        target: Some(target_key(&t.bank_code, &t.branch_code, &t.account_number, &t.tax_id)),
    })
}

/// Runs the step if no other run holds the lock; `Ok(None)` when one does.
pub fn run_if_free(
    client: &Client,
    store: &mut Store,
    opts: &Options,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Report>> {
    let Some(_lock) = RunLock::try_acquire(store.path(), "sweep")? else {
        return Ok(None);
    };
    run(client, store, opts, now).map(Some)
}

/// Runs the step, waiting for the lock (for the listener's background `--process`).
pub fn run_waiting(client: &Client, store: &mut Store, opts: &Options, now: DateTime<Utc>) -> anyhow::Result<Report> {
    let _lock = RunLock::acquire(store.path(), "sweep")?;
    run(client, store, opts, now)
}

fn run(client: &Client, store: &mut Store, opts: &Options, now: DateTime<Utc>) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let workspace = crate::workspace::learn(client, store, opts.workspace_id.as_deref(), now)?;
    if opts.reconcile {
        pull_undelivered(client, store, opts, now, &mut report)?;
        reconcile_credited_logs(client, store, now, &mut report);
    }
    let workspace = match workspace {
        Some(w) => Some(w),
        None => crate::workspace::pinned(store)?,
    };
    apply_events(store, workspace.as_deref(), now, &mut report)?;
    if opts.all_credits {
        confirm_workspace_credits(client, store, now, &mut report)?;
    }
    refresh_in_flight(client, store, now, &mut report);
    let plan = decide(client, store, opts, now, &mut report)?;
    send(client, store, opts, plan, now, &mut report)?;
    settle(store, &mut report)?;
    if opts.reconcile {
        mark_delivered(client, store, opts, now, &mut report);
    }
    Ok(report)
}

/// Step 2a: `GET /v2/event?isDelivered=false`, every page, each recorded durably as it arrives
/// (one transaction per page), so a long backlog is never held in memory whole. The API shows
/// a project only its own workspace's events: the first one pins the workspace if nothing is
/// pinned yet, and one of another workspace means the credentials and the database disagree.
fn pull_undelivered(
    client: &Client,
    store: &mut Store,
    opts: &Options,
    now: DateTime<Utc>,
    report: &mut Report,
) -> anyhow::Result<()> {
    client.for_each_event_page(Some(false), |events| -> anyhow::Result<()> {
        report.events_pulled += events.len();
        let mut batch = Vec::with_capacity(events.len());
        for event in events {
            match summarize_event(&event) {
                Ok(summary) => {
                    if let Some(ws) = &summary.workspace_id {
                        crate::workspace::pin(
                            store,
                            ws,
                            crate::workspace::FROM_EVENT_LIST,
                            opts.workspace_id.as_deref(),
                            now,
                        )?;
                    }
                    report.pulled.push(summary.id.clone());
                    let body = serde_json::to_vec(&serde_json::json!({ "event": event }))?;
                    batch.push(NewEvent { summary, body, signature: None, source: EventSource::Api });
                }
                Err(e) => log::warn!("skipping an undelivered event Stark Bank listed: {e}"),
            }
        }
        let inserted = store.insert_events(&batch, now)?;
        report.events_recorded += inserted.iter().filter(|i| **i == crate::store::Inserted::New).count();
        Ok(())
    })
}

/// Step 2b: the credited logs of invoices we issued that may still be credited and have no
/// credit recorded, fetched with our own credentials (100 invoices a request). This finds a
/// credit whatever happened to its event: delivered to another deployment's listener in the
/// same workspace (which then marked it delivered), or never delivered at all.
fn reconcile_credited_logs(client: &Client, store: &mut Store, now: DateTime<Utc>, report: &mut Report) {
    let result = (|| -> anyhow::Result<()> {
        let waiting = store.uncredited_invoices(now)?;
        for chunk in waiting.chunks(MAX_BATCH) {
            let logs = client.credited_logs(chunk)?;
            let credited: Vec<CreditedLog> = logs.iter().filter_map(credited_log).collect();
            report.credits_reconciled += store.record_credited_logs(&credited, now)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        log::warn!("could not fetch credited logs (the next run retries): {e:#}");
        report.errors.push(format!("fetching credited logs: {e:#}"));
    }
}

/// A `credited` invoice log (as the API lists it) as a credit to record.
fn credited_log(log: &Value) -> Option<CreditedLog> {
    if log.get("type").and_then(Value::as_str) != Some("credited") {
        return None;
    }
    let inv: Invoice = serde_json::from_value(log.get("invoice")?.clone()).ok()?;
    Some(CreditedLog {
        invoice_id: inv.id,
        event_id: format!("log:{}", log.get("id").and_then(Value::as_str)?),
        amount: inv.amount,
        fee: inv.fee,
        credited_at: log.get("created").and_then(Value::as_str).unwrap_or_default().to_string(),
    })
}

/// What an event changes, decided without touching the database. Whose invoice or transfer it
/// is, the store decides from our own records.
pub fn effects_of(event_id: &str, body: &[u8]) -> anyhow::Result<EventEffects> {
    let v: Value = serde_json::from_slice(body)?;
    let event = v.get("event").unwrap_or(&v);
    let subscription = event.get("subscription").and_then(Value::as_str).unwrap_or_default();
    let log = event.get("log").cloned().unwrap_or(Value::Null);
    let log_type = log.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    let log_at = log.get("created").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut fx = EventEffects::default();
    match subscription {
        "invoice" => {
            let inv: Invoice = serde_json::from_value(log.get("invoice").cloned().unwrap_or(Value::Null))?;
            if log_type == "credited" {
                fx.credited = Some(CreditedLog {
                    invoice_id: inv.id.clone(),
                    event_id: event_id.to_string(),
                    amount: inv.amount,
                    fee: inv.fee,
                    credited_at: log_at.clone(),
                });
            }
            fx.invoice = Some(InvoiceState {
                id: inv.id,
                status: inv.status,
                amount: inv.amount,
                nominal_amount: inv.nominal_amount,
                fee: inv.fee,
                log_at,
            });
        }
        "transfer" => {
            let t: Transfer = serde_json::from_value(log.get("transfer").cloned().unwrap_or(Value::Null))?;
            fx.transfer = transfer_row(&t, Utc::now()).map(|mut row| {
                if !log_at.is_empty() {
                    row.updated_at = log_at.clone();
                }
                row
            });
        }
        _ => {}
    }
    Ok(fx)
}

/// Step 3. An event recorded from a webhook acts only when it names our (pinned) workspace;
/// events pulled from the API are ours by construction. While no workspace is pinned, webhook
/// events wait.
fn apply_events(
    store: &mut Store,
    workspace: Option<&str>,
    now: DateTime<Utc>,
    report: &mut Report,
) -> anyhow::Result<()> {
    loop {
        let pending = store.pending_events(1_000)?;
        let mut batch = Vec::with_capacity(pending.len());
        for e in &pending {
            let proven = match (e.source, workspace) {
                (EventSource::Api, _) => true,
                (EventSource::Webhook, Some(ours)) => e.workspace_id.as_deref() == Some(ours),
                (EventSource::Webhook, None) => continue,
            };
            if !proven {
                log::warn!(
                    "event {} names workspace {:?}, not ours ({}): recorded before the workspace was known, it has no effect",
                    e.id,
                    e.workspace_id,
                    workspace.unwrap_or_default()
                );
                report.events_foreign += 1;
                batch.push((e.id.clone(), EventEffects::default()));
                continue;
            }
            let fx = match effects_of(&e.id, &e.body) {
                Ok(fx) => fx,
                Err(err) => {
                    // Stored events were verified and parsed before storing; one that cannot be
                    // read now is kept (applied with no effect) and reported, never dropped silently.
                    log::error!("event {} ({} {}) could not be applied: {err}", e.id, e.subscription, e.log_type);
                    report.errors.push(format!("event {} could not be applied: {err}", e.id));
                    EventEffects::default()
                }
            };
            batch.push((e.id.clone(), fx));
        }
        if batch.is_empty() {
            return Ok(());
        }
        report.credits_seen += store.apply_events(&batch, now)?;
        report.events_applied += batch.len();
    }
}

/// Step 4, `--all-credits` only: a credit of an invoice we did not issue becomes ours once the
/// invoice is fetched with our own credentials (the API shows a project only its own
/// workspace), with the amount and fee of that answer; Stark Bank not knowing it means it is
/// not ours.
fn confirm_workspace_credits(
    client: &Client,
    store: &mut Store,
    now: DateTime<Utc>,
    report: &mut Report,
) -> anyhow::Result<()> {
    for credit in store.unclaimed_credits()? {
        match client.get_invoice(&credit.invoice_id) {
            Ok(inv) if inv.status == "paid" => {
                store.confirm_workspace_credit(&credit.invoice_id, inv.amount, inv.fee, now)?;
                report.credits_seen += 1;
            }
            Ok(inv) => {
                let reason = format!("--all-credits: Stark Bank says invoice {} is {}, not paid", inv.id, inv.status);
                store.set_credit_state(&credit.invoice_id, CreditState::Attention, Some(&reason))?;
                report.attention.push(Attention { invoice_id: credit.invoice_id.clone(), reason });
            }
            Err(e @ ApiError::Rejected { .. }) => {
                let reason = format!("--all-credits: not an invoice of this project's workspace ({e})");
                store.set_credit_state(&credit.invoice_id, CreditState::Skipped, Some(&reason))?;
            }
            Err(e) => report.errors.push(format!("invoice {}: confirming it failed: {e}", credit.invoice_id)),
        }
    }
    Ok(())
}

/// Step 5: ask Stark Bank about our transfers still created/processing.
fn refresh_in_flight(client: &Client, store: &mut Store, now: DateTime<Utc>, report: &mut Report) {
    let result = (|| -> anyhow::Result<()> {
        let alive: Vec<String> = store.alive_transfers()?.into_iter().map(|t| t.id).collect();
        for chunk in alive.chunks(MAX_BATCH) {
            let found = client.query_transfers(&ListFilter::ids(chunk.iter().cloned()))?;
            let rows: Vec<TransferRow> = found.iter().filter_map(|t| transfer_row(t, now)).collect();
            store.upsert_transfers(&rows)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        log::warn!("could not refresh in-flight transfers (the next run retries): {e:#}");
        report.errors.push(format!("refreshing transfers: {e:#}"));
    }
}

/// Looks up every transfer Stark Bank has for an invoice (by tag), records them, and returns
/// ours among them (the store decides which are ours from our sends, never from the tag).
fn lookup(
    client: &Client,
    store: &mut Store,
    invoice_id: &str,
    now: DateTime<Utc>,
    report: &mut Report,
) -> anyhow::Result<Vec<TransferRow>> {
    report.lookups += 1;
    let found = client.query_transfers(&ListFilter::tags([invoice_tag(invoice_id)]))?;
    let rows: Vec<TransferRow> = found
        .iter()
        .filter(|t| invoice_id_of_transfer(t).as_deref() == Some(invoice_id))
        .filter_map(|t| transfer_row(t, now))
        .collect();
    store.upsert_transfers(&rows)?;
    store.transfers_for(invoice_id)
}

/// A send to make in this run.
#[derive(Debug, Clone)]
struct Planned {
    send: SendRow,
    /// True when this externalId may already have reached Stark Bank (a re-send).
    resend: bool,
}

/// Steps 6 and 7.
fn decide(
    client: &Client,
    store: &mut Store,
    opts: &Options,
    now: DateTime<Utc>,
    report: &mut Report,
) -> anyhow::Result<Vec<Planned>> {
    let mut plan = Vec::new();
    for credit in store.open_credits()? {
        let mut transfers = store.transfers_for(&credit.invoice_id)?;
        let last = store.last_send(&credit.invoice_id)?;
        // Step 6: an unknown outcome is resolved before anything else.
        if let Some(l) = &last
            && matches!(l.outcome.as_deref(), None | Some("unknown"))
            && !transfers.iter().any(|t| t.external_id == l.external_id)
        {
            match lookup(client, store, &credit.invoice_id, now, report) {
                Ok(found) => transfers = found,
                Err(e) => {
                    report.unknown += 1;
                    report
                        .errors
                        .push(format!("invoice {}: looking up its transfers failed: {e:#}", credit.invoice_id));
                    continue;
                }
            }
            if transfers.iter().any(|t| t.external_id == l.external_id) {
                store.set_send_outcome(&[(l.external_id.clone(), "accepted", None)])?;
            }
        }
        match next_action(&credit, last.as_ref(), &transfers, opts, now) {
            Action::Done => {}
            Action::Wait => report.waiting += 1,
            Action::SetBackoff(at) => {
                store.set_next_send_at(&credit.invoice_id, Some(at))?;
                report.failed += 1;
                report.waiting += 1;
            }
            Action::Attention(reason) => {
                store.set_credit_state(&credit.invoice_id, CreditState::Attention, Some(&reason))?;
                report.attention.push(Attention { invoice_id: credit.invoice_id.clone(), reason });
            }
            Action::Resend(send) => plan.push(Planned { send, resend: true }),
            Action::NewAttempt(attempt) => {
                // Before a new externalId: prove nothing from earlier attempts is alive.
                if attempt > 1 {
                    let found = match lookup(client, store, &credit.invoice_id, now, report) {
                        Ok(found) => found,
                        Err(e) => {
                            report
                                .errors
                                .push(format!("invoice {}: lookup before re-sending failed: {e:#}", credit.invoice_id));
                            continue;
                        }
                    };
                    if found.iter().any(|t| t.is_alive() || t.is_success()) {
                        report.waiting += 1;
                        continue;
                    }
                }
                // Hard limit: what is sent for an invoice never exceeds its net credit.
                let committed: i64 = store
                    .transfers_for(&credit.invoice_id)?
                    .iter()
                    .filter(|t| t.is_alive() || t.is_success())
                    .map(|t| t.amount)
                    .sum();
                let amount = credit.net;
                if committed + amount > credit.net {
                    let reason = format!(
                        "safety check refused a transfer of {amount} cents: {committed} cents are already sent or in flight for a net credit of {}",
                        credit.net
                    );
                    store.set_credit_state(&credit.invoice_id, CreditState::Attention, Some(&reason))?;
                    report.attention.push(Attention { invoice_id: credit.invoice_id.clone(), reason });
                    continue;
                }
                plan.push(Planned {
                    send: SendRow {
                        external_id: external_id(&credit.invoice_id, attempt),
                        invoice_id: credit.invoice_id.clone(),
                        attempt,
                        amount,
                        claimed_at: ts(now),
                        outcome: None,
                        error: None,
                        target: Some(opts.target.key()),
                    },
                    resend: false,
                });
            }
        }
    }
    Ok(plan)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// A transfer succeeded (the caller settles the credit).
    Done,
    Wait,
    SetBackoff(DateTime<Utc>),
    Attention(String),
    Resend(SendRow),
    NewAttempt(u32),
}

/// The decision for one open credit, from what is known (pure, unit-tested).
fn next_action(
    credit: &Credit,
    last: Option<&SendRow>,
    transfers: &[TransferRow],
    opts: &Options,
    now: DateTime<Utc>,
) -> Action {
    let successes: Vec<&TransferRow> = transfers.iter().filter(|t| t.is_success()).collect();
    if successes.len() > 1 {
        return Action::Attention(format!(
            "{} successful transfers exist for this invoice ({}); check with Stark Bank",
            successes.len(),
            successes.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    if !successes.is_empty() {
        return Action::Done;
    }
    if transfers.iter().any(TransferRow::is_alive) {
        return Action::Wait;
    }
    let Some(last) = last else { return Action::NewAttempt(1) };
    let mine: Vec<&TransferRow> = transfers.iter().filter(|t| t.external_id == last.external_id).collect();
    match last.outcome.as_deref() {
        Some("rejected") => Action::Attention(format!(
            "Stark Bank refused the transfer: {}",
            last.error.as_deref().unwrap_or("no details")
        )),
        // Nothing exists under this externalId (lookups already ran for unknown outcomes):
        // sending it again is safe, Stark Bank refuses a duplicate externalId.
        _ if mine.is_empty() => Action::Resend(last.clone()),
        _ => {
            // Every transfer of the last attempt is final and none succeeded: it failed.
            if last.attempt >= opts.max_attempts {
                return Action::Attention(format!(
                    "the transfer failed {} times (last: {}); fix the cause (balance? target account?), then re-run with --retry-attention",
                    last.attempt,
                    mine.iter().map(|t| format!("{} {}", t.id, t.status)).collect::<Vec<_>>().join(", ")
                ));
            }
            match credit.next_send_at.as_deref().and_then(crate::starkbank::time::parse) {
                None => Action::SetBackoff(now + opts.backoff * 2i32.pow(last.attempt.saturating_sub(1).min(16))),
                Some(at) if now < at => Action::Wait,
                Some(_) => Action::NewAttempt(last.attempt + 1),
            }
        }
    }
}

/// Step 6: claim, then send in batches.
fn send(
    client: &Client,
    store: &mut Store,
    opts: &Options,
    plan: Vec<Planned>,
    now: DateTime<Utc>,
    report: &mut Report,
) -> anyhow::Result<()> {
    if plan.is_empty() {
        return Ok(());
    }
    let new: Vec<SendRow> = plan.iter().filter(|p| !p.resend).map(|p| p.send.clone()).collect();
    store.claim_sends(&new)?;
    for p in plan.iter().filter(|p| !p.resend && p.send.attempt > 1) {
        store.set_next_send_at(&p.send.invoice_id, None)?;
    }
    for chunk in plan.chunks(MAX_BATCH) {
        send_chunk(client, store, opts, chunk, now, report)?;
    }
    Ok(())
}

fn send_chunk(
    client: &Client,
    store: &mut Store,
    opts: &Options,
    chunk: &[Planned],
    now: DateTime<Utc>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let body: Vec<NewTransfer> =
        chunk.iter().map(|p| transfer_for(&opts.target, &p.send.invoice_id, p.send.amount, p.send.attempt)).collect();
    report.transfer_requests += 1;
    match client.create_transfers(&body) {
        Ok(created) => {
            let rows: Vec<TransferRow> = created.iter().filter_map(|t| transfer_row(t, now)).collect();
            store.upsert_transfers(&rows)?;
            let outcomes: Vec<(String, &str, Option<String>)> =
                chunk.iter().map(|p| (p.send.external_id.clone(), "accepted", None)).collect();
            store.set_send_outcome(&outcomes)?;
            report.transfers_sent += chunk.len();
            report.sent_total += chunk.iter().map(|p| p.send.amount).sum::<i64>();
            for p in chunk {
                log::info!(
                    "sent transfer {} for invoice {} ({} cents)",
                    p.send.external_id,
                    p.send.invoice_id,
                    p.send.amount
                );
            }
        }
        Err(ApiError::Rejected { .. }) if chunk.len() > 1 => {
            // Stark Bank refuses a whole batch for one bad item: find it by sending one by one.
            log::warn!(
                "a batch of {} transfers was refused; sending them one by one to isolate the cause",
                chunk.len()
            );
            for p in chunk {
                send_chunk(client, store, opts, std::slice::from_ref(p), now, report)?;
            }
        }
        Err(e @ ApiError::Rejected { .. }) if !chunk[0].resend => {
            let p = &chunk[0];
            let reason = e.to_string();
            store.set_send_outcome(&[(p.send.external_id.clone(), "rejected", Some(reason.clone()))])?;
            store.set_credit_state(&p.send.invoice_id, CreditState::Attention, Some(&reason))?;
            report.attention.push(Attention { invoice_id: p.send.invoice_id.clone(), reason });
        }
        Err(e) => {
            // Unknown: the request may have landed. A refused re-send (a duplicate externalId)
            // is unknown too. The next run looks these up by tag before sending anything.
            let cause = e.to_string();
            log::warn!("{cause}; the next run resolves {} transfers by tag", chunk.len());
            let outcomes: Vec<(String, &str, Option<String>)> =
                chunk.iter().map(|p| (p.send.external_id.clone(), "unknown", Some(cause.clone()))).collect();
            store.set_send_outcome(&outcomes)?;
            report.unknown += chunk.len();
            report.errors.push(cause);
        }
    }
    Ok(())
}

/// Marks credits whose transfer (ours) succeeded; lists those that need attention.
fn settle(store: &mut Store, report: &mut Report) -> anyhow::Result<()> {
    for credit in store.open_credits()? {
        if store.transfers_for(&credit.invoice_id)?.iter().any(TransferRow::is_success) {
            store.set_credit_state(&credit.invoice_id, CreditState::Transferred, None)?;
            report.transferred += 1;
        }
    }
    for c in store.credits_in(CreditState::Attention)? {
        if !report.attention.iter().any(|a| a.invoice_id == c.invoice_id) {
            report.attention.push(Attention { invoice_id: c.invoice_id, reason: c.reason.unwrap_or_default() });
        }
    }
    Ok(())
}

/// PATCH requests in flight at once when marking events delivered: a backlog of thousands
/// would otherwise cost one round trip each, in sequence.
const MARK_WORKERS: usize = 4;

/// Step 9: every event Stark Bank listed as undelivered that concerns us (about an invoice we
/// issued or a transfer we sent), now that its effects are recorded (whether the listener or
/// this run stored it). One that fails is listed again next run. The others are left
/// undelivered: another deployment in the same workspace may still need to find them.
fn mark_delivered(client: &Client, store: &mut Store, opts: &Options, now: DateTime<Utc>, report: &mut Report) {
    let ids = match store.ours_applied_among(&report.pulled, opts.all_credits) {
        Ok(ids) => ids,
        Err(e) => {
            report.errors.push(format!("listing events to mark delivered: {e:#}"));
            return;
        }
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new((Vec::new(), Vec::new()));
    std::thread::scope(|scope| {
        for _ in 0..MARK_WORKERS.min(ids.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { return };
                    let outcome = client.mark_event_delivered(id);
                    if let Ok(mut r) = results.lock() {
                        match outcome {
                            Ok(()) => r.0.push(id.clone()),
                            Err(e) => r.1.push(format!("marking event {id} delivered: {e}")),
                        }
                    }
                }
            });
        }
    });
    let (marked, failed) = results.into_inner().unwrap_or_default();
    for e in &failed {
        log::warn!("{e} (the next run retries)");
    }
    report.errors.extend(failed);
    match store.mark_delivered(&marked, now) {
        Ok(()) => report.marked_delivered += marked.len(),
        Err(e) => report.errors.push(format!("recording {} delivered marks: {e:#}", marked.len())),
    }
}

/// Puts credits that need attention back in play with a fresh attempt budget.
pub fn retry_attention(store: &mut Store) -> anyhow::Result<usize> {
    let mut n = 0;
    for c in store.credits_in(CreditState::Attention)? {
        store.set_credit_state(&c.invoice_id, CreditState::Open, None)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credit() -> Credit {
        Credit {
            invoice_id: "i1".into(),
            event_id: "e1".into(),
            amount: 3669,
            fee: 50,
            net: 3619,
            credited_at: "t".into(),
            recorded_at: "t".into(),
            state: CreditState::Open,
            reason: None,
            next_send_at: None,
            origin: Some(crate::store::Origin::Issued),
        }
    }

    fn send(attempt: u32, outcome: Option<&str>) -> SendRow {
        SendRow {
            external_id: external_id("i1", attempt),
            invoice_id: "i1".into(),
            attempt,
            amount: 3619,
            claimed_at: "t".into(),
            outcome: outcome.map(str::to_string),
            error: None,
            target: None,
        }
    }

    fn transfer(attempt: u32, id: &str, status: &str) -> TransferRow {
        TransferRow {
            id: id.into(),
            external_id: external_id("i1", attempt),
            invoice_id: "i1".into(),
            amount: 3619,
            status: status.into(),
            updated_at: "t".into(),
            ours: true,
            target: None,
        }
    }

    #[test]
    fn net_is_amount_minus_fee_and_positive() {
        assert_eq!(net_amount(3669, 50), Some(3619));
        assert_eq!(net_amount(50, 50), None);
        assert_eq!(net_amount(0, 0), None);
        assert_eq!(net_amount(i64::MIN, 1), None);
    }

    #[test]
    fn transfer_goes_to_the_target_with_our_ids() {
        let t = transfer_for(&Target::default(), "123", 3619, 2);
        assert_eq!(t.amount, 3619);
        assert_eq!((t.bank_code.as_str(), t.branch_code.as_str()), ("20018183", "0001"));
        assert_eq!(t.account_number, "6341320293482496");
        assert_eq!(
            (t.name.as_str(), t.tax_id.as_str(), t.account_type.as_str()),
            ("Stark Bank S.A.", "20.018.183/0001-80", "payment")
        );
        assert_eq!(t.external_id.as_deref(), Some("stark-sweep-123-2"));
        assert!(!t.external_id.as_deref().unwrap_or_default().starts_with("invoice-"));
        assert_eq!(t.tags, vec!["stark-sweep", "invoice-123"]);
    }

    #[test]
    fn decisions() {
        let o = Options::default();
        let now = Utc::now();
        let c = credit();
        assert_eq!(next_action(&c, None, &[], &o, now), Action::NewAttempt(1));
        // Unknown outcome with nothing found: re-send the same externalId (Stark Bank dedups it).
        assert_eq!(
            next_action(&c, Some(&send(1, Some("unknown"))), &[], &o, now),
            Action::Resend(send(1, Some("unknown")))
        );
        // Alive or successful: never send again.
        assert_eq!(next_action(&c, Some(&send(1, None)), &[transfer(1, "t1", "processing")], &o, now), Action::Wait);
        assert_eq!(next_action(&c, Some(&send(1, None)), &[transfer(1, "t1", "success")], &o, now), Action::Done);
        // A late duplicate refusal (failed twin) next to a success is still done.
        assert_eq!(
            next_action(
                &c,
                Some(&send(1, Some("accepted"))),
                &[transfer(1, "t1", "success"), transfer(1, "t2", "failed")],
                &o,
                now
            ),
            Action::Done
        );
        // Really failed: back off first, then a new attempt.
        let failed = [transfer(1, "t1", "failed")];
        let Action::SetBackoff(at) = next_action(&c, Some(&send(1, Some("accepted"))), &failed, &o, now) else {
            panic!()
        };
        let waiting = Credit { next_send_at: Some(ts(at)), ..credit() };
        assert_eq!(next_action(&waiting, Some(&send(1, Some("accepted"))), &failed, &o, now), Action::Wait);
        assert_eq!(next_action(&waiting, Some(&send(1, Some("accepted"))), &failed, &o, at), Action::NewAttempt(2));
        // Out of attempts: attention.
        let last = [transfer(5, "t5", "failed")];
        assert!(matches!(next_action(&waiting, Some(&send(5, Some("accepted"))), &last, &o, at), Action::Attention(_)));
        // Two successes would be a double payment: flagged.
        assert!(matches!(
            next_action(&c, None, &[transfer(1, "a", "success"), transfer(2, "b", "success")], &o, now),
            Action::Attention(_)
        ));
    }

    /// Only a `credited` log is a credit, and its tags decide nothing: whose it is, the store
    /// decides from the invoices this deployment issued (tags are labels, not proof).
    #[test]
    fn only_credited_is_a_credit_and_tags_decide_nothing() {
        let body = |log_type: &str, tags: &str| {
            format!(
                r#"{{"event": {{"id": "e", "subscription": "invoice", "created": "t", "log": {{"id": "l", "type": "{log_type}", "created": "2026-01-01T00:00:00+00:00", "invoice": {{"id": "i9", "amount": 1000, "fee": 25, "status": "paid", "tags": {tags}}}}}}}}}"#
            )
        };
        assert!(effects_of("e", body("paid", r#"["stark-sweep"]"#).as_bytes()).unwrap().credited.is_none());
        let c = effects_of("e", body("credited", r#"["stark-sweep"]"#).as_bytes()).unwrap().credited.unwrap();
        assert_eq!((c.invoice_id.as_str(), c.net()), ("i9", 975));
        let untagged = effects_of("e", body("credited", r#"["other"]"#).as_bytes()).unwrap().credited.unwrap();
        assert_eq!(untagged, c);
    }
}
