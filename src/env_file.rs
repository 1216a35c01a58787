//! The configuration file: `--env-file PATH` / `STARK_SWEEP_ENV_FILE`, else `./.env` when it
//! exists. Read once in `main`, before clap, into the process environment, below every
//! variable the environment already sets (flags > environment > this file > defaults).
//! Its errors name the line and the variable, never the value (a broken line is often a key).

use std::path::{Path, PathBuf};

use crate::error;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
