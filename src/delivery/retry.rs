//! The retry schedule: a pure function of the attempt count, tested as a
//! table. Delays double from `first` up to `max`, with ±10% jitter so that
//! recipients deferred together do not all return at the same instant.

use std::time::Duration;

/// The delay before the next try after `attempts` tries (1 or more),
/// without jitter.
pub fn base_delay(attempts: u16, first: Duration, max: Duration) -> Duration {
    let doublings = u32::from(attempts.saturating_sub(1)).min(30);
    first.saturating_mul(1u32 << doublings).min(max)
}

/// The delay with jitter in [0.9, 1.1) of the base delay.
pub fn delay(attempts: u16, first: Duration, max: Duration) -> Duration {
    base_delay(attempts, first, max).mul_f64(0.9 + fastrand::f64() * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let d = delay(3, Duration::from_secs(300), Duration::from_secs(3600)).as_secs_f64();
            assert!((1080.0..1320.0).contains(&d), "{d}");
        }
    }
}
