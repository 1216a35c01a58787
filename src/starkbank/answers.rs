//! What Stark Bank's answers mean for what to do next: the one classification, per request
//! kind, that the engines act on (and that the README's "When Stark Bank says no" lists).
//!
//! - `Transient`: the request did nothing and the same request may succeed later without anyone
//!   changing anything: a rate limit (429), an authentication or clock refusal (a key being
//!   rotated, clock skew), an insufficient balance. Retried by the next runs with a backoff;
//!   never needs a human by itself (a stale credit is still flagged by `status`).
//! - `Duplicate`: the request repeats one that landed earlier (a transfer's externalId already
//!   used): the outcome is resolved by looking up what exists.
//! - `Permanent`: the request itself is wrong (an invalid account, a malformed field): it goes
//!   to attention with the bank's reason.
//!
//! Unknown outcomes (timeouts, 5xx, a process killed mid-request) are not refusals at all: they
//! stay unknown until a lookup resolves them (`client::ApiError::OutcomeUnknown`).
//! Owns: the codes and texts behind each verdict. Does not own: the HTTP status mapping
//! (`client`) or what an engine records.

use super::client::ApiError;

/// What a refusal means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Transient,
    Duplicate,
    Permanent,
}

/// Codes of authentication and clock refusals (Stark Bank's exact codes for a bad Access-Time
/// or Access-Id are not documented; these are the ones seen or named by the SDKs).
const AUTH_CODES: &[&str] =
    &["invalidCredentials", "invalidSignature", "invalidAccessTime", "invalidAccessId", "invalidIp"];
/// Codes of refusals that pass with time.
const TRANSIENT_CODES: &[&str] = &["tooManyRequests", "insufficientBalance", "internalServerError"];

/// True for a text that says the balance is short (a failed transfer's reason, or a message).
pub fn says_insufficient_balance(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("insufficient") && (t.contains("balance") || t.contains("fund"))
}

/// Stark Bank's code and text for a repeated externalId are not documented (integrators
/// report the text "Duplicated transfer"); a refusal is read as a duplicate when its code or
/// its message says so.
fn says_duplicate(code: &str, message: &str) -> bool {
    code.to_ascii_lowercase().contains("duplicat") || message.to_ascii_lowercase().contains("duplicat")
}

/// A refused `POST /v2/transfer` (every element of the batch is refused with it).
pub fn transfer_refusal(err: &ApiError) -> Verdict {
    let ApiError::Rejected { status, errors, .. } = err else { return Verdict::Transient };
    if *status == 429 || *status == 401 || *status == 403 {
        return Verdict::Transient;
    }
    if errors.iter().any(|e| AUTH_CODES.contains(&e.code.as_str()) || TRANSIENT_CODES.contains(&e.code.as_str()))
        || errors.iter().any(|e| says_insufficient_balance(&e.message))
    {
        return Verdict::Transient;
    }
    if !errors.is_empty() && errors.iter().all(|e| says_duplicate(&e.code, &e.message)) {
        return Verdict::Duplicate;
    }
    Verdict::Permanent
}

/// A refused `POST /v2/invoice` (the whole batch: nothing was created).
pub fn invoice_refusal(err: &ApiError) -> Verdict {
    let ApiError::Rejected { status, errors, .. } = err else { return Verdict::Transient };
    if *status == 429 || *status == 401 || *status == 403 {
        return Verdict::Transient;
    }
    if errors.iter().any(|e| AUTH_CODES.contains(&e.code.as_str()) || TRANSIENT_CODES.contains(&e.code.as_str())) {
        return Verdict::Transient;
    }
    Verdict::Permanent
}

/// A transfer Stark Bank accepted and then reported `failed`, by the reason in its failed log.
/// An insufficient balance passes (a new attempt after a backoff, not counted against the
/// budget); anything else counts, and ends in attention with the reason once the budget is spent.
pub fn failed_transfer(reason: Option<&str>) -> Verdict {
    match reason {
        Some(r) if says_insufficient_balance(r) => Verdict::Transient,
        Some(r) if says_duplicate("", r) => Verdict::Duplicate,
        _ => Verdict::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::starkbank::client::ApiErrorItem;

    fn refused(status: u16, code: &str, message: &str) -> ApiError {
        ApiError::Rejected {
            what: "x".into(),
            status,
            errors: vec![ApiErrorItem { code: code.into(), message: message.into() }],
        }
    }

    #[test]
    fn each_refusal_has_one_meaning() {
        assert_eq!(transfer_refusal(&refused(429, "tooManyRequests", "slow down")), Verdict::Transient);
        assert_eq!(transfer_refusal(&refused(400, "invalidCredentials", "signature")), Verdict::Transient);
        assert_eq!(transfer_refusal(&refused(400, "invalidSignature", "clock")), Verdict::Transient);
        assert_eq!(transfer_refusal(&refused(400, "insufficientBalance", "")), Verdict::Transient);
        assert_eq!(transfer_refusal(&refused(400, "invalidTransfer", "Insufficient balance")), Verdict::Transient);
        assert_eq!(
            transfer_refusal(&refused(400, "invalidExternalId", "Duplicated transfer: externalId x")),
            Verdict::Duplicate
        );
        assert_eq!(transfer_refusal(&refused(400, "invalidAccountNumber", "no such account")), Verdict::Permanent);
        assert_eq!(invoice_refusal(&refused(400, "invalidTaxId", "bad")), Verdict::Permanent);
        assert_eq!(invoice_refusal(&refused(429, "tooManyRequests", "")), Verdict::Transient);
        assert_eq!(failed_transfer(Some("Insufficient balance")), Verdict::Transient);
        assert_eq!(failed_transfer(Some("Duplicated transfer")), Verdict::Duplicate);
        assert_eq!(failed_transfer(Some("Invalid account")), Verdict::Permanent);
        assert_eq!(failed_transfer(None), Verdict::Permanent);
    }
}
