//! Typed Stark Bank resources and the calls the product makes with them.
//!
//! Owns: the wire shapes of invoice, transfer, event, webhook and public key (camelCase JSON,
//! integer cents), and one method per API call we use.
//! Does not own: signing, retries and error wording (see `client`).
//!
//! The emulator (`sandbox::state`, `sandbox::routes`) keeps its own types and wire checks on
//! purpose, so it tests these rather than agreeing with them.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::{ApiError, Client, Idempotency};

/// Stark Bank accepts at most this many invoices or transfers per create request.
pub const MAX_BATCH: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewInvoice {
    pub amount: i64,
    pub tax_id: String,
    pub name: String,
    /// RFC 3339 with `+00:00`.
    pub due: String,
    /// Seconds after `due` during which the invoice can still be paid.
    pub expiration: i64,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Invoice {
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
    pub due: String,
    pub expiration: i64,
    pub tags: Vec<String>,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewTransfer {
    pub amount: i64,
    pub name: String,
    pub tax_id: String,
    pub bank_code: String,
    pub branch_code: String,
    pub account_number: String,
    pub account_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Transfer {
    pub id: String,
    pub amount: i64,
    pub name: String,
    pub tax_id: String,
    pub bank_code: String,
    pub branch_code: String,
    pub account_number: String,
    pub account_type: String,
    pub external_id: String,
    pub status: String,
    pub fee: i64,
    pub tags: Vec<String>,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Event {
    pub id: String,
    pub subscription: String,
    pub created: String,
    pub workspace_id: Option<String>,
    pub is_delivered: Option<bool>,
    /// The full log: `{id, type, errors, created, invoice|transfer: {...}}`.
    pub log: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub subscriptions: Vec<String>,
}

fn decode<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::Decode { what: what.into(), cause: e.to_string() })
}

fn field(v: &Value, key: &str, what: &str) -> Result<Value, ApiError> {
    v.get(key)
        .cloned()
        .ok_or_else(|| ApiError::Decode { what: what.into(), cause: format!("no `{key}` in the answer") })
}

fn decode_list<T: serde::de::DeserializeOwned>(items: Vec<Value>, what: &str) -> Result<Vec<T>, ApiError> {
    items.into_iter().map(|v| decode(v, what)).collect()
}

/// Query filters shared by invoice and transfer lists.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub tags: Vec<String>,
    pub ids: Vec<String>,
    pub status: Option<String>,
    pub after: Option<String>,
    pub before: Option<String>,
}

impl ListFilter {
    pub fn tags(tags: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { tags: tags.into_iter().map(Into::into).collect(), ..Self::default() }
    }

    pub fn ids(ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { ids: ids.into_iter().map(Into::into).collect(), ..Self::default() }
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if !self.tags.is_empty() {
            q.push(("tags", self.tags.join(",")));
        }
        if !self.ids.is_empty() {
            q.push(("ids", self.ids.join(",")));
        }
        if let Some(s) = &self.status {
            q.push(("status", s.clone()));
        }
        if let Some(a) = &self.after {
            q.push(("after", a.clone()));
        }
        if let Some(b) = &self.before {
            q.push(("before", b.clone()));
        }
        q
    }
}

impl Client {
    /// `POST /v2/invoice`. Not idempotent: a timeout or 5xx gives `OutcomeUnknown`.
    pub fn create_invoices(&self, invoices: &[NewInvoice]) -> Result<Vec<Invoice>, ApiError> {
        let what = format!("creating {} invoices", invoices.len());
        let v = self.call(
            Method::POST,
            "invoice",
            &[],
            Some(&json!({ "invoices": invoices })),
            Idempotency::Unsafe,
            &what,
        )?;
        decode(field(&v, "invoices", &what)?, &what)
    }

    /// `GET /v2/invoice`, every page.
    pub fn query_invoices(&self, filter: &ListFilter) -> Result<Vec<Invoice>, ApiError> {
        let what = "listing invoices";
        decode_list(self.get_all("invoice", "invoices", &filter.query(), what)?, what)
    }

    pub fn get_invoice(&self, id: &str) -> Result<Invoice, ApiError> {
        let what = format!("fetching invoice {id}");
        decode(field(&self.get(&format!("invoice/{id}"), &[], &what)?, "invoice", &what)?, &what)
    }

    /// `GET /v2/invoice/log?invoiceIds=...`, every page, as raw logs.
    pub fn invoice_logs(&self, invoice_ids: &[String]) -> Result<Vec<Value>, ApiError> {
        self.get_all("invoice/log", "logs", &[("invoiceIds", invoice_ids.join(","))], "listing invoice logs")
    }

    /// `GET /v2/invoice/log?invoiceIds=...&types=credited`, every page, as raw logs.
    pub fn credited_logs(&self, invoice_ids: &[String]) -> Result<Vec<Value>, ApiError> {
        let q = [("invoiceIds", invoice_ids.join(",")), ("types", "credited".to_string())];
        self.get_all("invoice/log", "logs", &q, "listing credited invoice logs")
    }

    /// `POST /v2/transfer`. Idempotent (and so retried) only when every transfer has an externalId.
    pub fn create_transfers(&self, transfers: &[NewTransfer]) -> Result<Vec<Transfer>, ApiError> {
        let what = format!("creating {} transfers", transfers.len());
        let idempotency =
            if transfers.iter().all(|t| t.external_id.is_some()) { Idempotency::Safe } else { Idempotency::Unsafe };
        let v =
            self.call(Method::POST, "transfer", &[], Some(&json!({ "transfers": transfers })), idempotency, &what)?;
        decode(field(&v, "transfers", &what)?, &what)
    }

    pub fn query_transfers(&self, filter: &ListFilter) -> Result<Vec<Transfer>, ApiError> {
        let what = "listing transfers";
        decode_list(self.get_all("transfer", "transfers", &filter.query(), what)?, what)
    }

    /// `GET /v2/transfer/log?transferIds=...&types=...`, every page, as raw logs.
    pub fn transfer_logs(&self, transfer_ids: &[String], types: &[&str]) -> Result<Vec<Value>, ApiError> {
        let q = [("transferIds", transfer_ids.join(",")), ("types", types.join(","))];
        self.get_all("transfer/log", "logs", &q, "listing transfer logs")
    }

    pub fn get_transfer(&self, id: &str) -> Result<Transfer, ApiError> {
        let what = format!("fetching transfer {id}");
        decode(field(&self.get(&format!("transfer/{id}"), &[], &what)?, "transfer", &what)?, &what)
    }

    /// `GET /v2/event?isDelivered=...`, every page, as raw values.
    pub fn query_events(&self, is_delivered: Option<bool>) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        self.for_each_event_page(is_delivered, None, |page| {
            out.extend(page);
            Ok::<(), ApiError>(())
        })?;
        Ok(out)
    }

    /// `GET /v2/event?isDelivered=...&after=...`, page by page: raw values, so they can be
    /// stored verbatim. `after` is a date (`YYYY-MM-DD`, inclusive): events created before it
    /// are not listed.
    pub fn for_each_event_page<E: From<ApiError>>(
        &self,
        is_delivered: Option<bool>,
        after: Option<&str>,
        each: impl FnMut(Vec<Value>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut q = Vec::new();
        if let Some(d) = is_delivered {
            q.push(("isDelivered", d.to_string()));
        }
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        self.for_each_page("event", "events", &q, "listing events", each)
    }

    /// The newest event the API lists for our credentials (`GET /v2/event?limit=1`), if any.
    pub fn newest_event(&self) -> Result<Option<Event>, ApiError> {
        let what = "listing the newest event";
        let v = self.get("event", &[("limit", "1".into())], what)?;
        let mut events: Vec<Event> = decode(field(&v, "events", what)?, what)?;
        Ok(if events.is_empty() { None } else { Some(events.remove(0)) })
    }

    pub fn get_event(&self, id: &str) -> Result<Event, ApiError> {
        let what = format!("fetching event {id}");
        decode(field(&self.get(&format!("event/{id}"), &[], &what)?, "event", &what)?, &what)
    }

    /// `PATCH /v2/event/{id}` with `isDelivered: true`. Idempotent.
    pub fn mark_event_delivered(&self, id: &str) -> Result<(), ApiError> {
        let what = format!("marking event {id} delivered");
        self.call(
            Method::PATCH,
            &format!("event/{id}"),
            &[],
            Some(&json!({"isDelivered": true})),
            Idempotency::Safe,
            &what,
        )?;
        Ok(())
    }

    pub fn create_webhook(&self, url: &str, subscriptions: &[&str]) -> Result<Webhook, ApiError> {
        let what = "creating the webhook";
        let body = json!({"url": url, "subscriptions": subscriptions});
        let v = self.call(Method::POST, "webhook", &[], Some(&body), Idempotency::Unsafe, what)?;
        decode(field(&v, "webhook", what)?, what)
    }

    pub fn list_webhooks(&self) -> Result<Vec<Webhook>, ApiError> {
        let what = "listing webhooks";
        decode_list(self.get_all("webhook", "webhooks", &[], what)?, what)
    }

    pub fn delete_webhook(&self, id: &str) -> Result<Webhook, ApiError> {
        let what = format!("deleting webhook {id}");
        let v = self.call(Method::DELETE, &format!("webhook/{id}"), &[], None, Idempotency::Safe, &what)?;
        decode(field(&v, "webhook", &what)?, &what)
    }

    /// The PEM of the key Stark Bank signs webhooks with (`GET /v2/public-key`, newest first).
    pub fn public_key(&self) -> Result<String, ApiError> {
        let what = "fetching Stark Bank's public key";
        let v = self.get("public-key", &[("limit", "1".into())], what)?;
        v.get("publicKeys")
            .and_then(|k| k.get(0))
            .and_then(|k| k.get("content"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ApiError::Decode { what: what.into(), cause: "no publicKeys[0].content".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_transfer_serializes_in_camel_case_without_null_external_id() {
        let t = NewTransfer {
            amount: 3619,
            name: "Stark Bank S.A.".into(),
            tax_id: "20.018.183/0001-80".into(),
            bank_code: "20018183".into(),
            branch_code: "0001".into(),
            account_number: "6341320293482496".into(),
            account_type: "payment".into(),
            external_id: None,
            tags: vec![],
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["bankCode"], "20018183");
        assert!(v.get("externalId").is_none());
    }

    #[test]
    fn invoice_tolerates_missing_and_extra_fields() {
        let inv: Invoice = serde_json::from_value(json!({"id": "1", "amount": 5, "brcode": "x"})).unwrap();
        assert_eq!(inv.amount, 5);
        assert_eq!(inv.fee, 0);
    }
}
