//! Bounded concurrency for the listener: an elastic thread pool with a hard cap, and permits.
//!
//! Owns: how many request threads may exist (idle ones are reused, then retire), how many may
//! verify at once, and the "how many are still in flight" count that shutdown waits on.
//! Does not own: what the tasks do.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Threads that read a request body and see it through to its answer. Reading blocks for as
/// long as the client takes (tiny_http has no socket timeouts), so each request gets a thread
/// of its own, up to `max` at once; past that, `try_execute` hands the job back.
pub struct Elastic<J: Send + 'static> {
    inner: Arc<Inner<J>>,
}

impl<J: Send + 'static> Clone for Elastic<J> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

type Handler<J> = Box<dyn Fn(J) + Send + Sync + 'static>;

struct Inner<J> {
    state: Mutex<State<J>>,
    work: Condvar,
    done: Condvar,
    handler: Handler<J>,
    max: usize,
    idle_timeout: Duration,
    stack_size: usize,
    name: &'static str,
}

struct State<J> {
    queue: VecDeque<J>,
    threads: usize,
    idle: usize,
    /// Jobs accepted and not yet finished (queued or running).
    in_flight: usize,
}

impl<J: Send + 'static> std::fmt::Debug for Elastic<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elastic").field("name", &self.inner.name).field("max", &self.inner.max).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Jobs run outside this lock, so poisoning only means a bug elsewhere; the counters stay
    // meaningful either way.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<J: Send + 'static> Elastic<J> {
    /// `handler` runs each job; at most `max` jobs are in flight; threads idle for 30 s retire.
    pub fn new(name: &'static str, max: usize, stack_size: usize, handler: impl Fn(J) + Send + Sync + 'static) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State { queue: VecDeque::new(), threads: 0, idle: 0, in_flight: 0 }),
                work: Condvar::new(),
                done: Condvar::new(),
                handler: Box::new(handler),
                max: max.max(1),
                idle_timeout: Duration::from_secs(30),
                stack_size,
                name,
            }),
        }
    }

    /// Runs `job` on an idle thread or a new one; `Err(job)` when `max` jobs are in flight
    /// (or no thread can be started).
    pub fn try_execute(&self, job: J) -> Result<(), J> {
        let mut st = lock(&self.inner.state);
        if st.in_flight >= self.inner.max {
            return Err(job);
        }
        st.queue.push_back(job);
        // With `max` threads and fewer than `max` jobs in flight, some thread is idle or about
        // to look at the queue (it does so under this lock before idling): no new thread.
        if st.idle >= st.queue.len() || st.threads >= self.inner.max {
            st.in_flight += 1;
            self.inner.work.notify_one();
            return Ok(());
        }
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name(self.inner.name.to_string())
            .stack_size(self.inner.stack_size)
            .spawn(move || worker(&inner));
        match spawned {
            Ok(_) => {
                st.in_flight += 1;
                st.threads += 1;
                Ok(())
            }
            Err(e) => {
                log::error!("{}: cannot start a thread: {e}", self.inner.name);
                match st.queue.pop_back() {
                    Some(job) => Err(job),
                    None => Ok(()),
                }
            }
        }
    }

    /// Jobs accepted and not finished.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.state).in_flight
    }

    /// Waits until no job is in flight, or `deadline`. True when everything finished.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let mut st = lock(&self.inner.state);
        while st.in_flight > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = match self.inner.done.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

fn worker<J: Send + 'static>(inner: &Inner<J>) {
    let mut st = lock(&inner.state);
    loop {
        if let Some(job) = st.queue.pop_front() {
            drop(st);
            // A panic in one request must not take the thread (or the count) with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (inner.handler)(job)));
            st = lock(&inner.state);
            st.in_flight -= 1;
            if st.in_flight == 0 {
                inner.done.notify_all();
            }
            continue;
        }
        st.idle += 1;
        let (guard, timeout) = match inner.work.wait_timeout(st, inner.idle_timeout) {
            Ok((g, t)) => (g, t.timed_out()),
            Err(p) => {
                let (g, t) = p.into_inner();
                (g, t.timed_out())
            }
        };
        st = guard;
        st.idle -= 1;
        if timeout && st.queue.is_empty() {
            st.threads -= 1;
            return;
        }
    }
}

/// A counting semaphore: at most `n` holders at once (CPU-bound verification).
#[derive(Debug)]
pub struct Permits {
    free: Mutex<usize>,
    cv: Condvar,
}

/// Returns its permit on drop.
#[derive(Debug)]
pub struct Permit<'a>(&'a Permits);

impl Permits {
    pub fn new(n: usize) -> Self {
        Self { free: Mutex::new(n.max(1)), cv: Condvar::new() }
    }

    pub fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        self.0.cv.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn caps_in_flight_jobs_and_reuses_threads() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let ran = Arc::new(AtomicUsize::new(0));
        let (rx, r) = (release_rx.clone(), ran.clone());
        let pool = Elastic::new("t", 2, 64 * 1024, move |block: bool| {
            if block {
                let _ = rx.lock().unwrap().recv();
            }
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert!(pool.try_execute(true).is_ok());
        assert!(pool.try_execute(true).is_ok());
        assert_eq!(pool.try_execute(false), Err(false), "a third job must be handed back");
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        assert!(pool.wait_idle(Instant::now() + Duration::from_secs(10)));
        for _ in 0..20 {
            while pool.try_execute(false).is_err() {
                std::thread::yield_now();
            }
        }
        assert!(pool.wait_idle(Instant::now() + Duration::from_secs(10)));
        assert_eq!(ran.load(Ordering::SeqCst), 22);
        assert!(lock(&pool.inner.state).threads <= 2);
    }

    #[test]
    fn permits_bound_concurrency() {
        let permits = Arc::new(Permits::new(2));
        let max_seen = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (p, m, n) = (permits.clone(), max_seen.clone(), now.clone());
                std::thread::spawn(move || {
                    let _g = p.acquire();
                    let c = n.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(c, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    n.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(max_seen.load(Ordering::SeqCst) <= 2);
    }
}
