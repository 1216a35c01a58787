//! Reading a webhook event body into the few fields we index.
//!
//! Owns: the rules for "a well-formed event" (`{"event": {id, subscription, created, log: {id,
//! type, <resource>: {id, ...}}}}`). Does not own: signatures (see `verify`) or storage.

use serde_json::Value;

/// The indexed fields of one event; the body itself is kept verbatim by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSummary {
    pub id: String,
    pub subscription: String,
    pub log_type: String,
    pub log_id: String,
    /// The id of the invoice, transfer, ... the log is about.
    pub resource_id: String,
    pub workspace_id: Option<String>,
    pub created: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is not JSON")]
    NotJson,
    #[error("the body has no `event` object")]
    NoEvent,
    #[error("the event has no `{0}`")]
    Missing(&'static str),
}

/// The resource key inside a log for a subscription: `invoice` -> `invoice`, `brcode-payment` ->
/// `payment` (Stark Bank names the inner object after the last word).
fn resource_key(subscription: &str) -> &str {
    subscription.rsplit(['-', '.']).next().unwrap_or(subscription)
}

fn text(v: &Value, key: &'static str) -> Result<String, EventError> {
    match v.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(EventError::Missing(key)),
    }
}

/// Summarizes the `event` object itself (as listed by `GET /v2/event`).
pub fn summarize_event(event: &Value) -> Result<EventSummary, EventError> {
    if !event.is_object() {
        return Err(EventError::NoEvent);
    }
    let id = text(event, "id")?;
    let subscription = text(event, "subscription")?;
    let created = text(event, "created")?;
    let log = event.get("log").filter(|l| l.is_object()).ok_or(EventError::Missing("log"))?;
    let log_type = text(log, "type")?;
    let log_id = text(log, "id")?;
    let resource = log
        .get(resource_key(&subscription))
        .or_else(|| log.as_object().and_then(|m| m.values().find(|v| v.get("id").is_some() && v.is_object())))
        .ok_or(EventError::Missing("log resource"))?;
    let resource_id = text(resource, "id")?;
    let workspace_id = event.get("workspaceId").and_then(Value::as_str).map(str::to_string);
    Ok(EventSummary { id, subscription, log_type, log_id, resource_id, workspace_id, created })
}

/// Parses a webhook body `{"event": {...}}` into the fields we index (the body itself is
/// stored verbatim, so nothing else is kept).
pub fn parse_body(body: &[u8]) -> Result<EventSummary, EventError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| EventError::NotJson)?;
    summarize_event(v.get("event").ok_or(EventError::NoEvent)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_a_real_invoice_event() {
        let raw = std::fs::read_to_string("tests/fixtures/vectors/real/sb-03-invoice-created-2021-04-26.json").unwrap();
        let vector: Value = serde_json::from_str(&raw).unwrap();
        let s = parse_body(vector["body"].as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(s.id, "5415223380934656");
        assert_eq!(s.subscription, "invoice");
        assert_eq!(s.log_type, "created");
        assert_eq!(s.resource_id, "5941925571985408");
        assert_eq!(s.workspace_id.as_deref(), Some("5078376503050240"));
    }

    #[test]
    fn refuses_malformed_events() {
        assert_eq!(parse_body(b"nope").unwrap_err(), EventError::NotJson);
        assert_eq!(parse_body(b"{}").unwrap_err(), EventError::NoEvent);
        assert_eq!(parse_body(br#"{"event": {"id": "1"}}"#).unwrap_err(), EventError::Missing("subscription"));
        assert_eq!(parse_body(br#"{"event": []}"#).unwrap_err(), EventError::NoEvent);
    }
}
