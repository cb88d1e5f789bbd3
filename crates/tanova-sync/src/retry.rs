//! Retry delays: exponential backoff with full jitter, never shorter than the server's `Retry-After`.

use std::time::Duration;

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
}
