//! Event intake: one row per Stark Bank event id, the body kept exactly as signed.

use chrono::{DateTime, Utc};

use super::db::params;
use super::{Store, ts};
use crate::starkbank::event::EventSummary;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// A verified webhook delivery.
    Webhook,
    /// `GET /v2/event` (authenticated by our own signed request over TLS).
    Api,
}

impl EventSource {
    fn as_str(self) -> &'static str {
        match self {
            EventSource::Webhook => "webhook",
            EventSource::Api => "api",
        }
    }

    pub(super) fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "webhook" => Ok(EventSource::Webhook),
            "api" => Ok(EventSource::Api),
            other => anyhow::bail!("events.source holds {other:?}, neither \"webhook\" nor \"api\""),
        }
    }
}

/// One event ready to be recorded.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub summary: EventSummary,
    /// The exact text that was verified (or returned by the API).
    pub body: Vec<u8>,
    pub signature: Option<String>,
    pub source: EventSource,
}

/// Whether an insert recorded something new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    Duplicate,
}

impl Store {
    /// Records events in one transaction (one fsync for the whole batch). Duplicate ids change
    /// nothing. Returns one verdict per event, in order.
    pub fn insert_events(&mut self, events: &[NewEvent], now: DateTime<Utc>) -> anyhow::Result<Vec<Inserted>> {
        let received = ts(now);
        let tx = self.write_tx()?;
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let s = &e.summary;
            let n = tx.execute(
                "INSERT INTO events (id, subscription, log_type, log_id, resource_id, workspace_id, created, body, signature, source, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO NOTHING",
                params![
                    s.id,
                    s.subscription,
                    s.log_type,
                    s.log_id,
                    s.resource_id,
                    s.workspace_id,
                    s.created,
                    e.body,
                    e.signature,
                    e.source.as_str(),
                    received
                ],
            )?;
            out.push(if n == 1 { Inserted::New } else { Inserted::Duplicate });
        }
        tx.commit()?;
        Ok(out)
    }

    pub fn count_events(&self) -> anyhow::Result<i64> {
        self.db.query_row("SELECT COUNT(*) FROM events", params![], |r| r.get(0))
    }

    pub fn event_exists(&self, id: &str) -> anyhow::Result<bool> {
        self.db.query_row("SELECT EXISTS (SELECT 1 FROM events WHERE id = ?1)", params![id], |r| r.get(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    fn event(id: &str) -> NewEvent {
        NewEvent {
            summary: EventSummary {
                id: id.into(),
                subscription: "invoice".into(),
                log_type: "credited".into(),
                log_id: "l1".into(),
                resource_id: "i1".into(),
                workspace_id: None,
                created: "2026-01-01T00:00:00+00:00".into(),
            },
            body: b"{}".to_vec(),
            signature: Some("sig".into()),
            source: EventSource::Webhook,
        }
    }

    #[test]
    fn duplicate_event_ids_store_one_row() {
        let (_d, mut store) = temp_store();
        let r = store.insert_events(&[event("1"), event("2"), event("1")], Utc::now()).unwrap();
        assert_eq!(r, vec![Inserted::New, Inserted::New, Inserted::Duplicate]);
        assert_eq!(store.insert_events(&[event("2")], Utc::now()).unwrap(), vec![Inserted::Duplicate]);
        assert_eq!(store.count_events().unwrap(), 2);
    }
}
