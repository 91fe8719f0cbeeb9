//! When an event happened, as each source writes it: an alert's
//! `startsAt`, a ticket's update time. A time that cannot be read is no
//! time (the event is judged at the time it was received), never an
//! error: the event itself is still good.

use jiff::Timestamp;

/// An RFC 3339 time (`2026-12-05T08:00:00.123Z`). Alertmanager writes an
/// unset time as `0001-01-01T00:00:00Z`; anything before 1970 is unset.
pub(crate) fn rfc3339(text: &str) -> Option<Timestamp> {
    text.trim()
        .parse::<Timestamp>()
        .ok()
        .filter(|at| *at >= Timestamp::UNIX_EPOCH)
}

/// A ServiceNow date-time as the Table API gives a field's value:
/// `2026-12-05 08:00:00`, in UTC.
pub(crate) fn servicenow(text: &str) -> Option<Timestamp> {
    let civil: jiff::civil::DateTime = text.trim().parse().ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|zoned| zoned.timestamp())
        .filter(|at| *at >= Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_the_sources_write_them() {
        let at: Timestamp = "2026-12-05T08:00:00Z".parse().unwrap();
        assert_eq!(rfc3339("2026-12-05T08:00:00Z"), Some(at));
        assert_eq!(rfc3339("2026-12-05T09:00:00+01:00"), Some(at));
        assert_eq!(
            rfc3339("0001-01-01T00:00:00Z"),
            None,
            "Alertmanager's unset time"
        );
        assert_eq!(rfc3339("yesterday"), None);
        assert_eq!(servicenow("2026-12-05 08:00:00"), Some(at));
        assert_eq!(servicenow(""), None);
        assert_eq!(servicenow("05/12/2026"), None);
    }
}
