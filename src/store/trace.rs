//! Everything the store holds about one invoice, for `stark-sweep trace`: its draft and slot,
//! every event about it or about its transfers, its credit, our sends and the transfers Stark
//! Bank reported. Read-only.
//!
//! Finding the events of one invoice scans the events table (there is no index on the resource
//! id, and adding one would be a migration): fine for a command an operator runs by hand.

use super::db::{OptionalExtension as _, params};
use super::{Credit, Draft, EventSource, InvoiceState, SendRow, Store, TransferRow};

/// What an id given to `trace` turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TracedBy {
    Invoice,
    Event,
    Transfer,
    ExternalId,
    DraftKey,
}

/// The invoice (or, before it exists, the draft) an id leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub by: TracedBy,
    pub invoice_id: Option<String>,
    pub draft_key: Option<String>,
}

/// One stored event, with its body (the caller reads only the fields it shows from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: String,
    pub subscription: String,
    pub log_type: String,
    pub resource_id: String,
    /// Stark Bank's time of the event.
    pub created: String,
    pub source: EventSource,
    /// A webhook delivery whose signature was verified before it was stored (every stored
    /// delivery is); events pulled from the API carry none.
    pub signature_verified: bool,
    pub received_at: String,
    pub applied_at: Option<String>,
    pub delivered_at: Option<String>,
    pub body: Vec<u8>,
}

/// The slot a draft belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotHistory {
    pub slot: u32,
    pub claimed_at: String,
    pub attempted_at: Option<String>,
    pub issued_at: Option<String>,
    pub failed_reason: Option<String>,
}

/// Everything about one invoice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvoiceHistory {
    pub campaign_tag: Option<String>,
    pub slots: Option<u32>,
    pub draft: Option<Draft>,
    pub slot: Option<SlotHistory>,
    pub invoice: Option<InvoiceState>,
    /// Events about the invoice and about its transfers, in Stark Bank's order.
    pub events: Vec<EventRecord>,
    pub credit: Option<Credit>,
    pub sends: Vec<SendRow>,
    /// Every transfer recorded for the invoice, ours or not.
    pub transfers: Vec<TransferRow>,
}

impl Store {
    /// The invoice `id` names: an invoice id, an event id (of the invoice, or of one of its
    /// transfers), a transfer id, an externalId, a credit's `log:` id, or a draft key.
    pub fn trace_subject(&self, id: &str) -> anyhow::Result<Option<Subject>> {
        let id = id.trim();
        let one = |sql: &str| -> anyhow::Result<Option<String>> {
            self.db.query_row(sql, params![id], |r| r.get::<Option<String>>(0)).optional().map(Option::flatten)
        };
        let subject = |by, invoice_id: String| Some(Subject { by, invoice_id: Some(invoice_id), draft_key: None });
        for sql in [
            "SELECT invoice_id FROM invoice_drafts WHERE invoice_id = ?1",
            "SELECT invoice_id FROM credits WHERE invoice_id = ?1",
            "SELECT id FROM invoices WHERE id = ?1",
        ] {
            if let Some(inv) = one(sql)? {
                return Ok(subject(TracedBy::Invoice, inv));
            }
        }
        let event = one("SELECT CASE WHEN e.subscription = 'invoice' THEN e.resource_id
                         ELSE (SELECT t.invoice_id FROM transfers t WHERE t.id = e.resource_id) END
             FROM events e WHERE e.id = ?1")?
        .or(one("SELECT invoice_id FROM credits WHERE event_id = ?1")?);
        if let Some(inv) = event.filter(|i| !i.is_empty()) {
            return Ok(subject(TracedBy::Event, inv));
        }
        if let Some(inv) = one("SELECT invoice_id FROM transfers WHERE id = ?1")?.filter(|i| !i.is_empty()) {
            return Ok(subject(TracedBy::Transfer, inv));
        }
        let external = one("SELECT invoice_id FROM sends WHERE external_id = ?1")?
            .or(one("SELECT invoice_id FROM transfers WHERE external_id = ?1 AND invoice_id <> '' LIMIT 1")?);
        if let Some(inv) = external {
            return Ok(subject(TracedBy::ExternalId, inv));
        }
        let draft: Option<(String, Option<String>)> = self
            .db
            .query_row("SELECT draft_key, invoice_id FROM invoice_drafts WHERE draft_key = ?1", params![id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        Ok(draft.map(|(key, invoice_id)| Subject { by: TracedBy::DraftKey, invoice_id, draft_key: Some(key) }))
    }

    /// Everything about the subject's invoice (or draft), read in one snapshot.
    pub fn invoice_history(&self, subject: &Subject) -> anyhow::Result<InvoiceHistory> {
        let tx = self.db.read_tx()?;
        let mut h = InvoiceHistory::default();
        let draft_key: Option<String> = match (&subject.draft_key, &subject.invoice_id) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(inv)) => tx
                .query_row("SELECT draft_key FROM invoice_drafts WHERE invoice_id = ?1", params![inv], |r| r.get(0))
                .optional()?,
            (None, None) => None,
        };
        if let Some(key) = &draft_key {
            let slot: Option<u32> = tx
                .query_row("SELECT slot FROM invoice_drafts WHERE draft_key = ?1", params![key], |r| r.get(0))
                .optional()?;
            if let Some(slot) = slot {
                h.draft = self.drafts(slot)?.into_iter().find(|d| &d.draft_key == key);
                h.slot = tx
                    .query_row(
                        "SELECT slot, claimed_at, attempted_at, issued_at, failed_reason FROM slots WHERE slot = ?1",
                        params![slot],
                        |r| {
                            Ok(SlotHistory {
                                slot: r.get(0)?,
                                claimed_at: r.get(1)?,
                                attempted_at: r.get(2)?,
                                issued_at: r.get(3)?,
                                failed_reason: r.get(4)?,
                            })
                        },
                    )
                    .optional()?;
            }
            if let Some(c) = self.campaign()? {
                h.slots = Some(c.slots());
                h.campaign_tag = Some(c.tag);
            }
        }
        let Some(inv) = subject.invoice_id.as_deref() else {
            tx.commit()?;
            return Ok(h);
        };
        h.invoice = tx
            .query_row(
                "SELECT id, status, amount, nominal_amount, fee, last_log_at FROM invoices WHERE id = ?1",
                params![inv],
                super::credits::invoice_from_row,
            )
            .optional()?;
        h.events = tx.query_map(
            "SELECT id, subscription, log_type, resource_id, created, source, signature IS NOT NULL, received_at,
                        applied_at, delivered_at, body
                 FROM events
                 WHERE (subscription = 'invoice' AND resource_id = ?1)
                    OR (subscription = 'transfer' AND resource_id IN (SELECT id FROM transfers WHERE invoice_id = ?1))
                 ORDER BY created, received_at, id",
            params![inv],
            |r| {
                Ok(EventRecord {
                    id: r.get(0)?,
                    subscription: r.get(1)?,
                    log_type: r.get(2)?,
                    resource_id: r.get(3)?,
                    created: r.get(4)?,
                    source: EventSource::parse(&r.get::<String>(5)?)?,
                    signature_verified: r.get(6)?,
                    received_at: r.get(7)?,
                    applied_at: r.get(8)?,
                    delivered_at: r.get(9)?,
                    body: r.get(10)?,
                })
            },
        )?;
        // Through the sweep's own readers (same connection, same snapshot): one column list each.
        h.credit = self.credit(inv)?;
        h.sends = self.sends()?.into_iter().filter(|s| s.invoice_id == inv).collect();
        h.transfers = self.transfers()?.into_iter().filter(|t| t.invoice_id == inv).collect();
        h.transfers.sort_by(|a, b| (&a.updated_at, &a.id).cmp(&(&b.updated_at, &b.id)));
        tx.commit()?;
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    #[test]
    fn every_kind_of_id_leads_to_its_invoice() {
        let (_d, store) = temp_store();
        store
            .db
            .execute_batch(
                "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state) VALUES
                   ('inv1', 'log:l9', 100, 0, 100, 't', 't', 'open');
                 INSERT INTO sends (external_id, invoice_id, attempt, amount, claimed_at) VALUES ('x-1', 'inv1', 1, 100, 't');
                 INSERT INTO transfers (id, external_id, invoice_id, amount, status, updated_at, ours) VALUES
                   ('tr1', 'x-1', 'inv1', 100, 'success', 't', 1);
                 INSERT INTO events (id, subscription, log_type, log_id, resource_id, created, body, source, received_at) VALUES
                   ('ev1', 'invoice', 'paid', 'l1', 'inv1', 't', '{}', 'webhook', 't'),
                   ('ev2', 'transfer', 'success', 'l2', 'tr1', 't', '{}', 'api', 't');",
            )
            .unwrap();
        let by = |id: &str| store.trace_subject(id).unwrap().map(|s| (s.by, s.invoice_id.unwrap()));
        assert_eq!(by("inv1"), Some((TracedBy::Invoice, "inv1".into())));
        assert_eq!(by("ev1"), Some((TracedBy::Event, "inv1".into())));
        assert_eq!(by("ev2"), Some((TracedBy::Event, "inv1".into())), "a transfer's event");
        assert_eq!(by("log:l9"), Some((TracedBy::Event, "inv1".into())));
        assert_eq!(by("tr1"), Some((TracedBy::Transfer, "inv1".into())));
        assert_eq!(by("x-1"), Some((TracedBy::ExternalId, "inv1".into())));
        assert_eq!(by("nope"), None);
        let h = store.invoice_history(&store.trace_subject("tr1").unwrap().unwrap()).unwrap();
        assert_eq!(h.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["ev1", "ev2"]);
        assert_eq!((h.sends.len(), h.transfers.len()), (1, 1));
        assert!(!h.events[0].signature_verified && h.credit.is_some());
    }
}
