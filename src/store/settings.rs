//! Facts this deployment learned about itself and pinned (the workspace id), with how each was
//! proven. A pinned value never changes: a contradiction is the caller's error to report. One
//! entry moves instead: the event pull's cursor (`events_pulled_through`), which only goes
//! forward.

use chrono::{DateTime, Utc};

use super::db::{OptionalExtension as _, params};
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
        self.db
            .query_row("SELECT value, source, set_at FROM settings WHERE key = ?1", params![key], |r| {
                Ok(Setting { value: r.get(0)?, source: r.get(1)?, set_at: r.get(2)? })
            })
            .optional()
    }

    /// Pins `value` under `key` unless something is pinned already; returns what is pinned now
    /// (the caller compares: another process may have pinned a different value first).
    pub fn pin_setting(&mut self, key: &str, value: &str, source: &str, now: DateTime<Utc>) -> anyhow::Result<Setting> {
        self.db.execute(
            "INSERT INTO settings (key, value, source, set_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key) DO NOTHING",
            params![key, value, source, ts(now)],
        )?;
        self.setting(key)?.ok_or_else(|| anyhow::anyhow!("the setting {key} vanished right after it was written"))
    }

    /// The newest `created` (Stark Bank's clock) among the undelivered events the last complete
    /// pull listed and settled: the next pull starts a margin before it.
    pub fn event_pull_cursor(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        Ok(self.setting(PULL_CURSOR)?.and_then(|s| crate::starkbank::time::parse(&s.value)))
    }

    /// Moves the event pull's cursor to `through`, never back.
    pub fn advance_event_pull_cursor(&mut self, through: DateTime<Utc>, now: DateTime<Utc>) -> anyhow::Result<()> {
        if self.event_pull_cursor()?.is_some_and(|c| c >= through) {
            return Ok(());
        }
        self.db.execute(
            "INSERT INTO settings (key, value, source, set_at) VALUES (?1, ?2, 'process-events', ?3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, set_at = excluded.set_at",
            params![PULL_CURSOR, ts(through), ts(now)],
        )?;
        Ok(())
    }
}

/// The settings key of the event pull's cursor.
const PULL_CURSOR: &str = "events_pulled_through";

#[cfg(test)]
mod tests {
    use crate::store::testing::temp_store;

    #[test]
    fn the_pull_cursor_only_goes_forward() {
        let (_d, mut store) = temp_store();
        let t = |s: &str| crate::starkbank::time::parse(s).unwrap();
        assert_eq!(store.event_pull_cursor().unwrap(), None);
        store.advance_event_pull_cursor(t("2026-01-02T00:00:00+00:00"), chrono::Utc::now()).unwrap();
        store.advance_event_pull_cursor(t("2026-01-01T00:00:00+00:00"), chrono::Utc::now()).unwrap();
        assert_eq!(store.event_pull_cursor().unwrap(), Some(t("2026-01-02T00:00:00+00:00")));
        store.advance_event_pull_cursor(t("2026-01-03T00:00:00+00:00"), chrono::Utc::now()).unwrap();
        assert_eq!(store.event_pull_cursor().unwrap(), Some(t("2026-01-03T00:00:00+00:00")));
    }

    #[test]
    fn a_pinned_value_never_changes() {
        let (_d, mut store) = temp_store();
        assert_eq!(store.setting("k").unwrap(), None);
        assert_eq!(store.pin_setting("k", "a", "test", chrono::Utc::now()).unwrap().value, "a");
        assert_eq!(store.pin_setting("k", "b", "test", chrono::Utc::now()).unwrap().value, "a");
    }
}
