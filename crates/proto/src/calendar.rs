//! A schedule's calendar: its cron expression (croner) read in its time zone (chrono-tz),
//! turned into the instants (ms since the Unix epoch) at which it ticks. Beside the
//! schedule's wire type ([`ScheduleSpec::calendar`](crate::schedule::ScheduleSpec::calendar)):
//! a shard's leader finds due ticks with it, its table refuses a schedule whose calendar
//! cannot be read, and `dtc schedule` checks one before sending it.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::str::FromStr;

/// Why a calendar cannot be read, with the form to use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// The time zone is not an IANA name.
    #[error("{0:?} is not a time zone: use an IANA name such as Europe/Paris or UTC")]
    TimeZone(String),
    /// The expression does not parse.
    #[error(
        "{cron:?} is not a cron expression ({reason}): use five fields, minute hour \
         day-of-month month day-of-week (\"*/5 * * * *\"), or six with seconds first"
    )]
    Cron {
        /// The expression given.
        cron: String,
        /// What croner found wrong.
        reason: String,
    },
}

/// A parsed cron expression in a time zone.
#[derive(Clone, Debug)]
pub struct Calendar {
    cron: croner::Cron,
    tz: Tz,
}

impl Calendar {
    /// Reads `cron` (five fields, or six with seconds first) in the IANA zone `tz` (UTC
    /// when `None`); if it cannot, says why.
    pub fn parse(cron: &str, tz: Option<&str>) -> Result<Self, CalendarError> {
        let tz = match tz {
            None => Tz::UTC,
            Some(name) => {
                Tz::from_str(name).map_err(|_| CalendarError::TimeZone(name.to_owned()))?
            }
        };
        let cron = croner::Cron::from_str(cron).map_err(|e| CalendarError::Cron {
            cron: cron.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self { cron, tz })
    }

    /// The first tick strictly after `after_ms`, if there is one.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let at = self.at(after_ms)?;
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// The last tick at or before `at_ms`, if there is one.
    pub fn last_until(&self, at_ms: u64) -> Option<u64> {
        let at = self.at(at_ms)?;
        let last = self.cron.find_previous_occurrence(&at, true).ok()?;
        u64::try_from(last.timestamp_millis()).ok()
    }

    fn at(&self, ms: u64) -> Option<DateTime<Tz>> {
        let ms = i64::try_from(ms).ok()?;
        let utc: DateTime<Utc> = Utc.timestamp_millis_opt(ms).single()?;
        Some(utc.with_timezone(&self.tz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-29T12:00:00Z.
    const NOON: u64 = 1_795_953_600_000;

    #[test]
    fn ticks_follow_the_expression_in_its_zone() -> Result<(), CalendarError> {
        let cal = Calendar::parse("*/5 * * * *", None)?;
        assert_eq!(cal.next_after(NOON), Some(NOON + 5 * 60_000));
        assert_eq!(cal.next_after(NOON + 1), Some(NOON + 5 * 60_000));
        assert_eq!(cal.last_until(NOON + 299_999), Some(NOON));
        let secs = Calendar::parse("* * * * * *", None)?;
        assert_eq!(
            secs.next_after(NOON + 500),
            Some(NOON + 1_000),
            "six fields: seconds"
        );
        // 09:00 in Paris is 08:00 UTC in winter.
        let paris = Calendar::parse("0 9 * * *", Some("Europe/Paris"))?;
        assert_eq!(paris.next_after(NOON), Some(NOON + 20 * 3_600_000));
        Ok(())
    }

    #[test]
    fn what_cannot_be_read_is_refused_with_the_form_to_use() {
        let bad = Calendar::parse("every minute", None).map(|_| ());
        assert!(
            matches!(&bad, Err(e @ CalendarError::Cron { .. }) if e.to_string().contains("five fields")),
            "{bad:?}"
        );
        let zone = Calendar::parse("* * * * *", Some("Mars/Olympus")).map(|_| ());
        assert!(
            matches!(&zone, Err(e @ CalendarError::TimeZone(_)) if e.to_string().contains("IANA")),
            "{zone:?}"
        );
    }
}
