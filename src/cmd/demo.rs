//! `stark-sweep demo`: the whole 24-hour campaign on the embedded emulator, in under a minute,
//! with no credentials.
//!
//! It runs the real subcommands as child processes of this same binary, the way the timers
//! would: `serve-webhook` (a long-running listener), `webhook register`, `issue-invoices` at
//! each slot, `process-events` at every step, then `status`. The emulator's clock is manual:
//! the demo moves it one step at a time, and each move returns only once everything due by then
//! has happened (payments, credits, transfer steps, webhooks delivered and answered); the
//! subcommands run to completion between moves. So the outcome never depends on the machine's
//! speed or load: a slow machine takes longer, and ends the same. The verdict is computed from
//! the emulator's state and the store, never printed unconditionally.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use super::{Ctx, Status, count, print};
use crate::cli::DemoArgs;
use crate::issue::OutcomeKind;
use crate::money::brl;
use crate::sandbox::{Sandbox, SandboxConfig, Snapshot};
use crate::store::Store;

/// Files a previous demo left in its directory, removed before a new run.
const DEMO_FILES: &[&str] = &[
    "stark-sweep.db",
    "stark-sweep.db-wal",
    "stark-sweep.db-shm",
    "stark-sweep.db.issue-invoices.lock",
    "stark-sweep.db.sweep.lock",
    "private-key.pem",
    "listener.log",
];

struct Demo {
    exe: PathBuf,
    dir: PathBuf,
    db: PathBuf,
    sandbox: Sandbox,
}

impl Demo {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        // Only what the demo sets: an operator's STARK_SWEEP_* or STARKBANK_* variables (say
        // STARK_SWEEP_PROCESS) would change what the subcommands do behind the demo's back.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("STARK_SWEEP_")
                || k.starts_with("STARKBANK_")
                || k == "STATE_DIRECTORY"
                || k == "CREDENTIALS_DIRECTORY"
            {
                c.env_remove(k.as_ref());
            }
        }
        c.current_dir(&self.dir)
            .env("STARKBANK_PROJECT_ID", self.sandbox.project_id())
            .env("STARKBANK_API_URL", self.sandbox.url())
            .env("STARK_SWEEP_DB", &self.db)
            .env_remove("STARKBANK_PRIVATE_KEY")
            .env_remove("STARK_SWEEP_NOW")
            .args(args);
        if let Some(key) = self.sandbox.private_key_path() {
            c.env("STARKBANK_PRIVATE_KEY_PATH", key);
        }
        c
    }

    /// Runs a subcommand to completion; returns (exit code, stdout). Its stderr is shown only
    /// when it fails unexpectedly.
    fn run(&self, args: &[&str], ok_codes: &[i32]) -> anyhow::Result<(i32, String)> {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running `stark-sweep {}`", args.join(" ")))?;
        let code = out.status.code().unwrap_or(-1);
        if !ok_codes.contains(&code) {
            anyhow::bail!(
                "`stark-sweep {}` exited {code}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
            );
        }
        Ok((code, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// The invoice timer's run at the start of slot `k` (0-based), and one line saying what it did.
    fn issue(&self, k: i64, t: DateTime<Utc>) -> anyhow::Result<()> {
        let (_, out) = self.run(&["issue-invoices", "--json", "-q", "--now", &rfc3339(t)], &[0])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("reading issue-invoices --json")?;
        let status = v["status"].as_str().unwrap_or_default();
        let what = match OutcomeKind::parse(status) {
            Some(OutcomeKind::Issued) => format!(
                "issued {} ({})",
                count(v["count"].as_u64().unwrap_or(0), "invoice", "invoices"),
                brl(v["total"].as_i64().unwrap_or(0))
            ),
            Some(OutcomeKind::AlreadyIssued) => {
                format!("already issued ({})", count(v["count"].as_u64().unwrap_or(0), "invoice", "invoices"))
            }
            _ => format!("nothing issued ({status})"),
        };
        print(&format!("[{}] slot {}/{SLOTS}: {what}\n", clock(t), k + 1))
    }

    /// The transfer timer's run at `t`, and a line when it sent or settled anything.
    fn process_events(&self, t: DateTime<Utc>, totals: &mut (usize, i64)) -> anyhow::Result<()> {
        let (_, out) = self.run(&["process-events", "--json", "-q", "--now", &rfc3339(t)], &[0, 3, 75])?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) else { return Ok(()) };
        let sent = v["transfersSent"].as_u64().unwrap_or(0) as usize;
        let total = v["sentTotal"].as_i64().unwrap_or(0);
        let settled = v["transferred"].as_u64().unwrap_or(0);
        totals.0 += sent;
        totals.1 += total;
        let mut parts = Vec::new();
        if sent > 0 {
            parts.push(format!("{} sent ({})", count(sent as u64, "transfer", "transfers"), brl(total)));
        }
        if settled > 0 {
            parts.push(format!("{} confirmed", count(settled, "transfer", "transfers")));
        }
        if !parts.is_empty() {
            print(&format!("  [{}] process-events: {}\n", clock(t), parts.join("; ")))?;
        }
        Ok(())
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn clock(t: DateTime<Utc>) -> String {
    t.format("%d %H:%M").to_string()
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Stops the listener like systemd would (SIGTERM), then makes sure it is gone.
struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_healthy(url: &str) -> anyhow::Result<()> {
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = http.get(url).send()
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the webhook listener did not become healthy at {url}; see listener.log in the demo directory"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Simulated minutes per step when `--step-minutes` is not given: the `process-events` timer's
/// cadence in the demo (the real timer runs every minute; a step of 15 keeps the demo short).
pub const DEFAULT_STEP_MINUTES: u32 = 15;
/// The campaign the demo runs: 8 slots of 3 hours.
const SLOTS: u32 = 8;
const SLOT_HOURS: i64 = 3;
/// After the campaign, steps continue until everything settled, at most this long.
const SETTLE_HOURS: i64 = 12;

pub fn run(_ctx: &Ctx, args: &DemoArgs) -> anyhow::Result<Status> {
    let started = Instant::now();
    let step_minutes = args.step_minutes.unwrap_or(DEFAULT_STEP_MINUTES);
    if !(1..=60).contains(&step_minutes) || 60 % step_minutes != 0 {
        return Err(crate::error::config(format!(
            "STARK_SWEEP_DEMO_STEP_MINUTES / --step-minutes: {step_minutes} does not divide an hour; use 1, 2, 3, 5, 10, 15, 20, 30 or 60"
        )));
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("stark-sweep-demo"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    for f in DEMO_FILES {
        let p = dir.join(f);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing the previous demo's {}", p.display()))?;
        }
    }
    let sandbox = Sandbox::start(SandboxConfig {
        manual_clock: true,
        key_dir: Some(dir.clone()),
        seed: args.seed.unwrap_or_else(rand::random),
        ..SandboxConfig::default()
    })?;
    let demo = Demo { exe: std::env::current_exe()?, db: dir.join("stark-sweep.db"), dir: dir.clone(), sandbox };
    print(&format!(
        "stark-sweep demo: Stark Bank sandbox emulator at {} (simulated clock, moved {step_minutes} minutes per step; seed {})\n",
        demo.sandbox.url(),
        demo.sandbox.seed()
    ))?;

    let port = free_port()?;
    let log = std::fs::File::create(dir.join("listener.log"))?;
    let listener = Listener(
        demo.command(&["serve-webhook", "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the webhook listener")?,
    );
    wait_healthy(&format!("http://127.0.0.1:{port}/health"))?;
    let hook = format!("http://127.0.0.1:{port}/webhook");
    demo.run(&["webhook", "register", "--url", &hook, "-q"], &[0])?;
    print(&format!("webhook listener at {hook}, registered for invoice and transfer events\n\n"))?;

    // The campaign: at each step, the invoice timer (at a slot's start), then the transfer
    // timer, then the clock moves on and the bank does what falls due.
    let start = demo.sandbox.now();
    let step = chrono::Duration::minutes(i64::from(step_minutes));
    let slot = chrono::Duration::hours(SLOT_HOURS);
    let end = start + slot * SLOTS as i32;
    let mut totals = (0usize, i64::default());
    let mut t = start;
    while t < end || (!settled(&demo)? && t < end + chrono::Duration::hours(SETTLE_HOURS)) {
        let since = t - start;
        if t < end && since.num_seconds() % slot.num_seconds() == 0 {
            demo.issue(since.num_seconds() / slot.num_seconds(), t)?;
        }
        demo.process_events(t, &mut totals)?;
        demo.sandbox.advance_to(t + step)?;
        t += step;
    }
    drop(listener);

    print("\n")?;
    let now = demo.sandbox.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status_code, report) = demo.run(&["status", "--now", &now], &[0, 3])?;
    print(&report)?;
    let verdict = verdict(&demo.sandbox.snapshot(), &demo.db, status_code)?;
    print(&format!("\n{}\n", verdict.line))?;
    // The campaign ran on the emulator's clock, a day ahead of the real one.
    print(&format!(
        "finished in {:.0} s; the database is left at {} (try: stark-sweep status --db {} --now {now})\n",
        started.elapsed().as_secs_f64(),
        demo.db.display(),
        demo.db.display()
    ))?;
    if verdict.ok { Ok(Status::Success) } else { anyhow::bail!("the demo's verdict is negative: {}", verdict.line) }
}

/// Nothing left to do: no open credit in the store, nothing in flight at the emulator, and
/// every invoice the emulator will pay has been paid.
fn settled(demo: &Demo) -> anyhow::Result<bool> {
    let snap = demo.sandbox.snapshot();
    let now = demo.sandbox.now();
    let pending_payment = snap
        .invoices
        .iter()
        .any(|i| i.will_pay_at.is_some_and(|t| t <= now + chrono::Duration::hours(1)) && i.status == "created");
    let in_flight = snap.transfers.iter().any(|t| t.status == "created" || t.status == "processing");
    let credited = snap.invoices.iter().filter(|i| i.logs.iter().any(|l| l.log_type == "credited")).count();
    let store = Store::open(&demo.db)?;
    let recorded = store.credits()?.len();
    Ok(!pending_payment && !in_flight && store.open_credits()?.is_empty() && recorded >= credited)
}

struct Verdict {
    ok: bool,
    line: String,
}

/// Checks, from the emulator and the store: 8 batches of 8-12 invoices; exactly one
/// successful transfer of amount - fee per credited invoice with a positive net, and none
/// for anything else; `status` reconciles with no discrepancy needing attention.
fn verdict(snap: &Snapshot, db: &Path, status_code: i32) -> anyhow::Result<Verdict> {
    let mut problems = Vec::new();
    let store = Store::open(db)?;
    let slots = store.slots()?;
    if slots.len() != 8 {
        problems.push(format!("expected 8 issued slots, found {}", slots.len()));
    }
    for s in slots.iter().filter(|s| s.issued_at.is_none() || !(8..=12).contains(&s.invoices)) {
        let state = if s.issued_at.is_some() { "issued" } else { "not issued" };
        problems.push(format!("slot {}: {state}, {} invoices (expected 8-12)", s.slot + 1, s.invoices));
    }
    let issued: i64 = slots.iter().map(|s| s.invoices).sum();
    if snap.invoices.len() as i64 != issued {
        problems.push(format!("the emulator holds {} invoices, the store issued {issued}", snap.invoices.len()));
    }
    let mut sent: HashMap<&str, Vec<i64>> = HashMap::new();
    for t in snap.transfers.iter().filter(|t| t.status == "success") {
        let inv = t.tags.iter().find_map(|tag| tag.strip_prefix("invoice-")).unwrap_or("?");
        sent.entry(inv).or_default().push(t.amount);
    }
    let (mut credited, mut net_total, mut transferred) = (0usize, 0i64, 0i64);
    for inv in snap.invoices.iter().filter(|i| i.logs.iter().any(|l| l.log_type == "credited")) {
        credited += 1;
        let net = inv.amount - inv.fee;
        let got = sent.remove(inv.id.as_str()).unwrap_or_default();
        transferred += got.iter().sum::<i64>();
        if net > 0 {
            net_total += net;
            if got != [net] {
                problems.push(format!("invoice {}: net {net}, successful transfers {got:?}", inv.id));
            }
        } else if !got.is_empty() {
            problems.push(format!("invoice {}: net {net} <= 0 but transfers {got:?}", inv.id));
        }
    }
    if !sent.is_empty() {
        problems.push(format!("{} successful transfers for invoices that were not credited", sent.len()));
    }
    if status_code != 0 {
        problems.push("`stark-sweep status` reports discrepancies that need attention".into());
    }
    Ok(if problems.is_empty() {
        Verdict {
            ok: true,
            line: format!(
                "verdict: OK: {issued} invoices in 8 slots, {credited} credited; every credit transferred exactly once; credited net {} = transferred {}",
                brl(net_total),
                brl(transferred)
            ),
        }
    } else {
        Verdict { ok: false, line: format!("verdict: FAILED: {}", problems.join("; ")) }
    })
}
