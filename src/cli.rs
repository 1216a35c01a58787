//! Command-line types only. Every flag has an environment twin (shown in `--help`), and the
//! doc comment is its help text. Defaults are applied in `config`, after `.env`, so that the
//! order is flags > environment > `.env` > defaults.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(name = "stark-sweep", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// SQLite state file [default: ./stark-sweep.db, or $STATE_DIRECTORY/stark-sweep.db under systemd]
    #[arg(long, env = "STARK_SWEEP_DB", global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Business clock override (RFC 3339) for drills and tests: campaign window, slots, due dates.
    /// Request signing always uses the real clock.
    #[arg(long, env = "STARK_SWEEP_NOW", global = true, value_name = "RFC3339")]
    pub now: Option<String>,
    /// Log format on stderr [default: text]
    #[arg(long, env = "STARK_SWEEP_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// More logging (-v debug, -vv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less logging (-q warnings only, -qq errors only)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub quiet: u8,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Sandbox,
    Production,
}

#[derive(Clone, Args)]
pub struct ApiArgs {
    /// Stark Bank project id (required for any API call)
    #[arg(long, env = "STARKBANK_PROJECT_ID", global = true, value_name = "ID")]
    pub project_id: Option<String>,
    /// Private key PEM file of the project (secp256k1)
    #[arg(long, env = "STARKBANK_PRIVATE_KEY_PATH", global = true, value_name = "PATH")]
    pub private_key_path: Option<PathBuf>,
    /// Private key PEM text (prefer the file or a systemd credential)
    #[arg(long, env = "STARKBANK_PRIVATE_KEY", global = true, hide_env_values = true, value_name = "PEM")]
    pub private_key: Option<String>,
    /// Stark Bank environment [default: sandbox]
    #[arg(long, env = "STARKBANK_ENVIRONMENT", global = true, value_enum)]
    pub environment: Option<Environment>,
    /// API base URL override, e.g. http://127.0.0.1:9000 for the local sandbox (requests go to {base}/v2/...)
    #[arg(long, env = "STARKBANK_API_URL", global = true, value_name = "URL")]
    pub api_url: Option<String>,
    /// Total time for one HTTP request, in seconds [default: 15]
    #[arg(long, env = "STARK_SWEEP_HTTP_TIMEOUT", global = true, value_name = "SECS")]
    pub http_timeout: Option<f64>,
    /// Time to establish a connection, in seconds [default: 5]
    #[arg(long, env = "STARK_SWEEP_CONNECT_TIMEOUT", global = true, value_name = "SECS")]
    pub connect_timeout: Option<f64>,
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
    /// Manage Stark Bank webhook subscriptions
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Stop (or resume) all outgoing money, on every host at once; intake goes on
    #[command(subcommand)]
    KillSwitch(KillSwitchCommand),
    /// Run the local Stark Bank sandbox emulator
    Sandbox(SandboxArgs),
    /// The whole campaign on the embedded emulator, with no credentials, in under a minute
    Demo(DemoArgs),
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
pub struct CampaignArgs {
    /// Campaign length in hours [default: 24]
    #[arg(long, env = "STARK_SWEEP_CAMPAIGN_HOURS", value_name = "HOURS")]
    pub campaign_hours: Option<u32>,
    /// Slot length in hours [default: 3]
    #[arg(long, env = "STARK_SWEEP_SLOT_HOURS", value_name = "HOURS")]
    pub slot_hours: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct IssueArgs {
    #[command(flatten)]
    pub campaign: CampaignArgs,
    #[command(flatten)]
    pub workspace: WorkspaceArgs,
    /// Fewest invoices in a slot [default: 8]
    #[arg(long, env = "STARK_SWEEP_INVOICES_MIN", value_name = "N")]
    pub invoices_min: Option<u32>,
    /// Most invoices in a slot [default: 12]
    #[arg(long, env = "STARK_SWEEP_INVOICES_MAX", value_name = "N")]
    pub invoices_max: Option<u32>,
    /// Smallest invoice amount, in cents [default: 1000]
    #[arg(long, env = "STARK_SWEEP_AMOUNT_MIN", value_name = "CENTS")]
    pub amount_min: Option<i64>,
    /// Largest invoice amount, in cents [default: 50000]
    #[arg(long, env = "STARK_SWEEP_AMOUNT_MAX", value_name = "CENTS")]
    pub amount_max: Option<i64>,
    /// Days from issue to the invoice's due date [default: 2]
    #[arg(long, env = "STARK_SWEEP_DUE_DAYS", value_name = "DAYS")]
    pub due_days: Option<u32>,
    /// Days after the due date during which the invoice can still be paid [default: 5]
    #[arg(long, env = "STARK_SWEEP_EXPIRATION_DAYS", value_name = "DAYS")]
    pub expiration_days: Option<u32>,
    /// After a create request got no answer: how long past its timeout Stark Bank may still be
    /// processing it, in seconds; until then no rerun creates anything for the slot [default: 120]
    #[arg(long, env = "STARK_SWEEP_IN_FLIGHT_MARGIN", value_name = "SECS")]
    pub in_flight_margin: Option<u32>,
    /// Issue this slot of the campaign (1-8) now, on purpose: one whose time passed without it
    /// being issued, or one that failed; due dates are computed now
    #[arg(long, value_name = "N")]
    pub slot: Option<u32>,
    /// Show the drafts without calling the API or writing anything
    #[arg(long)]
    pub dry_run: bool,
    /// In production, issue the campaign's invoices to randomly generated people anyway (they are
    /// real charges to real tax ids); without it, issue-invoices refuses in production (exit 78)
    #[arg(long, env = "STARK_SWEEP_ALLOW_RANDOM_PAYERS_IN_PRODUCTION")]
    pub allow_random_payers_in_production: bool,
    /// With --dry-run: also show each payer's name and CPF (hidden otherwise: personal data)
    #[arg(long, requires = "dry_run")]
    pub show_payer: bool,
    /// Print the result as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8000]
    #[arg(long, env = "STARK_SWEEP_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Largest accepted body, in bytes [default: 1048576]
    #[arg(long, env = "STARK_SWEEP_BODY_LIMIT", value_name = "BYTES")]
    pub body_limit: Option<u64>,
    /// Verification worker threads [default: 2 x CPUs]
    #[arg(long, env = "STARK_SWEEP_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Verify with this public key PEM instead of fetching it from Stark Bank (GET
    /// /v2/public-key). Pinning disables key rotation: if Stark Bank rotates its key, every
    /// delivery gets 401 until the file is replaced and the listener restarted
    #[arg(long, env = "STARK_SWEEP_PUBLIC_KEY_FILE", value_name = "PATH")]
    pub public_key_file: Option<PathBuf>,
    /// After storing a credit, run the transfer step at once in the background
    #[arg(long, env = "STARK_SWEEP_PROCESS")]
    pub process: bool,
    #[command(flatten)]
    pub sweep: SweepArgs,
}

/// This deployment's Stark Bank workspace, when the operator states it.
#[derive(Debug, Clone, Args)]
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
pub struct SweepArgs {
    #[command(flatten)]
    pub workspace: WorkspaceArgs,
    /// Transfer every credited invoice of the workspace, not only stark-sweep's
    #[arg(long, env = "STARK_SWEEP_ALL_CREDITS")]
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
    /// Sends of a transfer that really failed before it needs attention [default: 5]
    #[arg(long, env = "STARK_SWEEP_TRANSFER_ATTEMPTS", value_name = "N")]
    pub transfer_attempts: Option<u32>,
    /// Base delay before re-sending a failed transfer, in seconds; doubles each time [default: 60]
    #[arg(long, env = "STARK_SWEEP_RETRY_BACKOFF", value_name = "SECS")]
    pub retry_backoff: Option<u64>,
    /// Target bank code (ISPB) [default: 20018183]
    #[arg(long, env = "STARK_SWEEP_TARGET_BANK_CODE", value_name = "CODE")]
    pub target_bank_code: Option<String>,
    /// Target branch [default: 0001]
    #[arg(long, env = "STARK_SWEEP_TARGET_BRANCH", value_name = "BRANCH")]
    pub target_branch: Option<String>,
    /// Target account number [default: 6341320293482496]
    #[arg(long, env = "STARK_SWEEP_TARGET_ACCOUNT", value_name = "NUMBER")]
    pub target_account: Option<String>,
    /// Target account holder name [default: Stark Bank S.A.]
    #[arg(long, env = "STARK_SWEEP_TARGET_NAME", value_name = "NAME")]
    pub target_name: Option<String>,
    /// Target tax ID (CPF or CNPJ) [default: 20.018.183/0001-80]
    #[arg(long, env = "STARK_SWEEP_TARGET_TAX_ID", value_name = "TAX_ID")]
    pub target_tax_id: Option<String>,
    /// Target account type: checking, savings, salary or payment [default: payment]
    #[arg(long, env = "STARK_SWEEP_TARGET_ACCOUNT_TYPE", value_name = "TYPE")]
    pub target_account_type: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ProcessArgs {
    /// Do not pull undelivered events from Stark Bank (GET /v2/event?isDelivered=false)
    #[arg(long, env = "STARK_SWEEP_NO_RECONCILE")]
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
    #[command(flatten)]
    pub sweep: SweepArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub workspace: WorkspaceArgs,
    /// A credit not transferred after this many minutes needs attention [default: 30]
    #[arg(long, env = "STARK_SWEEP_STALE_MINUTES", value_name = "MINUTES")]
    pub stale_minutes: Option<i64>,
    /// List every discrepancy, settled history too (credits skipped because nothing was left to
    /// transfer); without it only what needs a human or is still on its way is listed, and the
    /// rest is counted
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Subscribe a URL to invoice and transfer events
    Register {
        /// Public HTTPS URL of the listener, e.g. https://sweep.example.com/webhook
        #[arg(long, env = "STARK_SWEEP_WEBHOOK_URL")]
        url: String,
    },
    /// List webhook subscriptions
    List {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a webhook subscription
    Delete {
        /// Webhook id (see `webhook list`)
        id: String,
        /// Confirm the deletion
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KillSwitchCommand {
    /// Engage it: from now on no transfer is claimed or sent, until `kill-switch off`
    On {
        /// Why (shown by status and process-events)
        #[arg(long)]
        reason: String,
    },
    /// Release it: transfers are claimed and sent again on the next run
    Off,
    /// Whether it is engaged (exit 3 when it is)
    Status,
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
    #[arg(long, env = "STARK_SWEEP_SANDBOX_MANUAL_CLOCK")]
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
    /// Accept requests of this project id (repeatable; pairs with --project-public-key in order).
    /// Not `--project-id`: that name is the global client flag.
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
    #[arg(long, env = "STARK_SWEEP_SANDBOX_ERROR_RATE", value_name = "RATE")]
    pub error_rate: Option<f64>,
    /// Fault: real milliseconds added to every /v2 answer [default: 0]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_LATENCY_MS", value_name = "MS")]
    pub latency_ms: Option<u64>,
    /// Fault: share of invoice creations committed and then answered 500 [default: 0]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_COMMIT_THEN_500_INVOICE", value_name = "RATE")]
    pub commit_then_500_invoice: Option<f64>,
    /// Fault: share of transfer creations committed and then answered 500 [default: 0]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_COMMIT_THEN_500_TRANSFER", value_name = "RATE")]
    pub commit_then_500_transfer: Option<f64>,
    /// Fault: share of delivered webhooks POSTed a second time [default: 0]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_DUPLICATE_DELIVERY_RATE", value_name = "RATE")]
    pub duplicate_delivery_rate: Option<f64>,
    /// Fault: share of webhook deliveries never POSTed [default: 0]
    #[arg(long, env = "STARK_SWEEP_SANDBOX_DROP_DELIVERY_RATE", value_name = "RATE")]
    pub drop_delivery_rate: Option<f64>,
    /// Fault: deliver each invoice's `credited` event before its `paid` event
    #[arg(long, env = "STARK_SWEEP_SANDBOX_OUT_OF_ORDER")]
    pub out_of_order: bool,
    /// Fault: transfers created before this simulated time (RFC 3339) fail for insufficient balance
    #[arg(long, env = "STARK_SWEEP_SANDBOX_INSUFFICIENT_BALANCE_UNTIL", value_name = "RFC3339")]
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
