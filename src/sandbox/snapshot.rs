//! What the emulator holds, as plain typed data for tests (`Sandbox::snapshot`) and operators
//! (`GET /_sandbox/state`). A copy: changing it changes nothing.
//!
//! Owns: the published shape of the state, in both directions (tests read it from
//! `GET /_sandbox/state` back into these types). Does not own: the state itself (`state`).
//!
//! The mirror structs are deliberate, not repetition to derive away: `state`'s types are the
//! emulator's working model and carry what the snapshot must not publish or cannot rebuild (the
//! `seq` behind list cursors, a transfer's `doom`, rules, splits, discounts, each log's copy of
//! its resource as JSON); logs live in one list per kind there (the log endpoints page over
//! them) and nested under their resource here; `pay_at` is published as `will_pay_at`. Deriving
//! `Serialize`/`Deserialize` on `state`'s types would make every internal field part of this
//! contract, or leave skipped fields silently zero in a snapshot read back. Records the
//! emulator only appends and publishes whole (`SnapDelivery`, `SnapRequest`) are stored in this
//! form and not copied.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::faults::Faults;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The simulated clock.
    #[serde(with = "ts")]
    pub now: DateTime<Utc>,
    pub seed: u64,
    pub workspace_id: String,
    /// Cents: initial balance + credited (amount - fee) - reversed - transfers (amount + fee)
    /// + canceled and returned transfers (amount + fee).
    pub balance: i64,
    pub auth_failures: u64,
    pub invoices: Vec<SnapInvoice>,
    pub transfers: Vec<SnapTransfer>,
    pub events: Vec<SnapEvent>,
    pub attempts: Vec<SnapAttempt>,
    pub deliveries: Vec<SnapDelivery>,
    pub webhooks: Vec<SnapWebhook>,
    pub requests: Vec<SnapRequest>,
    pub faults: Faults,
}

/// One log of an invoice or transfer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapLog {
    pub id: String,
    pub log_type: String,
    #[serde(with = "ts")]
    pub created: DateTime<Utc>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapInvoice {
    pub id: String,
    pub amount: i64,
    pub nominal_amount: i64,
    pub fee: i64,
    pub fine_amount: i64,
    pub interest_amount: i64,
    pub discount_amount: i64,
    pub status: String,
    pub name: String,
    pub tax_id: String,
    #[serde(with = "ts")]
    pub due: DateTime<Utc>,
    pub expiration: i64,
    pub tags: Vec<String>,
    #[serde(with = "ts")]
    pub created: DateTime<Utc>,
    #[serde(with = "ts")]
    pub updated: DateTime<Utc>,
    /// Whether the automatic payer chose to pay it (it still will not pay it once overdue).
    #[serde(with = "opt_ts", default)]
    pub will_pay_at: Option<DateTime<Utc>>,
    /// The credit first; every later one a reversal.
    pub transaction_ids: Vec<String>,
    pub logs: Vec<SnapLog>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapTransfer {
    pub id: String,
    pub amount: i64,
    pub fee: i64,
    pub external_id: Option<String>,
    pub tags: Vec<String>,
    pub status: String,
    pub bank_code: String,
    pub branch_code: String,
    pub account_number: String,
    pub account_type: String,
    pub name: String,
    pub tax_id: String,
    /// When it is processed: creation time unless scheduled later.
    #[serde(with = "ts")]
    pub scheduled: DateTime<Utc>,
    /// The debit; a second one is the money coming back (a return).
    pub transaction_ids: Vec<String>,
    #[serde(with = "ts")]
    pub created: DateTime<Utc>,
    #[serde(with = "ts")]
    pub updated: DateTime<Utc>,
    pub logs: Vec<SnapLog>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapEvent {
    pub id: String,
    pub subscription: String,
    pub log_type: String,
    pub log_id: String,
    pub resource_id: String,
    #[serde(with = "ts")]
    pub created: DateTime<Utc>,
    pub is_delivered: bool,
    pub deleted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapAttempt {
    pub id: String,
    pub code: String,
    pub message: String,
    pub event_id: String,
    pub webhook_id: String,
    #[serde(with = "ts")]
    pub created: DateTime<Utc>,
}

/// One delivery the emulator made or chose not to make.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapDelivery {
    pub event_id: String,
    pub webhook_id: String,
    pub url: String,
    /// Simulated time of the POST.
    #[serde(with = "ts")]
    pub at: DateTime<Utc>,
    /// 0 for the first try, 1..=3 for the retries.
    pub attempt: u32,
    /// `delivered`, `badHttpStatus`, `badConnection`, `timeout`, or `dropped` (never POSTed).
    pub outcome: String,
    pub http_status: Option<u16>,
    /// A deliberate second POST of an already delivered event.
    pub duplicate: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapWebhook {
    pub id: String,
    pub url: String,
    pub subscriptions: Vec<String>,
    pub deleted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub access_id: Option<String>,
    pub authenticated: bool,
    pub status: u16,
    /// The first error code answered, if any.
    pub error: Option<String>,
}

/// Timestamps as the API writes them (`...+00:00`); chrono is built without serde here.
pub(crate) mod ts {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::starkbank::time::format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        crate::starkbank::time::parse_date_or_datetime(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time or a date")))
    }
}

/// `Option` of the above; `null` for none.
pub(crate) mod opt_ts {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::ts::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => crate::starkbank::time::parse_date_or_datetime(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time or a date"))),
        }
    }
}
