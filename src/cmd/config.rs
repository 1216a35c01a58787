//! Configuration of the commands: the database path rule, turning the API flags into a
//! `ClientConfig` with one clear error per mistake (the env file is read earlier, by
//! `env_file`), production detection, and the transfer-step flags as `sweep::Settings` (shared by
//! the two commands that sweep). Secrets never appear in `Debug` output or errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::{ApiArgs, Environment, StoreArgs, SweepArgs};
use crate::error;
use crate::starkbank::{self, ClientConfig, keys};
use crate::store::Location;
use crate::sweep;

/// The store: `--db` (a SQLite path or a `postgres://` URL), else
/// `$STATE_DIRECTORY/stark-sweep.db`, else `./stark-sweep.db`.
pub fn db_location(store: &StoreArgs) -> anyhow::Result<Location> {
    match &store.db {
        Some(db) => Location::parse(db, store.db_password_file.as_deref())
            .map_err(|e| error::config(format!("STARK_SWEEP_DB (--db): {}", error::one_line(&e))))?
            .with_lease_seconds(store.lease_seconds)
            .map_err(|e| error::config(format!("STARK_SWEEP_LEASE_SECONDS (--lease-seconds): {e}"))),
        None => Ok(Location::Sqlite(default_db_path())),
    }
}

fn default_db_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may list several directories separated by ':'; the first is ours.
        let dir = dir.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        if !dir.is_empty() {
            return Path::new(&dir).join("stark-sweep.db");
        }
    }
    PathBuf::from("stark-sweep.db")
}

fn seconds(v: f64, name: &str) -> anyhow::Result<Duration> {
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
    cfg.timeout = seconds(api.http_timeout, "STARK_SWEEP_HTTP_TIMEOUT")?;
    cfg.connect_timeout = seconds(api.connect_timeout, "STARK_SWEEP_CONNECT_TIMEOUT")?;
    Ok(cfg)
}

/// Whether these API settings reach Stark Bank's production: the environment says so, or the
/// API URL is production's host (an override does not make production safe to stumble into).
pub fn is_production(api: &ApiArgs) -> bool {
    api.environment == Some(Environment::Production) || api.api_url.as_deref().is_some_and(url_may_be_production)
}

/// Fails closed: an API URL is taken for production unless its host is Stark Bank's sandbox or
/// this machine (the emulator). A proxy, an alias, `user@host`, a trailing dot: production.
fn url_may_be_production(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url.trim()) else { return true };
    let host = parsed.host_str().unwrap_or_default().trim_end_matches('.').to_ascii_lowercase();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !(loopback || host == "sandbox.api.starkbank.com")
}

/// `--now` moves the business clock, and with it the 24-hour outflow window: a drill setting,
/// refused where money is real.
pub fn refuse_drill_clock_in_production(clock: &crate::clock::Clock, api: &ApiArgs) -> anyhow::Result<()> {
    if clock.is_overridden() && is_production(api) {
        return Err(error::config(
            "STARK_SWEEP_NOW / --now is set in production: it moves the campaign and the 24-hour outflow window; to fix: remove it (it is for drills on the sandbox)",
        ));
    }
    Ok(())
}

/// A ready client, or the configuration error that prevents one.
pub fn client(api: &ApiArgs) -> anyhow::Result<starkbank::Client> {
    let cfg = client_config(api)?;
    log::debug!("Stark Bank API at {} as project/{}", cfg.base_url, cfg.project_id);
    starkbank::Client::new(cfg).context("starting the HTTP client")
}

/// The transfer-step flags (`process-events`, `serve-webhook --process`) as the engine's
/// settings; `sweep::Options::new` validates them.
pub fn sweep_settings(a: &SweepArgs) -> sweep::Settings {
    sweep::Settings {
        target: sweep::Target {
            bank_code: a.target_bank_code.clone(),
            branch_code: a.target_branch.clone(),
            account_number: a.target_account.clone(),
            name: a.target_name.clone(),
            tax_id: a.target_tax_id.clone(),
            account_type: a.target_account_type.clone(),
        },
        confirm_target_account: a.confirm_target_account.clone(),
        all_credits: a.all_credits,
        max_transfer: a.max_transfer,
        max_outflow_24h: a.max_outflow_24h,
        transfer_attempts: a.transfer_attempts,
        retry_backoff_secs: a.retry_backoff,
        workspace_id: a.workspace.configured(),
    }
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
            http_timeout: starkbank::DEFAULT_TIMEOUT_SECS,
            connect_timeout: starkbank::DEFAULT_CONNECT_TIMEOUT_SECS,
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

    /// Found by review of #19: only the exact host `api.starkbank.com` counted as production.
    #[test]
    fn any_api_url_but_the_sandbox_or_loopback_is_production() {
        for url in [
            "https://api.starkbank.com",
            "https://x@api.starkbank.com/v2",
            "https://API.starkbank.com./",
            "https://proxy.internal:8443",
            "not a url",
        ] {
            assert!(url_may_be_production(url), "{url}");
        }
        for url in
            ["https://sandbox.api.starkbank.com", "http://127.0.0.1:9000", "http://localhost:1", "http://[::1]:9"]
        {
            assert!(!url_may_be_production(url), "{url}");
        }
    }
}
