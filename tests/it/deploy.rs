//! The shipped systemd units verify with `systemd-analyze verify`, and the crontab example's
//! lines are well-formed and use flock and the environment file; a database that root creates
//! by hand in the service's directory stays the service's.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;

use stark_sweep::sandbox::{PayOptions, SandboxConfig};

use crate::util::{self, World, at, json, stderr};

#[test]
fn systemd_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    let bin = util::bin();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(util::repo().join("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        // systemd-analyze checks that ExecStart exists: point it at the binary under test.
        let text =
            std::fs::read_to_string(&path).unwrap().replace("/usr/local/bin/stark-sweep", &bin.to_string_lossy());
        std::fs::write(dir.path().join(&name), text).unwrap();
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "stark-sweep-invoices.service",
            "stark-sweep-invoices.timer",
            "stark-sweep-process.service",
            "stark-sweep-process.timer",
            "stark-sweep-webhook.service"
        ]
    );
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(names.iter().map(|n| dir.path().join(n)))
        .output()
        .expect("systemd-analyze is required (scripts/test installs the systemd package)");
    assert!(out.status.success(), "systemd-analyze verify failed:\n{}", util::stderr(&out));
    assert_eq!(util::stderr(&out).trim(), "", "systemd-analyze printed warnings");
    for unit in names.iter().filter(|n| n.ends_with(".service")) {
        let text = std::fs::read_to_string(dir.path().join(unit)).unwrap();
        for required in [
            "DynamicUser=yes",
            "StateDirectory=stark-sweep",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "LoadCredential=starkbank-private-key:",
        ] {
            assert!(text.contains(required), "{unit} lacks {required}");
        }
    }
    let timer = std::fs::read_to_string(dir.path().join("stark-sweep-invoices.timer")).unwrap();
    // Every 15 minutes: a slot whose run failed is tried again within its 3 hours.
    assert!(timer.contains("OnCalendar=*-*-* *:00/15:00") && timer.contains("Persistent=true"));
    let webhook = std::fs::read_to_string(dir.path().join("stark-sweep-webhook.service")).unwrap();
    assert!(webhook.contains("Restart=always"));
}

#[test]
fn crontab_example_is_well_formed() {
    let text = std::fs::read_to_string(util::repo().join("crontab.example")).unwrap();
    let jobs: Vec<&str> =
        text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.contains('=')).collect();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    for job in &jobs {
        assert_eq!(job.split_whitespace().take(5).count(), 5);
        assert!(job.contains(". $ENV"), "{job}");
    }
    assert!(jobs[0].starts_with("*/15 * * * *") && jobs[0].contains("flock -n") && jobs[0].contains("issue-invoices"));
    assert!(jobs[1].starts_with("* * * * *") && jobs[1].contains("flock -n") && jobs[1].contains("process-events"));
}

/// Regression guard for commands run by hand as root with `--env-file` (README): a
/// database, or a lock file, that root creates in the service user's state directory is that
/// user's, so the units can still open it; before, it stayed root's, mode 0600.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn files_root_creates_in_the_state_directory_belong_to_its_owner() {
    const NOBODY: u32 = 65534;
    let w = World::new(SandboxConfig { pay_rate: 0.0, time_scale: 3600.0, seed: 8, ..SandboxConfig::default() });
    assert_eq!(std::fs::metadata("/proc/self").unwrap().uid(), 0, "this test needs root");
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let state = w.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    let key = state.join("private-key.pem");
    std::fs::copy(w.sandbox.private_key_path().unwrap(), &key).unwrap();
    std::os::unix::fs::chown(&key, Some(NOBODY), Some(NOBODY)).unwrap();
    let db = state.join("stark-sweep.db");
    let run = |args: &[&str], as_nobody: bool| {
        let mut c = w.cmd(args);
        c.env("STARK_SWEEP_DB", &db).env("STARKBANK_PRIVATE_KEY_PATH", &key);
        if as_nobody {
            c.uid(NOBODY).gid(NOBODY);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?} (as nobody: {as_nobody}): {}", stderr(&out));
        out
    };

    // Root, by hand, in the service's directory: the first slot, and a sweep.
    let v = json(&run(&["issue-invoices", "--json", "--now", &at(w.sandbox.now())], false));
    run(&["process-events"], false);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&state).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        assert_eq!(entry.metadata().unwrap().uid(), NOBODY, "{name} is not the directory owner's");
        names.push(name);
    }
    for made in ["stark-sweep.db", "stark-sweep.db.issue-invoices.lock", "stark-sweep.db.sweep.lock"] {
        assert!(names.iter().any(|n| n == made), "{made} not made: {names:?}");
    }

    // The directory's owner carries on: both locks, and a write (a credit pulled and swept).
    let first = v["invoices"][0]["invoiceId"].as_str().unwrap().to_string();
    w.sandbox.pay_invoice(&first, PayOptions::default()).unwrap();
    run(&["issue-invoices", "--now", &at(w.sandbox.now())], true);
    let mut sent = false;
    for _ in 0..100 {
        run(&["process-events"], true);
        sent = w.sandbox.snapshot().transfers.iter().any(|t| t.tags.contains(&format!("invoice-{first}")));
        if sent {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(sent, "the service user's process-events sent nothing");
}
