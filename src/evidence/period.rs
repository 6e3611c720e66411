//! Times on the command line and the period of a query.
//!
//! A time is RFC 3339 (`2026-01-31T00:00:00Z`), a date (`2026-01-31`,
//! midnight UTC), `now`, or a time before now (`-30d`, `-12h`, `-1h30m`).
//! Times are bound to queries as `YYYY-MM-DD hh:mm:ss.fffffffff` in UTC,
//! because ClickHouse does not parse RFC 3339 text as a `DateTime64` query
//! parameter.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use super::EvidenceError;

/// A half-open period `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Period {
    /// Parses both ends relative to `now`; `from` must be before `to`.
    pub fn parse(from: &str, to: &str, now: DateTime<Utc>) -> Result<Period, EvidenceError> {
        let period = Period {
            from: parse_time(from, now)?,
            to: parse_time(to, now)?,
        };
        if period.from >= period.to {
            return Err(EvidenceError::EmptyPeriod {
                from: period.from.to_rfc3339(),
                to: period.to.to_rfc3339(),
            });
        }
        Ok(period)
    }

    /// Formats the period as RFC 3339 text, for headers.
    pub fn describe(&self) -> String {
        format!(
            "from {} to {} (UTC, end excluded)",
            rfc3339(self.from),
            rfc3339(self.to)
        )
    }
}

/// Parses one time, relative forms against `now`.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, EvidenceError> {
    let trimmed = text.trim();
    let invalid = || EvidenceError::InvalidTime {
        value: text.to_owned(),
    };
    if trimmed == "now" {
        return Ok(now);
    }
    if let Some(ago) = trimmed.strip_prefix('-') {
        let duration = humantime::parse_duration(ago).map_err(|_| invalid())?;
        let duration = chrono::Duration::from_std(duration).map_err(|_| invalid())?;
        return now.checked_sub_signed(duration).ok_or_else(invalid);
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(time.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(trimmed, "%Y-%m-%d").map_err(|_| invalid())?;
    Ok(date.and_hms_opt(0, 0, 0).ok_or_else(invalid)?.and_utc())
}

/// Formats `time` as a `DateTime64(9, 'UTC')` query parameter.
pub fn bind_value(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S%.9f").to_string()
}

/// RFC 3339 in UTC with the fraction only when there is one.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-31T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn forms_accepted() {
        let cases = [
            ("now", "2026-03-31T12:00:00Z"),
            ("-30d", "2026-03-01T12:00:00Z"),
            ("-12h", "2026-03-31T00:00:00Z"),
            ("-1h30m", "2026-03-31T10:30:00Z"),
            ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z"),
            ("2026-01-02T05:04:05+02:00", "2026-01-02T03:04:05Z"),
            ("2026-01-02", "2026-01-02T00:00:00Z"),
        ];
        for (text, expected) in cases {
            assert_eq!(
                rfc3339(parse_time(text, now()).unwrap()),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn bad_time_named_in_error() {
        for text in [
            "yesterday",
            "-3 fortnights",
            "2026-13-01",
            "2026-01-02 03:04",
        ] {
            let message = parse_time(text, now()).unwrap_err().to_string();
            assert!(message.contains(text), "{message}");
            assert!(message.contains("RFC 3339"), "{message}");
        }
    }

    #[test]
    fn bind_value_has_nanoseconds() {
        let time = parse_time("2026-01-02T03:04:05.5Z", now()).unwrap();
        assert_eq!(bind_value(time), "2026-01-02 03:04:05.500000000");
    }

    #[test]
    fn empty_period_rejected() {
        let error = Period::parse("2026-02-01", "2026-01-01", now())
            .unwrap_err()
            .to_string();
        assert!(error.contains("2026-02-01"), "{error}");
    }
}
