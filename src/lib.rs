//! stark-sweep: issues Stark Bank invoices on a 24-hour campaign and sweeps every credited
//! invoice (amount - fee) to a target account, exactly once. See ARCHITECTURE.md.

pub mod campaign; // the slot calendar and invoice tags
pub mod cli; // clap types only
pub mod clock; // the business clock (--now for drills)
pub mod cmd; // one run() per subcommand
pub mod env_file; // --env-file / ./.env, read before clap, below the environment
pub mod error; // exit codes and one-line errors
pub mod files; // private files (0600) and directories (0700)
pub mod httpd; // the HTTP/1.1 server under both listeners (hyper)
pub mod issue; // the invoice step: each slot's batch, exactly once
pub mod listener; // the inbound webhook listener: bounded reads -> verify -> group commit -> answer
pub mod logging; // stderr logs, text or JSON
pub mod metrics; // Prometheus text: /metrics from the store and the listener, the jobs' textfile
pub mod money; // integer cents as people read them: R$ 1.234,56
pub mod people; // random Brazilian payers with valid CPFs
pub mod reconcile; // every credit against its transfers, every transfer against a credit
pub mod sandbox; // the local Stark Bank emulator
pub mod starkbank; // the API client: keys, signing, requests, resources, events
pub mod store; // all SQL: migrations, events, campaign, sweep
pub mod sweep; // the transfer step: credits -> exactly one transfer each
pub mod trace; // the life of one invoice, in time order, from the store
pub mod workspace; // which workspace this deployment belongs to: learned, pinned, checked
