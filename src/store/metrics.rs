//! The figures `/metrics` exposes, read in one snapshot of the store (every process that reads
//! the same file at the same moment sees the same numbers). Read-only; cheap enough to run on
//! every scrape: counts and sums over credits, transfers and slots, and two counts of events
//! (the primary key and the partial index of unapplied events, never the bodies).

use chrono::{DateTime, Utc};

use super::db::params;
use super::{CampaignRow, CreditState, SlotRow, Store};

/// Transfer statuses always exposed, with 0 when none is in that status (Stark Bank's own).
pub const TRANSFER_STATUSES: [&str; 5] = ["created", "processing", "success", "failed", "canceled"];

/// Every credit state, in the order they are exposed.
pub const CREDIT_STATES: [CreditState; 6] = [
    CreditState::Unclaimed,
    CreditState::Open,
    CreditState::Held,
    CreditState::Transferred,
    CreditState::Skipped,
    CreditState::Attention,
];

/// What the store holds right now, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Credits per state (every state, 0 included).
    pub credits: Vec<(CreditState, i64)>,
    /// What our credited invoices were paid (unclaimed credits excluded), in cents.
    pub credited_cents: i64,
    /// Stark Bank's fees on them, in cents.
    pub fees_cents: i64,
    /// What must be transferred for them (net of credits neither unclaimed nor skipped), in
    /// cents: `status`'s "net to transfer".
    pub net_due_cents: i64,
    /// Our transfers that succeeded, in cents.
    pub transferred_cents: i64,
    /// Our transfers per status (every status in `TRANSFER_STATUSES`, 0 included, and any other
    /// Stark Bank reports): (status, count, cents).
    pub transfers: Vec<(String, i64, i64)>,
    /// Open or transferred credits whose successful transfers of ours add up to more than their
    /// net, or are more than one.
    pub overpaid_credits: i64,
    /// Transfers alive or successful without a credit of ours: ours whose invoice has no credit,
    /// and transfers we did not send that carry the tag of an invoice we issued.
    pub transfers_without_credit: i64,
    /// Events recorded (verified webhooks and API pulls), and those not applied yet.
    pub events_stored: i64,
    pub events_unapplied: i64,
    pub campaign: Option<CampaignRow>,
    pub slots: Vec<SlotRow>,
    /// When the oldest credit not swept yet (open or held) was credited, as stored.
    pub oldest_unswept_credited_at: Option<DateTime<Utc>>,
    pub kill_switch: bool,
    /// Money that left (or may have left) in the last 24 hours, in cents.
    pub outflow_24h_cents: i64,
}

/// The page cache of the connection `/metrics` reads with, in KiB. Each scrape scans a few
/// indexes once; with SQLite's default cache (2 MiB) the listener's peak memory under load grew
/// by 10-13 MiB when scraped every second (bench/webhook_load.rs --scrape-every 1), with this by
/// about 2 MiB, for 2-3 ms more CPU per scrape.
const FIGURES_CACHE_KIB: i64 = 256;

impl Store {
    /// Opens `path` for reading `figures` on a connection of its own, with a small page cache.
    pub fn open_for_figures(at: impl Into<super::Location>) -> anyhow::Result<Store> {
        let store = Store::open(at)?;
        store.limit_page_cache(FIGURES_CACHE_KIB)?;
        Ok(store)
    }

    /// The figures, all read in one transaction (one snapshot of the file).
    pub fn figures(&self, now: DateTime<Utc>) -> anyhow::Result<Figures> {
        let tx = self.db.read_tx()?;
        let one = |sql: &str| -> anyhow::Result<i64> { tx.query_row(sql, params![], |r| r.get(0)) };
        let mut f = Figures::default();

        let mut by_state: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        for (state, n) in tx.query_map("SELECT state, COUNT(*) FROM credits GROUP BY state", params![], |r| {
            Ok((r.get::<String>(0)?, r.get::<i64>(1)?))
        })? {
            by_state.insert(state, n);
        }
        f.credits = CREDIT_STATES.iter().map(|s| (*s, by_state.get(s.as_str()).copied().unwrap_or(0))).collect();
        (f.credited_cents, f.fees_cents, f.net_due_cents) = tx.query_row(
            "SELECT COALESCE(SUM(amount), 0), COALESCE(SUM(fee), 0),
                    COALESCE(SUM(CASE WHEN state <> 'skipped' THEN net END), 0)
             FROM credits WHERE state <> 'unclaimed'",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;

        f.transfers = TRANSFER_STATUSES.iter().map(|s| (s.to_string(), 0, 0)).collect();
        for (status, n, cents) in tx.query_map(
            "SELECT status, COUNT(*), COALESCE(SUM(amount), 0) FROM transfers WHERE ours = 1 GROUP BY status",
            params![],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?, r.get::<i64>(2)?)),
        )? {
            match f.transfers.iter_mut().find(|(s, ..)| *s == status) {
                Some(t) => (t.1, t.2) = (n, cents),
                None => f.transfers.push((status, n, cents)),
            }
        }
        f.transferred_cents = f.transfers.iter().find(|(s, ..)| s == "success").map_or(0, |t| t.2);
        f.overpaid_credits = one("SELECT COUNT(*) FROM credits c
             JOIN (SELECT invoice_id, COUNT(*) AS n, SUM(amount) AS cents FROM transfers
                   WHERE ours = 1 AND status = 'success' GROUP BY invoice_id) t ON t.invoice_id = c.invoice_id
             WHERE c.state IN ('open', 'transferred') AND (t.n > 1 OR t.cents > c.net)")?;
        f.transfers_without_credit = one(
            "SELECT COUNT(*) FROM transfers t WHERE t.status IN ('created', 'processing', 'success') AND (
                 (t.ours = 1 AND NOT EXISTS (SELECT 1 FROM credits c WHERE c.invoice_id = t.invoice_id AND c.state <> 'unclaimed'))
              OR (t.ours = 0 AND EXISTS (SELECT 1 FROM invoice_drafts d WHERE d.invoice_id = t.invoice_id)))",
        )?;

        f.events_stored = one("SELECT COUNT(*) FROM events")?;
        f.events_unapplied = one("SELECT COUNT(*) FROM events WHERE applied_at IS NULL")?;

        for at in tx.query_map("SELECT credited_at FROM credits WHERE state IN ('open', 'held')", params![], |r| {
            r.get::<String>(0)
        })? {
            let at = crate::starkbank::time::parse(&at);
            if at.is_some_and(|t| f.oldest_unswept_credited_at.is_none_or(|o| t < o)) {
                f.oldest_unswept_credited_at = at;
            }
        }
        f.kill_switch = one("SELECT COUNT(*) FROM controls WHERE key = 'kill_switch'")? > 0;
        // The same reads as `status`: the campaign row, the slots, the rolling outflow.
        f.campaign = self.campaign()?;
        f.slots = self.slots()?;
        f.outflow_24h_cents = self.outflow_24h(now)?;
        tx.commit()?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    #[test]
    fn an_empty_store_has_every_state_and_status_at_zero() {
        let (_d, store) = temp_store();
        let f = store.figures(Utc::now()).unwrap();
        assert_eq!(f.credits.len(), 6);
        assert!(f.credits.iter().all(|(_, n)| *n == 0));
        assert_eq!(f.transfers.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(), TRANSFER_STATUSES);
        assert_eq!((f.credited_cents, f.transferred_cents, f.events_stored), (0, 0, 0));
        assert!(f.campaign.is_none() && f.oldest_unswept_credited_at.is_none() && !f.kill_switch);
    }

    #[test]
    fn credits_and_transfers_add_up_as_status_does() {
        let (_d, store) = temp_store();
        store
            .db
            .execute_batch(
                "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state) VALUES
                   ('a', 'e1', 1000, 50, 950, '2026-01-01T00:10:00+00:00', 't', 'open'),
                   ('b', 'e2', 2000, 50, 1950, '2026-01-01T00:05:00+00:00', 't', 'transferred'),
                   ('c', 'e3', 40, 50, -10, '2026-01-01T00:00:00+00:00', 't', 'skipped'),
                   ('d', 'e4', 700, 50, 650, '2026-01-01T00:00:00+00:00', 't', 'unclaimed');
                 INSERT INTO transfers (id, external_id, invoice_id, amount, status, updated_at, ours) VALUES
                   ('t1', 'x-b-1', 'b', 1950, 'success', 't', 1),
                   ('t2', 'x-b-2', 'b', 1950, 'success', 't', 1),
                   ('t3', 'x-a-1', 'a', 950, 'failed', 't', 1),
                   ('t4', 'x-z-1', 'z', 10, 'processing', 't', 1);",
            )
            .unwrap();
        let f = store.figures(Utc::now()).unwrap();
        let state = |s: CreditState| f.credits.iter().find(|(k, _)| *k == s).unwrap().1;
        assert_eq!((state(CreditState::Open), state(CreditState::Unclaimed)), (1, 1));
        assert_eq!(f.credited_cents, 3040, "unclaimed credits are not ours");
        assert_eq!(f.net_due_cents, 2900, "skipped credits owe nothing");
        assert_eq!(f.transferred_cents, 3900);
        assert_eq!(f.overpaid_credits, 1, "b was paid twice");
        assert_eq!(f.transfers_without_credit, 1, "t4 is for an invoice with no credit");
        assert_eq!(f.oldest_unswept_credited_at, crate::starkbank::time::parse("2026-01-01T00:10:00+00:00"));
    }
}
