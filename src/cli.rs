//! Command-line types only. Every flag has an environment twin (shown in `--help`), and the
//! doc comment is its help text. A default is the library's own constant, shown by clap; the
//! env file is loaded into the environment before parsing, so the order is flags >
//! environment > env file > defaults. Defaults that depend on other settings (the outflow
//! limits, by environment) stay `Option`, resolved where the values are validated: the engines'
//! `issue::Plan::new` and `sweep::Options::new`, and `cmd::config` for the API.

#![allow(rustdoc::bare_urls, reason = "doc comments here are --help text, where a URL is plain text")]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::logging::LogFormat;

/// The exit codes, in the top-level help (the README's table says what to do for each).
const EXIT_CODES: &str = "\
Exit codes:
  0   done, or nothing to do
  1   unexpected failure (read the one-line error)
  2   wrong command line
  3   finished, but something needs a human: run `stark-sweep status`
  75  temporary failure; the next timer run completes the work
  78  configuration or credentials wrong: fix what the message names";

#[derive(Debug, Parser)]
#[command(name = "stark-sweep", version, about, long_about = None, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// What every subcommand takes: where its configuration comes from and how it logs.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Configuration and logging")]
pub struct GlobalArgs {
    /// Configuration file (NAME=value lines, as systemd/stark-sweep.env.example) read before the
    /// environment's fallbacks; a variable already set in the environment wins [default: ./.env
    /// when it exists]. The units and crontab.example use /etc/stark-sweep/stark-sweep.env
    #[arg(long, env = "STARK_SWEEP_ENV_FILE", global = true, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// Log format on stderr [default: text]
    #[arg(long, env = "STARK_SWEEP_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// More logging (-v debug, -vv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less logging (-q warnings only, -qq errors only)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub quiet: u8,
}

/// The state a subcommand reads or writes, and its business clock.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "State")]
pub struct StoreArgs {
    /// The store: a SQLite file, or a postgres:// URL (several hosts share one Postgres)
    /// [default: ./stark-sweep.db, or $STATE_DIRECTORY/stark-sweep.db under systemd]
    #[arg(long, env = "STARK_SWEEP_DB", value_name = "PATH|URL")]
    pub db: Option<String>,
    /// File holding the Postgres password (else the systemd credential db-password): keeps it
    /// out of the URL, the command line and the logs
    #[arg(long, env = "STARK_SWEEP_DB_PASSWORD_FILE", value_name = "PATH")]
    pub db_password_file: Option<PathBuf>,
    /// On Postgres: how long a job's lease (one issue-invoices, one sweep across all hosts)
    /// outlives a run that died; a live run renews it every quarter of this
    #[arg(long, env = "STARK_SWEEP_LEASE_SECONDS", value_name = "SECS", default_value_t = crate::store::DEFAULT_LEASE_SECONDS)]
    pub lease_seconds: u64,
    /// Business clock override (RFC 3339) for drills and tests: campaign window, slots, due dates.
    /// Request signing always uses the real clock.
    #[arg(long, env = "STARK_SWEEP_NOW", value_name = "RFC3339")]
    pub now: Option<String>,
}

impl Default for StoreArgs {
    fn default() -> Self {
        StoreArgs { db: None, db_password_file: None, lease_seconds: crate::store::DEFAULT_LEASE_SECONDS, now: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Sandbox,
    Production,
}

/// How a subcommand that calls Stark Bank reaches it.
#[derive(Clone, Args)]
#[command(next_help_heading = "Stark Bank API")]
pub struct ApiArgs {
    /// Stark Bank project id (required for any API call)
    #[arg(long, env = "STARKBANK_PROJECT_ID", value_name = "ID")]
    pub project_id: Option<String>,
    /// Private key PEM file of the project (secp256k1)
    #[arg(long, env = "STARKBANK_PRIVATE_KEY_PATH", value_name = "PATH")]
    pub private_key_path: Option<PathBuf>,
    /// Private key PEM text (prefer the file or a systemd credential)
    #[arg(long, env = "STARKBANK_PRIVATE_KEY", hide_env_values = true, value_name = "PEM")]
    pub private_key: Option<String>,
    /// Stark Bank environment [default: sandbox]
    #[arg(long, env = "STARKBANK_ENVIRONMENT", value_enum)]
    pub environment: Option<Environment>,
    /// API base URL override, e.g. http://127.0.0.1:9000 for the local sandbox (requests go to {base}/v2/...)
    #[arg(long, env = "STARKBANK_API_URL", value_name = "URL")]
    pub api_url: Option<String>,
    /// Total time for one HTTP request, in seconds
    #[arg(long, env = "STARK_SWEEP_HTTP_TIMEOUT", value_name = "SECS", default_value_t = crate::starkbank::DEFAULT_TIMEOUT_SECS)]
    pub http_timeout: f64,
    /// Time to establish a connection, in seconds
    #[arg(long, env = "STARK_SWEEP_CONNECT_TIMEOUT", value_name = "SECS", default_value_t = crate::starkbank::DEFAULT_CONNECT_TIMEOUT_SECS)]
    pub connect_timeout: f64,
}

impl Default for ApiArgs {
    /// What a subcommand that never calls Stark Bank carries (it takes no API flags).
    fn default() -> Self {
        Self {
            project_id: None,
            private_key_path: None,
            private_key: None,
            environment: None,
            api_url: None,
            http_timeout: crate::starkbank::DEFAULT_TIMEOUT_SECS,
            connect_timeout: crate::starkbank::DEFAULT_CONNECT_TIMEOUT_SECS,
        }
    }
}

impl std::fmt::Debug for ApiArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiArgs")
            .field("project_id", &self.project_id)
            .field("private_key_path", &self.private_key_path)
            .field("private_key", &self.private_key.as_ref().map(|_| "<redacted>"))
            .field("environment", &self.environment)
            .field("api_url", &self.api_url)
            .finish()
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a secp256k1 key pair for a Stark Bank project
    Keygen(KeygenArgs),
    /// Issue this 3-hour slot's batch of invoices (run every 3 hours)
    IssueInvoices(IssueArgs),
    /// Receive Stark Bank webhooks: verify, store durably, answer
    ServeWebhook(ServeArgs),
    /// Turn recorded credits into transfers to the target account (run every minute)
    ProcessEvents(ProcessArgs),
    /// Campaign, invoices, credits, transfers and their reconciliation
    Status(StatusArgs),
    /// The whole life of one invoice in time order: its draft and slot, every event, its credit,
    /// every send and every transfer status (give an invoice, event or transfer id, or an externalId)
    Trace(TraceArgs),
    /// Manage Stark Bank webhook subscriptions
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Stop (or resume) all outgoing money, on every host at once; intake goes on
    #[command(subcommand)]
    KillSwitch(KillSwitchCommand),
    /// Copy a store (a SQLite file) into an empty one (a Postgres database), and prove the copy
    MigrateStore(MigrateStoreArgs),
    /// Run the local Stark Bank sandbox emulator
    Sandbox(SandboxArgs),
    /// The whole campaign on the embedded emulator, with no credentials, in under a minute
    Demo(DemoArgs),
}

impl Command {
    /// The state and API options of this subcommand, when it takes them.
    pub fn shared_args(&self) -> (Option<&StoreArgs>, Option<&ApiArgs>) {
        match self {
            Command::IssueInvoices(a) => (Some(&a.store), Some(&a.api)),
            Command::ServeWebhook(a) => (Some(&a.store), Some(&a.api)),
            Command::ProcessEvents(a) => (Some(&a.store), Some(&a.api)),
            Command::Status(a) => (Some(&a.store), None),
            Command::Trace(a) => (Some(&a.store), None),
            Command::Webhook(
                WebhookCommand::Register { api, .. }
                | WebhookCommand::List { api, .. }
                | WebhookCommand::Delete { api, .. },
            ) => (None, Some(api)),
            Command::KillSwitch(
                KillSwitchCommand::On { store, .. }
                | KillSwitchCommand::Off { store }
                | KillSwitchCommand::Status { store },
            ) => (Some(store), None),
            Command::Keygen(_) | Command::Sandbox(_) | Command::Demo(_) | Command::MigrateStore(_) => (None, None),
        }
    }
}

/// Stop every timer and listener of the deployment first: rows written to the source during
/// the copy would not be in the target.
#[derive(Debug, Clone, Args)]
pub struct MigrateStoreArgs {
    /// The store to copy: the deployment's SQLite file (or any store)
    #[arg(long, value_name = "PATH|URL")]
    pub from: String,
    /// The empty store to copy into, usually postgres://USER@HOST:PORT/DATABASE; a store that
    /// holds anything is refused
    #[arg(long, value_name = "URL|PATH")]
    pub to: String,
    /// File holding the target's Postgres password (else the systemd credential db-password)
    #[arg(long, env = "STARK_SWEEP_DB_PASSWORD_FILE", value_name = "PATH")]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Directory to write private-key.pem and public-key.pem into
    #[arg(long, env = "STARK_SWEEP_KEY_DIR", default_value = ".", value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite existing key files
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Campaign")]
pub struct CampaignArgs {
    /// Campaign length in hours
    #[arg(long, env = "STARK_SWEEP_CAMPAIGN_HOURS", value_name = "HOURS", default_value_t = crate::campaign::DEFAULT_CAMPAIGN_HOURS)]
    pub campaign_hours: u32,
    /// Slot length in hours
    #[arg(long, env = "STARK_SWEEP_SLOT_HOURS", value_name = "HOURS", default_value_t = crate::campaign::DEFAULT_SLOT_HOURS)]
    pub slot_hours: u32,
}

#[derive(Debug, Clone, Args)]
pub struct IssueArgs {
    /// Fewest invoices in a slot
    #[arg(long, help_heading = "Campaign", env = "STARK_SWEEP_INVOICES_MIN", value_name = "N", default_value_t = crate::campaign::DEFAULT_INVOICES_MIN)]
    pub invoices_min: u32,
    /// Most invoices in a slot
    #[arg(long, help_heading = "Campaign", env = "STARK_SWEEP_INVOICES_MAX", value_name = "N", default_value_t = crate::campaign::DEFAULT_INVOICES_MAX)]
    pub invoices_max: u32,
    /// Smallest invoice amount, in cents
    #[arg(long, help_heading = "Campaign", env = "STARK_SWEEP_AMOUNT_MIN", value_name = "CENTS", default_value_t = crate::campaign::DEFAULT_AMOUNT_MIN)]
    pub amount_min: i64,
    /// Largest invoice amount, in cents
    #[arg(long, help_heading = "Campaign", env = "STARK_SWEEP_AMOUNT_MAX", value_name = "CENTS", default_value_t = crate::campaign::DEFAULT_AMOUNT_MAX)]
    pub amount_max: i64,
    /// Days from issue to the invoice's due date
    #[arg(long, help_heading = "Campaign", env = "STARK_SWEEP_DUE_DAYS", value_name = "DAYS", default_value_t = crate::campaign::DEFAULT_DUE_DAYS)]
    pub due_days: u32,
    /// Days after the due date during which the invoice can still be paid
    #[arg(long, help_heading = "Campaign", env = "STARK_SWEEP_EXPIRATION_DAYS", value_name = "DAYS", default_value_t = crate::campaign::DEFAULT_EXPIRATION_DAYS)]
    pub expiration_days: u32,
    /// After a create request got no answer: how long past the whole call (every try's timeout
    /// and the backoffs between them) Stark Bank may still be processing it, in seconds; until
    /// then no rerun creates anything for the slot
    #[arg(long, env = "STARK_SWEEP_IN_FLIGHT_MARGIN", value_name = "SECS", default_value_t = crate::campaign::DEFAULT_IN_FLIGHT_MARGIN_SECS)]
    pub in_flight_margin: u32,
    /// Issue this slot of the campaign (1-8) now, on purpose: one whose time passed without it
    /// being issued, or one that failed; due dates are computed now
    #[arg(long, value_name = "N")]
    pub slot: Option<u32>,
    /// Show the drafts without calling the API or writing anything
    #[arg(long)]
    pub dry_run: bool,
    /// In production, issue the campaign's invoices to randomly generated people anyway (they are
    /// real charges to real tax ids); without it, issue-invoices refuses in production (exit 78)
    #[arg(long, env = "STARK_SWEEP_ALLOW_RANDOM_PAYERS_IN_PRODUCTION", value_parser = boolish())]
    pub allow_random_payers_in_production: bool,
    /// With --dry-run: also show each payer's name and CPF (hidden otherwise: personal data)
    #[arg(long, requires = "dry_run")]
    pub show_payer: bool,
    /// Print the result as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// After the run, write its metrics (end, duration, exit code, last success) to this
    /// node_exporter textfile (`*.prom`, replaced atomically); one file per job
    #[arg(long, env = "STARK_SWEEP_METRICS_FILE", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub campaign: CampaignArgs,
    #[command(flatten)]
    pub workspace: WorkspaceArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, env = "STARK_SWEEP_LISTEN", value_name = "ADDR", default_value = crate::listener::DEFAULT_LISTEN)]
    pub listen: String,
    /// Largest accepted body, in bytes
    #[arg(long, env = "STARK_SWEEP_BODY_LIMIT", value_name = "BYTES", default_value_t = crate::listener::DEFAULT_BODY_LIMIT)]
    pub body_limit: u64,
    /// Verification worker threads [default: 2 x CPUs]
    #[arg(long, env = "STARK_SWEEP_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Verify with this public key PEM instead of fetching it from Stark Bank (GET
    /// /v2/public-key). Pinning disables key rotation: if Stark Bank rotates its key, every
    /// delivery gets 401 until the file is replaced and the listener restarted
    #[arg(long, env = "STARK_SWEEP_PUBLIC_KEY_FILE", value_name = "PATH")]
    pub public_key_file: Option<PathBuf>,
    /// After storing a credit, run the transfer step at once in the background
    #[arg(long, env = "STARK_SWEEP_PROCESS", value_parser = boolish())]
    pub process: bool,
    #[command(flatten)]
    pub sweep: SweepArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// This deployment's Stark Bank workspace, when the operator states it.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Stark Bank API")]
pub struct WorkspaceArgs {
    /// The Stark Bank workspace id. Not needed: stark-sweep learns it from the API with the
    /// project's credentials and pins it in the database; when set, it must agree (exit 78)
    #[arg(long, env = "STARKBANK_WORKSPACE_ID", value_name = "ID")]
    pub workspace_id: Option<String>,
}

impl WorkspaceArgs {
    /// The configured id, trimmed; `None` when unset or empty.
    pub fn configured(&self) -> Option<String> {
        self.workspace_id.as_deref().map(str::trim).filter(|w| !w.is_empty()).map(str::to_string)
    }
}

/// Options of the transfer step, shared by `process-events` and `serve-webhook --process`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Transfers")]
pub struct SweepArgs {
    /// Transfer every credited invoice of the workspace, not only stark-sweep's
    #[arg(long, env = "STARK_SWEEP_ALL_CREDITS", value_parser = boolish())]
    pub all_credits: bool,
    /// The most one transfer may carry, in cents; a credit over it is held [default: 100000000
    /// in the sandbox, 100000 (R$ 1.000,00) in production]
    #[arg(long, env = "STARK_SWEEP_MAX_TRANSFER", value_name = "CENTS")]
    pub max_transfer: Option<i64>,
    /// The most that may leave in any 24 hours, in cents; a credit that would cross it is held
    /// until room frees [default: 1000000000 in the sandbox, 2500000 (R$ 25.000,00) in production]
    #[arg(long, env = "STARK_SWEEP_MAX_OUTFLOW_24H", value_name = "CENTS")]
    pub max_outflow_24h: Option<i64>,
    /// In production: the target account number, typed again; nothing is sent until it equals
    /// STARK_SWEEP_TARGET_ACCOUNT (a changed or mistyped target stops the sweep, exit 78)
    #[arg(long, env = "STARK_SWEEP_CONFIRM_TARGET_ACCOUNT", value_name = "NUMBER")]
    pub confirm_target_account: Option<String>,
    /// Sends of a transfer that really failed before it needs attention
    #[arg(long, env = "STARK_SWEEP_TRANSFER_ATTEMPTS", value_name = "N", default_value_t = crate::sweep::DEFAULT_TRANSFER_ATTEMPTS)]
    pub transfer_attempts: u32,
    /// Base delay before re-sending a failed transfer, in seconds; doubles each time
    #[arg(long, env = "STARK_SWEEP_RETRY_BACKOFF", value_name = "SECS", default_value_t = crate::sweep::DEFAULT_RETRY_BACKOFF_SECS)]
    pub retry_backoff: u64,
    /// Target bank code (ISPB)
    #[arg(long, help_heading = "Transfer target", env = "STARK_SWEEP_TARGET_BANK_CODE", value_name = "CODE", default_value = crate::sweep::DEFAULT_TARGET_BANK_CODE)]
    pub target_bank_code: String,
    /// Target branch
    #[arg(long, help_heading = "Transfer target", env = "STARK_SWEEP_TARGET_BRANCH", value_name = "BRANCH", default_value = crate::sweep::DEFAULT_TARGET_BRANCH)]
    pub target_branch: String,
    /// Target account number
    #[arg(long, help_heading = "Transfer target", env = "STARK_SWEEP_TARGET_ACCOUNT", value_name = "NUMBER", default_value = crate::sweep::DEFAULT_TARGET_ACCOUNT)]
    pub target_account: String,
    /// Target account holder name
    #[arg(long, help_heading = "Transfer target", env = "STARK_SWEEP_TARGET_NAME", value_name = "NAME", default_value = crate::sweep::DEFAULT_TARGET_NAME)]
    pub target_name: String,
    /// Target tax ID (CPF or CNPJ)
    #[arg(long, help_heading = "Transfer target", env = "STARK_SWEEP_TARGET_TAX_ID", value_name = "TAX_ID", default_value = crate::sweep::DEFAULT_TARGET_TAX_ID)]
    pub target_tax_id: String,
    /// Target account type: checking, savings, salary or payment
    #[arg(long, help_heading = "Transfer target", env = "STARK_SWEEP_TARGET_ACCOUNT_TYPE", value_name = "TYPE", default_value = crate::sweep::DEFAULT_TARGET_ACCOUNT_TYPE)]
    pub target_account_type: String,
    #[command(flatten)]
    pub workspace: WorkspaceArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ProcessArgs {
    /// Do not pull undelivered events from Stark Bank (GET /v2/event?isDelivered=false)
    #[arg(long, env = "STARK_SWEEP_NO_RECONCILE", value_parser = boolish())]
    pub no_reconcile: bool,
    /// Put credits that need attention back in play with a fresh attempt budget (after fixing the cause)
    #[arg(long)]
    pub retry_attention: bool,
    /// Show exactly what would be sent (invoice, net, target, externalId) and what would stop
    /// it, reading Stark Bank but sending, claiming and writing nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// After the run, write its metrics (end, duration, exit code, last success) to this
    /// node_exporter textfile (`*.prom`, replaced atomically); one file per job
    #[arg(long, env = "STARK_SWEEP_METRICS_FILE", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub sweep: SweepArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// A credit not transferred after this many minutes needs attention
    #[arg(long, env = "STARK_SWEEP_STALE_MINUTES", value_name = "MINUTES", default_value_t = crate::reconcile::DEFAULT_STALE_MINUTES)]
    pub stale_minutes: i64,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub workspace: WorkspaceArgs,
    /// List every discrepancy, settled history too (credits skipped because nothing was left to
    /// transfer); without it only what needs a human or is still on its way is listed, and the
    /// rest is counted
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// An invoice id, an event id, a transfer id, an externalId, or a draft key
    pub id: String,
    /// Print the trace as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Also show the payer's name and CPF (hidden otherwise: personal data)
    #[arg(long)]
    pub show_payer: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Subscribe a URL to invoice and transfer events
    Register {
        /// Public HTTPS URL of the listener, e.g. https://sweep.example.com/webhook
        #[arg(long, env = "STARK_SWEEP_WEBHOOK_URL")]
        url: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List webhook subscriptions
    List {
        /// Print as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete a webhook subscription
    Delete {
        /// Webhook id (see `webhook list`)
        id: String,
        /// Confirm the deletion
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KillSwitchCommand {
    /// Engage it: from now on no transfer is claimed or sent, until `kill-switch off`
    On {
        /// Why (shown by status and process-events)
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Release it: transfers are claimed and sent again on the next run
    Off {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Whether it is engaged (exit 3 when it is)
    Status {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `stark-sweep sandbox`: the local emulator. Simulated durations run on the simulated clock
/// (real seconds x time scale). The emulator is for loopback only: its /_sandbox routes are open.
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Address to listen on [default: 127.0.0.1:9000]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Simulated seconds per real second, e.g. 3600 for an hour a second [default: 1]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_TIME_SCALE", value_name = "FACTOR", conflicts_with = "manual_clock")]
    pub time_scale: Option<f64>,
    /// The simulated clock stands still until moved by `POST /_sandbox/clock` ({"advanceSeconds":
    /// N} or {"to": RFC 3339}), which also makes every webhook delivery due by then
    #[arg(long, env = "STARK_SWEEP_SANDBOX_MANUAL_CLOCK", value_parser = boolish())]
    pub manual_clock: bool,
    /// Simulated start time (RFC 3339) [default: now]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_START", value_name = "RFC3339")]
    pub start: Option<String>,
    /// Share of new invoices that get paid, 0 to 1 [default: 0.9]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_PAY_RATE", value_name = "RATE")]
    pub pay_rate: Option<f64>,
    /// Shortest simulated delay from invoice creation to payment, in seconds [default: 60]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_PAY_DELAY_MIN", value_name = "SECS")]
    pub pay_delay_min: Option<u64>,
    /// Longest simulated delay from invoice creation to payment, in seconds [default: 600]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_PAY_DELAY_MAX", value_name = "SECS")]
    pub pay_delay_max: Option<u64>,
    /// Simulated delay from `paid` to `credited`, in seconds [default: 2]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_CREDIT_DELAY", value_name = "SECS")]
    pub credit_delay: Option<u64>,
    /// Fee set on each credited invoice, in cents [default: 50]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_INVOICE_FEE", value_name = "CENTS")]
    pub invoice_fee: Option<i64>,
    /// Fee of each transfer, in cents [default: 0]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_TRANSFER_FEE", value_name = "CENTS")]
    pub transfer_fee: Option<i64>,
    /// Simulated seconds per transfer status step (created, processing, success) [default: 30]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_TRANSFER_STEP", value_name = "SECS")]
    pub transfer_step: Option<u64>,
    /// Largest accepted distance between Access-Time and the real clock, in seconds [default: 300]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_MAX_CLOCK_SKEW", value_name = "SECS")]
    pub max_clock_skew: Option<u64>,
    /// How a repeated transfer externalId is refused: sync (400 at once) or late (200, then a
    /// `failed` log "Duplicated transfer") [default: sync]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_DUPLICATE_EXTERNAL_ID", value_enum, value_name = "MODE")]
    pub duplicate_external_id: Option<crate::sandbox::DuplicateMode>,
    /// Workspace balance at start, in cents [default: 0]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_INITIAL_BALANCE", value_name = "CENTS")]
    pub initial_balance: Option<i64>,
    /// Accept requests of this project id (repeatable; pairs with --project-public-key in order)
    #[arg(long = "project", env = "STARK_SWEEP_SANDBOX_PROJECTS", value_delimiter = ',', value_name = "ID")]
    pub project_ids: Vec<String>,
    /// Public key PEM file of the project given at the same position in --project (repeatable)
    #[arg(
        long = "project-public-key",
        env = "STARK_SWEEP_SANDBOX_PROJECT_PUBLIC_KEYS",
        value_delimiter = ',',
        value_name = "PEM-FILE"
    )]
    pub project_public_keys: Vec<PathBuf>,
    /// Without --project: where the created project's private-key.pem is written, or reused
    /// when it is already there [default: .]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_KEY_DIR", value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
    /// Seed of every random choice (payments, ids, faults) [default: random, printed at start]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_SEED", value_name = "N")]
    pub seed: Option<u64>,
    /// Real seconds a webhook POST may take [default: 5]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_DELIVERY_TIMEOUT", value_name = "SECS")]
    pub delivery_timeout: Option<f64>,
    /// Fault: share of /v2 requests answered 500 [default: 0]
    #[arg(long, help_heading = "Emulator faults", env = "STARK_SWEEP_SANDBOX_ERROR_RATE", value_name = "RATE")]
    pub error_rate: Option<f64>,
    /// Fault: real milliseconds added to every /v2 answer [default: 0]
    #[arg(long, help_heading = "Emulator faults", env = "STARK_SWEEP_SANDBOX_LATENCY_MS", value_name = "MS")]
    pub latency_ms: Option<u64>,
    /// Fault: share of invoice creations committed and then answered 500 [default: 0]
    #[arg(
        long,
        help_heading = "Emulator faults",
        env = "STARK_SWEEP_SANDBOX_COMMIT_THEN_500_INVOICE",
        value_name = "RATE"
    )]
    pub commit_then_500_invoice: Option<f64>,
    /// Fault: share of transfer creations committed and then answered 500 [default: 0]
    #[arg(
        long,
        help_heading = "Emulator faults",
        env = "STARK_SWEEP_SANDBOX_COMMIT_THEN_500_TRANSFER",
        value_name = "RATE"
    )]
    pub commit_then_500_transfer: Option<f64>,
    /// Fault: share of delivered webhooks POSTed a second time [default: 0]
    #[arg(
        long,
        help_heading = "Emulator faults",
        env = "STARK_SWEEP_SANDBOX_DUPLICATE_DELIVERY_RATE",
        value_name = "RATE"
    )]
    pub duplicate_delivery_rate: Option<f64>,
    /// Fault: share of webhook deliveries never POSTed [default: 0]
    #[arg(long, help_heading = "Emulator faults", env = "STARK_SWEEP_SANDBOX_DROP_DELIVERY_RATE", value_name = "RATE")]
    pub drop_delivery_rate: Option<f64>,
    /// Fault: deliver each invoice's `credited` event before its `paid` event
    #[arg(long, help_heading = "Emulator faults", env = "STARK_SWEEP_SANDBOX_OUT_OF_ORDER", value_parser = boolish())]
    pub out_of_order: bool,
    /// Fault: transfers created before this simulated time (RFC 3339) fail for insufficient balance
    #[arg(
        long,
        help_heading = "Emulator faults",
        env = "STARK_SWEEP_SANDBOX_INSUFFICIENT_BALANCE_UNTIL",
        value_name = "RFC3339"
    )]
    pub insufficient_balance_until: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Directory for the demo's database and keys [default: ./stark-sweep-demo]
    #[arg(long, env = "STARK_SWEEP_DEMO_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Simulated minutes per step of the demo's clock (the process-events timer runs once per
    /// step) [default: 15]
    #[arg(long, env = "STARK_SWEEP_DEMO_STEP_MINUTES", value_name = "MINUTES")]
    pub step_minutes: Option<u32>,
    /// Seed of the emulator's random choices: who pays, ids, fees (printed). The invoices
    /// issue-invoices draws (people, amounts, how many) differ from run to run [default: random]
    #[arg(long, env = "STARK_SWEEP_DEMO_SEED", value_name = "N")]
    pub seed: Option<u64>,
}

/// How a flag's environment twin reads yes and no: 1/0, true/false, yes/no, on/off.
fn boolish() -> clap::builder::BoolishValueParser {
    clap::builder::BoolishValueParser::new()
}

/// When clap refused a value that came from the environment (or the env file) rather than from
/// the command line: the one-line configuration error that names the variable and its flag.
/// `None` for anything typed on the command line (clap's own usage message fits those).
pub fn env_value_error(err: &clap::Error, args: &[std::ffi::OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(err.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return None;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else { return None };
    let flag = arg.split_whitespace().next()?;
    let typed = args.iter().filter_map(|a| a.to_str()).any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    if typed {
        return None;
    }
    let var = env_of(&<Cli as clap::CommandFactory>::command(), flag.strip_prefix("--")?)?;
    let value = std::env::var(&var).ok()?;
    let why = match (err.get(ContextKind::ValidValue), std::error::Error::source(err)) {
        (Some(ContextValue::Strings(valid)), _) => format!("expected one of {}", valid.join(", ")),
        (_, Some(source)) => source.to_string(),
        _ => "not a valid value".to_string(),
    };
    let shown: String = value.chars().take(40).collect();
    Some(format!("{var}=`{shown}` (or {flag}): {why}; to fix: correct it in the environment or the env file"))
}

/// The environment variable of the flag `--long` in this command or any of its subcommands.
fn env_of(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|c| env_of(c, long)))
}
