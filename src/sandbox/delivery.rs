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
use super::lock::lock;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// The simulated time the clock was moved to.
    pub now: DateTime<Utc>,
    /// Webhook POSTs made (answered or not).
    pub deliveries: usize,
}

/// Where to move a manual clock.
#[derive(Debug, Clone, Copy)]
pub enum MoveTo {
    At(DateTime<Utc>),
    /// Forward from wherever the clock is when the move starts (not when it was asked for).
    By(chrono::Duration),
}

/// The furthest a single move may go: a clock moved to year 9999 could never come back.
const MAX_MOVE: chrono::Duration = chrono::Duration::days(3650);

/// Moves a manual clock, then runs the schedule and makes every delivery due by the new time,
/// until nothing more is due (a delivery can schedule another at the same moment: a duplicate,
/// or a `paid` event held back until its `credited` one was tried). One move at a time; a
/// stopping emulator ends the move between deliveries.
pub fn advance_to(shared: &Shared, to: MoveTo) -> Result<Moved, String> {
    let _one_at_a_time = shared.moving.lock().unwrap_or_else(|p| p.into_inner());
    let from = shared.clock.now();
    let t = match to {
        MoveTo::At(t) => t,
        MoveTo::By(d) => from.checked_add_signed(d).ok_or("the move goes past the end of time")?,
    };
    if t - from > MAX_MOVE {
        return Err(format!("a move of more than {} days at once is refused", MAX_MOVE.num_days()));
    }
    shared.clock.set(t)?;
    let client = http_client(shared.delivery_timeout)?;
    let mut moved = Moved { now: t, deliveries: 0 };
    loop {
        let jobs = lock(shared).advance(t);
        if jobs.is_empty() || shared.stop.load(Ordering::SeqCst) {
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
