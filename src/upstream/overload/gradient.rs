//! The adaptive limit: how many requests at once a backend takes, from its measured latency.
//! Pure and synchronous, time passed in, so that it can be tested against a simulated backend.
//!
//! The algorithm is Envoy's adaptive concurrency controller (a gradient, after Netflix's
//! concurrency-limits):
//! - **Baseline.** The latency the backend gives with little load: the median of
//!   [`PROBE_SAMPLES`] responses while its limit is held at the floor (`min_in_flight`). Measured
//!   first, then again about every [`PROBE_INTERVAL`] (give or take 15% per backend, so that
//!   backends configured together do not probe together), so that a backend that became slower
//!   for good gets a new baseline instead of a limit pinned at the floor; after a probe the limit
//!   goes back to where it was. Only responses to requests sent while the backend had at most
//!   the floor in flight count: those sent under the old limit are still coming back when a
//!   probe starts, with a loaded latency.
//! - **Windows.** Between probes, responses are averaged over windows of at least [`WINDOW`] and
//!   [`WINDOW_SAMPLES`] responses. At the end of each, with `sample` the window's mean latency:
//!   `gradient = clamp(baseline × (1 + BUFFER) / sample, 0.5, 2.0)` and
//!   `limit = clamp(ceil(limit × gradient + √(limit × gradient)), min_in_flight, max_in_flight)`.
//!   While latency stays within [`BUFFER`] of the baseline the limit grows (by 10% plus a square
//!   root's headroom); when latency rises it shrinks in proportion. The limit does not grow in a
//!   window whose busiest moment used less than half of it: a quiet backend's low latency says
//!   nothing about how much more it can take.
//!
//! Against a backend whose latency is flat up to `K` requests at once and proportional beyond
//! (it queues internally), the limit settles at about `1.1K + √(1.1K)` in one step from above and
//! stays there: past the knee `limit × gradient` is `1.1K` whatever the limit was.

use std::time::Duration;

/// Latency tolerated above the baseline before the limit stops growing.
pub const BUFFER: f64 = 0.1;
/// Shortest window a latency sample is averaged over.
pub const WINDOW: Duration = Duration::from_millis(100);
/// Fewest responses in a window.
pub const WINDOW_SAMPLES: u32 = 10;
/// Responses measured at the floor for a baseline.
pub const PROBE_SAMPLES: usize = 25;
/// Time between baseline measurements.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// Responses a probe passes over, at most, waiting for those sent at the floor.
const MAX_SKIPPED: u32 = 1000;
const MIN_GRADIENT: f64 = 0.5;
const MAX_GRADIENT: f64 = 2.0;

/// One backend's adaptive limit.
#[derive(Debug, Clone)]
pub struct Gradient {
    floor: u32,
    ceiling: u32,
    limit: u32,
    baseline: Option<Duration>,
    phase: Phase,
    probe_every: Duration,
}

#[derive(Debug, Clone)]
enum Phase {
    /// Held at the floor, collecting latencies for a baseline; `resume` is the limit to return to.
    Probing {
        /// In microseconds, to keep the controller small.
        samples: [u32; PROBE_SAMPLES],
        taken: usize,
        /// Responses passed over as sent under the old limit.
        skipped: u32,
        resume: u32,
    },
    /// Adjusting by windows until `next_probe`.
    Sampling {
        window: Window,
        next_probe: Duration,
    },
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Duration,
    sum: Duration,
    count: u32,
    peak_in_flight: u32,
}

impl Gradient {
    /// A limit between `floor` and `ceiling` (at least 1 each), starting with a baseline
    /// measurement from the floor.
    pub fn new(floor: u32, ceiling: u32) -> Gradient {
        let ceiling = ceiling.max(1);
        let floor = floor.clamp(1, ceiling);
        Gradient {
            floor,
            ceiling,
            limit: floor,
            baseline: None,
            phase: probing(floor),
            probe_every: PROBE_INTERVAL,
        }
    }

    /// The same controller measuring its baseline every `every`.
    pub fn probing_every(mut self, every: Duration) -> Gradient {
        self.probe_every = every;
        self
    }

    /// The limit now.
    pub fn limit(&self) -> u32 {
        match self.phase {
            Phase::Probing { .. } => self.floor,
            Phase::Sampling { .. } => self.limit,
        }
    }

    /// The baseline latency, once measured.
    #[cfg(test)]
    pub fn baseline(&self) -> Option<Duration> {
        self.baseline
    }

    /// New bounds from a reload; the limit is kept within them.
    pub fn set_bounds(&mut self, floor: u32, ceiling: u32) {
        self.ceiling = ceiling.max(1);
        self.floor = floor.clamp(1, self.ceiling);
        self.limit = self.limit.clamp(self.floor, self.ceiling);
    }

    /// A response took `latency`, at `now` (any clock that only goes forward), with `in_flight`
    /// requests at the backend when it was sent. Returns the limit afterwards.
    pub fn record(&mut self, now: Duration, latency: Duration, in_flight: u32) -> u32 {
        match &mut self.phase {
            Phase::Probing {
                samples,
                taken,
                skipped,
                resume,
            } => {
                // Sent under the limit before the probe: a loaded latency, not a baseline. (Up
                // to a point: long-lived requests, such as WebSockets, may never drain.)
                if in_flight > self.floor && *skipped < MAX_SKIPPED {
                    *skipped += 1;
                    return self.limit();
                }
                samples[*taken] = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
                *taken += 1;
                if *taken == PROBE_SAMPLES {
                    samples.sort_unstable();
                    let median = samples[PROBE_SAMPLES / 2];
                    self.baseline = Some(Duration::from_micros(u64::from(median)));
                    self.limit = (*resume).clamp(self.floor, self.ceiling);
                    self.phase = Phase::Sampling {
                        window: Window::starting(now),
                        next_probe: now + self.probe_every,
                    };
                }
            }
            Phase::Sampling { window, next_probe } => {
                window.sum += latency;
                window.count += 1;
                window.peak_in_flight = window.peak_in_flight.max(in_flight);
                let closed = window.count >= WINDOW_SAMPLES && now >= window.started + WINDOW;
                if closed {
                    let done = *window;
                    let probe_due = now >= *next_probe;
                    *window = Window::starting(now);
                    self.adjust(&done);
                    if probe_due {
                        self.phase = probing(self.limit);
                    }
                }
            }
        }
        self.limit()
    }

    /// The end of a window: the limit moved by the gradient.
    fn adjust(&mut self, window: &Window) {
        let Some(baseline) = self.baseline else {
            return;
        };
        let sample = window.sum.as_secs_f64() / f64::from(window.count);
        let target = baseline.as_secs_f64() * (1.0 + BUFFER);
        let gradient = if sample > 0.0 {
            (target / sample).clamp(MIN_GRADIENT, MAX_GRADIENT)
        } else {
            MAX_GRADIENT
        };
        let scaled = f64::from(self.limit) * gradient;
        let mut next = (scaled + scaled.sqrt()).ceil() as u32;
        // A backend that was never pushed says nothing about how much more it can take.
        if window.peak_in_flight * 2 < self.limit {
            next = next.min(self.limit);
        }
        self.limit = next.clamp(self.floor, self.ceiling);
    }
}

fn probing(resume: u32) -> Phase {
    Phase::Probing {
        samples: [0; PROBE_SAMPLES],
        taken: 0,
        skipped: 0,
        resume,
    }
}

impl Window {
    fn starting(now: Duration) -> Window {
        Window {
            started: now,
            sum: Duration::ZERO,
            count: 0,
            peak_in_flight: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that takes `service` per request up to `knee` at once and queues beyond it, so
    /// that latency grows in proportion to the concurrency past the knee.
    fn latency(knee: u32, service: Duration, in_flight: u32) -> Duration {
        service.mul_f64(f64::from(in_flight.max(knee)) / f64::from(knee))
    }

    /// Drives `gradient` with a load that always fills its limit, for `windows` windows; the
    /// limit at the end of each window, and the clock.
    fn saturate(
        gradient: &mut Gradient,
        mut now: Duration,
        windows: usize,
        knee: impl Fn(Duration) -> u32,
    ) -> (Vec<u32>, Duration) {
        let service = Duration::from_millis(10);
        let mut limits = Vec::new();
        for _ in 0..windows {
            // A window's worth of responses, evenly spread over it.
            for _ in 0..WINDOW_SAMPLES {
                now += WINDOW / WINDOW_SAMPLES;
                let in_flight = gradient.limit();
                gradient.record(now, latency(knee(now), service, in_flight), in_flight);
            }
            limits.push(gradient.limit());
        }
        (limits, now)
    }

    #[test]
    fn the_first_baseline_is_measured_at_the_floor() {
        let mut gradient = Gradient::new(4, 100);
        for i in 0..PROBE_SAMPLES as u64 {
            assert_eq!(gradient.limit(), 4);
            gradient.record(
                Duration::from_millis(i),
                Duration::from_millis(10 + i % 3),
                4,
            );
        }
        assert_eq!(gradient.baseline(), Some(Duration::from_millis(11)));
    }

    #[test]
    fn a_probe_ignores_requests_sent_before_it() {
        let mut gradient = Gradient::new(4, 100).probing_every(Duration::from_secs(1));
        let mut now = Duration::ZERO;
        for _ in 0..PROBE_SAMPLES {
            now += Duration::from_millis(1);
            gradient.record(now, Duration::from_millis(10), 4);
        }
        let (_, mut now) = saturate(&mut gradient, now, 15, |_| 1000);
        // The next window's end starts a probe.
        while gradient.limit() != 4 {
            now += Duration::from_millis(10);
            gradient.record(now, Duration::from_millis(10), 30);
        }
        // Requests sent under the old limit come back slow, then the floor's come back fast.
        for _ in 0..60 {
            now += Duration::from_millis(1);
            gradient.record(now, Duration::from_millis(50), 30);
        }
        assert_eq!(gradient.limit(), 4, "still probing: none of those counted");
        for _ in 0..PROBE_SAMPLES {
            now += Duration::from_millis(1);
            gradient.record(now, Duration::from_millis(12), 4);
        }
        assert_eq!(gradient.baseline(), Some(Duration::from_millis(12)));
        assert!(gradient.limit() > 4, "the limit before the probe is back");
    }

    #[test]
    fn settles_near_the_knee_without_oscillating() {
        let knee = 32;
        let mut gradient = Gradient::new(4, 500);
        // 90 s: past a second baseline measurement.
        let (limits, _) = saturate(&mut gradient, Duration::ZERO, 900, |_| knee);
        let probing = |limit: &&u32| **limit != 4;
        let settled: Vec<u32> = limits[50..].iter().filter(probing).copied().collect();
        let settled = &settled[..];
        let (low, high) = (
            *settled.iter().min().unwrap(),
            *settled.iter().max().unwrap(),
        );
        // The fixed point: 1.1 × 32 + √(1.1 × 32), about 41.
        assert!(
            low >= knee && high <= knee * 3 / 2,
            "settled between {low} and {high}, knee {knee}: {limits:?}"
        );
        assert!(
            high - low <= 2,
            "the limit wanders from {low} to {high}: {limits:?}"
        );
    }

    #[test]
    fn follows_a_backend_that_slows_down_and_recovers() {
        let mut gradient = Gradient::new(4, 500);
        let slow_from = Duration::from_secs(20);
        let fast_from = Duration::from_secs(40);
        let knee = |now: Duration| {
            if now >= slow_from && now < fast_from {
                10
            } else {
                40
            }
        };
        let (limits, _) = saturate(&mut gradient, Duration::ZERO, 600, knee);
        // Windows are 100 ms: index 150 is 15 s in, 350 is 35 s, 550 is 55 s.
        let before = limits[150];
        let slow = limits[350];
        let after = limits[550];
        assert!((40..=60).contains(&before), "before: {before}");
        assert!((10..=20).contains(&slow), "while slow: {slow}");
        assert!((40..=60).contains(&after), "recovered: {after}");
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut gradient = Gradient::new(8, 16);
        let (limits, _) = saturate(&mut gradient, Duration::ZERO, 100, |_| 1000);
        assert!(limits.iter().all(|l| (8..=16).contains(l)), "{limits:?}");
        assert_eq!(
            *limits.last().unwrap(),
            16,
            "a fast backend gets the ceiling"
        );
        let overwhelmed = |now: Duration| {
            if now < Duration::from_secs(5) {
                1000
            } else {
                1
            }
        };
        let (limits, _) = saturate(&mut Gradient::new(8, 16), Duration::ZERO, 100, overwhelmed);
        assert_eq!(
            *limits.last().unwrap(),
            8,
            "an overwhelmed one gets the floor"
        );
    }

    #[test]
    fn a_quiet_backend_does_not_earn_a_higher_limit() {
        let mut gradient = Gradient::new(4, 100);
        let mut now = Duration::ZERO;
        for _ in 0..2000 {
            now += Duration::from_millis(10);
            gradient.record(now, Duration::from_millis(10), 1);
        }
        assert_eq!(gradient.limit(), 4);
    }
}
