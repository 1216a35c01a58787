//! Campaign, slot and invoice-draft queries (issue-invoices).
//!
//! The slot row is the claim: inserting it is what makes a run the one that issues that slot,
//! and the drafts are written in the same transaction, before any API call.

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use super::db::{OptionalExtension as _, params};
use super::{Store, ts};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignRow {
    pub tag: String,
    pub started_at: DateTime<Utc>,
    pub length_seconds: i64,
    pub slot_seconds: i64,
}

impl CampaignRow {
    pub fn shape(&self) -> crate::campaign::Shape {
        crate::campaign::Shape::from_seconds(self.length_seconds, self.slot_seconds)
    }

    pub fn slots(&self) -> u32 {
        self.shape().slots()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub draft_key: String,
    pub slot: u32,
    pub position: u32,
    pub name: String,
    pub tax_id: String,
    pub amount: i64,
    pub due: String,
    pub expiration: i64,
    pub tags: Vec<String>,
    pub invoice_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// No run has claimed it.
    Free,
    /// Claimed; some drafts may still lack an invoice id.
    Claimed {
        drafts: Vec<Draft>,
    },
    Issued {
        issued_at: DateTime<Utc>,
        drafts: Vec<Draft>,
    },
}

/// Slot-level summary for `status`.
/// A claimed slot's create attempts: how many started, whether any did, and until when the
/// last one's request may still be processed by Stark Bank, next to the database's clock now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotAttempt {
    pub attempt: i64,
    pub attempted: bool,
    pub in_flight_until: Option<DateTime<Utc>>,
    pub db_now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRow {
    pub slot: u32,
    pub claimed_at: String,
    pub issued_at: Option<String>,
    pub invoices: i64,
    pub total: i64,
    /// Why the slot stopped being retried on its own (a permanent refusal); `None` otherwise.
    pub failed_reason: Option<String>,
}

fn parse_ts(s: &str) -> anyhow::Result<DateTime<Utc>> {
    crate::starkbank::time::parse(s).with_context(|| format!("bad timestamp in the database: {s}"))
}

impl Store {
    pub fn campaign(&self) -> anyhow::Result<Option<CampaignRow>> {
        let row = self
            .db
            .query_row(
                "SELECT tag, started_at, length_seconds, slot_seconds FROM campaign WHERE id = 1",
                params![],
                |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<i64>(2)?, r.get::<i64>(3)?)),
            )
            .optional()?;
        row.map(|(tag, started, length_seconds, slot_seconds)| {
            Ok(CampaignRow { tag, started_at: parse_ts(&started)?, length_seconds, slot_seconds })
        })
        .transpose()
    }

    pub fn slot_state(&self, slot: u32) -> anyhow::Result<SlotState> {
        let row: Option<Option<String>> =
            self.db.query_row("SELECT issued_at FROM slots WHERE slot = ?1", params![slot], |r| r.get(0)).optional()?;
        Ok(match row {
            None => SlotState::Free,
            Some(None) => SlotState::Claimed { drafts: self.drafts(slot)? },
            Some(Some(at)) => SlotState::Issued { issued_at: parse_ts(&at)?, drafts: self.drafts(slot)? },
        })
    }

    pub fn drafts(&self, slot: u32) -> anyhow::Result<Vec<Draft>> {
        let rows = self.db.query_map(
            "SELECT draft_key, slot, position, name, tax_id, amount, due, expiration, tags, invoice_id
             FROM invoice_drafts WHERE slot = ?1 ORDER BY position",
            params![slot],
            |r| {
                Ok((
                    Draft {
                        draft_key: r.get(0)?,
                        slot: r.get(1)?,
                        position: r.get(2)?,
                        name: r.get(3)?,
                        tax_id: r.get(4)?,
                        amount: r.get(5)?,
                        due: r.get(6)?,
                        expiration: r.get(7)?,
                        tags: Vec::new(),
                        invoice_id: r.get(9)?,
                    },
                    r.get::<String>(8)?,
                ))
            },
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for (mut d, tags) in rows {
            d.tags = serde_json::from_str(&tags).context("bad tags in the database")?;
            out.push(d);
        }
        Ok(out)
    }

    /// Names already invoiced in this campaign (to keep every payer distinct).
    pub fn campaign_names(&self) -> anyhow::Result<Vec<String>> {
        self.db.query_map("SELECT name FROM invoice_drafts", params![], |r| r.get(0))
    }

    /// Atomically: starts the campaign if none exists (keeping an existing one), claims
    /// `slot`, and writes its drafts. Returns `None` when another run claimed the slot first.
    pub fn claim_slot(
        &mut self,
        campaign: &CampaignRow,
        drafts: &[Draft],
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<()>> {
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT INTO campaign (id, tag, started_at, length_seconds, slot_seconds) VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO NOTHING",
            params![campaign.tag, ts(campaign.started_at), campaign.length_seconds, campaign.slot_seconds],
        )?;
        let stored: String = tx.query_row("SELECT tag FROM campaign WHERE id = 1", params![], |r| r.get(0))?;
        anyhow::ensure!(stored == campaign.tag, "the campaign changed while this run was starting; run again");
        let Some(first) = drafts.first() else { anyhow::bail!("no drafts to claim") };
        let inserted = tx.execute(
            "INSERT INTO slots (slot, claimed_at, attempt)
             VALUES (?1, ?2, COALESCE((SELECT attempt + 1 FROM retired_slot_attempts WHERE slot = ?1), 0))
             ON CONFLICT (slot) DO NOTHING",
            params![first.slot, ts(now)],
        )?;
        if inserted == 0 {
            return Ok(None);
        }
        for d in drafts {
            tx.execute(
                "INSERT INTO invoice_drafts (draft_key, slot, position, name, tax_id, amount, due, expiration, tags)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    d.draft_key,
                    d.slot,
                    d.position,
                    d.name,
                    d.tax_id,
                    d.amount,
                    d.due,
                    d.expiration,
                    serde_json::to_string(&d.tags)?
                ],
            )?;
        }
        tx.commit()?;
        Ok(Some(()))
    }

    /// Records which Stark Bank invoice each draft became; marks the slot issued when all have one.
    pub fn record_invoices(&mut self, slot: u32, ids: &[(String, String)], now: DateTime<Utc>) -> anyhow::Result<bool> {
        let tx = self.write_tx()?;
        for (draft_key, invoice_id) in ids {
            tx.execute(
                "UPDATE invoice_drafts SET invoice_id = ?2 WHERE draft_key = ?1 AND invoice_id IS NULL",
                params![draft_key, invoice_id],
            )?;
            // Its credit may have been recorded first (the run that created it died before
            // recording the id): now it is ours.
            tx.execute(
                "UPDATE credits SET origin = 'issued',
                    state = CASE WHEN net > 0 THEN 'open' ELSE 'skipped' END,
                    reason = CASE WHEN net > 0 THEN NULL
                             ELSE 'nothing to transfer: amount ' || amount || ' minus fee ' || fee || ' is not positive' END
                 WHERE invoice_id = ?1 AND state = 'unclaimed'",
                params![invoice_id],
            )?;
        }
        let missing: i64 = tx.query_row(
            "SELECT COUNT(*) FROM invoice_drafts WHERE slot = ?1 AND invoice_id IS NULL",
            params![slot],
            |r| r.get(0),
        )?;
        if missing == 0 {
            tx.execute(
                "UPDATE slots SET issued_at = ?2 WHERE slot = ?1 AND issued_at IS NULL",
                params![slot, ts(now)],
            )?;
        }
        tx.commit()?;
        Ok(missing == 0)
    }

    /// Where the slot's create attempts stand, with the database's clock to compare
    /// `in_flight_until` against (the same clock for every host). `None`: the slot is not claimed.
    pub fn slot_attempt(&self, slot: u32) -> anyhow::Result<Option<SlotAttempt>> {
        let row = self
            .db
            .query_row("SELECT attempt, attempted_at, in_flight_until FROM slots WHERE slot = ?1", params![slot], |r| {
                Ok((r.get::<i64>(0)?, r.get::<Option<String>>(1)?, r.get::<Option<String>>(2)?))
            })
            .optional()?;
        let Some((attempt, attempted_at, until)) = row else { return Ok(None) };
        Ok(Some(SlotAttempt {
            attempt,
            attempted: attempted_at.is_some(),
            in_flight_until: until.map(|t| parse_ts(&t)).transpose()?,
            db_now: self.db.clock()?,
        }))
    }

    /// Starts attempt `seen + 1` of creating the slot's invoices, recorded durably before the
    /// request leaves, so a crash mid-request is known. A compare-and-set: it happens only if
    /// no other run started an attempt since this one read `seen`, and no earlier request may
    /// still be processed by Stark Bank. Returns the attempt and its `in_flight_until`
    /// (`window` after now, on the database's clock): until then nothing more is created for
    /// the slot. `None`: another run got there first; this one must send nothing.
    pub fn begin_slot_attempt(
        &mut self,
        slot: u32,
        seen: i64,
        now: DateTime<Utc>,
        window: chrono::Duration,
    ) -> anyhow::Result<Option<(i64, DateTime<Utc>)>> {
        let tx = self.write_tx()?;
        let db_now = tx.clock()?;
        let until = db_now + window;
        let started = tx.execute(
            "UPDATE slots SET attempt = attempt + 1, attempted_at = ?3, in_flight_until = ?4
             WHERE slot = ?1 AND attempt = ?2 AND issued_at IS NULL
               AND (in_flight_until IS NULL OR in_flight_until <= ?5)",
            params![slot, seen, ts(now), ts(until), ts(db_now)],
        )?;
        tx.commit()?;
        Ok((started == 1).then_some((seen + 1, until)))
    }

    /// The clock slot windows are written on: the database server's on Postgres.
    pub fn clock(&self) -> anyhow::Result<DateTime<Utc>> {
        self.db.clock()
    }

    /// Stark Bank answered attempt `attempt`'s request (whatever it said): it is done with it.
    /// A later attempt's window is left alone.
    pub fn clear_in_flight(&mut self, slot: u32, attempt: i64) -> anyhow::Result<()> {
        self.db.execute(
            "UPDATE slots SET in_flight_until = NULL WHERE slot = ?1 AND attempt = ?2",
            params![slot, attempt],
        )?;
        Ok(())
    }

    /// A permanent refusal of a slot whose earlier attempt may have created invoices: it is not
    /// retried on its own any more (`issue-invoices --slot N` retries it).
    pub fn fail_slot(&mut self, slot: u32, reason: &str) -> anyhow::Result<()> {
        self.db.execute("UPDATE slots SET failed_reason = ?2 WHERE slot = ?1", params![slot, reason])?;
        Ok(())
    }

    pub fn clear_failed_slot(&mut self, slot: u32) -> anyhow::Result<()> {
        self.db.execute("UPDATE slots SET failed_reason = NULL WHERE slot = ?1", params![slot])?;
        Ok(())
    }

    /// New due dates for drafts not created yet (a slot completed long after its claim would
    /// otherwise send due dates already close or past: the sandbox never pays overdue invoices).
    pub fn set_draft_dues(&mut self, draft_keys: &[String], due: &str) -> anyhow::Result<()> {
        let tx = self.write_tx()?;
        for key in draft_keys {
            tx.execute(
                "UPDATE invoice_drafts SET due = ?2 WHERE draft_key = ?1 AND invoice_id IS NULL",
                params![key, due],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets a claim whose create request (attempt `attempt`, its first) Stark Bank refused
    /// outright, so nothing exists; forgets the campaign too when this was its only slot, so
    /// the next run starts it afresh. Refused when another attempt started since.
    pub fn abandon_slot(&mut self, slot: u32, attempt: i64) -> anyhow::Result<()> {
        // Reads then writes: take the write lock first (see `migrate`).
        let tx = self.write_tx()?;
        let current: Option<i64> =
            tx.query_row("SELECT attempt FROM slots WHERE slot = ?1", params![slot], |r| r.get(0)).optional()?;
        anyhow::ensure!(
            current == Some(attempt),
            "slot {slot} had another create attempt since this one; it is not abandoned"
        );
        let with_ids: i64 = tx.query_row(
            "SELECT COUNT(*) FROM invoice_drafts WHERE slot = ?1 AND invoice_id IS NOT NULL",
            params![slot],
            |r| r.get(0),
        )?;
        anyhow::ensure!(with_ids == 0, "slot {slot} already has invoices; it cannot be abandoned");
        tx.execute("DELETE FROM invoice_drafts WHERE slot = ?1", params![slot])?;
        tx.execute("DELETE FROM slots WHERE slot = ?1", params![slot])?;
        // The number is never reused: a new claim counts on from it (see migration 6).
        tx.execute(
            "INSERT INTO retired_slot_attempts (slot, attempt) VALUES (?1, ?2)
             ON CONFLICT (slot) DO UPDATE SET attempt = excluded.attempt",
            params![slot, attempt],
        )?;
        let left: i64 = tx.query_row("SELECT COUNT(*) FROM slots", params![], |r| r.get(0))?;
        if left == 0 {
            tx.execute("DELETE FROM campaign", params![])?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn slots(&self) -> anyhow::Result<Vec<SlotRow>> {
        self.db.query_map(
            "SELECT s.slot, s.claimed_at, s.issued_at, COUNT(d.invoice_id), COALESCE(SUM(CASE WHEN d.invoice_id IS NOT NULL THEN d.amount END), 0),
                    s.failed_reason
             FROM slots s LEFT JOIN invoice_drafts d ON d.slot = s.slot GROUP BY s.slot ORDER BY s.slot",
            params![],
            |r| {
                Ok(SlotRow {
                    slot: r.get(0)?,
                    claimed_at: r.get(1)?,
                    issued_at: r.get(2)?,
                    invoices: r.get(3)?,
                    total: r.get(4)?,
                    failed_reason: r.get(5)?,
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    fn campaign() -> CampaignRow {
        CampaignRow { tag: "c1".into(), started_at: Utc::now(), length_seconds: 86_400, slot_seconds: 10_800 }
    }

    fn draft(slot: u32, pos: u32) -> Draft {
        Draft {
            draft_key: format!("k{slot}-{pos}"),
            slot,
            position: pos,
            name: "Ana Lima".into(),
            tax_id: "337.451.076-08".into(),
            amount: 1000,
            due: "2030-01-01T00:00:00+00:00".into(),
            expiration: 100,
            tags: vec!["stark-sweep".into()],
            invoice_id: None,
        }
    }

    #[test]
    fn a_slot_is_claimed_once() {
        let (_d, mut store) = temp_store();
        assert_eq!(store.slot_state(0).unwrap(), SlotState::Free);
        assert!(store.claim_slot(&campaign(), &[draft(0, 0), draft(0, 1)], Utc::now()).unwrap().is_some());
        assert!(store.claim_slot(&campaign(), &[draft(0, 5)], Utc::now()).unwrap().is_none());
        let SlotState::Claimed { drafts } = store.slot_state(0).unwrap() else { panic!("not claimed") };
        assert_eq!(drafts.len(), 2);
        assert!(!store.record_invoices(0, &[("k0-0".into(), "i1".into())], Utc::now()).unwrap());
        assert!(store.record_invoices(0, &[("k0-1".into(), "i2".into())], Utc::now()).unwrap());
        assert!(matches!(store.slot_state(0).unwrap(), SlotState::Issued { .. }));
        assert!(store.abandon_slot(0, 0).is_err(), "issued slots are never forgotten");
    }

    #[test]
    fn abandoning_the_only_slot_forgets_the_campaign() {
        let (_d, mut store) = temp_store();
        store.claim_slot(&campaign(), &[draft(0, 0)], Utc::now()).unwrap();
        let seen = store.slot_attempt(0).unwrap().unwrap().attempt;
        let (mine, _) = store.begin_slot_attempt(0, seen, Utc::now(), chrono::Duration::seconds(60)).unwrap().unwrap();
        assert!(store.abandon_slot(0, seen).is_err(), "only the attempt that was refused abandons");
        store.abandon_slot(0, mine).unwrap();
        assert_eq!(store.campaign().unwrap(), None);
        assert_eq!(store.slot_state(0).unwrap(), SlotState::Free);
    }

    #[test]
    fn two_runs_that_read_the_same_attempt_cannot_both_start_one() {
        let (_d, mut store) = temp_store();
        store.claim_slot(&campaign(), &[draft(0, 0)], Utc::now()).unwrap();
        let first = store.slot_attempt(0).unwrap().unwrap();
        let second = store.slot_attempt(0).unwrap().unwrap();
        assert_eq!((first.attempt, first.attempted, first.in_flight_until), (0, false, None));
        let window = chrono::Duration::seconds(60);
        let (mine, until) = store.begin_slot_attempt(0, first.attempt, Utc::now(), window).unwrap().unwrap();
        assert_eq!(mine, 1);
        assert!(until > first.db_now, "the window is on the database's clock");
        // The run that read the same state (its lease expired, it stalled) sends nothing...
        assert_eq!(store.begin_slot_attempt(0, second.attempt, Utc::now(), window).unwrap(), None);
        // ...not even once the first attempt's answer closed its window.
        store.clear_in_flight(0, mine).unwrap();
        assert_eq!(store.begin_slot_attempt(0, second.attempt, Utc::now(), window).unwrap(), None);
        // A run that reads afresh sees the attempt, and starts the next one.
        let fresh = store.slot_attempt(0).unwrap().unwrap();
        assert!(fresh.attempted && fresh.in_flight_until.is_none());
        assert_eq!(store.begin_slot_attempt(0, fresh.attempt, Utc::now(), window).unwrap().map(|a| a.0), Some(2));
    }

    #[test]
    fn no_attempt_starts_while_an_earlier_request_may_be_in_flight() {
        let (_d, mut store) = temp_store();
        store.claim_slot(&campaign(), &[draft(0, 0)], Utc::now()).unwrap();
        let seen = store.slot_attempt(0).unwrap().unwrap();
        let (mine, _) =
            store.begin_slot_attempt(0, seen.attempt, Utc::now(), chrono::Duration::hours(1)).unwrap().unwrap();
        // Read afresh, the number matches, but the window is open: refused until it closes.
        let now = store.slot_attempt(0).unwrap().unwrap();
        assert!(now.in_flight_until.is_some_and(|u| u > now.db_now));
        assert_eq!(store.begin_slot_attempt(0, now.attempt, Utc::now(), chrono::Duration::hours(1)).unwrap(), None);
        // An older attempt's answer does not close a newer attempt's window.
        store.clear_in_flight(0, mine - 1).unwrap();
        assert!(store.slot_attempt(0).unwrap().unwrap().in_flight_until.is_some());
        // A window that has passed lets the next attempt start.
        let past = chrono::Duration::seconds(-1);
        store.clear_in_flight(0, mine).unwrap();
        let again = store.slot_attempt(0).unwrap().unwrap();
        let (next, _) = store.begin_slot_attempt(0, again.attempt, Utc::now(), past).unwrap().unwrap();
        let after = store.slot_attempt(0).unwrap().unwrap();
        assert_eq!(store.begin_slot_attempt(0, after.attempt, Utc::now(), past).unwrap().map(|a| a.0), Some(next + 1));
        // An issued slot starts no attempt at all.
        store.record_invoices(0, &[("k0-0".into(), "i1".into())], Utc::now()).unwrap();
        let issued = store.slot_attempt(0).unwrap().unwrap();
        assert_eq!(store.begin_slot_attempt(0, issued.attempt, Utc::now(), past).unwrap(), None);
    }

    #[test]
    fn a_number_read_before_an_abandon_starts_nothing_on_the_new_claim() {
        let (_d, mut store) = temp_store();
        let window = chrono::Duration::seconds(60);
        store.claim_slot(&campaign(), &[draft(0, 0)], Utc::now()).unwrap();
        let stale = store.slot_attempt(0).unwrap().unwrap();
        let (refused, _) = store.begin_slot_attempt(0, stale.attempt, Utc::now(), window).unwrap().unwrap();
        store.clear_in_flight(0, refused).unwrap();
        store.abandon_slot(0, refused).unwrap();
        // Another run claims the slot afresh, with other drafts.
        store.claim_slot(&campaign(), &[draft(0, 7)], Utc::now()).unwrap();
        let fresh = store.slot_attempt(0).unwrap().unwrap();
        assert!(fresh.attempt > refused, "attempt numbers are never reused: {} after {refused}", fresh.attempt);
        // The run that read the old claim's number sends nothing on the new claim...
        assert_eq!(store.begin_slot_attempt(0, stale.attempt, Utc::now(), window).unwrap(), None);
        assert_eq!(store.begin_slot_attempt(0, refused, Utc::now(), window).unwrap(), None);
        // ...while the run that read the new claim starts its attempt.
        assert!(store.begin_slot_attempt(0, fresh.attempt, Utc::now(), window).unwrap().is_some());
    }
}
