//! Monitoring: `/metrics` scraped during a campaign on the emulator agrees with the emulator's
//! own ledger; the timer jobs' textfile is replaced atomically and passes `promtool check
//! metrics`; every alert rule fires in its `promtool test rules` scenario; the shipped drop-ins
//! that turn the textfile on verify with systemd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Duration;
use stark_sweep::sandbox::{SandboxConfig, Snapshot};

use crate::util::{self, World, at, metric, stderr, stdout, wait_for};

/// promtool, from Debian's `prometheus` package (scripts/test installs it).
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("STARK_SWEEP_PROMTOOL") {
        return PathBuf::from(p);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("promtool not found; to fix: `apt-get install prometheus` (scripts/test does it), or set STARK_SWEEP_PROMTOOL")
        })
}

fn promtool_ok(args: &[&str], stdin: Option<&str>) -> String {
    let mut c = Command::new(promtool());
    c.args(args).current_dir(util::repo().join("deploy/prometheus"));
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "promtool {args:?} failed:\n{all}");
    all
}

#[test]
fn every_alert_rule_fires_in_its_promtool_scenario() {
    promtool_ok(&["check", "rules", "alerts.yml"], None);
    promtool_ok(&["check", "config", "prometheus.yml"], None);
    let out = promtool_ok(&["test", "rules", "alerts_test.yml"], None);
    assert!(out.contains("SUCCESS"), "{out}");
    // Each rule has a scenario in which it fires.
    let rules = std::fs::read_to_string(util::repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(util::repo().join("deploy/prometheus/alerts_test.yml")).unwrap();
    let names: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        let fires = tests.split("alertname: ").skip(1).any(|t| {
            t.starts_with(&format!("{name}\n")) && !t.lines().nth(1).is_some_and(|l| l.contains("exp_alerts: []"))
        });
        assert!(fires, "no promtool scenario in which {name} fires");
    }
}

/// The drop-ins that turn on the textfile (deploy/prometheus/systemd/) verify with the units.
#[test]
fn the_textfile_drop_ins_verify_with_the_units() {
    let dir = tempfile::tempdir().unwrap();
    let bin = util::bin().to_string_lossy().to_string();
    for unit in ["stark-sweep-process.service", "stark-sweep-invoices.service"] {
        let text = std::fs::read_to_string(util::repo().join("systemd").join(unit)).unwrap();
        std::fs::write(dir.path().join(unit), text.replace("/usr/local/bin/stark-sweep", &bin)).unwrap();
        let dropin = format!("{unit}.d");
        std::fs::create_dir(dir.path().join(&dropin)).unwrap();
        let conf =
            std::fs::read_to_string(util::repo().join("deploy/prometheus/systemd").join(&dropin).join("metrics.conf"))
                .unwrap();
        let job = if unit.contains("process") { "process-events" } else { "issue-invoices" };
        assert!(
            conf.contains(&format!(
                "STARK_SWEEP_METRICS_FILE=/var/lib/prometheus/node-exporter/stark-sweep-{job}.prom"
            ))
        );
        assert!(conf.contains("ReadWritePaths=/var/lib/prometheus/node-exporter"), "{conf}");
        std::fs::write(dir.path().join(&dropin).join("metrics.conf"), conf).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("stark-sweep-process.service"))
        .arg(dir.path().join("stark-sweep-invoices.service"))
        .output()
        .expect("systemd-analyze is required (scripts/test installs the systemd package)");
    assert!(out.status.success(), "systemd-analyze verify failed:\n{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), "", "systemd-analyze printed warnings");
}

/// `process-events --metrics-file`: each run replaces the file whole (a reader polling it all
/// along never sees a partial one), it parses and passes `promtool check metrics`, and a failed
/// run records its exit code while keeping the last success. Two jobs cannot share one file.
#[test]
fn the_textfile_is_replaced_atomically_and_passes_promtool() {
    let w = World::new(SandboxConfig { manual_clock: true, pay_rate: 0.0, seed: 41, ..SandboxConfig::default() });
    let dir = w.dir.path().join("textfile");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("stark-sweep-process-events.prom");
    let name = |suffix: &str| format!("stark_sweep_process_events_{suffix}");

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (file, stop) = (file.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut reads, mut bad) = (0usize, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                if let Ok(text) = std::fs::read_to_string(&file) {
                    reads += 1;
                    let whole = text.ends_with('\n')
                        && [
                            "last_run_timestamp_seconds",
                            "last_run_duration_seconds",
                            "last_exit_code",
                            "last_success_timestamp_seconds",
                        ]
                        .iter()
                        .all(|m| text.contains(&format!("\nstark_sweep_process_events_{m} ")));
                    if !whole {
                        bad.push(text);
                    }
                }
            }
            (reads, bad)
        })
    };
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    for _ in 0..8 {
        w.run_expect(&["process-events", "--metrics-file", file.to_str().unwrap()], 0);
    }
    stop.store(true, Ordering::SeqCst);
    let (reads, bad) = reader.join().unwrap();
    assert!(reads > 0, "the reader never saw the file");
    assert!(bad.is_empty(), "a reader saw a partial file: {:?}", bad.first());
    let left: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(left, ["stark-sweep-process-events.prom"], "temporary files left behind");

    let text = std::fs::read_to_string(&file).unwrap();
    promtool_ok(&["check", "metrics"], Some(&text));
    assert_eq!(metric(&text, &name("last_exit_code")), Some(0.0));
    let success = metric(&text, &name("last_success_timestamp_seconds")).unwrap();
    assert!(success >= started, "{text}");
    assert!(metric(&text, &name("last_run_duration_seconds")).unwrap() > 0.0);
    assert!(
        !text.lines().any(|l| !l.starts_with('#') && l.split_whitespace().count() != 2),
        "no client timestamps:\n{text}"
    );

    // Stark Bank unreachable: exit 75, recorded; the last success stays.
    let out = w
        .cmd(&["process-events", "--metrics-file", file.to_str().unwrap()])
        .env("STARKBANK_API_URL", "http://127.0.0.1:9")
        .env("STARK_SWEEP_HTTP_TIMEOUT", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    promtool_ok(&["check", "metrics"], Some(&text));
    assert_eq!(metric(&text, &name("last_exit_code")), Some(75.0));
    assert_eq!(metric(&text, &name("last_success_timestamp_seconds")), Some(success));
    assert!(metric(&text, &name("last_run_timestamp_seconds")).unwrap() > success);

    // The other job may not write into this job's file (exit 78, before doing anything).
    let out = w.run_expect(&["issue-invoices", "--metrics-file", file.to_str().unwrap()], 78);
    assert!(stderr(&out).contains("process-events's metrics"), "{}", stderr(&out));
    assert!(w.open_store().campaign().unwrap().is_none(), "issue-invoices ran anyway");
    // The environment twin.
    let other = dir.join("stark-sweep-issue-invoices.prom");
    w.cmd(&["issue-invoices", "--now", &at(w.sandbox.now())]).env("STARK_SWEEP_METRICS_FILE", &other).output().unwrap();
    let text = std::fs::read_to_string(&other).unwrap();
    promtool_ok(&["check", "metrics"], Some(&text));
    assert_eq!(metric(&text, "stark_sweep_issue_invoices_last_exit_code"), Some(0.0), "{text}");
}

// ---- a campaign, scraped -----------------------------------------------------------------------

/// `serve-webhook` on a free port, registered for the emulator's deliveries.
pub(crate) struct Listener {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Listener {
    pub(crate) fn start(w: &World) -> Listener {
        let log = w.dir.path().join("listener.log");
        let child = w
            .cmd(&["serve-webhook", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut addr = String::new();
        wait_for("the listener to listen", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            match text.split("listening on http://").nth(1).and_then(|r| r.split_whitespace().next()) {
                Some(a) => {
                    addr = a.to_string();
                    true
                }
                None => false,
            }
        });
        let health = format!("http://{addr}/health");
        wait_for("the listener to be healthy", || {
            reqwest::blocking::get(&health).is_ok_and(|r| r.status().is_success())
        });
        let url = format!("http://{addr}/webhook");
        w.run_expect(&["webhook", "register", "--url", &url], 0);
        Listener { child, addr, log }
    }

    fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    fn scrape(&self) -> String {
        let r = reqwest::blocking::get(format!("http://{}/metrics", self.addr)).unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.text().unwrap()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value(text: &str, series: &str) -> i64 {
    metric(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}")) as i64
}

/// What the emulator's ledger says, compared with one scrape taken right after process-events
/// (the emulator's manual clock stands still in between, so both describe the same moment).
fn check_against_the_ledger(text: &str, snap: &Snapshot, listener: &Listener, when: &str) {
    let ours: Vec<_> = snap.deliveries.iter().filter(|d| d.url == listener.url() && d.http_status.is_some()).collect();
    let received = value(text, "stark_sweep_webhook_events_received_total");
    assert_eq!(received, ours.len() as i64, "{when}: deliveries the emulator POSTed");
    let stored_ids: std::collections::HashSet<&str> =
        ours.iter().filter(|d| d.http_status == Some(200)).map(|d| d.event_id.as_str()).collect();
    assert_eq!(value(text, "stark_sweep_webhook_events_stored_total"), stored_ids.len() as i64, "{when}");
    assert_eq!(
        value(text, "stark_sweep_webhook_events_stored_total")
            + value(text, "stark_sweep_webhook_events_duplicate_total"),
        received,
        "{when}: nothing refused"
    );
    assert_eq!(value(text, "stark_sweep_webhook_intake_seconds_count"), received, "{when}");

    let credited: Vec<_> = snap.invoices.iter().filter(|i| i.logs.iter().any(|l| l.log_type == "credited")).collect();
    let credits: i64 = ["open", "held", "transferred", "skipped", "attention"]
        .iter()
        .map(|s| value(text, &format!("stark_sweep_credits{{state=\"{s}\"}}")))
        .sum();
    assert_eq!(credits, credited.len() as i64, "{when}: credited invoices");
    assert_eq!(value(text, "stark_sweep_credits{state=\"unclaimed\"}"), 0, "{when}");
    assert_eq!(value(text, "stark_sweep_credited_cents"), credited.iter().map(|i| i.amount).sum::<i64>(), "{when}");
    assert_eq!(value(text, "stark_sweep_credited_fees_cents"), credited.iter().map(|i| i.fee).sum::<i64>(), "{when}");
    assert_eq!(
        value(text, "stark_sweep_credited_net_cents"),
        credited.iter().map(|i| i.amount - i.fee).filter(|n| *n > 0).sum::<i64>(),
        "{when}"
    );
    for status in ["created", "processing", "success", "failed", "canceled"] {
        let n = snap.transfers.iter().filter(|t| t.status == status).count() as i64;
        assert_eq!(
            value(text, &format!("stark_sweep_transfers{{status=\"{status}\"}}")),
            n,
            "{when}: {status} transfers"
        );
    }
    let success: i64 = snap.transfers.iter().filter(|t| t.status == "success").map(|t| t.amount).sum();
    assert_eq!(value(text, "stark_sweep_transferred_cents"), success, "{when}");
    assert_eq!(value(text, "stark_sweep_credits_overpaid"), 0, "{when}");
    assert_eq!(value(text, "stark_sweep_transfers_without_credit"), 0, "{when}");
    assert_eq!(value(text, "stark_sweep_needs_attention"), 0, "{when}");
    assert_eq!(value(text, "stark_sweep_store_readable"), 1, "{when}");
    assert_eq!(value(text, "stark_sweep_webhook_ready"), 1, "{when}");
}

/// Two 3-hour slots on the emulator's manual clock, the listener receiving every delivery, the
/// timers run at each 15-minute step; after every process-events run, a scrape of `/metrics`
/// agrees with the emulator's ledger: deliveries, credits and their amounts, transfers by status
/// and the money they carried, slots issued.
#[test]
fn metrics_scraped_during_a_campaign_agree_with_the_emulators_ledger() {
    let w = World::new(SandboxConfig {
        manual_clock: true,
        pay_rate: 1.0,
        initial_balance: 0,
        seed: 16,
        ..SandboxConfig::default()
    });
    let listener = Listener::start(&w);
    let start = w.sandbox.now();
    let step = Duration::minutes(15);
    let slot = Duration::hours(3);
    let end = start + slot * 2;
    let mut t = start;
    let mut scrapes = 0;
    let mut issued = 0;
    let settled = |snap: &Snapshot| {
        snap.invoices.iter().all(|i| i.status != "created")
            && !snap.transfers.iter().any(|t| t.status == "created" || t.status == "processing")
    };
    while t < end || (!settled(&w.sandbox.snapshot()) && t < end + Duration::hours(4)) {
        let now = at(t);
        if t < end && (t - start).num_seconds() % slot.num_seconds() == 0 {
            w.run_expect(&["issue-invoices", "--campaign-hours", "6", "--slot-hours", "3", "--now", &now], 0);
            issued += 1;
        }
        w.run_expect(&["process-events", "--now", &now], 0);
        let text = listener.scrape();
        check_against_the_ledger(&text, &w.sandbox.snapshot(), &listener, &format!("at {now}"));
        assert_eq!(value(&text, "stark_sweep_campaign_slots"), 2);
        assert_eq!(value(&text, "stark_sweep_campaign_slots_issued"), issued);
        let last = metric(&text, "stark_sweep_last_slot_issued_timestamp_seconds").unwrap();
        let last_start = (start + slot * (issued as i32 - 1)).timestamp() as f64;
        assert!((last_start..last_start + 60.0).contains(&last), "the last slot was issued at its start: {last}");
        scrapes += 1;
        w.sandbox.advance_to(t + step).unwrap();
        t += step;
    }
    let snap = w.sandbox.snapshot();
    assert!(settled(&snap), "the campaign did not settle");
    w.run_expect(&["process-events", "--now", &at(t)], 0);
    let text = listener.scrape();
    check_against_the_ledger(&text, &snap, &listener, "at the end");
    promtool_ok(&["check", "metrics"], Some(&text));
    assert!(scrapes >= 24, "{scrapes}");
    let credited = snap.invoices.iter().filter(|i| i.logs.iter().any(|l| l.log_type == "credited")).count();
    assert!(credited >= 16, "a campaign of two slots credits at least 16 invoices, got {credited}");
    assert_eq!(value(&text, "stark_sweep_credits{state=\"transferred\"}"), credited as i64);
    assert_eq!(value(&text, "stark_sweep_transferred_cents"), value(&text, "stark_sweep_credited_net_cents"));
    assert_eq!(value(&text, "stark_sweep_oldest_open_credit_age_seconds"), 0, "nothing is left to sweep");
    assert_eq!(value(&text, "stark_sweep_events_unapplied"), 0);
    assert!(!listener_log(&listener.log).contains("ERROR"), "{}", listener_log(&listener.log));
}

fn listener_log(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
