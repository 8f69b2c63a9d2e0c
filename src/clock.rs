//! Wall-clock time for scheduling and logs, read through tokio's clock:
//! in production it is the system time; in tests on paused time, retries
//! and expiry follow the paused clock. Also the date formats Tern writes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use queue::Timestamp;
use tokio::time::Instant;

/// A wall clock that advances with tokio's clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base_system: SystemTime,
    base: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock starting at the current system time.
    pub fn new() -> Self {
        Self {
            base_system: SystemTime::now(),
            base: Instant::now(),
        }
    }

    /// The current time.
    pub fn system_time(&self) -> SystemTime {
        self.base_system + self.base.elapsed()
    }

    /// The current time as the queue stores it.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_system_time(self.system_time())
    }

    /// The tokio instant at which `t` comes (now, if it has passed).
    pub fn instant_at(&self, t: Timestamp) -> Instant {
        Instant::now() + t.saturating_since(self.now())
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) to days since 1970-01-01 (Hinnant's
/// days_from_civil).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A `YYYY-MM-DD` date as days since 1970-01-01; `None` if it is not a
/// real date.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// Days since 1970-01-01 as `YYYY-MM-DD`.
pub fn date(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 (UTC) of `t`.
pub fn day_number(t: SystemTime) -> i64 {
    split(t).0 as i64
}

fn split(t: SystemTime) -> (u64, Duration) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (
        since.as_secs() / 86_400,
        Duration::from_secs(since.as_secs() % 86_400)
            + Duration::from_nanos(u64::from(since.subsec_nanos())),
    )
}

/// RFC 5322 date-time in UTC: `Mon, 23 Nov 2026 06:00:00 +0000`.
pub fn rfc5322(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, rem) = split(t);
    let (y, m, d) = civil_from_days(days as i64);
    let s = rem.as_secs();
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// RFC 3339 in UTC with milliseconds: `2026-11-23T06:00:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (days, rem) = split(t);
    let (y, m, d) = civil_from_days(days as i64);
    let s = rem.as_secs();
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60,
        rem.subsec_millis()
    )
}

/// Reads back what [`rfc3339`] writes (`2026-11-23T06:00:00.123Z`, the
/// milliseconds optional); `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let days = u64::try_from(parse_date(date)?).ok()?;
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let mut parts = hms.split(':');
    let mut num = |max: u64| parts.next()?.parse::<u64>().ok().filter(|v| *v < max);
    let (h, m, sec) = (num(24)?, num(60)?, num(61)?);
    let ms: u64 = ms.parse().ok().filter(|v| *v < 1000)?;
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_reads_back() {
        let t = at(1_795_413_845) + Duration::from_millis(7);
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        assert_eq!(
            parse_rfc3339("2026-11-23T06:04:05Z"),
            Some(at(1_795_413_845))
        );
        for bad in [
            "",
            "2026-11-23",
            "2026-11-23T25:00:00Z",
            "2026-11-23T06:04:05.1234Z",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn formats() {
        assert_eq!(rfc5322(at(0)), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322(at(951_782_400)), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322(at(1_795_413_845)),
            "Mon, 23 Nov 2026 06:04:05 +0000"
        );
        assert_eq!(
            rfc3339(at(1_795_413_845) + Duration::from_millis(7)),
            "2026-11-23T06:04:05.007Z"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time() {
        let c = Clock::new();
        let t0 = c.now();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(c.now().saturating_since(t0), Duration::from_secs(3600));
    }
}
