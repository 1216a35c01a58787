//! The "a credit was stored" hook, run in the background and coalesced.
//!
//! Owns: running the caller's hook on one background thread, at most one run at a time, with
//! at most one more queued for credits stored during a run (however many arrive). Does not own
//! what the hook does (`serve-webhook --process` wires the transfer step to it).

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// The hook: called after one or more new `invoice`/`credited` events were committed.
pub type OnCreditStored = Arc<dyn Fn() + Send + Sync + 'static>;

#[derive(Default)]
struct State {
    pending: bool,
    stopping: bool,
}

pub struct CreditRunner {
    state: Mutex<State>,
    cv: Condvar,
}

impl std::fmt::Debug for CreditRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreditRunner")
    }
}

impl CreditRunner {
    /// Starts the background thread that runs `hook`.
    pub fn start(hook: OnCreditStored) -> anyhow::Result<(Arc<Self>, JoinHandle<()>)> {
        let runner = Arc::new(Self { state: Mutex::new(State::default()), cv: Condvar::new() });
        let r = runner.clone();
        let handle = std::thread::Builder::new().name("credit-hook".into()).spawn(move || r.run(&hook))?;
        Ok((runner, handle))
    }

    /// Asks for a run; several asks before the next run starts make one run.
    pub fn trigger(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.pending = true;
        self.cv.notify_one();
    }

    /// Lets a run in progress finish, drops a queued one, and ends the thread.
    pub fn stop(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.stopping = true;
        self.cv.notify_one();
    }

    fn run(&self, hook: &OnCreditStored) {
        loop {
            {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                while !st.pending && !st.stopping {
                    st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if st.stopping {
                    return;
                }
                st.pending = false;
            }
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook())).is_err() {
                log::error!("the on-credit hook panicked; it runs again on the next credit");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn coalesces_triggers_into_one_run_plus_one_queued() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let r = runs.clone();
        let hook: OnCreditStored = Arc::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
            started_tx.send(()).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
        });
        let (runner, handle) = CreditRunner::start(hook).unwrap();
        runner.trigger();
        started_rx.recv().unwrap(); // first run in progress
        for _ in 0..10 {
            runner.trigger();
        }
        release_tx.send(()).unwrap();
        started_rx.recv().unwrap(); // exactly one queued run follows
        release_tx.send(()).unwrap();
        assert!(started_rx.recv_timeout(Duration::from_millis(200)).is_err(), "no third run");
        runner.stop();
        handle.join().unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
