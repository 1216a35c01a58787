//! `stark-sweep serve-webhook`: the listener's configuration, key source and signal handling.
//!
//! Owns: turning `ServeArgs` into a `webhook::Config`, choosing the key source (Stark Bank's
//! `GET /v2/public-key` through the configured client, or a pinned file), binding the socket,
//! and SIGTERM/SIGINT -> graceful shutdown. The listener itself lives in `webhook`.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::{Ctx, Status};
use crate::cli::ServeArgs;
use crate::starkbank::verify::KeyCache;
use crate::starkbank::{Client, keys};
use crate::{config, error, webhook};

/// A failed verification refetches the key at most this often (forged requests cannot make us
/// hammer the API; a real rotation is picked up within this long).
const KEY_REFETCH: Duration = Duration::from_secs(60);
/// Bodies above this are refused whatever the flag says: the listener holds each body in memory.
const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;

pub fn run(ctx: &Ctx, args: &ServeArgs) -> anyhow::Result<Status> {
    if args.process {
        return Err(error::config(
            "--process / STARK_SWEEP_PROCESS: the transfer step is not wired into the listener in this build; to fix: unset it and run `stark-sweep process-events` every minute",
        ));
    }
    let listen = args.listen.as_deref().unwrap_or("127.0.0.1:8000");
    let body_limit = args.body_limit.unwrap_or(webhook::DEFAULT_BODY_LIMIT);
    if body_limit == 0 || body_limit > MAX_BODY_LIMIT {
        return Err(error::config(format!(
            "STARK_SWEEP_BODY_LIMIT / --body-limit: {body_limit} is not between 1 and {MAX_BODY_LIMIT} bytes"
        )));
    }
    let mut cfg = webhook::Config::new(ctx.db.clone());
    cfg.body_limit = body_limit;
    cfg.clock = ctx.clock;
    if let Some(n) = args.workers {
        if n == 0 || n > 256 {
            return Err(error::config(format!("STARK_SWEEP_WORKERS / --workers: {n} is not between 1 and 256")));
        }
        cfg.workers = n;
    }
    cfg.workspace_id = args.workspace_id.as_deref().map(str::trim).filter(|w| !w.is_empty()).map(str::to_string);

    let keys = key_source(ctx, args)?;
    let listener = TcpListener::bind(listen)
        .map_err(|e| error::config(format!("STARK_SWEEP_LISTEN / --listen: cannot listen on {listen}: {e}")))?;

    let shutdown = webhook::Shutdown::new();
    let on_signal = shutdown.clone();
    ctrlc::set_handler(move || on_signal.trigger()).context("installing the SIGTERM/SIGINT handler")?;
    webhook::serve(listener, cfg, Arc::new(keys), shutdown)?;
    Ok(Status::Success)
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
    let mut client_cfg = config::client_config(&ctx.global.api)?;
    // The key is fetched on a background thread and on a failed verification; keep each try
    // short so a slow API never holds a request for long.
    client_cfg.max_attempts = 2;
    client_cfg.timeout = client_cfg.timeout.min(Duration::from_secs(10));
    let client = Client::new(client_cfg).context("starting the HTTP client")?;
    Ok(KeyCache::new(move || client.public_key().map_err(anyhow::Error::from), KEY_REFETCH))
}
