//! Credits, sends and transfers: the tables of the transfer step (`crate::sweep`, run by
//! process-events and serve-webhook).
//!
//! `credits` holds one row per credited invoice of our workspace (what must be transferred, or
//! why not), `sends` one row per transfer we asked for (claimed before the request), `transfers`
//! what Stark Bank says exists. Ownership is decided here, from our own records: a credit is ours
//! when this deployment issued its invoice (`invoice_drafts`); a transfer is ours when its
//! externalId, amount and target are those of one of our sends.

use super::db::{Db, OptionalExtension as _, Row, params};
use chrono::{DateTime, Utc};

use super::{Store, ts};

/// An event not yet applied.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub id: String,
    pub subscription: String,
    pub log_type: String,
    pub workspace_id: Option<String>,
    pub source: super::EventSource,
    pub body: Vec<u8>,
}

/// Latest known state of an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceState {
    pub id: String,
    pub status: String,
    pub amount: i64,
    pub nominal_amount: i64,
    pub fee: i64,
    pub log_at: String,
}

/// Where a credit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CreditState {
    /// A credited invoice of our workspace that this deployment did not issue: never swept
    /// (unless `--all-credits` confirms it with our own credentials).
    Unclaimed,
    /// Ours, to be transferred.
    Open,
    /// Ours, but sending it would cross an outflow limit: it waits (the reason says which).
    Held,
    Transferred,
    /// Nothing to transfer (net <= 0), or not ours after all.
    Skipped,
    /// A human must look (the reason says why).
    Attention,
}

impl CreditState {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditState::Unclaimed => "unclaimed",
            CreditState::Open => "open",
            CreditState::Held => "held",
            CreditState::Transferred => "transferred",
            CreditState::Skipped => "skipped",
            CreditState::Attention => "attention",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "unclaimed" => CreditState::Unclaimed,
            "open" => CreditState::Open,
            "held" => CreditState::Held,
            "transferred" => CreditState::Transferred,
            "skipped" => CreditState::Skipped,
            "attention" => CreditState::Attention,
            other => return Err(bad_text("credits.state", other)),
        })
    }
}

/// Why a credit is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// This deployment issued the invoice.
    Issued,
    /// `--all-credits`: an invoice of our workspace, confirmed by fetching it with our credentials.
    Workspace,
    /// Recorded before ownership was checked (schema version 1), already settled.
    Legacy,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Issued => "issued",
            Origin::Workspace => "workspace",
            Origin::Legacy => "legacy",
        }
    }

    fn parse(s: Option<String>) -> anyhow::Result<Option<Self>> {
        Ok(match s.as_deref() {
            None => None,
            Some("issued") => Some(Origin::Issued),
            Some("workspace") => Some(Origin::Workspace),
            Some("legacy") => Some(Origin::Legacy),
            Some(other) => return Err(bad_text("credits.origin", other)),
        })
    }
}

fn bad_text(column: &str, value: &str) -> anyhow::Error {
    anyhow::anyhow!("{column} holds {value:?}, which this stark-sweep does not know; to fix: upgrade stark-sweep")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    pub invoice_id: String,
    pub event_id: String,
    pub amount: i64,
    pub fee: i64,
    pub net: i64,
    pub credited_at: String,
    pub recorded_at: String,
    pub state: CreditState,
    pub reason: Option<String>,
    pub next_send_at: Option<String>,
    pub origin: Option<Origin>,
    /// Attempts up to this number do not count against the attempt budget.
    pub budget_from: u32,
}

/// A `credited` log of an invoice of our workspace, before ownership is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditedLog {
    pub invoice_id: String,
    /// The event id, or `log:<id>` for a log fetched from the API.
    pub event_id: String,
    pub amount: i64,
    pub fee: i64,
    pub credited_at: String,
}

impl CreditedLog {
    pub fn net(&self) -> i64 {
        self.amount.saturating_sub(self.fee)
    }
}

/// What became of one request with one externalId.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SendOutcome {
    /// Stark Bank answered with the transfer.
    Accepted,
    /// No answer, a 5xx, or a refusal that means an earlier request landed: resolved by lookup.
    Unknown,
    /// Refused because the request itself is wrong: nothing was created; needs a human.
    Rejected,
    /// Refused for a reason that passes (rate limit, authentication or clock, balance): nothing
    /// was created; the same externalId is sent again after a backoff.
    Refused,
}

impl SendOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SendOutcome::Accepted => "accepted",
            SendOutcome::Unknown => "unknown",
            SendOutcome::Rejected => "rejected",
            SendOutcome::Refused => "refused",
        }
    }

    fn parse(s: Option<String>) -> anyhow::Result<Option<Self>> {
        Ok(match s.as_deref() {
            None => None,
            Some("accepted") => Some(SendOutcome::Accepted),
            Some("unknown") => Some(SendOutcome::Unknown),
            Some("rejected") => Some(SendOutcome::Rejected),
            Some("refused") => Some(SendOutcome::Refused),
            Some(other) => return Err(bad_text("sends.outcome", other)),
        })
    }
}

/// One transfer we asked for (a row of `sends`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRow {
    pub external_id: String,
    pub invoice_id: String,
    pub attempt: u32,
    pub amount: i64,
    pub claimed_at: String,
    /// `None` while the request's fate is not recorded (in flight, or the process died).
    pub outcome: Option<SendOutcome>,
    /// The bank's reason (sanitized), or what went wrong.
    pub error: Option<String>,
    /// Where it was sent (`target_key`); `None` for sends recorded before schema version 2.
    pub target: Option<String>,
    /// Requests made with this externalId.
    pub tries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRow {
    pub id: String,
    pub external_id: String,
    pub invoice_id: String,
    pub amount: i64,
    pub status: String,
    pub updated_at: String,
    /// Its externalId, amount and target are those of one of our sends.
    pub ours: bool,
    pub target: Option<String>,
    /// The bank's reason for a failure (the failed log's errors, sanitized).
    pub reason: Option<String>,
    /// It failed after it had succeeded (a return).
    pub returned: bool,
}

impl TransferRow {
    /// Created or processing: money may still move.
    pub fn is_alive(&self) -> bool {
        matches!(self.status.as_str(), "created" | "processing")
    }

    pub fn is_success(&self) -> bool {
        self.status == "success"
    }
}

/// The most that may leave: per transfer, and per rolling 24 hours, in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutflowLimits {
    pub max_transfer: i64,
    pub max_24h: i64,
}

/// What one claim transaction did.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub claimed: Vec<SendRow>,
    /// Credits held back by a limit, with the reason.
    pub held: Vec<(String, String)>,
    /// The kill switch was engaged (reason, since): nothing was claimed.
    pub stopped: Option<(String, String)>,
}

fn kill_switch(conn: &Db) -> anyhow::Result<Option<(String, String)>> {
    conn.query_row("SELECT reason, set_at FROM controls WHERE key = 'kill_switch'", params![], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
}

/// Sends claimed since `since` that moved, or may move, money: all but those refused for good
/// and those whose transfers all failed or were canceled (a send refused for a passing reason
/// counts: it is sent again later without a new claim).
fn outflow_since(conn: &Db, since: DateTime<Utc>) -> anyhow::Result<i64> {
    conn.query_row(
        "SELECT COALESCE(SUM(s.amount), 0) FROM sends s
         WHERE s.claimed_at > ?1 AND COALESCE(s.outcome, '') <> 'rejected'
           AND NOT (EXISTS (SELECT 1 FROM transfers t WHERE t.external_id = s.external_id AND t.ours = 1)
                    AND NOT EXISTS (SELECT 1 FROM transfers t WHERE t.external_id = s.external_id AND t.ours = 1
                                    AND t.status NOT IN ('failed', 'canceled')))",
        params![ts(since)],
        |r| r.get(0),
    )
}

/// `bank/branch/account/taxid`, the tax id as digits only: how a send's target and a
/// transfer's are compared.
pub fn target_key(bank_code: &str, branch_code: &str, account_number: &str, tax_id: &str) -> String {
    let digits: String = tax_id.chars().filter(char::is_ascii_digit).collect();
    format!("{}/{}/{}/{digits}", bank_code.trim(), branch_code.trim(), account_number.trim())
}

/// An `InvoiceState` from `id, status, amount, nominal_amount, fee, last_log_at`.
pub(super) fn invoice_from_row(r: &Row) -> anyhow::Result<InvoiceState> {
    Ok(InvoiceState {
        id: r.get(0)?,
        status: r.get(1)?,
        amount: r.get(2)?,
        nominal_amount: r.get(3)?,
        fee: r.get(4)?,
        log_at: r.get(5)?,
    })
}

pub(super) fn credit_from_row(r: &Row) -> anyhow::Result<Credit> {
    Ok(Credit {
        invoice_id: r.get(0)?,
        event_id: r.get(1)?,
        amount: r.get(2)?,
        fee: r.get(3)?,
        net: r.get(4)?,
        credited_at: r.get(5)?,
        recorded_at: r.get(6)?,
        state: CreditState::parse(&r.get::<String>(7)?)?,
        reason: r.get(8)?,
        next_send_at: r.get(9)?,
        origin: Origin::parse(r.get(10)?)?,
        budget_from: r.get(11)?,
    })
}

const CREDIT_COLUMNS: &str = "invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, reason, next_send_at, origin, budget_from";
/// `CREDIT_COLUMNS` of `credits c`.
pub(super) const CREDIT_COLUMNS_OF_C: &str = "c.invoice_id, c.event_id, c.amount, c.fee, c.net, c.credited_at, c.recorded_at, c.state, c.reason, c.next_send_at, c.origin, c.budget_from";

fn send_from_row(r: &Row) -> anyhow::Result<SendRow> {
    Ok(SendRow {
        external_id: r.get(0)?,
        invoice_id: r.get(1)?,
        attempt: r.get(2)?,
        amount: r.get(3)?,
        claimed_at: r.get(4)?,
        outcome: SendOutcome::parse(r.get(5)?)?,
        error: r.get(6)?,
        target: r.get(7)?,
        tries: r.get(8)?,
    })
}

const SEND_COLUMNS: &str = "external_id, invoice_id, attempt, amount, claimed_at, outcome, error, target, tries";

pub(super) fn transfer_from_row(r: &Row) -> anyhow::Result<TransferRow> {
    Ok(TransferRow {
        id: r.get(0)?,
        external_id: r.get(1)?,
        invoice_id: r.get(2)?,
        amount: r.get(3)?,
        status: r.get(4)?,
        updated_at: r.get(5)?,
        ours: r.get(6)?,
        target: r.get(7)?,
        reason: r.get(8)?,
        returned: r.get(9)?,
    })
}

const TRANSFER_COLUMNS: &str =
    "id, external_id, invoice_id, amount, status, updated_at, ours, target, reason, returned";
/// `TRANSFER_COLUMNS` of `transfers t`.
pub(super) const TRANSFER_COLUMNS_OF_T: &str =
    "t.id, t.external_id, t.invoice_id, t.amount, t.status, t.updated_at, t.ours, t.target, t.reason, t.returned";

/// A `reversed` invoice log: money went back to the payer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversedLog {
    pub invoice_id: String,
    /// The invoice's amount after the reversal, in cents.
    pub amount: i64,
}

/// Effects of applying one event, written together with its `applied_at`.
#[derive(Debug, Clone, Default)]
pub struct EventEffects {
    pub invoice: Option<InvoiceState>,
    pub credited: Option<CreditedLog>,
    pub reversed: Option<ReversedLog>,
    pub transfer: Option<TransferRow>,
}

/// What a credit of an invoice is, given whether we issued it: `(state, reason)`.
fn state_of_new_credit(ours: bool, net: i64, amount: i64, fee: i64) -> (CreditState, Option<String>) {
    if !ours {
        return (CreditState::Unclaimed, Some("not an invoice this deployment issued".into()));
    }
    if net > 0 {
        (CreditState::Open, None)
    } else {
        (CreditState::Skipped, Some(format!("nothing to transfer: amount {amount} minus fee {fee} is not positive")))
    }
}

fn issued_by_us(tx: &Db, invoice_id: &str) -> anyhow::Result<bool> {
    tx.query_row("SELECT EXISTS (SELECT 1 FROM invoice_drafts WHERE invoice_id = ?1)", params![invoice_id], |r| {
        r.get(0)
    })
}

/// Records a credited log, deciding ownership from our own records. Returns 1 when it is a new
/// credit of ours, 0 otherwise (already recorded, or not ours).
fn record_credit(tx: &Db, c: &CreditedLog, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let ours = issued_by_us(tx, &c.invoice_id)?;
    let (state, reason) = state_of_new_credit(ours, c.net(), c.amount, c.fee);
    let n = tx.execute(
        "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, reason, origin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (invoice_id) DO NOTHING",
        params![
            c.invoice_id,
            c.event_id,
            c.amount,
            c.fee,
            c.net(),
            c.credited_at,
            ts(now),
            state.as_str(),
            reason,
            ours.then_some(Origin::Issued.as_str())
        ],
    )?;
    Ok(if ours { n } else { 0 })
}

impl Store {
    /// Events not yet applied, oldest first.
    pub fn pending_events(&self, limit: usize) -> anyhow::Result<Vec<PendingEvent>> {
        let rows = self.db.query_map(
            "SELECT id, subscription, log_type, workspace_id, source, body FROM events WHERE applied_at IS NULL
             ORDER BY created, id LIMIT ?1",
            params![limit as i64],
            |r| {
                Ok(PendingEvent {
                    id: r.get(0)?,
                    subscription: r.get(1)?,
                    log_type: r.get(2)?,
                    workspace_id: r.get(3)?,
                    source: super::EventSource::parse(&r.get::<String>(4)?)?,
                    body: r.get(5)?,
                })
            },
        )?;
        Ok(rows)
    }

    /// Applies many events' effects in one transaction; each event is marked applied with them.
    /// Returns how many new credits of ours.
    pub fn apply_events(&mut self, applied: &[(String, EventEffects)], now: DateTime<Utc>) -> anyhow::Result<usize> {
        let tx = self.write_tx()?;
        let mut new_credits = 0;
        for (event_id, fx) in applied {
            if let Some(inv) = &fx.invoice {
                tx.execute(
                    "INSERT INTO invoices (id, status, amount, nominal_amount, fee, ours, last_log_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, amount = excluded.amount,
                        nominal_amount = excluded.nominal_amount, fee = excluded.fee, ours = excluded.ours,
                        last_log_at = excluded.last_log_at
                     WHERE excluded.last_log_at >= invoices.last_log_at",
                    params![
                        inv.id,
                        inv.status,
                        inv.amount,
                        inv.nominal_amount,
                        inv.fee,
                        issued_by_us(&tx, &inv.id)?,
                        inv.log_at
                    ],
                )?;
            }
            if let Some(c) = &fx.credited {
                new_credits += record_credit(&tx, c, now)?;
            }
            if let Some(r) = &fx.reversed {
                flag_reversed(&tx, r)?;
            }
            if let Some(t) = &fx.transfer {
                upsert_transfer(&tx, t)?;
            }
            tx.execute("UPDATE events SET applied_at = ?2 WHERE id = ?1", params![event_id, ts(now)])?;
        }
        tx.commit()?;
        Ok(new_credits)
    }

    /// Records credited logs fetched from the API (reconciliation); returns how many are new and ours.
    pub fn record_credited_logs(&mut self, logs: &[CreditedLog], now: DateTime<Utc>) -> anyhow::Result<usize> {
        let tx = self.write_tx()?;
        let mut n = 0;
        for c in logs {
            n += record_credit(&tx, c, now)?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Records what Stark Bank says about transfers (answers, lookups, refreshes).
    pub fn upsert_transfers(&mut self, rows: &[TransferRow]) -> anyhow::Result<()> {
        let tx = self.write_tx()?;
        for t in rows {
            upsert_transfer(&tx, t)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn credits_where(&self, condition: &str) -> anyhow::Result<Vec<Credit>> {
        let rows = self.db.query_map(
            &format!("SELECT {CREDIT_COLUMNS} FROM credits WHERE {condition} ORDER BY credited_at, invoice_id"),
            params![],
            credit_from_row,
        )?;
        Ok(rows)
    }

    pub fn open_credits(&self) -> anyhow::Result<Vec<Credit>> {
        self.credits_where("state = 'open'")
    }

    /// Credits to decide on in a run: open ones, and held ones (a raised limit or freed room
    /// releases them).
    pub fn credits_in_play(&self) -> anyhow::Result<Vec<Credit>> {
        self.credits_where("state IN ('open', 'held')")
    }

    /// Credits of our workspace that this deployment did not issue.
    pub fn unclaimed_credits(&self) -> anyhow::Result<Vec<Credit>> {
        self.credits_where("state = 'unclaimed'")
    }

    /// Our credits (every state but unclaimed).
    pub fn credits(&self) -> anyhow::Result<Vec<Credit>> {
        self.credits_where("state <> 'unclaimed'")
    }

    pub fn credits_in(&self, state: CreditState) -> anyhow::Result<Vec<Credit>> {
        self.credits_where(&format!("state = '{}'", state.as_str()))
    }

    pub fn credit(&self, invoice_id: &str) -> anyhow::Result<Option<Credit>> {
        self.db
            .query_row(
                &format!("SELECT {CREDIT_COLUMNS} FROM credits WHERE invoice_id = ?1"),
                params![invoice_id],
                credit_from_row,
            )
            .optional()
    }

    pub fn set_credit_state(
        &mut self,
        invoice_id: &str,
        state: CreditState,
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        self.db.execute(
            "UPDATE credits SET state = ?2, reason = ?3, next_send_at = NULL WHERE invoice_id = ?1",
            params![invoice_id, state.as_str(), reason],
        )?;
        Ok(())
    }

    /// `--all-credits`: an unclaimed credit confirmed by fetching its invoice with our own
    /// credentials becomes ours, with the amount and fee of that answer.
    pub fn confirm_workspace_credit(
        &mut self,
        invoice_id: &str,
        amount: i64,
        fee: i64,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let net = amount.saturating_sub(fee);
        let (state, reason) = state_of_new_credit(true, net, amount, fee);
        self.db.execute(
            "UPDATE credits SET amount = ?2, fee = ?3, net = ?4, state = ?5, reason = ?6, origin = 'workspace',
                confirmed_at = ?7 WHERE invoice_id = ?1 AND state = 'unclaimed'",
            params![invoice_id, amount, fee, net, state.as_str(), reason, ts(now)],
        )?;
        Ok(())
    }

    /// `--retry-attention`: every credit that needs attention is open again with a fresh
    /// attempt budget (attempts so far no longer count). Returns how many.
    pub fn retry_attention(&mut self) -> anyhow::Result<usize> {
        // Held credits: the operator approves them once, above the limits.
        let approved = self.db.execute(
            "UPDATE credits SET state = 'open', reason = NULL, limit_approved = 1 WHERE state = 'held'",
            params![],
        )?;
        // Nothing left to sweep (a reversal took it back): acknowledged, not sent.
        self.db.execute(
            "UPDATE credits SET state = 'skipped', reason = 'nothing left to transfer after a reversal (acknowledged by --retry-attention)',
                next_send_at = NULL
             WHERE state = 'attention' AND net <= 0",
            params![],
        )?;
        // A loop of unknown outcomes gets its tries back too.
        self.db.execute(
            "UPDATE sends SET tries = 1 WHERE outcome = 'unknown'
               AND invoice_id IN (SELECT invoice_id FROM credits WHERE state = 'attention')",
            params![],
        )?;
        Ok(self.db.execute(
            "UPDATE credits SET state = 'open', reason = NULL, next_send_at = NULL,
                budget_from = COALESCE((SELECT MAX(attempt) FROM sends s WHERE s.invoice_id = credits.invoice_id), 0)
             WHERE state = 'attention'",
            params![],
        )? + approved)
    }

    /// Attempts up to `attempt` no longer count against the budget (a failure that passes).
    pub fn forgive_attempt(&mut self, invoice_id: &str, attempt: u32) -> anyhow::Result<()> {
        self.db.execute(
            "UPDATE credits SET budget_from = CASE WHEN budget_from > ?2 THEN budget_from ELSE ?2 END WHERE invoice_id = ?1",
            params![invoice_id, attempt],
        )?;
        Ok(())
    }

    /// Why an open credit is still waiting (the bank's last reason), shown by status; cleared
    /// when it settles.
    pub fn set_waiting_reason(&mut self, invoice_id: &str, reason: Option<&str>) -> anyhow::Result<()> {
        self.db.execute(
            "UPDATE credits SET reason = ?2 WHERE invoice_id = ?1 AND state = 'open'",
            params![invoice_id, reason],
        )?;
        Ok(())
    }

    pub fn set_next_send_at(&mut self, invoice_id: &str, at: Option<DateTime<Utc>>) -> anyhow::Result<()> {
        self.db
            .execute("UPDATE credits SET next_send_at = ?2 WHERE invoice_id = ?1", params![invoice_id, at.map(ts)])?;
        Ok(())
    }

    /// The newest send (highest attempt) for an invoice.
    pub fn last_send(&self, invoice_id: &str) -> anyhow::Result<Option<SendRow>> {
        self.db
            .query_row(
                &format!("SELECT {SEND_COLUMNS} FROM sends WHERE invoice_id = ?1 ORDER BY attempt DESC LIMIT 1"),
                params![invoice_id],
                send_from_row,
            )
            .optional()
    }

    /// Every send, in invoice and attempt order.
    pub fn sends(&self) -> anyhow::Result<Vec<SendRow>> {
        let rows = self.db.query_map(
            &format!("SELECT {SEND_COLUMNS} FROM sends ORDER BY invoice_id, attempt"),
            params![],
            send_from_row,
        )?;
        Ok(rows)
    }

    pub fn transfers(&self) -> anyhow::Result<Vec<TransferRow>> {
        let rows = self.db.query_map(
            &format!("SELECT {TRANSFER_COLUMNS} FROM transfers ORDER BY invoice_id, id"),
            params![],
            transfer_from_row,
        )?;
        Ok(rows)
    }

    /// Our failed transfers of credits still in play whose failure reason is not known yet.
    pub fn failed_without_reason(&self) -> anyhow::Result<Vec<String>> {
        // From the credits in play (`credits_state`) to their transfers, never the other way:
        // the failed transfers of settled credits are history.
        let rows = self.db.query_map(
            "SELECT t.id FROM credits c CROSS JOIN transfers t ON t.invoice_id = c.invoice_id
             WHERE c.state IN ('open', 'attention') AND t.ours = 1 AND t.status = 'failed' AND t.reason IS NULL
             ORDER BY t.id",
            params![],
            |r| r.get(0),
        )?;
        Ok(rows)
    }

    /// Whether a transfer that is not ours carries this externalId (someone used the externalId
    /// we would send, for another amount or target).
    pub fn external_id_taken(&self, external_id: &str) -> anyhow::Result<bool> {
        self.db.query_row(
            "SELECT EXISTS (SELECT 1 FROM transfers WHERE external_id = ?1 AND ours = 0)",
            params![external_id],
            |r| r.get(0),
        )
    }

    /// Our transfers still created or processing.
    pub fn alive_transfers(&self) -> anyhow::Result<Vec<TransferRow>> {
        let rows = self.db.query_map(&format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE ours = 1 AND status IN ('created', 'processing') ORDER BY id"
        ), params![], transfer_from_row)?;
        Ok(rows)
    }

    /// Our transfers for an invoice (those that can settle its credit).
    pub fn transfers_for(&self, invoice_id: &str) -> anyhow::Result<Vec<TransferRow>> {
        let rows = self.db.query_map(
            &format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE invoice_id = ?1 AND ours = 1"),
            params![invoice_id],
            transfer_from_row,
        )?;
        Ok(rows)
    }

    /// Claims new sends durably before any request leaves, in one transaction that holds the
    /// write lock from its first read: the kill switch and the outflow limits are checked against
    /// what is claimed in that same transaction, so two runs at once cannot both pass under a
    /// limit. A send over a limit is not claimed: its credit is held, with the reason (unless an
    /// operator approved it with --retry-attention, once). The unique (invoice, attempt) and
    /// externalId constraints make a double claim impossible.
    ///
    /// Re-sends (`resend`: a send already claimed whose request must go again) pass the same
    /// checks, against the limits as they are now, and are re-stamped `claimed_at = now`, so a
    /// send refused for days counts in the window of the day it really leaves.
    pub fn claim_sends_within(
        &mut self,
        sends: &[SendRow],
        resends: &[SendRow],
        limits: &OutflowLimits,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Claimed> {
        let tx = self.write_tx()?;
        let mut out = Claimed::default();
        if let Some(k) = kill_switch(&tx)? {
            out.stopped = Some(k);
            return Ok(out);
        }
        let since = now - chrono::Duration::hours(24);
        let mut window = outflow_since(&tx, since)?;
        let all = resends.iter().map(|s| (s, true)).chain(sends.iter().map(|s| (s, false)));
        for (s, resend) in all {
            // A re-send stamped inside the window is already counted in it.
            let counted = resend && crate::starkbank::time::parse(&s.claimed_at).is_some_and(|t| t > since);
            let after = if counted { Some(window) } else { window.checked_add(s.amount) };
            let approved: bool = tx
                .query_row(
                    "SELECT limit_approved = 1 FROM credits WHERE invoice_id = ?1",
                    params![&s.invoice_id],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(false);
            let over = if approved {
                None
            } else if s.amount > limits.max_transfer {
                Some(format!(
                    "held: {} cents is over the limit per transfer ({} cents, STARK_SWEEP_MAX_TRANSFER); raise it, or approve this one with process-events --retry-attention",
                    s.amount, limits.max_transfer
                ))
            } else if s.amount > limits.max_24h {
                Some(format!(
                    "held: {} cents is over the whole 24-hour limit ({} cents, STARK_SWEEP_MAX_OUTFLOW_24H): no room will ever free for it; raise the limit, or approve this one with process-events --retry-attention",
                    s.amount, limits.max_24h
                ))
            } else if after.is_none_or(|a| a > limits.max_24h) {
                Some(format!(
                    "held: {} cents would take the last 24 hours' outflow to {} cents, over the limit of {} cents (STARK_SWEEP_MAX_OUTFLOW_24H); it goes when room frees or the limit is raised, or approve it with process-events --retry-attention",
                    s.amount,
                    after.map_or_else(|| "more than i64".to_string(), |a| a.to_string()),
                    limits.max_24h
                ))
            } else {
                None
            };
            if let Some(reason) = over {
                tx.execute(
                    "UPDATE credits SET state = 'held', reason = ?2 WHERE invoice_id = ?1 AND state IN ('open', 'held')",
                    params![s.invoice_id, reason],
                )?;
                out.held.push((s.invoice_id.clone(), reason));
                continue;
            }
            if resend {
                tx.execute("UPDATE sends SET claimed_at = ?2 WHERE external_id = ?1", params![s.external_id, ts(now)])?;
                tx.execute(
                    "UPDATE credits SET limit_approved = 0, reason = CASE WHEN state = 'held' THEN NULL ELSE reason END,
                        state = CASE WHEN state = 'held' THEN 'open' ELSE state END WHERE invoice_id = ?1",
                    params![&s.invoice_id],
                )?;
                window = after.unwrap_or(window);
                out.claimed.push(s.clone());
                continue;
            }
            // Only a credit still in play is claimed for: one that went to attention (a
            // reversal, a return) since the run planned this send stays where it is.
            let in_play = tx.execute(
                "UPDATE credits SET state = 'open', limit_approved = 0,
                    reason = CASE WHEN state = 'held' THEN NULL ELSE reason END
                 WHERE invoice_id = ?1 AND state IN ('open', 'held')",
                params![&s.invoice_id],
            )?;
            if in_play == 0 {
                continue;
            }
            tx.execute(
                "INSERT INTO sends (external_id, invoice_id, attempt, amount, claimed_at, target) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![s.external_id, s.invoice_id, s.attempt, s.amount, s.claimed_at, s.target],
            )?;
            window = after.unwrap_or(window);
            out.claimed.push(s.clone());
        }
        tx.commit()?;
        Ok(out)
    }

    /// Money that left (or may have left) in the 24 hours before `now`, in cents.
    pub fn outflow_24h(&self, now: DateTime<Utc>) -> anyhow::Result<i64> {
        outflow_since(&self.db, now - chrono::Duration::hours(24))
    }

    /// The kill switch, when engaged: `(reason, since)`.
    pub fn kill_switch(&self) -> anyhow::Result<Option<(String, String)>> {
        kill_switch(&self.db)
    }

    pub fn engage_kill_switch(&mut self, reason: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
        self.db.execute(
            "INSERT INTO controls (key, reason, set_at) VALUES ('kill_switch', ?1, ?2)
             ON CONFLICT (key) DO UPDATE SET reason = excluded.reason, set_at = excluded.set_at",
            params![reason, ts(now)],
        )?;
        Ok(())
    }

    /// Returns whether it was engaged.
    pub fn release_kill_switch(&mut self) -> anyhow::Result<bool> {
        Ok(self.db.execute("DELETE FROM controls WHERE key = 'kill_switch'", params![])? > 0)
    }

    /// Claims new sends durably, all or none, before any request leaves. The unique
    /// (invoice, attempt) and externalId constraints make a double claim impossible.
    pub fn claim_sends(&mut self, sends: &[SendRow]) -> anyhow::Result<()> {
        let tx = self.write_tx()?;
        for s in sends {
            tx.execute(
                "INSERT INTO sends (external_id, invoice_id, attempt, amount, claimed_at, target)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![s.external_id, s.invoice_id, s.attempt, s.amount, s.claimed_at, s.target],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn set_send_outcome(&mut self, outcomes: &[(String, SendOutcome, Option<String>)]) -> anyhow::Result<()> {
        let tx = self.write_tx()?;
        for (external_id, outcome, error) in outcomes {
            tx.execute(
                "UPDATE sends SET outcome = ?2, error = ?3 WHERE external_id = ?1",
                params![external_id, outcome.as_str(), error],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Counts one more request with these externalIds (a re-send), before it leaves.
    pub fn count_resends(&mut self, external_ids: &[String]) -> anyhow::Result<()> {
        let tx = self.write_tx()?;
        for id in external_ids {
            tx.execute("UPDATE sends SET tries = tries + 1, outcome = NULL WHERE external_id = ?1", params![id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Those of `ids` whose events are recorded, applied, and about one of our invoices (with
    /// `all_credits`: any invoice of our workspace) or one of our transfers.
    pub fn ours_applied_among(&self, ids: &[String], all_credits: bool) -> anyhow::Result<Vec<String>> {
        let sql = "SELECT e.applied_at IS NOT NULL AND (
                 (e.subscription = 'invoice'
                    AND (?2 OR EXISTS (SELECT 1 FROM invoice_drafts d WHERE d.invoice_id = e.resource_id)))
              OR (e.subscription = 'transfer'
                    AND EXISTS (SELECT 1 FROM transfers t WHERE t.id = e.resource_id AND t.ours = 1)))
             FROM events e WHERE e.id = ?1";
        let mut out = Vec::new();
        for id in ids {
            let applied: Option<bool> = self.db.query_row(sql, params![id, all_credits], |r| r.get(0)).optional()?;
            if applied == Some(true) {
                out.push(id.clone());
            }
        }
        Ok(out)
    }

    /// Records that Stark Bank now has these events as delivered (one transaction).
    pub fn mark_delivered(&mut self, ids: &[String], now: DateTime<Utc>) -> anyhow::Result<()> {
        let tx = self.write_tx()?;
        for id in ids {
            tx.execute("UPDATE events SET delivered_at = ?2 WHERE id = ?1", params![id, ts(now)])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Our invoices' latest known states.
    pub fn invoices(&self) -> anyhow::Result<Vec<InvoiceState>> {
        let rows = self.db.query_map(
            "SELECT i.id, i.status, i.amount, i.nominal_amount, i.fee, i.last_log_at FROM invoices i
             WHERE EXISTS (SELECT 1 FROM invoice_drafts d WHERE d.invoice_id = i.id) ORDER BY i.id",
            params![],
            invoice_from_row,
        )?;
        Ok(rows)
    }

    /// Invoices this deployment issued that may still be credited and have no credit recorded:
    /// issued, not canceled or expired as far as we know, and not past due + expiration (plus a
    /// day of slack). Their credited logs are fetched by reconciliation.
    pub fn uncredited_invoices(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<String>> {
        let rows = self.db.query_map("SELECT d.invoice_id, d.due, d.expiration FROM invoice_drafts d
             WHERE d.invoice_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM credits c WHERE c.invoice_id = d.invoice_id)
               AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.id = d.invoice_id AND i.status IN ('canceled', 'expired'))
             ORDER BY d.invoice_id", params![], |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<i64>(2)?)))?;
        let mut out = Vec::new();
        for (id, due, expiration) in rows {
            let payable_until = crate::starkbank::time::parse_date_or_datetime(&due)
                .map(|d| d + chrono::Duration::seconds(expiration) + chrono::Duration::days(1));
            if payable_until.is_none_or(|t| t > now) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Transfers that are not ours but carry the tag of one of our invoices: money that moved
    /// (or may move) in our credit's name without us sending it.
    pub fn stray_transfers(&self) -> anyhow::Result<Vec<TransferRow>> {
        let rows = self.db.query_map(
            &format!(
                "SELECT {TRANSFER_COLUMNS} FROM transfers t WHERE t.ours = 0
               AND EXISTS (SELECT 1 FROM invoice_drafts d WHERE d.invoice_id = t.invoice_id)
             ORDER BY t.invoice_id, t.id"
            ),
            params![],
            transfer_from_row,
        )?;
        Ok(rows)
    }

    /// How many credits of invoices this deployment did not issue it has seen (and ignored).
    pub fn count_unclaimed(&self) -> anyhow::Result<i64> {
        self.db.query_row("SELECT COUNT(*) FROM credits WHERE state = 'unclaimed'", params![], |r| r.get(0))
    }
}

/// Newer information wins; a final status (success, failed, canceled) is never replaced by an
/// earlier one that arrives late, except success by failed: a return after success, recorded
/// as such (and the credit it had settled goes to attention, see `flag_returned`). Whether the
/// transfer is ours is decided from our sends, never from tags.
fn upsert_transfer(tx: &Db, t: &TransferRow) -> anyhow::Result<()> {
    let send: Option<(String, i64, Option<String>)> = tx
        .query_row(
            "SELECT invoice_id, amount, target FROM sends WHERE external_id = ?1",
            params![&t.external_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let ours = send
        .as_ref()
        .is_some_and(|(_, amount, target)| *amount == t.amount && (target.is_none() || target == &t.target));
    // Our own transfer belongs to the invoice we sent it for, whatever its tags say.
    let invoice_id = match &send {
        Some((invoice, ..)) if ours => invoice.clone(),
        _ => t.invoice_id.clone(),
    };
    let before: Option<String> =
        tx.query_row("SELECT status FROM transfers WHERE id = ?1", params![&t.id], |r| r.get(0)).optional()?;
    tx.execute(
        "INSERT INTO transfers (id, external_id, invoice_id, amount, status, updated_at, ours, target, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at,
            reason = COALESCE(excluded.reason, transfers.reason),
            returned = CASE WHEN transfers.status = 'success' AND excluded.status = 'failed' THEN 1 ELSE transfers.returned END
         WHERE (transfers.status NOT IN ('success', 'failed', 'canceled')
                AND (excluded.status IN ('success', 'failed', 'canceled') OR excluded.updated_at >= transfers.updated_at))
            OR (transfers.status = 'success' AND excluded.status = 'failed')
            OR (transfers.status = excluded.status AND transfers.reason IS NULL AND excluded.reason IS NOT NULL)",
        params![t.id, t.external_id, invoice_id, t.amount, t.status, t.updated_at, ours, t.target, t.reason],
    )?;
    if ours && before.as_deref() == Some("success") && t.status == "failed" {
        flag_returned(tx, &invoice_id, t)?;
    }
    Ok(())
}

/// A transfer of ours that had settled a credit failed afterwards (a return): the money is back
/// in the balance, and whether to send it again is a human's decision.
fn flag_returned(tx: &Db, invoice_id: &str, t: &TransferRow) -> anyhow::Result<()> {
    let reason = format!(
        "transfer {} (externalId {}) was returned after it succeeded ({}); the money is back in the balance; to send it again: process-events --retry-attention",
        t.id,
        t.external_id,
        t.reason.as_deref().unwrap_or("no reason given")
    );
    tx.execute(
        "UPDATE credits SET state = 'attention', reason = ?2 WHERE invoice_id = ?1 AND state IN ('transferred', 'open')",
        params![invoice_id, reason],
    )?;
    Ok(())
}

/// A `reversed` log for an invoice with a credit of ours: money went back to the payer. Not yet
/// swept: it must not be (attention). Already swept: the balance paid twice (attention).
fn flag_reversed(tx: &Db, r: &ReversedLog) -> anyhow::Result<()> {
    let state: Option<String> = tx
        .query_row(
            "SELECT state FROM credits WHERE invoice_id = ?1 AND state <> 'unclaimed'",
            params![&r.invoice_id],
            |row| row.get(0),
        )
        .optional()?;
    let reason = match state.as_deref() {
        Some("transferred") => format!(
            "the invoice was reversed (its amount is now {} cents) after its credit was swept: the reversed money left the balance twice; check with Stark Bank",
            r.amount
        ),
        Some("open" | "attention" | "held") => {
            // Not swept yet: what is left to sweep is what the invoice still holds.
            tx.execute(
                "UPDATE credits SET net = CASE WHEN ?2 - fee > 0 THEN ?2 - fee ELSE 0 END WHERE invoice_id = ?1",
                params![r.invoice_id, r.amount],
            )?;
            format!(
                "the invoice was reversed (its amount is now {} cents) before its credit was swept: not sweeping it; decide, then process-events --retry-attention sweeps what is left (its amount now, minus the fee; nothing when that is not positive)",
                r.amount
            )
        }
        _ => return Ok(()),
    };
    tx.execute(
        "UPDATE credits SET state = 'attention', reason = ?2, next_send_at = NULL WHERE invoice_id = ?1",
        params![r.invoice_id, reason],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    fn transfer(id: &str, status: &str, at: &str) -> TransferRow {
        TransferRow {
            id: id.into(),
            external_id: "x1".into(),
            invoice_id: "i1".into(),
            amount: 100,
            status: status.into(),
            updated_at: at.into(),
            ours: false,
            target: Some(target_key("20018183", "0001", "1", "20.018.183/0001-80")),
            reason: None,
            returned: false,
        }
    }

    fn credit_row(store: &Store) {
        store
            .db
            .execute(
                "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state) VALUES ('i1','e1',100,0,100,'t','t','open')",
                params![],
            )
            .unwrap();
    }

    fn send(external_id: &str, attempt: u32) -> SendRow {
        SendRow {
            external_id: external_id.into(),
            invoice_id: "i1".into(),
            attempt,
            amount: 100,
            claimed_at: "t".into(),
            outcome: None,
            error: None,
            target: Some(target_key("20018183", "0001", "1", "20.018.183/0001-80")),
            tries: 1,
        }
    }

    #[test]
    fn final_transfer_status_never_regresses() {
        let (_d, mut store) = temp_store();
        credit_row(&store);
        store.claim_sends(&[send("x1", 1)]).unwrap();
        store.upsert_transfers(&[transfer("t1", "created", "2026-01-01T00:00:00+00:00")]).unwrap();
        store.upsert_transfers(&[transfer("t1", "success", "2026-01-01T00:00:02+00:00")]).unwrap();
        store.upsert_transfers(&[transfer("t1", "processing", "2026-01-01T00:00:03+00:00")]).unwrap();
        assert_eq!(store.transfers_for("i1").unwrap()[0].status, "success");
    }

    /// A plan made before its credit went to attention (a reversal applied by another run in
    /// between, on another host) claims nothing and leaves the credit where it is.
    #[test]
    fn a_stale_plan_never_reopens_a_credit_in_attention() {
        let (_d, mut store) = temp_store();
        credit_row(&store);
        store.set_credit_state("i1", CreditState::Attention, Some("reversed")).unwrap();
        let limits = OutflowLimits { max_transfer: 1_000_000, max_24h: 1_000_000 };
        let now = crate::starkbank::time::parse("2026-01-01T00:00:00+00:00").unwrap();
        let out = store.claim_sends_within(&[send("x1", 1)], &[], &limits, now).unwrap();
        assert!(out.claimed.is_empty(), "{out:?}");
        assert!(store.sends().unwrap().is_empty());
        assert_eq!(store.credit("i1").unwrap().unwrap().state, CreditState::Attention);
    }

    #[test]
    fn a_send_cannot_be_claimed_twice() {
        let (_d, mut store) = temp_store();
        credit_row(&store);
        let first = send("x1", 1);
        store.claim_sends(std::slice::from_ref(&first)).unwrap();
        let again = SendRow { external_id: "x1-other".into(), ..first };
        assert!(store.claim_sends(&[again]).is_err(), "same invoice and attempt must be refused");
        assert_eq!(store.sends().unwrap().len(), 1);
    }

    /// A transfer is ours only when externalId, amount and target are those of our send.
    #[test]
    fn a_transfer_is_ours_only_if_it_matches_a_send() {
        let (_d, mut store) = temp_store();
        credit_row(&store);
        store.claim_sends(&[send("x1", 1)]).unwrap();
        let target = Some(target_key("20018183", "0001", "1", "20018183000180"));
        let elsewhere = Some(target_key("341", "0001", "99", "20018183000180"));
        let row = |id: &str, external: &str, amount: i64, target: Option<String>| TransferRow {
            id: id.into(),
            external_id: external.into(),
            invoice_id: "i1".into(),
            amount,
            status: "success".into(),
            updated_at: "t".into(),
            ours: true, // claimed by the caller: must be decided by the store instead
            target,
            reason: None,
            returned: false,
        };
        store
            .upsert_transfers(&[
                row("a", "x1", 100, target.clone()),
                row("b", "someone-else", 100, target.clone()),
                row("c", "x1", 999, target.clone()),
                row("d", "x1", 100, elsewhere),
            ])
            .unwrap();
        let ours: Vec<String> = store.transfers_for("i1").unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(ours, ["a"]);
    }
}
