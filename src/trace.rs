//! The life of one invoice, in time order, from what the store holds (`stark-sweep trace`): its
//! draft and slot, every event received (where from, whether its signature was checked, when it
//! was applied), its credit and net, every send (externalId, outcome, the bank's reason) and
//! every status of every transfer.
//!
//! Owns: which id leads where (through `store::trace_subject`), what each moment says, and the
//! order. Does not own: SQL (`store::trace`) or printing (`cmd::trace`). No payer data: event
//! bodies are read for a few fields only (never a name or tax id), and the draft's payer is
//! included only when asked for.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::money::brl;
use crate::starkbank::time;
use crate::store::{
    CreditState, EventRecord, EventSource, InvoiceHistory, SendOutcome, Store, Subject, TracedBy, TransferRow,
};

/// The payer of the invoice, shown only on request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payer {
    pub name: String,
    pub tax_id: String,
}

/// One moment of the invoice's life.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// When it happened, as recorded (Stark Bank's time for its events and logs).
    pub at: String,
    /// `slot-claimed`, `create-sent`, `slot-issued`, `event`, `credited`, `send`, `transfer`.
    pub kind: &'static str,
    /// What happened, in a sentence.
    pub summary: String,
    /// The same, as fields.
    #[serde(flatten)]
    pub detail: Map<String, Value>,
}

/// Everything about one invoice.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    /// The id that was asked for, and what it turned out to be.
    pub id: String,
    pub traced_by: TracedBy,
    pub invoice_id: Option<String>,
    pub draft_key: Option<String>,
    pub campaign: Option<String>,
    /// 1 to the campaign's number of slots.
    pub slot: Option<u32>,
    pub slots: Option<u32>,
    /// As drafted, in cents.
    pub amount: Option<i64>,
    pub due: Option<String>,
    /// `None` unless `show_payer`.
    pub payer: Option<Payer>,
    /// Where it stands now.
    pub invoice_status: Option<String>,
    pub credit_state: Option<CreditState>,
    pub credit_reason: Option<String>,
    pub timeline: Vec<Entry>,
}

/// The trace of whatever invoice `id` leads to; `None` when the store knows no such id.
pub fn trace(store: &Store, id: &str, show_payer: bool) -> anyhow::Result<Option<Trace>> {
    let Some(subject) = store.trace_subject(id)? else { return Ok(None) };
    let history = store.invoice_history(&subject)?;
    Ok(Some(build(id.trim(), &subject, &history, show_payer)))
}

fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn entry(at: &str, kind: &'static str, summary: String, detail: Value) -> Entry {
    Entry { at: at.to_string(), kind, summary, detail: fields(detail) }
}

/// The timeline of `history`, sorted by time (moments without a readable time last, in order).
pub fn build(id: &str, subject: &Subject, h: &InvoiceHistory, show_payer: bool) -> Trace {
    let mut timeline = Vec::new();
    let human_slot = h.slot.as_ref().map(|s| s.slot + 1);
    let of_slots = |k: u32| h.slots.map_or(format!("{k}"), |n| format!("{k}/{n}"));
    if let (Some(d), Some(s)) = (&h.draft, &h.slot) {
        let k = s.slot + 1;
        let payer = if show_payer { format!("; payer {} ({})", d.name, d.tax_id) } else { String::new() };
        timeline.push(entry(
            &s.claimed_at,
            "slot-claimed",
            format!(
                "slot {} of campaign {} claimed with this invoice's draft {} (position {}): {}, due {}{payer}",
                of_slots(k),
                h.campaign_tag.as_deref().unwrap_or("?"),
                d.draft_key,
                d.position + 1,
                brl(d.amount),
                d.due
            ),
            json!({"slot": k, "draftKey": d.draft_key, "amount": d.amount, "due": d.due}),
        ));
        if let Some(at) = &s.attempted_at {
            let failed = s
                .failed_reason
                .as_deref()
                .map(|r| format!("; Stark Bank refused to complete the slot: {r}"))
                .unwrap_or_default();
            timeline.push(entry(
                at,
                "create-sent",
                format!("the create request for slot {} was sent (its last attempt){failed}", of_slots(k)),
                json!({"slot": k, "failedReason": s.failed_reason}),
            ));
        }
        match (&s.issued_at, &d.invoice_id) {
            (Some(at), Some(inv)) => timeline.push(entry(
                at,
                "slot-issued",
                format!("slot {} issued: this draft is invoice {inv}", of_slots(k)),
                json!({"slot": k, "invoiceId": inv}),
            )),
            (None, Some(inv)) => timeline.push(entry(
                "",
                "slot-issued",
                format!("this draft is invoice {inv}; slot {} is not complete yet", of_slots(k)),
                json!({"slot": k, "invoiceId": inv}),
            )),
            (_, None) => timeline.push(entry(
                "",
                "slot-issued",
                format!("this draft has no invoice yet (slot {} is being completed)", of_slots(k)),
                json!({"slot": k, "invoiceId": null}),
            )),
        }
    }
    for e in &h.events {
        timeline.push(event_entry(e, &h.transfers));
    }
    if let Some(c) = &h.credit {
        let why = c.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        timeline.push(entry(
            &c.credited_at,
            "credited",
            format!(
                "credited {} less fee {}: net {} to transfer (from {}; recorded {}); the credit is now {}{why}",
                brl(c.amount),
                brl(c.fee),
                brl(c.net),
                c.event_id,
                c.recorded_at,
                c.state.as_str()
            ),
            json!({
                "eventId": c.event_id, "amount": c.amount, "fee": c.fee, "net": c.net,
                "recordedAt": c.recorded_at, "state": c.state, "reason": c.reason, "origin": c.origin,
            }),
        ));
    }
    for s in &h.sends {
        let outcome = match (s.outcome, s.error.as_deref()) {
            (Some(SendOutcome::Accepted), _) => "Stark Bank accepted it".to_string(),
            (Some(SendOutcome::Refused), why) => {
                format!("refused for now: {}; the same externalId is sent again", why.unwrap_or("no reason given"))
            }
            (Some(SendOutcome::Rejected), why) => format!("refused: {}", why.unwrap_or("no reason given")),
            (Some(SendOutcome::Unknown), why) => format!(
                "no answer ({}); resolved by looking the invoice's transfers up by tag",
                why.unwrap_or("no reason given")
            ),
            (None, _) => "its outcome is not recorded (in flight, or the run died)".to_string(),
        };
        let tries = if s.tries > 1 { format!(" ({} requests)", s.tries) } else { String::new() };
        timeline.push(entry(
            &s.claimed_at,
            "send",
            format!(
                "transfer attempt {} of {} as externalId {}{tries}: {outcome}",
                s.attempt,
                brl(s.amount),
                s.external_id
            ),
            json!({
                "attempt": s.attempt, "externalId": s.external_id, "amount": s.amount, "outcome": s.outcome,
                "reason": s.error, "tries": s.tries, "target": s.target,
            }),
        ));
    }
    // A transfer's statuses come from its events; a status learned otherwise (the create answer,
    // a refresh or a lookup) is its own moment.
    for t in &h.transfers {
        let seen =
            h.events.iter().any(|e| e.subscription == "transfer" && e.resource_id == t.id && e.log_type == t.status);
        if !seen {
            timeline.push(transfer_entry(t));
        }
    }
    timeline.sort_by_key(|e| time::parse(&e.at).map_or((1, DateTime::<Utc>::MIN_UTC), |t| (0, t)));
    Trace {
        id: id.to_string(),
        traced_by: subject.by,
        invoice_id: subject.invoice_id.clone().or_else(|| h.draft.as_ref().and_then(|d| d.invoice_id.clone())),
        draft_key: h.draft.as_ref().map(|d| d.draft_key.clone()),
        campaign: h.campaign_tag.clone(),
        slot: human_slot,
        slots: h.slots,
        amount: h.draft.as_ref().map(|d| d.amount),
        due: h.draft.as_ref().map(|d| d.due.clone()),
        payer: h
            .draft
            .as_ref()
            .filter(|_| show_payer)
            .map(|d| Payer { name: d.name.clone(), tax_id: d.tax_id.clone() }),
        invoice_status: h.invoice.as_ref().map(|i| i.status.clone()),
        credit_state: h.credit.as_ref().map(|c| c.state),
        credit_reason: h.credit.as_ref().and_then(|c| c.reason.clone()),
        timeline,
    }
}

fn transfer_entry(t: &TransferRow) -> Entry {
    let why = t.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    let whose = if t.ours { "" } else { " (not sent by this deployment)" };
    let returned = if t.returned { ", returned after it had succeeded" } else { "" };
    entry(
        &t.updated_at,
        "transfer",
        format!(
            "transfer {} (externalId {}, {}){whose} is {}{returned}{why}",
            t.id,
            t.external_id,
            brl(t.amount),
            t.status
        ),
        json!({
            "transferId": t.id, "externalId": t.external_id, "amount": t.amount, "status": t.status,
            "reason": t.reason, "ours": t.ours, "returned": t.returned,
        }),
    )
}

/// Where an event came from, in words.
fn source(e: &EventRecord) -> String {
    let applied = match &e.applied_at {
        Some(at) => format!("applied {at}"),
        None => "not applied yet".to_string(),
    };
    match e.source {
        EventSource::Webhook => format!(
            "delivered by webhook, {}, received {}, {applied}",
            if e.signature_verified { "signature verified" } else { "no signature" },
            e.received_at
        ),
        EventSource::Api => {
            format!("pulled from the API (our own signed request), received {}, {applied}", e.received_at)
        }
    }
}

fn event_entry(e: &EventRecord, transfers: &[TransferRow]) -> Entry {
    let v: Value = serde_json::from_slice(&e.body).unwrap_or(Value::Null);
    let log = v.get("event").unwrap_or(&v).get("log").cloned().unwrap_or(Value::Null);
    let errors = crate::sweep::reason_of(&log);
    let base = json!({
        "eventId": e.id, "subscription": e.subscription, "logType": e.log_type,
        "source": match e.source { EventSource::Webhook => "webhook", EventSource::Api => "api" },
        "signatureVerified": e.signature_verified, "receivedAt": e.received_at,
        "appliedAt": e.applied_at, "deliveredAt": e.delivered_at,
    });
    let mut detail = fields(base);
    let summary = if e.subscription == "transfer" {
        let t = log.get("transfer").cloned().unwrap_or(Value::Null);
        let external = t
            .get("externalId")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| transfers.iter().find(|x| x.id == e.resource_id).map(|x| x.external_id.clone()))
            .unwrap_or_default();
        detail.insert("transferId".into(), json!(e.resource_id));
        detail.insert("externalId".into(), json!(external));
        detail.insert("reason".into(), json!(errors));
        let why = errors.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        format!("transfer {} (externalId {external}) {}{why}; event {}, {}", e.resource_id, e.log_type, e.id, source(e))
    } else {
        let inv = log.get("invoice").cloned().unwrap_or(Value::Null);
        let amount = inv.get("amount").and_then(Value::as_i64);
        let fee = inv.get("fee").and_then(Value::as_i64);
        let status = inv.get("status").and_then(Value::as_str).map(str::to_string);
        detail.insert("invoiceStatus".into(), json!(status));
        detail.insert("amount".into(), json!(amount));
        detail.insert("fee".into(), json!(fee));
        let money = match (amount, fee) {
            (Some(a), Some(f)) if f > 0 => format!(", {} (fee {})", brl(a), brl(f)),
            (Some(a), _) => format!(", {}", brl(a)),
            _ => String::new(),
        };
        format!("invoice {}{money}; event {}, {}", e.log_type, e.id, source(e))
    };
    Entry { at: e.created.clone(), kind: "event", summary, detail }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is the failed assertion")]
    use super::*;
    use crate::store::{Draft, SendRow, SlotHistory};

    fn history() -> InvoiceHistory {
        InvoiceHistory {
            campaign_tag: Some("c1".into()),
            slots: Some(8),
            draft: Some(Draft {
                draft_key: "k1".into(),
                slot: 0,
                position: 0,
                name: "Ana Lima".into(),
                tax_id: "337.451.076-08".into(),
                amount: 1000,
                due: "2026-01-03T00:00:00+00:00".into(),
                expiration: 1,
                tags: vec![],
                invoice_id: Some("i1".into()),
            }),
            slot: Some(SlotHistory {
                slot: 0,
                claimed_at: "2026-01-01T00:00:00+00:00".into(),
                attempted_at: Some("2026-01-01T00:00:01+00:00".into()),
                issued_at: Some("2026-01-01T00:00:02+00:00".into()),
                failed_reason: None,
            }),
            events: vec![EventRecord {
                id: "e1".into(),
                subscription: "invoice".into(),
                log_type: "credited".into(),
                resource_id: "i1".into(),
                created: "2026-01-01T00:10:00+00:00".into(),
                source: EventSource::Webhook,
                signature_verified: true,
                received_at: "2026-01-01T00:10:01+00:00".into(),
                applied_at: None,
                delivered_at: None,
                body: br#"{"event": {"log": {"type": "credited", "errors": [], "invoice": {"amount": 1000, "fee": 50,
                    "status": "paid", "name": "Ana Lima", "taxId": "337.451.076-08"}}}}"#
                    .to_vec(),
            }],
            sends: vec![SendRow {
                external_id: "x1".into(),
                invoice_id: "i1".into(),
                attempt: 1,
                amount: 950,
                claimed_at: "2026-01-01T00:05:00+00:00".into(),
                outcome: Some(SendOutcome::Rejected),
                error: Some("invalid account".into()),
                target: None,
                tries: 1,
            }],
            ..InvoiceHistory::default()
        }
    }

    #[test]
    fn moments_are_in_time_order_and_the_payer_is_hidden() {
        let subject = Subject { by: TracedBy::Invoice, invoice_id: Some("i1".into()), draft_key: None };
        let t = build("i1", &subject, &history(), false);
        let kinds: Vec<&str> = t.timeline.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["slot-claimed", "create-sent", "slot-issued", "send", "event"]);
        let text = serde_json::to_string(&t).unwrap();
        assert!(!text.contains("Ana") && !text.contains("337"), "{text}");
        assert!(t.timeline[3].summary.contains("refused: invalid account"), "{}", t.timeline[3].summary);
        assert!(t.timeline[4].summary.contains("signature verified"), "{}", t.timeline[4].summary);
        let shown = build("i1", &subject, &history(), true);
        assert_eq!(shown.payer.unwrap().name, "Ana Lima");
        assert!(shown.timeline[0].summary.contains("Ana Lima"));
    }
}
