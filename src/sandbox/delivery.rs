//! Webhook delivery, off the request path. With a scaled clock, the tick thread runs the
//! schedule and queues ready deliveries, and delivery threads POST them (short real timeouts)
//! and record the outcome, which may schedule a retry. With a manual clock, `advance_to` does
//! both on the caller's thread until nothing more is due. Owns the threads and the network; the
//! rules of what to retry live in `state`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Shared;
use super::routes::lock;
use super::state::{Job, Outcome};

/// How often the tick thread looks at the schedule, in real time.
const TICK: Duration = Duration::from_millis(10);

/// Runs the schedule until stopped, handing deliveries to `tx`.
pub fn tick_loop(shared: Arc<Shared>, tx: Sender<Job>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let jobs = {
            let mut state = lock(&shared);
            state.advance(shared.clock.now())
        };
        for job in jobs {
            if tx.send(job).is_err() {
                return;
            }
        }
        std::thread::sleep(TICK);
    }
}

fn http_client(timeout: Duration) -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .timeout(timeout)
        .user_agent("Stark Bank webhook (stark-sweep emulator)")
        .build()
        .map_err(|e| format!("no HTTP client for webhook delivery: {e}"))
}

/// What one move of a manual clock did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Moved {
    /// Webhook POSTs made (answered or not).
    pub deliveries: usize,
}

/// Moves a manual clock to `t`, then runs the schedule and makes every delivery due by `t`,
/// until nothing more is due (a delivery can schedule another at the same moment: a duplicate,
/// or a `paid` event held back until its `credited` one was tried).
pub fn advance_to(shared: &Shared, t: DateTime<Utc>) -> Result<Moved, String> {
    let _one_at_a_time = shared.moving.lock().unwrap_or_else(|p| p.into_inner());
    shared.clock.set(t)?;
    let client = http_client(shared.delivery_timeout)?;
    let mut moved = Moved::default();
    loop {
        let jobs = lock(shared).advance(t);
        if jobs.is_empty() {
            return Ok(moved);
        }
        for job in jobs {
            let outcome = post(&client, &job, shared.delivery_timeout);
            log::debug!("sandbox: event {} to {}: {outcome:?}", job.delivery.event_id, job.url);
            lock(shared).record(&job, outcome);
            moved.deliveries += 1;
        }
    }
}

/// POSTs queued deliveries until stopped. The receiver is shared by the delivery threads.
pub fn delivery_loop(shared: Arc<Shared>, rx: Arc<std::sync::Mutex<Receiver<Job>>>, timeout: Duration) {
    let client = match http_client(timeout) {
        Ok(c) => c,
        Err(e) => {
            log::error!("sandbox: {e}");
            return;
        }
    };
    while !shared.stop.load(Ordering::SeqCst) {
        let next = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv_timeout(Duration::from_millis(50))
        };
        let job = match next {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let outcome = post(&client, &job, timeout);
        log::debug!("sandbox: event {} to {}: {outcome:?}", job.delivery.event_id, job.url);
        lock(&shared).record(&job, outcome);
    }
}

fn post(client: &reqwest::blocking::Client, job: &Job, timeout: Duration) -> Outcome {
    let sent = client
        .post(&job.url)
        .header("Content-Type", "application/json")
        .header("Digital-Signature", &job.signature)
        .body(job.body.clone())
        .send();
    match sent {
        Ok(resp) => Outcome::Status(resp.status().as_u16()),
        Err(e) if e.is_timeout() => Outcome::Failed {
            code: "timeout",
            message: format!("HTTP POST request timed out after {} seconds", timeout.as_secs_f32()),
        },
        Err(e) => Outcome::Failed { code: "badConnection", message: format!("HTTP POST request failed: {e}") },
    }
}
