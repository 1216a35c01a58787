//! Benchmark of `stark-sweep process-events` on a large backlog (not a test: nothing here
//! asserts a time). The requirement it reports on: 10,000 pending credits are processed in at
//! most 100 transfer requests.
//!
//! Setup (untimed): the emulator in-process (an hour a second, no automatic payer); `--invoices`
//! invoices tagged `stark-sweep` created 100 per request, each paid at once and credited. Then
//! ONE timed run of the release binary `process-events --json` with a fresh database, from
//! spawn to exit under GNU time (wall, peak RSS). Reported: requests by kind (the emulator's
//! request log), transfers, the exactly-once check, and where the time went.
//!
//! 1. Main run, through a recording proxy (`common::proxy`) that forwards each request on a
//!    fresh connection to the emulator and answers stark-sweep in one TCP_NODELAY write. The
//!    proxy's spans split the wall time per request kind into round trips and stark-sweep's own
//!    time between them.
//! 2. `--direct-invoices N` (default 300; 0 skips): the same, straight to the emulator over
//!    stark-sweep's keep-alive connections, without the proxy's extra hop.
//! 3. `--python PY --python-script bench/python/process_events.py`: the official SDK doing the
//!    same sweep on a fresh world of `--python-invoices` credits (straight to the emulator).
//!
//! `--postgres ADMIN_URL`: every stark-sweep run gets a new database of its own on that server
//! (created through ADMIN_URL) instead of a SQLite file: the same sweep on the Postgres backend.
//!
//! Run: `cargo build --release && cargo run --release --example process_events -- [--invoices 10000]
//!       [--direct-invoices 300] [--postgres postgres://postgres@127.0.0.1:PORT/postgres] [--python bench/.venv/bin/python --python-script
//!       bench/python/process_events.py --python-invoices 1000] [--json out.json]
//!       [--bin target/release/stark-sweep]`

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use common::{Flags, Measured, World, exactly_once, requests_by_kind, run_timed, self_cpu_s};
use serde_json::{Value, json};

/// One world of `n` credits swept by one run of stark-sweep, through the proxy or not, on a
/// SQLite file or a new database on the Postgres server at `postgres`.
fn rust_run(
    bin: &std::path::Path,
    n: usize,
    scale: f64,
    through_proxy: bool,
    postgres: Option<&str>,
) -> anyhow::Result<Value> {
    let w = World::start(scale)?;
    eprintln!("creating, paying and crediting {n} invoices ...");
    let setup_s = w.credited_invoices(n)?;
    let db = match postgres {
        Some(admin) => PathBuf::from(new_postgres_database(admin)?),
        None => w.dir.path().join("stark-sweep.db"),
    };
    let mut env = w.env(&db)?;
    let proxy = if through_proxy {
        let upstream = w.sandbox.url().trim_start_matches("http://").to_string();
        let proxy = common::proxy::Proxy::start(&upstream, true)?;
        for (k, v) in &mut env {
            if *k == "STARKBANK_API_URL" {
                *v = proxy.url.clone();
            }
        }
        Some(proxy)
    } else {
        None
    };
    let before = w.sandbox.snapshot().requests.len();
    eprintln!("timing process-events ({}) ...", if through_proxy { "through the proxy" } else { "direct" });
    let cpu0 = self_cpu_s();
    // The harness made these invoices, not issue-invoices: they are swept as the workspace's.
    let m = run_timed(w.dir.path(), bin, &["process-events", "--json", "--all-credits"], &env)?;
    let harness_cpu_s = self_cpu_s() - cpu0;
    let report = sweep_report(&m)?;
    let snap = w.sandbox.snapshot();
    let kinds = requests_by_kind(&snap, before);
    let (credits, once, transfers, failed) = exactly_once(&snap);
    let sends = send_times(&m);
    let label = if through_proxy { "through the proxy" } else { "direct to the emulator (keep-alive)" };
    let backend = if postgres.is_some() { "Postgres" } else { "SQLite" };
    println!("process-events on {n} credits, {label} (setup {setup_s:.1} s), release binary, fresh {backend} database");
    println!(
        "  wall {:.2} s   user {:.2} s   sys {:.2} s   peak RSS {:.1} MiB   exit {}",
        m.wall_s,
        m.user_s,
        m.sys_s,
        m.max_rss_kib as f64 / 1024.0,
        m.exit_code
    );
    println!(
        "  emulator{} CPU during the run (this process): {harness_cpu_s:.2} s",
        if through_proxy { " + proxy" } else { "" }
    );
    if let Some((first, last)) = sends {
        println!("  first transfer POST answered at {first:.2} s, last at {last:.2} s (from stark-sweep's log)");
    }
    println!("  requests by kind: {}", kinds_line(&kinds));
    println!(
        "  transfers: {} sent in {} requests (report); {transfers} at the emulator, {failed} failed",
        report["transfersSent"], report["transferRequests"]
    );
    println!("  events pulled {}, marked delivered {}", report["eventsPulled"], report["markedDelivered"]);
    println!("  exactly once: {once} of {credits} credits have exactly one transfer of amount - fee");
    let mut out = json!({
        "invoices": n,
        "backend": backend,
        "through_proxy": through_proxy,
        "measured": m,
        "setup_s": setup_s,
        "harness_cpu_s": harness_cpu_s,
        "first_transfer_s": sends.map(|s| s.0),
        "last_transfer_s": sends.map(|s| s.1),
        "requests": kinds,
        "report": report,
        "credits": credits,
        "exactly_once": once,
        "transfers_at_emulator": transfers,
        "failed_transfers": failed,
    });
    if let Some(proxy) = proxy {
        let b = breakdown(&m, &proxy.spans())?;
        println!(
            "  {:<22} {:>8} {:>13} {:>8} {:>8} {:>14} {:>14} {:>16}",
            "kind", "requests", "round trips", "p50 ms", "p99 ms", "own, between", "own, after", "span"
        );
        if let Some(rows) = b["kinds"].as_object() {
            for (kind, r) in rows {
                let f = |k: &str| r[k].as_f64().unwrap_or_default();
                println!(
                    "  {:<22} {:>8} {:>11.2} s {:>8.2} {:>8.2} {:>12.2} s {:>12.2} s {:>6.2}-{:.2} s",
                    kind,
                    r["count"],
                    f("rtt_s"),
                    f("p50_ms"),
                    f("p99_ms"),
                    f("steady_after_s"),
                    f("then_after_s"),
                    f("first_start_s"),
                    f("last_end_s")
                );
            }
        }
        println!("  before the first request: {:.2} s", b["before_first_s"].as_f64().unwrap_or_default());
        out["breakdown"] = b;
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse(&[])?;
    let bin = flags.get("bin").map(PathBuf::from).unwrap_or_else(common::default_bin);
    let n: usize = flags.num("invoices", 10_000)?;
    let direct_n: usize = flags.num("direct-invoices", 300)?;
    let scale: f64 = flags.num("time-scale", 3600.0)?;
    let mut results = json!({"invoices": n});

    let postgres = flags.get("postgres");
    results["rust"] = rust_run(&bin, n, scale, true, postgres)?;
    if direct_n > 0 {
        results["direct"] = rust_run(&bin, direct_n, scale, false, postgres)?;
    }

    // The official SDK, same job.
    if let (Some(py), Some(script)) = (flags.get("python"), flags.get("python-script")) {
        let pn: usize = flags.num("python-invoices", 1_000)?;
        let w = World::start(scale)?;
        eprintln!("python: a fresh world of {pn} credits, swept with the official SDK ...");
        w.credited_invoices(pn)?;
        let before = w.sandbox.snapshot().requests.len();
        let script = std::fs::canonicalize(script).with_context(|| script.to_string())?;
        let db = w.dir.path().join("unused.db");
        let m = run_timed(w.dir.path(), std::path::Path::new(py), &[&script.display().to_string()], &w.env(&db)?)?;
        if m.exit_code != 0 {
            bail!("{} exited {}:\n{}", script.display(), m.exit_code, tail(&m.stderr, 40));
        }
        let own: Value = serde_json::from_str(m.stdout.lines().last().unwrap_or_default())
            .with_context(|| format!("the script's last line is not JSON: {}", tail(&m.stdout, 5)))?;
        let snap = w.sandbox.snapshot();
        let kinds = requests_by_kind(&snap, before);
        let (credits, once, transfers, failed) = exactly_once(&snap);
        println!("python SDK sweep on {pn} credits");
        println!(
            "  wall {:.2} s   user {:.2} s   sys {:.2} s   peak RSS {:.1} MiB",
            m.wall_s,
            m.user_s,
            m.sys_s,
            m.max_rss_kib as f64 / 1024.0
        );
        println!("  requests by kind: {}", kinds_line(&kinds));
        println!("  script's own split: {own}");
        println!("  exactly once: {once} of {credits} credits; {transfers} transfers, {failed} failed");
        results["python"] = json!({
            "invoices": pn,
            "measured": m,
            "requests": kinds,
            "own": own,
            "credits": credits,
            "exactly_once": once,
            "transfers_at_emulator": transfers,
            "failed_transfers": failed,
        });
    }
    common::write_json(&flags, &results)
}

/// The run's `--json` report; the run must have exited 0.
fn sweep_report(m: &Measured) -> anyhow::Result<Value> {
    if m.exit_code != 0 {
        bail!("process-events exited {}:\n{}", m.exit_code, tail(&m.stderr, 40));
    }
    serde_json::from_str(&m.stdout).with_context(|| format!("process-events printed no JSON: {}", tail(&m.stdout, 5)))
}

/// A new, empty database on the server at `admin`; returns its URL.
fn new_postgres_database(admin: &str) -> anyhow::Result<String> {
    let name = format!("bench_{}_{:08x}", std::process::id(), rand::random::<u32>());
    let mut client = postgres::Client::connect(admin, postgres::NoTls).context("connecting to --postgres")?;
    client.batch_execute(&format!("CREATE DATABASE {name}"))?;
    let root = admin.rsplit_once('/').map_or(admin, |(r, _)| r);
    Ok(format!("{root}/{name}"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn kinds_line(kinds: &BTreeMap<String, usize>) -> String {
    kinds.iter().map(|(k, v)| format!("{k} x{v}")).collect::<Vec<_>>().join(", ")
}

/// Seconds from the child's start to its first and last "sent transfer" log line.
fn send_times(m: &Measured) -> Option<(f64, f64)> {
    let started = m.started?;
    let at: Vec<f64> = m
        .stderr
        .lines()
        .filter(|l| l.contains("sent transfer"))
        .filter_map(|l| chrono::DateTime::parse_from_rfc3339(l.split_whitespace().next()?).ok())
        .map(|t| (t.with_timezone(&chrono::Utc) - started).num_microseconds().unwrap_or(0) as f64 / 1e6)
        .collect();
    Some((*at.first()?, *at.last()?))
}

/// Per request kind: count, summed round trips, percentiles, and the time stark-sweep spent
/// after each request before its next one: `steady` when the next request is of the same kind
/// (per-request work, e.g. SQLite), `then` when it is another kind or the exit (a step between).
fn breakdown(m: &Measured, spans: &[common::proxy::Span]) -> anyhow::Result<Value> {
    #[derive(Default)]
    struct Kind {
        rtts: Vec<f64>,
        steady: f64,
        then: f64,
        first_start: f64,
        last_end: f64,
    }
    let (Some(t0), Some(t1)) = (m.t0, m.t1) else { bail!("no start and end instants") };
    let mut spans = spans.to_vec();
    spans.sort_by_key(|s| s.start);
    let Some(first) = spans.first() else { bail!("the proxy saw no requests") };
    let before_first = first.start.saturating_duration_since(t0).as_secs_f64();
    let secs = |t: std::time::Instant| t.saturating_duration_since(t0).as_secs_f64();
    let mut per: BTreeMap<String, Kind> = BTreeMap::new();
    for (i, s) in spans.iter().enumerate() {
        let next = spans.get(i + 1);
        let after = next.map(|n| n.start).unwrap_or(t1).saturating_duration_since(s.end).as_secs_f64();
        let e = per.entry(s.kind.clone()).or_insert_with(|| Kind { first_start: secs(s.start), ..Kind::default() });
        e.rtts.push((s.end - s.start).as_secs_f64());
        if next.is_some_and(|n| n.kind == s.kind) {
            e.steady += after;
        } else {
            e.then += after;
        }
        e.last_end = secs(s.end);
    }
    let mut kinds = serde_json::Map::new();
    for (kind, mut k) in per {
        k.rtts.sort_by(f64::total_cmp);
        let pct = |p: f64| k.rtts[((k.rtts.len() as f64 - 1.0) * p).round() as usize] * 1e3;
        kinds.insert(
            kind,
            json!({
                "count": k.rtts.len(),
                "rtt_s": k.rtts.iter().sum::<f64>(),
                "p50_ms": pct(0.5),
                "p99_ms": pct(0.99),
                "steady_after_s": k.steady,
                "then_after_s": k.then,
                "first_start_s": k.first_start,
                "last_end_s": k.last_end,
            }),
        );
    }
    Ok(json!({"wall_s": m.wall_s, "before_first_s": before_first, "kinds": kinds}))
}
