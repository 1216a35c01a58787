//! The transfer step's settings: what the operator configured, validated once into the
//! engine's `Options` (shared by `process-events` and `serve-webhook --process`).
//!
//! Owns: the target account's checks (bank code, branch, account, tax id, account type), the
//! production confirmation of the target (`BANK/BRANCH/ACCOUNT` typed again), the outflow
//! limits' defaults by environment and the attempt and backoff bounds. Errors name the
//! environment variable at fault, as the operator sets it. Does not own: reading flags
//! (`cmd::config::sweep_settings`) or what the step does with them (`sweep`).

use super::{Options, OutflowLimits, PRODUCTION_LIMITS, SANDBOX_LIMITS, Target};
use crate::error;

/// The transfer step's settings as configured (flags, environment, env file), before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub target: Target,
    /// `STARK_SWEEP_CONFIRM_TARGET_ACCOUNT`: required in production, `BANK/BRANCH/ACCOUNT`.
    pub confirm_target_account: Option<String>,
    pub all_credits: bool,
    /// Cents; `None`: the environment's default (`SANDBOX_LIMITS`, `PRODUCTION_LIMITS`).
    pub max_transfer: Option<i64>,
    /// Cents; `None`: the environment's default.
    pub max_outflow_24h: Option<i64>,
    pub transfer_attempts: u32,
    pub retry_backoff_secs: u64,
    /// `STARKBANK_WORKSPACE_ID`, trimmed, when set.
    pub workspace_id: Option<String>,
}

impl Target {
    /// What the operator types to confirm a target: `BANK/BRANCH/ACCOUNT`.
    pub fn confirmation(&self) -> String {
        format!("{}/{}/{}", self.bank_code.trim(), self.branch_code.trim(), self.account_number.trim())
    }
}

impl Options {
    /// Validates the settings once. In production the target must be confirmed, and the outflow
    /// limits default to conservative values. `reconcile`: pull undelivered events too.
    pub fn new(s: &Settings, reconcile: bool, production: bool) -> anyhow::Result<Self> {
        let target = s.target.clone();
        let digits = |s: &str| s.chars().filter(char::is_ascii_digit).count();
        if !(target.bank_code.chars().all(|c| c.is_ascii_digit()) && matches!(target.bank_code.len(), 1..=3 | 8)) {
            return Err(error::config(format!(
                "STARK_SWEEP_TARGET_BANK_CODE=`{}`: use an 8-digit ISPB (Pix, e.g. 20018183) or a 1-3 digit bank code (TED)",
                target.bank_code
            )));
        }
        if target.branch_code.is_empty() || target.account_number.is_empty() || target.name.trim().is_empty() {
            return Err(error::config(
                "STARK_SWEEP_TARGET_BRANCH, STARK_SWEEP_TARGET_ACCOUNT and STARK_SWEEP_TARGET_NAME must not be empty",
            ));
        }
        if !matches!(digits(&target.tax_id), 11 | 14) {
            return Err(error::config(format!(
                "STARK_SWEEP_TARGET_TAX_ID=`{}` is neither a CPF (11 digits) nor a CNPJ (14 digits)",
                target.tax_id
            )));
        }
        if !matches!(target.account_type.as_str(), "checking" | "savings" | "salary" | "payment") {
            return Err(error::config(format!(
                "STARK_SWEEP_TARGET_ACCOUNT_TYPE=`{}`: use checking, savings, salary or payment",
                target.account_type
            )));
        }
        if production {
            // The bank, branch and account typed again: a change to any of the three stops it.
            let expected = target.confirmation();
            match s.confirm_target_account.as_deref().map(str::trim) {
                Some(c) if c == expected => {}
                Some(c) => {
                    return Err(error::config(format!(
                        "STARK_SWEEP_CONFIRM_TARGET_ACCOUNT=`{c}` does not match the configured target `{expected}` (STARK_SWEEP_TARGET_BANK_CODE/_BRANCH/_ACCOUNT): nothing is sent to an account not confirmed; to fix: check the target, then type it again as BANK/BRANCH/ACCOUNT in STARK_SWEEP_CONFIRM_TARGET_ACCOUNT",
                    )));
                }
                None => {
                    return Err(error::config(format!(
                        "production: the target account is not confirmed; nothing is sent; to fix: set STARK_SWEEP_CONFIRM_TARGET_ACCOUNT={expected} (BANK/BRANCH/ACCOUNT) after checking it is the account money must go to",
                    )));
                }
            }
        }
        let defaults = if production { PRODUCTION_LIMITS } else { SANDBOX_LIMITS };
        let limits = OutflowLimits {
            max_transfer: s.max_transfer.unwrap_or(defaults.max_transfer),
            max_24h: s.max_outflow_24h.unwrap_or(defaults.max_24h),
        };
        if limits.max_transfer <= 0 || limits.max_24h <= 0 {
            return Err(error::config(
                "STARK_SWEEP_MAX_TRANSFER and STARK_SWEEP_MAX_OUTFLOW_24H must be positive amounts in cents",
            ));
        }
        let max_attempts = s.transfer_attempts;
        if !(1..=20).contains(&max_attempts) {
            return Err(error::config("STARK_SWEEP_TRANSFER_ATTEMPTS must be between 1 and 20"));
        }
        Ok(Self {
            target,
            all_credits: s.all_credits,
            max_attempts,
            backoff: chrono::Duration::seconds(s.retry_backoff_secs.min(86_400) as i64),
            reconcile,
            workspace_id: s.workspace_id.clone(),
            limits,
            dry_run: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            target: Target::default(),
            confirm_target_account: None,
            all_credits: false,
            max_transfer: None,
            max_outflow_24h: None,
            transfer_attempts: crate::sweep::DEFAULT_TRANSFER_ATTEMPTS,
            retry_backoff_secs: crate::sweep::DEFAULT_RETRY_BACKOFF_SECS,
            workspace_id: None,
        }
    }

    #[test]
    fn production_sends_only_to_a_confirmed_target_under_its_own_limits() {
        let sandbox = Options::new(&settings(), true, false).unwrap();
        assert_eq!(sandbox.limits, SANDBOX_LIMITS);
        let err = Options::new(&settings(), true, true).unwrap_err();
        assert_eq!(error::classify(&err), error::ExitKind::Config);
        assert!(err.to_string().contains("not confirmed"), "{err}");
        let typed = Settings { confirm_target_account: Some(" 20018183/0001/6341320293482496 ".into()), ..settings() };
        assert_eq!(Options::new(&typed, true, true).unwrap().limits, PRODUCTION_LIMITS);
        let other = Settings { confirm_target_account: Some("20018183/0001/1".into()), ..settings() };
        assert!(Options::new(&other, true, true).unwrap_err().to_string().contains("does not match"));
    }

    #[test]
    fn each_mistake_is_a_configuration_error() {
        let target = Target::default();
        for bad in [
            Settings { target: Target { bank_code: "1234".into(), ..target.clone() }, ..settings() },
            Settings { target: Target { name: " ".into(), ..target.clone() }, ..settings() },
            Settings { target: Target { tax_id: "123".into(), ..target.clone() }, ..settings() },
            Settings { target: Target { account_type: "gold".into(), ..target.clone() }, ..settings() },
            Settings { max_transfer: Some(0), ..settings() },
            Settings { transfer_attempts: 21, ..settings() },
        ] {
            let err = Options::new(&bad, true, false).unwrap_err();
            assert_eq!(error::classify(&err), error::ExitKind::Config, "{bad:?}");
        }
    }
}
