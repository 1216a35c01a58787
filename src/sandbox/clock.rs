//! The simulated clock: real time since start, multiplied by the time scale, added to the
//! simulated start. Owns reading simulated time; nothing else.
//! Request authentication never uses it (Access-Time is checked against the real clock).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct SimClock {
    real_start: Instant,
    sim_start: DateTime<Utc>,
    scale: f64,
}

impl SimClock {
    pub fn new(sim_start: DateTime<Utc>, scale: f64) -> Self {
        Self { real_start: Instant::now(), sim_start, scale }
    }

    /// The current simulated time.
    pub fn now(&self) -> DateTime<Utc> {
        self.sim_start + to_chrono(self.real_start.elapsed().mul_f64(self.scale))
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
        let c = SimClock::new(start, 3600.0);
        assert!(c.now() >= start);
    }
}
