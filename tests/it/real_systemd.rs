//! The shipped units in a real systemd. `systemd-ns` (`../shared/tools/`, or `$SYSTEMD_NS`)
//! boots a throwaway systemd as PID 1 of its own namespaces; it shares this machine's file
//! system and network. The test follows the README's operator path on this machine (the
//! binary in /usr/local/bin, /etc/stark-sweep, the user from the sysusers file, the units from
//! systemd/ unchanged, `--env-file` for commands by hand), with the configuration pointed at
//! the emulator on loopback, and checks that all units run as the one user `stark-sweep`: a
//! delivered credit is stored and transferred, the listener keeps storing new events after the
//! process service has started several times, and every file of the state directory stays that
//! user's (with `DynamicUser=`, each unit had its own UID and each start re-owned the directory,
//! so another unit then could not write there).
//!
//! It installs into fixed system paths, so it refuses a machine that has a stark-sweep of its
//! own there, holds a host-wide lock against a concurrent run, and removes everything it
//! installed (the user stays) and stops its systemd even when it fails. Needs root;
//! `scripts/test` runs it.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use stark_sweep::sandbox::{PayOptions, Sandbox, SandboxConfig};

use crate::util::{self, stderr, stdout};

const BIN: &str = "/usr/local/bin/stark-sweep";
const ETC: &str = "/etc/stark-sweep";
const ENV_FILE: &str = "/etc/stark-sweep/stark-sweep.env";
const STATE: &str = "/var/lib/stark-sweep";
const DB: &str = "/var/lib/stark-sweep/stark-sweep.db";
const PRIVATE_STATE: &str = "/var/lib/private/stark-sweep";
const UNIT_DIR: &str = "/etc/systemd/system";
const SYSUSERS: &str = "/etc/sysusers.d/stark-sweep.conf";
/// Left in /etc/stark-sweep while the test owns it, so a killed run's leftovers are recognised.
const MARKER: &str = "/etc/stark-sweep/.installed-by-the-stark-sweep-systemd-test";
/// Serialises runs on this machine (other worktrees run the same test into the same paths).
const HOST_LOCK: &str = "/run/lock/stark-sweep-systemd-test.lock";
const UNITS: [&str; 5] = [
    "stark-sweep-invoices.service",
    "stark-sweep-invoices.timer",
    "stark-sweep-process.service",
    "stark-sweep-process.timer",
    "stark-sweep-webhook.service",
];
/// Where `systemctl enable` links the units (and where a timer keeps its last-run stamp).
const ENABLED: [&str; 3] = [
    "/etc/systemd/system/multi-user.target.wants/stark-sweep-webhook.service",
    "/etc/systemd/system/timers.target.wants/stark-sweep-invoices.timer",
    "/etc/systemd/system/timers.target.wants/stark-sweep-process.timer",
];
const STAMPS: [&str; 2] = [
    "/var/lib/systemd/timers/stamp-stark-sweep-invoices.timer",
    "/var/lib/systemd/timers/stamp-stark-sweep-process.timer",
];

fn systemd_ns() -> PathBuf {
    if let Some(p) = std::env::var_os("SYSTEMD_NS") {
        return PathBuf::from(p);
    }
    let beside = util::repo().join("../shared/tools/systemd-ns");
    if beside.exists() { beside } else { PathBuf::from("/work/shared/tools/systemd-ns") }
}

fn run(c: &mut Command) -> Output {
    c.output().unwrap_or_else(|e| panic!("running {c:?}: {e}"))
}

/// Runs and asserts exit 0, showing the output otherwise.
fn ok(c: &mut Command) -> Output {
    let out = run(c);
    assert!(out.status.success(), "{c:?}: {}\n--- stdout\n{}\n--- stderr\n{}", out.status, stdout(&out), stderr(&out));
    out
}

fn sh(script: &str) -> Output {
    ok(Command::new("sh").arg("-c").arg(script).current_dir(util::repo()))
}

/// The installed binary as an operator runs it by hand: as root, from `/`, nothing inherited.
fn by_hand(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir("/").args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("STARK") || k == "STATE_DIRECTORY" || k == "CREDENTIALS_DIRECTORY" {
            c.env_remove(k);
        }
    }
    c
}

/// A throwaway systemd with a PID file (and log) of its own, so runs never share one.
struct Machine {
    tool: PathBuf,
    pidfile: String,
    log: String,
}

impl Machine {
    fn start() -> Machine {
        let tag = format!("stark-sweep-test-{}", std::process::id());
        let m = Machine { tool: systemd_ns(), pidfile: format!("/run/{tag}.pid"), log: format!("/run/{tag}.log") };
        assert!(m.tool.exists(), "{} not found: set SYSTEMD_NS to the systemd-ns tool", m.tool.display());
        ok(&mut m.tool_cmd("start"));
        m
    }

    fn tool_cmd(&self, verb: &str) -> Command {
        let mut c = Command::new(&self.tool);
        c.arg(verb).env("SYSTEMD_NS_PIDFILE", &self.pidfile).env("SYSTEMD_NS_LOG", &self.log);
        c
    }

    fn systemctl(&self, args: &[&str]) -> Output {
        run(self.tool_cmd("run").arg("systemctl").args(args))
    }

    fn journal(&self) -> String {
        let out = run(self.tool_cmd("run").args(["journalctl", "--no-pager", "-o", "cat", "-u", "stark-sweep-*"]));
        stdout(&out)
    }

    /// `systemctl ARGS` must succeed; on failure, the units' journal is shown.
    fn must(&self, args: &[&str]) -> Output {
        let out = self.systemctl(args);
        assert!(
            out.status.success(),
            "systemctl {args:?}: {}\n{}{}\n--- journal\n{}",
            out.status,
            stdout(&out),
            stderr(&out),
            self.journal()
        );
        out
    }

    fn show(&self, unit: &str, property: &str) -> String {
        stdout(&self.must(&["show", "-p", property, "--value", unit])).trim().to_string()
    }

    /// Polls `f` (every 200 ms, up to 90 s); the deadline only bounds a hung test.
    fn wait(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !f() {
            assert!(Instant::now() < deadline, "gave up waiting for {what}\n--- journal\n{}", self.journal());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(&self) {
        let _ = self.tool_cmd("stop").output();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Everything the test puts on this machine, removed on drop (pass or fail); the user stays.
struct Installed;

impl Installed {
    /// Refuses a machine with a stark-sweep installation that is not a leftover of this test.
    fn claim() -> Installed {
        let ours = Path::new(MARKER).exists();
        let theirs: Vec<String> = [BIN, ETC, STATE, PRIVATE_STATE, SYSUSERS]
            .into_iter()
            .map(String::from)
            .chain(UNITS.iter().map(|u| format!("{UNIT_DIR}/{u}")))
            .filter(|p| Path::new(p).exists())
            .collect();
        assert!(
            ours || theirs.is_empty(),
            "this machine has stark-sweep installed ({theirs:?}); the systemd test would overwrite it"
        );
        Installed::remove_all();
        Installed
    }

    fn remove_all() {
        for unit in UNITS {
            let _ = std::fs::remove_file(format!("{UNIT_DIR}/{unit}"));
        }
        for link in ENABLED.iter().chain(STAMPS.iter()) {
            let _ = std::fs::remove_file(link);
        }
        let _ = std::fs::remove_file(BIN);
        let _ = std::fs::remove_file(SYSUSERS);
        // Only when empty (`install -D` may have made it).
        let _ = std::fs::remove_dir("/etc/sysusers.d");
        let _ = std::fs::remove_dir_all(STATE);
        // Where systemd keeps the state of units with DynamicUser= (/var/lib/stark-sweep is then a
        // link to it): only units other than the shipped ones make it.
        let _ = std::fs::remove_dir_all(PRIVATE_STATE);
        // Last: the marker goes with it.
        let _ = std::fs::remove_dir_all(ETC);
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        Installed::remove_all();
    }
}

/// The shipped example as the operator edits it: the project id, the listener's port, the
/// emulator's URL, and the target lines uncommented (the quoted "Stark Bank S.A." included).
fn configuration(sandbox: &Sandbox, listen: &str) -> String {
    let example = std::fs::read_to_string(util::repo().join("systemd/stark-sweep.env.example")).unwrap();
    let mut text = String::new();
    let mut replaced = 0;
    for line in example.lines() {
        let line = if line.starts_with("STARKBANK_PROJECT_ID=") {
            replaced += 1;
            format!("STARKBANK_PROJECT_ID={}", sandbox.project_id())
        } else if line.starts_with("STARK_SWEEP_LISTEN=") {
            replaced += 1;
            format!("STARK_SWEEP_LISTEN={listen}")
        } else if let Some(target) = line.strip_prefix("#STARK_SWEEP_TARGET_") {
            format!("STARK_SWEEP_TARGET_{target}")
        } else {
            line.to_string()
        };
        text.push_str(&line);
        text.push('\n');
    }
    assert_eq!(replaced, 2, "the example lost its project id or listen line");
    for required in [&format!("STARKBANK_PRIVATE_KEY_PATH={ETC}/private-key.pem"), &format!("STARK_SWEEP_DB={DB}")] {
        assert!(text.lines().any(|l| l == required.as_str()), "the example lacks {required}");
    }
    text.push_str(&format!("STARKBANK_API_URL={}\n", sandbox.url()));
    text
}

fn uid_of(user: &str) -> u32 {
    let out = ok(Command::new("id").args(["-u", user]));
    stdout(&out).trim().parse().unwrap()
}

/// Every file in the state directory, and the directory, belong to `uid`.
fn assert_all_owned_by(uid: u32, when: &str) {
    assert_eq!(std::fs::metadata(STATE).unwrap().uid(), uid, "{STATE} owner {when}");
    for entry in std::fs::read_dir(STATE).unwrap() {
        let entry = entry.unwrap();
        let owner = entry.metadata().unwrap().uid();
        assert_eq!(owner, uid, "{} is owned by uid {owner} {when}", entry.path().display());
    }
}

fn status_json() -> serde_json::Value {
    let out = ok(&mut by_hand(&["--env-file", ENV_FILE, "status", "--json"]));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json ({e}): {}", stdout(&out)))
}

/// The event that says invoice `id` was credited, once the emulator has made it.
fn credited_event(sandbox: &Sandbox, id: &str) -> Option<String> {
    let snap = sandbox.snapshot();
    let log_id = snap.invoices.iter().find(|i| i.id == id)?.logs.iter().find(|l| l.log_type == "credited")?.id.clone();
    snap.events.iter().find(|e| e.log_id == log_id).map(|e| e.id.clone())
}

/// The listener answered 200 to the delivery of `event` (it answers only after committing).
fn delivered(sandbox: &Sandbox, event: &str) -> bool {
    sandbox.snapshot().deliveries.iter().any(|d| d.event_id == event && d.http_status == Some(200))
}

fn transferred(sandbox: &Sandbox, invoice: &str) -> Vec<stark_sweep::sandbox::SnapTransfer> {
    let tag = format!("invoice-{invoice}");
    sandbox.snapshot().transfers.into_iter().filter(|t| t.tags.contains(&tag)).collect()
}

fn stored(event: &str) -> bool {
    stark_sweep::store::Store::open(Path::new(DB)).unwrap().event_exists(event).unwrap()
}

#[test]
#[ignore = "needs root and a real systemd: scripts/test runs it"]
fn units_run_as_one_user_in_a_real_systemd() {
    let started = Instant::now();
    let host_lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(HOST_LOCK).unwrap();
    host_lock.lock().unwrap();
    let installed = Installed::claim();

    // 1. The binary, the key directory (0700 root) and the key.
    ok(Command::new("install").args(["-m", "0755"]).arg(util::bin()).arg(BIN));
    ok(Command::new("install").args(["-d", "-m", "0700", ETC]));
    std::fs::write(MARKER, "").unwrap();
    ok(&mut by_hand(&["keygen", "--out", ETC]));
    // 2. The "project": the emulator on loopback, with the public key of that private key.
    let sandbox = Sandbox::start(SandboxConfig {
        key_dir: Some(PathBuf::from(ETC)),
        pay_rate: 0.0,
        credit_delay: Duration::from_secs(0),
        transfer_step: Duration::from_secs(1),
        seed: 15,
        ..SandboxConfig::default()
    })
    .unwrap();
    // 3. The configuration, 0600 root.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    sh("install -m 0600 systemd/stark-sweep.env.example /etc/stark-sweep/stark-sweep.env");
    std::fs::write(ENV_FILE, configuration(&sandbox, &format!("127.0.0.1:{port}"))).unwrap();
    assert_eq!(std::fs::metadata(ENV_FILE).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(ETC).unwrap().permissions().mode() & 0o777, 0o700);
    // (4, the TLS proxy in front, is tested in serve_webhook.rs; here the emulator delivers to
    // the listener on loopback.) 5. The webhook, registered by hand with the units' configuration.
    let hook = format!("http://127.0.0.1:{port}/webhook");
    ok(&mut by_hand(&["--env-file", ENV_FILE, "webhook", "register", "--url", &hook]));
    // 6. The user, the units, and systemd.
    sh(
        "install -D -m 0644 systemd/stark-sweep.sysusers.conf /etc/sysusers.d/stark-sweep.conf && systemd-sysusers stark-sweep.conf",
    );
    let uid = uid_of("stark-sweep");
    sh("install -m 0644 systemd/*.service systemd/*.timer /etc/systemd/system/");
    let m = Machine::start();
    m.must(&["daemon-reload"]);
    let enable = m.must(&[
        "enable",
        "--now",
        "stark-sweep-webhook.service",
        "stark-sweep-invoices.timer",
        "stark-sweep-process.timer",
    ]);
    assert!(!stderr(&enable).contains("no installation config"), "{}", stderr(&enable));
    for link in ENABLED {
        assert!(Path::new(link).exists(), "`systemctl enable` did not link {link}");
    }
    m.wait("the listener", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    for timer in ["stark-sweep-invoices.timer", "stark-sweep-process.timer"] {
        assert_eq!(m.show(timer, "ActiveState"), "active", "{timer}");
    }

    // The invoices timer's service issues the first slot; status by hand sees it.
    m.must(&["start", "stark-sweep-invoices.service"]);
    let v = status_json();
    let invoices: Vec<String> = sandbox.snapshot().invoices.iter().map(|i| i.id.clone()).collect();
    assert!((8..=12).contains(&invoices.len()), "{} invoices issued\n--- journal\n{}", invoices.len(), m.journal());
    assert_eq!(v["invoices"]["issued"], invoices.len(), "status by hand: {v}");

    // A credit delivered to the listener is stored and transferred (`serve-webhook --process`).
    sandbox.pay_invoice(&invoices[0], PayOptions::default()).unwrap();
    let mut first = None;
    m.wait("the first credit's event", || {
        first = credited_event(&sandbox, &invoices[0]);
        first.is_some()
    });
    let first = first.unwrap();
    m.wait("the listener to store the first credit", || delivered(&sandbox, &first));
    assert!(stored(&first), "the listener answered 200 but the event is not in {DB}");
    m.wait("the first transfer", || transferred(&sandbox, &invoices[0]).iter().any(|t| t.status == "success"));

    // The process service starts several times while the listener runs.
    for _ in 0..3 {
        m.must(&["start", "stark-sweep-process.service"]);
        assert_eq!(m.show("stark-sweep-process.service", "Result"), "success");
    }
    assert_all_owned_by(uid, "after the process service ran");

    // The listener still stores new events and transfers their credits.
    for id in &invoices[1..3] {
        sandbox.pay_invoice(id, PayOptions::default()).unwrap();
    }
    for id in &invoices[1..3] {
        let mut event = None;
        m.wait("a later credit's event", || {
            event = credited_event(&sandbox, id);
            event.is_some()
        });
        let event = event.unwrap();
        m.wait("the listener to store a later credit", || delivered(&sandbox, &event));
        assert!(stored(&event), "the listener answered 200 but the event is not in {DB}");
        m.wait("a later transfer", || transferred(&sandbox, id).iter().any(|t| t.status == "success"));
    }
    assert_eq!(m.show("stark-sweep-webhook.service", "ActiveState"), "active");
    assert_eq!(m.show("stark-sweep-webhook.service", "NRestarts"), "0", "the listener restarted");
    for unit in ["stark-sweep-webhook.service", "stark-sweep-invoices.service", "stark-sweep-process.service"] {
        assert_eq!(m.show(unit, "User"), "stark-sweep", "{unit}");
    }
    let mut net = 0;
    for id in &invoices[..3] {
        let t = transferred(&sandbox, id);
        let inv = sandbox.snapshot().invoices.into_iter().find(|i| &i.id == id).unwrap();
        assert_eq!(t.len(), 1, "invoice {id}: {t:?}");
        assert_eq!(t[0].amount, inv.amount - inv.fee, "invoice {id}");
        assert_eq!(t[0].name, "Stark Bank S.A.", "the quoted target name, as the units parsed it");
        net += t[0].amount;
    }

    // Every event (the transfers' own too) reached the listener; the process service applies
    // the stored ones. By hand, root sees what the units did, and leaves nothing the service
    // cannot open.
    m.wait("every event delivered", || sandbox.snapshot().events.iter().all(|e| e.is_delivered));
    m.must(&["start", "stark-sweep-process.service"]);
    let v = status_json();
    assert_eq!(v["credits"]["count"], 3, "{v}");
    assert_eq!(v["transfers"]["transferred"], net, "{v}");
    assert_eq!(v["needsAttention"], 0, "{v}");
    assert_eq!(v["discrepancies"], serde_json::json!([]), "{v}");
    ok(&mut by_hand(&["--env-file", ENV_FILE, "process-events"]));
    m.must(&["start", "stark-sweep-process.service"]);
    assert_all_owned_by(uid, "after commands run by hand as root");
    // The services' journal carries no failure of ours.
    let journal = m.journal();
    assert!(!journal.contains("Permission denied") && !journal.contains("readonly database"), "{journal}");

    drop(m);
    drop(installed);
    eprintln!("real systemd test: {:.1} s", started.elapsed().as_secs_f64());
}
