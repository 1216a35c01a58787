//! Benchmark of the routine runs on a long history (not a test: nothing here asserts a time).
//! The requirement it reports on: every routine run costs what its open work costs, not what
//! history costs.
//!
//! For each `--credits` size (default 1,000, 100,000 and 1,000,000) it builds, with direct SQL
//! inserts (untimed, `build`), a database of that many credits, each settled with its send, its
//! successful transfer and two applied events (the invoice's `credited`, the transfer's
//! `success`, bodies of ~1 KiB as Stark Bank sends them, ids spread over the key space); 1 in
//! 1,000 is skipped instead (amount = fee: nothing to transfer, one event). The first 10 are
//! this deployment's campaign (slot 1 issued 4 hours ago); the rest were swept with
//! `--all-credits` over the 180 days before. The workspace is pinned. Then, each against a fresh
//! emulator (in-process, real time), it times the release binary from spawn to exit under GNU
//! time (wall and peak RSS, the median of `--runs`):
//! - `process-events --all-credits --json` with nothing to do (the per-minute timer);
//! - `status` and `status --json` (crontab.example runs it every 15 minutes);
//! - `issue-invoices --json`, one slot each run (slots 2, 3, ... of the running campaign);
//!
//! and, on the largest history, the listener's intake rate (`webhook_load --db`, ids spread over
//! the key space) next to a fresh database, with the same load.
//!
//! `--before BIN` (an older release): the file is created with BIN's schema and BIN is timed
//! first, each command cut at `--timeout` seconds (a run cut there is not repeated); then the
//! first run of `--bin` (`status --json`, which migrates the file in place) is timed on its own;
//! then `--bin` as above.
//!
//! `--markdown FILE` writes the report section; `--report bench/REPORT.md` puts it in place
//! of the one between the `<!-- history -->` markers there (appended when there is none).
//! `--from-json FILE` renders the section of an earlier run (its `--json`) again.
//!
//! Run: `cargo build --release && cargo run --release --example history -- [--credits 1000,100000,1000000]
//!       [--runs 3] [--before OLD_BIN] [--timeout 60] [--webhook-seconds 5] [--intake-rounds 2] [--keep DIR]
//!       [--json out.json] [--markdown out.md] [--report bench/REPORT.md] [--bin target/release/stark-sweep]`

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Duration, Utc};
use common::{Flags, Measured, World, median, run_timed};
use rusqlite::params;
use serde_json::{Value, json};
use stark_sweep::starkbank::time;

/// Credits of this deployment's own campaign (the rest came from `--all-credits`).
const CAMPAIGN_CREDITS: usize = 10;
/// One credit in this many is skipped (nothing to transfer).
const SKIPPED_EVERY: usize = 1_000;
/// How far back the history goes.
const HISTORY_DAYS: i64 = 180;
/// Where the sweep sends (the default target), as `store::target_key` writes it.
const TARGET: &str = "20018183/0001/6341320293482496/20018183000180";
/// The emulator runs in real time. `World::start` seeds it the same way every time, so every
/// world has the same workspace id: the one pinned in the history.
const REAL_TIME: f64 = 1.0;

/// splitmix64's finalizer: ids spread over the key space, as Stark Bank's are.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 16 digits: 9 from a mix of `(kind, i)`, the last 7 `i` itself, so no two of a kind collide.
fn id(kind: u64, i: usize) -> String {
    format!("{}", 1_000_000_000_000_000 + mix(kind << 40 ^ i as u64) % 900_000_000 * 10_000_000 + i as u64 % 10_000_000)
}

fn invoice_event_body(event_id: &str, invoice_id: &str, amount: i64, fee: i64, at: &str, ws: &str) -> String {
    format!(
        concat!(
            "{{\"event\": {{\"created\": \"{at}\", \"id\": \"{eid}\", \"log\": {{\"created\": \"{at}\", \"errors\": [], ",
            "\"id\": \"{eid}1\", \"invoice\": {{\"amount\": {amount}, \"brcode\": \"00020101021226890014br.gov.bcb.pix2567",
            "invoice-h.sandbox.starkbank.com/v2/afdf94b770b0458a8440a335daf77c4c5204000053039865802BR5915Stark Bank S.A.",
            "6009Sao Paulo62070503***6304CC32\", \"created\": \"{at}\", \"descriptions\": [], \"discountAmount\": 0, ",
            "\"discounts\": [], \"due\": \"{at}\", \"expiration\": 432000, \"fee\": {fee}, \"fine\": 2.0, ",
            "\"fineAmount\": 0, \"id\": \"{iid}\", \"interest\": 1.0, \"interestAmount\": 0, \"link\": ",
            "\"https://example.sandbox.starkbank.com/invoicelink/{iid}\", \"name\": \"Benchmark Payer\", ",
            "\"nominalAmount\": {amount}, \"pdf\": \"https://sandbox.api.starkbank.com/v2/invoice/{iid}.pdf\", ",
            "\"rules\": [], \"splits\": [], \"status\": \"paid\", \"tags\": [\"stark-sweep\"], \"taxId\": \"337.451.076-08\", ",
            "\"transactionIds\": [\"{eid}\"], \"updated\": \"{at}\"}}, \"type\": \"credited\"}}, ",
            "\"subscription\": \"invoice\", \"workspaceId\": \"{ws}\"}}}}"
        ),
        eid = event_id,
        iid = invoice_id,
        at = at,
        amount = amount,
        fee = fee,
        ws = ws,
    )
}

fn transfer_event_body(event_id: &str, transfer_id: &str, invoice_id: &str, amount: i64, at: &str, ws: &str) -> String {
    format!(
        concat!(
            "{{\"event\": {{\"created\": \"{at}\", \"id\": \"{eid}\", \"log\": {{\"created\": \"{at}\", \"errors\": [], ",
            "\"id\": \"{eid}1\", \"transfer\": {{\"accountNumber\": \"6341320293482496\", \"accountType\": \"payment\", ",
            "\"amount\": {amount}, \"bankCode\": \"20018183\", \"branchCode\": \"0001\", \"created\": \"{at}\", ",
            "\"description\": \"\", \"displayDescription\": \"\", \"externalId\": \"stark-sweep-{iid}-1\", \"fee\": 0, ",
            "\"id\": \"{tid}\", \"metadata\": {{}}, \"name\": \"Stark Bank S.A.\", \"rules\": [], \"scheduled\": \"{at}\", ",
            "\"status\": \"success\", \"tags\": [\"stark-sweep\", \"invoice-{iid}\"], \"taxId\": \"20.018.183/0001-80\", ",
            "\"transactionIds\": [\"{eid}\"], \"updated\": \"{at}\"}}, \"type\": \"success\"}}, ",
            "\"subscription\": \"transfer\", \"workspaceId\": \"{ws}\"}}}}"
        ),
        eid = event_id,
        tid = transfer_id,
        iid = invoice_id,
        at = at,
        amount = amount,
        ws = ws,
    )
}

/// What `build` made.
struct Built {
    seconds: f64,
    bytes: u64,
    events: usize,
    settled: usize,
    skipped: usize,
}

/// Fills `db` (already created, empty, by the binary under test, so it has that binary's
/// schema) with `n` credits of history, in one transaction with journaling off.
fn build(db: &Path, n: usize, ws: &str, campaign_start: DateTime<Utc>, now: DateTime<Utc>) -> anyhow::Result<Built> {
    let t0 = Instant::now();
    let mut conn = rusqlite::Connection::open(db)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = OFF", [], |r| r.get(0))?;
    anyhow::ensure!(mode.eq_ignore_ascii_case("off"), "could not turn journaling off for the build ({mode})");
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")?;
    let tx = conn.transaction()?;
    let (mut events, mut settled, mut skipped) = (0, 0, 0);
    {
        let start = time::format(campaign_start);
        tx.execute(
            "INSERT INTO settings (key, value, source, set_at) VALUES ('workspace_id', ?1, 'bench history', ?2)",
            params![ws, start],
        )?;
        let tag = stark_sweep::campaign::campaign_tag(campaign_start);
        tx.execute(
            "INSERT INTO campaign (id, tag, started_at, length_seconds, slot_seconds) VALUES (1, ?1, ?2, 86400, 10800)",
            params![tag, time::format_secs(campaign_start)],
        )?;
        tx.execute("INSERT INTO slots (slot, claimed_at, attempted_at, issued_at) VALUES (0, ?1, ?1, ?1)", [&start])?;
        let mut draft = tx.prepare(
            "INSERT INTO invoice_drafts (draft_key, slot, position, name, tax_id, amount, due, expiration, tags, invoice_id)
             VALUES (?1, 0, ?2, ?3, '337.451.076-08', ?4, ?5, 432000, ?6, ?7)",
        )?;
        let mut invoice = tx.prepare(
            "INSERT INTO invoices (id, status, amount, nominal_amount, fee, ours, last_log_at) VALUES (?1, 'paid', ?2, ?2, ?3, ?4, ?5)",
        )?;
        let mut credit = tx.prepare(
            "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, reason, origin, confirmed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10)",
        )?;
        let mut send = tx.prepare(
            "INSERT INTO sends (external_id, invoice_id, attempt, amount, claimed_at, outcome, target, tries)
             VALUES (?1, ?2, 1, ?3, ?4, 'accepted', ?5, 1)",
        )?;
        let mut transfer = tx.prepare(
            "INSERT INTO transfers (id, external_id, invoice_id, amount, status, updated_at, ours, target)
             VALUES (?1, ?2, ?3, ?4, 'success', ?5, 1, ?6)",
        )?;
        let mut event = tx.prepare(
            "INSERT INTO events (id, subscription, log_type, log_id, resource_id, workspace_id, created, body, signature,
                                 source, received_at, applied_at, delivered_at)
             VALUES (?1, ?2, ?3, ?1 || '1', ?4, ?5, ?6, ?7, ?8, ?9, ?6, ?6, ?10)",
        )?;
        let span = Duration::days(HISTORY_DAYS - 1).num_seconds() as f64;
        for i in 0..n {
            let campaign = i < CAMPAIGN_CREDITS;
            let credited_at = if campaign {
                campaign_start + Duration::minutes(60 + i as i64)
            } else {
                now - Duration::days(HISTORY_DAYS) + Duration::seconds((span * i as f64 / n as f64) as i64)
            };
            let at = time::format(credited_at);
            let later = time::format(credited_at + Duration::minutes(1));
            let invoice_id = id(1, i);
            let is_skipped = i % SKIPPED_EVERY == SKIPPED_EVERY - 1;
            let (amount, fee) = if is_skipped { (50, 50) } else { (1_000 + (i as i64 * 7_919) % 49_000, 50) };
            let net = amount - fee;
            if campaign {
                let key = format!("bench-0-{i}");
                let tags = format!("[\"stark-sweep\",\"campaign-{tag}\",\"slot-{tag}-0\",\"draft-{key}\"]");
                let due = time::format_secs(campaign_start + Duration::days(2));
                draft.execute(params![key, i as i64, format!("Pagador {i}"), amount, due, tags, invoice_id])?;
            }
            invoice.execute(params![invoice_id, amount, fee, campaign, at])?;
            let credited_event = id(2, i);
            // Half came by webhook (signed), half from the event list (marked delivered).
            let (signature, source, delivered) =
                if i % 2 == 0 { (Some("MEUCIQ..."), "webhook", None) } else { (None, "api", Some(&later)) };
            event.execute(params![
                credited_event,
                "invoice",
                "credited",
                invoice_id,
                ws,
                at,
                invoice_event_body(&credited_event, &invoice_id, amount, fee, &at, ws).as_bytes(),
                signature,
                source,
                delivered
            ])?;
            events += 1;
            let (state, reason, origin) = if is_skipped {
                (
                    "skipped",
                    Some(format!("nothing to transfer: amount {amount} minus fee {fee} is not positive")),
                    if campaign { "issued" } else { "workspace" },
                )
            } else {
                ("transferred", None, if campaign { "issued" } else { "workspace" })
            };
            credit.execute(params![
                invoice_id,
                credited_event,
                amount,
                fee,
                net,
                at,
                state,
                reason,
                origin,
                (!campaign).then_some(&at)
            ])?;
            if is_skipped {
                skipped += 1;
                continue;
            }
            let external = format!("stark-sweep-{invoice_id}-1");
            let transfer_id = id(3, i);
            send.execute(params![external, invoice_id, net, later, TARGET])?;
            transfer.execute(params![transfer_id, external, invoice_id, net, later, TARGET])?;
            let success_event = id(4, i);
            event.execute(params![
                success_event,
                "transfer",
                "success",
                transfer_id,
                ws,
                later,
                transfer_event_body(&success_event, &transfer_id, &invoice_id, net, &later, ws).as_bytes(),
                signature,
                source,
                delivered
            ])?;
            events += 1;
            settled += 1;
        }
    }
    tx.commit()?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "could not turn WAL back on ({mode})");
    drop(conn);
    // Written without syncing: flush it now, or the first timed run's first fsync pays for it.
    std::fs::File::open(db)?.sync_all()?;
    Ok(Built { seconds: t0.elapsed().as_secs_f64(), bytes: std::fs::metadata(db)?.len(), events, settled, skipped })
}

/// One command, `runs` times (each cut at `limit` seconds; one cut there is not repeated).
fn timed(
    w: &World,
    bin: &Path,
    db: &Path,
    args: &[&str],
    runs: usize,
    limit: Option<u64>,
    expect: i32,
) -> anyhow::Result<(Value, String)> {
    let env = w.env(db)?;
    let mut done: Vec<Measured> = Vec::new();
    let mut cut = false;
    for _ in 0..runs {
        let m = match limit {
            Some(secs) => {
                let mut full = vec!["--signal=KILL".to_string(), secs.to_string(), bin.display().to_string()];
                full.extend(args.iter().map(|a| a.to_string()));
                let full: Vec<&str> = full.iter().map(String::as_str).collect();
                run_timed(w.dir.path(), Path::new("timeout"), &full, &env)?
            }
            None => run_timed(w.dir.path(), bin, args, &env)?,
        };
        if limit.is_some() && m.exit_code == 137 {
            eprintln!("  {args:?}: cut at {} s", limit.unwrap_or_default());
            cut = true;
            done.push(m);
            break;
        }
        if m.exit_code != expect {
            bail!("{} {args:?} exited {} (expected {expect}):\n{}\n{}", bin.display(), m.exit_code, m.stdout, m.stderr);
        }
        eprintln!("  {args:?}: {:.3} s, {:.1} MiB", m.wall_s, m.max_rss_kib as f64 / 1024.0);
        done.push(m);
    }
    let last_stdout = done.last().map(|m| m.stdout.clone()).unwrap_or_default();
    let v = json!({
        "args": args,
        "runs": done,
        "cut_at_s": if cut { limit } else { None },
        "median_wall_s": median(done.iter().map(|m| m.wall_s).collect()),
        "median_max_rss_kib": median(done.iter().map(|m| m.max_rss_kib as f64).collect()),
        "stdout_bytes": last_stdout.len(),
        "stdout_lines": last_stdout.lines().count(),
    });
    Ok((v, last_stdout))
}

/// The routine commands of one binary on one history.
fn idle_commands(bin: &Path, db: &Path, runs: usize, limit: Option<u64>) -> anyhow::Result<Value> {
    let w = World::start(REAL_TIME)?;
    let (process, out) = timed(&w, bin, db, &["process-events", "--all-credits", "--json"], runs, limit, 0)?;
    if process["cut_at_s"].is_null() {
        let v: Value = serde_json::from_str(&out).context("process-events printed no JSON")?;
        if v["transfersSent"] != 0 || v["eventsApplied"] != 0 || v["creditsSeen"] != 0 {
            bail!("process-events was not idle: {v}");
        }
    }
    let (status, _) = timed(&w, bin, db, &["status"], runs, limit, 0)?;
    let (status_json, _) = timed(&w, bin, db, &["status", "--json"], runs, limit, 0)?;
    Ok(json!({"process_events": process, "status": status, "status_json": status_json}))
}

/// `runs` slots issued by `bin`, slot `first` (1-based) on, each with the business clock in it.
/// Every run of one history uses the same world `w` (another world with the same seed would
/// hand out the same invoice ids again).
fn issue_slots(
    w: &World,
    bin: &Path,
    db: &Path,
    start: DateTime<Utc>,
    first: u32,
    runs: usize,
) -> anyhow::Result<Value> {
    let env = w.env(db)?;
    let mut done = Vec::new();
    for k in 0..runs as u32 {
        let slot = first + k;
        let now = time::format_secs(start + Duration::hours(3 * i64::from(slot - 1)) + Duration::minutes(1));
        let m = run_timed(w.dir.path(), bin, &["issue-invoices", "--json", "--now", &now], &env)?;
        let v: Value = serde_json::from_str(&m.stdout).with_context(|| format!("issue-invoices: {}", m.stderr))?;
        if m.exit_code != 0 || v["status"] != "issued" {
            bail!("issue-invoices did not issue slot {slot} (exit {}): {v}\n{}", m.exit_code, m.stderr);
        }
        eprintln!("  issue-invoices slot {slot}: {:.3} s, {:.1} MiB", m.wall_s, m.max_rss_kib as f64 / 1024.0);
        done.push(m);
    }
    Ok(json!({
        "runs": done,
        "median_wall_s": median(done.iter().map(|m| m.wall_s).collect()),
        "median_max_rss_kib": median(done.iter().map(|m| m.max_rss_kib as f64).collect()),
    }))
}

/// A new database of `bin`'s schema with workspace `ws` pinned (what a deployment's listener
/// has from its first day).
fn fresh_db(bin: &Path, db: &Path, ws: &str) -> anyhow::Result<()> {
    let made = common::clean(bin).arg("--db").arg(db).args(["kill-switch", "status"]).output()?;
    anyhow::ensure!(made.status.success(), "creating {}: {}", db.display(), String::from_utf8_lossy(&made.stderr));
    rusqlite::Connection::open(db)?.execute(
        "INSERT INTO settings (key, value, source, set_at) VALUES ('workspace_id', ?1, 'bench history', ?2)",
        params![ws, time::format(Utc::now())],
    )?;
    Ok(())
}

/// The listener's intake on `db`, through `webhook_load`.
fn intake(
    load: &Path,
    bin: &Path,
    db: &Path,
    ws: &str,
    seconds: f64,
    round: usize,
    out: &Path,
) -> anyhow::Result<Value> {
    let secs = seconds.to_string();
    // Each round sends events no earlier round sent (a duplicate is answered 200 and stores nothing).
    let offset = (round * 1_000_000).to_string();
    let mut c = common::clean(load);
    c.args(["--bin", &bin.display().to_string(), "--concurrency", "32", "--seconds", &secs, "--rate", "500"])
        .args(["--rate-seconds", &secs, "--presign-rate", "15000", "--random-ids", "--workspace", ws])
        .args(["--id-offset", &offset])
        .arg("--json")
        .arg(out)
        .arg("--db")
        .arg(db);
    let o = c.output().with_context(|| format!("running {}", load.display()))?;
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    eprint!("{text}");
    if !o.status.success() {
        bail!("webhook_load failed: {}\n{text}", String::from_utf8_lossy(&o.stderr));
    }
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(out)?)?;
    v["text"] = json!(text);
    Ok(v)
}

fn facts() -> Value {
    let sh = |c: &str| {
        std::process::Command::new("sh")
            .args(["-c", c])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    json!({
        "date": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "nproc": sh("nproc"),
        "load": sh("cut -d' ' -f1-3 /proc/loadavg"),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'"),
        "rustc": sh("rustc --version"),
        "commit": sh("git rev-parse --short HEAD"),
    })
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse(&[])?;
    if let Some(path) = flags.get("from-json") {
        // Render the report of an earlier run again (its `--json` file); nothing is measured.
        let text = std::fs::read_to_string(path).with_context(|| format!("--from-json {path}"))?;
        return output(&flags, &serde_json::from_str(&text)?);
    }
    let bin = std::fs::canonicalize(flags.get("bin").map(PathBuf::from).unwrap_or_else(common::default_bin))
        .context("--bin: the release binary (cargo build --release)")?;
    let before = flags.get("before").map(std::fs::canonicalize).transpose().context("--before")?;
    let sizes: Vec<usize> = flags
        .get("credits")
        .unwrap_or("1000,100000,1000000")
        .split(',')
        .map(|s| s.trim().replace('_', "").parse().with_context(|| format!("--credits: {s}")))
        .collect::<anyhow::Result<_>>()?;
    let runs: usize = flags.num("runs", 3)?;
    // Slots 2..=8 are free: `runs` for each binary.
    let issue_runs = runs.min(if before.is_some() { 3 } else { 7 });
    let limit: u64 = flags.num("timeout", 60)?;
    let webhook_seconds: f64 = flags.num("webhook-seconds", 5.0)?;
    let intake_rounds: usize = flags.num("intake-rounds", 2)?;
    let load = bin.parent().map(|p| p.join("examples/webhook_load")).unwrap_or_default();
    let keep = flags.get("keep").map(PathBuf::from);
    let mut start_facts = facts();
    let mut results = Vec::new();
    for (k, &n) in sizes.iter().enumerate() {
        let tmp = tempfile::Builder::new().prefix("stark-sweep-history-").tempdir()?;
        let dir = keep.clone().map(|d| d.join(format!("history-{n}"))).unwrap_or_else(|| tmp.path().to_path_buf());
        std::fs::create_dir_all(&dir)?;
        let db = dir.join("stark-sweep.db");
        let _ = std::fs::remove_file(&db);
        // The file is created by the oldest binary timed, so it has that release's schema.
        let creator = before.as_deref().unwrap_or(&bin);
        let made = common::clean(creator).arg("--db").arg(&db).args(["kill-switch", "status"]).output()?;
        anyhow::ensure!(made.status.success(), "creating {}: {}", db.display(), String::from_utf8_lossy(&made.stderr));
        let ws = World::start(REAL_TIME)?.sandbox.workspace_id();
        anyhow::ensure!(
            ws == World::start(REAL_TIME)?.sandbox.workspace_id(),
            "the emulator's workspace id is not stable"
        );
        let now = Utc::now();
        let campaign_start = DateTime::<Utc>::from_timestamp(now.timestamp(), 0).unwrap_or(now) - Duration::hours(4);
        eprintln!("== {n} credits: building the history ...");
        let built = build(&db, n, &ws, campaign_start, now)?;
        eprintln!(
            "   {} events, {} settled, {} skipped, {:.1} MiB, in {:.1} s",
            built.events,
            built.settled,
            built.skipped,
            built.bytes as f64 / 1048576.0,
            built.seconds
        );
        let mut r = json!({
            "credits": n,
            "settled": built.settled,
            "skipped": built.skipped,
            "events": built.events,
            "db_bytes": built.bytes,
            "build_s": built.seconds,
        });
        let mut next_slot = 2;
        let issuing = World::start(REAL_TIME)?;
        if let Some(old) = &before {
            eprintln!("   before ({}):", old.display());
            let issued = issue_slots(&issuing, old, &db, campaign_start, next_slot, issue_runs)?;
            next_slot += issue_runs as u32;
            let mut b = idle_commands(old, &db, runs, Some(limit))?;
            b["issue_invoices"] = issued;
            r["before"] = b;
            eprintln!("   first run of {} (migrates the file):", bin.display());
            let w = World::start(REAL_TIME)?;
            r["migration"] = timed(&w, &bin, &db, &["status", "--json"], 1, None, 0)?.0;
        }
        eprintln!("   {}:", bin.display());
        let mut a = idle_commands(&bin, &db, runs, None)?;
        a["issue_invoices"] = issue_slots(&issuing, &bin, &db, campaign_start, next_slot, issue_runs)?;
        r["after"] = a;
        if k + 1 == sizes.len() && webhook_seconds > 0.0 {
            // Alternating, so a change in the machine's load shows as spread, not as a difference.
            eprintln!(
                "   webhook intake, a fresh database and this one ({} events), {intake_rounds} rounds:",
                built.events
            );
            let fresh = dir.join("fresh.db");
            fresh_db(&bin, &fresh, &ws)?;
            let mut rounds = Vec::new();
            for round in 1..=intake_rounds {
                for (label, file) in [("fresh", &fresh), ("history", &db)] {
                    let out = dir.join(format!("intake-{label}-{round}.json"));
                    let v = intake(&load, &bin, file, &ws, webhook_seconds, round, &out)?;
                    anyhow::ensure!(
                        v["throughput_other"] == 0 && v["rate_other"] == 0,
                        "the listener refused events: {v}"
                    );
                    rounds.push(json!({"database": label, "round": round, "result": v}));
                }
            }
            r["intake"] = json!(rounds);
        }
        r["db_bytes_after"] = json!(std::fs::metadata(&db).map(|m| m.len()).unwrap_or_default());
        results.push(r);
    }
    start_facts["load_end"] = facts()["load"].clone();
    let all =
        json!({"facts": start_facts, "bin": bin, "before": before, "runs": runs, "timeout_s": limit, "sizes": results});
    if let Some(path) = flags.get("json") {
        std::fs::write(path, serde_json::to_string_pretty(&all)?)?;
    }
    output(&flags, &all)
}

/// Prints the report section, and writes it where `--markdown` and `--report` say.
fn output(flags: &Flags, all: &Value) -> anyhow::Result<()> {
    let md = markdown(all);
    println!("{md}");
    if let Some(path) = flags.get("markdown") {
        std::fs::write(path, &md)?;
    }
    if let Some(path) = flags.get("report") {
        splice(Path::new(path), &md)?;
    }
    Ok(())
}

const BEGIN: &str = "<!-- history: written by bench/history.rs (cargo run --release --example history) -->";
const END: &str = "<!-- /history -->";

/// Puts `section` between the markers in `report` (appended when they are missing).
fn splice(report: &Path, section: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(report).unwrap_or_default();
    let block = format!("{BEGIN}\n{}\n{END}", section.trim_end());
    let out = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{block}{}", &text[..b], &text[e + END.len()..]),
        _ => format!("{}\n\n{block}\n", text.trim_end()),
    };
    std::fs::write(report, out).with_context(|| format!("writing {}", report.display()))
}

fn n(x: u64) -> String {
    let s = x.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `0.026 s, 9.8 MiB`: the median of the runs that finished, and how many were cut.
fn cell(v: &Value) -> String {
    if v.is_null() {
        return "n/a".into();
    }
    let runs = v["runs"].as_array().cloned().unwrap_or_default();
    let (cut, done): (Vec<Value>, Vec<Value>) = runs.into_iter().partition(|m| m["exit_code"] == 137);
    let limit = v["cut_at_s"].as_u64().unwrap_or_default();
    if done.is_empty() {
        return format!("**over {limit} s** (cut)");
    }
    let s = median(done.iter().filter_map(|m| m["wall_s"].as_f64()).collect());
    let rss = median(done.iter().filter_map(|m| m["max_rss_kib"].as_f64()).collect());
    let wall = if s < 10.0 { format!("{s:.3} s") } else { format!("{s:.1} s") };
    let more = if cut.is_empty() { String::new() } else { format!(" (and {} run cut at {limit} s)", cut.len()) };
    format!("{wall}, {:.1} MiB{more}", rss / 1024.0)
}

fn markdown(all: &Value) -> String {
    let f = &all["facts"];
    let sizes = all["sizes"].as_array().cloned().unwrap_or_default();
    let has_before = !all["before"].is_null();
    let mut s = String::new();
    let mut w = |line: String| {
        s.push_str(&line);
        s.push('\n');
    };
    w("## Routine runs on a long history".into());
    w(String::new());
    w(format!(
        "Written by `bench/history.rs` on {} ({} CPUs, {}; load {} at start, {} at end; {}; commit {}). Each history is built \
         with direct SQL inserts (not timed): every credit settled with its send, its successful transfer and two applied \
         events (~1 KiB bodies, ids spread over the key space), 1 in {SKIPPED_EVERY} skipped instead (nothing to \
         transfer), the first {CAMPAIGN_CREDITS} from the running campaign, the rest swept with `--all-credits` over \
         {HISTORY_DAYS} days. Each command runs against a fresh emulator (in-process, real time); figures are the \
         median wall time (spawn to exit) and peak RSS of {} runs{}.",
        f["date"].as_str().unwrap_or_default(),
        f["nproc"].as_str().unwrap_or_default(),
        f["cpu"].as_str().unwrap_or_default(),
        f["load"].as_str().unwrap_or_default(),
        f["load_end"].as_str().unwrap_or_default(),
        f["rustc"].as_str().unwrap_or_default(),
        f["commit"].as_str().unwrap_or_default(),
        all["runs"],
        if has_before {
            format!("; *before* is the previous release on the same file, each run cut at {} s", all["timeout_s"])
        } else {
            String::new()
        }
    ));
    w(String::new());
    let mut head = "| Command |".to_string();
    let mut rule = "|---|".to_string();
    for r in &sizes {
        let c = n(r["credits"].as_u64().unwrap_or_default());
        if has_before {
            head.push_str(&format!(" {c} credits, before | {c} credits, after |"));
            rule.push_str("---|---|");
        } else {
            head.push_str(&format!(" {c} credits |"));
            rule.push_str("---|");
        }
    }
    w(head);
    w(rule);
    for (label, key) in [
        ("idle `process-events --all-credits`", "process_events"),
        ("`status`", "status"),
        ("`status --json`", "status_json"),
        ("`issue-invoices`, one slot", "issue_invoices"),
    ] {
        let mut row = format!("| {label} |");
        for r in &sizes {
            if has_before {
                row.push_str(&format!(" {} |", cell(&r["before"][key])));
            }
            row.push_str(&format!(" {} |", cell(&r["after"][key])));
        }
        w(row);
    }
    let mut row = "| `status` output (lines) |".to_string();
    for r in &sizes {
        if has_before {
            row.push_str(&format!(" {} |", r["before"]["status"]["stdout_lines"]));
        }
        row.push_str(&format!(" {} |", r["after"]["status"]["stdout_lines"]));
    }
    w(row);
    w(String::new());
    let mut facts_rows =
        vec!["| History | events | database | built in |".to_string(), "|---|---|---|---|".to_string()];
    for r in &sizes {
        facts_rows.push(format!(
            "| {} credits ({} settled, {} skipped) | {} | {:.0} MiB | {:.1} s |",
            n(r["credits"].as_u64().unwrap_or_default()),
            n(r["settled"].as_u64().unwrap_or_default()),
            n(r["skipped"].as_u64().unwrap_or_default()),
            n(r["events"].as_u64().unwrap_or_default()),
            r["db_bytes"].as_f64().unwrap_or_default() / 1048576.0,
            r["build_s"].as_f64().unwrap_or_default()
        ));
    }
    for line in facts_rows {
        w(line);
    }
    w(String::new());
    if has_before {
        let mut parts = Vec::new();
        for r in &sizes {
            parts.push(format!("{} credits {}", n(r["credits"].as_u64().unwrap_or_default()), cell(&r["migration"])));
        }
        w(format!(
            "Migrating the file in place (the first run of the new binary, `status --json`, which builds the new \
             indexes): {}.",
            parts.join("; ")
        ));
        w(String::new());
    }
    if let Some(last) = sizes.last()
        && let Some(rounds) = last["intake"].as_array()
    {
        w(format!("### Webhook intake with {} events already stored", n(last["events"].as_u64().unwrap_or_default())));
        w(String::new());
        w("`webhook_load` (32 keep-alive clients as fast as answered, then 500 events/s open loop; event ids spread over \
           the key space), `serve-webhook` of this build, on a fresh database and on the largest history, \
           alternating:"
            .into());
        w(String::new());
        w("| Round, database | events/s (max load) | p50 / p99 | at 500/s: p50 / p99 | peak RSS | rows = 200s |"
            .into());
        w("|---|---|---|---|---|---|".into());
        for r in rounds {
            let v = &r["result"];
            w(format!(
                "| {}, {} ({} events before) | {:.0} | {:.1} / {:.1} ms | {:.2} / {:.2} ms | {:.1} MiB | {} |",
                r["round"],
                r["database"].as_str().unwrap_or_default(),
                n(v["rows_before"].as_u64().unwrap_or_default()),
                v["throughput_eps"].as_f64().unwrap_or_default(),
                v["throughput_p50_ms"].as_f64().unwrap_or_default(),
                v["throughput_p99_ms"].as_f64().unwrap_or_default(),
                v["rate_p50_ms"].as_f64().unwrap_or_default(),
                v["rate_p99_ms"].as_f64().unwrap_or_default(),
                v["vm_hwm_kib"].as_f64().unwrap_or_default() / 1024.0,
                if v["rows"].as_u64()
                    == Some(v["throughput_ok"].as_u64().unwrap_or(0) + v["rate_ok"].as_u64().unwrap_or(0))
                {
                    "yes"
                } else {
                    "no"
                }
            ));
        }
        let eps = |db: &str| {
            median(
                rounds
                    .iter()
                    .filter(|r| r["database"] == db)
                    .filter_map(|r| r["result"]["throughput_eps"].as_f64())
                    .collect(),
            )
        };
        let (fresh, history) = (eps("fresh"), eps("history"));
        w(String::new());
        w(format!(
            "Median of the rounds at maximum load: {fresh:.0} events/s on the fresh database, {history:.0} on the \
             history ({:+.0}%). The rounds alternate, so a change in the machine's load shows as spread between rounds \
             of the same database.",
            (history / fresh - 1.0) * 100.0
        ));
        w(String::new());
    }
    w("Reproduce: `cargo build --release --bin stark-sweep --example history --example webhook_load && \
       target/release/examples/history --before OLD_RELEASE_BIN --report bench/REPORT.md` (about 8 minutes on 2 \
       cores; `--credits 1000,100000` for a quick look; `--from-json` renders a run's `--json` again)."
        .into());
    s
}
