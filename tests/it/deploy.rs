//! The shipped systemd units verify with `systemd-analyze verify` and run as one declared
//! user; the crontab example's lines are well-formed and run as written; the env example reads
//! the same in stark-sweep and in `sh`; a database that root creates by hand in the service's
//! directory stays the service's. (`real_systemd.rs` runs the units themselves.)

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use stark_sweep::sandbox::{PayOptions, SandboxConfig};

use crate::util::{self, World, at, json, stderr, stdout};

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
    // One declared user for every unit (with DynamicUser= each unit got its own UID and systemd
    // re-owned the shared state directory to whichever started), and the one configuration
    // file, parsed by stark-sweep itself, with the key as a credential that wins over the file.
    let sysusers = std::fs::read_to_string(util::repo().join("systemd/stark-sweep.sysusers.conf")).unwrap();
    let declared: Vec<&str> = sysusers.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
    assert_eq!(declared, [r#"u stark-sweep - "stark-sweep" /var/lib/stark-sweep"#]);
    for unit in names.iter().filter(|n| n.ends_with(".service")) {
        let text = std::fs::read_to_string(dir.path().join(unit)).unwrap();
        let settings: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        for required in [
            "User=stark-sweep",
            "Group=stark-sweep",
            "StateDirectory=stark-sweep",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "LoadCredential=stark-sweep.env:/etc/stark-sweep/stark-sweep.env",
            "LoadCredential=starkbank-private-key:/etc/stark-sweep/private-key.pem",
            "Environment=STARK_SWEEP_ENV_FILE=%d/stark-sweep.env",
            "Environment=STARKBANK_PRIVATE_KEY_PATH=%d/starkbank-private-key",
        ] {
            assert!(settings.contains(&required), "{unit} lacks {required}");
        }
        for banned in ["DynamicUser=", "EnvironmentFile="] {
            assert!(!settings.iter().any(|l| l.starts_with(banned)), "{unit} has {banned}");
        }
    }
    let timer = std::fs::read_to_string(dir.path().join("stark-sweep-invoices.timer")).unwrap();
    // Every 15 minutes: a slot whose run failed is tried again within its 3 hours.
    assert!(timer.contains("OnCalendar=*-*-* *:00/15:00") && timer.contains("Persistent=true"));
    let webhook = std::fs::read_to_string(dir.path().join("stark-sweep-webhook.service")).unwrap();
    assert!(webhook.contains("Restart=always"));
    // `systemctl enable` (README step 6) must have somewhere to link the listener.
    assert!(webhook.contains("[Install]\n") && webhook.contains("WantedBy=multi-user.target"), "{webhook}");
}

#[test]
fn crontab_example_is_well_formed() {
    let text = std::fs::read_to_string(util::repo().join("crontab.example")).unwrap();
    let jobs: Vec<&str> =
        text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.contains('=')).collect();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    for job in &jobs {
        assert_eq!(job.split_whitespace().take(5).count(), 5);
        // Every command reads the units' file with stark-sweep's own parser, never `sh`'s.
        assert_eq!(job.matches("$BIN").count(), job.matches("$BIN --env-file $ENV ").count(), "{job}");
        assert!(job.contains("$BIN --env-file $ENV "), "{job}");
        assert!(!job.contains(". $ENV") && !job.contains("set -a"), "{job}");
    }
    assert!(jobs[0].starts_with("*/15 * * * *") && jobs[0].contains("flock -n") && jobs[0].contains("issue-invoices"));
    assert!(jobs[1].starts_with("* * * * *") && jobs[1].contains("flock -n") && jobs[1].contains("process-events"));
}

/// The env example with its commented `#NAME=value` lines (the defaults shown) uncommented.
fn env_example_uncommented() -> String {
    let text = std::fs::read_to_string(util::repo().join("systemd/stark-sweep.env.example")).unwrap();
    let setting = |l: &str| {
        l.split_once('=').is_some_and(|(n, _)| {
            !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
    };
    text.lines()
        .map(|l| l.strip_prefix('#').filter(|rest| setting(rest)).unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// NAME=value pairs as stark-sweep reads them (dotenvy, the parser behind `--env-file`).
fn dotenv_pairs(text: &str) -> BTreeMap<String, String> {
    dotenvy::from_read_iter(text.as_bytes()).map(|r| r.unwrap_or_else(|e| panic!("not a .env file: {e}"))).collect()
}

/// The variables that `sh` exports after `set -a; . FILE`, from an empty environment.
fn sh_pairs(file: &Path) -> BTreeMap<String, String> {
    let out = Command::new("sh")
        .args(["-c", r#"set -a; . "$1"; exec env -0"#, "sh"])
        .arg(file)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "sh could not source {}: {}", file.display(), stderr(&out));
    out.stdout
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Regression: the example's `#STARK_SWEEP_TARGET_NAME=Stark Bank S.A.`, once uncommented,
/// broke `.env` parsing and the crontab line that sourced the file (`Bank: not found`). Every
/// setting, the commented ones too, must mean the same to stark-sweep and to `sh`, and the
/// binary must run on the file and use what it says.
#[test]
fn env_example_reads_the_same_in_stark_sweep_and_sh() {
    let w = World::new(SandboxConfig { pay_rate: 0.0, time_scale: 3600.0, seed: 6, ..SandboxConfig::default() });
    let text = env_example_uncommented();
    let file = w.dir.path().join("stark-sweep.env");
    std::fs::write(&file, &text).unwrap();
    let names: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('=').unwrap_or_else(|| panic!("not NAME=value: {l}")).0)
        .collect();
    let parsed = dotenv_pairs(&text);
    assert_eq!(parsed.keys().map(String::as_str).collect::<BTreeSet<_>>(), names);
    let sourced = sh_pairs(&file);
    for name in &names {
        assert_eq!(sourced.get(*name), parsed.get(*name), "{name} differs between sh and stark-sweep");
    }
    for (name, value) in [
        ("STARK_SWEEP_TARGET_NAME", "Stark Bank S.A."),
        ("STARKBANK_PRIVATE_KEY_PATH", "/etc/stark-sweep/private-key.pem"),
        ("STARK_SWEEP_DB", "/var/lib/stark-sweep/stark-sweep.db"),
    ] {
        assert_eq!(parsed.get(name).map(String::as_str), Some(value), "{name}");
    }

    // The binary on the file: the environment (the emulator's project, key, URL, database and
    // workspace) wins; everything else, log format and target included, comes from the file.
    let with_file = |args: &[&str]| {
        let mut c = w.cmd(&[&["--env-file", file.to_str().unwrap()], args].concat());
        c.env("STARKBANK_WORKSPACE_ID", w.sandbox.workspace_id());
        c.output().unwrap()
    };
    let out = with_file(&["issue-invoices", "--json", "--now", &at(w.sandbox.now())]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let logs: Vec<&str> = std::str::from_utf8(&out.stderr).unwrap().lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!logs.is_empty(), "no log lines");
    for line in logs {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("STARK_SWEEP_LOG_FORMAT=json from the file, yet ({e}): {line}"));
    }
    let invoices = json(&out)["invoices"].as_array().unwrap().clone();
    let number = |name: &str| parsed[name].parse::<i64>().unwrap();
    assert!(
        (number("STARK_SWEEP_INVOICES_MIN")..=number("STARK_SWEEP_INVOICES_MAX")).contains(&(invoices.len() as i64))
    );
    let first = invoices[0]["invoiceId"].as_str().unwrap().to_string();
    w.sandbox.pay_invoice(&first, PayOptions::default()).unwrap();
    let mut sent = None;
    for _ in 0..100 {
        let out = with_file(&["process-events"]);
        assert!(matches!(out.status.code(), Some(0 | 75)), "{}", stderr(&out));
        sent = w.sandbox.snapshot().transfers.into_iter().find(|t| t.tags.contains(&format!("invoice-{first}")));
        if sent.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let sent = sent.expect("no transfer for the paid invoice");
    for (name, got) in [
        ("STARK_SWEEP_TARGET_BANK_CODE", &sent.bank_code),
        ("STARK_SWEEP_TARGET_BRANCH", &sent.branch_code),
        ("STARK_SWEEP_TARGET_ACCOUNT", &sent.account_number),
        ("STARK_SWEEP_TARGET_NAME", &sent.name),
        ("STARK_SWEEP_TARGET_TAX_ID", &sent.tax_id),
        ("STARK_SWEEP_TARGET_ACCOUNT_TYPE", &sent.account_type),
    ] {
        assert_eq!(got, &parsed[name], "{name}");
    }
}

/// The crontab's three jobs, run as cron runs them (its variables, `SHELL`, an empty
/// environment), against the emulator: the configuration reaches every command through
/// `--env-file $ENV` alone.
#[test]
fn crontab_jobs_run_as_written() {
    let w = World::new(SandboxConfig { pay_rate: 0.0, seed: 7, ..SandboxConfig::default() });
    let text = std::fs::read_to_string(util::repo().join("crontab.example")).unwrap();
    let mut vars: BTreeMap<String, String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(' '))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase()))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // The same file and binary as the units.
    assert_eq!(vars["ENV"], "/etc/stark-sweep/stark-sweep.env");
    assert_eq!(vars["BIN"], "/usr/local/bin/stark-sweep");
    let state = w.dir.path().join("state");
    let home = w.dir.path().join("home");
    std::fs::create_dir(&state).unwrap();
    std::fs::create_dir(&home).unwrap();
    let env_file = w.dir.path().join("stark-sweep.env");
    let mut conf = String::new();
    for line in std::fs::read_to_string(util::repo().join("systemd/stark-sweep.env.example")).unwrap().lines() {
        let line = match line.split_once('=').map(|(k, _)| k) {
            Some("STARKBANK_PROJECT_ID") => format!("STARKBANK_PROJECT_ID={}", w.sandbox.project_id()),
            Some("STARKBANK_PRIVATE_KEY_PATH") => {
                format!("STARKBANK_PRIVATE_KEY_PATH={}", w.sandbox.private_key_path().unwrap().display())
            }
            Some("STARK_SWEEP_DB") => format!("STARK_SWEEP_DB={}", state.join("stark-sweep.db").display()),
            _ => line.to_string(),
        };
        conf.push_str(&line);
        conf.push('\n');
    }
    conf.push_str(&format!("STARKBANK_API_URL={}\nSTARK_SWEEP_HTTP_TIMEOUT=10\n", w.sandbox.url()));
    std::fs::write(&env_file, conf).unwrap();
    let log = w.dir.path().join("stark-sweep.log");
    vars.insert("ENV".into(), env_file.display().to_string());
    vars.insert("BIN".into(), util::bin().display().to_string());
    vars.insert("LOG".into(), log.display().to_string());
    let jobs: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.contains('='))
        .map(|l| {
            // The command is what follows the five time fields.
            let mut rest = l.trim_start();
            for _ in 0..5 {
                rest = rest[rest.find(char::is_whitespace).unwrap()..].trim_start();
            }
            rest.replace("/var/lib/stark-sweep/", &format!("{}/", state.display()))
        })
        .collect();
    assert_eq!(jobs.len(), 3);
    let cron = |job: &str| {
        Command::new(&vars["SHELL"])
            .arg("-c")
            .arg(job)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(&vars)
            .current_dir(&home)
            .output()
            .unwrap()
    };
    let issue = cron(&jobs[0]);
    assert!(
        issue.status.success(),
        "{}: {}{}",
        jobs[0],
        stderr(&issue),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let issued = w.sandbox.snapshot().invoices.len();
    assert!((8..=12).contains(&issued), "{issued} invoices; log:\n{}", std::fs::read_to_string(&log).unwrap());
    let process = cron(&jobs[1]);
    assert!(process.status.success(), "{}: {}", jobs[1], std::fs::read_to_string(&log).unwrap());
    // The alert job prints (to cron's mail) only when status fails.
    let status = cron(&jobs[2]);
    assert!(
        status.status.success() && status.stdout.is_empty() && status.stderr.is_empty(),
        "{}: {}{}",
        jobs[2],
        stdout(&status),
        stderr(&status)
    );
    assert!(std::fs::metadata(&log).unwrap().len() > 0, "nothing appended to $LOG");
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
