//! Text output: addresses, times, tables.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jovian::ServiceInfo;

/// `host:port` → `grpc://host:port`; `scheme://host:port` stays as it is. Fails on what cannot
/// be an instance's address.
///
/// ```
/// assert_eq!(jovian_cli::parse_address("10.0.0.7:50051").unwrap(), "grpc://10.0.0.7:50051");
/// assert_eq!(jovian_cli::parse_address("http://h:1").unwrap(), "http://h:1");
/// assert!(jovian_cli::parse_address("h:1/x").is_err());
/// ```
pub fn parse_address(address: &str) -> Result<String, String> {
    let (scheme, rest) = address.split_once("://").unwrap_or(("grpc", address));
    if scheme.is_empty() || rest.is_empty() || rest.contains('/') || scheme.contains('/') {
        return Err(format!(
            "`{address}` is not an instance address: write host:port (scheme grpc) or scheme://host:port"
        ));
    }
    Ok(format!("{scheme}://{rest}"))
}

/// `time` as RFC 3339 in UTC with milliseconds: `2025-01-31T08:15:02.123Z`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
/// assert_eq!(jovian_cli::rfc3339(t), "2023-11-14T22:13:20.123Z");
/// ```
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The instance's `metadata.started_at` (milliseconds since the epoch, as Apps write it) as
/// RFC 3339; another value as written; `None` when absent.
pub(crate) fn started(info: &ServiceInfo) -> Option<String> {
    let raw = info.metadata.get(jovian::app::STARTED_AT)?;
    Some(match raw.parse::<u64>() {
        Ok(millis) => rfc3339(UNIX_EPOCH + Duration::from_millis(millis)),
        Err(_) => raw.clone(),
    })
}

/// `address` for grpc instances, `scheme://address` for others.
pub(crate) fn short_uri(info: &ServiceInfo) -> String {
    match info.scheme.as_str() {
        "grpc" => info.address.clone(),
        _ => info.uri(),
    }
}

/// `-` for an empty value.
pub(crate) fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        value.to_owned()
    }
}

/// Left-aligned columns two spaces apart, a header first.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_across_leap_years_and_centuries() {
        let at = |secs: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59.000Z");
    }

    #[test]
    fn tables_align_their_columns() {
        let rows = vec![vec!["a".into(), "bbbb".into()], vec!["cccc".into(), "d".into()]];
        assert_eq!(table(&["X", "Y"], &rows), "X     Y\na     bbbb\ncccc  d\n");
    }
}
