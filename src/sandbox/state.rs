//! The in-memory bank: invoices, transfers, their logs, events, webhooks, delivery attempts,
//! the balance, and a schedule of what happens next on the simulated clock (payments, credits,
//! overdue and expiry, transfer steps, webhook deliveries and their retries).
//!
//! Owns: the money rules and the life cycles, and the webhook form of an event (body and
//! signature), which it also builds for other workspaces' events (signed, never stored). Does
//! not own: HTTP, wire validation (`routes`) or the network side of deliveries (`delivery`).
//!
//! The resource types (`Invoice`, `Transfer`, `Log`, `Event`, `NewInvoice`, `NewTransfer`) are
//! the emulator's own, deliberately not `starkbank::resources`: the emulator is a second,
//! independent reading of the API that the client is tested against. What it does share with
//! the client (request signatures, `starkbank::sign`; Python's JSON, `starkbank::pyjson`; time
//! formats) is checked against the official SDK instead: `tests/it/conformance.rs`, and the
//! SDK's own flows against the emulator in `tests/it/sandbox.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k256::ecdsa::SigningKey;
use rand::RngExt as _;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::clock::to_chrono;
use super::faults::{self, Faults};
use super::snapshot::*;
use super::{DuplicateMode, PayOptions, taxid};
use crate::starkbank::{pyjson, sign, time};

/// Error code of a transfer refused because its `externalId` was used before. The real code is
/// not documented anywhere we could find; change it here if a real answer is ever captured.
pub const DUPLICATE_EXTERNAL_ID_CODE: &str = "invalidExternalId";
/// Error code of a transfer without `externalId` that repeats amount and account on the same day
/// (undocumented too).
pub const SAME_DAY_DUPLICATE_CODE: &str = "duplicatedTransfer";
/// The error text of the late `failed` log integrators have seen for a duplicated transfer.
pub const DUPLICATE_FAILED_MESSAGE: &str = "Duplicated transfer";
pub const INSUFFICIENT_BALANCE_MESSAGE: &str = "Insufficient balance";
/// The `errors` of a returned transfer's `failed` log when no reason is given.
pub const RETURN_REASON: &str = "Transfer returned by the receiving bank";
/// Error code of a `DELETE /v2/transfer/{id}` for a transfer past `created` (undocumented; the
/// code the real API uses for a PATCH of a canceled invoice).
pub const CANCEL_REFUSED_CODE: &str = "invalidOperation";

/// Stark Bank retries a failed webhook delivery after 5, 30 and 120 minutes, then stops.
pub const RETRY_DELAYS_MINUTES: [i64; 3] = [5, 30, 120];

/// The simulation knobs `State` needs (a subset of `SandboxConfig`).
#[derive(Debug, Clone)]
pub struct Sim {
    pub pay_rate: f64,
    pub pay_delay_min: Duration,
    pub pay_delay_max: Duration,
    pub credit_delay: Duration,
    pub invoice_fee: i64,
    pub transfer_fee: i64,
    pub transfer_step: Duration,
    pub duplicate_mode: DuplicateMode,
    pub base_url: String,
}

#[derive(Debug, Clone)]
pub struct Invoice {
    pub seq: u64,
    pub id: String,
    pub amount: i64,
    pub nominal_amount: i64,
    pub fee: i64,
    pub fine_amount: i64,
    pub interest_amount: i64,
    pub discount_amount: i64,
    pub status: String,
    pub name: String,
    pub tax_id: String,
    pub due: DateTime<Utc>,
    pub expiration: i64,
    pub fine: f64,
    pub interest: f64,
    pub discounts: Vec<(f64, DateTime<Utc>)>,
    pub descriptions: Vec<Value>,
    pub tags: Vec<String>,
    pub rules: Vec<Value>,
    pub splits: Vec<Value>,
    pub brcode: String,
    pub link: String,
    pub pdf: String,
    pub transaction_ids: Vec<String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub pay_at: Option<DateTime<Utc>>,
    pub credited: bool,
}

/// A validated invoice from a create request.
#[derive(Debug, Clone)]
pub struct NewInvoice {
    pub amount: i64,
    pub name: String,
    pub tax_id: String,
    pub due: Option<DateTime<Utc>>,
    pub expiration: Option<i64>,
    pub fine: Option<f64>,
    pub interest: Option<f64>,
    pub discounts: Vec<(f64, DateTime<Utc>)>,
    pub descriptions: Vec<Value>,
    pub tags: Vec<String>,
    pub rules: Vec<Value>,
    pub splits: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub seq: u64,
    pub id: String,
    pub amount: i64,
    pub fee: i64,
    pub name: String,
    pub tax_id: String,
    pub bank_code: String,
    pub branch_code: String,
    pub account_number: String,
    pub account_type: String,
    pub external_id: Option<String>,
    pub scheduled: DateTime<Utc>,
    pub description: Option<String>,
    pub display_description: Option<String>,
    pub tags: Vec<String>,
    pub rules: Vec<Value>,
    pub metadata: Option<Value>,
    pub status: String,
    pub transaction_ids: Vec<String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// Why it will fail at its next step, decided at creation.
    pub doom: Option<String>,
}

/// A validated transfer from a create request.
#[derive(Debug, Clone)]
pub struct NewTransfer {
    pub amount: i64,
    pub name: String,
    pub tax_id: String,
    pub bank_code: String,
    pub branch_code: String,
    pub account_number: String,
    pub account_type: String,
    pub external_id: Option<String>,
    pub scheduled: Option<DateTime<Utc>>,
    pub description: Option<String>,
    pub display_description: Option<String>,
    pub tags: Vec<String>,
    pub rules: Vec<Value>,
    pub metadata: Option<Value>,
}

/// What a log is about; also its event's `subscription`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Invoice,
    Transfer,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Invoice => "invoice",
            Kind::Transfer => "transfer",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Log {
    pub seq: u64,
    pub id: String,
    pub kind: Kind,
    pub log_type: String,
    pub resource_id: String,
    pub created: DateTime<Utc>,
    pub errors: Vec<String>,
    /// The resource as it was when the log was written.
    pub resource: Value,
}

impl Log {
    pub fn json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "type": self.log_type,
            "errors": self.errors,
            "created": time::format(self.created),
        });
        v[self.kind.name()] = self.resource.clone();
        v
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub seq: u64,
    pub id: String,
    pub subscription: String,
    pub created: DateTime<Utc>,
    pub log: Value,
    pub log_type: String,
    pub log_id: String,
    pub resource_id: String,
    pub is_delivered: bool,
    pub deleted: bool,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub seq: u64,
    pub id: String,
    pub code: String,
    pub message: String,
    pub event_id: String,
    pub webhook_id: String,
    pub created: DateTime<Utc>,
}

impl Attempt {
    pub fn json(&self) -> Value {
        json!({"id": self.id, "code": self.code, "message": self.message, "eventId": self.event_id,
               "webhookId": self.webhook_id, "created": time::format(self.created)})
    }
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub seq: u64,
    pub id: String,
    pub url: String,
    pub subscriptions: Vec<String>,
    pub deleted: bool,
}

impl Webhook {
    pub fn json(&self) -> Value {
        json!({"id": self.id, "url": self.url, "subscriptions": self.subscriptions})
    }
}

/// One planned POST of an event to a webhook.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_id: String,
    pub webhook_id: String,
    /// 0 for the first try, 1..=3 for the retries.
    pub attempt: u32,
    /// This POST is a deliberate repeat of a delivered event.
    pub duplicate: bool,
    /// Repeat the POST once it succeeds (decided when the event is created).
    pub repeat: bool,
}

/// A delivery ready to send: everything the delivery thread needs without the lock.
#[derive(Debug, Clone)]
pub struct Job {
    pub delivery: Delivery,
    /// Simulated time the POST stands for.
    pub at: DateTime<Utc>,
    pub url: String,
    pub body: String,
    pub signature: String,
}

/// What a POST came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    Status(u16),
    Failed { code: &'static str, message: String },
}

#[derive(Debug, Clone)]
enum Action {
    Pay(String),
    Credit { id: String, fee: Option<i64> },
    Overdue(String),
    Expire(String),
    TransferStep(String),
    Deliver(Delivery),
}

/// Why a transfer in a batch is refused.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub index: usize,
    pub code: &'static str,
    pub message: String,
}

/// An event of another workspace (`Sandbox::foreign_event`, `POST /_sandbox/foreign-events`):
/// what Stark Bank would POST to that workspace's webhooks. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForeignEvent {
    /// The other workspace. Default: a random 16-digit id, never ours.
    pub workspace_id: Option<String>,
    /// `invoice` (default) or `transfer`.
    pub subscription: Kind,
    /// The log's type. Default: `credited` for an invoice, `success` for a transfer.
    pub log_type: Option<String>,
    /// The log's `errors`.
    pub errors: Vec<String>,
    /// The invoice's or transfer's id. Default: a random 16-digit id. Never one of ours.
    pub id: Option<String>,
    /// Cents. Default: random, from 100 to 10,000.
    pub amount: Option<i64>,
    /// Cents. Default: the configured invoice fee on a `credited` or `reversed` invoice log (0 on
    /// other invoice logs), the configured transfer fee on a transfer.
    pub fee: Option<i64>,
    /// Default: what the log type implies (`credited` -> `paid`, `sending` -> `processing`, ...;
    /// `created` for a type it does not know).
    pub status: Option<String>,
    /// Stored lowercased, as the API does.
    pub tags: Vec<String>,
    /// Transfers only (an invoice has no `externalId`).
    pub external_id: Option<String>,
    /// The payer (invoice) or receiver (transfer). Default: a fixed name.
    pub name: Option<String>,
    /// A valid CPF or CNPJ. Default: a fixed one.
    pub tax_id: Option<String>,
}

/// A webhook body exactly as delivered, its `Digital-Signature` and the event id in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedEvent {
    pub body: String,
    pub signature: String,
    pub event_id: String,
}

#[derive(Debug)]
pub struct State {
    pub sim: Sim,
    pub rng: StdRng,
    pub seed: u64,
    pub faults: Faults,
    pub signing_key: SigningKey,
    pub workspace_id: String,
    pub balance: i64,
    pub invoices: Vec<Invoice>,
    pub invoice_logs: Vec<Log>,
    pub transfers: Vec<Transfer>,
    pub transfer_logs: Vec<Log>,
    pub events: Vec<Event>,
    pub attempts: Vec<Attempt>,
    pub deliveries: Vec<SnapDelivery>,
    pub webhooks: Vec<Webhook>,
    pub requests: Vec<SnapRequest>,
    pub auth_failures: u64,
    seq: u64,
    ids: HashSet<String>,
    schedule: BTreeMap<(DateTime<Utc>, u64), Action>,
    /// Deliveries waiting for another event's first try, by invoice id.
    held: HashMap<String, Vec<Delivery>>,
    /// Ids used in foreign events (also in `ids`, so the emulator never issues them).
    foreign_ids: HashSet<String>,
}

fn chrono_between(rng: &mut StdRng, min: Duration, max: Duration) -> chrono::Duration {
    let (lo, hi) = (min.as_millis() as u64, max.as_millis() as u64);
    let ms = if hi > lo { rng.random_range(lo..=hi) } else { lo };
    chrono::Duration::milliseconds(ms as i64)
}

fn round_cents(x: f64) -> i64 {
    x.round() as i64
}

impl State {
    pub fn new(sim: Sim, seed: u64, faults: Faults, signing_key: SigningKey, initial_balance: i64) -> Self {
        use rand::SeedableRng as _;
        let mut s = Self {
            sim,
            rng: StdRng::seed_from_u64(seed),
            seed,
            faults,
            signing_key,
            workspace_id: String::new(),
            balance: initial_balance,
            invoices: Vec::new(),
            invoice_logs: Vec::new(),
            transfers: Vec::new(),
            transfer_logs: Vec::new(),
            events: Vec::new(),
            attempts: Vec::new(),
            deliveries: Vec::new(),
            webhooks: Vec::new(),
            requests: Vec::new(),
            auth_failures: 0,
            seq: 0,
            ids: HashSet::new(),
            schedule: BTreeMap::new(),
            held: HashMap::new(),
            foreign_ids: HashSet::new(),
        };
        s.workspace_id = s.new_id();
        s
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A fresh 16-digit numeric id, like Stark Bank's.
    pub fn new_id(&mut self) -> String {
        loop {
            let id = self.rng.random_range(1_000_000_000_000_000u64..10_000_000_000_000_000u64).to_string();
            if self.ids.insert(id.clone()) {
                return id;
            }
        }
    }

    fn hex32(&mut self) -> String {
        format!("{:032x}", self.rng.random::<u128>())
    }

    fn at(&mut self, when: DateTime<Utc>, action: Action) {
        let seq = self.next_seq();
        self.schedule.insert((when, seq), action);
    }

    // ---- invoices -----------------------------------------------------------------------------

    pub fn invoice(&self, id: &str) -> Option<&Invoice> {
        self.invoices.iter().find(|i| i.id == id)
    }

    fn invoice_index(&self, id: &str) -> Option<usize> {
        self.invoices.iter().position(|i| i.id == id)
    }

    pub fn invoice_json(inv: &Invoice) -> Value {
        json!({
            "id": inv.id,
            "amount": inv.amount,
            "nominalAmount": inv.nominal_amount,
            "fee": inv.fee,
            "fineAmount": inv.fine_amount,
            "interestAmount": inv.interest_amount,
            "discountAmount": inv.discount_amount,
            "status": inv.status,
            "name": inv.name,
            "taxId": inv.tax_id,
            "due": time::format(inv.due),
            "expiration": inv.expiration,
            "fine": inv.fine,
            "interest": inv.interest,
            "discounts": inv.discounts.iter().map(|(p, d)| json!({"percentage": p, "due": time::format(*d)})).collect::<Vec<_>>(),
            "descriptions": inv.descriptions,
            "tags": inv.tags,
            "rules": inv.rules,
            "splits": inv.splits,
            "brcode": inv.brcode,
            "link": inv.link,
            "pdf": inv.pdf,
            "transactionIds": inv.transaction_ids,
            "created": time::format(inv.created),
            "updated": time::format(inv.updated),
        })
    }

    pub fn create_invoices(&mut self, drafts: Vec<NewInvoice>, now: DateTime<Utc>) -> Vec<Value> {
        let mut out = Vec::with_capacity(drafts.len());
        for d in drafts {
            let id = self.new_id();
            let hex = self.hex32();
            let due = d.due.unwrap_or(now + chrono::Duration::days(2));
            let expiration = d.expiration.unwrap_or(5_097_600);
            let pay_at = if faults::roll(&mut self.rng, self.sim.pay_rate) {
                Some(now + chrono_between(&mut self.rng, self.sim.pay_delay_min, self.sim.pay_delay_max))
            } else {
                None
            };
            let seq = self.next_seq();
            let inv = Invoice {
                seq,
                id: id.clone(),
                amount: d.amount,
                nominal_amount: d.amount,
                fee: 0,
                fine_amount: 0,
                interest_amount: 0,
                discount_amount: 0,
                status: "created".into(),
                name: d.name,
                tax_id: d.tax_id,
                due,
                expiration,
                fine: d.fine.unwrap_or(2.0),
                interest: d.interest.unwrap_or(1.0),
                discounts: d.discounts,
                descriptions: d.descriptions,
                tags: d.tags,
                rules: d.rules,
                splits: d.splits,
                brcode: brcode(&hex, d.amount),
                link: format!("https://emulator.sandbox.starkbank.com/invoicelink/{hex}"),
                pdf: format!("{}/v2/invoice/{hex}.pdf", self.sim.base_url),
                transaction_ids: Vec::new(),
                created: now,
                updated: now,
                pay_at,
                credited: false,
            };
            out.push(Self::invoice_json(&inv));
            self.invoices.push(inv);
            let idx = self.invoices.len() - 1;
            self.invoice_log(idx, "created", now, false);
            if let Some(t) = pay_at {
                self.at(t, Action::Pay(id.clone()));
            }
            self.schedule_due(&id, due, expiration);
        }
        out
    }

    fn schedule_due(&mut self, id: &str, due: DateTime<Utc>, expiration: i64) {
        self.at(due, Action::Overdue(id.to_string()));
        self.at(due + chrono::Duration::seconds(expiration), Action::Expire(id.to_string()));
    }

    fn invoice_log(&mut self, idx: usize, log_type: &str, at: DateTime<Utc>, hold: bool) {
        let inv = &self.invoices[idx];
        let (resource, resource_id) = (Self::invoice_json(inv), inv.id.clone());
        self.add_log(Kind::Invoice, log_type, resource_id, resource, Vec::new(), at, hold);
    }

    #[allow(clippy::too_many_arguments, reason = "one private constructor of a log and its event")]
    fn add_log(
        &mut self,
        kind: Kind,
        log_type: &str,
        resource_id: String,
        resource: Value,
        errors: Vec<String>,
        at: DateTime<Utc>,
        hold: bool,
    ) {
        let log = Log {
            seq: self.next_seq(),
            id: self.new_id(),
            kind,
            log_type: log_type.to_string(),
            resource_id,
            created: at,
            errors,
            resource,
        };
        let log_json = log.json();
        let event = Event {
            seq: self.next_seq(),
            id: self.new_id(),
            subscription: kind.name().to_string(),
            created: at,
            log: log_json,
            log_type: log.log_type.clone(),
            log_id: log.id.clone(),
            resource_id: log.resource_id.clone(),
            is_delivered: false,
            deleted: false,
        };
        match kind {
            Kind::Invoice => self.invoice_logs.push(log),
            Kind::Transfer => self.transfer_logs.push(log),
        }
        let hooks: Vec<(String, String)> = self
            .webhooks
            .iter()
            .filter(|w| !w.deleted && w.subscriptions.iter().any(|s| s == kind.name()))
            .map(|w| (w.id.clone(), w.url.clone()))
            .collect();
        let mut scheduled = false;
        for (webhook_id, url) in hooks {
            if faults::roll(&mut self.rng, self.faults.drop_delivery_rate) {
                self.deliveries.push(SnapDelivery {
                    event_id: event.id.clone(),
                    webhook_id,
                    url,
                    at,
                    attempt: 0,
                    outcome: "dropped".into(),
                    http_status: None,
                    duplicate: false,
                });
                continue;
            }
            let repeat = faults::roll(&mut self.rng, self.faults.duplicate_delivery_rate);
            let d = Delivery { event_id: event.id.clone(), webhook_id, attempt: 0, duplicate: false, repeat };
            if hold {
                self.held.entry(event.resource_id.clone()).or_default().push(d);
            } else {
                scheduled = true;
                self.at(at, Action::Deliver(d));
            }
        }
        if kind == Kind::Invoice && event.log_type == "credited" && !scheduled {
            self.release_held(&event.resource_id, at);
        }
        self.events.push(event);
    }

    /// Schedules the deliveries held back for an invoice (its `paid` event, out of order).
    fn release_held(&mut self, invoice_id: &str, at: DateTime<Utc>) {
        for d in self.held.remove(invoice_id).unwrap_or_default() {
            self.at(at + chrono::Duration::seconds(1), Action::Deliver(d));
        }
    }

    /// The amounts a payment at `at` comes to: (amount paid, fine, interest, discount).
    fn amounts_due(inv: &Invoice, at: DateTime<Utc>, days_late: Option<u32>) -> (i64, i64, i64, i64) {
        let nominal = inv.nominal_amount as f64;
        let late_days = match days_late {
            Some(d) => i64::from(d),
            None if at > inv.due => ((at - inv.due).num_seconds() + 86_399) / 86_400,
            None => 0,
        };
        if late_days > 0 {
            let fine = round_cents(nominal * inv.fine / 100.0);
            let interest = round_cents(nominal * inv.interest / 100.0 * late_days as f64 / 30.0);
            (inv.nominal_amount + fine + interest, fine, interest, 0)
        } else {
            let pct = inv.discounts.iter().filter(|(_, d)| *d >= at).map(|(p, _)| *p).fold(0.0_f64, f64::max);
            let discount = round_cents(nominal * pct / 100.0);
            (inv.nominal_amount - discount, 0, 0, discount)
        }
    }

    /// Pays an invoice at `at`: a `paid` log now, a `credited` log after the credit delay.
    pub fn pay(&mut self, id: &str, opts: &PayOptions, at: DateTime<Utc>, manual: bool) -> Result<(), String> {
        let idx = self.invoice_index(id).ok_or_else(|| format!("no invoice {id}"))?;
        let inv = &self.invoices[idx];
        let payable = match inv.status.as_str() {
            "created" => manual || at <= inv.due,
            "overdue" => manual,
            _ => false,
        };
        if !payable {
            return Err(format!("invoice {id} is {} and cannot be paid", inv.status));
        }
        let (mut amount, fine, interest, discount) = Self::amounts_due(inv, at, opts.days_late);
        if let Some(a) = opts.amount {
            amount = a;
        } else if inv.nominal_amount == 0 {
            // An open-amount invoice: the payer chooses.
            amount = self.rng.random_range(100..=10_000);
        }
        let credit_at = at + to_chrono(opts.credit_delay_seconds.map_or(self.sim.credit_delay, Duration::from_secs));
        let inv = &mut self.invoices[idx];
        inv.amount = amount;
        inv.fine_amount = fine;
        inv.interest_amount = interest;
        inv.discount_amount = discount;
        inv.status = "paid".into();
        inv.updated = at;
        inv.pay_at = None;
        // Out of order: the `paid` deliveries wait until the `credited` one has been tried.
        let hold = self.faults.out_of_order && !opts.skip_credit;
        self.invoice_log(idx, "paid", at, hold);
        if !opts.skip_credit {
            self.at(credit_at, Action::Credit { id: id.to_string(), fee: opts.fee });
        }
        Ok(())
    }

    fn credit(&mut self, id: &str, fee: Option<i64>, at: DateTime<Utc>) {
        let Some(idx) = self.invoice_index(id) else { return };
        if self.invoices[idx].status != "paid" || self.invoices[idx].credited {
            return;
        }
        let tx = self.new_id();
        let inv = &mut self.invoices[idx];
        inv.fee = fee.unwrap_or(self.sim.invoice_fee);
        inv.credited = true;
        inv.transaction_ids.push(tx);
        inv.updated = at;
        self.balance += inv.amount - inv.fee;
        self.invoice_log(idx, "credited", at, false);
    }

    /// PATCH: cancel, or change amount/due/expiration of an unpaid invoice.
    pub fn update_invoice(
        &mut self,
        id: &str,
        cancel: bool,
        amount: Option<i64>,
        due: Option<DateTime<Utc>>,
        expiration: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Value, (&'static str, String)> {
        let idx = self.invoice_index(id).ok_or(("invalidInvoice", format!("Invoice {id} not found")))?;
        if self.invoices[idx].status == "paid" {
            // After payment only a lower amount may be set, and that is a reversal.
            return match amount {
                Some(a) if !cancel && due.is_none() && expiration.is_none() => self.reverse_invoice(id, a, now),
                _ => Err((
                    "invalidOperation",
                    format!("Invoice {id} is paid: only a lower amount can be set, which reverses the difference"),
                )),
            };
        }
        let inv = &mut self.invoices[idx];
        if !matches!(inv.status.as_str(), "created" | "overdue") {
            return Err(("invalidOperation", format!("Invoice {id} is {} and cannot be updated", inv.status)));
        }
        if let Some(a) = amount {
            inv.amount = a;
            inv.nominal_amount = a;
        }
        let reschedule = due.is_some() || expiration.is_some();
        if let Some(d) = due {
            inv.due = d;
            if inv.status == "overdue" && d > now {
                inv.status = "created".into();
            }
        }
        if let Some(e) = expiration {
            inv.expiration = e;
        }
        inv.updated = now;
        if cancel {
            inv.status = "canceled".into();
            inv.pay_at = None;
            self.invoice_log(idx, "canceled", now, false);
        } else if reschedule {
            let (due, exp) = (self.invoices[idx].due, self.invoices[idx].expiration);
            self.schedule_due(id, due, exp);
        }
        Ok(Self::invoice_json(&self.invoices[idx]))
    }

    /// Reverses part of a paid, credited invoice (all of it with `amount` 0): `amount` becomes
    /// the new value, the difference leaves the balance, a `reversed` log is written and a
    /// transaction id appended. The status stays `paid`; `nominalAmount` and `fee` stay too.
    pub fn reverse_invoice(
        &mut self,
        id: &str,
        amount: i64,
        now: DateTime<Utc>,
    ) -> Result<Value, (&'static str, String)> {
        let idx = self.invoice_index(id).ok_or(("invalidInvoice", format!("Invoice {id} not found")))?;
        let inv = &self.invoices[idx];
        if inv.status != "paid" {
            return Err(("invalidOperation", format!("Invoice {id} is {} and cannot be reversed", inv.status)));
        }
        if !inv.credited {
            return Err(("invalidOperation", format!("Invoice {id} is not credited yet and cannot be reversed")));
        }
        if amount < 0 || amount >= inv.amount {
            return Err((
                "invalidOperation",
                format!(
                    "Invoice {id}: amount {amount} must be lower than the paid amount {} (and at least 0) to reverse the difference",
                    inv.amount
                ),
            ));
        }
        let tx = self.new_id();
        let inv = &mut self.invoices[idx];
        self.balance -= inv.amount - amount;
        inv.amount = amount;
        inv.transaction_ids.push(tx);
        inv.updated = now;
        self.invoice_log(idx, "reversed", now, false);
        Ok(Self::invoice_json(&self.invoices[idx]))
    }

    fn overdue(&mut self, id: &str, at: DateTime<Utc>) {
        let Some(idx) = self.invoice_index(id) else { return };
        let inv = &mut self.invoices[idx];
        if inv.status != "created" || inv.due > at {
            return;
        }
        inv.status = "overdue".into();
        inv.updated = at;
        self.invoice_log(idx, "overdue", at, false);
    }

    fn expire(&mut self, id: &str, at: DateTime<Utc>) {
        let Some(idx) = self.invoice_index(id) else { return };
        let inv = &mut self.invoices[idx];
        if !matches!(inv.status.as_str(), "created" | "overdue")
            || inv.due + chrono::Duration::seconds(inv.expiration) > at
        {
            return;
        }
        inv.status = "expired".into();
        inv.updated = at;
        self.invoice_log(idx, "expired", at, false);
    }

    // ---- transfers ----------------------------------------------------------------------------

    pub fn transfer(&self, id: &str) -> Option<&Transfer> {
        self.transfers.iter().find(|t| t.id == id)
    }

    pub fn transfer_json(t: &Transfer) -> Value {
        let mut v = json!({
            "id": t.id,
            "amount": t.amount,
            "fee": t.fee,
            "name": t.name,
            "taxId": t.tax_id,
            "bankCode": t.bank_code,
            "branchCode": t.branch_code,
            "accountNumber": t.account_number,
            "accountType": t.account_type,
            "scheduled": time::format(t.scheduled),
            "tags": t.tags,
            "rules": t.rules,
            "status": t.status,
            "transactionIds": t.transaction_ids,
            "metadata": t.metadata.clone().unwrap_or_else(|| json!({})),
            "created": time::format(t.created),
            "updated": time::format(t.updated),
        });
        if let Some(e) = &t.external_id {
            v["externalId"] = json!(e);
        }
        if let Some(d) = &t.description {
            v["description"] = json!(d);
        }
        if let Some(d) = &t.display_description {
            v["displayDescription"] = json!(d);
        }
        v
    }

    fn is_duplicate(&self, d: &NewTransfer, earlier: &[NewTransfer], now: DateTime<Utc>) -> Option<Refusal> {
        if let Some(ext) = &d.external_id {
            let used = self.transfers.iter().any(|t| t.external_id.as_ref() == Some(ext))
                || earlier.iter().any(|e| e.external_id.as_ref() == Some(ext));
            return used.then(|| Refusal {
                index: 0,
                code: DUPLICATE_EXTERNAL_ID_CODE,
                message: format!("{DUPLICATE_FAILED_MESSAGE}: externalId {ext} was already used"),
            });
        }
        let same = |amount: i64, bank: &str, branch: &str, account: &str| {
            amount == d.amount && bank == d.bank_code && branch == d.branch_code && account == d.account_number
        };
        let repeated = self.transfers.iter().any(|t| {
            !matches!(t.status.as_str(), "failed" | "canceled")
                && t.created.date_naive() == now.date_naive()
                && same(t.amount, &t.bank_code, &t.branch_code, &t.account_number)
        }) || earlier.iter().any(|e| same(e.amount, &e.bank_code, &e.branch_code, &e.account_number));
        repeated.then(|| Refusal {
            index: 0,
            code: SAME_DAY_DUPLICATE_CODE,
            message: format!(
                "{DUPLICATE_FAILED_MESSAGE}: same amount to the same account today; set externalId to send it anyway"
            ),
        })
    }

    pub fn create_transfers(
        &mut self,
        drafts: Vec<NewTransfer>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Value>, Vec<Refusal>> {
        let mut dupes: Vec<Option<Refusal>> = Vec::with_capacity(drafts.len());
        for (i, d) in drafts.iter().enumerate() {
            dupes.push(self.is_duplicate(d, &drafts[..i], now).map(|r| Refusal { index: i, ..r }));
        }
        if self.sim.duplicate_mode == DuplicateMode::Sync && dupes.iter().any(Option::is_some) {
            return Err(dupes.into_iter().flatten().collect());
        }
        let mut out = Vec::with_capacity(drafts.len());
        for (d, dupe) in drafts.into_iter().zip(dupes) {
            let id = self.new_id();
            let fee = self.sim.transfer_fee;
            let starved = self.faults.insufficient_balance_until.is_some_and(|t| now < t);
            let doom = if faults::take(&mut self.faults.fail_next_transfers) {
                Some(faults::text(&self.faults.fail_reason, faults::FAIL_REASON))
            } else if dupe.is_some() {
                Some(DUPLICATE_FAILED_MESSAGE.to_string())
            } else if starved || self.balance < d.amount + fee {
                Some(INSUFFICIENT_BALANCE_MESSAGE.to_string())
            } else {
                None
            };
            let mut transaction_ids = Vec::new();
            if doom.is_none() {
                self.balance -= d.amount + fee;
                transaction_ids.push(self.new_id());
            }
            let scheduled = d.scheduled.unwrap_or(now);
            let seq = self.next_seq();
            let t = Transfer {
                seq,
                id: id.clone(),
                amount: d.amount,
                fee,
                name: d.name,
                tax_id: d.tax_id,
                bank_code: d.bank_code,
                branch_code: d.branch_code,
                account_number: d.account_number,
                account_type: d.account_type,
                external_id: d.external_id,
                scheduled,
                description: d.description,
                display_description: d.display_description,
                tags: d.tags,
                rules: d.rules,
                metadata: d.metadata,
                status: "created".into(),
                transaction_ids,
                created: now,
                updated: now,
                doom,
            };
            out.push(Self::transfer_json(&t));
            self.transfers.push(t);
            self.transfer_log(self.transfers.len() - 1, "created", Vec::new(), now);
            // A transfer scheduled later stays `created` until its time, then steps as usual.
            let first_step = (now + to_chrono(self.sim.transfer_step)).max(scheduled);
            self.at(first_step, Action::TransferStep(id));
        }
        Ok(out)
    }

    /// DELETE: cancels a transfer that is still `created` (scheduled, or not yet picked up),
    /// refunding what its creation debited.
    pub fn cancel_transfer(&mut self, id: &str, now: DateTime<Utc>) -> Result<Value, (&'static str, String)> {
        let idx = self
            .transfers
            .iter()
            .position(|t| t.id == id)
            .ok_or(("invalidTransfer", format!("Transfer {id} not found")))?;
        let t = &mut self.transfers[idx];
        if t.status != "created" {
            return Err((
                CANCEL_REFUSED_CODE,
                format!("Transfer {id} is {} and cannot be canceled; only a created transfer can", t.status),
            ));
        }
        t.status = "canceled".into();
        t.updated = now;
        // A doomed transfer moved no money at creation; any other was debited amount + fee.
        if t.doom.is_none() {
            self.balance += t.amount + t.fee;
        }
        self.transfer_log(idx, "canceled", Vec::new(), now);
        Ok(Self::transfer_json(&self.transfers[idx]))
    }

    /// Money coming back after success (a Pix return or chargeback): the transfer becomes
    /// `failed` with a `failed` log whose `errors` is `[reason]`, a second transaction id, and
    /// `amount + fee` back in the balance.
    pub fn return_transfer(
        &mut self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Value, (&'static str, String)> {
        let idx = self
            .transfers
            .iter()
            .position(|t| t.id == id)
            .ok_or(("invalidTransfer", format!("Transfer {id} not found")))?;
        if self.transfers[idx].status != "success" {
            let status = &self.transfers[idx].status;
            return Err((
                "invalidOperation",
                format!("Transfer {id} is {status}; only a successful transfer can be returned"),
            ));
        }
        let reason = if reason.is_empty() { RETURN_REASON } else { reason };
        let tx = self.new_id();
        let t = &mut self.transfers[idx];
        t.status = "failed".into();
        t.updated = now;
        t.transaction_ids.push(tx);
        self.balance += t.amount + t.fee;
        self.transfer_log(idx, "failed", vec![reason.to_string()], now);
        Ok(Self::transfer_json(&self.transfers[idx]))
    }

    fn transfer_log(&mut self, idx: usize, log_type: &str, errors: Vec<String>, at: DateTime<Utc>) {
        let t = &self.transfers[idx];
        let (resource, id) = (Self::transfer_json(t), t.id.clone());
        self.add_log(Kind::Transfer, log_type, id, resource, errors, at, false);
    }

    fn transfer_step(&mut self, id: &str, at: DateTime<Utc>) {
        let Some(idx) = self.transfers.iter().position(|t| t.id == id) else { return };
        let t = &mut self.transfers[idx];
        let (next, errors) = match (t.status.as_str(), &t.doom) {
            ("created", Some(reason)) => ("failed", vec![reason.clone()]),
            ("created", None) => ("processing", Vec::new()),
            ("processing", _) => ("success", Vec::new()),
            _ => return,
        };
        t.status = next.to_string();
        t.updated = at;
        self.transfer_log(idx, next, errors, at);
        if next == "processing" {
            self.at(at + to_chrono(self.sim.transfer_step), Action::TransferStep(id.to_string()));
        }
    }

    // ---- events, webhooks, deliveries ---------------------------------------------------------

    pub fn event_json(&self, e: &Event) -> Value {
        json!({"id": e.id, "subscription": e.subscription, "created": time::format(e.created),
               "workspaceId": self.workspace_id, "isDelivered": e.is_delivered, "log": e.log})
    }

    pub fn create_webhook(&mut self, url: String, subscriptions: Vec<String>) -> Value {
        let w = Webhook { seq: self.next_seq(), id: self.new_id(), url, subscriptions, deleted: false };
        let v = w.json();
        self.webhooks.push(w);
        v
    }

    /// Runs everything scheduled up to `now`, in time order, and returns the deliveries to send.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Vec<Job> {
        let mut jobs = Vec::new();
        while let Some(entry) = self.schedule.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), action) = entry.remove_entry();
            match action {
                Action::Pay(id) => {
                    // The automatic payer never pays an invoice that is not open and on time.
                    let _ = self.pay(&id, &PayOptions::default(), at, false);
                }
                Action::Credit { id, fee } => self.credit(&id, fee, at),
                Action::Overdue(id) => self.overdue(&id, at),
                Action::Expire(id) => self.expire(&id, at),
                Action::TransferStep(id) => self.transfer_step(&id, at),
                Action::Deliver(d) => jobs.extend(self.prepare(d, at)),
            }
        }
        jobs
    }

    fn prepare(&mut self, d: Delivery, at: DateTime<Utc>) -> Option<Job> {
        let event = self.events.iter().find(|e| e.id == d.event_id)?;
        if event.deleted || (event.is_delivered && !d.duplicate) {
            return None;
        }
        let hook = self.webhooks.iter().find(|w| w.id == d.webhook_id && !w.deleted)?;
        let body = webhook_body(&event.id, &event.subscription, event.created, &self.workspace_id, &event.log);
        let signature = self.sign_webhook(&body);
        Some(Job { delivery: d, at, url: hook.url.clone(), body, signature })
    }

    /// `Digital-Signature` of a webhook body, high-S when the fault says so.
    fn sign_webhook(&self, body: &str) -> String {
        let signature = sign::sign(&self.signing_key, body.as_bytes());
        if self.faults.high_s_signatures { sign::high_s_twin(&signature).unwrap_or(signature) } else { signature }
    }

    /// Marks an id as used by a foreign event; refuses one of our own.
    fn foreign_id(&mut self, given: Option<&str>, what: &str) -> Result<String, String> {
        let Some(id) = given else {
            let id = self.new_id();
            self.foreign_ids.insert(id.clone());
            return Ok(id);
        };
        if id.trim().is_empty() {
            return Err(format!("{what} must not be empty"));
        }
        if self.ids.contains(id) && !self.foreign_ids.contains(id) {
            return Err(format!("{what} {id} is one of this emulator's own ids; a foreign event needs another"));
        }
        self.ids.insert(id.to_string());
        self.foreign_ids.insert(id.to_string());
        Ok(id.to_string())
    }

    /// An event of another workspace in the delivered webhook form, signed with our webhook key
    /// (Stark Bank signs every workspace's events with the same key). Not stored: our API never
    /// shows it, as the real API shows a project only its own workspace.
    pub fn foreign_event(&mut self, spec: &ForeignEvent, now: DateTime<Utc>) -> Result<SignedEvent, String> {
        let kind = spec.subscription;
        if kind == Kind::Invoice && spec.external_id.is_some() {
            return Err("an invoice has no externalId; set it on a transfer".into());
        }
        let tax_id = match &spec.tax_id {
            Some(t) => Some(taxid::normalize(t).ok_or_else(|| format!("taxId {t} is not a valid CPF or CNPJ"))?),
            None => None,
        };
        let workspace_id = self.foreign_id(spec.workspace_id.as_deref(), "workspace_id")?;
        let id = self.foreign_id(spec.id.as_deref(), "id")?;
        let log_type = spec.log_type.clone().unwrap_or_else(|| match kind {
            Kind::Invoice => "credited".into(),
            Kind::Transfer => "success".into(),
        });
        let status = spec.status.clone().unwrap_or_else(|| implied_status(kind, &log_type).to_string());
        let amount = match spec.amount {
            Some(a) => a,
            None => self.rng.random_range(100..=10_000),
        };
        let tags: Vec<String> = spec.tags.iter().map(|t| t.to_lowercase()).collect();
        let resource = match kind {
            Kind::Invoice => {
                let settled = matches!(log_type.as_str(), "credited" | "reversed");
                let fee = spec.fee.unwrap_or(if settled { self.sim.invoice_fee } else { 0 });
                let hex = self.hex32();
                let transaction_ids = if settled { vec![self.new_id()] } else { Vec::new() };
                Self::invoice_json(&Invoice {
                    seq: 0,
                    id,
                    amount,
                    nominal_amount: amount,
                    fee,
                    fine_amount: 0,
                    interest_amount: 0,
                    discount_amount: 0,
                    status,
                    name: spec.name.clone().unwrap_or_else(|| "Maria Souza".into()),
                    tax_id: tax_id.unwrap_or_else(|| "012.345.678-90".into()),
                    due: now + chrono::Duration::days(2),
                    expiration: 5_097_600,
                    fine: 2.0,
                    interest: 1.0,
                    discounts: Vec::new(),
                    descriptions: Vec::new(),
                    tags,
                    rules: Vec::new(),
                    splits: Vec::new(),
                    brcode: brcode(&hex, amount),
                    link: format!("https://workspace-{workspace_id}.sandbox.starkbank.com/invoicelink/{hex}"),
                    pdf: format!("{}/v2/invoice/{hex}.pdf", self.sim.base_url),
                    transaction_ids,
                    created: now,
                    updated: now,
                    pay_at: None,
                    credited: settled,
                })
            }
            Kind::Transfer => {
                let moved = matches!(status.as_str(), "created" | "processing" | "success");
                let transaction_ids = if moved { vec![self.new_id()] } else { Vec::new() };
                Self::transfer_json(&Transfer {
                    seq: 0,
                    id,
                    amount,
                    fee: spec.fee.unwrap_or(self.sim.transfer_fee),
                    name: spec.name.clone().unwrap_or_else(|| "Stark Bank S.A.".into()),
                    tax_id: tax_id.unwrap_or_else(|| "20.018.183/0001-80".into()),
                    bank_code: "20018183".into(),
                    branch_code: "0001".into(),
                    account_number: "6341320293482496".into(),
                    account_type: "payment".into(),
                    external_id: spec.external_id.clone(),
                    scheduled: now,
                    description: None,
                    display_description: None,
                    tags,
                    rules: Vec::new(),
                    metadata: None,
                    status,
                    transaction_ids,
                    created: now,
                    updated: now,
                    doom: None,
                })
            }
        };
        let log = Log {
            seq: 0,
            id: self.new_id(),
            kind,
            log_type,
            resource_id: String::new(),
            created: now,
            errors: spec.errors.clone(),
            resource,
        };
        let event_id = self.new_id();
        let body = webhook_body(&event_id, kind.name(), now, &workspace_id, &log.json());
        let signature = self.sign_webhook(&body);
        Ok(SignedEvent { body, signature, event_id })
    }

    /// Records what a POST came to; schedules a retry or a duplicate as the rules say.
    pub fn record(&mut self, job: &Job, outcome: Outcome) {
        let d = &job.delivery;
        let credited = self
            .events
            .iter()
            .find(|e| e.id == d.event_id && e.subscription == "invoice" && e.log_type == "credited")
            .map(|e| e.resource_id.clone());
        if let Some(invoice_id) = credited {
            self.release_held(&invoice_id, job.at);
        }
        let (name, status) = match &outcome {
            Outcome::Status(200) => ("delivered".to_string(), Some(200)),
            Outcome::Status(s) => ("badHttpStatus".to_string(), Some(*s)),
            Outcome::Failed { code, .. } => (code.to_string(), None),
        };
        self.deliveries.push(SnapDelivery {
            event_id: d.event_id.clone(),
            webhook_id: d.webhook_id.clone(),
            url: job.url.clone(),
            at: job.at,
            attempt: d.attempt,
            outcome: name,
            http_status: status,
            duplicate: d.duplicate,
        });
        if let Outcome::Status(200) = outcome {
            if let Some(e) = self.events.iter_mut().find(|e| e.id == d.event_id) {
                e.is_delivered = true;
            }
            if d.repeat && !d.duplicate {
                self.at(job.at, Action::Deliver(Delivery { duplicate: true, repeat: false, ..d.clone() }));
            }
            return;
        }
        if d.duplicate {
            return;
        }
        let (code, message) = match outcome {
            Outcome::Status(s) => ("badHttpStatus", format!("HTTP POST request returned status {s}")),
            Outcome::Failed { code, message } => (code, message),
        };
        let attempt = Attempt {
            seq: self.next_seq(),
            id: self.new_id(),
            code: code.to_string(),
            message,
            event_id: d.event_id.clone(),
            webhook_id: d.webhook_id.clone(),
            created: job.at,
        };
        self.attempts.push(attempt);
        if let Some(minutes) = RETRY_DELAYS_MINUTES.get(d.attempt as usize) {
            let next = Delivery { attempt: d.attempt + 1, ..d.clone() };
            self.at(job.at + chrono::Duration::minutes(*minutes), Action::Deliver(next));
        }
    }

    // ---- inspection ---------------------------------------------------------------------------

    /// The published view (see `snapshot`'s module doc for why it is a copy field by field).
    pub fn snapshot(&self, now: DateTime<Utc>) -> Snapshot {
        let logs = |all: &[Log], id: &str| -> Vec<SnapLog> {
            all.iter()
                .filter(|l| l.resource_id == id)
                .map(|l| SnapLog {
                    id: l.id.clone(),
                    log_type: l.log_type.clone(),
                    created: l.created,
                    errors: l.errors.clone(),
                })
                .collect()
        };
        Snapshot {
            now,
            seed: self.seed,
            workspace_id: self.workspace_id.clone(),
            balance: self.balance,
            auth_failures: self.auth_failures,
            invoices: self
                .invoices
                .iter()
                .map(|i| SnapInvoice {
                    id: i.id.clone(),
                    amount: i.amount,
                    nominal_amount: i.nominal_amount,
                    fee: i.fee,
                    fine_amount: i.fine_amount,
                    interest_amount: i.interest_amount,
                    discount_amount: i.discount_amount,
                    status: i.status.clone(),
                    name: i.name.clone(),
                    tax_id: i.tax_id.clone(),
                    due: i.due,
                    expiration: i.expiration,
                    tags: i.tags.clone(),
                    created: i.created,
                    updated: i.updated,
                    will_pay_at: i.pay_at,
                    transaction_ids: i.transaction_ids.clone(),
                    logs: logs(&self.invoice_logs, &i.id),
                })
                .collect(),
            transfers: self
                .transfers
                .iter()
                .map(|t| SnapTransfer {
                    id: t.id.clone(),
                    amount: t.amount,
                    fee: t.fee,
                    external_id: t.external_id.clone(),
                    tags: t.tags.clone(),
                    status: t.status.clone(),
                    bank_code: t.bank_code.clone(),
                    branch_code: t.branch_code.clone(),
                    account_number: t.account_number.clone(),
                    account_type: t.account_type.clone(),
                    name: t.name.clone(),
                    tax_id: t.tax_id.clone(),
                    scheduled: t.scheduled,
                    transaction_ids: t.transaction_ids.clone(),
                    created: t.created,
                    updated: t.updated,
                    logs: logs(&self.transfer_logs, &t.id),
                })
                .collect(),
            events: self
                .events
                .iter()
                .map(|e| SnapEvent {
                    id: e.id.clone(),
                    subscription: e.subscription.clone(),
                    log_type: e.log_type.clone(),
                    log_id: e.log_id.clone(),
                    resource_id: e.resource_id.clone(),
                    created: e.created,
                    is_delivered: e.is_delivered,
                    deleted: e.deleted,
                })
                .collect(),
            attempts: self
                .attempts
                .iter()
                .map(|a| SnapAttempt {
                    id: a.id.clone(),
                    code: a.code.clone(),
                    message: a.message.clone(),
                    event_id: a.event_id.clone(),
                    webhook_id: a.webhook_id.clone(),
                    created: a.created,
                })
                .collect(),
            deliveries: self.deliveries.clone(),
            webhooks: self
                .webhooks
                .iter()
                .map(|w| SnapWebhook {
                    id: w.id.clone(),
                    url: w.url.clone(),
                    subscriptions: w.subscriptions.clone(),
                    deleted: w.deleted,
                })
                .collect(),
            requests: self.requests.clone(),
            faults: self.faults.clone(),
        }
    }
}

/// Exactly what Stark Bank POSTs: `{"event": {...}}` with no isDelivered, keys sorted, Python
/// separators, ASCII-escaped.
fn webhook_body(id: &str, subscription: &str, created: DateTime<Utc>, workspace_id: &str, log: &Value) -> String {
    pyjson::dumps(&json!({"event": {
        "id": id, "subscription": subscription, "created": time::format(created),
        "workspaceId": workspace_id, "log": log,
    }}))
}

/// The status a resource has when a log of this type is written.
fn implied_status(kind: Kind, log_type: &str) -> &'static str {
    match (kind, log_type) {
        (Kind::Invoice, "paid" | "credited" | "reversed") => "paid",
        (Kind::Invoice, "canceled") | (Kind::Transfer, "canceled") => "canceled",
        (Kind::Invoice, "overdue") => "overdue",
        (Kind::Invoice, "expired") => "expired",
        (Kind::Transfer, "sending" | "processing") => "processing",
        (Kind::Transfer, "success") => "success",
        (Kind::Transfer, "failed") => "failed",
        _ => "created",
    }
}

/// A Pix "copy and paste" EMV payload with a valid CRC, pointing nowhere real.
fn brcode(hex: &str, amount: i64) -> String {
    fn tlv(id: &str, v: &str) -> String {
        format!("{id}{:02}{v}", v.len())
    }
    let account = tlv("00", "br.gov.bcb.pix") + &tlv("25", &format!("brcode-h.sandbox.starkinfra.com/v2/{hex}"));
    let mut s = tlv("00", "01") + &tlv("01", "12") + &tlv("26", &account) + &tlv("52", "0000") + &tlv("53", "986");
    if amount > 0 {
        s += &tlv("54", &format!("{}.{:02}", amount / 100, amount % 100));
    }
    s += &(tlv("58", "BR")
        + &tlv("59", "Stark Sweep Sandbox")
        + &tlv("60", "Sao Paulo")
        + &tlv("62", &tlv("05", "***")));
    s += "6304";
    let mut crc: u16 = 0xFFFF;
    for b in s.bytes() {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    format!("{s}{crc:04X}")
}
