//! The Postgres backend: connecting (TLS by rustls, no OpenSSL), the schema, and job leases.
//!
//! Owns: connection settings we insist on (connect timeout, TCP keepalives and user timeout, so
//! a vanished server fails a run instead of hanging it), applying `postgres/*.sql` once under a
//! transaction-scoped advisory lock, and the `leases` rows that keep one run of a job alive at a
//! time across hosts. Does not own: the queries (written once for both backends, see `db`).
//!
//! Every lock here is transaction-scoped or a row: both work through PgBouncer in transaction
//! pooling, where a session advisory lock would be taken on one server connection and
//! released, or not, on another. Prepared statements are named, so PgBouncer needs
//! `max_prepared_statements` (1.21 and later) in that mode.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;

use super::location::PgTarget;

/// How long connecting may take when the URL does not say (`connect_timeout=`).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A request the server never acknowledges fails after this (TCP_USER_TIMEOUT).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// A lease outlives its holder's death by at most this.
const LEASE_SECONDS: u64 = 60;
/// How often a live holder renews its lease.
const LEASE_RENEW: Duration = Duration::from_secs(15);
/// The advisory lock key of schema changes ("STRM").
const MIGRATE_LOCK_KEY: i64 = 0x5354_524D;

/// The schema, in order; `stark_sweep_schema.version` records how many are applied.
const MIGRATIONS: &[&str] = &[include_str!("postgres/0001_schema.sql")];

/// A new connection to `target`.
pub(crate) fn connect(target: &PgTarget) -> anyhow::Result<postgres::Client> {
    let mut config = target.config.clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    config.keepalives(true).keepalives_idle(Duration::from_secs(30)).tcp_user_timeout(TCP_USER_TIMEOUT);
    if config.get_application_name().is_none() {
        config.application_name("stark-sweep");
    }
    let client = match config.get_ssl_mode() {
        postgres::config::SslMode::Disable => config.connect(postgres::NoTls),
        _ => config.connect(tls()?),
    };
    client.map_err(anyhow::Error::from).with_context(|| format!("connecting to the database {target:?}"))
}

/// Verifies the server's certificate against the system's roots (`sslmode=require` here is
/// libpq's `verify-full`: a certificate that does not verify is refused).
fn tls() -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    static CONFIG: std::sync::OnceLock<Result<rustls::ClientConfig, String>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .map_err(|e| e.to_string())
    });
    match config {
        Ok(c) => Ok(tokio_postgres_rustls::MakeRustlsConnect::new(c.clone())),
        Err(e) => anyhow::bail!("setting up TLS for the database: {e}"),
    }
}

/// Applies what is missing of the schema, once, whoever else is starting at the same moment.
pub(crate) fn migrate(client: &mut postgres::Client) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {}", super::db::LOCK_TIMEOUT_MS))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK_KEY])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS stark_sweep_schema (version BIGINT NOT NULL)")?;
    let current: i64 = match tx.query_opt("SELECT version FROM stark_sweep_schema", &[])? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO stark_sweep_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    let known = MIGRATIONS.len() as i64;
    if current > known {
        anyhow::bail!(
            "it was written by a newer stark-sweep (schema {current}, this one knows {known}); to fix: upgrade stark-sweep"
        );
    }
    if current == known {
        return Ok(());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).with_context(|| format!("applying Postgres schema {}", i + 1))?;
    }
    tx.execute("UPDATE stark_sweep_schema SET version = $1", &[&known])?;
    tx.commit()?;
    Ok(())
}

/// One run's hold on a job (`issue-invoices`, `sweep`) across every host: a row in `leases`,
/// renewed by a thread of its own on a connection of its own, deleted when dropped. A holder
/// that dies (kill -9, a lost host) leaves a row that expires `LEASE_SECONDS` later.
pub struct Lease {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

const TAKE_LEASE: &str =
    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
     WHERE leases.expires_at < now()
     RETURNING holder";
const RENEW_LEASE: &str =
    "UPDATE leases SET expires_at = now() + make_interval(secs => $3) WHERE name = $1 AND holder = $2";
const DROP_LEASE: &str = "DELETE FROM leases WHERE name = $1 AND holder = $2";

impl Lease {
    /// `Ok(None)` when a live run elsewhere holds it.
    pub(crate) fn try_take(target: &PgTarget, name: &str) -> anyhow::Result<Option<Self>> {
        let mut client = connect(target)?;
        let holder = holder_id();
        let seconds = LEASE_SECONDS as f64;
        let taken = client
            .query_opt(TAKE_LEASE, &[&name, &holder, &seconds])
            .with_context(|| format!("taking the {name} lease"))?
            .is_some();
        if !taken {
            return Ok(None);
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let (name, target) = (name.to_string(), target.clone());
        let thread = std::thread::Builder::new().name(format!("lease-{name}")).spawn(move || {
            let mut client = Some(client);
            loop {
                match stopped.recv_timeout(LEASE_RENEW) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // Dropped: give it back now rather than at expiry.
                    _ => {
                        if let Some(c) = client.as_mut() {
                            let _ = c.execute(DROP_LEASE, &[&name, &holder]);
                        }
                        return;
                    }
                }
                if client.as_ref().is_none_or(postgres::Client::is_closed) {
                    client = connect(&target).ok();
                }
                let renewed = client.as_mut().map(|c| c.execute(RENEW_LEASE, &[&name, &holder, &seconds]));
                match renewed {
                    Some(Ok(1)) => {}
                    Some(Ok(_)) => log::error!(
                        "the {name} lease expired while this run held it (another run may be working now); exactly-once still rests on the externalIds and tags"
                    ),
                    Some(Err(e)) => log::warn!("renewing the {name} lease: {e}"),
                    None => log::warn!("renewing the {name} lease: the database is unreachable"),
                }
            }
        })?;
        Ok(Some(Lease { stop: Some(stop), thread: Some(thread) }))
    }

    /// Waits for the lease (in-process background work that must not be skipped).
    pub(crate) fn take(target: &PgTarget, name: &str) -> anyhow::Result<Self> {
        loop {
            if let Some(lease) = Self::try_take(target, name)? {
                return Ok(lease);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `host:pid:random`: which run holds a lease (shown to whoever looks at the row).
fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}:{:08x}", host.trim(), std::process::id(), rand::random::<u32>())
}

/// Whether a Postgres error is one that passes (exit 75, or 503): the server is gone,
/// restarting, out of connections, or a lock or serialization conflict; and whether it is a
/// configuration mistake (exit 78): authentication, a database or role that does not exist.
pub(crate) fn classify(e: &postgres::Error) -> Option<super::ErrorClass> {
    let Some(code) = e.code() else {
        // No SQLSTATE: temporary only when the connection itself failed (refused, reset, timed
        // out, closed); a value that does not convert is a bug (exit 1), a missing password or
        // TLS that the server lacks a configuration mistake.
        let io = std::error::Error::source(e).is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
        if e.is_closed() || io {
            return Some(super::ErrorClass::Temporary);
        }
        let text = e.to_string();
        return (text.contains("password") || text.contains("TLS") || text.contains("tls"))
            .then_some(super::ErrorClass::Config);
    };
    let code = code.code();
    if code.starts_with("08")
        || code.starts_with("57P")
        || matches!(code, "53300" | "55P03" | "40001" | "40P01" | "25006")
    {
        Some(super::ErrorClass::Temporary)
    } else if code.starts_with("28") || matches!(code, "3D000") {
        Some(super::ErrorClass::Config)
    } else {
        None
    }
}
