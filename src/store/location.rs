//! Where the store is: a SQLite file (the default, and the demo's), or a Postgres database
//! named by a `postgres://` or `postgresql://` URL in `--db` / `STARK_SWEEP_DB`.
//!
//! Owns: telling the two apart, reading the Postgres password from a file (never from the
//! command line in the units: `STARK_SWEEP_DB_PASSWORD_FILE`, or the systemd credential
//! `db-password`), and showing a location without its password. Does not own: connecting
//! (`store::postgres`) or opening a file (`store`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The systemd credential that carries the Postgres password (`LoadCredential=db-password:...`).
const PASSWORD_CREDENTIAL: &str = "db-password";

#[derive(Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(Box<PgTarget>),
}

/// How long a job's lease outlives a holder that died, unless `--lease-seconds` says otherwise.
pub const DEFAULT_LEASE_SECONDS: u64 = 60;
/// The shortest and longest lease `--lease-seconds` accepts.
pub const LEASE_SECONDS_RANGE: std::ops::RangeInclusive<u64> = 2..=3600;

/// A Postgres database: the connection settings, how they are shown (no password), and how
/// long a job's lease lasts.
#[derive(Clone)]
pub struct PgTarget {
    pub(crate) config: postgres::Config,
    shown: String,
    pub(crate) lease: std::time::Duration,
}

impl Location {
    /// `postgres://...` or `postgresql://...` is Postgres; anything else is a SQLite path.
    /// `password_file` (or, when it is `None`, the systemd credential `db-password` when one
    /// is there) supplies the password a URL does not carry.
    pub fn parse(db: &str, password_file: Option<&Path>) -> anyhow::Result<Self> {
        if !is_postgres_url(db) {
            return Ok(Location::Sqlite(PathBuf::from(db)));
        }
        // The URL is never echoed: a password in it may hold any character. The credentials end
        // at the first `@`, wherever it is: a second `@` would put the rest of the password in
        // the host (and in every message that names it).
        anyhow::ensure!(
            db.matches('@').count() <= 1,
            "the postgres:// URL (not shown: it may hold a password) has more than one '@'; to fix: write an '@' in the password as %40, or put the password in STARK_SWEEP_DB_PASSWORD_FILE"
        );
        // An '@' in the path or query (`?password=a@b`) would end what the parser reads as the
        // credentials, and the host and user it shows would hold the rest, password and all.
        // Credentials hold no raw '/' or '?' (as in libpq): they end the host part.
        anyhow::ensure!(
            !credentials(db).is_some_and(|c| c.contains(['/', '?'])),
            "the postgres:// URL (not shown: it may hold a password) has a '/' or '?' before its '@': an '@' after the host, or a '/' or '?' in the user or password; to fix: write them as %40, %2F and %3F, or put the password in STARK_SWEEP_DB_PASSWORD_FILE"
        );
        let mut config: postgres::Config = db.parse().map_err(|e| {
            anyhow::anyhow!(
                "the postgres:// URL (not shown: it may hold a password) is not one it can read: {e}; to fix: postgres://USER@HOST:PORT/DATABASE, with the password in STARK_SWEEP_DB_PASSWORD_FILE"
            )
        })?;
        let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|d| Path::new(&d).join(PASSWORD_CREDENTIAL))
            .filter(|p| p.exists());
        if let Some(file) = password_file.map(Path::to_path_buf).or(credential) {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading the database password from {}", file.display()))?;
            let password = text.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(
                !password.is_empty(),
                "the database password file {} is empty; to fix: write the password in it",
                file.display()
            );
            config.password(password);
        }
        // libpq's default, `prefer`, falls back to plain text when TLS fails: a host that is
        // not this machine gets `require` (verified, see `postgres::tls`) unless the URL says.
        if !names_ssl_mode(db) && !is_local(&config) {
            config.ssl_mode(postgres::config::SslMode::Require);
        }
        let lease = std::time::Duration::from_secs(DEFAULT_LEASE_SECONDS);
        Ok(Location::Postgres(Box::new(PgTarget { shown: shown(&config), config, lease })))
    }

    /// The lease of the jobs' singletons on Postgres (no meaning for a SQLite file, whose
    /// locks the kernel drops with their process).
    pub fn with_lease_seconds(self, seconds: u64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            LEASE_SECONDS_RANGE.contains(&seconds),
            "{seconds} is not a number of seconds from {} to {}",
            LEASE_SECONDS_RANGE.start(),
            LEASE_SECONDS_RANGE.end()
        );
        Ok(match self {
            Location::Postgres(mut t) => {
                t.lease = std::time::Duration::from_secs(seconds);
                Location::Postgres(t)
            }
            sqlite => sqlite,
        })
    }

    /// Whether there is anything to open yet: a SQLite file that exists; a Postgres database is
    /// taken to be there (opening it says otherwise).
    pub fn exists(&self) -> bool {
        match self {
            Location::Sqlite(p) => p.exists(),
            Location::Postgres(_) => true,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }

    /// How to show it: the path, or the URL without its password.
    pub fn display(&self) -> impl std::fmt::Display + '_ {
        struct Shown<'a>(&'a Location);
        impl std::fmt::Display for Shown<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.0 {
                    Location::Sqlite(p) => write!(f, "{}", p.display()),
                    Location::Postgres(t) => f.write_str(&t.shown),
                }
            }
        }
        Shown(self)
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.display())
    }
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Self {
        Location::Sqlite(p.to_path_buf())
    }
}
impl From<&&Path> for Location {
    fn from(p: &&Path) -> Self {
        Location::Sqlite(p.to_path_buf())
    }
}
impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Self {
        Location::Sqlite(p.clone())
    }
}
impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Self {
        Location::Sqlite(p)
    }
}
impl From<&Location> for Location {
    fn from(l: &Location) -> Self {
        l.clone()
    }
}

/// Every host is this machine (a Unix socket, `localhost` or a loopback address), and so is
/// every `hostaddr`, which is where the connection goes when it is given.
fn is_local(c: &postgres::Config) -> bool {
    let loopback = |ip: std::net::IpAddr| ip.to_canonical().is_loopback();
    !c.get_hosts().is_empty()
        && c.get_hosts().iter().all(|h| match h {
            postgres::config::Host::Unix(_) => true,
            postgres::config::Host::Tcp(name) => {
                let name = name.trim_end_matches('.');
                name.eq_ignore_ascii_case("localhost")
                    || name.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(loopback)
            }
        })
        && c.get_hostaddrs().iter().all(|ip| loopback(*ip))
}

/// What stands between `://` and the URL's `@`, if it has one.
fn credentials(db: &str) -> Option<&str> {
    db.split_once("://").and_then(|(_, rest)| rest.split_once('@')).map(|(c, _)| c)
}

/// The URL's query (after its credentials, so never a password) names `sslmode`.
fn names_ssl_mode(db: &str) -> bool {
    let after_credentials = db.rsplit_once('@').map_or(db, |(_, rest)| rest);
    after_credentials
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|kv| kv.split('=').next() == Some("sslmode")))
}

fn is_postgres_url(s: &str) -> bool {
    let lower = s.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// `postgres://user@host:port/dbname`, from the settings (never the password).
fn shown(c: &postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match c.get_ports().get(i).or(c.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let user = c.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    format!("postgres://{user}{}/{}", hosts.join(","), c.get_dbname().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_postgres_and_anything_else_a_file() {
        assert!(Location::parse("postgres://u@h/db", None).unwrap().is_postgres());
        assert!(Location::parse("postgresql://u@h:5433/db", None).unwrap().is_postgres());
        assert!(!Location::parse("./postgres.db", None).unwrap().is_postgres());
        assert!(!Location::parse("/var/lib/stark-sweep/stark-sweep.db", None).unwrap().is_postgres());
    }

    #[test]
    fn the_password_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret-from-file\n").unwrap();
        let from_file = Location::parse("postgres://sweep@db.internal:5433/sweep", Some(&file)).unwrap();
        let inline = Location::parse("postgres://sweep:s3cret-inline@db.internal/sweep", None).unwrap();
        for l in [&from_file, &inline] {
            let shown = format!("{} {l:?}", l.display());
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("postgres://sweep@db.internal"), "{shown}");
        }
        let Location::Postgres(t) = &from_file else { panic!() };
        assert_eq!(t.config.get_password(), Some(&b"s3cret-from-file"[..]));
        for bad in ["postgres://sweep:s3cret@db.internal:notaport/x", "postgres://sweep:s3cr/et@db.internal:notaport/x"]
        {
            let err = Location::parse(bad, None).unwrap_err();
            assert!(!format!("{err:#}").contains("s3cr"), "{err:#}");
        }
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(Location::parse("postgres://u@h/db", Some(&empty)).is_err());
        let err = Location::parse("postgres://sweep:s3c@ret@db.internal/sweep", None).unwrap_err();
        assert!(err.to_string().contains("%40") && !format!("{err:#}").contains("s3c"), "{err:#}");
        // Past the host too: the credentials end at the first '@' wherever it is.
        for url in ["postgres://sweep:x@evil.example/pw-tail@db.internal/sweep", "postgres://sweep:q?x@evil@db/sweep"] {
            let err = Location::parse(url, None).unwrap_err();
            assert!(
                err.to_string().contains("more than one '@'") && !format!("{err:#}").contains("pw-tail"),
                "{err:#}"
            );
        }
        // Found by review of #18: one '@', in the query, made the path and query the "user",
        // or (after a port) the host the tail of the password.
        for url in [
            "postgres://db.internal/sweep?user=sweep&password=hunter2@x",
            "postgres://db/s?password=hunter2@x",
            "postgres://db.internal:5432/sweep?password=hunter2@2024x",
            "postgres://[::1]:5432/sweep?password=hunter2@2024x",
            "postgres://sweep:pa/ss?w@db.internal/sweep",
        ] {
            let err = Location::parse(url, None).unwrap_err();
            assert!(err.to_string().contains("before its '@'"), "{url}: {err:#}");
            for secret in ["hunter2", "2024x", "pa/ss"] {
                assert!(!format!("{err:#}").contains(secret), "{err:#}");
            }
        }
        // Written as the message says, they are read as a password.
        assert!(Location::parse("postgres://sweep:pa%2Fss%3Fw%40x@db.internal/sweep", None).is_ok());
        assert!(Location::parse("postgresql:///db?host=/run/postgresql&user=x", None).is_ok());
    }

    fn ssl_mode(url: &str) -> postgres::config::SslMode {
        let Location::Postgres(t) = Location::parse(url, None).unwrap() else { panic!("{url}") };
        t.config.get_ssl_mode()
    }

    #[test]
    fn a_host_that_is_not_this_machine_gets_verified_tls_unless_the_url_says() {
        use postgres::config::SslMode;
        assert_eq!(ssl_mode("postgres://u@db.internal/x"), SslMode::Require);
        assert_eq!(ssl_mode("postgres://u@10.0.0.5:5432/x"), SslMode::Require);
        assert_eq!(ssl_mode("postgres://u@127.0.0.1:5432/x"), SslMode::Prefer);
        assert_eq!(ssl_mode("postgres://u@localhost/x"), SslMode::Prefer);
        assert_eq!(ssl_mode("postgres://u@%2Frun%2Fpostgresql/x"), SslMode::Prefer);
        assert_eq!(ssl_mode("postgres://u@db.internal/x?sslmode=disable"), SslMode::Disable);
        for local in [
            "postgres://u@LOCALHOST/x",
            "postgres://u@localhost./x",
            "postgres://u@[::1]/x",
            "postgres://u@[::ffff:127.0.0.1]/x",
            "postgres://u@127.0.0.2/x",
            "postgres://u@/x?host=/run/postgresql",
        ] {
            assert_eq!(ssl_mode(local), SslMode::Prefer, "{local}");
        }
        // Where the connection really goes: a hostaddr, or no host at all.
        assert_eq!(ssl_mode("postgres://u@localhost/x?hostaddr=10.0.0.5"), SslMode::Require);
        assert_eq!(ssl_mode("postgres://u@/x?hostaddr=10.0.0.5"), SslMode::Require);
        // A password that spells sslmode does not count as the URL's choice.
        assert_eq!(ssl_mode("postgres://u:x%3Fsslmode=disable@db.internal/x"), SslMode::Require);
        // Unencoded, it is refused before anyone reads it (see the_password_is_never_shown).
        assert!(Location::parse("postgres://u:a?sslmode=disable@db.internal/x", None).is_err());
    }

    #[test]
    fn the_lease_is_set_within_its_range() {
        let pg = Location::parse("postgres://u@h/db", None).unwrap();
        let Location::Postgres(t) = pg.clone().with_lease_seconds(5).unwrap() else { panic!() };
        assert_eq!(t.lease, std::time::Duration::from_secs(5));
        assert!(pg.clone().with_lease_seconds(1).is_err());
        assert!(pg.with_lease_seconds(3601).is_err());
        assert!(Location::parse("x.db", None).unwrap().with_lease_seconds(5).is_ok());
    }
}
