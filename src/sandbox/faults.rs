//! Faults on demand: what can go wrong, as data that tests and operators switch on at run time
//! (`Sandbox::set_faults`, `POST /_sandbox/faults`). Owns the knobs and the seeded dice; the
//! places that act on them are `routes` (5xx, latency, commit-then-500) and `state` (deliveries,
//! balance).

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
