//! Shared test helpers: the binary, temp dirs, the Python oracle.

#![allow(dead_code, reason = "each test module uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `stark-sweep` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stark-sweep"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

/// A command for the binary with a clean environment (no inherited STARK*/`.env` surprises),
/// running in `dir`.
pub fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("STARK") || k == "STATE_DIRECTORY" || k == "CREDENTIALS_DIRECTORY" {
            c.env_remove(k);
        }
    }
    c
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The venv's Python with the pinned official SDK. Tests fail (never skip) without it.
pub fn python() -> PathBuf {
    let p =
        std::env::var_os("STARK_SWEEP_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "{} not found: the conformance tests need the official SDK; run `scripts/test` (it creates the venv) or set STARK_SWEEP_PYTHON",
        p.display()
    );
    p
}

/// Runs `tests/python/<script>` with args; panics with its output unless it exits 0.
pub fn run_python(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut c = Command::new(python());
    c.arg(repo().join("tests/python").join(script)).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("running python");
    assert!(
        out.status.success(),
        "{script} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}
