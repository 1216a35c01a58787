//! Reconciliation, both ways: every credit of ours against the transfers we sent for it, and
//! every transfer against a credit. Pure over the store's rows (unit-tested); `status` prints
//! the result and exits 3 when a discrepancy needs a human.
//!
//! Owns: the kinds of discrepancy and which need attention. Does not own: reading the store or
//! printing.

use chrono::{DateTime, Utc};

use crate::starkbank::time;
use crate::store::{Credit, CreditState, TransferRow};

/// One thing that does not add up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Discrepancy {
    pub invoice_id: String,
    pub net: i64,
    pub transferred: i64,
    pub kind: &'static str,
    pub detail: String,
    pub needs_attention: bool,
}

/// What the transfers of one invoice add up to.
#[derive(Debug, Default)]
struct Sums {
    transferred: i64,
    successes: usize,
    in_flight: bool,
    failed: usize,
}

fn sums<'a>(transfers: impl Iterator<Item = &'a TransferRow>) -> Sums {
    let mut s = Sums::default();
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

/// Minutes since `at` (never negative: a clock that runs ahead shows 0).
fn minutes_since(now: DateTime<Utc>, at: &str) -> i64 {
    time::parse(at).map(|t| (now - t).num_minutes()).unwrap_or(0).max(0)
}

/// Every credit of ours (`credits`, unclaimed excluded) against our transfers (`transfers`, each
/// ours), then every transfer without a credit: ours whose credit is missing, and `strays`
/// (transfers tagged with one of our invoices that we did not send).
/// A credit not transferred after this many minutes needs attention.
pub const DEFAULT_STALE_MINUTES: i64 = 30;

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
    let mut out = Vec::new();
    for c in credits {
        let s = sums(by_invoice.remove(c.invoice_id.as_str()).unwrap_or_default().into_iter());
        let d = |kind, detail: String, needs_attention| Discrepancy {
            invoice_id: c.invoice_id.clone(),
            net: c.net,
            transferred: s.transferred,
            kind,
            detail,
            needs_attention,
        };
        match c.state {
            CreditState::Unclaimed => {}
            CreditState::Skipped => out.push(d("skipped", c.reason.clone().unwrap_or_default(), false)),
            CreditState::Attention => out.push(d("attention", c.reason.clone().unwrap_or_default(), true)),
            CreditState::Held => out.push(d("held", c.reason.clone().unwrap_or_default(), true)),
            _ if s.successes > 1 || s.transferred > c.net => out.push(d(
                "overpaid",
                format!("{} successful transfers totalling {}", s.successes, crate::cmd::brl(s.transferred)),
                true,
            )),
            _ if s.successes == 1 && s.transferred == c.net => {}
            _ if s.successes == 1 => out.push(d(
                "amount-mismatch",
                format!("transferred {} for a net of {}", crate::cmd::brl(s.transferred), crate::cmd::brl(c.net)),
                true,
            )),
            _ => {
                let minutes = minutes_since(now, &c.credited_at);
                let why = c.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
                let (kind, detail) = if s.in_flight {
                    ("in-flight", format!("transfer in flight; credited {minutes} min ago"))
                } else if s.failed > 0 {
                    (
                        "failed-transfer",
                        format!("{} failed, retrying{why}; credited {minutes} min ago", transfers_text(s.failed)),
                    )
                } else {
                    ("not-transferred", format!("credited {minutes} min ago, no transfer yet{why}"))
                };
                out.push(d(kind, detail, chrono::Duration::minutes(minutes) > stale));
            }
        }
    }
    // Our transfers for invoices without a credit of ours.
    let mut orphans: Vec<&TransferRow> =
        by_invoice.into_values().flatten().filter(|t| t.is_success() || t.is_alive()).collect();
    orphans.sort_by(|a, b| (&a.invoice_id, &a.id).cmp(&(&b.invoice_id, &b.id)));
    for t in orphans {
        out.push(without_credit(t, "sent by this deployment, but the invoice has no credit"));
    }
    for t in strays.iter().filter(|t| t.is_success() || t.is_alive()) {
        out.push(without_credit(t, "not sent by this deployment"));
    }
    out
}

fn transfers_text(n: usize) -> String {
    if n == 1 { "1 transfer".into() } else { format!("{n} transfers") }
}

fn without_credit(t: &TransferRow, why: &str) -> Discrepancy {
    Discrepancy {
        invoice_id: t.invoice_id.clone(),
        net: 0,
        transferred: if t.is_success() { t.amount } else { 0 },
        kind: "transfer-without-credit",
        detail: format!(
            "a transfer without a credit: {} (externalId {}, {} {}) is tagged for this invoice, {why}",
            t.id,
            t.external_id,
            crate::cmd::brl(t.amount),
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
            d.iter().map(|d| (d.invoice_id.as_str(), d.kind, d.needs_attention)).collect();
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
        let kinds: Vec<(&str, &str)> = d.iter().map(|d| (d.invoice_id.as_str(), d.kind)).collect();
        assert_eq!(kinds, [("gone", "transfer-without-credit"), ("ok", "transfer-without-credit")]);
        assert!(d.iter().all(|d| d.needs_attention));
        assert!(d[1].detail.contains("not sent by this deployment"), "{}", d[1].detail);
    }

    #[test]
    fn a_clock_running_ahead_never_shows_negative_ages() {
        let credited = credit("late", 100, CreditState::Open);
        let before = time::parse("2025-12-31T23:00:00+00:00").unwrap();
        let d = reconcile(&[credited], &[], &[], before, chrono::Duration::minutes(30));
        assert!(d[0].detail.contains("credited 0 min ago"), "{}", d[0].detail);
    }
}
