//! The inbound webhook listener: verify the raw body, store it durably, then answer.
//!
//! Owns: routing (`POST /webhook`, `GET /health`), the thread layout, limits and the answer
//! for every failure; `serve(listener, config, keys, shutdown)` is the seam that the CLI (with
//! ctrlc) and the tests (port 0, in process) both use.
//! Does not own: signature math (`starkbank::verify`), event rules (`starkbank::event`), SQL
//! (`store`), or what happens after a credit is stored (the `on_credit` hook).
//!
//! Threads and queues (tiny_http has no timeouts and no header or body limits):
//! - tiny_http: one accept thread and one thread per connection, which reads the request line
//!   and headers (and bodies of 1 KiB or less) and queues the request.
//! - `serve` (the caller's thread): takes requests off that queue. It answers `/health`, 404
//!   and 405 itself when the request has no body left to read, and hands everything else to:
//! - request threads (`Elastic`, at most `max_requests` at once, reused while busy): each reads
//!   one body through `take(limit + 1)`, verifies it (at most `workers` verifying at once,
//!   `Permits`), parses it, queues it to the writer and waits for the commit, then answers.
//!   A client that stalls mid-body holds only its own thread; past the cap, new requests get
//!   503 at once rather than waiting behind stalled ones.
//! - the writer (one thread, bounded channel): group commit, see `writer`.
//! - the key loader (one thread, until the first key is loaded) and the credit hook runner.
//!
//! Known tiny_http 0.12 limits that our code cannot fix, covered by the proxy in front
//! (deploy/nginx): unbounded header buffering before we see a request (we answer 431 after the
//! fact), no socket timeouts, and a connection pool that can leave a new connection queued
//! until another connection closes (so the proxy uses one upstream connection per delivery).

mod credit;
mod handler;
mod pool;
mod writer;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::config::Clock;
use crate::starkbank::verify::KeyCache;
use crate::store::Store;

pub use credit::OnCreditStored;

/// Default largest body: Stark Bank events are a few KiB.
pub const DEFAULT_BODY_LIMIT: u64 = 1024 * 1024;
/// Largest request head (all header lines) we accept, as nginx's default large buffers.
pub const HEADER_LIMIT: usize = 32 * 1024;

/// Everything `serve` needs besides the socket, the key and the stop signal.
#[derive(Clone)]
pub struct Config {
    pub db: PathBuf,
    pub body_limit: u64,
    /// Requests verifying at once.
    pub workers: usize,
    /// Requests in flight (reading, verifying, waiting for the commit) at once.
    pub max_requests: usize,
    /// Refuse (403) events of any other workspace, and events that do not name one.
    pub workspace_id: Option<String>,
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
            .field("on_credit", &self.on_credit.is_some())
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

impl Config {
    pub fn new(db: PathBuf) -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self {
            db,
            body_limit: DEFAULT_BODY_LIMIT,
            workers: 2 * cpus,
            max_requests: 512,
            workspace_id: None,
            on_credit: None,
            drain_timeout: Duration::from_secs(10),
            clock: Clock::real(),
        }
    }
}

/// A stop signal: cloned into the signal handler (or a test), checked by `serve`.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How often `serve` looks at the stop signal while idle.
const POLL: Duration = Duration::from_millis(50);

/// Serves until `shutdown` fires; then stops accepting, finishes the requests in flight (their
/// commits and answers, up to `drain_timeout`) and returns.
pub fn serve(listener: TcpListener, cfg: Config, keys: Arc<KeyCache>, shutdown: Shutdown) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("reading the listening address")?;
    crate::net::no_delay(&listener).context("setting TCP_NODELAY")?;
    let store = Store::open(&cfg.db)?;
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| anyhow::anyhow!("starting the HTTP server on {addr}: {e}"))?;

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
        healthy: healthy.clone(),
        credits: credits.as_ref().map(|(r, _)| r.clone()),
    };
    let writer_thread = std::thread::Builder::new().name("writer".into()).spawn(move || w.run())?;
    let loader = spawn_key_loader(keys.clone(), shutdown.clone())?;

    let shared = Arc::new(handler::Shared::new(&cfg, keys, healthy, tx.clone()));
    let requests = {
        let shared = shared.clone();
        pool::Elastic::new("request", cfg.max_requests, 512 * 1024, move |rq| handler::handle(&shared, rq))
    };
    log::info!("listening on http://{addr} (POST /webhook, GET /health)");

    let mut failure = None;
    while !shutdown.is_triggered() {
        match server.recv_timeout(POLL) {
            Ok(Some(rq)) => dispatch(&shared, &requests, rq),
            Ok(None) => {}
            Err(e) => {
                // tiny_http's accept loop has died (e.g. out of file descriptors); nothing more
                // will arrive. Drain what is in flight, then fail so a supervisor restarts us.
                log::error!("the HTTP server stopped accepting: {e}");
                failure = Some(e);
                shutdown.trigger();
            }
        }
    }

    // Stop accepting: take what is already queued, then close the socket.
    log::info!("shutting down: finishing requests in flight");
    while let Ok(Some(rq)) = server.try_recv() {
        dispatch(&shared, &requests, rq);
    }
    drop(server);
    let deadline = Instant::now() + cfg.drain_timeout;
    if !requests.wait_idle(deadline) {
        log::warn!("{} request(s) still unfinished after {:?}; leaving them", requests.in_flight(), cfg.drain_timeout);
    }
    let _ = tx.send(writer::Msg::Stop);
    if writer_thread.join().is_err() {
        log::error!("the writer thread panicked");
    }
    if let Some((runner, handle)) = credits {
        runner.stop();
        let _ = handle.join();
    }
    let _ = loader.join();
    match failure {
        Some(e) => Err(anyhow::anyhow!("the listener on {addr} stopped accepting connections: {e}")),
        None => {
            log::info!("stopped");
            Ok(())
        }
    }
}

fn dispatch(shared: &Arc<handler::Shared>, requests: &pool::Elastic<tiny_http::Request>, rq: tiny_http::Request) {
    let rq = match handler::answer_inline(shared, rq) {
        None => return,
        Some(rq) => rq,
    };
    if let Err(rq) = requests.try_execute(rq) {
        handler::refuse_busy(shared, rq);
    }
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
