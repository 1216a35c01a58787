//! The shipped systemd units verify with `systemd-analyze verify`, and the crontab example's
//! lines are well-formed and use flock and the environment file.

use crate::util;

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
