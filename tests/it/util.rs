//! Shared test helpers: the binary, temp dirs, the Python oracle.

#![allow(dead_code, reason = "each test module uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `stark-sweep` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stark-sweep"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

/// A command for the binary with a clean environment (no inherited STARK*/`.env` surprises),
/// running in `dir`.
pub fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("STARK") || k == "STATE_DIRECTORY" || k == "CREDENTIALS_DIRECTORY" {
            c.env_remove(k);
        }
    }
    c
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The venv's Python with the pinned official SDK. Tests fail (never skip) without it.
pub fn python() -> PathBuf {
    let p =
        std::env::var_os("STARK_SWEEP_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "{} not found: the conformance tests need the official SDK; run `scripts/test` (it creates the venv) or set STARK_SWEEP_PYTHON",
        p.display()
    );
    p
}

/// Runs `tests/python/<script>` with args; panics with its output unless it exits 0.
pub fn run_python(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut c = Command::new(python());
    c.arg(repo().join("tests/python").join(script)).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("running python");
    assert!(
        out.status.success(),
        "{script} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// A test world: a temp dir, the real emulator on port 0 (its project key written in the
/// dir), and a database path for the binary.
pub struct World {
    pub dir: tempfile::TempDir,
    pub sandbox: stark_sweep::sandbox::Sandbox,
    pub db: PathBuf,
    /// More environment for every command of this world.
    env: Vec<(String, String)>,
}

/// A world whose clock moves only when a test says so, where nobody pays unless told to and
/// the balance holds money.
pub fn manual_world(seed: u64) -> World {
    World::new(stark_sweep::sandbox::SandboxConfig {
        manual_clock: true,
        pay_rate: 0.0,
        initial_balance: 100_000_000,
        seed,
        ..stark_sweep::sandbox::SandboxConfig::default()
    })
}

impl World {
    pub fn new(mut cfg: stark_sweep::sandbox::SandboxConfig) -> World {
        let dir = tempfile::tempdir().unwrap();
        cfg.key_dir = Some(dir.path().to_path_buf());
        let sandbox = stark_sweep::sandbox::Sandbox::start(cfg).unwrap();
        let db = dir.path().join("stark-sweep.db");
        World { dir, sandbox, db, env: Vec::new() }
    }

    /// The binary, configured for this world's emulator and database.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = cmd(self.dir.path());
        c.env("STARKBANK_PROJECT_ID", self.sandbox.project_id())
            .env("STARKBANK_PRIVATE_KEY_PATH", self.sandbox.private_key_path().unwrap())
            .env("STARKBANK_API_URL", self.sandbox.url())
            .env("STARK_SWEEP_DB", &self.db)
            .env("STARK_SWEEP_HTTP_TIMEOUT", "10")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(args);
        c
    }

    /// Every command of this world gets `key=value` too.
    pub fn with_env(mut self, key: &str, value: &str) -> World {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and asserts the exit code, showing all output when it differs.
    pub fn run_expect(&self, args: &[&str], code: i32) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "stark-sweep {args:?}\n--- stdout\n{}\n--- stderr\n{}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    /// A client of the emulator, as the project.
    pub fn client(&self) -> stark_sweep::starkbank::Client {
        let key = stark_sweep::starkbank::keys::parse_private_key(&self.sandbox.private_key_pem().unwrap()).unwrap();
        stark_sweep::starkbank::Client::new(stark_sweep::starkbank::ClientConfig::new(
            self.sandbox.url(),
            self.sandbox.project_id(),
            key,
        ))
        .unwrap()
    }

    /// The same world on another store (a `postgres://` URL): `db` is then the URL.
    pub fn on_store(mut self, db: &str) -> World {
        self.db = PathBuf::from(db);
        self
    }

    pub fn open_store(&self) -> stark_sweep::store::Store {
        self.try_open_store().unwrap()
    }

    pub fn try_open_store(&self) -> anyhow::Result<stark_sweep::store::Store> {
        let at = stark_sweep::store::Location::parse(self.db.to_str().unwrap(), None)?;
        stark_sweep::store::Store::open(&at)
    }
}

/// `--now` text for a moment.
pub fn at(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Polls `f` until it holds. The deadline only bounds a hung test; it asserts no speed.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Sleeps until a second past the in-flight window that a refused run names ("may still be
/// processed by Stark Bank until <time>;"), so the next run may look the slot up by tag.
pub fn sleep_past_the_window_named_in(stderr: &str) {
    let marker = "processed by Stark Bank until ";
    let Some(rest) = stderr.split_once(marker).map(|(_, rest)| rest) else {
        panic!("names no in-flight window: {stderr}")
    };
    let until = rest.split(';').next().unwrap_or("");
    let until = chrono::DateTime::parse_from_rfc3339(until).unwrap_or_else(|e| panic!("{until:?}: {e}"));
    let left = until.with_timezone(&chrono::Utc) - chrono::Utc::now() + chrono::Duration::seconds(1);
    std::thread::sleep(left.to_std().unwrap_or_default());
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// The value of one series (`name` or `name{label="v",...}`, labels as written) in a Prometheus
/// text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let value = l.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The Postgres server `scripts/test` starts for the run (`STARK_SWEEP_TEST_PG_URL`).
pub fn postgres_admin_url() -> String {
    std::env::var("STARK_SWEEP_TEST_PG_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| {
        panic!("STARK_SWEEP_TEST_PG_URL is not set: the Postgres tests need a server; run `scripts/test` (it starts one with scripts/pg-cluster)")
    })
}

/// A new, empty database on the server at `admin`; returns its URL.
pub fn fresh_postgres_db(admin: &str) -> String {
    let name = format!("it_{}_{:016x}", std::process::id(), rand::random::<u64>());
    let mut client = postgres::Client::connect(admin, postgres::NoTls).unwrap();
    client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let root = admin.rsplit_once('/').map_or(admin, |(r, _)| r);
    format!("{root}/{name}")
}

/// A Postgres cluster of a test's own (scripts/pg-cluster), for tests that stop or restart it.
pub struct OwnPostgres {
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl OwnPostgres {
    pub fn start() -> OwnPostgres {
        let dir = tempfile::Builder::new().prefix("stark-sweep-pg").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let out = Command::new(repo().join("scripts/pg-cluster")).arg("start").arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "scripts/pg-cluster start: {}", stderr(&out));
        let url = stdout(&out).trim().to_string();
        OwnPostgres { dir, url }
    }

    pub fn pg_cluster(&self, what: &str) {
        let out = Command::new(repo().join("scripts/pg-cluster")).arg(what).arg(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "scripts/pg-cluster {what}: {}", stderr(&out));
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/pg-cluster")).arg("stop").arg(self.dir.path()).output();
    }
}
