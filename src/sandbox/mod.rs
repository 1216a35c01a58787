//! The local Stark Bank sandbox emulator: the API v2 subset stark-sweep uses (invoice, transfer,
//! event, event attempt, webhook, public key), with real authentication and wire rules, a
//! simulated clock on which invoices get paid and credited, transfers progress and webhooks are
//! delivered and retried, and faults on demand. For loopback use only: the `/_sandbox/*`
//! inspection and control routes are not authenticated.
//!
//! Owns: the public API (`Sandbox`, `SandboxConfig`, `Faults`, `PayOptions`, `ForeignEvent`,
//! `Snapshot`), key and project setup, and the threads. Files: `clock` (simulated time), `auth`
//! (request signatures), `routes` (HTTP and wire rules), `state` (the bank and its schedule),
//! `lock` (the state's lock), `delivery` (webhook POSTs), `faults`, `snapshot`, `taxid`.
//!
//! An oracle for the client: its resource types, wire rules and tax-id check are its own, not
//! the client's (`starkbank::resources`, `people`); see `state`, `routes` and `taxid`.

mod auth;
mod clock;
mod delivery;
mod faults;
mod lock;
mod routes;
mod snapshot;
mod state;
mod taxid;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use k256::ecdsa::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

pub use delivery::Moved;
pub use faults::{FAIL_REASON, Faults, REFUSE_CODE, REFUSE_MESSAGE, TOO_MANY_REQUESTS_CODE};
pub use snapshot::{
    SnapAttempt, SnapDelivery, SnapEvent, SnapInvoice, SnapLog, SnapRequest, SnapTransfer, SnapWebhook, Snapshot,
};
pub use state::{
    CANCEL_REFUSED_CODE, DUPLICATE_EXTERNAL_ID_CODE, DUPLICATE_FAILED_MESSAGE, ForeignEvent,
    INSUFFICIENT_BALANCE_MESSAGE, Kind, RETRY_DELAYS_MINUTES, RETURN_REASON, SAME_DAY_DUPLICATE_CODE, SignedEvent,
};
pub use taxid::normalize as normalize_tax_id;

use crate::starkbank::keys;

/// How a transfer with an `externalId` used before is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DuplicateMode {
    /// At once: 400 with the error code `invalidExternalId` (as the API documentation describes).
    #[default]
    Sync,
    /// Later: 200 with a new transfer in `created`, then a `failed` log "Duplicated transfer"
    /// (as integrators have reported seeing).
    Late,
}

/// Everything the emulator can be told at start. Durations marked simulated run on the
/// simulated clock (divide by `time_scale` for real time).
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub listen: SocketAddr,
    /// Simulated seconds per real second (3600: an hour a second). Ignored with `manual_clock`.
    pub time_scale: f64,
    /// The simulated clock stands still until `Sandbox::advance_to` (or `POST /_sandbox/clock`)
    /// moves it, and each move delivers every webhook due by then before it returns: what
    /// happens in a simulated hour does not depend on the machine's speed.
    pub manual_clock: bool,
    /// Simulated start; real now when `None`.
    pub start: Option<DateTime<Utc>>,
    /// Share of new invoices the payer pays (0.0 to 1.0).
    pub pay_rate: f64,
    /// Simulated delay from creation to payment, uniform between min and max.
    pub pay_delay_min: Duration,
    pub pay_delay_max: Duration,
    /// Simulated delay from `paid` to `credited`.
    pub credit_delay: Duration,
    /// Fee set on credit, in cents.
    pub invoice_fee: i64,
    /// Fee of each transfer, in cents.
    pub transfer_fee: i64,
    /// Simulated time per transfer status step (created -> processing -> success).
    pub transfer_step: Duration,
    /// Largest accepted distance between Access-Time and the real clock.
    pub max_clock_skew: Duration,
    pub duplicate_external_id: DuplicateMode,
    /// Workspace balance at start, in cents.
    pub initial_balance: i64,
    /// Projects whose requests are accepted. Empty: the emulator creates one.
    pub projects: Vec<(String, VerifyingKey)>,
    /// Where a created project's `private-key.pem` is written (or reused). `None`: kept in memory.
    pub key_dir: Option<PathBuf>,
    /// Seed of every random choice (payments, ids, faults).
    pub seed: u64,
    pub faults: Faults,
    /// Real-time limit of one webhook POST.
    pub delivery_timeout: Duration,
    /// Threads polling the emulator's connections (each request runs on a thread of its own).
    pub workers: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            time_scale: 1.0,
            manual_clock: false,
            start: None,
            pay_rate: 0.9,
            pay_delay_min: Duration::from_secs(60),
            pay_delay_max: Duration::from_secs(600),
            credit_delay: Duration::from_secs(2),
            invoice_fee: 50,
            transfer_fee: 0,
            transfer_step: Duration::from_secs(30),
            max_clock_skew: Duration::from_secs(300),
            duplicate_external_id: DuplicateMode::Sync,
            initial_balance: 0,
            projects: Vec::new(),
            key_dir: None,
            seed: rand::random(),
            faults: Faults::default(),
            delivery_timeout: Duration::from_secs(5),
            workers: 4,
        }
    }
}

/// A manual payment (`Sandbox::pay_invoice`, `POST /_sandbox/invoices/{id}/pay`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PayOptions {
    /// Amount paid, in cents. Default: the amount due now (after discount, plus fine and
    /// interest when late); for a 0-amount invoice, a random amount.
    pub amount: Option<i64>,
    /// Fee set on credit instead of the configured one (may exceed the amount: net <= 0).
    pub fee: Option<i64>,
    /// Pay as if this many days late: fine plus interest, no discount. Default: the real lateness.
    pub days_late: Option<u32>,
    /// Simulated seconds from `paid` to `credited` instead of the configured delay.
    pub credit_delay_seconds: Option<u64>,
    /// Stop at `paid`: never credit.
    pub skip_credit: bool,
}

/// The User-Agent of webhook POSTs (the delivery threads send the same).
const WEBHOOK_USER_AGENT: &str = "Stark Bank webhook (stark-sweep emulator)";

/// What the threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<state::State>,
    pub(crate) clock: clock::SimClock,
    pub(crate) projects: Vec<(String, VerifyingKey)>,
    pub(crate) max_skew: Duration,
    pub(crate) public_key_pem: String,
    pub(crate) key_created: DateTime<Utc>,
    pub(crate) stop: AtomicBool,
    /// Real-time limit of one webhook POST.
    pub(crate) delivery_timeout: Duration,
    /// One clock move (and its deliveries) at a time.
    pub(crate) moving: Mutex<()>,
}

/// A running emulator. Stops on `shutdown()` or drop.
pub struct Sandbox {
    shared: Arc<Shared>,
    server: crate::httpd::Shutdown,
    threads: Vec<JoinHandle<()>>,
    url: String,
    project_id: String,
    private_key_pem: Option<String>,
    private_key_path: Option<PathBuf>,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("url", &self.url).field("project_id", &self.project_id).finish()
    }
}

/// A project id derived from its public key, so a reused key gives the same id on every run.
fn project_id_for(key: &VerifyingKey) -> String {
    let hex = keys::fingerprint(key);
    let n = u64::from_str_radix(&hex, 16).unwrap_or(0);
    (1_000_000_000_000_000 + n % 9_000_000_000_000_000).to_string()
}

/// The created project's key: reused from `dir/private-key.pem` if there, else written there.
fn project_key(dir: Option<&Path>) -> anyhow::Result<(SigningKey, Option<PathBuf>)> {
    let Some(dir) = dir else { return Ok((keys::generate(), None)) };
    let path = dir.join("private-key.pem");
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let key = keys::parse_private_key(&text).with_context(|| format!("{} is not a usable key", path.display()))?;
        return Ok((key, Some(path)));
    }
    let key = keys::generate();
    let pem = keys::private_key_pem(&key)?;
    crate::files::create_private_dir(dir).with_context(|| format!("creating the directory {}", dir.display()))?;
    crate::files::write_private_file(&path, pem.as_bytes(), false)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((key, Some(path)))
}

impl Sandbox {
    pub fn start(cfg: SandboxConfig) -> anyhow::Result<Sandbox> {
        if !(cfg.time_scale.is_finite() && cfg.time_scale > 0.0) {
            anyhow::bail!("time scale {} must be a positive number", cfg.time_scale);
        }
        if !(0.0..=1.0).contains(&cfg.pay_rate) {
            anyhow::bail!("pay rate {} must be between 0 and 1", cfg.pay_rate);
        }
        if cfg.pay_delay_min > cfg.pay_delay_max {
            anyhow::bail!("the smallest payment delay is larger than the largest");
        }
        let listener =
            std::net::TcpListener::bind(cfg.listen).with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr().context("reading the emulator's address")?;
        let url = format!("http://{addr}");
        // The port is ours: only now write (or read) the project key, so a failed start leaves
        // nothing behind.
        let (projects, private_key_pem, private_key_path) = if cfg.projects.is_empty() {
            let (key, path) = project_key(cfg.key_dir.as_deref())?;
            let id = project_id_for(key.verifying_key());
            (vec![(id, *key.verifying_key())], Some(keys::private_key_pem(&key)?), path)
        } else {
            (cfg.projects.clone(), None, None)
        };
        let project_id = projects.first().map(|p| p.0.clone()).unwrap_or_default();

        let start = cfg.start.unwrap_or_else(Utc::now);
        let signing_key = keys::generate();
        let sim = state::Sim {
            pay_rate: cfg.pay_rate,
            pay_delay_min: cfg.pay_delay_min,
            pay_delay_max: cfg.pay_delay_max,
            credit_delay: cfg.credit_delay,
            invoice_fee: cfg.invoice_fee,
            transfer_fee: cfg.transfer_fee,
            transfer_step: cfg.transfer_step,
            duplicate_mode: cfg.duplicate_external_id,
            base_url: url.clone(),
        };
        let shared = Arc::new(Shared {
            public_key_pem: keys::public_key_pem(signing_key.verifying_key())?,
            state: Mutex::new(state::State::new(sim, cfg.seed, cfg.faults.clone(), signing_key, cfg.initial_balance)),
            clock: if cfg.manual_clock {
                clock::SimClock::manual(start)
            } else {
                clock::SimClock::scaled(start, cfg.time_scale)
            },
            projects,
            max_skew: cfg.max_clock_skew,
            key_created: start,
            stop: AtomicBool::new(false),
            delivery_timeout: cfg.delivery_timeout,
            moving: Mutex::new(()),
        });
        if cfg.manual_clock {
            log::debug!("sandbox: listening on {url}, seed {}, manual clock at {}", cfg.seed, time_text(start));
        } else {
            log::debug!("sandbox: listening on {url}, seed {}, time scale {}", cfg.seed, cfg.time_scale);
        }

        let mut threads = Vec::new();
        let server = crate::httpd::Shutdown::new();
        {
            let (routes, stop) = (Arc::new(routes::Routes(Arc::clone(&shared))), server.clone());
            let opts = crate::httpd::Options {
                io_threads: cfg.workers.clamp(1, 4),
                // Loopback test infrastructure: clients' pools (reqwest: 90 s) close idle
                // connections before the emulator does, so a reused connection is never cut.
                head_timeout: Duration::from_secs(300),
                head_limit: 64 * 1024,
                drain_timeout: Duration::from_secs(2),
                lifecycle: log::Level::Debug,
                ..crate::httpd::Options::new("sandbox-http")
            };
            threads.push(
                std::thread::Builder::new()
                    .name("sandbox-http".into())
                    .spawn(move || {
                        if let Err(e) = crate::httpd::serve(listener, routes, &opts, &stop) {
                            log::error!("sandbox: the listener failed: {e:#}");
                        }
                    })
                    .context("starting the HTTP server")?,
            );
        }
        // A manual clock delivers on the thread that moves it (`advance_to`); a scaled one has a
        // thread that runs the schedule and two that POST.
        if !cfg.manual_clock {
            let (tx, rx) = std::sync::mpsc::channel();
            let rx = Arc::new(Mutex::new(rx));
            {
                let shared = Arc::clone(&shared);
                threads.push(
                    std::thread::Builder::new()
                        .name("sandbox-tick".into())
                        .spawn(move || delivery::tick_loop(shared, tx))
                        .context("starting the clock thread")?,
                );
            }
            for n in 0..2 {
                let (shared, rx, timeout) = (Arc::clone(&shared), Arc::clone(&rx), cfg.delivery_timeout);
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("sandbox-delivery-{n}"))
                        .spawn(move || delivery::delivery_loop(shared, rx, timeout))
                        .context("starting a delivery thread")?,
                );
            }
        }
        Ok(Sandbox {
            shared,
            server,
            threads,
            url,
            project_id,
            private_key_pem,
            private_key_path,
            delivery_timeout: cfg.delivery_timeout,
        })
    }

    /// `http://127.0.0.1:PORT`; clients call `{url}/v2/...`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The first registered project.
    pub fn project_id(&self) -> String {
        self.project_id.clone()
    }

    /// The created project's private key (SEC1 PEM), when the emulator created the project.
    pub fn private_key_pem(&self) -> Option<String> {
        self.private_key_pem.clone()
    }

    /// Where the created project's key was written or found, when a key dir was given.
    pub fn private_key_path(&self) -> Option<PathBuf> {
        self.private_key_path.clone()
    }

    /// The key webhooks are signed with, as `GET /v2/public-key` serves it.
    pub fn public_key_pem(&self) -> String {
        self.shared.public_key_pem.clone()
    }

    pub fn workspace_id(&self) -> String {
        lock::lock(&self.shared).workspace_id.clone()
    }

    pub fn seed(&self) -> u64 {
        lock::lock(&self.shared).seed
    }

    /// The simulated clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    /// Moves a manual clock forward to `t` and runs everything due by then: payments, credits,
    /// transfer steps, and every webhook delivery (each POST answered, or timed out, before this
    /// returns; retries fall due later). Errors for a scaled clock or a `t` in the past.
    pub fn advance_to(&self, t: DateTime<Utc>) -> anyhow::Result<Moved> {
        delivery::advance_to(&self.shared, delivery::MoveTo::At(t)).map_err(anyhow::Error::msg)
    }

    /// Moves a manual clock `by` forward from where it is when the move starts.
    pub fn advance(&self, by: chrono::Duration) -> anyhow::Result<Moved> {
        delivery::advance_to(&self.shared, delivery::MoveTo::By(by)).map_err(anyhow::Error::msg)
    }

    pub fn set_faults(&self, f: Faults) {
        lock::lock(&self.shared).faults = f;
    }

    pub fn snapshot(&self) -> Snapshot {
        let now = self.shared.clock.now();
        lock::lock(&self.shared).snapshot(now)
    }

    /// Pays an open (or overdue) invoice now; its credit follows after the credit delay.
    pub fn pay_invoice(&self, id: &str, opts: PayOptions) -> anyhow::Result<()> {
        let mut state = lock::lock(&self.shared);
        let now = self.shared.clock.now();
        state.pay(id, &opts, now, true).map_err(anyhow::Error::msg)
    }

    /// Money coming back after a `success` transfer (a Pix return or chargeback): it becomes
    /// `failed` with a `failed` log whose `errors` is `[reason]` (empty: `RETURN_REASON`), a
    /// second transaction id, and `amount + fee` back in the balance. Refused unless `success`.
    pub fn return_transfer(&self, id: &str, reason: &str) -> anyhow::Result<()> {
        let mut state = lock::lock(&self.shared);
        let now = self.shared.clock.now();
        state.return_transfer(id, reason, now).map(drop).map_err(|(_, m)| anyhow::anyhow!(m))
    }

    /// Reverses a paid, credited invoice down to `amount` (0: all of it), as
    /// `PATCH /v2/invoice/{id}` with a lower amount does: a `reversed` log, a transaction id, the
    /// difference out of the balance.
    pub fn reverse_invoice(&self, id: &str, amount: i64) -> anyhow::Result<()> {
        let mut state = lock::lock(&self.shared);
        let now = self.shared.clock.now();
        state.reverse_invoice(id, amount, now).map(drop).map_err(|(_, m)| anyhow::anyhow!(m))
    }

    /// An event of another workspace, in the delivered webhook form and signed with this
    /// emulator's webhook key (as Stark Bank signs every workspace's events with one key). It is
    /// not stored: `GET /v2/event/{id}` does not know it. Refused: our own workspace id or one of
    /// our ids, an invoice `externalId`, a bad tax id.
    pub fn foreign_event(&self, spec: &ForeignEvent) -> anyhow::Result<SignedEvent> {
        let mut state = lock::lock(&self.shared);
        let now = self.shared.clock.now();
        state.foreign_event(spec, now).map_err(anyhow::Error::msg)
    }

    /// POSTs a webhook body as the delivery threads do (`Content-Type`, `Digital-Signature`, the
    /// delivery timeout) and returns the HTTP status. An error is a connection failure or timeout.
    pub fn deliver(&self, url: &str, body: &str, signature: &str) -> anyhow::Result<u16> {
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(self.delivery_timeout.min(Duration::from_secs(2)))
            .timeout(self.delivery_timeout)
            .user_agent(WEBHOOK_USER_AGENT)
            .build()
            .context("building the webhook client")?;
        let resp = client
            .post(url)
            .header("Content-Type", "application/json")
            .header("Digital-Signature", signature)
            .body(body.to_string())
            .send()
            .with_context(|| format!("POST {url}"))?;
        Ok(resp.status().as_u16())
    }

    /// Stops the listener and every thread (a webhook POST in flight may take up to the
    /// delivery timeout, a slow commit its `slow_commit_ms`).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.server.trigger();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop();
    }
}

fn time_text(t: DateTime<Utc>) -> String {
    crate::starkbank::time::format(t)
}
