//! `stark-sweep serve-webhook`: the listener's configuration, key source and signal handling.
//!
//! Owns: turning `ServeArgs` into a `listener::Config`, choosing the key source (Stark Bank's
//! `GET /v2/public-key` through the configured client, or a pinned file), binding the socket,
//! and SIGTERM/SIGINT -> graceful shutdown. The listener itself lives in `listener`.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::config;
use super::{Ctx, Status};
use crate::cli::ServeArgs;
use crate::starkbank::verify::KeyCache;
use crate::starkbank::{ApiError, Client, keys};
use crate::store::Store;
use crate::{error, listener, sweep};

/// A failed verification refetches the key at most this often (forged requests cannot make us
/// hammer the API; a real rotation is picked up within this long).
const KEY_REFETCH: Duration = Duration::from_secs(60);
/// Bodies above this are refused whatever the flag says: the listener holds each body in memory.
const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;

pub fn run(ctx: &Ctx, args: &ServeArgs) -> anyhow::Result<Status> {
    config::refuse_drill_clock_in_production(&ctx.clock, &ctx.api)?;
    let (listen, body_limit) = (args.listen.as_str(), args.body_limit);
    if body_limit == 0 || body_limit > MAX_BODY_LIMIT {
        return Err(error::config(format!(
            "STARK_SWEEP_BODY_LIMIT / --body-limit: {body_limit} is not between 1 and {MAX_BODY_LIMIT} bytes"
        )));
    }
    let mut cfg = listener::Config::new(ctx.db.clone());
    cfg.body_limit = body_limit;
    cfg.clock = ctx.clock;
    if let Some(n) = args.workers {
        if n == 0 || n > 256 {
            return Err(error::config(format!("STARK_SWEEP_WORKERS / --workers: {n} is not between 1 and 256")));
        }
        cfg.workers = n;
    }
    cfg.workspace_id = args.sweep.workspace.configured();
    cfg.lookup_event = lookup_event(ctx)?;

    if args.process {
        cfg.on_credit = Some(transfer_hook(ctx, args)?);
    }
    let keys = key_source(ctx, args)?;
    let socket = TcpListener::bind(listen)
        .map_err(|e| error::config(format!("STARK_SWEEP_LISTEN / --listen: cannot listen on {listen}: {e}")))?;

    let shutdown = listener::Shutdown::new();
    let on_signal = shutdown.clone();
    ctrlc::set_handler(move || on_signal.trigger()).context("installing the SIGTERM/SIGINT handler")?;
    listener::serve(socket, cfg, Arc::new(keys), shutdown)?;
    Ok(Status::Success)
}

/// `--process`: after a credit is stored, the transfer step runs at once in the background
/// (coalesced by the listener; under the same lock as `process-events`, so the two never send
/// at the same time). It skips reconciliation: the `process-events` timer still does that.
fn transfer_hook(ctx: &Ctx, args: &ServeArgs) -> anyhow::Result<listener::OnCreditStored> {
    let opts = sweep::Options::new(&config::sweep_settings(&args.sweep), false, config::is_production(&ctx.api))?;
    let client = config::client(&ctx.api)?;
    let (db, clock) = (ctx.db.clone(), ctx.clock);
    Ok(Arc::new(move || {
        let result = Store::open(&db).and_then(|mut store| sweep::run_waiting(&client, &mut store, &opts, clock.now()));
        match result {
            Ok(r) if r.transfers_sent > 0 => {
                log::info!("--process: sent {} transfer(s), {} cents", r.transfers_sent, r.sent_total)
            }
            Ok(_) => {}
            Err(e) => log::warn!("--process: the transfer step failed (the process-events timer retries): {e:#}"),
        }
    }))
}

/// `GET /v2/event/{id}` with the project's credentials, to prove an event's workspace while
/// none is pinned; `None` when no project is configured (a pinned key file can run without).
fn lookup_event(ctx: &Ctx) -> anyhow::Result<Option<listener::LookupEvent>> {
    if ctx.api.project_id.as_deref().is_none_or(|p| p.trim().is_empty()) {
        return Ok(None);
    }
    let mut client_cfg = config::client_config(&ctx.api)?;
    // Looked up while a delivery waits: keep each try short; Stark Bank retries a 503.
    client_cfg.max_attempts = 2;
    client_cfg.timeout = client_cfg.timeout.min(Duration::from_secs(10));
    let client = Client::new(client_cfg).context("starting the HTTP client")?;
    Ok(Some(Arc::new(move |id: &str| match client.get_event(id) {
        Ok(event) => Ok(listener::Lookup::Ours { workspace: event.workspace_id }),
        Err(e @ ApiError::Rejected { status, .. }) if status == 404 || e.codes().contains(&"invalidEvent") => {
            Ok(listener::Lookup::NotOurs)
        }
        Err(e) => Err(e.to_string()),
    })))
}

fn key_source(ctx: &Ctx, args: &ServeArgs) -> anyhow::Result<KeyCache> {
    if let Some(path) = &args.public_key_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            error::config(format!("STARK_SWEEP_PUBLIC_KEY_FILE={}: cannot read it: {e}", path.display()))
        })?;
        let key = keys::parse_public_key(&text)
            .map_err(|e| error::config(format!("STARK_SWEEP_PUBLIC_KEY_FILE={}: {e}", path.display())))?;
        log::info!(
            "verifying with the pinned public key {} from {} (key rotation disabled)",
            keys::fingerprint(&key),
            path.display()
        );
        return Ok(KeyCache::fixed(key));
    }
    let mut client_cfg = config::client_config(&ctx.api)?;
    // The key is fetched on a background thread and on a failed verification; keep each try
    // short so a slow API never holds a request for long.
    client_cfg.max_attempts = 2;
    client_cfg.timeout = client_cfg.timeout.min(Duration::from_secs(10));
    let client = Client::new(client_cfg).context("starting the HTTP client")?;
    Ok(KeyCache::new(move || client.public_key().map_err(anyhow::Error::from), KEY_REFETCH))
}
