//! The single SQLite writer with group commit.
//!
//! Owns: the listener's `Store`, batching (take one event, then everything queued behind it,
//! commit them in one transaction with one fsync, then answer each), the store-health flag
//! that `/health` reads, telling the credit hook that a new credit is on disk, and reading and
//! pinning the workspace for the handlers (the only writes besides events).
//! Does not own: verification, parsing or HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::Duration;

use crate::clock::Clock;
use crate::store::{Inserted, NewEvent, Store};

use super::credit::CreditRunner;

/// Most events per transaction: large enough to amortize the fsync, small enough that the
/// first event of a batch does not wait long for the last.
const MAX_BATCH: usize = 512;
/// A commit slower than this is logged as a warning (the disk is the bottleneck).
const SLOW_COMMIT: Duration = Duration::from_millis(200);
/// How often an idle writer proves the database is still there.
const PING_EVERY: Duration = Duration::from_secs(5);

/// What the writer answers for one event: stored, already there, or the store failed (503).
pub type Verdict = Result<Inserted, ()>;

pub enum Msg {
    Store(Box<NewEvent>, SyncSender<Verdict>),
    /// The pinned workspace, read afresh (another process may have pinned it since start).
    Workspace(SyncSender<Result<Option<String>, String>>),
    /// Pins a workspace proven with our own credentials; answers what is pinned now, or why not.
    Pin(String, SyncSender<Result<String, String>>),
    /// Commit what is queued before this message, then exit.
    Stop,
}

pub struct Writer {
    pub store: Store,
    pub rx: Receiver<Msg>,
    pub clock: Clock,
    /// `STARKBANK_WORKSPACE_ID`, when set: a pin must agree with it.
    pub configured_workspace: Option<String>,
    pub healthy: Arc<AtomicBool>,
    pub credits: Option<Arc<CreditRunner>>,
}

impl Writer {
    pub fn run(mut self) {
        let mut batch: Vec<NewEvent> = Vec::with_capacity(MAX_BATCH);
        let mut replies: Vec<SyncSender<Verdict>> = Vec::with_capacity(MAX_BATCH);
        loop {
            let mut stop = match self.rx.recv_timeout(PING_EVERY) {
                Ok(Msg::Store(e, r)) => {
                    batch.push(*e);
                    replies.push(r);
                    false
                }
                Ok(m @ (Msg::Workspace(_) | Msg::Pin(..))) => {
                    self.workspace(m);
                    continue;
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => true,
                Err(RecvTimeoutError::Timeout) => {
                    let ok = self.store.ping().is_ok();
                    if ok != self.healthy.swap(ok, Ordering::Relaxed) {
                        log::warn!(
                            "database {}: {}",
                            self.store.location().display(),
                            if ok { "reachable again" } else { "unreachable" }
                        );
                    }
                    continue;
                }
            };
            while !stop && batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(Msg::Store(e, r)) => {
                        batch.push(*e);
                        replies.push(r);
                    }
                    Ok(m @ (Msg::Workspace(_) | Msg::Pin(..))) => self.workspace(m),
                    Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => stop = true,
                    Err(TryRecvError::Empty) => break,
                }
            }
            if !batch.is_empty() {
                self.commit(&batch, &replies);
                batch.clear();
                replies.clear();
            }
            if stop {
                return;
            }
        }
    }

    /// Answers a handler's question about the workspace (read it, or pin a proven one).
    fn workspace(&mut self, msg: Msg) {
        match msg {
            Msg::Workspace(reply) => {
                let _ = reply.send(crate::workspace::pinned(&self.store).map_err(|e| format!("{e:#}")));
            }
            Msg::Pin(ws, reply) => {
                let pinned = crate::workspace::pin(
                    &mut self.store,
                    &ws,
                    crate::workspace::FROM_EVENT_LOOKUP,
                    self.configured_workspace.as_deref(),
                    self.clock.now(),
                );
                if let Err(e) = &pinned {
                    log::error!("{}", crate::error::one_line(e));
                }
                let _ = reply.send(pinned.map_err(|e| crate::error::one_line(&e)));
            }
            Msg::Store(..) | Msg::Stop => {}
        }
    }

    fn commit(&mut self, batch: &[NewEvent], replies: &[SyncSender<Verdict>]) {
        let started = std::time::Instant::now();
        match self.store.insert_events(batch, self.clock.now()) {
            Ok(verdicts) => {
                let took = started.elapsed();
                if took > SLOW_COMMIT {
                    log::warn!("committing {} event(s) took {} ms (fsync)", batch.len(), took.as_millis());
                } else {
                    log::debug!("committed {} event(s) in {:.1} ms", batch.len(), took.as_secs_f64() * 1e3);
                }
                self.healthy.store(true, Ordering::Relaxed);
                let new_credit = batch.iter().zip(&verdicts).any(|(e, v)| {
                    *v == Inserted::New && e.summary.subscription == "invoice" && e.summary.log_type == "credited"
                });
                for (reply, v) in replies.iter().zip(verdicts) {
                    // The requester may have gone (client hung up); the row is stored anyway.
                    let _ = reply.send(Ok(v));
                }
                if new_credit && let Some(credits) = &self.credits {
                    credits.trigger();
                }
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                log::error!("storing {} event(s) failed: {e:#}", batch.len());
                for reply in replies {
                    let _ = reply.send(Err(()));
                }
            }
        }
    }
}
