//! The optional rate limit over every API request (`max_requests_per_minute`): a token bucket whose pure core takes `now`, and an async wrapper that waits for a token.
//!
//! The bucket refills at `per_minute / 60` tokens a second and holds at most
//! [`BURST`] (or `per_minute`, if smaller): after an idle spell that many
//! requests may start at once, then one every `60 / per_minute` seconds. Over
//! any span of `t` seconds at most `burst + t × per_minute / 60` requests
//! start, so the long-run rate never exceeds the limit and any one minute sees
//! at most `per_minute + burst - 1`.
//!
//! It is the generic cell rate algorithm (GCRA): instead of a token count it
//! keeps the theoretical arrival time of the next request, and each request
//! reserves its start time in one step. Waiters are therefore served in the
//! order they asked, with no thundering herd. A reservation whose waiter is
//! dropped stays spent, which errs on the side of sending less.
//!
//! The API client waits here just before each request, inside the upload's
//! concurrency slot. When the rate is what binds, the round trips the AIMD
//! controller sees therefore include a queue that grows steadily with the
//! limit (never a spike), so the limit holds or grows and the rate stays the
//! bound; nothing is sent faster than it allows either way.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How many requests may start back to back after an idle spell.
pub const BURST: u32 = 4;

/// The pure core: when each request may start, given when it asks.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Time between two requests at the limit.
    interval: Duration,
    /// How far ahead of its slot a request may start: `(burst - 1) × interval`.
    tolerance: Duration,
    /// When the next request would start if requests came at exactly the limit.
    next: Option<Instant>,
}

impl Bucket {
    /// At most `per_minute` requests a minute (at least one), with a burst of
    /// [`BURST`] or `per_minute`, whichever is smaller.
    pub fn per_minute(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        let interval = Duration::from_secs(60) / per_minute;
        let burst = BURST.min(per_minute);
        Bucket {
            interval,
            tolerance: interval * (burst - 1),
            next: None,
        }
    }

    /// The time between two requests at the limit.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reserve a start for a request that asks at `now`: how long it must wait
    /// (zero when it may start at once). The reservation is taken either way.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let next = self.next.map_or(now, |next| next.max(now));
        let start = next
            .checked_sub(self.tolerance)
            .map_or(now, |start| start.max(now));
        self.next = Some(next + self.interval);
        start.saturating_duration_since(now)
    }
}

/// The async wrapper shared by every request of the client.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: Mutex<Bucket>,
}

impl RateLimiter {
    pub fn per_minute(per_minute: u32) -> Self {
        RateLimiter {
            bucket: Mutex::new(Bucket::per_minute(per_minute)),
        }
    }

    /// Wait until this request may start. Requests are served in the order they asked.
    pub async fn wait(&self) {
        let now = tokio::time::Instant::now();
        let wait = self
            .bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reserve(now.into_std());
        if !wait.is_zero() {
            tokio::time::sleep_until(now + wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (per minute, [(asks at ms, waits ms)])
    type Case = (&'static str, u32, Vec<(u64, u64)>);

    #[test]
    fn table() {
        let cases: Vec<Case> = vec![
            (
                "a burst of four at once, then one per interval",
                120,
                vec![
                    (0, 0),
                    (0, 0),
                    (0, 0),
                    (0, 0),
                    (0, 500),
                    (0, 1000),
                    (0, 1500),
                ],
            ),
            (
                "requests at the limit never wait",
                60,
                vec![(0, 0), (1000, 0), (2000, 0), (3000, 0), (4000, 0)],
            ),
            (
                "an idle spell refills the burst, and no more than the burst",
                60,
                [
                    vec![(0, 0); 4],
                    vec![(0, 1000)],
                    // 60 s idle: four at once again, the fifth waits one interval.
                    vec![(61_000, 0); 4],
                    vec![(61_000, 1000)],
                ]
                .concat(),
            ),
            (
                "a partial refill: one token per interval",
                60,
                [
                    vec![(0, 0); 4],
                    // 2.5 s later two tokens have come back, the third waits half an interval.
                    vec![(2500, 0), (2500, 0), (2500, 500), (2500, 1500)],
                ]
                .concat(),
            ),
            (
                "a limit below the burst is also the burst",
                2,
                vec![(0, 0), (0, 0), (0, 30_000), (0, 60_000)],
            ),
            (
                "one a minute means one a minute",
                1,
                vec![(0, 0), (0, 60_000), (30_000, 90_000), (200_000, 0)],
            ),
            (
                "a waiter queued behind others waits for all of them",
                600,
                [vec![(0, 0); 4], vec![(0, 100), (0, 200), (50, 250)]].concat(),
            ),
        ];
        let t0 = Instant::now();
        let mut failures = Vec::new();
        for (name, per_minute, steps) in cases {
            let mut bucket = Bucket::per_minute(per_minute);
            for (i, (at, want)) in steps.into_iter().enumerate() {
                let got = bucket.reserve(t0 + Duration::from_millis(at));
                if got != Duration::from_millis(want) {
                    failures.push(format!(
                        "{name}: step {i} at {at}ms: waits {got:?}, want {want}ms"
                    ));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn any_window_holds_at_most_burst_plus_its_share() {
        // Greedy requests, as many as allowed: starts are exactly burst + t / interval.
        let t0 = Instant::now();
        let mut bucket = Bucket::per_minute(300);
        let starts: Vec<Duration> = (0..200).map(|_| bucket.reserve(t0)).collect();
        let interval = bucket.interval();
        for (i, start) in starts.iter().enumerate() {
            for later in &starts[i..] {
                let span = *later - *start;
                let count = starts
                    .iter()
                    .filter(|s| **s >= *start && **s <= *later)
                    .count();
                let allowed = BURST as usize + (span.as_nanos() / interval.as_nanos()) as usize;
                assert!(count <= allowed, "{count} starts in {span:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_start_in_order_at_the_limit() {
        let limiter = std::sync::Arc::new(RateLimiter::per_minute(60));
        let t0 = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8u64 {
            let limiter = limiter.clone();
            tasks.spawn(async move {
                // Asked in order 0, 1, …, 7.
                tokio::time::sleep(Duration::from_micros(i)).await;
                limiter.wait().await;
                (i, tokio::time::Instant::now() - t0)
            });
        }
        let mut started = tasks.join_all().await;
        started.sort();
        let secs: Vec<u64> = started.iter().map(|(_, d)| d.as_secs()).collect();
        assert_eq!(secs, [0, 0, 0, 0, 1, 2, 3, 4]);
    }
}
