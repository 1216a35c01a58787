//! `stark-sweep sandbox`: runs the local Stark Bank emulator until SIGINT or SIGTERM, after
//! printing what a client needs (project id, key path, API URL) and the seed.

use std::time::Duration;

use anyhow::Context as _;

use super::{Ctx, Status, print};
use crate::cli::SandboxArgs;
use crate::error;
use crate::sandbox::{Faults, Sandbox, SandboxConfig};
use crate::starkbank::{keys, time};

fn rate(v: Option<f64>, flag: &str) -> anyhow::Result<f64> {
    let v = v.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&v) {
        return Err(error::config(format!("{flag}: {v} is not a rate between 0 and 1")));
    }
    Ok(v)
}

fn instant(v: Option<&str>, flag: &str) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    v.map(|s| time::parse(s).ok_or_else(|| error::config(format!("{flag}: `{s}` is not an RFC 3339 time")))).transpose()
}

/// The configuration the flags describe (defaults from `SandboxConfig::default`).
pub fn config(args: &SandboxArgs) -> anyhow::Result<SandboxConfig> {
    let d = SandboxConfig::default();
    let listen = args.listen.as_deref().unwrap_or("127.0.0.1:9000");
    let listen = listen
        .parse()
        .map_err(|_| error::config(format!("--listen: `{listen}` is not an address like 127.0.0.1:9000")))?;
    if args.project_ids.len() != args.project_public_keys.len() {
        return Err(error::config(
            "--project and --project-public-key must be given in pairs (one key file per project id)",
        ));
    }
    let mut projects = Vec::new();
    for (id, path) in args.project_ids.iter().zip(&args.project_public_keys) {
        let text = std::fs::read_to_string(path)
            .map_err(|e| error::config(format!("--project-public-key {}: {e}", path.display())))?;
        let key = keys::parse_public_key(&text)
            .map_err(|e| error::config(format!("--project-public-key {}: {e}", path.display())))?;
        projects.push((id.clone(), key));
    }
    let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
    let faults = Faults {
        error_rate: rate(args.error_rate, "--error-rate")?,
        latency_ms: args.latency_ms.unwrap_or(0),
        commit_then_500_invoice: rate(args.commit_then_500_invoice, "--commit-then-500-invoice")?,
        commit_then_500_transfer: rate(args.commit_then_500_transfer, "--commit-then-500-transfer")?,
        duplicate_delivery_rate: rate(args.duplicate_delivery_rate, "--duplicate-delivery-rate")?,
        drop_delivery_rate: rate(args.drop_delivery_rate, "--drop-delivery-rate")?,
        out_of_order: args.out_of_order,
        insufficient_balance_until: instant(
            args.insufficient_balance_until.as_deref(),
            "--insufficient-balance-until",
        )?,
        ..Faults::default()
    };
    let delivery_timeout = match args.delivery_timeout {
        Some(s) if s.is_finite() && s > 0.0 && s <= 600.0 => Duration::from_secs_f64(s),
        Some(s) => return Err(error::config(format!("--delivery-timeout: {s} is not between 0 and 600 seconds"))),
        None => d.delivery_timeout,
    };
    Ok(SandboxConfig {
        listen,
        time_scale: args.time_scale.unwrap_or(d.time_scale),
        manual_clock: args.manual_clock,
        start: instant(args.start.as_deref(), "--start")?,
        pay_rate: args.pay_rate.unwrap_or(d.pay_rate),
        pay_delay_min: secs(args.pay_delay_min, d.pay_delay_min),
        pay_delay_max: secs(args.pay_delay_max, d.pay_delay_max),
        credit_delay: secs(args.credit_delay, d.credit_delay),
        invoice_fee: args.invoice_fee.unwrap_or(d.invoice_fee),
        transfer_fee: args.transfer_fee.unwrap_or(d.transfer_fee),
        transfer_step: secs(args.transfer_step, d.transfer_step),
        max_clock_skew: secs(args.max_clock_skew, d.max_clock_skew),
        duplicate_external_id: args.duplicate_external_id.unwrap_or(d.duplicate_external_id),
        initial_balance: args.initial_balance.unwrap_or(d.initial_balance),
        key_dir: if projects.is_empty() { Some(args.key_dir.clone().unwrap_or_else(|| ".".into())) } else { None },
        projects,
        seed: args.seed.unwrap_or(d.seed),
        faults,
        delivery_timeout,
        workers: d.workers,
    })
}

pub fn run(_ctx: &Ctx, args: &SandboxArgs) -> anyhow::Result<Status> {
    let cfg = config(args)?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the SIGINT/SIGTERM handler")?;
    let sandbox = Sandbox::start(cfg.clone()).map_err(|e| error::config(format!("{e:#}")))?;
    let clock = if cfg.manual_clock {
        "manual clock: move it with POST /_sandbox/clock".to_string()
    } else {
        format!("time scale {}", cfg.time_scale)
    };
    let mut out = format!(
        "stark-sweep sandbox listening on {} (seed {}, {clock}, simulated now {})\n\
         for loopback use only: the /_sandbox/* routes (state, faults, clock, payments) are not authenticated\n",
        sandbox.url(),
        cfg.seed,
        time::format(sandbox.now())
    );
    out.push_str(&format!("STARKBANK_PROJECT_ID={}\n", sandbox.project_id()));
    if let Some(path) = sandbox.private_key_path() {
        let path = std::path::absolute(&path).unwrap_or(path);
        out.push_str(&format!("STARKBANK_PRIVATE_KEY_PATH={}\n", path.display()));
    }
    out.push_str(&format!("STARKBANK_API_URL={}\n", sandbox.url()));
    print(&out)?;
    // Wait for SIGINT/SIGTERM; a closed channel (handler gone) also ends the run.
    let _ = rx.recv();
    log::info!("sandbox: stopping");
    sandbox.shutdown();
    Ok(Status::Success)
}
