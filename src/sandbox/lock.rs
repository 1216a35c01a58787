//! The state lock: every thread (requests, deliveries, the `Sandbox` handle) reaches `State`
//! through it. Owns taking it (a panic elsewhere does not make the state unusable) and letting
//! go of it for a while (`StateGuard::unlocked`, for a deliberately slow request). Does not own
//! what is done under it.

use std::sync::{Mutex, MutexGuard};

use super::Shared;
use super::state::State;

/// Takes the state lock (a panic elsewhere does not make the state unusable).
pub fn lock(shared: &Shared) -> StateGuard<'_> {
    StateGuard { mutex: &shared.state, guard: Some(take_lock(&shared.state)) }
}

fn take_lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The locked state, which a request can let go of for a while (`unlocked`) and take back,
/// so a deliberately slow request does not stall every other one.
#[derive(Debug)]
pub struct StateGuard<'a> {
    mutex: &'a Mutex<State>,
    /// `None` only inside `unlocked`, which holds `&mut self` throughout.
    guard: Option<MutexGuard<'a, State>>,
}

impl StateGuard<'_> {
    /// Runs `f` with the lock released and takes it again before returning. What was read
    /// before may have changed by then.
    pub fn unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.guard = None;
        let r = f();
        self.guard = Some(take_lock(self.mutex));
        r
    }
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        match &self.guard {
            Some(g) => g,
            None => unreachable!("the state is only unlocked inside StateGuard::unlocked"),
        }
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        match &mut self.guard {
            Some(g) => g,
            None => unreachable!("the state is only unlocked inside StateGuard::unlocked"),
        }
    }
}
