//! The simulated clock, in one of two modes:
//! - scaled: real time since start, multiplied by the time scale, added to the simulated start;
//! - manual: it stands still until its owner moves it (`Sandbox::advance_to`), so that what
//!   happens in a simulated hour never depends on how fast the machine is.
//!
//! Owns reading (and, when manual, setting) simulated time; nothing else. Request
//! authentication never uses it (Access-Time is checked against the real clock).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

#[derive(Debug)]
enum Mode {
    Scaled { real_start: Instant, sim_start: DateTime<Utc>, scale: f64 },
    Manual(Mutex<DateTime<Utc>>),
}

#[derive(Debug)]
pub struct SimClock {
    mode: Mode,
}

impl SimClock {
    pub fn scaled(sim_start: DateTime<Utc>, scale: f64) -> Self {
        Self { mode: Mode::Scaled { real_start: Instant::now(), sim_start, scale } }
    }

    pub fn manual(sim_start: DateTime<Utc>) -> Self {
        Self { mode: Mode::Manual(Mutex::new(sim_start)) }
    }

    pub fn is_manual(&self) -> bool {
        matches!(self.mode, Mode::Manual(_))
    }

    /// The current simulated time.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.mode {
            Mode::Scaled { real_start, sim_start, scale } => {
                *sim_start + to_chrono(real_start.elapsed().mul_f64(*scale))
            }
            Mode::Manual(t) => *t.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Moves a manual clock forward to `t` (never back). Errors for a scaled clock.
    pub fn set(&self, t: DateTime<Utc>) -> Result<(), String> {
        match &self.mode {
            Mode::Scaled { .. } => {
                Err("the emulator's clock is scaled, not manual; start it with a manual clock".into())
            }
            Mode::Manual(now) => {
                let mut now = now.lock().unwrap_or_else(|p| p.into_inner());
                if t < *now {
                    return Err(format!("the clock cannot go back from {} to {}", *now, t));
                }
                *now = t;
                Ok(())
            }
        }
    }
}

/// A std duration as a chrono one, saturating at chrono's range.
pub fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_clock_runs_faster_and_converts_back() {
        let start = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let c = SimClock::scaled(start, 3600.0);
        assert!(c.now() >= start);
        assert!(c.set(start).is_err());
    }

    #[test]
    fn manual_clock_moves_only_forward_and_only_when_told() {
        let start = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let c = SimClock::manual(start);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now(), start);
        c.set(start + chrono::Duration::hours(1)).unwrap();
        assert_eq!(c.now(), start + chrono::Duration::hours(1));
        assert!(c.set(start).is_err());
    }
}
