//! Duration strings: owns the one syntax for every time setting in the configuration
//! ("500ms", "2s", "30m", "1h 30m") and its error messages.

use std::time::Duration;

/// Units an operator may write, for hints.
pub(crate) const UNIT_HINT: &str = "write a number followed by a unit, e.g. \"500ms\", \"2s\", \"30m\" or \"1h 30m\" (units: ms, s, m, h, d)";

/// Parses a duration such as `"500ms"`, `"2s"`, `"30m"` or `"1h 30m"`.
///
/// A bare number is refused, even `"0"`: every duration in the configuration must say its unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration".to_owned());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("duration \"{trimmed}\" has no unit"));
    }
    humantime::parse_duration(trimmed).map_err(|e| format!("invalid duration \"{trimmed}\": {e}"))
}

/// Formats a duration the way it would be written in the configuration.
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_forms() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 1d "), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_missing_units_and_garbage() {
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("2 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn formats_back_to_config_syntax() {
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s 500ms");
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m");
    }
}
