//! Configuration: defaults < the env file < environment < flags, validated once at start.
//!
//! Owns: reading the configuration file (`--env-file`, else `./.env`; only for variables the
//! environment does not already set), the database path rule, the business clock, and turning
//! API flags into a `ClientConfig` with one clear error per mistake. Secrets never appear in `Debug` output or errors.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::cli::{ApiArgs, Environment, StoreArgs};
use crate::error;
use crate::starkbank::{self, ClientConfig, keys};

/// The variable that names the configuration file (the flag `--env-file` is its twin).
pub const ENV_FILE_VAR: &str = "STARK_SWEEP_ENV_FILE";
/// The file read when none is named, in the working directory, if it exists.
pub const DEFAULT_ENV_FILE: &str = ".env";

/// The configuration file named by `--env-file PATH` (or `--env-file=PATH`) among `args`, else
/// by `STARK_SWEEP_ENV_FILE`; `None` when neither names one. Read from the raw arguments because
/// the file must be loaded before clap reads the environment.
pub fn named_env_file(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<PathBuf> {
    let mut args = args.into_iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--env-file" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--env-file=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(ENV_FILE_VAR).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Loads the configuration file into the process environment, never overriding a variable that
/// is already set, so that clap's `env` fallbacks see it with lower priority than the real
/// environment. The file is the one `named` (it must exist), else `./.env` when it exists.
/// Must run before any thread starts. Returns an error to report once logging is up.
pub fn load_dotenv(named: Option<&Path>) -> Option<anyhow::Error> {
    let (path, origin) = match named {
        Some(path) => (path, format!("{ENV_FILE_VAR}={}", path.display())),
        None => (Path::new(DEFAULT_ENV_FILE), format!("./{DEFAULT_ENV_FILE}")),
    };
    if named.is_none() && !path.exists() {
        return None;
    }
    let content = match std::fs::read_to_string(path) {
        Ok(content) => content,
        Err(e) => {
            return Some(error::config(format!(
                "{origin}: cannot read it: {e}; to fix: point --env-file / {ENV_FILE_VAR} at the configuration file (see systemd/stark-sweep.env.example)"
            )));
        }
    };
    for item in dotenvy::from_read_iter(content.as_bytes()) {
        match item {
            Ok((key, value)) => {
                if std::env::var_os(&key).is_none() {
                    // SAFETY: called from `main` before any other thread exists, so no other
                    // code can be reading the environment concurrently.
                    unsafe { std::env::set_var(key, value) };
                }
            }
            Err(e) => {
                return Some(error::config(format!(
                    "{origin}: {}; to fix: correct the line",
                    describe_dotenv_error(&e, &content)
                )));
            }
        }
    }
    None
}

/// What is wrong with `.env`, naming the line and variable but never quoting the text: a broken
/// line is often a multi-line private key, and dotenvy's own message quotes it.
fn describe_dotenv_error(err: &dotenvy::Error, content: &str) -> String {
    let dotenvy::Error::LineParse(fragment, _) = err else {
        return err.to_string();
    };
    // dotenvy reports either the whole (possibly multi-line) entry or only its value; find
    // where it starts: at the start of a line, or right after `NAME=`.
    let found = content.match_indices(fragment.as_str()).find_map(|(offset, _)| {
        let line_start = content[..offset].rfind('\n').map_or(0, |i| i + 1);
        let prefix = content[line_start..offset].trim();
        (prefix.is_empty() || prefix.ends_with('=')).then_some(line_start)
    });
    let Some(line_start) = found else {
        return "a line cannot be parsed".to_string();
    };
    let number = content[..line_start].matches('\n').count() + 1;
    let physical = content[line_start..].lines().next().unwrap_or_default().trim_start();
    let physical = physical.strip_prefix("export ").unwrap_or(physical);
    let name = physical
        .split_once('=')
        .map(|(name, _)| name.trim())
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'));
    match name {
        Some(name) => format!(
            "line {number}: the value of {name} cannot be parsed (an unclosed quote, or spaces without quotes?)"
        ),
        None => format!("line {number} is not NAME=value"),
    }
}

/// The SQLite path: `--db`, else `$STATE_DIRECTORY/stark-sweep.db`, else `./stark-sweep.db`.
pub fn db_path(store: &StoreArgs) -> PathBuf {
    if let Some(db) = &store.db {
        return db.clone();
    }
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may list several directories separated by ':'; the first is ours.
        let dir = dir.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        if !dir.is_empty() {
            return Path::new(&dir).join("stark-sweep.db");
        }
    }
    PathBuf::from("stark-sweep.db")
}

/// The clock for business decisions. With `--now`, time starts there and advances with the
/// real clock, so a long-running process still sees time pass.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    fixed: Option<(DateTime<Utc>, Instant)>,
}

impl Clock {
    pub fn real() -> Self {
        Self { fixed: None }
    }

    pub fn at(t: DateTime<Utc>) -> Self {
        Self { fixed: Some((t, Instant::now())) }
    }

    pub fn from_arg(now: Option<&str>) -> anyhow::Result<Self> {
        match now {
            None => Ok(Self::real()),
            Some(s) => starkbank::time::parse(s).map(Self::at).ok_or_else(|| {
                error::config(format!(
                    "STARK_SWEEP_NOW / --now: `{s}` is not an RFC 3339 time; to fix: use e.g. 2026-11-29T12:00:00Z"
                ))
            }),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self.fixed {
            None => Utc::now(),
            Some((t, since)) => t + chrono::Duration::from_std(since.elapsed()).unwrap_or_default(),
        }
    }

    pub fn is_overridden(&self) -> bool {
        self.fixed.is_some()
    }
}

fn seconds(value: Option<f64>, default: f64, name: &str) -> anyhow::Result<Duration> {
    let v = value.unwrap_or(default);
    if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
        return Err(error::config(format!("{name}: {v} is not a number of seconds between 0 and 3600")));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Reads the private key text from the one configured source.
fn private_key_text(api: &ApiArgs) -> anyhow::Result<(String, String)> {
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| Path::new(&d).join("starkbank-private-key"))
        .filter(|p| p.exists());
    match (&api.private_key_path, &api.private_key) {
        (Some(_), Some(_)) => Err(error::config(
            "both STARKBANK_PRIVATE_KEY_PATH and STARKBANK_PRIVATE_KEY are set; to fix: keep only one",
        )),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                error::config(format!(
                    "STARKBANK_PRIVATE_KEY_PATH={}: cannot read the key: {e}; to fix: point it at your private-key.pem, or run `stark-sweep keygen`",
                    path.display()
                ))
            })?;
            Ok((text, format!("STARKBANK_PRIVATE_KEY_PATH={}", path.display())))
        }
        (None, Some(text)) => Ok((text.clone(), "STARKBANK_PRIVATE_KEY".to_string())),
        (None, None) => match credential {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    error::config(format!("systemd credential {}: cannot read it: {e}", path.display()))
                })?;
                Ok((text, format!("systemd credential {}", path.display())))
            }
            None => Err(error::config(
                "no private key: set STARKBANK_PRIVATE_KEY_PATH to your private-key.pem (or STARKBANK_PRIVATE_KEY, or a systemd credential `starkbank-private-key`); to create one: run `stark-sweep keygen`",
            )),
        },
    }
}

/// Validates the API flags and loads the key. Every error names the variable at fault.
pub fn client_config(api: &ApiArgs) -> anyhow::Result<ClientConfig> {
    let project_id = api.project_id.as_deref().map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| {
        error::config(
            "STARKBANK_PROJECT_ID is not set: set it (or --project-id) to your Stark Bank project id; for a local emulator run `stark-sweep sandbox`",
        )
    })?;
    if !project_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(error::config(format!(
            "STARKBANK_PROJECT_ID=`{project_id}` is not a project id (letters, digits, '-', '_'); to fix: copy it from Stark Bank's Integrations page"
        )));
    }
    let (text, source) = private_key_text(api)?;
    let key = keys::parse_private_key(&text).map_err(|e| error::config(format!("{source}: {e}")))?;
    let base_url = match &api.api_url {
        Some(url) => {
            let url = url.trim().trim_end_matches('/');
            let url = url.strip_suffix("/v2").unwrap_or(url);
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(error::config(format!(
                    "STARKBANK_API_URL=`{url}` is not an http(s) URL; to fix: use e.g. http://127.0.0.1:9000"
                )));
            }
            url.to_string()
        }
        None => match api.environment.unwrap_or(Environment::Sandbox) {
            Environment::Sandbox => starkbank::SANDBOX_URL.to_string(),
            Environment::Production => starkbank::PRODUCTION_URL.to_string(),
        },
    };
    let mut cfg = ClientConfig::new(base_url, project_id, key);
    cfg.timeout = seconds(api.http_timeout, 15.0, "STARK_SWEEP_HTTP_TIMEOUT")?;
    cfg.connect_timeout = seconds(api.connect_timeout, 5.0, "STARK_SWEEP_CONNECT_TIMEOUT")?;
    Ok(cfg)
}

/// Whether these API settings reach Stark Bank's production: the environment says so, or the
/// API URL is production's host (an override does not make production safe to stumble into).
pub fn is_production(api: &ApiArgs) -> bool {
    let url_is_production = api.api_url.as_deref().is_some_and(|u| {
        let host = u.trim().trim_start_matches("https://").trim_start_matches("http://");
        host.split(['/', ':']).next().is_some_and(|h| h.eq_ignore_ascii_case("api.starkbank.com"))
    });
    api.environment == Some(Environment::Production) || url_is_production
}

/// A ready client, or the configuration error that prevents one.
pub fn client(api: &ApiArgs) -> anyhow::Result<starkbank::Client> {
    let cfg = client_config(api)?;
    log::debug!("Stark Bank API at {} as project/{}", cfg.base_url, cfg.project_id);
    starkbank::Client::new(cfg).context("starting the HTTP client")
}

/// Creates a file readable only by its owner (for keys and the database's directory files).
/// Creates `dir` and its missing parents with mode 0700 (a directory that exists is left as it
/// is), for the key directories an operator names.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

pub fn write_private_file(path: &Path, contents: &[u8], overwrite: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> ApiArgs {
        ApiArgs {
            project_id: None,
            private_key_path: None,
            private_key: None,
            environment: None,
            api_url: None,
            http_timeout: None,
            connect_timeout: None,
        }
    }

    #[test]
    fn missing_project_id_names_the_variable() {
        let err = client_config(&api()).unwrap_err();
        assert!(err.to_string().starts_with("STARKBANK_PROJECT_ID is not set"), "{err}");
        assert_eq!(error::classify(&err), error::ExitKind::Config);
    }

    #[test]
    fn key_text_never_appears_in_errors_or_debug() {
        let mut a = api();
        a.project_id = Some("123".into());
        a.private_key = Some("-----BEGIN EC PRIVATE KEY-----\nSECRETSECRET\n-----END EC PRIVATE KEY-----".into());
        let err = client_config(&a).unwrap_err();
        assert!(!format!("{err:#}").contains("SECRETSECRET"));
        assert!(!format!("{a:?}").contains("SECRETSECRET"));
        a.private_key = Some(keys::private_key_pem(&keys::generate()).unwrap());
        let cfg = client_config(&a).unwrap();
        assert!(!format!("{cfg:?}").contains("PRIVATE"));
        assert_eq!(cfg.base_url, starkbank::SANDBOX_URL);
    }

    /// Regression: dotenvy's message quotes the broken line, which is often the private key.
    #[test]
    fn dotenv_errors_name_the_variable_but_never_quote_the_value() {
        let content = "STARKBANK_PROJECT_ID=1\nSTARKBANK_PRIVATE_KEY=\"-----BEGIN EC PRIVATE KEY-----\nSECRETSECRET\n";
        let err = dotenvy::from_read_iter(content.as_bytes()).find_map(Result::err).unwrap();
        let text = describe_dotenv_error(&err, content);
        assert!(text.starts_with("line 2: the value of STARKBANK_PRIVATE_KEY"), "{text}");
        assert!(!text.contains("SECRET") && !text.contains("BEGIN"), "{text}");
        let content = "# comment\nSTARKBANK_PROJECT_ID=not SECRET id\n";
        let err = dotenvy::from_read_iter(content.as_bytes()).find_map(Result::err).unwrap();
        let text = describe_dotenv_error(&err, content);
        assert!(text.starts_with("line 2: the value of STARKBANK_PROJECT_ID"), "{text}");
        assert!(!text.contains("SECRET"), "{text}");
        let content = "FOO=1\nnot a setting SECRETSECRET\n";
        let err = dotenvy::from_read_iter(content.as_bytes()).find_map(Result::err).unwrap();
        let text = describe_dotenv_error(&err, content);
        assert_eq!(text, "line 2 is not NAME=value");
    }

    #[test]
    fn api_url_is_normalized() {
        let mut a = api();
        a.project_id = Some("1".into());
        a.private_key = Some(keys::private_key_pem(&keys::generate()).unwrap());
        a.api_url = Some("http://127.0.0.1:9000/v2/".into());
        assert_eq!(client_config(&a).unwrap().base_url, "http://127.0.0.1:9000");
        a.api_url = Some("127.0.0.1:9000".into());
        assert!(client_config(&a).unwrap_err().to_string().contains("STARKBANK_API_URL"));
    }
}
