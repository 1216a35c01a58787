//! Benchmark of `stark-sweep issue-invoices` for one slot (not a test: nothing here asserts a
//! time): start-to-finish wall time and peak RSS of the release binary, the median of
//! `--runs` fresh runs, each with a fresh database, against the emulator running in-process at
//! real time. With `--python PY --python-script bench/python/issue_invoices.py`, the official
//! SDK's one-batch script is timed the same way, runs interleaved with stark-sweep's.
//!
//! Run: `cargo build --release && cargo run --release --example issue_invoices -- [--runs 9]
//!       [--python bench/.venv/bin/python --python-script bench/python/issue_invoices.py]
//!       [--json out.json] [--bin target/release/stark-sweep]`

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use common::{Flags, Measured, World, median, requests_by_kind, run_timed};
use serde_json::json;

fn summary(name: &str, runs: &[Measured], invoices: &[usize]) -> serde_json::Value {
    let wall = median(runs.iter().map(|m| m.wall_s).collect());
    let rss = median(runs.iter().map(|m| m.max_rss_kib as f64).collect());
    let min = runs.iter().map(|m| m.wall_s).fold(f64::INFINITY, f64::min);
    let max = runs.iter().map(|m| m.wall_s).fold(0.0, f64::max);
    println!(
        "{name:<28} median {:.1} ms (min {:.1}, max {:.1}) over {} runs; peak RSS median {:.1} MiB; user+sys median {:.1} ms",
        wall * 1e3,
        min * 1e3,
        max * 1e3,
        runs.len(),
        rss / 1024.0,
        median(runs.iter().map(|m| m.user_s + m.sys_s).collect()) * 1e3
    );
    json!({
        "runs": runs,
        "median_wall_s": wall,
        "min_wall_s": min,
        "max_wall_s": max,
        "median_max_rss_kib": rss,
        "invoices_per_run": invoices,
    })
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse(&[])?;
    let bin = flags.get("bin").map(PathBuf::from).unwrap_or_else(common::default_bin);
    let runs: usize = flags.num("runs", 9)?;
    let python = match (flags.get("python"), flags.get("python-script")) {
        (Some(py), Some(script)) => {
            Some((PathBuf::from(py), std::fs::canonicalize(script).context("--python-script")?))
        }
        _ => None,
    };
    let w = World::start(1.0)?;
    let (mut rust, mut rust_n, mut py, mut py_n) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let dir = w.dir.path().join(format!("run-{i}"));
        std::fs::create_dir(&dir)?;
        let before = w.sandbox.snapshot().invoices.len();
        let m = run_timed(&dir, &bin, &["issue-invoices", "--json"], &w.env(&dir.join("stark-sweep.db"))?)?;
        if m.exit_code != 0 {
            bail!("issue-invoices exited {}:\n{}", m.exit_code, m.stderr);
        }
        let v: serde_json::Value = serde_json::from_str(&m.stdout).context("issue-invoices printed no JSON")?;
        if v["status"] != "issued" {
            bail!("issue-invoices did not issue a slot: {v}");
        }
        rust_n.push(w.sandbox.snapshot().invoices.len() - before);
        rust.push(m);
        if let Some((interp, script)) = &python {
            let before = w.sandbox.snapshot().invoices.len();
            let m = run_timed(&dir, interp, &[&script.display().to_string()], &w.env(Path::new("unused"))?)?;
            if m.exit_code != 0 {
                bail!("{} exited {}:\n{}", script.display(), m.exit_code, m.stderr);
            }
            py_n.push(w.sandbox.snapshot().invoices.len() - before);
            py.push(m);
        }
    }
    let snap = w.sandbox.snapshot();
    println!("one slot against the emulator (in-process, real time), fresh database per run");
    let mut results = json!({"rust": summary("stark-sweep issue-invoices", &rust, &rust_n)});
    if python.is_some() {
        results["python"] = summary("python SDK invoice.create", &py, &py_n);
    }
    let kinds = requests_by_kind(&snap, 0);
    println!("requests at the emulator, all runs: {kinds:?}");
    results["requests"] = json!(kinds);
    common::write_json(&flags, &results)
}
