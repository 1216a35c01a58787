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

/// A Postgres database: the connection settings, and how they are shown (no password).
#[derive(Clone)]
pub struct PgTarget {
    pub(crate) config: postgres::Config,
    shown: String,
}

impl Location {
    /// `postgres://...` or `postgresql://...` is Postgres; anything else is a SQLite path.
    /// `password_file` (or, when it is `None`, the systemd credential `db-password` when one
    /// is there) supplies the password a URL does not carry.
    pub fn parse(db: &str, password_file: Option<&Path>) -> anyhow::Result<Self> {
        if !is_postgres_url(db) {
            return Ok(Location::Sqlite(PathBuf::from(db)));
        }
        // The URL is never echoed: a password in it may hold any character.
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
        Ok(Location::Postgres(Box::new(PgTarget { shown: shown(&config), config })))
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
    }
}
