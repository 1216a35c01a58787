//! The inbound webhook listener (`serve-webhook`): verify the raw body, store it durably, then
//! answer. The subscriptions that make Stark Bank deliver here are `cmd::subscription`'s.
//!
//! Owns: routing (`POST /webhook`, `GET /health`, `GET /metrics`), the thread layout, and the answer for every
//! failure; `serve(listener, config, keys, shutdown)` is the seam that the CLI (with ctrlc) and
//! the tests (port 0, in process) both use.
//! Does not own: HTTP connections, head limits and timeouts (`httpd`), signature math
//! (`starkbank::verify`), event rules (`starkbank::event`), SQL (`store`), or what happens after
//! a credit is stored (the `on_credit` hook).
//!
//! Threads and queues:
//! - `httpd`: connections are tasks on two I/O threads; each request's body is read there
//!   (bounded by `body_limit` and a timeout), then `handler` runs on a blocking thread of its own
//!   (at most `max_requests` at once; past that, 503 at once): it verifies the signature (at most
//!   `workers` verifying at once, `Permits`), parses the event, queues it to the writer, waits for
//!   the commit, and answers.
//! - the writer (one thread, bounded channel): group commit, see `writer`.
//! - the key loader (one thread, until the first key is loaded) and the credit hook runner.

mod credit;
mod handler;
mod permits;
mod writer;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;

use crate::clock::Clock;
use crate::starkbank::verify::KeyCache;
use crate::store::Store;

pub use crate::httpd::Shutdown;
pub use credit::OnCreditStored;

/// What Stark Bank says of an event looked up by id with our own credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The API shows it to us: it is our workspace's (which one, when the answer says).
    Ours { workspace: Option<String> },
    /// The API does not know it: another workspace's.
    NotOurs,
}

/// `GET /v2/event/{id}` as the project (`Err`: cannot tell now, e.g. Stark Bank unreachable).
pub type LookupEvent = Arc<dyn Fn(&str) -> Result<Lookup, String> + Send + Sync + 'static>;

/// Default largest body: Stark Bank events are a few KiB.
pub const DEFAULT_BODY_LIMIT: u64 = 1024 * 1024;
/// Where the listener binds: loopback, behind the TLS reverse proxy.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
/// Largest request head (request line and headers) we accept, as nginx's default large buffers.
pub const HEADER_LIMIT: usize = 32 * 1024;
/// Idle keep-alive connections are closed after this long (nginx opens one per delivery anyway).
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything `serve` needs besides the socket, the key and the stop signal.
#[derive(Clone)]
pub struct Config {
    pub db: crate::store::Location,
    pub body_limit: u64,
    /// Requests verifying at once.
    pub workers: usize,
    /// Requests in flight (reading, verifying, waiting for the commit) at once.
    pub max_requests: usize,
    /// `STARKBANK_WORKSPACE_ID`, when set: events naming another are refused (403), and the
    /// pinned workspace must agree.
    pub workspace_id: Option<String>,
    /// Looks an event up with our own credentials, to prove its workspace while none is pinned
    /// (or when it names none). `None` without credentials: such events get 503 until a
    /// workspace is pinned (by `process-events` or `issue-invoices`).
    pub lookup_event: Option<LookupEvent>,
    /// Called (in the background, coalesced) after a new `invoice`/`credited` event is stored.
    pub on_credit: Option<OnCreditStored>,
    /// How long a shutdown waits for in-flight requests before giving up on them.
    pub drain_timeout: Duration,
    pub clock: Clock,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("db", &self.db)
            .field("body_limit", &self.body_limit)
            .field("workers", &self.workers)
            .field("max_requests", &self.max_requests)
            .field("workspace_id", &self.workspace_id)
            .field("lookup_event", &self.lookup_event.is_some())
            .field("on_credit", &self.on_credit.is_some())
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

impl Config {
    pub fn new(db: impl Into<crate::store::Location>) -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self {
            db: db.into(),
            body_limit: DEFAULT_BODY_LIMIT,
            workers: 2 * cpus,
            max_requests: 512,
            workspace_id: None,
            lookup_event: None,
            on_credit: None,
            drain_timeout: Duration::from_secs(10),
            clock: Clock::real(),
        }
    }
}

/// Serves until `shutdown` fires; then stops accepting, finishes the requests in flight (their
/// commits and answers, up to `drain_timeout`) and returns.
pub fn serve(listener: TcpListener, cfg: Config, keys: Arc<KeyCache>, shutdown: Shutdown) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("reading the listening address")?;
    let store = Store::open(&cfg.db)?;
    // A database belongs to one workspace: a configuration that says otherwise stops here.
    let pinned = crate::workspace::check_configured(&store, cfg.workspace_id.as_deref())?;
    match &pinned {
        Some(ws) => log::info!("accepting events of workspace {ws} only (pinned in {})", cfg.db.display()),
        None if cfg.lookup_event.is_some() => {
            log::info!("workspace not pinned yet: the first event is looked up with this project's credentials")
        }
        None => log::warn!(
            "workspace not pinned yet and no API credentials: events get 503 until `stark-sweep process-events` pins it"
        ),
    }
    let healthy = Arc::new(AtomicBool::new(true));
    let credits = match cfg.on_credit.clone() {
        Some(hook) => Some(credit::CreditRunner::start(hook).context("starting the credit hook thread")?),
        None => None,
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<writer::Msg>(4 * 1024);
    let w = writer::Writer {
        store,
        rx,
        clock: cfg.clock,
        configured_workspace: cfg.workspace_id.clone(),
        healthy: healthy.clone(),
        credits: credits.as_ref().map(|(r, _)| r.clone()),
    };
    let writer_thread = std::thread::Builder::new().name("writer".into()).spawn(move || w.run())?;
    let loader = spawn_key_loader(keys.clone(), shutdown.clone())?;
    let handler = Arc::new(handler::Webhooks::new(&cfg, keys, healthy, tx.clone(), pinned));
    let opts = crate::httpd::Options {
        head_limit: HEADER_LIMIT,
        head_timeout: HEAD_TIMEOUT,
        max_in_flight: cfg.max_requests,
        drain_timeout: cfg.drain_timeout,
        ..crate::httpd::Options::new("webhook")
    };
    log::info!("listening on http://{addr} (POST /webhook, GET /health, GET /metrics)");
    let served = crate::httpd::serve(listener, handler, &opts, &shutdown);
    // Every request has been answered (or abandoned after the drain timeout): commit what is
    // queued and stop the writer, then the helpers.
    shutdown.trigger();
    let _ = tx.send(writer::Msg::Stop);
    if writer_thread.join().is_err() {
        log::error!("the writer thread panicked");
    }
    if let Some((runner, handle)) = credits {
        runner.stop();
        let _ = handle.join();
    }
    let _ = loader.join();
    served?;
    log::info!("stopped");
    Ok(())
}

/// Loads the public key in the background until it is there (KeyCache rate-limits the
/// fetches), so that a Stark Bank outage at start does not stop `/health` from answering.
fn spawn_key_loader(keys: Arc<KeyCache>, shutdown: Shutdown) -> anyhow::Result<std::thread::JoinHandle<()>> {
    Ok(std::thread::Builder::new().name("key-loader".into()).spawn(move || {
        let mut logged = false;
        while !keys.is_loaded() && !shutdown.is_triggered() {
            match keys.ensure_loaded() {
                Ok(()) => break,
                Err(e) if !logged || !e.to_string().contains("retried shortly") => {
                    log::warn!("{e}; answering 503 until it loads");
                    logged = true;
                }
                Err(_) => {}
            }
            for _ in 0..10 {
                if shutdown.is_triggered() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })?)
}
