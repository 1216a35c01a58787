//! Credits, sends and transfers (process-events).
//!
//! `credits` holds one row per credited invoice (what must be transferred), `sends` one row per
//! transfer we asked for (claimed before the request), `transfers` what Stark Bank says exists.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension as _, params};

use super::{Store, ts};

/// An event not yet applied.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub id: String,
    pub subscription: String,
    pub log_type: String,
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
    pub ours: bool,
    pub log_at: String,
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
    pub state: String,
    pub reason: Option<String>,
    pub next_send_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub external_id: String,
    pub invoice_id: String,
    pub attempt: u32,
    pub amount: i64,
    pub claimed_at: String,
    /// `None` while the request's fate is not recorded (in flight, or the process died).
    pub outcome: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRow {
    pub id: String,
    pub external_id: String,
    pub invoice_id: String,
    pub amount: i64,
    pub status: String,
    pub updated_at: String,
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

fn credit_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Credit> {
    Ok(Credit {
        invoice_id: r.get(0)?,
        event_id: r.get(1)?,
        amount: r.get(2)?,
        fee: r.get(3)?,
        net: r.get(4)?,
        credited_at: r.get(5)?,
        recorded_at: r.get(6)?,
        state: r.get(7)?,
        reason: r.get(8)?,
        next_send_at: r.get(9)?,
    })
}

const CREDIT_COLUMNS: &str =
    "invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, reason, next_send_at";

fn send_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Send> {
    Ok(Send {
        external_id: r.get(0)?,
        invoice_id: r.get(1)?,
        attempt: r.get(2)?,
        amount: r.get(3)?,
        claimed_at: r.get(4)?,
        outcome: r.get(5)?,
        error: r.get(6)?,
    })
}

const SEND_COLUMNS: &str = "external_id, invoice_id, attempt, amount, claimed_at, outcome, error";

fn transfer_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TransferRow> {
    Ok(TransferRow {
        id: r.get(0)?,
        external_id: r.get(1)?,
        invoice_id: r.get(2)?,
        amount: r.get(3)?,
        status: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

const TRANSFER_COLUMNS: &str = "id, external_id, invoice_id, amount, status, updated_at";

/// Effects of applying one event, written together with its `applied_at`.
#[derive(Debug, Clone, Default)]
pub struct EventEffects {
    pub invoice: Option<InvoiceState>,
    pub credit: Option<Credit>,
    pub transfer: Option<TransferRow>,
}

impl Store {
    /// Events not yet applied, oldest first.
    pub fn pending_events(&self, limit: usize) -> anyhow::Result<Vec<PendingEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, subscription, log_type, body FROM events WHERE applied_at IS NULL ORDER BY created, id LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(PendingEvent { id: r.get(0)?, subscription: r.get(1)?, log_type: r.get(2)?, body: r.get(3)? })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Applies many events' effects in one transaction; each event is marked applied with them.
    pub fn apply_events(&mut self, applied: &[(String, EventEffects)], now: DateTime<Utc>) -> anyhow::Result<usize> {
        let tx = self.conn.transaction()?;
        let mut new_credits = 0;
        for (event_id, fx) in applied {
            if let Some(inv) = &fx.invoice {
                tx.execute(
                    "INSERT INTO invoices (id, status, amount, nominal_amount, fee, ours, last_log_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, amount = excluded.amount,
                        nominal_amount = excluded.nominal_amount, fee = excluded.fee, last_log_at = excluded.last_log_at
                     WHERE excluded.last_log_at >= invoices.last_log_at",
                    params![inv.id, inv.status, inv.amount, inv.nominal_amount, inv.fee, inv.ours, inv.log_at],
                )?;
            }
            if let Some(c) = &fx.credit {
                new_credits += tx.execute(
                    "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (invoice_id) DO NOTHING",
                    params![c.invoice_id, c.event_id, c.amount, c.fee, c.net, c.credited_at, ts(now), c.state, c.reason],
                )?;
            }
            if let Some(t) = &fx.transfer {
                upsert_transfer(&tx, t)?;
            }
            tx.execute("UPDATE events SET applied_at = ?2 WHERE id = ?1", params![event_id, ts(now)])?;
        }
        tx.commit()?;
        Ok(new_credits)
    }

    /// Records what Stark Bank says about transfers (answers, lookups, refreshes).
    pub fn upsert_transfers(&mut self, rows: &[TransferRow]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        for t in rows {
            upsert_transfer(&tx, t)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn open_credits(&self) -> anyhow::Result<Vec<Credit>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CREDIT_COLUMNS} FROM credits WHERE state = 'open' ORDER BY credited_at, invoice_id"
        ))?;
        let rows = stmt.query_map([], credit_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn credits(&self) -> anyhow::Result<Vec<Credit>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {CREDIT_COLUMNS} FROM credits ORDER BY credited_at, invoice_id"))?;
        let rows = stmt.query_map([], credit_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn credit(&self, invoice_id: &str) -> anyhow::Result<Option<Credit>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {CREDIT_COLUMNS} FROM credits WHERE invoice_id = ?1"),
                [invoice_id],
                credit_from_row,
            )
            .optional()?)
    }

    pub fn set_credit_state(&mut self, invoice_id: &str, state: &str, reason: Option<&str>) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE credits SET state = ?2, reason = ?3, next_send_at = NULL WHERE invoice_id = ?1",
            params![invoice_id, state, reason],
        )?;
        Ok(())
    }

    pub fn set_next_send_at(&mut self, invoice_id: &str, at: Option<DateTime<Utc>>) -> anyhow::Result<()> {
        self.conn
            .execute("UPDATE credits SET next_send_at = ?2 WHERE invoice_id = ?1", params![invoice_id, at.map(ts)])?;
        Ok(())
    }

    /// Every send, grouped later by invoice.
    pub fn sends(&self) -> anyhow::Result<Vec<Send>> {
        let mut stmt =
            self.conn.prepare_cached(&format!("SELECT {SEND_COLUMNS} FROM sends ORDER BY invoice_id, attempt"))?;
        let rows = stmt.query_map([], send_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn transfers(&self) -> anyhow::Result<Vec<TransferRow>> {
        let mut stmt =
            self.conn.prepare_cached(&format!("SELECT {TRANSFER_COLUMNS} FROM transfers ORDER BY invoice_id, id"))?;
        let rows = stmt.query_map([], transfer_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn transfers_for(&self, invoice_id: &str) -> anyhow::Result<Vec<TransferRow>> {
        let mut stmt =
            self.conn.prepare_cached(&format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE invoice_id = ?1"))?;
        let rows = stmt.query_map([invoice_id], transfer_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Claims new sends durably, all or none, before any request leaves. The unique
    /// (invoice, attempt) and externalId constraints make a double claim impossible.
    pub fn claim_sends(&mut self, sends: &[Send]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO sends (external_id, invoice_id, attempt, amount, claimed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for s in sends {
                stmt.execute(params![s.external_id, s.invoice_id, s.attempt, s.amount, s.claimed_at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn set_send_outcome(&mut self, outcomes: &[(String, &str, Option<String>)]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        for (external_id, outcome, error) in outcomes {
            tx.execute(
                "UPDATE sends SET outcome = ?2, error = ?3 WHERE external_id = ?1",
                params![external_id, outcome, error],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Those of `ids` whose events are recorded and applied.
    pub fn applied_among(&self, ids: &[String]) -> anyhow::Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached("SELECT applied_at IS NOT NULL FROM events WHERE id = ?1")?;
        let mut out = Vec::new();
        for id in ids {
            let applied: Option<bool> = stmt.query_row([id], |r| r.get(0)).optional()?;
            if applied == Some(true) {
                out.push(id.clone());
            }
        }
        Ok(out)
    }

    /// Records that Stark Bank now has these events as delivered (one transaction).
    pub fn mark_delivered(&mut self, ids: &[String], now: DateTime<Utc>) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("UPDATE events SET delivered_at = ?2 WHERE id = ?1")?;
            for id in ids {
                stmt.execute(params![id, ts(now)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn invoices(&self) -> anyhow::Result<Vec<InvoiceState>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, status, amount, nominal_amount, fee, ours, last_log_at FROM invoices ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(InvoiceState {
                id: r.get(0)?,
                status: r.get(1)?,
                amount: r.get(2)?,
                nominal_amount: r.get(3)?,
                fee: r.get(4)?,
                ours: r.get(5)?,
                log_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

/// Newer information wins; a final status (success, failed, canceled) is never replaced by an
/// earlier one that arrives late.
fn upsert_transfer(tx: &rusqlite::Transaction<'_>, t: &TransferRow) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO transfers (id, external_id, invoice_id, amount, status, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at
         WHERE transfers.status NOT IN ('success', 'failed', 'canceled')
           AND (excluded.status IN ('success', 'failed', 'canceled') OR excluded.updated_at >= transfers.updated_at)",
        params![t.id, t.external_id, t.invoice_id, t.amount, t.status, t.updated_at],
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
        }
    }

    #[test]
    fn final_transfer_status_never_regresses() {
        let (_d, mut store) = temp_store();
        store.upsert_transfers(&[transfer("t1", "created", "2026-01-01T00:00:00+00:00")]).unwrap();
        store.upsert_transfers(&[transfer("t1", "success", "2026-01-01T00:00:02+00:00")]).unwrap();
        store.upsert_transfers(&[transfer("t1", "processing", "2026-01-01T00:00:03+00:00")]).unwrap();
        assert_eq!(store.transfers_for("i1").unwrap()[0].status, "success");
    }

    #[test]
    fn a_send_cannot_be_claimed_twice() {
        let (_d, mut store) = temp_store();
        store
            .conn
            .execute(
                "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state) VALUES ('i1','e1',100,0,100,'t','t','open')",
                [],
            )
            .unwrap();
        let send = Send {
            external_id: "x1".into(),
            invoice_id: "i1".into(),
            attempt: 1,
            amount: 100,
            claimed_at: "t".into(),
            outcome: None,
            error: None,
        };
        store.claim_sends(std::slice::from_ref(&send)).unwrap();
        let again = Send { external_id: "x1-other".into(), ..send };
        assert!(store.claim_sends(&[again]).is_err(), "same invoice and attempt must be refused");
        assert_eq!(store.sends().unwrap().len(), 1);
    }
}
