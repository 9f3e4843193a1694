//! Durations as people write them in config files (`500ms`, `2s`, `1m30s`), for serde.
//!
//! Every settings type reads its durations through these, whichever layer owns it (the
//! config's sections, a server's settings), so a duration is written the same everywhere.
//! They are public as `jovian::config::{duration, positive_duration}`.

/// Durations as `500ms`, `2s`, `1.5s`, `1m30s`, `1h` (or a whole number of seconds): a sum of
/// numbers, each with a unit (`ns`, `us`, `ms`, `s`, `m`, `h`, `d`). Anything that overflows is
/// an error, never a wrapped or saturated value.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    const EXPECTED: &str = "a duration like \"500ms\", \"2s\", \"1.5s\" or \"1m30s\"";

    /// Writes `duration` in the form [`parse`] reads.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        match duration.subsec_nanos() {
            0 => serializer.serialize_str(&format!("{}s", duration.as_secs())),
            n if n % 1_000_000 == 0 => serializer.serialize_str(&format!("{}ms", duration.as_millis())),
            _ => serializer.serialize_str(&format!("{}ns", duration.as_nanos())),
        }
    }

    /// Reads a duration from text or a whole number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer).map_err(|_| de::Error::custom(format!("expected {EXPECTED}")))? {
            Raw::Seconds(seconds) => Ok(Duration::from_secs(seconds)),
            Raw::Text(text) => match parse(&text) {
                Ok(duration) => Ok(duration),
                Err(why) => Err(de::Error::invalid_value(
                    de::Unexpected::Str(&text),
                    &format!("{EXPECTED} ({why})").as_str(),
                )),
            },
        }
    }

    /// Parses `1.5s`, `1m30s`, `250ms`; says what is wrong otherwise.
    ///
    /// ```
    /// use std::time::Duration;
    /// use jovian::config::duration::parse;
    ///
    /// assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
    /// assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
    /// assert!(parse("9999999999999999999h").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Duration, &'static str> {
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err("it is empty");
        }
        let mut total = Duration::ZERO;
        while !rest.is_empty() {
            let number_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, after) = rest.split_at(number_end);
            let unit_end = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_end);
            if number.is_empty() {
                return Err("it must start with a number");
            }
            let nanos_per_unit: u128 = match unit.trim() {
                "ns" => 1,
                "us" | "µs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "d" => 86_400_000_000_000,
                "" => return Err("every number needs a unit (ms, s, m, h, ...)"),
                _ => return Err("the unit is not one of ns, us, ms, s, m, h, d"),
            };
            total = total
                .checked_add(scaled(number, nanos_per_unit)?)
                .ok_or("it is too long")?;
            rest = after.trim_start();
        }
        Ok(total)
    }

    /// `number` (digits, maybe with a fraction) times `nanos_per_unit`, exactly or an error.
    fn scaled(number: &str, nanos_per_unit: u128) -> Result<Duration, &'static str> {
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err("a number is written like 2 or 1.5");
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| "it is too long")?
        };
        let mut nanos = whole.checked_mul(nanos_per_unit).ok_or("it is too long")?;
        let mut scale = nanos_per_unit;
        for digit in fraction.bytes().take(18) {
            scale /= 10;
            nanos += u128::from(digit - b'0') * scale;
        }
        let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| "it is too long")?;
        Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
    }
}

/// [`duration`], refusing zero: for settings where no time at all means nothing.
pub mod positive_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer, de};

    /// Writes `duration` as [`duration`](super::duration) does.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        super::duration::serialize(duration, serializer)
    }

    /// Reads a duration as [`duration`](super::duration) does, refusing zero.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let duration = super::duration::deserialize(deserializer)?;
        if duration.is_zero() {
            return Err(de::Error::invalid_value(
                de::Unexpected::Str("0s"),
                &"a duration greater than zero, like \"2s\"",
            ));
        }
        Ok(duration)
    }
}

/// A [`positive_duration`] or `"none"`, for a deadline that may be turned off.
pub(crate) mod duration_or_none {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    const NONE: &str = "none";

    pub(crate) fn serialize<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => super::duration::serialize(duration, serializer),
            None => serializer.serialize_str(NONE),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        let expected = "a duration greater than zero, like \"2s\", or \"none\"";
        let duration =
            match Raw::deserialize(deserializer).map_err(|_| de::Error::custom(format!("expected {expected}")))? {
                Raw::Text(text) if text.trim() == NONE => return Ok(None),
                Raw::Seconds(seconds) => Duration::from_secs(seconds),
                Raw::Text(text) => super::duration::parse(&text).map_err(|why| {
                    de::Error::invalid_value(de::Unexpected::Str(&text), &format!("{expected} ({why})").as_str())
                })?,
            };
        match duration.is_zero() {
            true => Err(de::Error::invalid_value(de::Unexpected::Str("0s"), &expected)),
            false => Ok(Some(duration)),
        }
    }
}

/// An optional [`positive_duration`]: absent or a duration greater than zero.
pub(crate) mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => super::duration::serialize(duration, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Positive(#[serde(with = "super::positive_duration")] Duration);
        Ok(Option::<Positive>::deserialize(deserializer)?.map(|Positive(duration)| duration))
    }
}
