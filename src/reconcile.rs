//! Reconciliation, both ways: every credit of ours against the transfers we sent for it, and
//! every transfer against a credit. Pure over what the store computed (unit-tested); `status`
//! reads the store's sums (`Store::unsettled_credits`, SQLite adds the transfers up, so a
//! settled credit is never even decoded), prints the result and exits 3 when a discrepancy
//! needs a human.
//!
//! Owns: the kinds of discrepancy (`DiscrepancyKind`, named in the output as `as_str` says),
//! which need attention, which are listed by default, and what `status` counts (`Summary`).
//! Does not own: reading the store or printing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::money::brl;
use crate::starkbank::time;
use crate::store::{Credit, CreditState, TransferRow, TransferSums};

/// One thing that does not add up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Discrepancy {
    pub invoice_id: String,
    pub net: i64,
    pub transferred: i64,
    pub kind: DiscrepancyKind,
    pub detail: String,
    pub needs_attention: bool,
}

/// What does not add up, as `status` names it (text and JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiscrepancyKind {
    /// A credit with nothing to transfer (net <= 0): final, and nobody's to fix.
    Skipped,
    /// The credit needs a human (its reason says why).
    Attention,
    /// Held back by an outflow limit.
    Held,
    /// More than one success, or more than the net.
    Overpaid,
    /// One success, of another amount than the net.
    AmountMismatch,
    InFlight,
    FailedTransfer,
    NotTransferred,
    /// Money moved for an invoice with no credit of ours (ours, or a stray tagged for it).
    TransferWithoutCredit,
}

impl DiscrepancyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscrepancyKind::Skipped => "skipped",
            DiscrepancyKind::Attention => "attention",
            DiscrepancyKind::Held => "held",
            DiscrepancyKind::Overpaid => "overpaid",
            DiscrepancyKind::AmountMismatch => "amount-mismatch",
            DiscrepancyKind::InFlight => "in-flight",
            DiscrepancyKind::FailedTransfer => "failed-transfer",
            DiscrepancyKind::NotTransferred => "not-transferred",
            DiscrepancyKind::TransferWithoutCredit => "transfer-without-credit",
        }
    }
}

impl Discrepancy {
    /// Whether `status` lists it without `--all`: everything that needs a human or is still on
    /// its way. A skipped credit is settled history; it is counted, not listed (a long-running
    /// deployment has thousands).
    pub fn listed_by_default(&self) -> bool {
        self.needs_attention || self.kind != DiscrepancyKind::Skipped
    }
}

/// What `status` reports of the reconciliation: the discrepancies it lists, how many of each
/// kind there are (listed or not), and how many need a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub listed: Vec<Discrepancy>,
    /// By kind (`DiscrepancyKind::as_str`, in that text's order), the unlisted skipped ones too.
    pub counts: BTreeMap<&'static str, usize>,
    /// Skipped credits counted but not listed (settled history).
    pub not_listed: usize,
    pub attention: usize,
}

impl Summary {
    /// `all`: list every discrepancy. Otherwise only what is `listed_by_default`, and
    /// `skipped_not_listed` (the skipped credits the store left out of `discrepancies`) is
    /// counted instead.
    pub fn of(mut discrepancies: Vec<Discrepancy>, all: bool, skipped_not_listed: usize) -> Self {
        let not_listed = if all {
            0
        } else {
            discrepancies.retain(Discrepancy::listed_by_default);
            skipped_not_listed
        };
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for d in &discrepancies {
            *counts.entry(d.kind.as_str()).or_default() += 1;
        }
        if not_listed > 0 {
            *counts.entry(DiscrepancyKind::Skipped.as_str()).or_default() += not_listed;
        }
        let attention = discrepancies.iter().filter(|d| d.needs_attention).count();
        Self { listed: discrepancies, counts, not_listed, attention }
    }

    /// Every discrepancy, listed or counted.
    pub fn total(&self) -> usize {
        self.listed.len() + self.not_listed
    }

    pub fn without_credit(&self) -> Vec<&Discrepancy> {
        self.listed.iter().filter(|d| d.kind == DiscrepancyKind::TransferWithoutCredit).collect()
    }
}

/// Minutes since `at` (never negative: a clock that runs ahead shows 0).
fn minutes_since(now: DateTime<Utc>, at: &str) -> i64 {
    time::parse(at).map(|t| (now - t).num_minutes()).unwrap_or(0).max(0)
}

/// One credit of ours (never an unclaimed one) given what our transfers for it add up to:
/// `None` when it is settled cleanly (exactly one successful transfer, of its net).
pub fn assess(c: &Credit, s: &TransferSums, now: DateTime<Utc>, stale: chrono::Duration) -> Option<Discrepancy> {
    let d = |kind, detail: String, needs_attention| {
        Some(Discrepancy {
            invoice_id: c.invoice_id.clone(),
            net: c.net,
            transferred: s.transferred,
            kind,
            detail,
            needs_attention,
        })
    };
    match c.state {
        CreditState::Unclaimed => None,
        CreditState::Skipped => d(DiscrepancyKind::Skipped, c.reason.clone().unwrap_or_default(), false),
        CreditState::Attention => d(DiscrepancyKind::Attention, c.reason.clone().unwrap_or_default(), true),
        CreditState::Held => d(DiscrepancyKind::Held, c.reason.clone().unwrap_or_default(), true),
        _ if s.successes > 1 || s.transferred > c.net => d(
            DiscrepancyKind::Overpaid,
            format!("{} successful transfers totalling {}", s.successes, brl(s.transferred)),
            true,
        ),
        _ if s.successes == 1 && s.transferred == c.net => None,
        _ if s.successes == 1 => d(
            DiscrepancyKind::AmountMismatch,
            format!("transferred {} for a net of {}", brl(s.transferred), brl(c.net)),
            true,
        ),
        _ => {
            let minutes = minutes_since(now, &c.credited_at);
            let why = c.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            let (kind, detail) = if s.in_flight {
                (DiscrepancyKind::InFlight, format!("transfer in flight; credited {minutes} min ago"))
            } else if s.failed > 0 {
                (
                    DiscrepancyKind::FailedTransfer,
                    format!("{} failed, retrying{why}; credited {minutes} min ago", transfers_text(s.failed)),
                )
            } else {
                (DiscrepancyKind::NotTransferred, format!("credited {minutes} min ago, no transfer yet{why}"))
            };
            d(kind, detail, chrono::Duration::minutes(minutes) > stale)
        }
    }
}

/// What `status` shows: the credits that do not add up (`unsettled`, with their sums, in credit
/// order), then every transfer without a credit: ours whose credit is missing
/// (`without_credit`), and `strays` (transfers tagged with one of our invoices that we did not
/// send).
pub fn reconcile_sums(
    unsettled: &[(Credit, TransferSums)],
    without_credit: &[TransferRow],
    strays: &[TransferRow],
    now: DateTime<Utc>,
    stale: chrono::Duration,
) -> Vec<Discrepancy> {
    let mut out: Vec<Discrepancy> = unsettled.iter().filter_map(|(c, s)| assess(c, s, now, stale)).collect();
    for t in without_credit.iter().filter(|t| t.is_success() || t.is_alive()) {
        out.push(without_credit_of(t, "sent by this deployment, but the invoice has no credit"));
    }
    for t in strays.iter().filter(|t| t.is_success() || t.is_alive()) {
        out.push(without_credit_of(t, "not sent by this deployment"));
    }
    out
}

/// A credit not transferred after this many minutes needs attention.
pub const DEFAULT_STALE_MINUTES: i64 = 30;

/// Every credit of ours (`credits`, unclaimed excluded) against our transfers (`transfers`, each
/// ours), then every transfer without a credit: ours whose credit is missing, and `strays`
/// (transfers tagged with one of our invoices that we did not send). The same as
/// `reconcile_sums`, over whole rows.
pub fn reconcile(
    credits: &[Credit],
    transfers: &[TransferRow],
    strays: &[TransferRow],
    now: DateTime<Utc>,
    stale: chrono::Duration,
) -> Vec<Discrepancy> {
    let mut by_invoice: std::collections::HashMap<&str, Vec<&TransferRow>> = std::collections::HashMap::new();
    for t in transfers {
        by_invoice.entry(t.invoice_id.as_str()).or_default().push(t);
    }
    let unsettled: Vec<(Credit, TransferSums)> = credits
        .iter()
        .map(|c| {
            let sums = TransferSums::of(by_invoice.remove(c.invoice_id.as_str()).unwrap_or_default().into_iter());
            (c.clone(), sums)
        })
        .collect();
    // Our transfers for invoices without a credit of ours.
    let mut orphans: Vec<TransferRow> = by_invoice.into_values().flatten().cloned().collect();
    orphans.sort_by(|a, b| (&a.invoice_id, &a.id).cmp(&(&b.invoice_id, &b.id)));
    reconcile_sums(&unsettled, &orphans, strays, now, stale)
}

fn transfers_text(n: usize) -> String {
    if n == 1 { "1 transfer".into() } else { format!("{n} transfers") }
}

fn without_credit_of(t: &TransferRow, why: &str) -> Discrepancy {
    Discrepancy {
        invoice_id: t.invoice_id.clone(),
        net: 0,
        transferred: if t.is_success() { t.amount } else { 0 },
        kind: DiscrepancyKind::TransferWithoutCredit,
        detail: format!(
            "a transfer without a credit: {} (externalId {}, {} {}) is tagged for this invoice, {why}",
            t.id,
            t.external_id,
            brl(t.amount),
            t.status
        ),
        needs_attention: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credit(id: &str, net: i64, state: CreditState) -> Credit {
        Credit {
            invoice_id: id.into(),
            event_id: "e".into(),
            amount: net + 10,
            fee: 10,
            net,
            credited_at: "2026-01-01T00:00:00+00:00".into(),
            recorded_at: "t".into(),
            state,
            reason: Some("why".into()),
            next_send_at: None,
            origin: None,
            budget_from: 0,
        }
    }

    fn transfer(invoice: &str, id: &str, amount: i64, status: &str) -> TransferRow {
        TransferRow {
            id: id.into(),
            external_id: format!("x-{id}"),
            invoice_id: invoice.into(),
            amount,
            status: status.into(),
            updated_at: "t".into(),
            ours: true,
            target: None,
            reason: None,
            returned: false,
        }
    }

    #[test]
    fn flags_what_is_wrong_and_nothing_else() {
        let now = time::parse("2026-01-01T01:00:00+00:00").unwrap();
        let stale = chrono::Duration::minutes(30);
        let credits = vec![
            credit("ok", 100, CreditState::Transferred),
            credit("late", 100, CreditState::Open),
            credit("failed", 100, CreditState::Attention),
            credit("double", 100, CreditState::Transferred),
            credit("free", 0, CreditState::Skipped),
            credit("theirs", 100, CreditState::Unclaimed),
        ];
        let transfers = vec![
            transfer("ok", "1", 100, "success"),
            transfer("ok", "2", 100, "failed"),
            transfer("double", "3", 100, "success"),
            transfer("double", "4", 100, "success"),
        ];
        let d = reconcile(&credits, &transfers, &[], now, stale);
        let kinds: Vec<(&str, &str, bool)> =
            d.iter().map(|d| (d.invoice_id.as_str(), d.kind.as_str(), d.needs_attention)).collect();
        assert_eq!(
            kinds,
            vec![
                ("late", "not-transferred", true),
                ("failed", "attention", true),
                ("double", "overpaid", true),
                ("free", "skipped", false)
            ]
        );
        assert!(reconcile(&credits[..1], &transfers[..2], &[], now, stale).is_empty());
    }

    /// Regression: "totals equal" was printed while money had moved for an invoice with no credit.
    #[test]
    fn transfers_without_a_credit_are_discrepancies() {
        let now = time::parse("2026-01-01T01:00:00+00:00").unwrap();
        let stale = chrono::Duration::minutes(30);
        let stray = TransferRow { ours: false, ..transfer("ok", "s1", 100_000, "success") };
        let orphan = transfer("gone", "o1", 50, "success");
        let d = reconcile(
            &[credit("ok", 100, CreditState::Transferred)],
            &[transfer("ok", "1", 100, "success"), orphan],
            &[stray],
            now,
            stale,
        );
        let kinds: Vec<(&str, &str)> = d.iter().map(|d| (d.invoice_id.as_str(), d.kind.as_str())).collect();
        assert_eq!(kinds, [("gone", "transfer-without-credit"), ("ok", "transfer-without-credit")]);
        assert!(d.iter().all(|d| d.needs_attention));
        assert!(d[1].detail.contains("not sent by this deployment"), "{}", d[1].detail);
    }

    /// SQLite's sums (what status uses) say exactly what the sums over whole rows say, for every
    /// state a credit can be in next to every shape its transfers can take.
    #[test]
    fn the_stores_sums_agree_with_the_rows() {
        use crate::store::testing::{exec, temp_store};
        let (_d, store) = temp_store();
        let states = ["open", "transferred", "attention", "held", "skipped", "unclaimed"];
        // (status, amount) of each of ours; the net is 100.
        let shapes: [&[(&str, i64)]; 8] = [
            &[],
            &[("success", 100)],
            &[("success", 90)],
            &[("success", 100), ("success", 100)],
            &[("failed", 100), ("success", 100)],
            &[("processing", 100)],
            &[("failed", 100), ("canceled", 100)],
            &[("success", 120)],
        ];
        let mut sql = String::new();
        for (i, state) in states.iter().enumerate() {
            for (j, shape) in shapes.iter().enumerate() {
                let inv = format!("i{i}{j}");
                sql.push_str(&format!(
                    "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, reason)
                     VALUES ('{inv}', 'e', 110, 10, 100, '2026-01-01T00:0{i}:0{j}+00:00', 't', '{state}', 'why');"
                ));
                for (k, (status, amount)) in shape.iter().enumerate() {
                    sql.push_str(&format!(
                        "INSERT INTO transfers (id, external_id, invoice_id, amount, status, updated_at, ours)
                         VALUES ('t{i}{j}{k}', 'x{i}{j}{k}', '{inv}', {amount}, '{status}', 't', 1);"
                    ));
                }
            }
        }
        // Ours without a credit, and a transfer not ours (not a stray: no draft of ours names it).
        sql.push_str(
            "INSERT INTO transfers (id, external_id, invoice_id, amount, status, updated_at, ours)
               VALUES ('o1', 'xo1', 'gone', 50, 'success', 't', 1), ('o2', 'xo2', 'gone', 50, 'created', 't', 1),
                      ('o3', 'xo3', 'gone', 50, 'failed', 't', 1), ('n1', 'xn1', 'i00', 100, 'success', 't', 0);",
        );
        exec(&store, &sql);
        let now = time::parse("2026-01-01T01:00:00+00:00").unwrap();
        let stale = chrono::Duration::minutes(30);
        let ours: Vec<TransferRow> = store.transfers().unwrap().into_iter().filter(|t| t.ours).collect();
        let strays = store.stray_transfers().unwrap();
        let from_rows = reconcile(&store.credits().unwrap(), &ours, &strays, now, stale);
        let from_sums = reconcile_sums(
            &store.unsettled_credits(true).unwrap(),
            &store.transfers_without_credit().unwrap(),
            &strays,
            now,
            stale,
        );
        assert_eq!(from_sums, from_rows);
        assert!(from_rows.len() > 30, "the fixture covers many kinds: {from_rows:#?}");
        // Without the skipped ones, the rest is the same, in the same order.
        let listed: Vec<Discrepancy> = from_rows.into_iter().filter(|d| d.kind != DiscrepancyKind::Skipped).collect();
        let without_skipped = reconcile_sums(
            &store.unsettled_credits(false).unwrap(),
            &store.transfers_without_credit().unwrap(),
            &strays,
            now,
            stale,
        );
        assert_eq!(without_skipped, listed);
    }

    /// The JSON says what the text says: `status --json` and `status` name a kind alike.
    #[test]
    fn kinds_serialize_as_they_print() {
        use DiscrepancyKind::*;
        for k in [
            Skipped,
            Attention,
            Held,
            Overpaid,
            AmountMismatch,
            InFlight,
            FailedTransfer,
            NotTransferred,
            TransferWithoutCredit,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::json!(k.as_str()));
        }
    }

    #[test]
    fn the_summary_counts_what_it_does_not_list() {
        let now = time::parse("2026-01-01T01:00:00+00:00").unwrap();
        let stale = chrono::Duration::minutes(30);
        let credits = [credit("late", 100, CreditState::Open), credit("free", 0, CreditState::Skipped)];
        let all = Summary::of(reconcile(&credits, &[], &[], now, stale), true, 7);
        assert_eq!((all.listed.len(), all.not_listed, all.total(), all.attention), (2, 0, 2, 1));
        // Without --all the store leaves skipped credits out and counts them: 7 here.
        let some = Summary::of(reconcile(&credits[..1], &[], &[], now, stale), false, 7);
        assert_eq!((some.listed.len(), some.not_listed, some.total()), (1, 7, 8));
        assert_eq!(some.counts, BTreeMap::from([("not-transferred", 1), ("skipped", 7)]));
    }

    #[test]
    fn a_clock_running_ahead_never_shows_negative_ages() {
        let credited = credit("late", 100, CreditState::Open);
        let before = time::parse("2025-12-31T23:00:00+00:00").unwrap();
        let d = reconcile(&[credited], &[], &[], before, chrono::Duration::minutes(30));
        assert!(d[0].detail.contains("credited 0 min ago"), "{}", d[0].detail);
    }
}
