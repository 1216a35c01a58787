//! What one listener process counts of its own intake: deliveries received, stored, duplicate
//! and refused (by reason), and how long each took to answer. These live in the process (a
//! Prometheus counter starts at 0 when the process does, and `rate()` handles the restart); what
//! the store holds is read from the store instead (`store::Figures`), so that every process agrees.
//!
//! Owns: the counters, the histogram and their names. Does not own: when a request counts (the
//! handler says) or the text format (`metrics::render`).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the intake latency buckets, in seconds: a verified, committed delivery takes
/// a few milliseconds (one fsync); Stark Bank gives up on an answer after about 5 seconds.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Why a delivery was not stored, as the answer's `result` says it, with its HTTP status. Every
/// one is exposed from the start (at 0), so an alert's `rate()` sees the first one.
pub const REFUSALS: [(&str, u16); 13] = [
    ("missing signature", 401),
    ("malformed signature", 401),
    ("invalid signature", 401),
    ("malformed event", 400),
    ("incomplete body", 400),
    ("other workspace", 403),
    ("body not received in time", 408),
    ("body too large", 413),
    ("public key unavailable", 503),
    ("workspace unknown", 503),
    ("store unavailable", 503),
    ("busy", 503),
    ("internal error", 500),
];

/// The label set of one refusal: `reason` (snake case) and `code`.
type RefusalLabels = [(&'static str, String); 2];

/// The listener's own counts. Cheap to clone (every metric is shared).
#[derive(Debug, Clone)]
pub struct Intake {
    received: Counter,
    stored: Counter,
    duplicate: Counter,
    refused: Family<RefusalLabels, Counter>,
    latency: Histogram,
    /// 1 while `/health` says ok (store reachable and public key loaded), set at each scrape.
    ready: Gauge,
}

impl Default for Intake {
    fn default() -> Self {
        Self::new()
    }
}

fn labels(outcome: &str, status: u16) -> RefusalLabels {
    let known = REFUSALS.iter().any(|(r, _)| *r == outcome);
    let reason = if known { outcome.replace(' ', "_") } else { "other".to_string() };
    [("reason", reason), ("code", status.to_string())]
}

impl Intake {
    pub fn new() -> Self {
        let intake = Self {
            received: Counter::default(),
            stored: Counter::default(),
            duplicate: Counter::default(),
            refused: Family::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
            ready: Gauge::default(),
        };
        for (reason, code) in REFUSALS {
            let _ = intake.refused.get_or_create(&labels(reason, code));
        }
        intake
    }

    /// One answer to `POST /webhook`: `result` is what its body says (`stored`, `duplicate`, or
    /// why it was refused). `took` is `None` for answers given before the body was read.
    pub fn answered(&self, status: u16, result: &str, took: Option<Duration>) {
        self.received.inc();
        match (status, result) {
            (200, "stored") => {
                self.stored.inc();
            }
            (200, "duplicate") => {
                self.duplicate.inc();
            }
            _ => {
                self.refused.get_or_create(&labels(result, status)).inc();
            }
        }
        if let Some(took) = took {
            self.latency.observe(took.as_secs_f64());
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Adds the listener's metrics to `registry` (which shares them: nothing is copied).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "stark_sweep_webhook_events_received",
            "POST /webhook requests this listener answered since it started",
            self.received.clone(),
        );
        registry.register(
            "stark_sweep_webhook_events_stored",
            "Deliveries verified and stored as a new event (answered 200 stored)",
            self.stored.clone(),
        );
        registry.register(
            "stark_sweep_webhook_events_duplicate",
            "Deliveries of an event already stored (answered 200 duplicate)",
            self.duplicate.clone(),
        );
        registry.register(
            "stark_sweep_webhook_events_refused",
            "Deliveries not stored, by reason (the answer's result, snake case) and HTTP status",
            self.refused.clone(),
        );
        registry.register_with_unit(
            "stark_sweep_webhook_intake",
            "Time from a delivery's whole body to its answer: verification, the workspace check and the commit",
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            "stark_sweep_webhook_ready",
            "1 while the listener can store deliveries (store reachable, Stark Bank's public key loaded), as /health",
            self.ready.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is the failed assertion")]
    use super::*;

    #[test]
    fn answers_are_counted_by_outcome_and_reason() {
        let intake = Intake::new();
        intake.answered(200, "stored", Some(Duration::from_millis(2)));
        intake.answered(200, "duplicate", Some(Duration::from_millis(1)));
        intake.answered(401, "invalid signature", Some(Duration::from_millis(1)));
        intake.answered(401, "missing signature", None);
        intake.answered(418, "teapot", None);
        assert_eq!(intake.received.get(), 5);
        assert_eq!(intake.stored.get(), 1);
        assert_eq!(intake.duplicate.get(), 1);
        assert_eq!(intake.refused.get_or_create(&labels("invalid signature", 401)).get(), 1);
        assert_eq!(intake.refused.get_or_create(&labels("nonsense", 418)).get(), 1, "unknown reasons count as other");
        let mut registry = Registry::default();
        intake.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("\nstark_sweep_webhook_intake_seconds_count 3\n"),
            "answers given before the body was read have no intake time: {text}"
        );
    }
}
