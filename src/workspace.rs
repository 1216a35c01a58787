//! Which Stark Bank workspace this deployment belongs to.
//!
//! Stark Bank signs the webhook events of every workspace with the same key, so a valid
//! signature proves an event is genuine for *some* workspace. Our own is learned the first time
//! it can be proven with our own credentials (the API shows a project only its own workspace:
//! an event listed by `GET /v2/event`, or one `GET /v2/event/{id}` finds), then pinned in the
//! store for good. `STARKBANK_WORKSPACE_ID`, when set, must agree; any contradiction (the
//! configuration, or the API now answering for another workspace) is a configuration error.
//!
//! Owns: the pin and its checks. Does not own: what is done with a foreign event (the listener
//! refuses it; nothing else ever stores one).

use chrono::{DateTime, Utc};

use crate::error;
use crate::starkbank::Client;
use crate::store::Store;

/// The settings key of the pinned workspace id.
pub const KEY: &str = "workspace_id";
/// How a workspace learned from the event list is recorded.
pub const FROM_EVENT_LIST: &str = "GET /v2/event (this project's credentials)";
/// How a workspace learned from one event looked up by id is recorded.
pub const FROM_EVENT_LOOKUP: &str = "GET /v2/event/{id} (this project's credentials)";

/// The pinned workspace, if any.
pub fn pinned(store: &Store) -> anyhow::Result<Option<String>> {
    Ok(store.setting(KEY)?.map(|s| s.value))
}

fn mismatch_with_configured(configured: &str, proven: &str) -> anyhow::Error {
    error::config(format!(
        "STARKBANK_WORKSPACE_ID={configured}, but this project's workspace, proven with its own credentials, is {proven}; to fix: set STARKBANK_WORKSPACE_ID={proven} or unset it"
    ))
}

/// Fails (configuration error) when `STARKBANK_WORKSPACE_ID` contradicts the pinned workspace.
pub fn check_configured(store: &Store, configured: Option<&str>) -> anyhow::Result<Option<String>> {
    let pinned = pinned(store)?;
    if let (Some(c), Some(p)) = (configured, pinned.as_deref())
        && c != p
    {
        return Err(mismatch_with_configured(c, p));
    }
    Ok(pinned)
}

/// Pins `proven` (learned through `source`), or checks it against what is pinned: a database
/// belongs to one workspace for good.
pub fn pin(
    store: &mut Store,
    proven: &str,
    source: &str,
    configured: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    if let Some(c) = configured
        && c != proven
    {
        return Err(mismatch_with_configured(c, proven));
    }
    let pinned = store.pin_setting(KEY, proven, source, now)?;
    if pinned.value != proven {
        return Err(error::config(format!(
            "Stark Bank answers this project's requests for workspace {proven}, but the database {} belongs to workspace {} (pinned {} from {}); to fix: point STARK_SWEEP_DB at that workspace's database, or at a new file",
            store.location().display(),
            pinned.value,
            pinned.set_at,
            pinned.source
        )));
    }
    if pinned.set_at == crate::store::ts(now) {
        log::info!("pinned this deployment's Stark Bank workspace: {proven} (proven by {source})");
    }
    Ok(pinned.value)
}

/// The pinned workspace; if none yet, learns it from the newest event the API lists for our
/// credentials (none exists before the first invoice is issued: then `None`).
pub fn learn(
    client: &Client,
    store: &mut Store,
    configured: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<String>> {
    if let Some(p) = check_configured(store, configured)? {
        return Ok(Some(p));
    }
    verify(client, store, configured, now)
}

/// Asks the API which workspace our credentials act on now (the newest event it lists) and
/// checks it against the pin, pinning it if nothing is pinned: credentials moved to another
/// workspace stop the run here (configuration error) instead of acting on a database of the
/// wrong workspace. `None` when the API lists no event yet and nothing is pinned.
pub fn verify(
    client: &Client,
    store: &mut Store,
    configured: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<String>> {
    let pinned = check_configured(store, configured)?;
    match client.newest_event()?.and_then(|e| e.workspace_id) {
        Some(ws) => pin(store, &ws, FROM_EVENT_LIST, configured, now).map(Some),
        None => Ok(pinned),
    }
}

/// Before money moves: the credentials must be proven to act on the pinned workspace now (the
/// pin alone says which workspace the database belongs to, not which one the key signs for).
/// Credentials that list no event at all while a workspace is pinned prove nothing: refused.
pub fn verify_before_sending(
    client: &Client,
    store: &mut Store,
    configured: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let pinned = check_configured(store, configured)?;
    match (client.newest_event()?.and_then(|e| e.workspace_id), pinned) {
        (Some(ws), _) => pin(store, &ws, FROM_EVENT_LIST, configured, now).map(|_| ()),
        (None, None) => Ok(()),
        (None, Some(p)) => Err(error::config(format!(
            "this project's credentials list no event, but the database {} belongs to workspace {p}: they may act on another workspace; nothing is sent; to fix: use the credentials of workspace {p}'s project",
            store.location().display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ExitKind, classify};
    use crate::store::testing::temp_store;

    #[test]
    fn a_database_belongs_to_one_workspace_for_good() {
        let (_d, mut store) = temp_store();
        let now = Utc::now();
        assert_eq!(pin(&mut store, "w1", "test", None, now).unwrap(), "w1");
        assert_eq!(pin(&mut store, "w1", "test", Some("w1"), now).unwrap(), "w1");
        let other = pin(&mut store, "w2", "test", None, now).unwrap_err();
        assert_eq!(classify(&other), ExitKind::Config);
        assert!(other.to_string().contains("belongs to workspace w1"), "{other}");
        let configured = check_configured(&store, Some("w9")).unwrap_err();
        assert_eq!(classify(&configured), ExitKind::Config);
        assert!(configured.to_string().starts_with("STARKBANK_WORKSPACE_ID=w9"), "{configured}");
        assert_eq!(pinned(&store).unwrap().as_deref(), Some("w1"));
    }

    #[test]
    fn a_configured_workspace_that_the_api_contradicts_is_never_pinned() {
        let (_d, mut store) = temp_store();
        assert!(pin(&mut store, "w2", "test", Some("w1"), Utc::now()).is_err());
        assert_eq!(pinned(&store).unwrap(), None);
    }
}
