//! All SQL lives here. One SQLite file, WAL mode, a busy timeout, foreign keys on, and
//! `synchronous=FULL` so a commit that answered 200 survives a power cut.
//!
//! Owns: opening (with a 0600 file, owned by its directory's owner), embedded migrations run on
//! open, and the queries of each part of the product (`events`, `campaign`, `credits`,
//! `reconcile`, `metrics`, `trace`). Does not own: HTTP or decisions.
//!
//! Routine runs read what is open, never the whole history: every query a timer runs goes
//! through an index on what is open (see `migrations/0005_open_work.sql`). A unit test counts
//! the SQLite steps of an idle sweep on a short and a long history
//! (`sweep::tests::an_idle_run_costs_the_same_whatever_the_history`), so a query that scans a
//! history table fails a test, not a deployment in its thousandth day.

mod campaign;
mod copy;
mod credits;
pub(crate) mod db;
mod events;
mod location;
mod metrics;
mod postgres;
mod reconcile;
mod settings;
mod trace;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::Connection;

pub use campaign::*;
pub use copy::{TableFigures, migrate_store};
pub use credits::*;
pub use events::*;
pub use location::{DEFAULT_LEASE_SECONDS, Location, PgTarget};
pub use metrics::*;
pub use reconcile::*;
pub use settings::*;
pub use trace::*;

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Migrations in order; `PRAGMA user_version` records how many are applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_trust.sql"),
    include_str!("migrations/0003_recovery.sql"),
    include_str!("migrations/0004_limits.sql"),
    include_str!("migrations/0005_open_work.sql"),
    include_str!("migrations/0006_attempts.sql"),
];

pub struct Store {
    db: db::Db,
    location: Location,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("location", &self.location).finish()
    }
}

/// What kind of failure a store error is, for the exit code (or the listener's 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// It passes: busy, locked, the server restarting or unreachable (exit 75, 503).
    Temporary,
    /// A configuration mistake: wrong password, no such database (exit 78).
    Config,
}

/// The class of one cause in an error's chain, if it is a store error that has one.
pub fn classify_error(cause: &(dyn std::error::Error + 'static)) -> Option<ErrorClass> {
    if let Some(e) = cause.downcast_ref::<rusqlite::Error>() {
        return is_busy(e).then_some(ErrorClass::Temporary);
    }
    cause.downcast_ref::<::postgres::Error>().and_then(postgres::classify)
}

impl Store {
    /// Opens the store at `at` (a SQLite file or a Postgres URL), creating and migrating it.
    pub fn open(at: impl Into<Location>) -> anyhow::Result<Self> {
        match at.into() {
            Location::Sqlite(path) => Self::open_file(&path),
            Location::Postgres(target) => {
                let mut client = postgres::connect(&target)?;
                postgres::migrate(&mut client).with_context(|| format!("migrating the database {target:?}"))?;
                Ok(Self { db: db::Db::postgres(client, (*target).clone()), location: Location::Postgres(target) })
            }
        }
    }

    /// Opens (creating if needed, mode 0600) and migrates a SQLite file.
    fn open_file(path: &Path) -> anyhow::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            anyhow::bail!(
                "database {}: the directory {} does not exist; to fix: create it or point STARK_SWEEP_DB elsewhere",
                path.display(),
                parent.display()
            );
        }
        if !path.exists() {
            // Create it ourselves so it is never world-readable, whatever the umask.
            match crate::files::write_private_file(path, b"", false) {
                Ok(()) => give_to_directory_owner(path)?,
                // Another process created it first.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating the database {}", path.display())),
            }
        }
        let conn = Connection::open(path).with_context(|| format!("opening the database {}", path.display()))?;
        let mut store = Self { db: db::Db::on_sqlite(conn), location: Location::Sqlite(path.to_path_buf()) };
        store.configure().with_context(|| format!("configuring the database {}", path.display()))?;
        store.migrate().with_context(|| format!("migrating the database {}", path.display()))?;
        Ok(store)
    }

    /// An in-memory SQLite copy of the store at `at`, migrated in memory if it is older, for a
    /// dry run: the original is only read (a SQLite file is opened read-only and its bytes stay
    /// as they are; a Postgres store is read in one snapshot).
    pub fn copy_of(at: impl Into<Location>) -> anyhow::Result<Self> {
        let path = match at.into() {
            Location::Sqlite(path) => path,
            pg @ Location::Postgres(_) => {
                let from = Self::open(&pg)?;
                let mut copy = Self::open_file(Path::new(":memory:"))?;
                copy.location = pg;
                copy::copy_tables(&from.db, &copy.db)?;
                return Ok(copy);
            }
        };
        let path = path.as_path();
        let src = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening the database {} read-only", path.display()))?;
        src.busy_timeout(BUSY_TIMEOUT)?;
        let mut conn = Connection::open_in_memory()?;
        {
            let backup = rusqlite::backup::Backup::new(&src, &mut conn)?;
            backup
                .run_to_completion(1024, Duration::from_millis(5), None)
                .with_context(|| format!("copying the database {}", path.display()))?;
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Self { db: db::Db::on_sqlite(conn), location: Location::Sqlite(path.to_path_buf()) };
        store.migrate().with_context(|| format!("migrating a copy of the database {}", path.display()))?;
        Ok(store)
    }

    /// A transaction that holds the write lock from its first statement. Every transaction that
    /// writes starts this way: a deferred one that reads first and then writes fails at once
    /// (SQLITE_BUSY, the busy timeout does not apply to the upgrade) when another process
    /// committed in between, which lost `serve-webhook --process` runs under load.
    fn write_tx(&mut self) -> anyhow::Result<db::Tx<'_>> {
        self.db.write_tx()
    }

    /// Caps SQLite's page cache of this connection at `kib` (nothing to do on Postgres).
    fn limit_page_cache(&self, kib: i64) -> anyhow::Result<()> {
        if let Some(conn) = self.db.sqlite() {
            conn.pragma_update(None, "cache_size", -kib)?;
        }
        Ok(())
    }

    /// The SQLite connection (opening, pragmas, migrations, test fixtures).
    #[allow(clippy::expect_used, reason = "only SQLite's opening path and tests call it, on a store made from a file")]
    fn sqlite(&self) -> &Connection {
        self.db.sqlite().expect("a SQLite store")
    }

    fn configure(&self) -> rusqlite::Result<()> {
        let conn = self.sqlite();
        conn.set_prepared_statement_cache_capacity(64);
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL is a property of the file, set once by whoever creates it. Switching takes an
        // exclusive lock and fails at once (no busy wait) while another process is migrating
        // the same new file: retry for as long as the busy timeout.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
            if mode.eq_ignore_ascii_case("wal") {
                break;
            }
            match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
                Ok(_) => break,
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    }

    fn migrate(&mut self) -> anyhow::Result<()> {
        let current: i64 = self.sqlite().pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if current > known {
            anyhow::bail!(
                "it was written by a newer stark-sweep (schema {current}, this one knows {known}); to fix: upgrade stark-sweep"
            );
        }
        if current == known {
            return Ok(());
        }
        // Foreign keys off while migrating (SQLite's procedure for rebuilding a table; the
        // pragma is a no-op inside a transaction), checked in full before each commit.
        self.sqlite().pragma_update(None, "foreign_keys", "OFF")?;
        let migrated = self.apply_migrations(current as usize);
        self.sqlite().pragma_update(None, "foreign_keys", "ON")?;
        migrated
    }

    fn apply_migrations(&mut self, from: usize) -> anyhow::Result<()> {
        let conn = self.sqlite();
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(from) {
            // Take the write lock before reading the version: another process may migrate the
            // same new file at the same moment.
            let tx = self.db.write_tx()?;
            // Re-check inside the write lock: another process may have migrated meanwhile.
            let now: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if now > i as i64 {
                continue;
            }
            conn.execute_batch(sql).with_context(|| format!("applying migration {}", i + 1))?;
            let broken: i64 = conn.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| r.get(0))?;
            anyhow::ensure!(
                broken == 0,
                "migration {} would leave {broken} broken references; nothing was changed",
                i + 1
            );
            conn.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Holds job `name` for the life of the value, unless a live run of it holds it already
    /// (`Ok(None)`): a lock file beside a SQLite file, a lease row in Postgres (any host).
    pub fn try_run_lock(&self, name: &str) -> anyhow::Result<Option<RunLock>> {
        Ok(match &self.location {
            Location::Sqlite(path) => RunLock::try_acquire(path, name)?,
            Location::Postgres(target) => postgres::Lease::try_take(target, name)?.map(RunLock::Lease),
        })
    }

    /// Waits for job `name` (in-process background work that must not be skipped).
    pub fn run_lock(&self, name: &str) -> anyhow::Result<RunLock> {
        match &self.location {
            Location::Sqlite(path) => RunLock::acquire(path, name),
            Location::Postgres(target) => postgres::Lease::take(target, name).map(RunLock::Lease),
        }
    }

    /// A cheap read that proves the file is reachable (for `/health`).
    pub fn ping(&self) -> anyhow::Result<()> {
        self.db.query_row("SELECT 1", db::params![], |_| Ok(()))?;
        Ok(())
    }
}

/// An exclusive lock on `<db>.<name>.lock`, held for the life of the value. The kernel drops
/// it when the process dies, so `kill -9` never leaves a stale lock behind. It tells a run
/// whether another run of the same job is alive; the durable claims stay in SQLite.
#[derive(Debug)]
pub enum RunLock {
    File(std::fs::File),
    Lease(postgres::Lease),
}

impl RunLock {
    /// Whether this run surely still holds the job: always for a file lock (the kernel holds
    /// it until the process ends); a lease can be lost (see `postgres::Lease`).
    pub fn is_held(&self) -> bool {
        match self {
            RunLock::File(_) => true,
            RunLock::Lease(l) => l.is_held(),
        }
    }

    /// `Ok(None)` when another live process holds it.
    fn try_acquire(db: &Path, name: &str) -> anyhow::Result<Option<Self>> {
        let path = lock_path(db, name);
        let file = open_lock(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self::File(file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }

    /// Waits for the lock (used by in-process background work that must not be skipped).
    fn acquire(db: &Path, name: &str) -> anyhow::Result<Self> {
        let path = lock_path(db, name);
        let file = open_lock(&path)?;
        file.lock().with_context(|| format!("locking {}", path.display()))?;
        Ok(Self::File(file))
    }
}

fn lock_path(db: &Path, name: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(format!(".{name}.lock"));
    PathBuf::from(p)
}

fn open_lock(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    give_to_directory_owner(path)?;
    Ok(file)
}

/// A file of ours that root owns, in a directory that another user owns, is given to that user:
/// root running a command by hand in the service's state directory (`--env-file`) must not
/// leave a database or lock file that the service, running as that user, cannot open. SQLite
/// itself does the same for the `-wal` and `-shm` files of a database it opens as root.
fn give_to_directory_owner(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let owner = |p: &Path| std::fs::metadata(p).with_context(|| format!("checking the owner of {}", p.display()));
    let (file, dir) = (owner(path)?, owner(dir)?);
    // Only root makes root-owned files, and only root may give them away.
    if file.uid() != 0 || dir.uid() == 0 {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(dir.uid()), Some(dir.gid()))
        .with_context(|| format!("giving {} to the owner of its directory (uid {})", path.display(), dir.uid()))
}

/// Current UTC time as stored text.
pub(crate) fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    crate::starkbank::time::format(t)
}

#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::db::params;

    /// The variable that runs the store's tests (and every unit test built on `temp_store`)
    /// against Postgres: the URL of a server where they may create databases. `scripts/test`
    /// runs them once on SQLite and once with it set (the contract suite: one set of tests,
    /// two backends).
    pub const POSTGRES_ENV: &str = "STARK_SWEEP_TEST_POSTGRES";

    /// A fresh, empty store: a SQLite file, or with `STARK_SWEEP_TEST_POSTGRES` set a new
    /// Postgres database of its own.
    pub fn temp_store() -> (tempfile::TempDir, super::Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = match std::env::var(POSTGRES_ENV) {
            Ok(admin) if !admin.is_empty() => super::Store::open(fresh_postgres_database(&admin)).unwrap(),
            _ => temp_sqlite_store_in(dir.path()),
        };
        (dir, store)
    }

    /// A SQLite store whatever the backend under test (tests of SQLite's own behaviour).
    pub fn temp_sqlite_store() -> (tempfile::TempDir, super::Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = temp_sqlite_store_in(dir.path());
        (dir, store)
    }

    fn temp_sqlite_store_in(dir: &std::path::Path) -> super::Store {
        super::Store::open(dir.join("t.db")).unwrap()
    }

    /// Creates a database with a name of its own on the server at `admin` and returns it.
    pub fn fresh_postgres_database(admin: &str) -> super::Location {
        let name = format!("t_{}_{:016x}", std::process::id(), rand::random::<u64>());
        let mut client = ::postgres::Client::connect(admin, ::postgres::NoTls).unwrap();
        client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let (base, query) = admin.split_once('?').map_or((admin, None), |(b, q)| (b, Some(q)));
        let root = base.rsplit_once('/').map_or(base, |(r, _)| r);
        let url = format!("{root}/{name}{}", query.map(|q| format!("?{q}")).unwrap_or_default());
        super::Location::parse(&url, None).unwrap()
    }

    /// Runs `sql` on the store's connection (fixtures the domain operations cannot make).
    pub fn exec(store: &super::Store, sql: &str) {
        store.db.execute_batch(sql).unwrap();
    }

    /// Counts the SQLite virtual-machine steps of every statement the store runs from now on:
    /// the work a query does, independent of the machine (a full scan steps once per row).
    pub fn count_vm_steps(store: &mut super::Store) -> Arc<AtomicU64> {
        let total = Arc::new(AtomicU64::new(0));
        let sink = total.clone();
        // A statement's counter only grows: start every one afresh, then count what each run of
        // it added.
        store.sqlite().flush_prepared_statement_cache();
        let mut seen: HashMap<usize, i32> = HashMap::new();
        store
            .db
            .sqlite_mut()
            .expect("a SQLite store")
            .trace_v2(
                rusqlite::trace::TraceEventCodes::SQLITE_TRACE_PROFILE,
                Some(move |event: rusqlite::trace::TraceEvent<'_>| {
                    if let rusqlite::trace::TraceEvent::Profile(stmt, _) = event {
                        let now = stmt.get_status(rusqlite::StatementStatus::VmStep);
                        let key = stmt.sql().as_ptr() as usize;
                        let before = seen.insert(key, now).filter(|b| *b <= now).unwrap_or(0);
                        sink.fetch_add((now - before) as u64, Ordering::Relaxed);
                    }
                }),
            )
            .unwrap();
        total
    }

    /// Adds `n` credits of history to `store`, numbered from `from`: each an `--all-credits`
    /// credit of workspace `ws`, settled by its send and its successful transfer, with its two
    /// events applied (what a long-running deployment accumulates).
    pub fn add_settled_history(store: &mut super::Store, ws: &str, from: usize, n: usize) {
        let tx = store.db.write_tx().unwrap();
        for i in from..from + n {
            let (invoice, transfer, external) = (format!("h{i}"), format!("ht{i}"), format!("stark-sweep-h{i}-1"));
            let at = format!("2026-01-01T00:00:{:02}.000000+00:00", i % 60);
            tx.execute(
                "INSERT INTO invoices (id, status, amount, nominal_amount, fee, ours, last_log_at) VALUES (?1, 'paid', 1050, 1050, 50, 0, ?2)",
                params![invoice, at],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO credits (invoice_id, event_id, amount, fee, net, credited_at, recorded_at, state, origin, confirmed_at)
                 VALUES (?1, ?2, 1050, 50, 1000, ?3, ?3, 'transferred', 'workspace', ?3)",
                params![invoice, format!("hc{i}"), at],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO sends (external_id, invoice_id, attempt, amount, claimed_at, outcome, target) VALUES (?1, ?2, 1, 1000, ?3, 'accepted', 't')",
                params![external, invoice, at],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO transfers (id, external_id, invoice_id, amount, status, updated_at, ours, target) VALUES (?1, ?2, ?3, 1000, 'success', ?4, 1, 't')",
                params![transfer, external, invoice, at],
            )
            .unwrap();
            for (id, subscription, log_type, resource) in [
                (format!("hc{i}"), "invoice", "credited", &invoice),
                (format!("hs{i}"), "transfer", "success", &transfer),
            ] {
                tx.execute(
                    "INSERT INTO events (id, subscription, log_type, log_id, resource_id, workspace_id, created, body, source, received_at, applied_at, delivered_at)
                     VALUES (?1, ?2, ?3, ?1, ?4, ?5, ?6, '{}', 'api', ?6, ?6, ?6)",
                    params![id, subscription, log_type, resource, ws, at],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn opens_migrates_and_reopens() {
        let (dir, store) = testing::temp_store();
        store.ping().unwrap();
        drop(store);
        let again = Store::open(dir.path().join("t.db")).unwrap();
        let v: i64 = again.sqlite().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let mode = std::fs::metadata(dir.path().join("t.db")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// Regression: two runs started together on a new file both failed to migrate it
    /// ("database is locked") before migrations took the write lock up front.
    #[test]
    fn many_processes_can_create_the_same_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("new.db");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let db = db.clone();
                std::thread::spawn(move || Store::open(&db).map(|s| s.ping().is_ok()))
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap().unwrap());
        }
    }

    #[test]
    fn a_transaction_in_which_a_statement_failed_commits_nothing() {
        let (_d, store) = testing::temp_store();
        let insert = |tx: &db::Tx<'_>, value: &str| {
            tx.execute(
                "INSERT INTO settings (key, value, source, set_at) VALUES ('k', ?1, 'test', 'now')",
                db::params![value],
            )
        };
        let count =
            || -> i64 { store.db.query_row("SELECT COUNT(*) FROM settings", db::params![], |r| r.get(0)).unwrap() };
        let tx = store.db.write_tx().unwrap();
        insert(&tx, "1").unwrap();
        assert!(insert(&tx, "2").is_err(), "the key is taken");
        let err = tx.commit().unwrap_err();
        assert!(err.to_string().contains("nothing of it was committed"), "{err:#}");
        assert_eq!(count(), 0, "the statement before the failure is not committed either");
        // The next transaction starts afresh.
        let tx = store.db.write_tx().unwrap();
        insert(&tx, "3").unwrap();
        tx.commit().unwrap();
        assert_eq!(count(), 1);
    }

    #[test]
    fn run_lock_excludes_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let first = RunLock::try_acquire(&db, "job").unwrap();
        assert!(first.is_some());
        assert!(RunLock::try_acquire(&db, "job").unwrap().is_none());
        drop(first);
        assert!(RunLock::try_acquire(&db, "job").unwrap().is_some());
    }
}
