//! The concurrency limiter shared by every upload: a fixed number of slots, or as many as the AIMD controller allows.
//!
//! A mutex over the controller and the in-flight count plus a [`Notify`]
//! rather than a resized semaphore: the limit may shrink below the number of
//! requests in flight, and then nobody may start until enough have finished.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::aimd::{Aimd, AimdConfig, Response, Signal};

/// Decides how many requests may be in flight. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
    /// Woken when a slot frees or the limit changes.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    control: Control,
    in_flight: usize,
}

#[derive(Debug)]
enum Control {
    Fixed(usize),
    Adaptive(Aimd),
}

impl Control {
    fn limit(&self) -> usize {
        match self {
            Control::Fixed(n) => *n,
            Control::Adaptive(aimd) => aimd.limit(),
        }
    }
}

impl Limiter {
    /// At most `n` at once (at least one, so that nothing waits forever).
    pub fn fixed(n: usize) -> Self {
        Limiter::with(Control::Fixed(n.max(1)))
    }

    /// As many at once as the server takes, found by the AIMD controller.
    pub fn adaptive(config: AimdConfig) -> Self {
        Limiter::with(Control::Adaptive(Aimd::new(config)))
    }

    fn with(control: Control) -> Self {
        Limiter {
            state: Mutex::new(State {
                control,
                in_flight: 0,
            }),
            changed: Notify::new(),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().control.limit()
    }

    /// Requests holding a permit now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Waits for a slot. Cancel-safe: the slot is taken in the same poll
    /// that returns it, so dropping this future never leaks one.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            // Registered before the check: a slot freed after the check
            // wakes this waiter, one freed before it is seen by it.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(permit) = self.try_acquire_at(Instant::now()) {
                return permit;
            }
            changed.await;
        }
    }

    /// A slot at `now`, if one is free. Time is passed in so that the
    /// simulation in the tests can run on a virtual clock.
    fn try_acquire_at(&self, now: Instant) -> Option<Permit<'_>> {
        let mut state = self.lock();
        if state.in_flight >= state.control.limit() {
            return None;
        }
        state.in_flight += 1;
        Some(Permit {
            limiter: self,
            started: now,
            sent_with: state.in_flight,
            finished: false,
        })
    }

    fn release(&self, now: Instant, permit: &Permit<'_>, outcome: Signal) {
        {
            let mut state = self.lock();
            let in_flight = state.in_flight;
            if let Control::Adaptive(aimd) = &mut state.control {
                let was = aimd.limit();
                aimd.on_response(
                    now.into_std(),
                    Response {
                        rtt: now.saturating_duration_since(permit.started),
                        outcome,
                        in_flight,
                        sent_with: permit.sent_with,
                    },
                );
                if aimd.limit() != was {
                    tracing::debug!(
                        limit = aimd.limit(),
                        was,
                        target = aimd.target(),
                        ?outcome,
                        in_flight,
                        sent_with = permit.sent_with,
                        "concurrency limit changed"
                    );
                }
            }
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        // Every waiter re-checks: the limit may have grown by many at once.
        self.changed.notify_waiters();
    }

    /// Nothing under the lock can panic, so a poisoned lock still holds consistent state.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One request's slot. Report how it went with [`Permit::done`]; dropping it
/// instead frees the slot and counts as [`Signal::Neutral`], which teaches
/// the controller nothing.
#[derive(Debug)]
#[must_use = "a permit frees its slot when done or dropped"]
pub struct Permit<'a> {
    limiter: &'a Limiter,
    started: Instant,
    /// Requests in flight once this one was admitted, itself included.
    sent_with: usize,
    finished: bool,
}

impl Permit<'_> {
    /// The request ended: its round trip (from acquisition) and outcome feed the controller.
    pub fn done(self, outcome: Signal) {
        self.done_at(Instant::now(), outcome);
    }

    fn done_at(mut self, now: Instant, outcome: Signal) {
        self.finished = true;
        self.limiter.release(now, &self, outcome);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.limiter.release(Instant::now(), self, Signal::Neutral);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, VecDeque};
    use std::sync::Arc;
    use std::time::Duration;

    use crate::config::{DEFAULT_RETRY_COUNT, DEFAULT_RETRY_DELAY};
    use crate::deliver::aimd::BASE_HOLD;
    use crate::retry;

    /// The benchmarks' service: 300 ms per upload, `Retry-After: 1` with a 429.
    const LATENCY: Duration = Duration::from_millis(300);
    const RETRY_AFTER: Duration = Duration::from_secs(1);

    /// A served request's time: LATENCY ±10% by job (a fixed permutation of
    /// 0..=20, mean LATENCY), so that answers do not arrive in lockstep.
    fn latency(job: usize) -> Duration {
        LATENCY.mul_f64(0.9 + ((job * 8) % 21) as f64 / 100.0)
    }

    /// A fixed pseudo-random number in [0, 1) for the jitter of a retry.
    fn unit(job: usize, attempt: u32) -> f64 {
        let mut x = (job as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(attempt);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// How long a refusal takes to come back: 1–2 ms by job, short, but long
    /// enough that a burst of requests sent together is all sent before the
    /// first refusal arrives, and the refusals come back in any order, as
    /// over real connections.
    fn refusal_time(job: usize) -> Duration {
        Duration::from_micros(1_000 + (job * 7_919 % 1_000) as u64)
    }

    enum Event<'a> {
        Served { worker: usize, permit: Permit<'a> },
        Refused { worker: usize, permit: Permit<'a> },
        Retry { worker: usize },
        Sample,
    }

    /// Workers taking jobs from one queue through `limiter` to a server that
    /// takes `capacity` requests at once and refuses the rest at once, on a
    /// virtual clock: a discrete-event simulation, exact and instant. A
    /// refused job waits as the agent does (the service's `Retry-After`, or
    /// the jittered backoff if longer) and fails after the agent's default
    /// number of retries.
    struct Sim<'a> {
        limiter: &'a Limiter,
        capacity: usize,
        jobs: usize,
        start: Instant,
        now: Duration,
        queue: BinaryHeap<Reverse<(Duration, usize)>>,
        events: Vec<Option<Event<'a>>>,
        /// Workers with a job, waiting for a slot, first come first served.
        waiting: VecDeque<usize>,
        job_of: Vec<usize>,
        refusals: Vec<u32>,
        next_job: usize,
        server_in_flight: usize,
        done: usize,
        failed: usize,
        max_in_flight: usize,
        /// The limit once per LATENCY.
        limits: Vec<usize>,
    }

    struct Run {
        /// Total time over the ideal, jobs × LATENCY ÷ capacity.
        ratio: f64,
        limits: Vec<usize>,
        max_in_flight: usize,
        refusals: u32,
        most_refusals_of_a_job: u32,
        failed: usize,
    }

    impl<'a> Sim<'a> {
        fn run(limiter: &'a Limiter, capacity: usize, jobs: usize, workers: usize) -> Run {
            let mut sim = Sim {
                limiter,
                capacity,
                jobs,
                start: Instant::now(),
                now: Duration::ZERO,
                queue: BinaryHeap::new(),
                events: Vec::new(),
                waiting: VecDeque::new(),
                job_of: vec![0; workers],
                refusals: vec![0; jobs],
                next_job: 0,
                server_in_flight: 0,
                done: 0,
                failed: 0,
                max_in_flight: 0,
                limits: Vec::new(),
            };
            for worker in 0..workers {
                sim.take_job(worker);
            }
            sim.schedule(Duration::ZERO, Event::Sample);
            while sim.done < jobs {
                sim.admit();
                let Some(Reverse((at, id))) = sim.queue.pop() else {
                    panic!("stalled with {} of {jobs} done", sim.done);
                };
                sim.now = at;
                match sim.events[id].take() {
                    Some(Event::Served { worker, permit }) => {
                        sim.server_in_flight -= 1;
                        sim.done += 1;
                        permit.done_at(sim.at(), Signal::Accepted);
                        sim.take_job(worker);
                    }
                    Some(Event::Refused { worker, permit }) => {
                        permit.done_at(sim.at(), Signal::Refused);
                        sim.refused(worker);
                    }
                    Some(Event::Retry { worker }) => sim.waiting.push_back(worker),
                    Some(Event::Sample) => {
                        sim.limits.push(limiter.limit());
                        sim.schedule(LATENCY, Event::Sample);
                    }
                    None => {}
                }
            }
            let ideal = LATENCY.mul_f64(jobs as f64 / capacity as f64);
            Run {
                ratio: sim.now.as_secs_f64() / ideal.as_secs_f64(),
                limits: sim.limits,
                max_in_flight: sim.max_in_flight,
                refusals: sim.refusals.iter().sum(),
                most_refusals_of_a_job: sim.refusals.iter().copied().max().unwrap_or(0),
                failed: sim.failed,
            }
        }

        fn at(&self) -> Instant {
            self.start + self.now
        }

        fn schedule(&mut self, after: Duration, event: Event<'a>) {
            self.queue
                .push(Reverse((self.now + after, self.events.len())));
            self.events.push(Some(event));
        }

        fn take_job(&mut self, worker: usize) {
            if self.next_job < self.jobs {
                self.job_of[worker] = self.next_job;
                self.next_job += 1;
                self.waiting.push_back(worker);
            }
        }

        /// Sends requests while the limiter allows; refusals come back almost at once.
        fn admit(&mut self) {
            while let Some(&worker) = self.waiting.front() {
                let Some(permit) = self.limiter.try_acquire_at(self.at()) else {
                    break;
                };
                self.waiting.pop_front();
                self.max_in_flight = self.max_in_flight.max(self.limiter.in_flight());
                let job = self.job_of[worker];
                if self.server_in_flight >= self.capacity {
                    self.schedule(refusal_time(job), Event::Refused { worker, permit });
                } else {
                    self.server_in_flight += 1;
                    self.schedule(latency(job), Event::Served { worker, permit });
                }
            }
        }

        /// The worker's job was refused: it waits as the agent would, or fails.
        fn refused(&mut self, worker: usize) {
            let job = self.job_of[worker];
            let attempt = self.refusals[job];
            self.refusals[job] += 1;
            if attempt == DEFAULT_RETRY_COUNT {
                // The agent gives up on the file: a failure the run reports.
                self.failed += 1;
                self.done += 1;
                self.take_job(worker);
            } else {
                let wait = retry::delay(
                    attempt,
                    DEFAULT_RETRY_DELAY,
                    Some(RETRY_AFTER),
                    unit(job, attempt),
                );
                self.schedule(wait, Event::Retry { worker });
            }
        }
    }

    /// Doubling from the initial limit reaches `capacity` in this many round trips.
    fn doublings(initial: usize, capacity: usize) -> usize {
        let mut limit = initial;
        let mut n = 0;
        while limit < capacity {
            limit *= 2;
            n += 1;
        }
        n
    }

    #[test]
    fn adaptive_finds_the_capacity() {
        let table = [
            // (capacity, ceiling, jobs, worst ratio to jobs × LATENCY ÷ capacity).
            // The benchmarks' shapes: about 15 ideal round trips of work for
            // 32 and 128, 60 for 8 (bench/run.py, issue 4: within 15% in
            // the real runs, which add the agent's own overhead)…
            (8, None, 500, 1.03),
            (32, None, 500, 1.08),
            (128, Some(256), 2_000, 1.08),
            // …longer runs, where the steady state dominates…
            (32, None, 3_200, 1.03),
            (128, Some(256), 12_800, 1.03),
            // …and capacities slow start does not land on by halving: the
            // limit then climbs from the half by steps of 1, 2, 4, …, and a
            // few steps are refused on the way.
            (5, None, 500, 1.03),
            (24, None, 1_200, 1.04),
            (100, Some(256), 5_000, 1.06),
            (1, None, 100, 1.03),
        ];
        for (capacity, ceiling, jobs, worst) in table {
            let config = AimdConfig::new(ceiling);
            let limiter = Limiter::adaptive(config);
            // As many workers as the engine runs: twice the ceiling, and a few.
            let run = Sim::run(&limiter, capacity, jobs, config.max * 2 + 4);
            let context = format!(
                "capacity {capacity}: ratio {:.3}, {} refusals (at most {} for a job), limit per round trip {:?}",
                run.ratio, run.refusals, run.most_refusals_of_a_job, run.limits
            );
            eprintln!("{context}");
            assert!(run.ratio >= 0.99 && run.ratio <= worst, "{context}");
            assert_eq!(run.failed, 0, "no file runs out of retries: {context}");
            // A refused file waits its Retry-After and then finds a slot that is not refused, bar a probe's.
            assert!(run.most_refusals_of_a_job <= 2, "{context}");
            // Slow start finds the capacity in as many round trips as it takes to double there…
            let reached = run.limits.iter().position(|&l| l >= capacity);
            assert!(
                reached.is_some_and(|r| r <= doublings(config.initial, capacity) + 1),
                "{context}"
            );
            // …within a few more lands on it (from above, when the service
            // takes less than the initial limit)…
            let landed = run.limits.iter().position(|&l| l == capacity);
            assert!(landed.is_some_and(|r| r <= 16), "{context}");
            // …and then stays there, but for a dip of a tenth after a refused
            // probe, and for the probes, which are rare: one at once, the
            // next after BASE_HOLD round trips, then ever further apart.
            let settled = &run.limits[landed.unwrap_or(0)..run.limits.len() - 1];
            let low = (capacity * 9 / 10).saturating_sub(1);
            assert!(
                settled.iter().all(|&l| (low..=capacity + 1).contains(&l)),
                "{context}"
            );
            let probes = settled.iter().filter(|&&l| l > capacity).count();
            assert!(
                probes <= 1 + settled.len() / BASE_HOLD as usize,
                "{context}"
            );
        }
    }

    #[test]
    fn adaptive_stays_under_a_ceiling_below_the_capacity() {
        let config = AimdConfig::new(Some(20));
        let limiter = Limiter::adaptive(config);
        let run = Sim::run(&limiter, 100, 1_000, 44);
        assert_eq!(run.refusals, 0);
        assert_eq!(run.max_in_flight, 20);
        assert!(
            run.ratio <= 5.0 * 1.05,
            "ratio {:.3} against 100",
            run.ratio
        );
    }

    #[test]
    fn fixed_mode_holds_its_limit() {
        let table = [
            // (n, capacity, jobs, workers, want ratio)
            (8, 8, 400, 64, 1.0),
            (4, 32, 400, 64, 8.0),
            (1, 8, 40, 64, 8.0),
        ];
        for (n, capacity, jobs, workers, want) in table {
            let limiter = Limiter::fixed(n);
            let run = Sim::run(&limiter, capacity, jobs, workers);
            assert_eq!(run.max_in_flight, n, "fixed({n})");
            assert!(
                (run.ratio - want).abs() < 0.02 * want,
                "fixed({n}): ratio {:.3}",
                run.ratio
            );
            assert!(run.limits.iter().all(|&l| l == n), "fixed({n})");
            assert_eq!(limiter.in_flight(), 0);
        }
        assert_eq!(Limiter::fixed(0).limit(), 1);
    }

    /// Runs `tasks` tasks that each hold a permit for a few scheduler turns,
    /// and returns the most that were in flight together.
    async fn contend(limiter: Arc<Limiter>, tasks: usize) -> usize {
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (limiter, most) = (limiter.clone(), most.clone());
                tokio::spawn(async move {
                    let permit = limiter.acquire().await;
                    most.fetch_max(limiter.in_flight(), std::sync::atomic::Ordering::SeqCst);
                    for _ in 0..5 {
                        tokio::task::yield_now().await;
                    }
                    permit.done(Signal::Accepted);
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("task");
        }
        assert_eq!(limiter.in_flight(), 0);
        most.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn fixed_mode_never_exceeds_n() {
        assert_eq!(contend(Arc::new(Limiter::fixed(3)), 20).await, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fixed_mode_never_exceeds_n_across_threads() {
        for _ in 0..20 {
            let most = contend(Arc::new(Limiter::fixed(3)), 50).await;
            assert!((1..=3).contains(&most), "{most}");
        }
    }

    /// Real time, but only ever waited on, never raced against.
    const PATIENCE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_dropped_permit_frees_its_slot() {
        let limiter = Arc::new(Limiter::fixed(1));
        let permit = limiter.acquire().await;
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire().await.done(Signal::Accepted) })
        };
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "the only slot is taken");
        drop(permit);
        tokio::time::timeout(PATIENCE, waiter)
            .await
            .expect("the waiter got the freed slot")
            .expect("task");
        assert_eq!(limiter.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_dropped_permit_neither_grows_nor_shrinks() {
        // A round trip longer than the shortest window, so that it would count.
        let rtt = Duration::from_millis(30);
        let config = AimdConfig {
            initial: 2,
            min: 1,
            max: 8,
        };
        let dropped = Limiter::adaptive(config);
        let (a, b) = (dropped.acquire().await, dropped.acquire().await);
        tokio::time::sleep(rtt).await;
        drop((a, b));
        assert_eq!((dropped.limit(), dropped.in_flight()), (2, 0));

        let done = Limiter::adaptive(config);
        let (a, b) = (done.acquire().await, done.acquire().await);
        tokio::time::sleep(rtt).await;
        a.done(Signal::Accepted);
        b.done(Signal::Accepted);
        assert_eq!((done.limit(), done.in_flight()), (4, 0));
    }

    #[tokio::test]
    async fn a_grown_limit_admits_as_many_waiters_as_it_grew() {
        let limiter = Arc::new(Limiter::adaptive(AimdConfig {
            initial: 1,
            min: 1,
            max: 8,
        }));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let permit = limiter.acquire().await;
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (limiter, gate) = (limiter.clone(), gate.clone());
                tokio::spawn(async move {
                    let permit = limiter.acquire().await;
                    let _open = gate.acquire().await.expect("gate");
                    permit.done(Signal::Neutral);
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(limiter.in_flight(), 1);
        permit.done(Signal::Accepted);
        assert_eq!(limiter.limit(), 2);
        tokio::time::timeout(PATIENCE, async {
            while limiter.in_flight() < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("both free slots taken");
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(limiter.in_flight(), 2, "no more than the limit");
        gate.add_permits(4);
        for waiter in waiters {
            tokio::time::timeout(PATIENCE, waiter)
                .await
                .expect("every waiter gets through")
                .expect("task");
        }
        assert_eq!((limiter.limit(), limiter.in_flight()), (2, 0));
    }

    #[tokio::test]
    async fn an_abandoned_acquire_takes_no_slot() {
        let limiter = Limiter::fixed(1);
        let permit = limiter.acquire().await;
        let waited = tokio::time::timeout(Duration::from_millis(10), limiter.acquire()).await;
        assert!(waited.is_err(), "the only slot is taken");
        permit.done(Signal::Accepted);
        assert_eq!(limiter.in_flight(), 0);
        assert!(futures_util::FutureExt::now_or_never(limiter.acquire()).is_some());
    }
}
