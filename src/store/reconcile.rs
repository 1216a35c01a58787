//! Reconciliation's reads (status): totals and per-invoice sums computed by SQLite, so `status`
//! costs one pass over the tables and holds only what does not add up, never every credit and
//! every transfer at once.
//!
//! Owns: the aggregates and joins. Does not own: which sums are a discrepancy (`reconcile`).

use std::collections::BTreeMap;

use super::credits::{CREDIT_COLUMNS_OF_C, TRANSFER_COLUMNS_OF_T, credit_from_row, transfer_from_row};
use super::db::{Dialect, params};
use super::{Credit, CreditState, Store, TransferRow};

/// What the transfers of ours for one invoice add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferSums {
    /// Sum of the successful ones, in cents.
    pub transferred: i64,
    pub successes: usize,
    /// One is still created or processing.
    pub in_flight: bool,
    /// Failed or canceled ones.
    pub failed: usize,
}

impl TransferSums {
    /// The sums of `transfers` (each ours), as SQLite computes them in `unsettled_credits`.
    pub fn of<'a>(transfers: impl Iterator<Item = &'a TransferRow>) -> Self {
        let mut s = Self::default();
        for t in transfers {
            if t.is_success() {
                s.transferred += t.amount;
                s.successes += 1;
            } else if t.is_alive() {
                s.in_flight = true;
            } else if matches!(t.status.as_str(), "failed" | "canceled") {
                s.failed += 1;
            }
        }
        s
    }
}

/// Our credits (unclaimed excluded), summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreditTotals {
    pub count: i64,
    pub amount: i64,
    pub fees: i64,
    /// Net of every credit but the skipped ones: what must be transferred.
    pub net_due: i64,
}

/// Our transfers with one status: how many, and their sum in cents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusTotal {
    pub count: i64,
    pub amount: i64,
}

impl Store {
    pub fn credit_totals(&self) -> anyhow::Result<CreditTotals> {
        self.db.query_row(
            "SELECT COUNT(*), COALESCE(SUM(amount), 0), COALESCE(SUM(fee), 0),
                    COALESCE(SUM(CASE WHEN state <> 'skipped' THEN net END), 0)
             FROM credits WHERE state <> 'unclaimed'",
            params![],
            |r| Ok(CreditTotals { count: r.get(0)?, amount: r.get(1)?, fees: r.get(2)?, net_due: r.get(3)? }),
        )
    }

    /// Our transfers by status.
    pub fn transfer_totals(&self) -> anyhow::Result<BTreeMap<String, StatusTotal>> {
        let rows = self.db.query_map(
            "SELECT status, COUNT(*), COALESCE(SUM(amount), 0) FROM transfers WHERE ours = 1 GROUP BY status",
            params![],
            |r| Ok((r.get(0)?, StatusTotal { count: r.get(1)?, amount: r.get(2)? })),
        )?;
        Ok(rows.into_iter().collect())
    }

    /// Every credit of ours that is not settled cleanly (exactly one successful transfer of ours,
    /// of its net), with what its transfers add up to, in credit order. Skipped credits (nothing
    /// to transfer) only with `with_skipped`: they are history, and `count_credits_in` counts them.
    pub fn unsettled_credits(&self, with_skipped: bool) -> anyhow::Result<Vec<(Credit, TransferSums)>> {
        // One pass over `credits_by_invoice` and `transfers_by_invoice` side by side, both in
        // invoice order and read from the indexes alone; settled credits are dropped inside
        // SQLite, and only the rest is read whole.
        let sql = format!(
            "SELECT {CREDIT_COLUMNS_OF_C}, u.transferred, u.successes, u.in_flight, u.failed
             FROM (SELECT c.invoice_id AS invoice_id,
                          COALESCE(SUM(CASE WHEN t.status = 'success' THEN t.amount END), 0) AS transferred,
                          COUNT(CASE WHEN t.status = 'success' THEN 1 END) AS successes,
                          COUNT(CASE WHEN t.status IN ('created', 'processing') THEN 1 END) > 0 AS in_flight,
                          COUNT(CASE WHEN t.status IN ('failed', 'canceled') THEN 1 END) AS failed
                   FROM credits c LEFT JOIN transfers t ON t.invoice_id = c.invoice_id AND t.ours = 1
                   WHERE c.state <> 'unclaimed' AND (?1 OR c.state <> 'skipped')
                   GROUP BY c.invoice_id
                   HAVING NOT (c.state IN ('open', 'transferred')
                               AND COUNT(CASE WHEN t.status = 'success' THEN 1 END) = 1
                               AND COALESCE(SUM(CASE WHEN t.status = 'success' THEN t.amount END), 0) = c.net)) u
             CROSS JOIN credits c ON c.invoice_id = u.invoice_id
             ORDER BY c.credited_at, c.invoice_id"
        );
        self.db.query_map(&sql, params![with_skipped], |r| {
            Ok((
                credit_from_row(r)?,
                TransferSums {
                    transferred: r.get(12)?,
                    successes: r.get::<i64>(13)? as usize,
                    in_flight: r.get(14)?,
                    failed: r.get::<i64>(15)? as usize,
                },
            ))
        })
    }

    /// Our transfers that moved (or may move) money for an invoice without a credit of ours.
    pub fn transfers_without_credit(&self) -> anyhow::Result<Vec<TransferRow>> {
        // The scan reads `transfers_by_invoice` and `credits_by_invoice` alone, both in invoice
        // order (the planner would rather probe the primary key, then read each credit's row at
        // random for its state); only what it finds is read whole.
        let sql = match self.db.dialect() {
            Dialect::Sqlite => format!(
                "SELECT {TRANSFER_COLUMNS_OF_T} FROM transfers t WHERE t.rowid IN (
                 SELECT o.rowid FROM transfers o
                 WHERE o.ours = 1 AND o.status IN ('success', 'created', 'processing')
                   AND NOT EXISTS (SELECT 1 FROM credits c INDEXED BY credits_by_invoice
                                   WHERE c.invoice_id = o.invoice_id AND c.state <> 'unclaimed'))
             ORDER BY t.invoice_id, t.id"
            ),
            // No rowid (nor planner hints) on Postgres: the same filter on the rows themselves.
            Dialect::Postgres => format!(
                "SELECT {TRANSFER_COLUMNS_OF_T} FROM transfers t
                 WHERE t.ours = 1 AND t.status IN ('success', 'created', 'processing')
                   AND NOT EXISTS (SELECT 1 FROM credits c
                                   WHERE c.invoice_id = t.invoice_id AND c.state <> 'unclaimed')
                 ORDER BY t.invoice_id, t.id"
            ),
        };
        self.db.query_map(&sql, params![], transfer_from_row)
    }

    pub fn count_credits_in(&self, state: CreditState) -> anyhow::Result<i64> {
        self.db.query_row("SELECT COUNT(*) FROM credits WHERE state = ?1", params![state.as_str()], |r| r.get(0))
    }

    /// The invoices this deployment issued, by their latest known status (those with no event
    /// yet are not counted: the caller knows how many were issued).
    pub fn invoice_statuses(&self) -> anyhow::Result<BTreeMap<String, usize>> {
        let rows = self.db.query_map(
            "SELECT i.status, COUNT(*) FROM invoice_drafts d CROSS JOIN invoices i ON i.id = d.invoice_id
             GROUP BY i.status",
            params![],
            |r| Ok((r.get(0)?, r.get::<i64>(1)? as usize)),
        )?;
        Ok(rows.into_iter().collect())
    }

    /// Whether an event is recorded and not yet applied.
    pub fn has_pending_events(&self) -> anyhow::Result<bool> {
        self.db.query_row("SELECT EXISTS (SELECT 1 FROM events WHERE applied_at IS NULL)", params![], |r| r.get(0))
    }
}
