//! The retry schedule and the delay-notice schedule: pure functions of the
//! attempt count, tested as tables. Delays double from `first` up to
//! `max`, with ±10% jitter so that recipients deferred together do not all
//! return at the same instant. The jitter is a function of the message,
//! the recipient and the attempt (not a random draw), so the time of the
//! previous attempt can be worked out again from what the queue keeps:
//! that is how a delay notice is sent once per interval without any state
//! of its own.

use std::time::Duration;

use queue::{MessageId, Timestamp};

/// The delay before the next try after `attempts` tries (1 or more),
/// without jitter.
pub fn base_delay(attempts: u16, first: Duration, max: Duration) -> Duration {
    let doublings = u32::from(attempts.saturating_sub(1)).min(30);
    first.saturating_mul(1u32 << doublings).min(max)
}

/// Which recipient of which message a delay is for (its jitter's seed).
#[derive(Clone, Copy, Debug)]
pub struct Seed {
    pub id: MessageId,
    pub index: u32,
}

/// The delay with jitter in [0.9, 1.1) of the base delay.
pub fn delay(attempts: u16, first: Duration, max: Duration, seed: Seed) -> Duration {
    base_delay(attempts, first, max).mul_f64(0.9 + jitter(attempts, seed) * 0.2)
}

/// A fraction in [0, 1) from the seed and attempt (splitmix64).
fn jitter(attempts: u16, seed: Seed) -> f64 {
    let mut z = seed.id.as_u64()
        ^ (u64::from(seed.index) << 16).rotate_left(29)
        ^ u64::from(attempts).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// When a delay notice is due: first `after` past arrival, then every
/// `every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoticeSchedule {
    pub after: Duration,
    pub every: Duration,
}

impl NoticeSchedule {
    /// Whether the deferral of an attempt made `now` sends a delay notice:
    /// when a notice time falls after the recipient's previous attempt
    /// (or its arrival) and at or before now. `before` is the recipient's
    /// status ahead of this attempt (attempts made, and when this one was
    /// due), so each notice time is passed by exactly one attempt.
    pub fn due(
        &self,
        arrival: Timestamp,
        now: Timestamp,
        (attempts, due): (u16, Timestamp),
        retry: (Duration, Duration),
        seed: Seed,
    ) -> bool {
        let Some(waited) = now.as_millis().checked_sub(arrival.as_millis()) else {
            return false;
        };
        let after = self.after.as_millis() as u64;
        let every = (self.every.as_millis() as u64).max(1);
        let Some(past) = waited.checked_sub(after) else {
            return false;
        };
        // The latest notice time at or before now.
        let latest = arrival.as_millis() + after + past / every * every;
        let previous = match attempts {
            0 => arrival.as_millis(),
            n => {
                let d = delay(n, retry.0, retry.1, seed).as_millis() as u64;
                due.as_millis().saturating_sub(d).max(arrival.as_millis())
            }
        };
        latest > previous
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: Seed = Seed {
        id: MessageId::from_u64(0x1234_5678),
        index: 2,
    };

    #[test]
    fn doubles_up_to_the_cap() {
        let m = |s: u64| Duration::from_secs(s * 60);
        let schedule: Vec<u64> = (1..=8)
            .map(|a| base_delay(a, m(5), m(60)).as_secs() / 60)
            .collect();
        assert_eq!(schedule, [5, 10, 20, 40, 60, 60, 60, 60]);
        assert_eq!(base_delay(u16::MAX, m(5), m(60)), m(60), "no overflow");
        assert_eq!(base_delay(0, m(5), m(60)), m(5));
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_spreads_recipients() {
        let (first, max) = (Duration::from_secs(300), Duration::from_secs(3600));
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000u32 {
            let seed = Seed {
                id: MessageId::from_u64(u64::from(i) * 7919),
                index: i % 5,
            };
            let d = delay(3, first, max, seed).as_secs_f64();
            assert!((1080.0..1320.0).contains(&d), "{d}");
            seen.insert(d as u64);
            assert_eq!(delay(3, first, max, seed), delay(3, first, max, seed));
        }
        assert!(seen.len() > 100, "spread over the window: {}", seen.len());
    }

    /// Follows one recipient through its attempts (each made when due)
    /// and returns the times, in minutes after arrival, of the attempts
    /// that sent a notice.
    fn notices(s: NoticeSchedule, until_min: u64) -> Vec<u64> {
        let (first, max) = (Duration::from_secs(300), Duration::from_secs(3600));
        let arrival = Timestamp::from_millis(1_700_000_000_000);
        let (mut attempts, mut due, mut sent) = (0u16, arrival, Vec::new());
        while due.saturating_since(arrival) < Duration::from_secs(until_min * 60) {
            let now = due;
            if s.due(arrival, now, (attempts, due), (first, max), SEED) {
                sent.push(now.saturating_since(arrival).as_secs() / 60);
            }
            attempts += 1;
            due = now.saturating_add(delay(attempts, first, max, SEED));
        }
        sent
    }

    #[test]
    fn one_notice_per_interval_at_the_first_attempt_past_each_notice_time() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        let sent = notices(
            NoticeSchedule {
                after: h(4),
                every: h(24),
            },
            72 * 60,
        );
        assert_eq!(sent.len(), 3, "at 4 h, 28 h and 52 h: {sent:?}");
        for (got, want) in sent.iter().zip([240u64, 1680, 3120]) {
            assert!(
                (*got >= want) && *got < want + 66,
                "{got} min is not within one retry of {want}"
            );
        }
        let early = notices(
            NoticeSchedule {
                after: h(100),
                every: h(24),
            },
            72 * 60,
        );
        assert!(early.is_empty(), "{early:?}");
    }

    #[test]
    fn a_first_attempt_late_past_the_notice_time_sends_it() {
        let s = NoticeSchedule {
            after: Duration::from_secs(600),
            every: Duration::from_secs(3600),
        };
        let arrival = Timestamp::from_millis(1_000_000);
        let retry = (Duration::from_secs(300), Duration::from_secs(3600));
        let late = Timestamp::from_millis(1_000_000 + 700_000);
        assert!(s.due(arrival, late, (0, arrival), retry, SEED));
        let soon = Timestamp::from_millis(1_000_000 + 500_000);
        assert!(!s.due(arrival, soon, (0, arrival), retry, SEED));
    }
}
