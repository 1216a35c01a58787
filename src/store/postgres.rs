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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::location::PgTarget;

/// How long connecting may take when the URL does not say (`connect_timeout=`).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A request the server never acknowledges fails after this (TCP_USER_TIMEOUT).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a run that ends tries to give its lease back (the server may be restarting), at
/// most: never more than half the lease, after which waiting saves less than it costs.
const LEASE_RELEASE_PATIENCE: Duration = Duration::from_secs(5);
/// The advisory lock key of schema changes ("STRM").
const MIGRATE_LOCK_KEY: i64 = 0x5354_524D;

/// The schema, in order; `stark_sweep_schema.version` records how many are applied.
const MIGRATIONS: &[&str] = &[include_str!("postgres/0001_schema.sql"), include_str!("postgres/0002_attempts.sql")];

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
/// renewed every quarter of its length by a thread of its own on a connection of its own, and
/// deleted when dropped (on a new connection if the old one was lost). A holder that dies
/// (kill -9, a lost host) leaves a row that expires one lease length later.
///
/// The holder also knows, by its own monotonic clock, until when the lease is surely still
/// its own: from the moment it sent the last renewal that succeeded, one lease length (the
/// server counts from when it received it, later). A renewal that finds the row gone or taken,
/// or no renewal for that long, loses it for good: `is_held` turns false, and the jobs check it
/// before each step they cannot undo.
pub struct Lease {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    held: Arc<Held>,
}

struct Held {
    until: Mutex<Instant>,
    lost: AtomicBool,
}

impl Held {
    fn is_held(&self) -> bool {
        !self.lost.load(Ordering::SeqCst) && Instant::now() < *self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn renewed(&self, sent: Instant, lease: Duration) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = sent + lease;
    }
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
        let lease = target.lease;
        let mut client = lease_connection(target)?;
        let holder = holder_id();
        let seconds = lease.as_secs_f64();
        let sent = Instant::now();
        let taken = client
            .query_opt(TAKE_LEASE, &[&name, &holder, &seconds])
            .with_context(|| format!("taking the {name} lease"))?
            .is_some();
        if !taken {
            return Ok(None);
        }
        let held = Arc::new(Held { until: Mutex::new(sent + lease), lost: AtomicBool::new(false) });
        let (stop, stopped) = mpsc::channel::<()>();
        let (name, target, renewing) = (name.to_string(), target.clone(), held.clone());
        let thread = std::thread::Builder::new().name(format!("lease-{name}")).spawn(move || {
            let mut client = Some(client);
            loop {
                match stopped.recv_timeout(lease / 4) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // Dropped: give it back now rather than at expiry.
                    _ => return release(client, &target, &name, &holder, &renewing),
                }
                if renewing.lost.load(Ordering::SeqCst) {
                    continue;
                }
                if client.as_ref().is_none_or(postgres::Client::is_closed) {
                    client = lease_connection(&target).ok();
                }
                let sent = Instant::now();
                let renewed = client.as_mut().map(|c| c.execute(RENEW_LEASE, &[&name, &holder, &seconds]));
                match renewed {
                    Some(Ok(1)) => renewing.renewed(sent, lease),
                    Some(Ok(_)) => {
                        renewing.lost.store(true, Ordering::SeqCst);
                        log::error!(
                            "the {name} lease expired while this run held it (another run may be working now): this run stops before its next step that cannot be undone"
                        );
                    }
                    Some(Err(e)) => log::warn!("renewing the {name} lease: {e}"),
                    None => log::warn!("renewing the {name} lease: the database is unreachable"),
                }
                if !renewing.is_held() && !renewing.lost.swap(true, Ordering::SeqCst) {
                    log::error!(
                        "the {name} lease could not be renewed for {} s: another run may take over; this run stops before its next step that cannot be undone",
                        lease.as_secs()
                    );
                }
            }
        })?;
        Ok(Some(Lease { stop: Some(stop), thread: Some(thread), held }))
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

    /// Whether the lease is surely still this run's (see the type's comment).
    pub(crate) fn is_held(&self) -> bool {
        self.held.is_held()
    }
}

/// The lease's own connection: no statement on it may outlast a quarter of the lease.
fn lease_connection(target: &PgTarget) -> anyhow::Result<postgres::Client> {
    let mut client = connect(target)?;
    let timeout_ms = (target.lease.as_millis() / 4).max(500);
    client.batch_execute(&format!("SET statement_timeout = {timeout_ms}"))?;
    Ok(client)
}

/// Deletes the lease row, on a new connection when the old one was lost (a restart of the
/// server during the run), trying for a little while: a row left behind would keep every
/// other run of the job out until it expires.
fn release(mut client: Option<postgres::Client>, target: &PgTarget, name: &str, holder: &str, held: &Held) {
    if held.lost.load(Ordering::SeqCst) {
        return; // someone else's row now, or nobody's
    }
    let give_up = Instant::now() + LEASE_RELEASE_PATIENCE.min(target.lease / 2);
    loop {
        if client.as_ref().is_none_or(postgres::Client::is_closed) {
            client = lease_connection(target).ok();
        }
        if let Some(c) = client.as_mut()
            && c.execute(DROP_LEASE, &[&name, &holder]).is_ok()
        {
            return;
        }
        if Instant::now() >= give_up {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    log::warn!("could not give the {name} lease back; it expires on its own within {} s", target.lease.as_secs());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{POSTGRES_ENV, fresh_postgres_database};
    use crate::store::{Location, Store};

    /// A store on a database of its own, and its target with a lease of `lease` seconds; `None`
    /// when the tests run on SQLite only.
    fn postgres(lease: u64) -> Option<(Store, PgTarget)> {
        let admin = std::env::var(POSTGRES_ENV).ok().filter(|a| !a.is_empty())?;
        let location = fresh_postgres_database(&admin).with_lease_seconds(lease).unwrap();
        let Location::Postgres(target) = &location else { unreachable!() };
        let target = (**target).clone();
        Some((Store::open(location).unwrap(), target))
    }

    fn holders(target: &PgTarget) -> Vec<String> {
        connect(target).unwrap().query("SELECT holder FROM leases", &[]).unwrap().iter().map(|r| r.get(0)).collect()
    }

    #[test]
    fn every_text_column_compares_byte_by_byte() {
        let Some((_store, target)) = postgres(60) else { return };
        let rows = connect(&target)
            .unwrap()
            .query(
                "SELECT table_name || '.' || column_name FROM information_schema.columns
                 WHERE table_schema = current_schema() AND data_type = 'text'
                   AND table_name <> 'stark_sweep_schema' AND collation_name IS DISTINCT FROM 'C'",
                &[],
            )
            .unwrap();
        let loose: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert!(loose.is_empty(), "text columns without COLLATE \"C\": {loose:?}");
    }

    #[test]
    fn a_lease_is_given_back_even_when_its_connection_was_lost() {
        let Some((_store, target)) = postgres(60) else { return };
        let lease = Lease::try_take(&target, "job").unwrap().expect("free");
        assert!(Lease::try_take(&target, "job").unwrap().is_none(), "held");
        // A restart, as far as this run can tell: every connection of the database is cut.
        connect(&target)
            .unwrap()
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap();
        drop(lease);
        assert!(holders(&target).is_empty(), "the row is deleted, not left to expire");
        assert!(Lease::try_take(&target, "job").unwrap().is_some());
    }

    #[test]
    fn a_store_whose_connection_was_cut_between_transactions_carries_on_at_once() {
        let Some((mut store, target)) = postgres(60) else { return };
        let cut = || {
            connect(&target)
                .unwrap()
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .unwrap()
        };
        cut();
        store.ping().expect("a read finds the connection closed and runs again on a new one");
        cut();
        store.engage_kill_switch("drill", chrono::Utc::now()).expect("so does a write (its BEGIN)");
        assert!(store.kill_switch().unwrap().is_some());
    }

    #[test]
    fn a_lease_taken_over_is_lost_for_good_and_not_deleted() {
        let Some((_store, target)) = postgres(2) else { return };
        let lease = Lease::try_take(&target, "job").unwrap().expect("free");
        assert!(lease.is_held());
        connect(&target).unwrap().execute("UPDATE leases SET holder = 'elsewhere'", &[]).unwrap();
        std::thread::sleep(Duration::from_millis(1200)); // two renewals
        assert!(!lease.is_held());
        drop(lease);
        assert_eq!(holders(&target), ["elsewhere"], "another run's row stays");
    }

    #[test]
    fn a_lease_whose_renewals_do_not_get_through_is_lost_in_time() {
        let Some((_store, target)) = postgres(2) else { return };
        let lease = Lease::try_take(&target, "job").unwrap().expect("free");
        // The renewals wait on a row lock (a stalled server, as the holder sees it), each until
        // the statement timeout: after one lease length without a renewal, the run knows.
        let mut blocker = connect(&target).unwrap();
        let mut tx = blocker.transaction().unwrap();
        tx.execute("SELECT holder FROM leases FOR UPDATE", &[]).unwrap();
        std::thread::sleep(Duration::from_millis(2600));
        assert!(!lease.is_held(), "held past its length without a renewal");
        tx.rollback().unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        assert!(!lease.is_held(), "lost is for good: another run may have started meanwhile");
    }
}
