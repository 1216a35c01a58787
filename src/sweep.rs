//! The transfer step: every credited invoice becomes exactly one successful transfer of
//! `amount - fee` to the target account.
//!
//! One run, under the `sweep` process lock (so at most one sender is alive per database):
//! 1. know our workspace (pinned, or learned from the API with our credentials);
//! 2. pull undelivered events from Stark Bank and record them like the listener does (those
//!    created since a day before the newest one the last complete pull settled: undelivered
//!    events that are none of ours stay undelivered for good, and are not listed again and
//!    again); fetch the credited logs of invoices we issued that have no credit yet (so a credit
//!    is found even when another deployment in the same workspace took its webhook);
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
use crate::starkbank::answers::Verdict;
use crate::starkbank::event::summarize_event;
use crate::starkbank::resources::{Invoice, ListFilter, MAX_BATCH, NewTransfer, Transfer};
use crate::starkbank::{ApiError, Client};
pub use crate::store::OutflowLimits;
use crate::store::{
    Credit, CreditState, CreditedLog, EventEffects, EventSource, InvoiceState, NewEvent, ReversedLog, SendOutcome,
    SendRow, Store, TransferRow, target_key, ts,
};

mod options;
pub use options::Settings;

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

/// The target account money is swept to, unless configured otherwise.
pub const DEFAULT_TARGET_BANK_CODE: &str = "20018183";
pub const DEFAULT_TARGET_BRANCH: &str = "0001";
pub const DEFAULT_TARGET_ACCOUNT: &str = "6341320293482496";
pub const DEFAULT_TARGET_NAME: &str = "Stark Bank S.A.";
pub const DEFAULT_TARGET_TAX_ID: &str = "20.018.183/0001-80";
pub const DEFAULT_TARGET_ACCOUNT_TYPE: &str = "payment";
/// Sends of a transfer that really failed before its credit needs attention.
pub const DEFAULT_TRANSFER_ATTEMPTS: u32 = 5;
/// Base delay before re-sending a failed transfer, in seconds; doubles each time.
pub const DEFAULT_RETRY_BACKOFF_SECS: u64 = 60;

impl Default for Target {
    fn default() -> Self {
        Self {
            bank_code: DEFAULT_TARGET_BANK_CODE.into(),
            branch_code: DEFAULT_TARGET_BRANCH.into(),
            account_number: DEFAULT_TARGET_ACCOUNT.into(),
            name: DEFAULT_TARGET_NAME.into(),
            tax_id: DEFAULT_TARGET_TAX_ID.into(),
            account_type: DEFAULT_TARGET_ACCOUNT_TYPE.into(),
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
    /// The most that may leave per transfer and per rolling 24 hours.
    pub limits: OutflowLimits,
    /// Show what would be sent instead of sending; the caller gives a store that is a copy.
    pub dry_run: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            target: Target::default(),
            all_credits: false,
            max_attempts: DEFAULT_TRANSFER_ATTEMPTS,
            backoff: chrono::Duration::seconds(DEFAULT_RETRY_BACKOFF_SECS as i64),
            reconcile: true,
            workspace_id: None,
            limits: SANDBOX_LIMITS,
            dry_run: false,
        }
    }
}

/// Outflow limits when none are configured, in the sandbox: generous (play money).
pub const SANDBOX_LIMITS: OutflowLimits = OutflowLimits { max_transfer: 100_000_000, max_24h: 1_000_000_000 };
/// Outflow limits when none are configured, in production: conservative. The default invoice
/// is at most R$ 500,00; a day of the campaign is about R$ 25.000,00 at most.
pub const PRODUCTION_LIMITS: OutflowLimits = OutflowLimits { max_transfer: 100_000, max_24h: 2_500_000 };

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
    /// Sends refused for a reason that passes (sent again after a backoff).
    pub refused: usize,
    pub attention: Vec<Attention>,
    /// Credits waiting out a backoff, with the bank's reason.
    pub retrying: Vec<Attention>,
    /// Credits held back by an outflow limit, with the reason.
    pub held: Vec<Attention>,
    /// The kill switch was engaged: nothing was sent. `reason (since ...)`.
    pub kill_switch: Option<String>,
    /// `--dry-run`: what would be sent (nothing was).
    pub would_send: Vec<WouldSend>,
    pub marked_delivered: usize,
    /// The pull listed undelivered events created from this date on (none: all of them).
    pub events_pulled_after: Option<String>,
    pub errors: Vec<String>,
    /// Ids pulled as undelivered in this run, to mark delivered once applied.
    #[serde(skip)]
    pulled: Vec<String>,
    /// The newest `created` among them.
    #[serde(skip)]
    newest_pulled: Option<DateTime<Utc>>,
}

/// A transfer a dry run would send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WouldSend {
    pub invoice_id: String,
    pub amount: i64,
    pub external_id: String,
    /// The target, `bank/branch/account/taxid`.
    pub target: String,
    /// The same externalId again (its first request's outcome is unknown, or was refused).
    pub resend: bool,
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
        reason: None,
        returned: false,
    })
}

/// Runs the step if no other run holds the lock; `Ok(None)` when one does.
pub fn run_if_free(
    client: &Client,
    store: &mut Store,
    opts: &Options,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Report>> {
    let Some(_lock) = store.try_run_lock("sweep")? else {
        return Ok(None);
    };
    run(client, store, opts, now).map(Some)
}

/// Runs the step, waiting for the lock (for the listener's background `--process`).
pub fn run_waiting(client: &Client, store: &mut Store, opts: &Options, now: DateTime<Utc>) -> anyhow::Result<Report> {
    let _lock = store.run_lock("sweep")?;
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
    settle(store, opts.dry_run, &mut report)?;
    if opts.reconcile && !opts.dry_run && mark_delivered(client, store, opts, now, &mut report) {
        // Everything this pull listed is recorded, applied and (ours) marked: the next pull
        // need not list it again.
        if let Some(newest) = report.newest_pulled
            && let Err(e) = store.advance_event_pull_cursor(newest, now)
        {
            log::warn!("could not record how far the event pull got (the next one lists more): {e:#}");
        }
    }
    Ok(report)
}

/// How far before the newest event the last complete pull settled the next pull starts: events
/// can appear in the list a little after they were created, and Stark Bank's `after` is a date.
pub const EVENT_PULL_OVERLAP: chrono::Duration = chrono::Duration::days(1);

/// `process-events --dry-run`: the whole step on `copy` (an in-memory copy of the store: see
/// `Store::copy_of`), reading from Stark Bank but sending, marking and claiming nothing, without
/// the run lock (it writes nothing to take it for). The report's `would_send` is the plan.
pub fn dry_run(client: &Client, copy: &mut Store, opts: &Options, now: DateTime<Utc>) -> anyhow::Result<Report> {
    let opts = Options { dry_run: true, ..opts.clone() };
    run(client, copy, &opts, now)
}

/// Step 2a: `GET /v2/event?isDelivered=false`, every page, each recorded durably as it arrives
/// (one transaction per page), so a long backlog is never held in memory whole. The API shows
/// a project only its own workspace's events: the first one pins the workspace if nothing is
/// pinned yet, and one of another workspace means the credentials and the database disagree.
/// The pull starts `EVENT_PULL_OVERLAP` before the store's cursor (every undelivered event
/// created before that was listed by an earlier complete pull, recorded and, if ours, marked
/// delivered), so its cost follows what is new, not what was left undelivered over the years.
fn pull_undelivered(
    client: &Client,
    store: &mut Store,
    opts: &Options,
    now: DateTime<Utc>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let after =
        store.event_pull_cursor()?.map(|c| crate::starkbank::time::format_date((c - EVENT_PULL_OVERLAP).date_naive()));
    report.events_pulled_after = after.clone();
    client.for_each_event_page(Some(false), after.as_deref(), |events| -> anyhow::Result<()> {
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
                    if let Some(t) = crate::starkbank::time::parse(&summary.created) {
                        report.newest_pulled = report.newest_pulled.max(Some(t));
                    }
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
            if log_type == "reversed" {
                fx.reversed = Some(ReversedLog { invoice_id: inv.id.clone(), amount: inv.amount });
            }
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
                if log_type == "failed" {
                    row.reason = reason_of(&log);
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
                    event_id = e.id.as_str();
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
                    log::error!(
                        event_id = e.id.as_str();
                        "event {} ({} {}) could not be applied: {err}", e.id, e.subscription, e.log_type
                    );
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
                // Not confirmed: it stays outside our credits (skipped), so no --retry-attention
                // can put an unconfirmed amount in play.
                let reason = format!("--all-credits: Stark Bank says invoice {} is {}, not paid", inv.id, inv.status);
                log::warn!("invoice {}: {reason}; not swept", credit.invoice_id);
                store.set_credit_state(&credit.invoice_id, CreditState::Skipped, Some(&reason))?;
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

/// Step 5: ask Stark Bank about our transfers still created/processing; fetch the bank's reason
/// for every transfer of ours that failed without one.
fn refresh_in_flight(client: &Client, store: &mut Store, now: DateTime<Utc>, report: &mut Report) {
    let result = (|| -> anyhow::Result<()> {
        let alive: Vec<String> = store.alive_transfers()?.into_iter().map(|t| t.id).collect();
        for chunk in alive.chunks(MAX_BATCH) {
            let found = client.query_transfers(&ListFilter::ids(chunk.iter().cloned()))?;
            let rows: Vec<TransferRow> = found.iter().filter_map(|t| transfer_row(t, now)).collect();
            store.upsert_transfers(&rows)?;
        }
        let unexplained = store.failed_without_reason()?;
        for chunk in unexplained.chunks(MAX_BATCH) {
            let logs = client.transfer_logs(chunk, &["failed"])?;
            let mut rows = Vec::new();
            for log in &logs {
                let Some(mut row) = log
                    .get("transfer")
                    .and_then(|t| serde_json::from_value::<Transfer>(t.clone()).ok())
                    .and_then(|t| transfer_row(&t, now))
                else {
                    continue;
                };
                row.status = "failed".into();
                row.reason = Some(reason_of(log).unwrap_or_else(|| "Stark Bank gave no reason".into()));
                rows.push(row);
            }
            store.upsert_transfers(&rows)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        log::warn!("could not refresh in-flight transfers (the next run retries): {e:#}");
        report.errors.push(format!("refreshing transfers: {e:#}"));
    }
}

/// The bank's reason in a log (`errors`, joined), sanitized. Also what `trace` shows.
pub(crate) fn reason_of(log: &Value) -> Option<String> {
    let errors: Vec<String> = log
        .get("errors")?
        .as_array()?
        .iter()
        .map(|e| match e {
            Value::String(s) => s.clone(),
            other => other.get("message").and_then(Value::as_str).map_or_else(|| other.to_string(), str::to_string),
        })
        .collect();
    (!errors.is_empty()).then(|| crate::starkbank::redact::tax_ids(&errors.join("; ")))
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
    /// True when this externalId was sent before (a re-send of the same externalId).
    resend: bool,
}

/// Requests with one externalId whose outcome stayed unknown (no trace of it found) before the
/// credit needs a human: a loop of re-sends ends.
pub const MAX_UNKNOWN_TRIES: u32 = 10;
/// The longest wait between two tries of one credit.
pub const MAX_BACKOFF: chrono::Duration = chrono::Duration::hours(1);

/// `base * 2^(n-1)`, at most `MAX_BACKOFF`.
fn backoff(base: chrono::Duration, n: u32) -> chrono::Duration {
    (base * 2i32.pow(n.saturating_sub(1).min(16))).min(MAX_BACKOFF)
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
    for credit in store.credits_in_play()? {
        let mut transfers = store.transfers_for(&credit.invoice_id)?;
        let last = store.last_send(&credit.invoice_id)?;
        // Step 6: an unknown outcome is resolved before anything else.
        if let Some(l) = &last
            && matches!(l.outcome, None | Some(SendOutcome::Unknown) | Some(SendOutcome::Accepted))
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
                store.set_send_outcome(&[(l.external_id.clone(), SendOutcome::Accepted, None)])?;
            }
        }
        // A transfer under the externalId we sent, with another amount or target than we sent.
        let taken = match &last {
            Some(l) if !transfers.iter().any(|t| t.external_id == l.external_id) => {
                store.external_id_taken(&l.external_id)?
            }
            _ => false,
        };
        if taken && let Some(l) = &last {
            log::warn!(
                invoice_id = credit.invoice_id.as_str(), external_id = l.external_id.as_str();
                "invoice {}: externalId {} is carried by a transfer that does not match what this deployment sent; nothing more is sent for it",
                credit.invoice_id,
                l.external_id
            );
        }
        match next_action(&credit, last.as_ref(), &transfers, taken, opts, now) {
            Action::Done => {}
            Action::Wait => report.waiting += 1,
            Action::SetBackoff(at) => {
                store.set_next_send_at(&credit.invoice_id, Some(at))?;
                let why = waiting_reason(last.as_ref(), &transfers, at);
                store.set_waiting_reason(&credit.invoice_id, Some(&why))?;
                if !opts.dry_run {
                    log::info!(
                        invoice_id = credit.invoice_id.as_str(), external_id = last.as_ref().map(|l| l.external_id.as_str());
                        "invoice {}: {why}", credit.invoice_id
                    );
                }
                report.retrying.push(Attention { invoice_id: credit.invoice_id.clone(), reason: why });
                report.failed += 1;
                report.waiting += 1;
            }
            Action::Attention(reason) => {
                store.set_credit_state(&credit.invoice_id, CreditState::Attention, Some(&reason))?;
                if !opts.dry_run {
                    log::warn!(
                        invoice_id = credit.invoice_id.as_str(), external_id = last.as_ref().map(|l| l.external_id.as_str());
                        "invoice {}: needs attention: {reason}", credit.invoice_id
                    );
                }
                report.attention.push(Attention { invoice_id: credit.invoice_id.clone(), reason });
            }
            Action::Resend(send) => plan.push(Planned { send, resend: true }),
            Action::NewAttempt { attempt, forgive } => {
                // Before a new externalId: prove nothing of ours from earlier attempts is alive.
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
                if forgive {
                    store.forgive_attempt(&credit.invoice_id, attempt - 1)?;
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
                        tries: 1,
                    },
                    resend: false,
                });
            }
        }
    }
    Ok(plan)
}

/// What an open credit waits for, in words: the bank's last reason and when it is tried again.
fn waiting_reason(last: Option<&SendRow>, transfers: &[TransferRow], at: DateTime<Utc>) -> String {
    let failed =
        last.and_then(|l| transfers.iter().rev().find(|t| t.external_id == l.external_id && t.reason.is_some()));
    let why = match (last, failed) {
        (_, Some(t)) => format!("transfer {} failed: {}", t.id, t.reason.as_deref().unwrap_or_default()),
        (Some(l), None) => l.error.clone().unwrap_or_else(|| "Stark Bank gave no reason".into()),
        (None, None) => "waiting".into(),
    };
    format!("retrying after {}: {why}", crate::starkbank::time::format_secs(at))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// A transfer of ours succeeded (the caller settles the credit).
    Done,
    Wait,
    SetBackoff(DateTime<Utc>),
    Attention(String),
    /// The same externalId again: nothing exists under it (or Stark Bank refuses a duplicate).
    Resend(SendRow),
    /// A new externalId. `forgive`: the previous attempt failed for a reason that passes and
    /// does not count against the budget.
    NewAttempt {
        attempt: u32,
        forgive: bool,
    },
}

/// Waits out `next_send_at` (set to now + `wait` first, when it is not set yet), then `then`.
fn after_backoff(credit: &Credit, wait: chrono::Duration, now: DateTime<Utc>, then: Action) -> Action {
    match credit.next_send_at.as_deref().and_then(crate::starkbank::time::parse) {
        None => Action::SetBackoff(now + wait),
        Some(at) if now < at => Action::Wait,
        Some(_) => then,
    }
}

/// The decision for one open credit, from what is known (pure, unit-tested).
fn next_action(
    credit: &Credit,
    last: Option<&SendRow>,
    transfers: &[TransferRow],
    taken: bool,
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
    let Some(last) = last else { return Action::NewAttempt { attempt: 1, forgive: false } };
    let mine: Vec<&TransferRow> = transfers.iter().filter(|t| t.external_id == last.external_id).collect();
    let same_target = last.target.as_ref().is_none_or(|t| *t == opts.target.key());
    let counted = last.attempt.saturating_sub(credit.budget_from);
    match last.outcome {
        // Refused because the request itself is wrong. After --retry-attention (the attempt no
        // longer counts) a new externalId goes out; otherwise a human must look.
        Some(SendOutcome::Rejected) if counted > 0 => Action::Attention(format!(
            "Stark Bank refused the transfer: {}; fix the cause, then process-events --retry-attention",
            last.error.as_deref().unwrap_or("no details")
        )),
        Some(SendOutcome::Rejected) => Action::NewAttempt { attempt: last.attempt + 1, forgive: false },
        // Refused for a reason that passes: nothing was created. The same externalId again, to
        // the target it was claimed for; if the configured target changed meanwhile, a new
        // attempt to the new one (not counted: nothing exists under the old externalId).
        Some(SendOutcome::Refused) if !same_target => Action::NewAttempt { attempt: last.attempt + 1, forgive: true },
        Some(SendOutcome::Refused) => {
            after_backoff(credit, backoff(opts.backoff, last.tries), now, Action::Resend(last.clone()))
        }
        // A transfer carries this credit's externalId but not the amount or target we sent: it
        // sweeps this invoice from somewhere (another deployment on the workspace, a hand-made
        // transfer, our own send before a target change). Another attempt could pay twice.
        // After --retry-attention (the operator checked it) a new externalId goes out.
        _ if mine.is_empty() && taken && counted > 0 => Action::Attention(format!(
            "a transfer carries this credit's externalId {} but not the amount or target this deployment sent: this invoice may already be swept from elsewhere; nothing more is sent for it; check the workspace's transfers, then process-events --retry-attention to send it under a new externalId",
            last.external_id
        )),
        _ if mine.is_empty() && taken => Action::NewAttempt { attempt: last.attempt + 1, forgive: false },
        // The outcome is unknown and the configured target is not the one this send was
        // claimed for: sending it again would go to another account than the one recorded.
        _ if mine.is_empty() && !same_target => Action::Attention(format!(
            "the target changed while transfer {} had an unknown outcome (claimed for {}, configured now {}); restore the previous target until it is resolved",
            last.external_id,
            last.target.as_deref().unwrap_or("?"),
            opts.target.key()
        )),
        // Nothing exists under this externalId (lookups already ran): sending it again is safe,
        // Stark Bank refuses a duplicate externalId. A loop of that ends.
        _ if mine.is_empty() && last.tries >= MAX_UNKNOWN_TRIES => Action::Attention(format!(
            "the outcome of transfer {} stayed unknown after {} tries and Stark Bank shows no transfer with it (last: {}); check with Stark Bank, then process-events --retry-attention",
            last.external_id,
            last.tries,
            last.error.as_deref().unwrap_or("no details")
        )),
        _ if mine.is_empty() => Action::Resend(last.clone()),
        _ => {
            // Every transfer of the last attempt is final and none succeeded: it failed.
            let failed = mine.iter().find(|t| t.reason.is_some()).or(mine.first()).copied();
            let reason = failed.and_then(|t| t.reason.clone());
            match crate::starkbank::answers::failed_transfer(reason.as_deref()) {
                // An insufficient balance passes: a new attempt after a backoff, not counted.
                // It doubles with every attempt (forgiven ones too: they do not count against
                // the budget, but a balance that stays empty must not be asked every minute).
                Verdict::Transient => after_backoff(
                    credit,
                    backoff(opts.backoff, last.attempt.max(1)),
                    now,
                    Action::NewAttempt { attempt: last.attempt + 1, forgive: true },
                ),
                // A fresh budget (--retry-attention): the operator fixed the cause; send now.
                _ if counted == 0 => Action::NewAttempt { attempt: last.attempt + 1, forgive: false },
                _ if counted >= opts.max_attempts => Action::Attention(format!(
                    "the transfer failed {counted} times (last: {} {}: {}); fix the cause, then process-events --retry-attention",
                    failed.map(|t| t.id.as_str()).unwrap_or_default(),
                    failed.map(|t| t.status.as_str()).unwrap_or_default(),
                    reason.as_deref().unwrap_or("Stark Bank gave no reason")
                )),
                _ => after_backoff(
                    credit,
                    backoff(opts.backoff, counted.max(1)),
                    now,
                    Action::NewAttempt { attempt: last.attempt + 1, forgive: false },
                ),
            }
        }
    }
}

/// Step 8: claim, then send in batches.
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
    if let Some((reason, since)) = store.kill_switch()? {
        report.kill_switch = Some(format!("{reason} (since {since})"));
        return Ok(());
    }
    // The pin says which workspace the database belongs to, not which one these credentials
    // act on now: proven once per run, before anything is claimed or sent.
    crate::workspace::verify_before_sending(client, store, opts.workspace_id.as_deref(), now)?;
    let new: Vec<SendRow> = plan.iter().filter(|p| !p.resend).map(|p| p.send.clone()).collect();
    let again: Vec<SendRow> = plan.iter().filter(|p| p.resend).map(|p| p.send.clone()).collect();
    let claimed = store.claim_sends_within(&new, &again, &opts.limits, now)?;
    if let Some((reason, since)) = claimed.stopped {
        report.kill_switch = Some(format!("{reason} (since {since})"));
        return Ok(());
    }
    for (invoice_id, reason) in claimed.held {
        log::warn!(invoice_id = invoice_id.as_str(); "invoice {invoice_id}: {reason}");
        report.held.push(Attention { invoice_id, reason });
    }
    let plan: Vec<Planned> =
        plan.into_iter().filter(|p| claimed.claimed.iter().any(|c| c.external_id == p.send.external_id)).collect();
    if opts.dry_run {
        report.would_send.extend(plan.iter().map(|p| WouldSend {
            invoice_id: p.send.invoice_id.clone(),
            amount: p.send.amount,
            external_id: p.send.external_id.clone(),
            target: opts.target.key(),
            resend: p.resend,
        }));
        return Ok(());
    }
    let again: Vec<String> = plan.iter().filter(|p| p.resend).map(|p| p.send.external_id.clone()).collect();
    store.count_resends(&again)?;
    for p in &plan {
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
    // The kill switch again before every request: engaged during a long run, it stops the
    // requests not yet made (their claims stay, resolved by lookup like any unsent claim).
    if let Some((reason, since)) = store.kill_switch()? {
        report.kill_switch = Some(format!("{reason} (since {since})"));
        return Ok(());
    }
    let body: Vec<NewTransfer> =
        chunk.iter().map(|p| transfer_for(&opts.target, &p.send.invoice_id, p.send.amount, p.send.attempt)).collect();
    report.transfer_requests += 1;
    let outcome_all = |store: &mut Store, outcome: SendOutcome, why: &str| {
        let outcomes: Vec<(String, SendOutcome, Option<String>)> =
            chunk.iter().map(|p| (p.send.external_id.clone(), outcome, Some(why.to_string()))).collect();
        store.set_send_outcome(&outcomes)
    };
    let refused = match client.create_transfers(&body) {
        Ok(created) => {
            let rows: Vec<TransferRow> = created.iter().filter_map(|t| transfer_row(t, now)).collect();
            store.upsert_transfers(&rows)?;
            let outcomes: Vec<(String, SendOutcome, Option<String>)> =
                chunk.iter().map(|p| (p.send.external_id.clone(), SendOutcome::Accepted, None)).collect();
            store.set_send_outcome(&outcomes)?;
            report.transfers_sent += chunk.len();
            report.sent_total += chunk.iter().map(|p| p.send.amount).sum::<i64>();
            for p in chunk {
                log::info!(
                    invoice_id = p.send.invoice_id.as_str(), external_id = p.send.external_id.as_str(),
                    attempt = p.send.attempt, amount_cents = p.send.amount;
                    "sent transfer {} for invoice {} ({} cents)",
                    p.send.external_id,
                    p.send.invoice_id,
                    p.send.amount
                );
            }
            return Ok(());
        }
        Err(e @ ApiError::Rejected { .. }) => e,
        Err(e) => {
            // Unknown: the request may have landed. The next run looks these up by tag before
            // sending anything.
            let cause = e.to_string();
            warn_each(chunk, &format!("is of unknown outcome ({cause}); the next run resolves it by tag"));
            outcome_all(store, SendOutcome::Unknown, &cause)?;
            report.unknown += chunk.len();
            report.errors.push(cause);
            return Ok(());
        }
    };
    let why = refused.to_string();
    match crate::starkbank::answers::transfer_refusal(&refused) {
        // Nothing was created, and the same request may pass later: no split, no human.
        Verdict::Transient => {
            warn_each(chunk, &format!("was refused ({why}); it is sent again after a backoff"));
            outcome_all(store, SendOutcome::Refused, &why)?;
            report.refused += chunk.len();
            report.errors.push(why);
        }
        // An earlier request with these externalIds landed: resolved by lookup next run.
        Verdict::Duplicate => {
            warn_each(chunk, &format!("was refused as a duplicate ({why}); the next run looks it up by tag"));
            outcome_all(store, SendOutcome::Unknown, &why)?;
            report.unknown += chunk.len();
        }
        // Stark Bank refuses a whole batch for one bad item: find it by halves.
        Verdict::Permanent if chunk.len() > 1 => {
            log::warn!(
                "a batch of {} transfers was refused ({why}); sending it in halves to find the cause",
                chunk.len()
            );
            let (left, right) = chunk.split_at(chunk.len() / 2);
            send_chunk(client, store, opts, left, now, report)?;
            send_chunk(client, store, opts, right, now, report)?;
        }
        Verdict::Permanent => {
            let p = &chunk[0];
            // A re-send of an unknown outcome refused for good says nothing about the first
            // request, which may still land: it stays unknown, so the way out (--retry-attention)
            // sends the same externalId again, never a new one.
            let outcome = if p.resend && p.send.outcome == Some(SendOutcome::Unknown) {
                SendOutcome::Unknown
            } else {
                SendOutcome::Rejected
            };
            store.set_send_outcome(&[(p.send.external_id.clone(), outcome, Some(why.clone()))])?;
            let reason =
                format!("Stark Bank refused the transfer: {why}; fix the cause, then process-events --retry-attention");
            log::warn!(
                invoice_id = p.send.invoice_id.as_str(), external_id = p.send.external_id.as_str();
                "invoice {}: needs attention: {reason}", p.send.invoice_id
            );
            store.set_credit_state(&p.send.invoice_id, CreditState::Attention, Some(&reason))?;
            report.attention.push(Attention { invoice_id: p.send.invoice_id.clone(), reason });
        }
    }
    Ok(())
}

/// One warning per send of a chunk, with its invoice and externalId as fields.
fn warn_each(chunk: &[Planned], what: &str) {
    for p in chunk {
        log::warn!(
            invoice_id = p.send.invoice_id.as_str(), external_id = p.send.external_id.as_str();
            "invoice {}: transfer {} {what}",
            p.send.invoice_id, p.send.external_id
        );
    }
}

/// Marks credits whose transfer (ours) succeeded; lists those that need attention.
fn settle(store: &mut Store, dry_run: bool, report: &mut Report) -> anyhow::Result<()> {
    for credit in store.open_credits()? {
        if let Some(t) = store.transfers_for(&credit.invoice_id)?.iter().find(|t| t.is_success()) {
            store.set_credit_state(&credit.invoice_id, CreditState::Transferred, None)?;
            if !dry_run {
                log::info!(
                invoice_id = credit.invoice_id.as_str(), external_id = t.external_id.as_str(), transfer_id = t.id.as_str();
                    "invoice {}: swept by transfer {} ({} cents)", credit.invoice_id, t.id, t.amount
                );
            }
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
/// undelivered: another deployment in the same workspace may still need to find them. Returns
/// whether every one was marked and recorded.
fn mark_delivered(client: &Client, store: &mut Store, opts: &Options, now: DateTime<Utc>, report: &mut Report) -> bool {
    let ids = match store.ours_applied_among(&report.pulled, opts.all_credits) {
        Ok(ids) => ids,
        Err(e) => {
            report.errors.push(format!("listing events to mark delivered: {e:#}"));
            return false;
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
    let all_marked = failed.is_empty();
    report.errors.extend(failed);
    match store.mark_delivered(&marked, now) {
        Ok(()) => {
            report.marked_delivered += marked.len();
            all_marked
        }
        Err(e) => {
            report.errors.push(format!("recording {} delivered marks: {e:#}", marked.len()));
            false
        }
    }
}

/// Puts credits that need attention back in play with a fresh attempt budget; the same run
/// then sends them.
pub fn retry_attention(store: &mut Store) -> anyhow::Result<usize> {
    store.retry_attention()
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
            budget_from: 0,
        }
    }

    fn send(attempt: u32, outcome: Option<SendOutcome>) -> SendRow {
        SendRow {
            external_id: external_id("i1", attempt),
            invoice_id: "i1".into(),
            attempt,
            amount: 3619,
            claimed_at: "t".into(),
            outcome,
            error: None,
            target: None,
            tries: 1,
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
            reason: None,
            returned: false,
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
        use SendOutcome::{Accepted, Unknown};
        let o = Options::default();
        let now = Utc::now();
        let c = credit();
        assert_eq!(next_action(&c, None, &[], false, &o, now), Action::NewAttempt { attempt: 1, forgive: false });
        // Unknown outcome with nothing found: re-send the same externalId (Stark Bank dedups it).
        assert_eq!(
            next_action(&c, Some(&send(1, Some(Unknown))), &[], false, &o, now),
            Action::Resend(send(1, Some(Unknown)))
        );
        // Alive or successful: never send again.
        assert_eq!(
            next_action(&c, Some(&send(1, None)), &[transfer(1, "t1", "processing")], false, &o, now),
            Action::Wait
        );
        assert_eq!(
            next_action(&c, Some(&send(1, None)), &[transfer(1, "t1", "success")], false, &o, now),
            Action::Done
        );
        // A late duplicate refusal (failed twin) next to a success is still done.
        assert_eq!(
            next_action(
                &c,
                Some(&send(1, Some(Accepted))),
                &[transfer(1, "t1", "success"), transfer(1, "t2", "failed")],
                false,
                &o,
                now
            ),
            Action::Done
        );
        // Really failed: back off first, then a new attempt.
        let failed = [transfer(1, "t1", "failed")];
        let Action::SetBackoff(at) = next_action(&c, Some(&send(1, Some(Accepted))), &failed, false, &o, now) else {
            panic!()
        };
        let waiting = Credit { next_send_at: Some(ts(at)), ..credit() };
        assert_eq!(next_action(&waiting, Some(&send(1, Some(Accepted))), &failed, false, &o, now), Action::Wait);
        assert_eq!(
            next_action(&waiting, Some(&send(1, Some(Accepted))), &failed, false, &o, at),
            Action::NewAttempt { attempt: 2, forgive: false }
        );
        // Out of attempts: attention.
        let last = [transfer(5, "t5", "failed")];
        assert!(matches!(
            next_action(&waiting, Some(&send(5, Some(Accepted))), &last, false, &o, at),
            Action::Attention(_)
        ));
        // Two successes would be a double payment: flagged.
        assert!(matches!(
            next_action(&c, None, &[transfer(1, "a", "success"), transfer(2, "b", "success")], false, &o, now),
            Action::Attention(_)
        ));
    }

    /// Every retry loop ends, and --retry-attention is a way out.
    #[test]
    fn loops_end_and_a_fresh_budget_sends_again() {
        let o = Options::default();
        let now = Utc::now();
        // A permanent refusal needs a human; after --retry-attention (budget_from = its attempt)
        // a new externalId goes out at once.
        let rejected = SendRow { error: Some("invalidAccountNumber".into()), ..send(1, Some(SendOutcome::Rejected)) };
        assert!(matches!(next_action(&credit(), Some(&rejected), &[], false, &o, now), Action::Attention(_)));
        let fresh = Credit { budget_from: 1, ..credit() };
        assert_eq!(
            next_action(&fresh, Some(&rejected), &[], false, &o, now),
            Action::NewAttempt { attempt: 2, forgive: false }
        );
        // A failure budget spent is fresh again after --retry-attention.
        let spent = [transfer(5, "t5", "failed")];
        let waiting = Credit { next_send_at: Some(ts(now)), budget_from: 5, ..credit() };
        assert_eq!(
            next_action(&waiting, Some(&send(5, Some(SendOutcome::Accepted))), &spent, false, &o, now),
            Action::NewAttempt { attempt: 6, forgive: false }
        );
        // A refusal that passes: the same externalId again after a backoff, never a human.
        let refused = send(1, Some(SendOutcome::Refused));
        let Action::SetBackoff(at) = next_action(&credit(), Some(&refused), &[], false, &o, now) else { panic!() };
        let later = Credit { next_send_at: Some(ts(at)), ..credit() };
        assert_eq!(next_action(&later, Some(&refused), &[], false, &o, at), Action::Resend(refused.clone()));
        // Unknown for ever: ends in attention.
        let stuck = SendRow { tries: MAX_UNKNOWN_TRIES, ..send(1, Some(SendOutcome::Unknown)) };
        assert!(matches!(next_action(&credit(), Some(&stuck), &[], false, &o, now), Action::Attention(_)));
        // An insufficient balance is not counted against the budget.
        let short = TransferRow { reason: Some("Insufficient balance".into()), ..transfer(5, "t5", "failed") };
        let waiting = Credit { next_send_at: Some(ts(now)), ..credit() };
        assert_eq!(
            next_action(&waiting, Some(&send(5, Some(SendOutcome::Accepted))), &[short], false, &o, now),
            Action::NewAttempt { attempt: 6, forgive: true }
        );
    }

    /// Regression: every idle run read the whole credits and transfers tables (0.56 s and
    /// growing at 100,000 settled credits, for a per-minute timer with nothing to do). Its work,
    /// counted in SQLite steps (not time), must not grow with the history.
    #[test]
    fn an_idle_run_costs_the_same_whatever_the_history() {
        use crate::sandbox::{Sandbox, SandboxConfig};
        use crate::store::testing::{add_settled_history, count_vm_steps, temp_sqlite_store as temp_store};
        let sandbox = Sandbox::start(SandboxConfig { pay_rate: 0.0, seed: 5, ..SandboxConfig::default() }).unwrap();
        let key = crate::starkbank::keys::parse_private_key(&sandbox.private_key_pem().unwrap()).unwrap();
        let client =
            Client::new(crate::starkbank::ClientConfig::new(sandbox.url(), sandbox.project_id(), key)).unwrap();
        let ws = sandbox.workspace_id();
        let (_d, mut store) = temp_store();
        let now = Utc::now();
        crate::workspace::pin(&mut store, &ws, "test", None, now).unwrap();
        let opts = Options { all_credits: true, ..Options::default() };
        let idle_steps = |store: &mut Store| {
            let steps = count_vm_steps(store);
            let report = run(&client, store, &opts, now).unwrap();
            assert_eq!((report.transfers_sent, report.events_applied, report.errors.len()), (0, 0, 0), "{report:?}");
            steps.load(std::sync::atomic::Ordering::Relaxed)
        };
        add_settled_history(&mut store, &ws, 0, 100);
        let small = idle_steps(&mut store);
        add_settled_history(&mut store, &ws, 100, 5_000);
        let large = idle_steps(&mut store);
        assert!(large <= small + small / 10, "an idle run took {small} SQLite steps on 100 credits, {large} on 5,100");
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
