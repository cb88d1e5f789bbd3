//! The adaptive concurrency controller: slow start, cuts on back-pressure, and a probe above the last good limit now and then; one decision per round trip.
//!
//! Modelled on vector's `adaptive_concurrency` controller, without its
//! coupling to a semaphore: this is plain state fed with `now`, so tests drive
//! it with tables and the async [`Limiter`](super::limiter::Limiter) owns the
//! waiting.
//!
//! Responses are gathered into windows of about one smoothed round trip, and
//! the limit grows at most once per window: it doubles during slow start, and
//! grows only when the window used the limit in full with no back-pressure
//! and no rising RTT. Back-pressure (429, 503, a timeout) cuts at once, on the
//! response that brings it: waiting for the window to close would let every
//! queued request be sent and refused in turn, and a file refused too often
//! fails. Only back-pressure on a request sent after the last cut counts, so
//! a burst of refusals is one signal, not N. The first cut halves (the last
//! doubling overshot by at most 2×) and ends slow start; later cuts take a
//! tenth off, or more (never more than half) when the refused request was
//! sent with fewer in flight.
//!
//! A service's limit is usually a quota that rarely changes, and each refusal
//! costs a file its `Retry-After` wait, so unlike classic AIMD the controller
//! does not probe one above the limit on every round trip. It remembers the
//! last limit that went through below the one refused (the target), climbs
//! straight back to it after a cut, and probes above it by 1, 2, 4, … per
//! round trip until refused. Once a probe one above the target is refused,
//! the target is the service's limit: it holds there for [`BASE_HOLD`] round
//! trips before probing again, twice as long after each such refusal, up to
//! [`MAX_HOLD`]. Back-pressure at or below the target means the service now
//! takes less: the target follows the cut down.

use std::time::{Duration, Instant};

/// The ceiling when the configuration names no `max_workers`.
pub const DEFAULT_MAX: usize = 64;

/// The smallest starting limit, close to the legacy script's five threads.
pub const INITIAL_LIMIT: usize = 4;

/// The limit starts at the ceiling divided by this (at least
/// [`INITIAL_LIMIT`]): 32 under the default ceiling of 64, and slow start
/// reaches the ceiling in one round trip. The ceiling is what the user allows
/// at once, so a user who raises `max_workers` for a big service starts
/// proportionally higher; a service that takes less refuses the excess at
/// once, and the first cut lands on the last limit that went through. A
/// lower start costs a round trip per doubling: a quarter of a 2,000-CV
/// upload to a service that takes 128, from 4.
pub const INITIAL_SHARE_OF_CEILING: usize = 2;

/// The cut when back-pressure ends slow start. The last doubling overshot by
/// at most 2×, so halving lands on the last limit that drew no back-pressure.
const SLOW_START_DECREASE: f64 = 0.5;

/// The cut afterwards, as in vector. The limit climbs straight back to its
/// target, so the cut only relieves the service at once; a real drop in
/// capacity is followed within a round trip or two, as the target follows
/// the cuts and the refused requests say how many the service took.
const DECREASE: f64 = 0.9;

/// Round trips spent at the service's limit, once found, before probing one
/// above it. 16 round trips of 300 ms: a probe (one refused upload) every
/// 5 s at most.
pub const BASE_HOLD: u32 = 16;

/// The longest wait between probes, in round trips, however often they were
/// refused: how long a service that raised its limit may wait to be used in full.
pub const MAX_HOLD: u32 = 64;

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

/// What one finished request tells the controller about the service's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Served: its round trip measures the server.
    Accepted,
    /// Refused or too slow for load (429, 503, timeout): shrink.
    Refused,
    /// Anything else (an error, a quick duplicate check, abandoned): says nothing
    /// about load, neither grow nor shrink.
    Neutral,
}

/// One finished request, as the controller sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// From the request's start to its end.
    pub rtt: Duration,
    pub outcome: Signal,
    /// Requests in flight when it ended, itself included.
    pub in_flight: usize,
    /// Requests in flight when it was sent, itself included. A request
    /// refused for load says the service took fewer than this at that moment.
    pub sent_with: usize,
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
        let max = ceiling.unwrap_or(DEFAULT_MAX);
        AimdConfig {
            initial: INITIAL_LIMIT.max(max / INITIAL_SHARE_OF_CEILING),
            min: 1,
            max,
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
    /// The limit of the last window that used it in full with no
    /// back-pressure: a level the service is known to take.
    good: Option<usize>,
    /// Where the limit climbs back to after a cut and holds between probes.
    /// `None` until the first cut.
    target: Option<usize>,
    /// Quiet windows to spend at the target before probing above it.
    hold: u32,
    /// Quiet windows spent at the target so far.
    held: u32,
    /// While probing above the target, what the next quiet window adds; 0 otherwise.
    step: usize,
    /// When the last decrease happened: back-pressure on requests sent
    /// before it was already answered by it.
    last_decrease: Option<Instant>,
    /// The window under observation; `None` until the first response.
    window_start: Option<Instant>,
    window_rtt_sum: f64,
    window_rtt_count: u32,
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
            good: None,
            target: None,
            hold: BASE_HOLD,
            held: 0,
            step: 0,
            last_decrease: None,
            window_start: None,
            window_rtt_sum: 0.0,
            window_rtt_count: 0,
            window_reached_limit: false,
        }
    }

    /// How many requests may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the limit still doubles per round trip (for the tables).
    #[cfg(test)]
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// The level the limit climbs back to and holds at between probes, once back-pressure has set one.
    pub fn target(&self) -> Option<usize> {
        self.target
    }

    /// One request ended at `now`. `response.in_flight` counts the requests in
    /// flight when it completed, itself included: that is when the limit is
    /// known to have been used in full, even right after it grew (requests
    /// started under the old limit would all report less).
    pub fn on_response(&mut self, now: Instant, response: Response) {
        let Response {
            rtt,
            outcome,
            in_flight,
            sent_with,
        } = response;
        if outcome == Signal::Neutral {
            return;
        }
        let started = now.checked_sub(rtt).unwrap_or(now);
        let window_start = *self.window_start.get_or_insert(started);
        match outcome {
            // Only served requests measure the server: an instant 429 or a
            // timeout would drag the average down or up for no reason.
            Signal::Accepted => {
                self.window_rtt_sum += rtt.as_secs_f64();
                self.window_rtt_count = self.window_rtt_count.saturating_add(1);
            }
            Signal::Refused => {
                // Sent before the last cut (at the same instant counts as
                // before): that cut already answered it.
                let stale = self
                    .last_decrease
                    .is_some_and(|cut| now.saturating_duration_since(cut) <= rtt);
                if !stale {
                    self.back_off(now, sent_with);
                }
                return;
            }
            Signal::Neutral => {}
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

    /// Folds the window's mean RTT into the average and starts a new window.
    /// Returns the mean, and the average it was judged against.
    fn end_window(&mut self, now: Instant) -> (Option<f64>, Option<Ewma>) {
        let mean = (self.window_rtt_count > 0)
            .then(|| self.window_rtt_sum / f64::from(self.window_rtt_count));
        let past = self.rtt;
        if let Some(m) = mean {
            self.rtt = Some(past.map_or_else(|| Ewma::first(m), |p| p.update(m)));
        }
        self.window_start = Some(now);
        self.window_rtt_sum = 0.0;
        self.window_rtt_count = 0;
        self.window_reached_limit = false;
        (mean, past)
    }

    fn close_window(&mut self, now: Instant) {
        let reached = self.window_reached_limit;
        // Judged against the average of earlier windows, then folded in.
        let (mean, past) = self.end_window(now);
        if reached && mean.is_some_and(|m| past.is_none_or(|p| !p.rising(m))) {
            self.increase();
        } else if mean.is_some_and(|m| past.is_some_and(|p| p.spiked(m))) {
            // The server queues instead of refusing: what was in flight was
            // too much, and nothing above the new limit is known to be good.
            self.cut(now);
            self.good = None;
            self.target = Some(self.limit);
            self.hold = 1;
        }
    }

    /// A window that used the limit in full, with no back-pressure and no rising RTT.
    fn increase(&mut self) {
        if self.slow_start {
            self.good = Some(self.limit);
            self.limit = self.limit.saturating_mul(2).min(self.max);
            return;
        }
        let target = self.target.unwrap_or(self.limit);
        if self.limit < target {
            // Back to where the service was known to cope, at once.
            self.limit = self.limit.saturating_mul(2).min(target);
            return;
        }
        self.good = Some(self.limit);
        let grown = if self.step == 0 {
            // Holding (a cut may have stopped above the target: it holds too).
            self.target = Some(self.limit);
            self.held += 1;
            if self.held < self.hold {
                return;
            }
            self.held = 0;
            self.step = 1;
            self.limit.saturating_add(1)
        } else {
            // A probe went through: the service takes more than the target.
            self.target = Some(self.limit);
            self.step = self.step.saturating_mul(2);
            self.limit.saturating_add(self.step)
        };
        self.limit = grown.min(self.max);
    }

    /// Back-pressure on a request sent with `sent_with` in flight: cut now.
    fn back_off(&mut self, now: Instant, sent_with: usize) {
        let before = self.limit;
        let step = self.step;
        let ended_slow_start = self.slow_start;
        let cut = self.cut(now);
        // The service refused a request sent with `sent_with` in flight, so it
        // took fewer than that: cut that far if it is deeper, but no deeper
        // than half. Requests sent together reach the service in any order,
        // so the count is only a hint; the target below is not taken from it.
        let count = sent_with.saturating_sub(1);
        self.limit = cut.min(count).max(before / 2).max(self.min);
        // Climb back to the last level that went through if it is below the
        // one refused now. If not, the service takes less than it did.
        self.good = self.good.filter(|&good| good < before);
        self.target = Some(self.good.map_or(self.limit, |good| good.max(self.limit)));
        self.hold = if step == 1 && !ended_slow_start {
            // One above a level that went through was refused: that level is
            // the service's limit; probe it again later, and later still.
            self.hold.saturating_mul(2).clamp(BASE_HOLD, MAX_HOLD)
        } else {
            // Where the service's limit lies between the target and the
            // level refused is not known yet: probe again from the next window.
            1
        };
        // The window so far measured the old limit.
        self.end_window(now);
    }

    /// Multiplies the limit down (halved when ending slow start) and leaves
    /// slow start and any probe; returns the new limit.
    fn cut(&mut self, now: Instant) -> usize {
        let factor = if self.slow_start {
            SLOW_START_DECREASE
        } else {
            DECREASE
        };
        // `as` saturates and floors; always at least one below a limit above `min`.
        let cut = (self.limit as f64 * factor) as usize;
        self.limit = cut.min(self.limit.saturating_sub(1)).max(self.min);
        self.slow_start = false;
        self.step = 0;
        self.held = 0;
        self.last_decrease = Some(now);
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // Short names keep the tables readable: accepted, refused, neutral.
    use Signal::{Accepted as Acc, Neutral as Neu, Refused as Ref};

    /// (now ms, rtt ms, outcome, in flight, sent with, limit expected after it)
    type Step = (u64, u64, Signal, usize, usize, usize);

    fn run(config: AimdConfig, steps: &[Step]) -> Result<(), String> {
        let t0 = Instant::now();
        let mut aimd = Aimd::new(config);
        for (i, &(now, rtt, outcome, in_flight, sent_with, want)) in steps.iter().enumerate() {
            aimd.on_response(
                t0 + Duration::from_millis(now),
                Response {
                    rtt: Duration::from_millis(rtt),
                    outcome,
                    in_flight,
                    sent_with,
                },
            );
            if aimd.limit() != want {
                return Err(format!(
                    "step {i} ({now}ms {rtt}ms {outcome:?} {in_flight} {sent_with}): limit {} want {want}",
                    aimd.limit()
                ));
            }
        }
        Result::Ok(())
    }

    fn cfg(initial: usize, min: usize, max: usize) -> AimdConfig {
        AimdConfig { initial, min, max }
    }

    /// `n` responses at `now`, each seeing `in_flight` and sent with as many, the last leaving `want`.
    fn burst(
        n: usize,
        now: u64,
        rtt: u64,
        outcome: Signal,
        in_flight: usize,
        want: usize,
    ) -> Vec<Step> {
        vec![(now, rtt, outcome, in_flight, in_flight, want); n]
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, AimdConfig, Vec<Step>)> = vec![
            (
                "slow start doubles once per round trip, up to the ceiling",
                cfg(4, 1, 20),
                [
                    burst(4, 100, 100, Acc, 4, 8),
                    burst(8, 200, 100, Acc, 8, 16),
                    burst(16, 300, 100, Acc, 16, 20),
                    burst(20, 400, 100, Acc, 20, 20),
                ]
                .concat(),
            ),
            (
                "the first doubling happens on the first response, the rest of its burst waits",
                cfg(4, 1, 64),
                vec![
                    (100, 100, Acc, 4, 4, 8),
                    (100, 100, Acc, 8, 4, 8),
                    (150, 100, Acc, 8, 8, 8),
                ],
            ),
            (
                "back-pressure ends slow start on the response that brings it, on the last limit \
                 that went through; the rest of the burst does not cut again; then the limit \
                 probes upwards by 1, 2, 4… until refused, and holds one below the refusal",
                cfg(4, 1, 64),
                [
                    burst(4, 100, 100, Acc, 4, 8),
                    // Limit 8 was too much: the service took 6, refused the 7th and 8th at once.
                    vec![(150, 0, Ref, 8, 7, 4), (150, 0, Ref, 8, 8, 4)],
                    // Refusals of requests sent before the cut are old news.
                    vec![(180, 40, Ref, 6, 8, 4), (180, 40, Ref, 6, 8, 4)],
                    // A round trip at 4 went through: probe at 5, then 7.
                    burst(4, 250, 100, Acc, 6, 5),
                    burst(5, 350, 100, Acc, 6, 7),
                    // 7 is refused (sent with 7 in flight: the service took 6): a tenth off.
                    vec![(360, 0, Ref, 7, 7, 6)],
                    // 6 went through: probe 7 once more; refused again, so 6 it is.
                    burst(6, 460, 100, Acc, 6, 7),
                    vec![(470, 0, Ref, 7, 7, 6)],
                    burst(6, 570, 100, Acc, 6, 6),
                    burst(6, 670, 100, Acc, 6, 6),
                ]
                .concat(),
            ),
            (
                "a refused request's count deepens a cut after slow start, but never below half",
                cfg(30, 1, 64),
                [
                    vec![(100, 100, Ref, 30, 30, 15)],
                    burst(15, 200, 100, Acc, 15, 16),
                    // Sent with 12 in flight: the service took 11.
                    vec![(210, 0, Ref, 16, 12, 11)],
                    // Sent with 2: the count would say 1; half is the floor.
                    vec![(220, 0, Ref, 11, 2, 5)],
                ]
                .concat(),
            ),
            (
                "a burst refused at the start lands on half, then on what the service took",
                cfg(32, 1, 64),
                [
                    // 32 sent at once, the service takes 8; they come back in any order.
                    vec![(10, 1, Ref, 32, 20, 16)],
                    (9..=32).map(|n| (10, 1, Ref, 32, n, 16)).collect(),
                    // Sent after that cut, with 12 in flight: 11, then 8.
                    vec![(12, 1, Ref, 16, 12, 11), (14, 1, Ref, 11, 9, 8)],
                    // A round trip at 8 went through: probe at 9.
                    burst(8, 114, 100, Acc, 8, 9),
                ]
                .concat(),
            ),
            (
                "a refused probe cuts by a tenth, and the limit climbs straight back",
                cfg(30, 1, 64),
                [
                    burst(30, 100, 100, Acc, 30, 60),
                    vec![(150, 0, Ref, 60, 60, 30)],
                    burst(30, 250, 100, Acc, 30, 31),
                    vec![(260, 0, Ref, 31, 31, 27)],
                    burst(30, 360, 100, Acc, 30, 30),
                ]
                .concat(),
            ),
            (
                "no growth unless the limit was used in full",
                cfg(4, 1, 64),
                [
                    burst(2, 100, 100, Acc, 2, 4),
                    burst(3, 200, 100, Acc, 3, 4),
                    burst(3, 300, 100, Acc, 3, 4),
                    vec![(400, 100, Acc, 4, 4, 8)],
                ]
                .concat(),
            ),
            (
                "growth when the limit was used, even if the response that closes the window saw less",
                cfg(4, 1, 64),
                vec![
                    (100, 100, Acc, 4, 4, 8),
                    (150, 100, Acc, 8, 8, 8),
                    (200, 100, Acc, 1, 1, 16),
                ],
            ),
            (
                "the floor holds",
                cfg(2, 1, 64),
                vec![
                    (100, 100, Ref, 2, 2, 1),
                    (200, 0, Ref, 1, 1, 1),
                    (300, 0, Ref, 1, 1, 1),
                    (400, 0, Ref, 1, 1, 1),
                ],
            ),
            (
                "a floor above one holds too",
                cfg(8, 3, 64),
                vec![
                    (100, 100, Ref, 8, 8, 4),
                    (200, 0, Ref, 4, 4, 3),
                    (300, 0, Ref, 3, 3, 3),
                ],
            ),
            (
                "the ceiling holds in slow start and when probing",
                cfg(8, 1, 10),
                [
                    burst(8, 100, 100, Acc, 8, 10),
                    burst(10, 200, 100, Acc, 10, 10),
                    vec![(250, 0, Ref, 10, 10, 5)],
                    burst(5, 350, 100, Acc, 5, 6),
                    burst(6, 450, 100, Acc, 6, 8),
                    burst(8, 550, 100, Acc, 8, 10),
                    burst(10, 650, 100, Acc, 10, 10),
                ]
                .concat(),
            ),
            (
                "an RTT spike shrinks even without 429s",
                cfg(8, 1, 64),
                // The limit is never used, so it neither grows nor, at first, shrinks.
                vec![
                    (100, 100, Acc, 2, 2, 8),
                    (200, 100, Acc, 2, 2, 8),
                    (300, 100, Acc, 2, 2, 8),
                    (400, 100, Acc, 2, 2, 8),
                    (500, 100, Acc, 2, 2, 8),
                    // 100ms has become the norm; now the server takes 350ms.
                    (850, 350, Acc, 2, 2, 4),
                ],
            ),
            (
                "ordinary noise does not shrink, and a high-variance server is not cut for one slow window",
                cfg(8, 1, 64),
                vec![
                    (100, 100, Acc, 2, 2, 8),
                    (200, 60, Acc, 2, 2, 8),
                    (300, 140, Acc, 2, 2, 8),
                    (400, 70, Acc, 2, 2, 8),
                    (500, 150, Acc, 2, 2, 8),
                    // Over twice the average, but within four deviations of it.
                    (730, 230, Acc, 2, 2, 8),
                    (800, 90, Acc, 2, 2, 8),
                ],
            ),
            (
                "a rising RTT holds growth back",
                cfg(4, 1, 64),
                vec![
                    (100, 100, Acc, 4, 4, 8),
                    (200, 100, Acc, 8, 8, 16),
                    (300, 100, Acc, 16, 16, 32),
                    // 170% of the norm: rising, not yet a spike.
                    (470, 170, Acc, 32, 32, 32),
                ],
            ),
            (
                "Neu neither grows nor shrinks, whatever its timing",
                cfg(4, 1, 64),
                [
                    burst(4, 100, 100, Neu, 4, 4),
                    burst(4, 200, 100, Neu, 4, 4),
                    burst(4, 300, 5_000, Neu, 4, 4),
                    burst(4, 400, 0, Neu, 9, 4),
                ]
                .concat(),
            ),
            (
                "a timeout sent before the last cut does not cut again",
                cfg(8, 1, 64),
                [
                    vec![(100, 100, Ref, 8, 8, 4)],
                    burst(4, 200, 100, Acc, 4, 5),
                    // Sent at 50ms, before the cut at 100ms.
                    vec![(350, 300, Ref, 4, 8, 5)],
                    burst(5, 400, 100, Acc, 5, 7),
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

    /// Round trips of 100ms against a service that takes `capacity` at once
    /// and refuses the rest at once: the limit after each.
    fn rounds(aimd: &mut Aimd, now: &mut Instant, capacity: usize, n: usize) -> Vec<usize> {
        let rtt = Duration::from_millis(100);
        (0..n)
            .map(|_| {
                let limit = aimd.limit();
                for sent_with in capacity + 1..=limit {
                    aimd.on_response(
                        *now,
                        Response {
                            rtt: Duration::ZERO,
                            outcome: Ref,
                            in_flight: limit,
                            sent_with,
                        },
                    );
                }
                *now += rtt;
                let served = limit.min(capacity);
                for i in 0..served {
                    aimd.on_response(
                        *now,
                        Response {
                            rtt,
                            outcome: Acc,
                            in_flight: served - i,
                            sent_with: served,
                        },
                    );
                }
                aimd.limit()
            })
            .collect()
    }

    #[test]
    fn holds_at_the_capacity_and_probes_above_it_ever_more_rarely() {
        let mut now = Instant::now();
        let mut aimd = Aimd::new(cfg(16, 1, 64));
        // Slow start: 16, 32, 64; 64 draws 429s past 32 and lands on 32,
        // which goes through, so the search above it probes 33 at once.
        let start = rounds(&mut aimd, &mut now, 32, 3);
        assert_eq!(start, [32, 64, 33]);
        // 33 is refused: a tenth off and straight back to 32 within its round
        // trip, then held for BASE_HOLD round trips before the next probe,
        // twice as long after each refused probe, up to MAX_HOLD.
        let limits = rounds(&mut aimd, &mut now, 32, 8 * MAX_HOLD as usize);
        assert_eq!(aimd.target(), Some(32));
        assert!(limits.iter().all(|&l| l == 32 || l == 33), "{limits:?}");
        let probes: Vec<usize> = [0]
            .into_iter()
            .chain((0..limits.len()).filter(|&i| limits[i] > 32).map(|i| i + 1))
            .collect();
        let gaps: Vec<u32> = probes.windows(2).map(|w| (w[1] - w[0]) as u32).collect();
        let mut hold = BASE_HOLD / 2;
        let want: Vec<u32> = gaps
            .iter()
            .map(|_| {
                hold = (hold * 2).min(MAX_HOLD);
                hold + 1
            })
            .collect();
        assert_eq!(gaps, want, "probes at {probes:?}");
        assert!(gaps.len() >= 5 && gaps.ends_with(&[MAX_HOLD + 1, MAX_HOLD + 1]));
    }

    #[test]
    fn a_probe_that_goes_through_grows_by_doubling_steps() {
        let mut now = Instant::now();
        let mut aimd = Aimd::new(cfg(16, 1, 64));
        rounds(&mut aimd, &mut now, 32, 3);
        // The service now takes 45: the probe at 33 goes through, then +2,
        // +4, +8; 47 is refused (a tenth off: 42, which goes through), the
        // search resumes from 42 (43, 45, then 49 refused: back to 45), 46
        // is refused, and 45 holds.
        let limits = rounds(&mut aimd, &mut now, 45, 20);
        assert_eq!(
            limits,
            [35, 39, 47, 43, 45, 49, 45, 46, 45, 45, 45, 45, 45, 45, 45, 45, 45, 45, 45, 45]
        );
        assert_eq!(aimd.target(), Some(45));
    }

    #[test]
    fn a_drop_in_capacity_is_followed_at_once() {
        let mut now = Instant::now();
        let mut aimd = Aimd::new(cfg(16, 1, 64));
        rounds(&mut aimd, &mut now, 32, 3);
        // The service now takes 12 (another agent started): cut to half at
        // once, then (sent with 13 in flight) to 12, which goes through;
        // 13 is refused, and 12 holds.
        let limits = rounds(&mut aimd, &mut now, 12, 5);
        assert_eq!(limits, [16, 13, 12, 12, 12]);
        assert_eq!(aimd.target(), Some(12));
    }

    #[test]
    fn config_is_normalized() {
        let table = [
            // (config, want)
            (AimdConfig::new(None), cfg(DEFAULT_MAX / 2, 1, DEFAULT_MAX)),
            (AimdConfig::new(Some(256)), cfg(128, 1, 256)),
            (AimdConfig::new(Some(20)), cfg(10, 1, 20)),
            (AimdConfig::new(Some(6)), cfg(INITIAL_LIMIT, 1, 6)),
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
        let response = |rtt, outcome, n| Response {
            rtt,
            outcome,
            in_flight: n,
            sent_with: n,
        };
        aimd.on_response(t0 + ms(100), response(ms(100), Acc, 32));
        assert!(aimd.in_slow_start());
        assert_eq!((aimd.limit(), aimd.target()), (64, None));
        aimd.on_response(t0 + ms(200), response(ms(1), Ref, 64));
        assert!(!aimd.in_slow_start());
        assert_eq!((aimd.limit(), aimd.target()), (32, Some(32)));
    }
}
