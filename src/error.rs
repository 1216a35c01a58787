//! Exit codes and the one-line error a user sees.
//!
//! Owns: how a failure is classified (configuration to fix, temporary, needs attention,
//! other) and how it is printed. Commands attach a class with `config()`/`temporary()` or
//! let `classify` infer it from the API error inside.

use crate::starkbank::ApiError;
use crate::starkbank::keys::KeyError;

/// What a run ended as. The numbers are documented in the README and are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// 0: done, or nothing to do.
    Success,
    /// 1: an unexpected failure (a bug, a full disk, Stark Bank refused valid-looking input).
    Failure,
    /// 2: the command line is wrong (clap prints the usage).
    Usage,
    /// 3: the run finished but something needs a human (a transfer failed for good, ...).
    Attention,
    /// 75 (EX_TEMPFAIL): temporary failure; the next scheduled run completes the work.
    Temporary,
    /// 78 (EX_CONFIG): configuration or credentials are wrong; retrying will not help.
    Config,
}

impl ExitKind {
    pub fn code(self) -> u8 {
        match self {
            ExitKind::Success => 0,
            ExitKind::Failure => 1,
            ExitKind::Usage => 2,
            ExitKind::Attention => 3,
            ExitKind::Temporary => 75,
            ExitKind::Config => 78,
        }
    }
}

/// An error that carries its exit class.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Classified {
    pub kind: ExitKind,
    pub message: String,
}

/// A configuration error the user must fix; `message` should say how.
pub fn config(message: impl Into<String>) -> anyhow::Error {
    Classified { kind: ExitKind::Config, message: message.into() }.into()
}

/// The run finished its part, but a human must look at something (exit 3); `message` says what
/// and how to go on.
pub fn attention(message: impl Into<String>) -> anyhow::Error {
    Classified { kind: ExitKind::Attention, message: message.into() }.into()
}

/// A failure that the next run is expected to repair.
pub fn temporary(message: impl Into<String>) -> anyhow::Error {
    Classified { kind: ExitKind::Temporary, message: message.into() }.into()
}

/// The exit class of an error: the first classified cause in its chain wins.
pub fn classify(err: &anyhow::Error) -> ExitKind {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Classified>() {
            return c.kind;
        }
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            return if api.is_credentials() {
                ExitKind::Config
            } else if api.is_temporary() {
                ExitKind::Temporary
            } else {
                ExitKind::Failure
            };
        }
        if cause.downcast_ref::<KeyError>().is_some() {
            return ExitKind::Config;
        }
        match crate::store::classify_error(cause) {
            Some(crate::store::ErrorClass::Temporary) => return ExitKind::Temporary,
            Some(crate::store::ErrorClass::Config) => return ExitKind::Config,
            None => {}
        }
    }
    ExitKind::Failure
}

/// `what failed: why: deeper why`, on one line, for stderr, cron mail and journald.
pub fn one_line(err: &anyhow::Error) -> String {
    crate::starkbank::client::error_chain(err.as_ref())
}

/// Adds a fix hint for credential refusals, which users hit first.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    for cause in err.chain() {
        if let Some(api) = cause.downcast_ref::<ApiError>()
            && api.is_credentials()
        {
            return Some(
                "to fix: check STARKBANK_PROJECT_ID and that its public key in Stark Bank matches STARKBANK_PRIVATE_KEY_PATH",
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn classifies_through_context() {
        let e: anyhow::Result<()> = Err(temporary("stark bank timed out"));
        let e = e.context("issuing slot 3").unwrap_err();
        assert_eq!(classify(&e), ExitKind::Temporary);
        assert_eq!(one_line(&e), "issuing slot 3: stark bank timed out");
        assert_eq!(classify(&anyhow::anyhow!("boom")), ExitKind::Failure);
    }
}
