//! The business clock: the real one, or `--now` advancing with real time (drills and tests).
//! Request signing never uses it.

use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::error;
use crate::starkbank;

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
