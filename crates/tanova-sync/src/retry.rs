//! Retrying: exponential backoff with full jitter, never shorter than the
//! server's `Retry-After`, and the one loop that retries an operation until it
//! works, gives up, or is stopped.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// The longest a single backoff grows to.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The delay before retry number `attempt` (0 for the first retry).
/// `unit` is a uniform random number in [0, 1): full jitter spreads retries
/// of many workers over the whole window instead of synchronising them.
pub fn delay(attempt: u32, base: Duration, retry_after: Option<Duration>, unit: f64) -> Duration {
    let window = base
        .saturating_mul(2u32.saturating_pow(attempt.min(31)))
        .min(MAX_BACKOFF);
    let jittered = window.mul_f64(unit.clamp(0.0, 1.0));
    match retry_after {
        Some(after) => after.max(jittered),
        None => jittered,
    }
}

/// How long to keep trying, and how long to wait between tries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// The first wait's window; each next one doubles, up to `max_delay`.
    pub base: Duration,
    pub max_delay: Duration,
    /// Give up after this many retries (`None`: never).
    pub retries: Option<u32>,
    /// Give up once this long has passed since the first try (`None`: never).
    pub within: Option<Duration>,
    /// Full jitter (spreads many retriers out) or the whole window each time.
    pub jitter: bool,
}

impl Policy {
    /// `retries` retries after the first try, backing off from `base`.
    pub fn retries(retries: u32, base: Duration) -> Self {
        Policy {
            base,
            max_delay: MAX_BACKOFF,
            retries: Some(retries),
            within: None,
            jitter: true,
        }
    }

    /// Until it works, waiting from `base` up to `max_delay`.
    pub fn forever(base: Duration, max_delay: Duration) -> Self {
        Policy {
            base,
            max_delay,
            retries: None,
            within: None,
            jitter: true,
        }
    }

    /// The same, giving up once `within` has passed (`None`: never).
    pub fn within(self, within: Option<Duration>) -> Self {
        Policy { within, ..self }
    }

    /// The wait before retry `attempt` (0 for the first retry) when `elapsed` has
    /// passed since the first try, or `None` to give up. `unit` is a uniform
    /// random number in [0, 1) for the jitter. Pure.
    pub fn next_delay(
        &self,
        attempt: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Option<Duration> {
        if self.retries.is_some_and(|n| attempt >= n) || self.within.is_some_and(|w| elapsed >= w) {
            return None;
        }
        let unit = if self.jitter { unit } else { 1.0 };
        Some(
            delay(attempt, self.base, None, unit)
                .min(self.max_delay)
                .max(retry_after.unwrap_or_default()),
        )
    }
}

/// A try that did not work but may next time, with the server's `Retry-After` if it gave one.
#[derive(Debug)]
pub struct Again<E> {
    pub error: E,
    pub after: Option<Duration>,
}

impl<E> Again<E> {
    pub fn new(error: E) -> Self {
        Again { error, after: None }
    }
}

/// Why [`with_backoff`] returned without success.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended<E> {
    /// The policy ran out; the last error.
    GaveUp(E),
    /// `shutdown` fired while waiting; the last error.
    Stopped(E),
}

/// Call `op(attempt)` until it returns `Ok`, the policy gives up, or
/// `shutdown` fires during a wait. `on_retry(attempt, error, delay)` hears of
/// each retry before its wait (attempt counts from 1).
pub async fn with_backoff<T, E, F, Fut>(
    policy: &Policy,
    shutdown: &CancellationToken,
    mut op: F,
    mut on_retry: impl FnMut(u32, &E, Duration),
) -> Result<T, Ended<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Again<E>>>,
{
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let again = match op(attempt).await {
            Ok(done) => return Ok(done),
            Err(again) => again,
        };
        let unit = rand::random::<f64>();
        let Some(wait) = policy.next_delay(attempt, started.elapsed(), again.after, unit) else {
            return Err(Ended::GaveUp(again.error));
        };
        on_retry(attempt + 1, &again.error, wait);
        tokio::select! {
            _ = shutdown.cancelled() => return Err(Ended::Stopped(again.error)),
            _ = tokio::time::sleep(wait) => {}
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let table = [
            // (attempt, base, retry_after, unit, want)
            (0, ms(100), None, 0.0, ms(0)),
            (0, ms(100), None, 0.5, ms(50)),
            (1, ms(100), None, 0.5, ms(100)),
            (3, ms(100), None, 1.0, ms(800)),
            (10, s(2), None, 1.0, MAX_BACKOFF),
            (40, s(2), None, 0.5, ms(30_000)),
            (0, ms(100), Some(s(3)), 0.5, s(3)),
            (5, s(1), Some(ms(10)), 0.5, s(16)),
            (0, s(0), None, 0.9, ms(0)),
        ];
        for (attempt, base, after, unit, want) in table {
            assert_eq!(
                delay(attempt, base, after, unit),
                want,
                "{attempt} {base:?} {after:?} {unit}"
            );
        }
    }

    #[test]
    fn policies_give_up_when_they_say() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let three = Policy::retries(3, ms(100));
        let steady = Policy {
            jitter: false,
            ..Policy::forever(ms(200), s(2)).within(Some(s(10)))
        };
        let table = [
            // (policy, attempt, elapsed, retry_after, unit, want)
            (three, 0, s(0), None, 1.0, Some(ms(100))),
            (three, 2, s(0), None, 0.5, Some(ms(200))),
            (three, 3, s(0), None, 0.5, None),
            (three, 0, s(0), Some(s(5)), 0.5, Some(s(5))),
            (steady, 0, s(0), None, 0.0, Some(ms(200))),
            (steady, 5, s(9), None, 0.0, Some(s(2))),
            (steady, 1, s(10), None, 0.0, None),
            (
                Policy::forever(s(1), s(60)),
                1_000,
                s(86_400),
                None,
                1.0,
                Some(s(60)),
            ),
        ];
        for (policy, attempt, elapsed, after, unit, want) in table {
            assert_eq!(
                policy.next_delay(attempt, elapsed, after, unit),
                want,
                "{policy:?} {attempt} {elapsed:?} {after:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_done_gives_up_or_stops() {
        let policy = Policy::retries(2, Duration::from_secs(1));
        let never = CancellationToken::new();
        let mut heard = Vec::new();
        let done = with_backoff(
            &policy,
            &never,
            |attempt| async move {
                if attempt < 2 {
                    Err(Again::new(attempt))
                } else {
                    Ok("done")
                }
            },
            |attempt, error, _| heard.push((attempt, *error)),
        )
        .await;
        assert_eq!(done, Ok("done"));
        assert_eq!(heard, [(1, 0), (2, 1)]);

        let failing = |attempt: u32| async move { Err::<(), _>(Again::new(attempt)) };
        let gave_up = with_backoff(&policy, &never, failing, |_, _, _| {}).await;
        assert_eq!(gave_up, Err(Ended::GaveUp(2)));

        let stopped = CancellationToken::new();
        stopped.cancel();
        let ended = with_backoff(&policy, &stopped, failing, |_, _, _| {}).await;
        assert_eq!(ended, Err(Ended::Stopped(0)));
    }
}
