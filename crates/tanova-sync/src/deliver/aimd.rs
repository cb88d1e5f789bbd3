//! The adaptive concurrency controller: slow start, then additive increase and multiplicative decrease, one decision per round trip.
//!
//! Modelled on vector's `adaptive_concurrency` controller, without its
//! coupling to a semaphore: this is plain state fed with `now`, so tests drive
//! it with tables and the async [`Limiter`](super::limiter::Limiter) owns the
//! waiting.
//!
//! Responses are gathered into windows of about one smoothed round trip and
//! the limit moves at most once per window: a burst of 429s from N requests
//! sent together is one signal, not N.

use std::time::{Duration, Instant};

/// The ceiling when the configuration names no `max_workers`.
pub const DEFAULT_MAX: usize = 64;

/// Where the limit starts: close to the legacy script's five threads, and
/// only five doublings (round trips) away from a server that takes 128.
pub const INITIAL_LIMIT: usize = 4;

/// The cut when back-pressure ends slow start. The last doubling overshot by
/// at most 2×, so halving lands on the last limit that drew no back-pressure.
const SLOW_START_DECREASE: f64 = 0.5;

/// The cut afterwards. Additive increase overshoots by one, so a gentler cut
/// than TCP's 0.5 suffices; the sawtooth then spends its time between 3/4 of
/// capacity and capacity (about 90% of the best throughput) while a real
/// drop in capacity is still followed within two or three round trips.
const DECREASE: f64 = 0.75;

/// Weight of a new window's mean RTT in the moving average. A window's mean
/// already averages many requests, so a quarter lets a lasting change in the
/// server's speed become the norm within a few windows, and one odd window
/// moves it only a quarter of the way.
const RTT_WEIGHT: f64 = 0.25;

/// Weight of a new window's distance from the average in the moving deviation.
const DEVIATION_WEIGHT: f64 = 0.25;

/// The RTT counts as rising above the average plus this many deviations
/// (a confidence band, as in TCP's retransmission timer)…
const RISING_DEVIATIONS: f64 = 2.0;

/// …and at least this fraction of the average above it: when the RTT is
/// steady the deviation decays towards zero and harmless jitter would
/// otherwise read as "rising" and stop growth for good.
const RISING_FLOOR: f64 = 0.25;

/// The RTT counts as a spike (implicit back-pressure: the server queues
/// instead of refusing) above this multiple of the average…
const SPIKE_FACTOR: f64 = 2.0;

/// …and only if that is also this many deviations out, so a server whose
/// upload times vary a lot (one large CV among small ones) is not cut for it.
const SPIKE_DEVIATIONS: f64 = 4.0;

/// The shortest window, so that near-zero round trips (loopback, or only
/// instant 429s seen so far) do not turn every response into a decision.
const MIN_WINDOW: Duration = Duration::from_millis(10);

/// How one request ended, as far as concurrency is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served: its round trip measures the server.
    Ok,
    /// Refused or too slow for load (429, 503, timeout): shrink.
    BackPressure,
    /// Any other error, or abandoned: says nothing about load, neither grow nor shrink.
    Failed,
}

/// Bounds and starting point of the adaptive limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AimdConfig {
    pub initial: usize,
    pub min: usize,
    pub max: usize,
}

impl AimdConfig {
    /// The defaults, under `ceiling` (the configured `max_workers`) when given.
    pub fn new(ceiling: Option<usize>) -> Self {
        AimdConfig {
            initial: INITIAL_LIMIT,
            min: 1,
            max: ceiling.unwrap_or(DEFAULT_MAX),
        }
        .normalized()
    }

    /// At least one request at a time, `min <= initial <= max`.
    fn normalized(self) -> Self {
        let min = self.min.max(1);
        let max = self.max.max(min);
        AimdConfig {
            initial: self.initial.clamp(min, max),
            min,
            max,
        }
    }
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig::new(None)
    }
}

/// Moving average and deviation of per-window mean RTTs, in seconds.
#[derive(Clone, Copy, Debug)]
struct Ewma {
    average: f64,
    deviation: f64,
}

impl Ewma {
    /// The first deviation is half the sample (as RFC 6298 starts RTTVAR), so
    /// the first few windows, measured on few requests, are judged leniently.
    fn first(sample: f64) -> Self {
        Ewma {
            average: sample,
            deviation: sample / 2.0,
        }
    }

    fn update(self, sample: f64) -> Self {
        Ewma {
            average: self.average + RTT_WEIGHT * (sample - self.average),
            deviation: self.deviation
                + DEVIATION_WEIGHT * ((sample - self.average).abs() - self.deviation),
        }
    }

    fn rising(&self, mean: f64) -> bool {
        mean > self.average + (RISING_DEVIATIONS * self.deviation).max(RISING_FLOOR * self.average)
    }

    fn spiked(&self, mean: f64) -> bool {
        mean > SPIKE_FACTOR * self.average
            && mean > self.average + SPIKE_DEVIATIONS * self.deviation
    }
}

/// The controller. Holds no clock: every call says what time it is.
#[derive(Clone, Debug)]
pub struct Aimd {
    limit: usize,
    min: usize,
    max: usize,
    rtt: Option<Ewma>,
    slow_start: bool,
    /// When the last decrease happened: back-pressure on requests sent
    /// before it was already answered by it.
    last_decrease: Option<Instant>,
    /// The window under observation; `None` until the first response.
    window_start: Option<Instant>,
    window_rtt_sum: f64,
    window_rtt_count: u32,
    window_back_pressure: bool,
    window_reached_limit: bool,
}

impl Aimd {
    pub fn new(config: AimdConfig) -> Self {
        let config = config.normalized();
        Aimd {
            limit: config.initial,
            min: config.min,
            max: config.max,
            rtt: None,
            slow_start: true,
            last_decrease: None,
            window_start: None,
            window_rtt_sum: 0.0,
            window_rtt_count: 0,
            window_back_pressure: false,
            window_reached_limit: false,
        }
    }

    /// How many requests may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the limit still doubles per round trip.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// One request ended at `now` after `rtt`. `in_flight` is how many
    /// requests were in flight when it completed, itself included: that is
    /// when the limit is known to have been used in full, even right after it
    /// grew (requests started under the old limit would all report less).
    pub fn on_response(&mut self, now: Instant, rtt: Duration, outcome: Outcome, in_flight: usize) {
        if outcome == Outcome::Failed {
            return;
        }
        let started = now.checked_sub(rtt).unwrap_or(now);
        let window_start = *self.window_start.get_or_insert(started);
        match outcome {
            // Only served requests measure the server: an instant 429 or a
            // timeout would drag the average down or up for no reason.
            Outcome::Ok => {
                self.window_rtt_sum += rtt.as_secs_f64();
                self.window_rtt_count = self.window_rtt_count.saturating_add(1);
            }
            Outcome::BackPressure => {
                // Sent before the last cut (at the same instant counts as
                // before): that cut already answered it.
                let stale = self
                    .last_decrease
                    .is_some_and(|cut| now.saturating_duration_since(cut) <= rtt);
                if !stale {
                    self.window_back_pressure = true;
                }
            }
            Outcome::Failed => {}
        }
        if in_flight >= self.limit {
            self.window_reached_limit = true;
        }
        if now.saturating_duration_since(window_start) >= self.window_length() {
            self.close_window(now);
        }
    }

    /// About one smoothed round trip; before any average exists, the mean of
    /// the window itself.
    fn window_length(&self) -> Duration {
        let seconds = match (self.rtt, self.window_rtt_count) {
            (Some(ewma), _) => ewma.average,
            (None, 0) => 0.0,
            (None, n) => self.window_rtt_sum / f64::from(n),
        };
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(MIN_WINDOW)
            .max(MIN_WINDOW)
    }

    fn close_window(&mut self, now: Instant) {
        let mean = (self.window_rtt_count > 0)
            .then(|| self.window_rtt_sum / f64::from(self.window_rtt_count));
        // Judged against the average of earlier windows, then folded in.
        let past = self.rtt;
        if self.window_back_pressure {
            self.decrease(now);
        } else if self.window_reached_limit
            && mean.is_some_and(|m| past.is_none_or(|p| !p.rising(m)))
        {
            self.increase();
        } else if mean.is_some_and(|m| past.is_some_and(|p| p.spiked(m))) {
            self.decrease(now);
        }
        if let Some(m) = mean {
            self.rtt = Some(past.map_or_else(|| Ewma::first(m), |p| p.update(m)));
        }
        self.window_start = Some(now);
        self.window_rtt_sum = 0.0;
        self.window_rtt_count = 0;
        self.window_back_pressure = false;
        self.window_reached_limit = false;
    }

    fn increase(&mut self) {
        let grown = if self.slow_start {
            self.limit.saturating_mul(2)
        } else {
            self.limit.saturating_add(1)
        };
        self.limit = grown.min(self.max);
    }

    fn decrease(&mut self, now: Instant) {
        let factor = if self.slow_start {
            SLOW_START_DECREASE
        } else {
            DECREASE
        };
        // `as` saturates and floors; always at least one below a limit above `min`.
        self.limit = ((self.limit as f64 * factor) as usize).max(self.min);
        self.slow_start = false;
        self.last_decrease = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::{BackPressure as Bp, Failed, Ok};

    /// (now ms, rtt ms, outcome, in flight, limit expected after it)
    type Step = (u64, u64, Outcome, usize, usize);

    fn run(config: AimdConfig, steps: &[Step]) -> Result<(), String> {
        let t0 = Instant::now();
        let mut aimd = Aimd::new(config);
        for (i, &(now, rtt, outcome, in_flight, want)) in steps.iter().enumerate() {
            aimd.on_response(
                t0 + Duration::from_millis(now),
                Duration::from_millis(rtt),
                outcome,
                in_flight,
            );
            if aimd.limit() != want {
                return Err(format!(
                    "step {i} ({now}ms {rtt}ms {outcome:?} {in_flight}): limit {} want {want}",
                    aimd.limit()
                ));
            }
        }
        Result::Ok(())
    }

    fn cfg(initial: usize, min: usize, max: usize) -> AimdConfig {
        AimdConfig { initial, min, max }
    }

    /// `n` responses at `now`, each seeing `in_flight`, the last leaving `want`.
    fn burst(
        n: usize,
        now: u64,
        rtt: u64,
        outcome: Outcome,
        in_flight: usize,
        want: usize,
    ) -> Vec<Step> {
        vec![(now, rtt, outcome, in_flight, want); n]
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, AimdConfig, Vec<Step>)> = vec![
            (
                "slow start doubles once per round trip, up to the ceiling",
                cfg(4, 1, 20),
                [
                    burst(4, 100, 100, Ok, 4, 8),
                    burst(8, 200, 100, Ok, 8, 16),
                    burst(16, 300, 100, Ok, 16, 20),
                    burst(20, 400, 100, Ok, 20, 20),
                ]
                .concat(),
            ),
            (
                "the first doubling happens on the first response, the rest of its burst waits",
                cfg(4, 1, 64),
                vec![(100, 100, Ok, 4, 8), (100, 100, Ok, 8, 8), (150, 100, Ok, 8, 8)],
            ),
            (
                "a burst of 429s halves once, out of slow start; stragglers of the burst do not cut again",
                cfg(4, 1, 64),
                [
                    burst(4, 100, 100, Ok, 4, 8),
                    // Limit 8 was too much: 8 instant refusals within one window.
                    burst(8, 150, 0, Bp, 8, 8),
                    // The window closes with the next response: one cut.
                    vec![(200, 100, Ok, 8, 4)],
                    // Refusals of requests sent before the cut are old news.
                    burst(4, 250, 100, Bp, 4, 4),
                    burst(3, 300, 100, Ok, 4, 5),
                ]
                .concat(),
            ),
            (
                "after slow start: +1 per round trip, a 429 cuts by a quarter",
                cfg(8, 1, 64),
                [
                    vec![(100, 100, Bp, 8, 4)],
                    burst(4, 200, 100, Ok, 4, 5),
                    burst(5, 300, 100, Ok, 5, 6),
                    burst(6, 400, 100, Ok, 6, 7),
                    vec![(450, 0, Bp, 7, 7), (500, 100, Ok, 7, 5)],
                    burst(5, 600, 100, Ok, 5, 6),
                ]
                .concat(),
            ),
            (
                "no growth unless the limit was used in full",
                cfg(4, 1, 64),
                [
                    burst(2, 100, 100, Ok, 2, 4),
                    burst(3, 200, 100, Ok, 3, 4),
                    burst(3, 300, 100, Ok, 3, 4),
                    vec![(400, 100, Ok, 4, 8)],
                ]
                .concat(),
            ),
            (
                "growth when the limit was used, even if the response that closes the window saw less",
                cfg(4, 1, 64),
                vec![(100, 100, Ok, 4, 8), (150, 100, Ok, 8, 8), (200, 100, Ok, 1, 16)],
            ),
            (
                "the floor holds",
                cfg(2, 1, 64),
                vec![
                    (100, 100, Bp, 2, 1),
                    (200, 0, Bp, 1, 1),
                    (300, 0, Bp, 1, 1),
                    (400, 0, Bp, 1, 1),
                ],
            ),
            (
                "a floor above one holds too",
                cfg(8, 3, 64),
                vec![(100, 100, Bp, 8, 4), (200, 0, Bp, 4, 3), (300, 0, Bp, 3, 3)],
            ),
            (
                "the ceiling holds out of slow start",
                cfg(8, 1, 9),
                [
                    vec![(100, 100, Bp, 8, 4)],
                    burst(1, 200, 100, Ok, 4, 5),
                    burst(1, 300, 100, Ok, 5, 6),
                    burst(1, 400, 100, Ok, 6, 7),
                    burst(1, 500, 100, Ok, 7, 8),
                    burst(1, 600, 100, Ok, 8, 9),
                    burst(1, 700, 100, Ok, 9, 9),
                ]
                .concat(),
            ),
            (
                "an RTT spike shrinks even without 429s",
                cfg(8, 1, 64),
                // The limit is never used, so it neither grows nor, at first, shrinks.
                vec![
                    (100, 100, Ok, 2, 8),
                    (200, 100, Ok, 2, 8),
                    (300, 100, Ok, 2, 8),
                    (400, 100, Ok, 2, 8),
                    (500, 100, Ok, 2, 8),
                    // 100ms has become the norm; now the server takes 350ms.
                    (850, 350, Ok, 2, 4),
                ],
            ),
            (
                "ordinary noise does not shrink, and a high-variance server is not cut for one slow window",
                cfg(8, 1, 64),
                vec![
                    (100, 100, Ok, 2, 8),
                    (200, 60, Ok, 2, 8),
                    (300, 140, Ok, 2, 8),
                    (400, 70, Ok, 2, 8),
                    (500, 150, Ok, 2, 8),
                    // Over twice the average, but within four deviations of it.
                    (730, 230, Ok, 2, 8),
                    (800, 90, Ok, 2, 8),
                ],
            ),
            (
                "a rising RTT holds growth back",
                cfg(8, 1, 64),
                vec![
                    (100, 100, Bp, 8, 4),
                    (200, 100, Ok, 4, 5),
                    (300, 100, Ok, 5, 6),
                    (400, 100, Ok, 6, 7),
                    // 170% of the norm: rising, not yet a spike.
                    (570, 170, Ok, 7, 7),
                ],
            ),
            (
                "Failed neither grows nor shrinks, whatever its timing",
                cfg(4, 1, 64),
                [
                    burst(4, 100, 100, Failed, 4, 4),
                    burst(4, 200, 100, Failed, 4, 4),
                    burst(4, 300, 5_000, Failed, 4, 4),
                    burst(4, 400, 0, Failed, 9, 4),
                ]
                .concat(),
            ),
            (
                "a timeout sent before the last cut does not cut again",
                cfg(8, 1, 64),
                [
                    vec![(100, 100, Bp, 8, 4)],
                    burst(4, 200, 100, Ok, 4, 5),
                    // Sent at 50ms, before the cut at 100ms.
                    vec![(350, 300, Bp, 4, 5)],
                    burst(5, 450, 100, Ok, 5, 6),
                ]
                .concat(),
            ),
        ];
        let mut failures = Vec::new();
        for (name, config, steps) in cases {
            if let Err(e) = run(config, &steps) {
                failures.push(format!("{name}: {e}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn config_is_normalized() {
        let table = [
            // (config, want)
            (AimdConfig::new(None), cfg(INITIAL_LIMIT, 1, DEFAULT_MAX)),
            (AimdConfig::new(Some(200)), cfg(INITIAL_LIMIT, 1, 200)),
            (AimdConfig::new(Some(2)), cfg(2, 1, 2)),
            (AimdConfig::new(Some(0)), cfg(1, 1, 1)),
            (cfg(0, 0, 0).normalized(), cfg(1, 1, 1)),
            (cfg(50, 4, 16).normalized(), cfg(16, 4, 16)),
            (cfg(1, 4, 16).normalized(), cfg(4, 4, 16)),
        ];
        for (got, want) in table {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn slow_start_ends_on_the_first_cut() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut aimd = Aimd::new(AimdConfig::default());
        aimd.on_response(t0 + ms(100), ms(100), Ok, 4);
        assert!(aimd.in_slow_start());
        aimd.on_response(t0 + ms(200), ms(100), Bp, 8);
        assert!(!aimd.in_slow_start());
    }
}
