//! `stark-sweep webhook register | list | delete`: the operator's view of Stark Bank webhook
//! subscriptions. (The module is named for what it manages; the inbound listener that receives
//! the deliveries is `listener`.)
//!
//! Owns: the URL rule (HTTPS, or plain HTTP to a loopback host for a local emulator), making
//! `register` safe to re-run (an existing webhook with the same URL is reported, not duplicated),
//! and the `--yes` confirmation of `delete`.
//! Does not own: the API calls themselves (see `starkbank::resources`).
//!
//! Exit codes: 0 done (also "already registered" and "already gone"); 2 `delete` without `--yes` or a malformed
//! webhook id; 3 a webhook with the URL exists but lacks a subscription we need (nothing is
//! created; the message says how to fix it); 78 a URL Stark Bank would not deliver to, or bad
//! credentials; 75 Stark Bank unreachable.

use reqwest::Url;
use serde_json::json;

use super::config;
use super::{Ctx, Status, print, print_json};
use crate::cli::WebhookCommand;
use crate::error::{self, Classified, ExitKind};
use crate::starkbank::resources::Webhook;

/// The subscriptions stark-sweep needs: invoice credits to sweep, transfer outcomes to track.
pub const SUBSCRIPTIONS: [&str; 2] = ["invoice", "transfer"];

pub fn run(ctx: &Ctx, command: &WebhookCommand) -> anyhow::Result<Status> {
    match command {
        WebhookCommand::Register { url, .. } => register(ctx, url),
        WebhookCommand::List { json, .. } => list(ctx, *json),
        WebhookCommand::Delete { id, yes, .. } => delete(ctx, id, *yes),
    }
}

fn usage(message: impl Into<String>) -> anyhow::Error {
    Classified { kind: ExitKind::Usage, message: message.into() }.into()
}

/// Checks that Stark Bank could deliver to `url`, and returns it in normalized form.
///
/// Stark Bank only delivers to HTTPS endpoints. Plain HTTP is accepted for loopback hosts,
/// where the only sender can be a local emulator.
pub fn check_url(url: &str) -> Result<String, String> {
    let parsed = Url::parse(url.trim()).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("`{url}` has no host"))?;
    // `host_str` is lowercase, and IPv6 literals keep their brackets.
    let loopback = match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    };
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "`{url}` is plain http: Stark Bank delivers webhooks only to https:// URLs with a valid certificate (http is accepted only for a loopback host, for a local emulator); to fix: put the listener behind an HTTPS reverse proxy and register its https:// URL"
            ));
        }
        other => return Err(format!("`{url}` has scheme `{other}`; webhook URLs are https://")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("`{url}` carries credentials; Stark Bank authenticates itself by signature, not by URL"));
    }
    Ok(parsed.to_string())
}

/// Whether two webhook URLs name the same endpoint (compared after URL normalization).
fn same_url(a: &str, b: &str) -> bool {
    match (Url::parse(a.trim()), Url::parse(b.trim())) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.trim() == b.trim(),
    }
}

/// Stark Bank ids are numeric strings; anything else would change the request path.
fn check_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(usage(format!("`{id}` is not a webhook id; see `stark-sweep webhook list`")));
    }
    Ok(())
}

fn describe(w: &Webhook) -> String {
    format!("{}  {}  [{}]", w.id, w.url, w.subscriptions.join(", "))
}

fn register(ctx: &Ctx, url: &str) -> anyhow::Result<Status> {
    let url = check_url(url).map_err(|why| error::config(format!("--url / STARK_SWEEP_WEBHOOK_URL: {why}")))?;
    let client = config::client(&ctx.api)?;
    let existing = client.list_webhooks()?;
    if let Some(found) = existing.iter().find(|w| same_url(&w.url, &url)) {
        let missing: Vec<&str> =
            SUBSCRIPTIONS.iter().copied().filter(|s| !found.subscriptions.iter().any(|have| have == s)).collect();
        if missing.is_empty() {
            print(&format!("already registered: webhook {}; nothing to do\n", describe(found)))?;
            return Ok(Status::Success);
        }
        print(&format!(
            "webhook {} exists for this URL but is not subscribed to {}; not creating a second one\nto fix: stark-sweep webhook delete {} --yes, then register again\n",
            describe(found),
            missing.join(", "),
            found.id
        ))?;
        return Ok(Status::Attention);
    }
    let created = client.create_webhook(&url, &SUBSCRIPTIONS)?;
    print(&format!("registered webhook {}\n", describe(&created)))?;
    Ok(Status::Success)
}

fn list(ctx: &Ctx, as_json: bool) -> anyhow::Result<Status> {
    let client = config::client(&ctx.api)?;
    let webhooks = client.list_webhooks()?;
    if as_json {
        print_json(&json!({ "webhooks": webhooks }))?;
    } else if webhooks.is_empty() {
        print("no webhooks; to add one: stark-sweep webhook register --url https://.../webhook\n")?;
    } else {
        let text: String = webhooks.iter().map(|w| format!("{}\n", describe(w))).collect();
        print(&text)?;
    }
    Ok(Status::Success)
}

fn delete(ctx: &Ctx, id: &str, yes: bool) -> anyhow::Result<Status> {
    check_id(id)?;
    if !yes {
        return Err(usage(format!(
            "not deleting webhook {id} without confirmation; to delete it: stark-sweep webhook delete {id} --yes"
        )));
    }
    let client = config::client(&ctx.api)?;
    match client.delete_webhook(id) {
        Ok(deleted) => print(&format!("deleted webhook {}\n", describe(&deleted)))?,
        // Deleting twice (or after an answer was lost) is done, not a failure.
        Err(e) if e.codes().contains(&"invalidWebhookId") => {
            print(&format!("webhook {id} is already gone; nothing to do\n"))?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Status::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_are_accepted() {
        assert_eq!(check_url("https://sweep.example.com/webhook").unwrap(), "https://sweep.example.com/webhook");
        assert_eq!(check_url(" https://Sweep.Example.com:8443/hook ").unwrap(), "https://sweep.example.com:8443/hook");
    }

    #[test]
    fn plain_http_only_for_loopback() {
        for ok in
            ["http://127.0.0.1:8000/webhook", "http://localhost:8000/", "http://[::1]:8000/x", "http://127.1.2.3/"]
        {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        let err = check_url("http://sweep.example.com/webhook").unwrap_err();
        assert!(err.contains("https"), "{err}");
        // A name that merely starts like a loopback address is not one.
        assert!(check_url("http://127.0.0.1.example.com/").is_err());
        assert!(check_url("http://10.0.0.1/").is_err());
    }

    #[test]
    fn other_schemes_and_junk_are_refused() {
        assert!(check_url("ftp://example.com/").is_err());
        assert!(check_url("sweep.example.com/webhook").is_err());
        assert!(check_url("").is_err());
        assert!(check_url("https://user:pw@example.com/").is_err());
    }

    #[test]
    fn same_url_ignores_case_of_host_and_default_port() {
        assert!(same_url("https://A.example.com/hook", "https://a.example.com:443/hook"));
        assert!(!same_url("https://a.example.com/hook", "https://a.example.com/hook2"));
    }

    #[test]
    fn ids_cannot_change_the_request_path() {
        assert!(check_id("5656565656565656").is_ok());
        for bad in ["", "../invoice", "1/2", "1?x=2", "a b"] {
            assert_eq!(error::classify(&check_id(bad).unwrap_err()), ExitKind::Usage, "{bad}");
        }
    }
}
