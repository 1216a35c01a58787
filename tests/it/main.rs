//! The integration tests: one binary, one module per area. They run the real `stark-sweep`
//! executable in fresh temp dirs against the real emulator on port 0, real SQLite files and
//! the official Python SDK (from the venv that `scripts/test` creates).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is the failed assertion")]

mod util;

mod chaos;
mod cli_config;
mod conformance;
mod defence;
mod demo;
mod deploy;
mod history;
mod issue_invoices;
mod listeners;
mod monitoring;
mod operator;
mod postgres;
mod process_events;
mod properties;
mod real_systemd;
mod recovery;
mod sandbox;
mod serve_webhook;
mod trace;
mod trust;
mod vectors;
