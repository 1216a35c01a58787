//! Timestamps in the only shapes Stark Bank emits and the Python SDK parses:
//! `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00` and `YYYY-MM-DD`. Never `Z`, never another offset.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// `2021-04-26T20:16:51.866857+00:00`
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// `2021-04-26T20:16:51+00:00`, the form the SDK sends.
pub fn format_secs(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// `2021-04-26`
pub fn format_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// Parses any RFC 3339 timestamp (with any offset) into UTC.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// Parses a datetime or a plain date (taken as midnight UTC).
pub fn parse_date_or_datetime(s: &str) -> Option<DateTime<Utc>> {
    parse(s).or_else(|| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_plus_zero_offset() {
        let t = parse("2021-04-26T20:16:51.866857Z").unwrap();
        assert_eq!(format(t), "2021-04-26T20:16:51.866857+00:00");
        assert_eq!(format_secs(t), "2021-04-26T20:16:51+00:00");
        assert_eq!(parse_date_or_datetime("2021-05-09").map(format_secs).as_deref(), Some("2021-05-09T00:00:00+00:00"));
    }
}
