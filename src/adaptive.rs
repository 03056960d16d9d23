//! How many targets are diagnosed at once: a limit that adapts to what the chain can take.
//!
//! A fixed number of targets in flight either wastes a fast fleet's time or overloads a slow chain:
//! past the point where the chain (the edge, cloudflared, Caddy, the containers' CPUs) is busy,
//! more targets at once only make every probe slower, until probes time out and healthy sandboxes
//! come out inconclusive. So the limit follows the targets' own durations, like a congestion
//! window:
//!
//! - it starts at [`INITIAL`] (or `--concurrency` if smaller);
//! - a target that took at most [`FAST`] × the fastest target seen lets one more in (up to
//!   `--concurrency`, the maximum);
//! - a target that took more than [`SLOW`] × the fastest shrinks the limit by [`DECREASE`], at most
//!   once per fastest-target duration (one shrink per round of targets, not one per target);
//! - the limit never drops below what finishing the remaining targets before the run's deadline
//!   needs at the targets' average duration (times 1.5), so a fleet whose probes all time out
//!   (the tunnel is down) is not slowed into the deadline.
//!
//! On a chain with spare capacity targets take about as long at 32 in flight as at 1, and the
//! limit climbs to `--concurrency`; on a saturated one it settles where targets stay within a few
//! times their unloaded duration.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
// tokio's clock: the same as std's, and pausable in tests.
use tokio::time::Instant;

/// Targets in flight at the start.
pub(crate) const INITIAL: usize = 16;
/// A target at most this many times the fastest one lets one more in.
pub(crate) const FAST: f64 = 2.0;
/// A target slower than this many times the fastest one shrinks the limit.
pub(crate) const SLOW: f64 = 3.0;
/// The factor a shrink applies.
pub(crate) const DECREASE: f64 = 0.7;

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    fastest: Option<Duration>,
    /// Sum and count of finished targets' durations.
    total: Duration,
    done: usize,
    last_shrink: Option<Instant>,
    /// Targets not finished yet (waiting or in flight).
    pending: usize,
    /// The most targets that were in flight at once.
    peak: usize,
}

/// A gate that lets at most `limit` targets through at once; the limit adapts (module docs).
#[derive(Debug)]
pub struct Gate {
    max: usize,
    start: Instant,
    deadline: Duration,
    state: Mutex<State>,
    notify: Notify,
}

/// A target in flight; report how long it took with [`Gate::done`].
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    gate: &'a Gate,
    since: Instant,
    finished: bool,
}

impl Gate {
    /// `max`: `--concurrency`; `targets`: how many will pass; `deadline`: the run's, from now.
    pub fn new(max: usize, targets: usize, deadline: Duration) -> Gate {
        let max = max.max(1);
        Gate {
            max,
            start: Instant::now(),
            deadline,
            state: Mutex::new(State {
                limit: INITIAL.min(max) as f64,
                in_flight: 0,
                fastest: None,
                total: Duration::ZERO,
                done: 0,
                last_shrink: None,
                pending: targets,
                peak: 0,
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current limit (whole targets).
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        (self.lock().limit as usize).max(1)
    }

    /// The most targets that were in flight at once so far.
    #[cfg(test)]
    pub(crate) fn peak(&self) -> usize {
        self.lock().peak
    }

    /// Waits until one more target may start.
    pub(crate) async fn acquire(&self) -> Permit<'_> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.in_flight < (s.limit as usize).max(1) {
                    s.in_flight += 1;
                    s.peak = s.peak.max(s.in_flight);
                    return Permit {
                        gate: self,
                        since: Instant::now(),
                        finished: false,
                    };
                }
            }
            notified.await;
        }
    }

    fn finish(&self, took: Duration, counted: bool) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        s.pending = s.pending.saturating_sub(1);
        if counted {
            s.total += took;
            s.done += 1;
            let fastest = *s.fastest.get_or_insert(took);
            let fastest = fastest.min(took);
            s.fastest = Some(fastest);
            let ratio = took.as_secs_f64() / fastest.as_secs_f64().max(1e-3);
            let now = Instant::now();
            if ratio <= FAST {
                s.limit = (s.limit + 1.0).min(self.max as f64);
            } else if ratio > SLOW && s.last_shrink.is_none_or(|t| now - t >= fastest) {
                s.limit = (s.limit * DECREASE).max(1.0);
                s.last_shrink = Some(now);
            }
            // Never below what the rest needs to finish before the deadline.
            let avg = s.total.as_secs_f64() / s.done as f64;
            let left = self
                .deadline
                .saturating_sub(self.start.elapsed())
                .as_secs_f64()
                .max(1e-3);
            let needed = (1.5 * s.pending as f64 * avg / left).ceil();
            s.limit = s.limit.max(needed.min(self.max as f64)).max(1.0);
        }
        drop(s);
        self.notify.notify_waiters();
    }
}

impl Permit<'_> {
    /// The target finished: its duration adjusts the limit.
    pub(crate) fn done(mut self) {
        self.finished = true;
        self.gate.finish(self.since.elapsed(), true);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // Cancelled (the run's deadline cut it): free the slot, learn nothing.
        if !self.finished {
            self.gate.finish(self.since.elapsed(), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` targets through a gate; target `i` takes `took(i, targets in flight when it
    /// starts)`.
    async fn run(gate: &Gate, n: usize, took: impl Fn(usize, u32) -> Duration) -> Duration {
        let in_flight = std::sync::atomic::AtomicU32::new(0);
        let start = Instant::now();
        let took = &took;
        let in_flight = &in_flight;
        futures_util::future::join_all((0..n).map(|i| async move {
            let p = gate.acquire().await;
            let k = in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            tokio::time::sleep(took(i, k)).await;
            in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            p.done();
        }))
        .await;
        start.elapsed()
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn a_chain_with_spare_capacity_gets_every_target_at_once() {
        let gate = Gate::new(32, 200, Duration::from_secs(35));
        run(&gate, 200, |_, _| 250 * MS).await;
        assert_eq!(gate.limit(), 32);
        assert_eq!(gate.peak(), 32);
    }

    #[tokio::test(start_paused = true)]
    async fn a_saturated_chain_is_not_overloaded() {
        // A CPU-bound chain: a target needs 100 ms of CPU and at least 250 ms, so k targets at
        // once take max(250 ms, k x 100 ms) each. At 100 at once a target takes 10 s (past a
        // timeout); the gate keeps them within a few times the fastest, in the same total time.
        let gate = Gate::new(128, 100, Duration::from_secs(300));
        let took = run(&gate, 100, |_, k| (100 * MS * k).max(250 * MS)).await;
        eprintln!("limit {} peak {} took {took:?}", gate.limit(), gate.peak());
        assert!(gate.limit() <= 16, "limit {}", gate.limit());
        assert!(gate.peak() <= 24, "peak {}", gate.peak());
        // All at once: 10 s. The gate: not slower (the CPU is as busy).
        assert!(took <= Duration::from_millis(10_500), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_keeps_enough_in_flight_when_everything_is_slow() {
        // One healthy sandbox (250 ms), then every probe of the 99 others times out (10 s, the
        // tunnel is down): they must still finish within the 35 s deadline.
        let gate = Gate::new(64, 100, Duration::from_secs(35));
        let took = run(
            &gate,
            100,
            |i, _| if i == 0 { 250 * MS } else { 10_000 * MS },
        )
        .await;
        assert!(took <= Duration::from_secs(35), "took {took:?}");
    }

    #[tokio::test]
    async fn a_cancelled_target_frees_its_slot() {
        let gate = Gate::new(1, 2, Duration::from_secs(10));
        let p = gate.acquire().await;
        drop(p);
        let p = tokio::time::timeout(Duration::from_secs(1), gate.acquire())
            .await
            .expect("the slot is free again");
        p.done();
        assert_eq!(gate.limit(), 1);
    }
}
