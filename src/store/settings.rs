//! Facts this deployment learned about itself and pinned (the workspace id), with how each was
//! proven. A pinned value never changes: a contradiction is the caller's error to report.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension as _, params};

use super::{Store, ts};

/// A pinned fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    /// How it was proven, e.g. `GET /v2/event`.
    pub source: String,
    pub set_at: String,
}

impl Store {
    pub fn setting(&self, key: &str) -> anyhow::Result<Option<Setting>> {
        Ok(self
            .conn
            .query_row("SELECT value, source, set_at FROM settings WHERE key = ?1", [key], |r| {
                Ok(Setting { value: r.get(0)?, source: r.get(1)?, set_at: r.get(2)? })
            })
            .optional()?)
    }

    /// Pins `value` under `key` unless something is pinned already; returns what is pinned now
    /// (the caller compares: another process may have pinned a different value first).
    pub fn pin_setting(&mut self, key: &str, value: &str, source: &str, now: DateTime<Utc>) -> anyhow::Result<Setting> {
        self.conn.execute(
            "INSERT INTO settings (key, value, source, set_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key) DO NOTHING",
            params![key, value, source, ts(now)],
        )?;
        self.setting(key)?.ok_or_else(|| anyhow::anyhow!("the setting {key} vanished right after it was written"))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::temp_store;

    #[test]
    fn a_pinned_value_never_changes() {
        let (_d, mut store) = temp_store();
        assert_eq!(store.setting("k").unwrap(), None);
        assert_eq!(store.pin_setting("k", "a", "test", chrono::Utc::now()).unwrap().value, "a");
        assert_eq!(store.pin_setting("k", "b", "test", chrono::Utc::now()).unwrap().value, "a");
    }
}
