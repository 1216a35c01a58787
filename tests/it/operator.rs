//! The operator's path, word for word: directories the operator names are created, a bad value
//! from the environment or the env file is one line naming the variable (exit 78) while a bad
//! flag keeps clap's usage (exit 2), each subcommand's help shows only what it uses, `status`
//! before any campaign is not a failure, and counts read right.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;

use crate::util::{cmd, stderr, stdout};

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = cmd(dir);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn one_line_78(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("stark-sweep: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected `{n}` in: {err}");
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_and_sandbox_create_the_key_directory_they_are_given() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["keygen", "--out", "etc/stark-sweep"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let keys = dir.path().join("etc/stark-sweep");
    assert_eq!(mode(&keys), 0o700, "a key directory is private");
    assert_eq!(mode(&keys.join("private-key.pem")), 0o600);
    // An existing directory keeps its mode.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(run(dir.path(), &["keygen", "--out", "open"], &[]).status.code(), Some(0));
    assert_eq!(mode(&open), 0o755);

    // The README's own example: `sandbox --key-dir ./sandbox-keys`, on a port that is taken
    // first (nothing may be written), then on a free one.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(dir.path(), &["sandbox", "--key-dir", "./sandbox-keys", "--listen", &addr], &[]);
    assert_ne!(out.status.code(), Some(0), "the port is taken");
    assert!(!dir.path().join("sandbox-keys").exists(), "nothing written before the command can succeed");
    drop(taken);
    let mut child = cmd(dir.path())
        .args(["sandbox", "--key-dir", "./sandbox-keys", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let key = dir.path().join("sandbox-keys/private-key.pem");
    crate::util::wait_for("the sandbox's key", || key.exists());
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(mode(&dir.path().join("sandbox-keys")), 0o700);
}

#[test]
fn bad_values_from_the_environment_or_env_file_are_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("x.db");
    let db = db.to_str().unwrap();
    let out = run(d, &["issue-invoices", "--dry-run", "--db", db], &[("STARKBANK_ENVIRONMENT", "prod")]);
    one_line_78(&out, &["STARKBANK_ENVIRONMENT=`prod`", "--environment", "sandbox, production"]);
    let out = run(d, &["issue-invoices", "--dry-run", "--db", db], &[("STARK_SWEEP_INVOICES_MIN", "abc")]);
    one_line_78(&out, &["STARK_SWEEP_INVOICES_MIN=`abc`", "--invoices-min"]);
    let out = run(d, &["process-events", "--dry-run", "--db", db], &[("STARK_SWEEP_NO_RECONCILE", "maybe")]);
    one_line_78(&out, &["STARK_SWEEP_NO_RECONCILE=`maybe`", "--no-reconcile"]);
    // The same from ./.env.
    std::fs::write(d.join(".env"), "STARK_SWEEP_INVOICES_MAX=lots\n").unwrap();
    let out = run(d, &["issue-invoices", "--dry-run", "--db", db], &[]);
    one_line_78(&out, &["STARK_SWEEP_INVOICES_MAX=`lots`", "--invoices-max"]);
    std::fs::remove_file(d.join(".env")).unwrap();
    // A switch's environment twin reads 1/0, yes/no, on/off.
    for yes in ["1", "yes", "on", "true"] {
        let out = run(d, &["process-events", "--dry-run", "--db", db], &[("STARK_SWEEP_NO_RECONCILE", yes)]);
        assert_eq!(out.status.code(), Some(0), "STARK_SWEEP_NO_RECONCILE={yes}: {}", stderr(&out));
    }
    // Typed on the command line: clap's usage message and exit 2, as for any wrong flag.
    let out = run(d, &["issue-invoices", "--dry-run", "--db", db, "--invoices-min", "abc"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("Usage") || stderr(&out).contains("--help"), "{}", stderr(&out));
    let out = run(
        d,
        &["issue-invoices", "--dry-run", "--db", db, "--invoices-min=abc"],
        &[("STARK_SWEEP_INVOICES_MIN", "9")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn each_subcommand_shows_only_the_options_it_uses() {
    let dir = tempfile::tempdir().unwrap();
    let help = |args: &[&str]| {
        let out = run(dir.path(), args, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out)
    };
    let top = help(&["--help"]);
    for code in ["Exit codes:", "  3 ", "  75 ", "  78 "] {
        assert!(top.contains(code), "top-level help lists the exit codes: {top}");
    }
    let keygen = help(&["keygen", "--help"]);
    for absent in ["--db", "--now", "--api-url", "--project-id"] {
        assert!(!keygen.contains(absent), "keygen --help shows {absent}:\n{keygen}");
    }
    let status = help(&["status", "--help"]);
    assert!(status.contains("--db"), "{status}");
    for absent in ["--project-id", "--api-url", "--private-key"] {
        assert!(!status.contains(absent), "status --help shows {absent}:\n{status}");
    }
    let sandbox = help(&["sandbox", "--help"]);
    for absent in ["--project-id", "--db", "DUPLICATE_EXTERNAL_ID_CODE"] {
        assert!(!sandbox.contains(absent), "sandbox --help shows {absent}:\n{sandbox}");
    }
    assert!(sandbox.contains("Emulator faults:"), "{sandbox}");
    // A flag a subcommand does not take is refused, not silently ignored.
    let out = run(dir.path(), &["sandbox", "--project-id", "X"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let process = help(&["process-events", "--help"]);
    for heading in ["Transfers:", "Transfer target:", "Stark Bank API:", "State:", "Configuration and logging:"] {
        assert!(process.contains(heading), "process-events --help lacks {heading}:\n{process}");
    }
    let before = process.find("Options:").unwrap();
    let api = process.find("Stark Bank API:").unwrap();
    assert!(process[before..api].contains("--dry-run"), "its own options come first, under Options:\n{process}");
    let webhook = help(&["webhook", "register", "--help"]);
    assert!(webhook.contains("--project-id") && !webhook.contains("--db"), "{webhook}");
}

#[test]
fn status_before_any_campaign_says_so_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["status"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("no campaign yet"), "{}", stdout(&out));
    assert!(stdout(&out).contains("stark-sweep.db"), "names the file it looked for: {}", stdout(&out));
    let out = run(dir.path(), &["status", "--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["campaign"].is_null(), v["needsAttention"].as_bool()), (true, Some(false)), "{v}");
    assert!(!dir.path().join("stark-sweep.db").exists(), "status creates nothing");
}
