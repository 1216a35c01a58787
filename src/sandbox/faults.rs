//! Faults on demand: what can go wrong, as data that tests and operators switch on at run time
//! (`Sandbox::set_faults`, `POST /_sandbox/faults`). Owns the knobs and the seeded dice; the
//! places that act on them are `routes` (5xx, 429, latency, slow commits, commit-then-500,
//! refusals) and `state` (deliveries, balance, transfers that fail).

use chrono::{DateTime, Utc};
use rand::RngExt as _;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

/// Every fault is off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of /v2 requests answered 500 before anything is done (0.0 to 1.0).
    pub error_rate: f64,
    /// Real milliseconds added before each /v2 answer.
    pub latency_ms: u64,
    /// Share of invoice creations that are committed and then answered 500.
    pub commit_then_500_invoice: f64,
    /// Share of transfer creations that are committed and then answered 500.
    pub commit_then_500_transfer: f64,
    /// The next N invoice creations are committed and then answered 500 (counts down).
    pub commit_then_500_next_invoices: u32,
    /// The next N invoice creations are answered 500 before anything is done (counts down).
    pub error_next_invoices: u32,
    /// The next N transfer creations are answered 500 before anything is done (counts down).
    pub error_next_transfers: u32,
    /// The next N transfer creations are committed and then answered 500 (counts down).
    pub commit_then_500_next_transfers: u32,
    /// Share of successful webhook deliveries that are POSTed a second time.
    pub duplicate_delivery_rate: f64,
    /// Share of webhook deliveries never POSTed (the event stays undelivered, no attempt).
    pub drop_delivery_rate: f64,
    /// Deliver each invoice's `credited` event before its `paid` event.
    pub out_of_order: bool,
    /// Transfers created before this simulated time fail for insufficient balance.
    #[serde(with = "super::snapshot::opt_ts")]
    pub insufficient_balance_until: Option<DateTime<Utc>>,
    /// Sign webhooks with the high-S twin of the signature, as Stark Bank's own signer does.
    pub high_s_signatures: bool,
    /// The next N transfer creation requests are answered 429 `tooManyRequests`, creating
    /// nothing (counts down).
    pub too_many_requests_next_transfers: u32,
    /// The next N invoice creation requests are answered 429 `tooManyRequests`, creating
    /// nothing (counts down).
    pub too_many_requests_next_invoices: u32,
    /// The next N valid transfer creation requests are refused: 400 with one error per element,
    /// `refuse_code` and `Element i: refuse_message`, creating nothing (counts down).
    pub refuse_next_transfers: u32,
    /// The next N valid invoice creation requests are refused the same way (400, one error per
    /// element with `refuse_code` and `refuse_message`), creating nothing (counts down).
    pub refuse_next_invoices: u32,
    /// Error code of those refusals (empty: `REFUSE_CODE`).
    pub refuse_code: String,
    /// Error text of those refusals, after `Element i: ` (empty: `REFUSE_MESSAGE`).
    pub refuse_message: String,
    /// The next N transfers created (elements, not requests) are accepted and then fail at their
    /// first step with a `failed` log whose `errors` is `[fail_reason]`, moving no money.
    pub fail_next_transfers: u32,
    /// The error of those failures (empty: `FAIL_REASON`).
    pub fail_reason: String,
    /// Real milliseconds a slow commit waits, with the state unlocked, before it commits and
    /// answers.
    pub slow_commit_ms: u64,
    /// The next N valid invoice creation requests are slow commits (counts down).
    pub slow_commit_next_invoices: u32,
    /// The next N valid transfer creation requests are slow commits (counts down).
    pub slow_commit_next_transfers: u32,
}

/// Error code of a 429 answer (`too_many_requests_next_*`). The real API documents no rate limit
/// and no code for one; change it here if a real answer is ever captured.
pub const TOO_MANY_REQUESTS_CODE: &str = "tooManyRequests";
/// Code of a `refuse_next_transfers` refusal when `refuse_code` is empty.
pub const REFUSE_CODE: &str = "invalidTransfer";
/// Text of a `refuse_next_transfers` refusal when `refuse_message` is empty.
pub const REFUSE_MESSAGE: &str = "Transfer refused";
/// Error of a `fail_next_transfers` failure when `fail_reason` is empty.
pub const FAIL_REASON: &str = "Transfer failed";

/// A text knob: `value`, or `default` when it is empty.
pub fn text(value: &str, default: &str) -> String {
    if value.is_empty() { default.to_string() } else { value.to_string() }
}

/// True with probability `rate` (clamped to 0..=1).
pub fn roll(rng: &mut StdRng, rate: f64) -> bool {
    let p = if rate.is_finite() { rate.clamp(0.0, 1.0) } else { 0.0 };
    p > 0.0 && rng.random_bool(p)
}

/// Decrements a "next N" counter; true when it was non-zero.
pub fn take(counter: &mut u32) -> bool {
    if *counter > 0 {
        *counter -= 1;
        true
    } else {
        false
    }
}
