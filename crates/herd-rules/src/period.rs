//! Time periods in the syntax of Perl's `Time::Period` (1.25), as used by mon's `period` lines.
//!
//! A period is `sub-period[, sub-period ...]`; the sub-periods are ORed. A sub-period is
//! `scale {range [range ...]} [scale {range ...} ...]`; different scales are ANDed, and a
//! scale given twice in one sub-period extends itself (`mo {Jan} mo {Dec}` is
//! `mo {Jan Dec}`). A range is `v` or `v-v`; both ends are included and each `v` is a whole
//! unit of its scale (`hr {9am-4pm}` is 09:00:00 through 16:59:59). A range whose first
//! value is larger than its second wraps around (`wd {Fri-Mon}`, `hr {10pm-2am}`), except on
//! the year scale, whose ends are swapped instead. A blank period is always true; `none` is
//! never true. Case and whitespace do not matter (`9am - 4pm` is `9am-4pm`).
//!
//! | scale    | code  | values                                                        |
//! |----------|-------|---------------------------------------------------------------|
//! | `year`   | `yr`  | `n` with 0 <= n <= 99 (in the century of the time tested) or n >= 1970 |
//! | `month`  | `mo`  | 1-12, or `jan` ... `dec` (only the first 3 letters count)     |
//! | `week`   | `wk`  | 1-6, the week of the month; weeks start on Sunday             |
//! | `yday`   | `yd`  | 1-366                                                         |
//! | `mday`   | `md`  | 1-31                                                          |
//! | `wday`   | `wd`  | 1-7 (1 is Sunday), or `su` ... `sa` (only the first 2 letters count) |
//! | `hour`   | `hr`  | 0-23, or `12am`, `1am` ... `11am`, `12noon`, `12pm`, `1pm` ... `11pm` |
//! | `minute` | `min` | 0-59                                                          |
//! | `second` | `sec` | 0-59                                                          |
//!
//! Unlike `inPeriod`, which stops at the first sub-period that matches, [`Period::parse`]
//! checks the whole text, so an error is never hidden by the time of day.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A broken-down local time, the evaluator's only input (so tests need no clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// The full year, e.g. 2024.
    pub year: i32,
    /// The month, 1-12.
    pub month: u8,
    /// The day of the month, 1-31.
    pub mday: u8,
    /// The day of the week, 0 (Sunday) to 6 (Saturday).
    pub wday: u8,
    /// The day of the year, 1-366.
    pub yday: u16,
    /// The hour, 0-23.
    pub hour: u8,
    /// The minute, 0-59.
    pub minute: u8,
    /// The second, 0-59.
    pub second: u8,
}

impl LocalTime {
    /// The local time of a civil date and time of day, with its weekday and day of the year
    /// filled in; `None` if there is no such date or time of day.
    pub fn new(
        year: i32,
        month: u8,
        mday: u8,
        hour: u8,
        minute: u8,
        second: u8,
    ) -> Option<LocalTime> {
        let date = jiff::civil::Date::new(
            i16::try_from(year).ok()?,
            i8::try_from(month).ok()?,
            i8::try_from(mday).ok()?,
        )
        .ok()?;
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        Some(LocalTime {
            year,
            month,
            mday,
            wday: date.weekday().to_sunday_zero_offset().unsigned_abs(),
            yday: date.day_of_year().unsigned_abs(),
            hour,
            minute,
            second,
        })
    }

    /// The week of the month, 1-6, as `Time::Period` counts it: week 1 runs from the 1st to
    /// the first Saturday, and every Sunday after the 1st starts a new week.
    pub fn week_of_month(&self) -> u8 {
        let mday = u32::from(self.mday.max(1));
        let wday = u32::from(self.wday % 7);
        // The weekday of the 1st of the month.
        let first = (wday + 7 - (mday - 1) % 7) % 7;
        let week = (mday - 1 + first) / 7 + 1;
        u8::try_from(week).unwrap_or(u8::MAX)
    }
}

/// `t` in the time zone `tz`. Instants outside jiff's range (years -9999 to 9999) are clamped
/// to it. The caller chooses the zone (the system's is read by herd-health, not here) and the
/// instant.
pub fn in_zone(t: SystemTime, tz: &TimeZone) -> LocalTime {
    let ts = Timestamp::try_from(t).unwrap_or(if t < SystemTime::UNIX_EPOCH {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    let dt = tz.to_datetime(ts);
    LocalTime {
        year: i32::from(dt.year()),
        month: dt.month().unsigned_abs(),
        mday: dt.day().unsigned_abs(),
        wday: dt.weekday().to_sunday_zero_offset().unsigned_abs(),
        yday: dt.day_of_year().unsigned_abs(),
        hour: dt.hour().unsigned_abs(),
        minute: dt.minute().unsigned_abs(),
        second: dt.second().unsigned_abs(),
    }
}

/// Why a period's text does not parse: a short sentence naming the bad token, shown to users
/// as `file:line: key: <error>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("empty sub-period before \",\"")]
    EmptySubPeriod,
    #[error("missing scale name before \"{{\"")]
    MissingScale,
    #[error("unexpected \"}}\"")]
    UnexpectedClose,
    #[error("unknown scale \"{0}\"")]
    UnknownScale(String),
    #[error("expected \"{{\" after \"{0}\"")]
    ExpectedOpen(String),
    #[error("unclosed brace")]
    Unclosed,
    #[error("unexpected \"{{\" inside braces")]
    NestedOpen,
    #[error("unexpected \",\" inside braces (separate values with spaces)")]
    CommaInBraces,
    #[error("no values in \"{0} {{}}\"")]
    NoValues(String),
    #[error("\"{value}\" is not {noun}")]
    NotAValue { value: String, noun: &'static str },
    #[error("\"{0}\" is not a range")]
    NotARange(String),
}

/// A parsed time period; see the [module documentation](self) for the syntax.
///
/// Two periods are equal when their texts are equal up to whitespace (so `wd {Mon}` and
/// `wd {mon}` are different periods that contain the same times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The blank period.
    Always,
    /// `none`.
    Never,
    /// One or more sub-periods, ORed.
    AnyOf(Vec<SubPeriod>),
}

/// Scales, ANDed, except that scales of the same unit are ORed with each other first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubPeriod {
    scales: Vec<Scale>,
}

/// One `name {ranges}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scale {
    /// The name as written, for display.
    name: String,
    unit: Unit,
    /// Never empty.
    ranges: Vec<Range>,
}

/// One `v` or `v-v`, with its values in the unit's domain (see [`Unit::parse_value`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    /// The range as written, without whitespace, for display.
    text: String,
    lo: u32,
    hi: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Year,
    Month,
    Week,
    Yday,
    Mday,
    Wday,
    Hour,
    Minute,
    Second,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["su", "mo", "tu", "we", "th", "fr", "sa"];

impl Unit {
    /// The scale named `name`, long form or code, in any case.
    fn from_name(name: &str) -> Option<Unit> {
        Some(match name.to_ascii_lowercase().as_str() {
            "year" | "yr" => Unit::Year,
            "month" | "mo" => Unit::Month,
            "week" | "wk" => Unit::Week,
            "yday" | "yd" => Unit::Yday,
            "mday" | "md" => Unit::Mday,
            "wday" | "wd" => Unit::Wday,
            "hour" | "hr" => Unit::Hour,
            "minute" | "min" => Unit::Minute,
            "second" | "sec" => Unit::Second,
            _ => return None,
        })
    }

    /// What a value of this scale is, for errors: `"x" is not <noun>`.
    fn noun(self) -> &'static str {
        match self {
            Unit::Year => "a year",
            Unit::Month => "a month",
            Unit::Week => "a week of the month",
            Unit::Yday => "a day of the year",
            Unit::Mday => "a day of the month",
            Unit::Wday => "a day of the week",
            Unit::Hour => "an hour",
            Unit::Minute => "a minute",
            Unit::Second => "a second",
        }
    }

    /// One value of this scale. The domains: the year as written (0-99 or >= 1970), month
    /// 1-12, week 1-6, yday 1-366, mday 1-31, wday 0-6 (0 is Sunday), hour 0-23, minute and
    /// second 0-59.
    fn parse_value(self, token: &str) -> Option<u32> {
        let lower = token.to_ascii_lowercase();
        let in_range = |lo: u32, hi: u32| number(&lower).filter(|v| (lo..=hi).contains(v));
        match self {
            Unit::Year => number(&lower).filter(|&v| v <= 99 || v >= 1970),
            Unit::Month => match word(&lower) {
                Some(w) => prefix_index(w, &MONTHS, 3).map(|i| i + 1),
                None => in_range(1, 12),
            },
            Unit::Week => in_range(1, 6),
            Unit::Yday => in_range(1, 366),
            Unit::Mday => in_range(1, 31),
            Unit::Wday => match word(&lower) {
                Some(w) => prefix_index(w, &WEEKDAYS, 2),
                None => in_range(1, 7).map(|v| v - 1),
            },
            Unit::Hour => {
                if let Some(n) = lower.strip_suffix("am") {
                    number(n).filter(|v| (1..=12).contains(v)).map(|v| v % 12)
                } else if let Some(n) = lower.strip_suffix("pm") {
                    number(n)
                        .filter(|v| (1..=12).contains(v))
                        .map(|v| v % 12 + 12)
                } else if let Some(n) = lower.strip_suffix("noon") {
                    number(n).filter(|&v| v == 12)
                } else {
                    in_range(0, 23)
                }
            }
            Unit::Minute | Unit::Second => in_range(0, 59),
        }
    }

    /// `t`'s value on this scale, in the domain of [`Unit::parse_value`] (the year in full;
    /// [`Range::contains`] handles years itself).
    fn of(self, t: &LocalTime) -> u32 {
        match self {
            Unit::Year => u32::try_from(t.year).unwrap_or(0),
            Unit::Month => u32::from(t.month),
            Unit::Week => u32::from(t.week_of_month()),
            Unit::Yday => u32::from(t.yday),
            Unit::Mday => u32::from(t.mday),
            Unit::Wday => u32::from(t.wday),
            Unit::Hour => u32::from(t.hour),
            Unit::Minute => u32::from(t.minute),
            Unit::Second => u32::from(t.second),
        }
    }
}

/// A non-empty string of ASCII digits (leading zeros allowed), if it fits in a `u32`.
fn number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `Some(s)` if `s` is meant as a name (it has a letter in it), `None` if as a number.
fn word(s: &str) -> Option<&str> {
    s.bytes().any(|b| b.is_ascii_alphabetic()).then_some(s)
}

/// The index in `names` of the name that the first `significant` letters of `w` spell
/// (`w` is lowercase and must be letters only).
fn prefix_index(w: &str, names: &[&str], significant: usize) -> Option<u32> {
    if !w.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let prefix = w.get(..significant)?;
    let i = names.iter().position(|n| *n == prefix)?;
    u32::try_from(i).ok()
}

impl Range {
    fn contains(&self, unit: Unit, t: &LocalTime) -> bool {
        if unit == Unit::Year {
            // Two-digit years are in the century of the year tested, and year ranges do not
            // wrap: their ends are swapped instead.
            let century = t.year.div_euclid(100).saturating_mul(100);
            let full = |v: u32| {
                if v <= 99 {
                    i64::from(century) + i64::from(v)
                } else {
                    i64::from(v)
                }
            };
            let (a, b) = (full(self.lo), full(self.hi));
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let year = i64::from(t.year);
            return lo <= year && year <= hi;
        }
        let x = unit.of(t);
        if self.lo <= self.hi {
            self.lo <= x && x <= self.hi
        } else {
            x >= self.lo || x <= self.hi
        }
    }
}

impl Scale {
    fn contains(&self, t: &LocalTime) -> bool {
        self.ranges.iter().any(|r| r.contains(self.unit, t))
    }
}

impl SubPeriod {
    fn contains(&self, t: &LocalTime) -> bool {
        self.scales.iter().all(|scale| {
            self.scales
                .iter()
                .filter(|other| other.unit == scale.unit)
                .any(|other| other.contains(t))
        })
    }
}

impl Period {
    /// Parses Time::Period syntax; the error is a short human sentence naming the bad token
    /// (it is shown to users as `file:line: key: <error>`), e.g. "unknown scale \"wk2\"",
    /// "\"8xm\" is not an hour", "unclosed brace".
    pub fn parse(s: &str) -> Result<Period, PeriodError> {
        let src = s.trim();
        if src.is_empty() {
            return Ok(Period::always());
        }
        if src.eq_ignore_ascii_case("none") {
            return Ok(Period::never());
        }
        let mut subs = Vec::new();
        let mut scales = Vec::new();
        let mut rest = src;
        loop {
            rest = rest.trim_start();
            let Some(c) = rest.chars().next() else {
                break;
            };
            match c {
                ',' => {
                    if scales.is_empty() {
                        // Time::Period ignores trailing commas (Perl's split drops trailing
                        // empty fields), but not empty sub-periods before others.
                        if !subs.is_empty() && rest.chars().all(|c| c == ',' || c.is_whitespace()) {
                            break;
                        }
                        return Err(PeriodError::EmptySubPeriod);
                    }
                    subs.push(SubPeriod {
                        scales: std::mem::take(&mut scales),
                    });
                    rest = &rest[1..];
                }
                '{' => return Err(PeriodError::MissingScale),
                '}' => return Err(PeriodError::UnexpectedClose),
                _ => {
                    let (scale, after) = parse_scale(rest)?;
                    scales.push(scale);
                    rest = after;
                }
            }
        }
        if !scales.is_empty() {
            subs.push(SubPeriod { scales });
        }
        Ok(Period {
            kind: Kind::AnyOf(subs),
        })
    }

    /// Always true (the blank period).
    pub fn always() -> Period {
        Period { kind: Kind::Always }
    }

    /// Never true (the period `none`).
    pub fn never() -> Period {
        Period { kind: Kind::Never }
    }

    /// Whether this is the blank period, true at all times without looking at them.
    pub fn is_always(&self) -> bool {
        self.kind == Kind::Always
    }

    /// Whether `t` falls within this period.
    pub fn contains(&self, t: &LocalTime) -> bool {
        match &self.kind {
            Kind::Always => true,
            Kind::Never => false,
            Kind::AnyOf(subs) => subs.iter().any(|s| s.contains(t)),
        }
    }
}

impl Default for Period {
    /// The blank period, always true.
    fn default() -> Period {
        Period::always()
    }
}

/// Parses `name {ranges}` at the start of `s` (which starts with neither whitespace nor one
/// of `{},`); returns it and the text after its `}`.
fn parse_scale(s: &str) -> Result<(Scale, &str), PeriodError> {
    let end = s
        .find(|c: char| c.is_whitespace() || matches!(c, '{' | '}' | ','))
        .unwrap_or(s.len());
    let name = &s[..end];
    let unit = Unit::from_name(name).ok_or_else(|| PeriodError::UnknownScale(name.to_string()))?;
    let rest = s[end..].trim_start();
    let Some(body) = rest.strip_prefix('{') else {
        return Err(PeriodError::ExpectedOpen(name.to_string()));
    };
    let Some(close) = body.find(['{', '}', ',']) else {
        return Err(PeriodError::Unclosed);
    };
    match body[close..].chars().next() {
        Some('{') => return Err(PeriodError::NestedOpen),
        Some(',') => return Err(PeriodError::CommaInBraces),
        _ => {}
    }
    let ranges = range_tokens(&body[..close])
        .into_iter()
        .map(|token| parse_range(unit, token))
        .collect::<Result<Vec<_>, _>>()?;
    if ranges.is_empty() {
        return Err(PeriodError::NoValues(name.to_string()));
    }
    let scale = Scale {
        name: name.to_string(),
        unit,
        ranges,
    };
    Ok((scale, &body[close + 1..]))
}

/// The ranges of a scale's body: split at whitespace, except around `-`.
fn range_tokens(body: &str) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::new();
    for w in body.split_whitespace() {
        match tokens.last_mut() {
            Some(prev) if prev.ends_with('-') || w.starts_with('-') => prev.push_str(w),
            _ => tokens.push(w.to_string()),
        }
    }
    tokens
}

fn parse_range(unit: Unit, text: String) -> Result<Range, PeriodError> {
    let value = |v: &str| {
        unit.parse_value(v).ok_or_else(|| PeriodError::NotAValue {
            value: v.to_string(),
            noun: unit.noun(),
        })
    };
    let (lo, hi) = match text.split_once('-') {
        None => {
            let v = value(&text)?;
            (v, v)
        }
        Some((a, b)) => {
            if a.is_empty() || b.is_empty() || b.contains('-') {
                return Err(PeriodError::NotARange(text));
            }
            (value(a)?, value(b)?)
        }
    };
    Ok(Range { text, lo, hi })
}

impl fmt::Display for Period {
    /// The period's text with normalised whitespace: `""` for the blank period, `none`,
    /// or e.g. `wd {Mon-Fri} hr {9am-4pm}, wd {Sat}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Always => Ok(()),
            Kind::Never => f.write_str("none"),
            Kind::AnyOf(subs) => {
                for (i, sub) in subs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    for (j, scale) in sub.scales.iter().enumerate() {
                        if j > 0 {
                            f.write_str(" ")?;
                        }
                        write!(f, "{} {{", scale.name)?;
                        for (k, range) in scale.ranges.iter().enumerate() {
                            if k > 0 {
                                f.write_str(" ")?;
                            }
                            f.write_str(&range.text)?;
                        }
                        f.write_str("}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Period, PeriodError> {
        Period::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// A civil time; panics on a date that does not exist.
    fn at(year: i32, month: u8, mday: u8, hour: u8, minute: u8, second: u8) -> LocalTime {
        LocalTime::new(year, month, mday, hour, minute, second).unwrap()
    }

    fn p(s: &str) -> Period {
        Period::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    /// 2024-06-DD at HH:MM:SS. June 2024 begins on a Saturday: Sun 2, Mon 3, Tue 4, Wed 5,
    /// Thu 6, Fri 7, Sat 8.
    fn june(mday: u8, hour: u8, minute: u8, second: u8) -> LocalTime {
        at(2024, 6, mday, hour, minute, second)
    }

    /// Checks each `(period, time, expected)`.
    fn check(cases: &[(&str, LocalTime, bool)]) {
        for (text, t, want) in cases {
            assert_eq!(p(text).contains(t), *want, "{text:?} at {t:?}");
        }
    }

    #[test]
    fn local_time_new_fills_in_weekday_and_yday() {
        let t = at(2024, 6, 3, 9, 0, 0);
        assert_eq!((t.wday, t.yday), (1, 155));
        assert_eq!(june(1, 0, 0, 0).wday, 6);
        assert_eq!(june(2, 0, 0, 0).wday, 0);
        let t = at(2024, 12, 31, 23, 59, 59);
        assert_eq!((t.wday, t.yday), (2, 366));
        let t = at(2023, 1, 1, 0, 0, 0);
        assert_eq!((t.wday, t.yday), (0, 1));
        assert_eq!(LocalTime::new(2023, 2, 29, 0, 0, 0), None);
        assert_eq!(LocalTime::new(2024, 13, 1, 0, 0, 0), None);
        assert_eq!(LocalTime::new(2024, 1, 0, 0, 0, 0), None);
        assert_eq!(LocalTime::new(2024, 1, 1, 24, 0, 0), None);
        assert_eq!(LocalTime::new(2024, 1, 1, 0, 60, 0), None);
        assert_eq!(LocalTime::new(2024, 1, 1, 0, 0, 60), None);
        assert_eq!(LocalTime::new(100_000, 1, 1, 0, 0, 0), None);
    }

    #[test]
    fn in_zone_seoul() {
        // 2024-02-29T15:30:45Z is 2024-03-01 00:30:45 (a Friday) in Seoul, UTC+9. Without a
        // tz database (/usr/share/zoneinfo), fall back to the same fixed offset.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_220_645);
        let tz =
            TimeZone::get("Asia/Seoul").unwrap_or_else(|_| TimeZone::fixed(jiff::tz::offset(9)));
        let want = LocalTime {
            year: 2024,
            month: 3,
            mday: 1,
            wday: 5,
            yday: 61,
            hour: 0,
            minute: 30,
            second: 45,
        };
        assert_eq!(in_zone(t, &tz), want);
        assert_eq!(in_zone(t, &TimeZone::fixed(jiff::tz::offset(9))), want);
        let utc = in_zone(t, &TimeZone::UTC);
        assert_eq!(utc, at(2024, 2, 29, 15, 30, 45));
        assert_eq!(utc.wday, 4);
        assert_eq!(utc.yday, 60);
    }

    #[test]
    fn in_zone_fixed_offsets_and_year_end() {
        // 2023-12-31T23:59:59Z.
        let t = UNIX_EPOCH + Duration::from_secs(1_704_067_199);
        assert_eq!(in_zone(t, &TimeZone::UTC), at(2023, 12, 31, 23, 59, 59));
        let plus1 = TimeZone::fixed(jiff::tz::offset(1));
        assert_eq!(in_zone(t, &plus1), at(2024, 1, 1, 0, 59, 59));
        let minus5 = TimeZone::fixed(jiff::tz::offset(-5));
        assert_eq!(in_zone(t, &minus5), at(2023, 12, 31, 18, 59, 59));
        assert_eq!(in_zone(UNIX_EPOCH, &TimeZone::UTC), at(1970, 1, 1, 0, 0, 0));
        assert_eq!(
            in_zone(UNIX_EPOCH - Duration::from_secs(1), &TimeZone::UTC),
            at(1969, 12, 31, 23, 59, 59)
        );
    }

    #[test]
    fn in_zone_clamps_instants_beyond_jiff() {
        let far = Duration::from_secs(1 << 40); // about 34,800 years
        if let Some(t) = UNIX_EPOCH.checked_add(far) {
            assert_eq!(in_zone(t, &TimeZone::UTC).year, 9999);
        }
        if let Some(t) = UNIX_EPOCH.checked_sub(far) {
            assert_eq!(in_zone(t, &TimeZone::UTC).year, -9999);
        }
    }

    /// Time::Period's own loop: the 1st is in week 1 and every later Sunday starts a week.
    fn perl_week(mday: u8, wday: u8) -> u8 {
        let mut wd = vec![0u8; usize::from(mday) + 1];
        wd[usize::from(mday)] = wday;
        for i in (0..usize::from(mday)).rev() {
            wd[i] = (wd[i + 1] + 6) % 7;
        }
        let mut week = 1;
        for (i, d) in wd.iter().enumerate().skip(2) {
            if *d == 0 && i != 1 {
                week += 1;
            }
        }
        week
    }

    #[test]
    fn week_of_month_matches_time_period() {
        for first in 0..7u8 {
            for mday in 1..=31u8 {
                let wday = (first + (mday - 1) % 7) % 7;
                let t = LocalTime {
                    year: 2024,
                    month: 1,
                    mday,
                    wday,
                    yday: u16::from(mday),
                    hour: 0,
                    minute: 0,
                    second: 0,
                };
                assert_eq!(t.week_of_month(), perl_week(mday, wday), "{mday} {wday}");
            }
        }
        // June 2024 begins on a Saturday: the 1st is week 1 alone, Sunday the 2nd starts week 2.
        let weeks: Vec<u8> = [1, 2, 8, 9, 15, 16, 29, 30]
            .iter()
            .map(|&d| june(d, 0, 0, 0).week_of_month())
            .collect();
        assert_eq!(weeks, [1, 2, 2, 3, 3, 4, 5, 6]);
        // September 2024 begins on a Sunday, which does not start a second week (the 1.25 fix).
        let weeks: Vec<u8> = [1, 7, 8, 30]
            .iter()
            .map(|&d| at(2024, 9, d, 0, 0, 0).week_of_month())
            .collect();
        assert_eq!(weeks, [1, 1, 2, 5]);
    }

    #[test]
    fn week_of_month_tolerates_nonsense() {
        let mut t = june(1, 0, 0, 0);
        t.mday = 0;
        t.wday = 200;
        assert!((1..=6).contains(&t.week_of_month()));
    }

    #[test]
    fn documentation_examples() {
        let mwf_9_5 = "wd {Mon Wed Fri} hr {9am-4pm}, wd{Tue Thu} hr {9am-2pm}";
        let alternating = "wd {1 3 5 7} min {0-29}, wd {2 4 6} min {30-59}";
        check(&[
            // "Monday through Friday, 9am to 5pm".
            ("wd {Mon-Fri} hr {9am-4pm}", june(3, 9, 0, 0), true),
            ("wd {Mon-Fri} hr {9am-4pm}", june(3, 16, 59, 59), true),
            ("wd {Mon-Fri} hr {9am-4pm}", june(3, 17, 0, 0), false),
            ("wd {Mon-Fri} hr {9am-4pm}", june(3, 8, 59, 59), false),
            ("wd {Mon-Fri} hr {9am-4pm}", june(7, 12, 0, 0), true),
            ("wd {Mon-Fri} hr {9am-4pm}", june(8, 12, 0, 0), false),
            ("wd {Mon-Fri} hr {9am-4pm}", june(2, 12, 0, 0), false),
            (mwf_9_5, june(3, 16, 30, 0), true),
            (mwf_9_5, june(4, 14, 59, 59), true),
            (mwf_9_5, june(4, 15, 0, 0), false),
            (mwf_9_5, june(5, 15, 0, 0), true),
            (mwf_9_5, june(6, 15, 0, 0), false),
            (mwf_9_5, june(8, 10, 0, 0), false),
            // Alternating weeks: week 1 is June 1 alone, week 2 is June 2-8, week 3 June 9-15.
            (
                "wk {1 3 5} wd {Mon Wed Fri} hr {9am-4pm}",
                june(3, 10, 0, 0),
                false,
            ),
            (
                "wk {1 3 5} wd {Mon Wed Fri} hr {9am-4pm}",
                june(10, 10, 0, 0),
                true,
            ),
            (
                "wk {1 3 5} wd {Mon Wed Fri} hr {9am-4pm}",
                june(12, 10, 0, 0),
                true,
            ),
            (
                "wk {1 3 5} wd {Mon Wed Fri} hr {9am-4pm}",
                june(11, 10, 0, 0),
                false,
            ),
            (
                "wk {1 3 5} wd {Mon Wed Fri} hr {9am-4pm}",
                june(17, 10, 0, 0),
                false,
            ),
            (
                "wk {1 3 5} wd {Mon Wed Fri} hr {9am-4pm}",
                june(24, 10, 0, 0),
                true,
            ),
            (
                "wk {1 3 5} wd {Mon Wed Fri} hr {9am-4pm}",
                june(24, 17, 0, 0),
                false,
            ),
            // Every other half-hour, the morning, 5-second blocks.
            ("minute { 0-29 }", june(3, 7, 29, 59), true),
            ("minute { 0-29 }", june(3, 7, 30, 0), false),
            ("hour { 12am-11am }", june(3, 0, 0, 0), true),
            ("hour { 12am-11am }", june(3, 11, 59, 59), true),
            ("hour { 12am-11am }", june(3, 12, 0, 0), false),
            ("hour { 12am-11am }", june(3, 23, 0, 0), false),
            (
                "sec {0-4 10-14 20-24 30-34 40-44 50-54}",
                june(3, 0, 0, 4),
                true,
            ),
            (
                "sec {0-4 10-14 20-24 30-34 40-44 50-54}",
                june(3, 0, 0, 5),
                false,
            ),
            (
                "sec {0-4 10-14 20-24 30-34 40-44 50-54}",
                june(3, 0, 0, 54),
                true,
            ),
            (
                "sec {0-4 10-14 20-24 30-34 40-44 50-54}",
                june(3, 0, 0, 59),
                false,
            ),
            // First half-hour on Sun, Tue, Thu, Sat; the second on Mon, Wed, Fri.
            (alternating, june(2, 5, 10, 0), true),
            (alternating, june(2, 5, 40, 0), false),
            (alternating, june(3, 5, 10, 0), false),
            (alternating, june(3, 5, 40, 0), true),
            (alternating, june(8, 5, 29, 59), true),
        ]);
    }

    #[test]
    fn winter_spellings_agree() {
        let spellings = [
            "mo {Nov-Feb}",
            "mo {Jan-Feb Nov-Dec}",
            "mo {jan feb nov dec}",
            "mo {Jan Feb}, mo {Nov Dec}",
            "mo {Jan Feb} mo {Nov Dec}",
            "month {11-2}",
            "MONTH {november - february}",
        ];
        for month in 1..=12u8 {
            let t = at(2023, month, 15, 12, 0, 0);
            let winter = matches!(month, 11 | 12 | 1 | 2);
            for s in spellings {
                assert_eq!(p(s).contains(&t), winter, "{s:?} in month {month}");
            }
        }
    }

    #[test]
    fn mon_config_examples() {
        let weekend_or_office = "hr {9am-5pm}, wd {Sat Sun}";
        check(&[
            ("wd {Sun-Sat}", june(2, 0, 0, 0), true),
            ("wd {Sun-Sat}", june(8, 23, 59, 59), true),
            ("wd {Mon-Fri} hr {7am-10pm}", june(3, 7, 0, 0), true),
            ("wd {Mon-Fri} hr {7am-10pm}", june(3, 22, 59, 59), true),
            ("wd {Mon-Fri} hr {7am-10pm}", june(3, 23, 0, 0), false),
            ("wd {Mon-Fri} hr {7am-10pm}", june(3, 6, 59, 59), false),
            ("wd {Mon-Fri} hr {7am-10pm}", june(8, 12, 0, 0), false),
            (weekend_or_office, june(4, 3, 0, 0), false),
            (weekend_or_office, june(4, 9, 0, 0), true),
            (weekend_or_office, june(8, 3, 0, 0), true),
            (weekend_or_office, june(2, 23, 0, 0), true),
        ]);
    }

    #[test]
    fn range_ends_are_whole_units() {
        check(&[
            // 5pm is 17:00:00 through 17:59:59.
            ("hr {9am-5pm}", june(3, 17, 59, 59), true),
            ("hr {9am-5pm}", june(3, 18, 0, 0), false),
            ("hr {9am-5pm}", june(3, 9, 0, 0), true),
            ("hr {9}", june(3, 9, 59, 59), true),
            ("hr {9}", june(3, 10, 0, 0), false),
            ("md {3-5}", june(5, 23, 59, 59), true),
            ("md {3-5}", june(6, 0, 0, 0), false),
            ("min {10-20}", june(3, 0, 20, 59), true),
            ("min {10-20}", june(3, 0, 21, 0), false),
        ]);
    }

    #[test]
    fn ranges_wrap_around() {
        for (wday, want) in [
            (0, true),
            (1, true),
            (2, false),
            (3, false),
            (4, false),
            (5, true),
            (6, true),
        ] {
            let t = june(2 + wday, 12, 0, 0);
            assert_eq!(t.wday, wday);
            assert_eq!(p("wd {Fri-Mon}").contains(&t), want, "{wday}");
            assert_eq!(p("wd {6-2}").contains(&t), want, "{wday}");
        }
        for hour in 0..24u8 {
            let want = matches!(hour, 22 | 23 | 0 | 1 | 2);
            assert_eq!(p("hr {10pm-2am}").contains(&june(3, hour, 30, 0)), want);
            assert_eq!(p("hr {22-2}").contains(&june(3, hour, 30, 0)), want);
        }
        check(&[
            ("min {20-10}", june(3, 0, 25, 0), true),
            ("min {20-10}", june(3, 0, 5, 0), true),
            ("min {20-10}", june(3, 0, 15, 0), false),
            ("sec {50-9}", june(3, 0, 0, 55), true),
            ("sec {50-9}", june(3, 0, 0, 9), true),
            ("sec {50-9}", june(3, 0, 0, 10), false),
            ("mo {9-2}", at(2024, 9, 1, 0, 0, 0), true),
            ("mo {9-2}", at(2024, 2, 29, 0, 0, 0), true),
            ("mo {Sep-Feb}", at(2024, 3, 1, 0, 0, 0), false),
            ("mo {2-9}", at(2024, 3, 1, 0, 0, 0), true),
            ("mo {2-9}", at(2024, 10, 1, 0, 0, 0), false),
            ("md {31-1}", at(2024, 1, 31, 0, 0, 0), true),
            ("md {31-1}", at(2024, 2, 1, 0, 0, 0), true),
            ("md {31-1}", at(2024, 2, 2, 0, 0, 0), false),
            ("md {25-5}", at(2024, 2, 29, 0, 0, 0), true),
            ("yd {366-1}", at(2024, 12, 31, 0, 0, 0), true),
            ("yd {366-1}", at(2024, 1, 1, 0, 0, 0), true),
            ("yd {366-1}", at(2023, 12, 31, 0, 0, 0), false),
            ("yd {360-10}", at(2023, 12, 31, 0, 0, 0), true),
            ("wk {6-1}", june(1, 0, 0, 0), true),
            ("wk {6-1}", june(30, 0, 0, 0), true),
            ("wk {6-1}", june(29, 0, 0, 0), false),
            ("wk {5-2}", june(29, 0, 0, 0), true),
        ]);
    }

    #[test]
    fn years_do_not_wrap() {
        check(&[
            // Two-digit years are in the century of the time tested.
            ("yr {24}", at(2024, 1, 1, 0, 0, 0), true),
            ("yr {24}", at(1924, 1, 1, 0, 0, 0), true),
            ("yr {24}", at(2025, 1, 1, 0, 0, 0), false),
            ("year {0}", at(2000, 6, 1, 0, 0, 0), true),
            ("year {00}", at(2000, 6, 1, 0, 0, 0), true),
            ("yr {2024}", at(2024, 1, 1, 0, 0, 0), true),
            ("yr {2024}", at(1924, 1, 1, 0, 0, 0), false),
            // 99-1972 in the 21st century is 1972-2099.
            ("yr {99-1972}", at(1971, 1, 1, 0, 0, 0), false),
            ("yr {99-1972}", at(1972, 1, 1, 0, 0, 0), true),
            ("yr {99-1972}", at(2024, 1, 1, 0, 0, 0), true),
            ("yr {99-1972}", at(2099, 12, 31, 0, 0, 0), true),
            // Reversed ends are swapped, not wrapped.
            ("yr {2030-2020}", at(2025, 1, 1, 0, 0, 0), true),
            ("yr {2030-2020}", at(2019, 1, 1, 0, 0, 0), false),
            ("yr {2030-2020}", at(2031, 1, 1, 0, 0, 0), false),
            ("yr {30-20}", at(2020, 1, 1, 0, 0, 0), true),
            ("yr {30-20}", at(2031, 1, 1, 0, 0, 0), false),
            ("yr {1970-9999}", at(2024, 1, 1, 0, 0, 0), true),
            ("yr {1970}", at(-44, 3, 15, 0, 0, 0), false),
        ]);
    }

    #[test]
    fn every_scale_in_both_forms() {
        let t = at(2024, 6, 12, 14, 35, 50); // Wednesday, week 3, day 164
        assert_eq!((t.wday, t.yday, t.week_of_month()), (3, 164, 3));
        let cases = [
            ("year", "yr", "2024", "2023"),
            ("month", "mo", "6", "7"),
            ("week", "wk", "3", "2"),
            ("yday", "yd", "164", "165"),
            ("mday", "md", "12", "13"),
            ("wday", "wd", "4", "5"),
            ("hour", "hr", "14", "15"),
            ("minute", "min", "35", "36"),
            ("second", "sec", "50", "51"),
        ];
        for (long, code, yes, no) in cases {
            for name in [long, code, &long.to_uppercase(), &code.to_uppercase()] {
                assert!(p(&format!("{name} {{{yes}}}")).contains(&t), "{name} {yes}");
                assert!(!p(&format!("{name} {{{no}}}")).contains(&t), "{name} {no}");
            }
        }
    }

    #[test]
    fn value_spellings() {
        let sunday = june(2, 0, 0, 0);
        for s in [
            "su", "sun", "sunday", "SUNDAY", "Sun", "sU", "1", "01", "sunburn",
        ] {
            assert!(p(&format!("wd {{{s}}}")).contains(&sunday), "{s}");
        }
        let saturday = june(8, 0, 0, 0);
        for s in ["sa", "sat", "saturday", "7"] {
            assert!(p(&format!("wd {{{s}}}")).contains(&saturday), "{s}");
        }
        let days = [
            ["su", "sun", "sunday"],
            ["mo", "mon", "monday"],
            ["tu", "tue", "tuesday"],
            ["we", "wed", "wednesday"],
            ["th", "thu", "thursday"],
            ["fr", "fri", "friday"],
            ["sa", "sat", "saturday"],
        ];
        for (wday, names) in days.iter().enumerate() {
            let t = june(2 + u8::try_from(wday).unwrap(), 0, 0, 0);
            for name in names {
                assert!(p(&format!("wd {{{name}}}")).contains(&t), "{name}");
                assert!(p(&format!("wd {{{}}}", wday + 1)).contains(&t));
            }
        }
        let months = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        let long = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        for (i, (short, long)) in months.iter().zip(long).enumerate() {
            let month = u8::try_from(i + 1).unwrap();
            let t = at(2023, month, 1, 0, 0, 0);
            for s in [short.to_string(), long.to_string(), month.to_string()] {
                let period = p(&format!("mo {{{s}}}"));
                assert!(period.contains(&t), "{s}");
                assert!(
                    !period.contains(&at(2023, month % 12 + 1, 1, 0, 0, 0)),
                    "{s}"
                );
            }
        }
        assert!(p("mo {Sept}").contains(&at(2023, 9, 1, 0, 0, 0)));
        let hours = [
            ("12am", 0),
            ("1am", 1),
            ("09am", 9),
            ("11am", 11),
            ("12noon", 12),
            ("12NOON", 12),
            ("12pm", 12),
            ("12PM", 12),
            ("1pm", 13),
            ("4pm", 16),
            ("11pm", 23),
            ("0", 0),
            ("00", 0),
            ("07", 7),
            ("13", 13),
            ("23", 23),
        ];
        for (s, hour) in hours {
            for h in 0..24u8 {
                let want = h == hour;
                assert_eq!(
                    p(&format!("hr {{{s}}}")).contains(&june(3, h, 0, 0)),
                    want,
                    "{s}"
                );
            }
        }
        assert!(p("min {00-05}").contains(&june(3, 0, 5, 0)));
        assert!(p("md {01}").contains(&june(1, 0, 0, 0)));
    }

    #[test]
    fn blank_and_none() {
        let t = june(3, 12, 0, 0);
        for s in ["", " ", "\t\n "] {
            assert!(p(s).contains(&t));
            assert!(p(s).is_always());
            assert_eq!(p(s), Period::always());
        }
        for s in ["none", "NONE", " None "] {
            assert!(!p(s).contains(&t));
            assert_eq!(p(s), Period::never());
            assert!(!p(s).is_always());
        }
        assert!(Period::always().contains(&t));
        assert!(!Period::never().contains(&t));
        assert_eq!(Period::default(), Period::always());
        assert!(!p("wd {Sun-Sat}").is_always());
    }

    #[test]
    fn whitespace_and_case_do_not_matter() {
        let t = june(3, 10, 0, 0);
        let u = june(3, 18, 0, 0);
        for s in [
            "wd {Mon-Fri} hr {9am-4pm}",
            "WD {MON-FRI} HR {9AM-4PM}",
            "wd{mon-fri}hr{9am-4pm}",
            "  wd  {  mon - fri  }\thr\n{ 9am -4pm }  ",
            "wday {monday- friday} hour {09 -16}",
        ] {
            assert!(p(s).contains(&t), "{s:?}");
            assert!(!p(s).contains(&u), "{s:?}");
        }
        let or = "wd {Sat}   ,hr {10am}";
        assert!(p(or).contains(&june(8, 3, 0, 0)));
        assert!(p(or).contains(&june(3, 10, 0, 0)));
        assert!(!p(or).contains(&june(3, 11, 0, 0)));
    }

    #[test]
    fn repeated_scales_extend_and_different_scales_intersect() {
        check(&[
            ("wd {Mon} wd {Wed}", june(3, 0, 0, 0), true),
            ("wd {Mon} wd {Wed}", june(5, 0, 0, 0), true),
            ("wd {Mon} wd {Wed}", june(4, 0, 0, 0), false),
            ("wd {Mon} hr {1} wd {Wed}", june(5, 1, 0, 0), true),
            ("wd {Mon} hr {1} wd {Wed}", june(5, 2, 0, 0), false),
            ("wd {Mon} hr {1} hr {3}", june(3, 3, 0, 0), true),
            ("wd {Mon} hr {1} hr {3}", june(4, 3, 0, 0), false),
            ("md {3} mo {6} yr {2024}", june(3, 0, 0, 0), true),
            ("md {3} mo {6} yr {2023}", june(3, 0, 0, 0), false),
            ("md {3} mo {7} yr {2024}", june(3, 0, 0, 0), false),
        ]);
    }

    #[test]
    fn trailing_commas_are_ignored() {
        // Perl's split drops trailing empty fields, so Time::Period accepts these.
        for s in ["wd {Mon},", "wd {Mon} ,", "wd {Mon},, ,"] {
            assert_eq!(p(s), p("wd {Mon}"), "{s:?}");
        }
    }

    #[test]
    fn bad_input_errors() {
        let cases = [
            ("wk2 {1}", "unknown scale \"wk2\""),
            ("day {1}", "unknown scale \"day\""),
            ("y {1}", "unknown scale \"y\""),
            ("minutes {1}", "unknown scale \"minutes\""),
            ("wd {Mon} x {1}", "unknown scale \"x\""),
            ("none, wd {Mon}", "unknown scale \"none\""),
            ("hr {8xm}", "\"8xm\" is not an hour"),
            ("hr {24}", "\"24\" is not an hour"),
            ("hr {9am-25}", "\"25\" is not an hour"),
            ("hr {noon}", "\"noon\" is not an hour"),
            ("hr {11noon}", "\"11noon\" is not an hour"),
            ("hr {13am}", "\"13am\" is not an hour"),
            ("hr {0am}", "\"0am\" is not an hour"),
            ("hr {0pm}", "\"0pm\" is not an hour"),
            ("hr {9 am}", "\"am\" is not an hour"),
            ("hr {-1}", "\"-1\" is not a range"),
            ("hr {5-}", "\"5-\" is not a range"),
            ("hr {5 - }", "\"5-\" is not a range"),
            ("hr {1--2}", "\"1--2\" is not a range"),
            ("mo {jan-feb-mar}", "\"jan-feb-mar\" is not a range"),
            ("mo {0}", "\"0\" is not a month"),
            ("mo {13}", "\"13\" is not a month"),
            ("mo {ja}", "\"ja\" is not a month"),
            ("mo {foo}", "\"foo\" is not a month"),
            ("mo {Jan1}", "\"Jan1\" is not a month"),
            ("wd {0}", "\"0\" is not a day of the week"),
            ("wd {8}", "\"8\" is not a day of the week"),
            ("wd {m}", "\"m\" is not a day of the week"),
            ("wd {xx}", "\"xx\" is not a day of the week"),
            ("wd {mo1}", "\"mo1\" is not a day of the week"),
            ("wd {mon!}", "\"mon!\" is not a day of the week"),
            ("wd {Mon-Fx}", "\"Fx\" is not a day of the week"),
            ("wk {0}", "\"0\" is not a week of the month"),
            ("wk {7}", "\"7\" is not a week of the month"),
            ("yd {0}", "\"0\" is not a day of the year"),
            ("yd {367}", "\"367\" is not a day of the year"),
            ("md {0}", "\"0\" is not a day of the month"),
            ("md {32}", "\"32\" is not a day of the month"),
            ("min {60}", "\"60\" is not a minute"),
            ("sec {60}", "\"60\" is not a second"),
            ("sec {99999999999}", "\"99999999999\" is not a second"),
            ("yr {100}", "\"100\" is not a year"),
            ("yr {1969}", "\"1969\" is not a year"),
            ("yr {x}", "\"x\" is not a year"),
            ("wd {Mon", "unclosed brace"),
            ("wd {Mon} hr {1", "unclosed brace"),
            ("wd {Mon}}", "unexpected \"}\""),
            ("}", "unexpected \"}\""),
            ("wd {{Mon}}", "unexpected \"{\" inside braces"),
            ("wd {Mon {Tue}}", "unexpected \"{\" inside braces"),
            (
                "wd {Mon, Tue}",
                "unexpected \",\" inside braces (separate values with spaces)",
            ),
            ("{Mon}", "missing scale name before \"{\""),
            ("wd {Mon}{Tue}", "missing scale name before \"{\""),
            ("wd Mon", "expected \"{\" after \"wd\""),
            ("wd {Mon} hr", "expected \"{\" after \"hr\""),
            ("wd {}", "no values in \"wd {}\""),
            ("hour {  }", "no values in \"hour {}\""),
            (",", "empty sub-period before \",\""),
            (" , ", "empty sub-period before \",\""),
            (", wd {Mon}", "empty sub-period before \",\""),
            ("wd {Mon},, hr {1}", "empty sub-period before \",\""),
        ];
        for (input, want) in cases {
            assert_eq!(
                Period::parse(input).map_err(|e| e.to_string()),
                Err(want.to_string()),
                "{input:?}"
            );
            assert_eq!(
                input.parse::<Period>().map_err(|e| e.to_string()),
                Err(want.to_string()),
                "{input:?}"
            );
        }
    }

    #[test]
    fn later_sub_periods_are_checked_too() {
        // inPeriod would say "yes" here on any day without looking past the first comma.
        assert_eq!(
            Period::parse("wd {Sun-Sat}, hr {25}").map_err(|e| e.to_string()),
            Err("\"25\" is not an hour".to_string())
        );
    }

    #[test]
    fn display_normalises_whitespace_and_round_trips() {
        let cases = [
            ("", ""),
            ("   ", ""),
            ("none", "none"),
            (" NONE ", "none"),
            ("wd {Sun-Sat}", "wd {Sun-Sat}"),
            ("wd{Mon-Fri}hr{7am-10pm}", "wd {Mon-Fri} hr {7am-10pm}"),
            ("hr {9am-5pm},wd {Sat Sun}", "hr {9am-5pm}, wd {Sat Sun}"),
            (
                "  WD  { mon  - fri   tue }\t,\n hour{ 9am -4pm 10pm- 2am }  ",
                "WD {mon-fri tue}, hour {9am-4pm 10pm-2am}",
            ),
            ("minute { 0-29 }", "minute {0-29}"),
            ("wd {Mon},", "wd {Mon}"),
            (
                "wk {1 3 5} wd {Mon Wed Fri} hr {9am-4pm}",
                "wk {1 3 5} wd {Mon Wed Fri} hr {9am-4pm}",
            ),
        ];
        for (input, want) in cases {
            let period = p(input);
            assert_eq!(period.to_string(), want, "{input:?}");
            assert_eq!(p(&period.to_string()), period, "{input:?}");
        }
        assert_eq!(Period::always().to_string(), "");
        assert_eq!(Period::never().to_string(), "none");
        assert_eq!("wd {Mon}".parse::<Period>(), Ok(p("wd  {Mon}")));
    }

    /// Any instant from 1970 to 2100, in UTC.
    fn any_time() -> impl Strategy<Value = LocalTime> {
        (0u64..4_102_444_800)
            .prop_map(|s| in_zone(UNIX_EPOCH + Duration::from_secs(s), &TimeZone::UTC))
    }

    /// `(name, lowest, highest)` of each scale but the year.
    const SCALES: [(&str, u32, u32); 8] = [
        ("mo", 1, 12),
        ("wk", 1, 6),
        ("yd", 1, 366),
        ("md", 1, 31),
        ("wd", 1, 7),
        ("hr", 0, 23),
        ("min", 0, 59),
        ("sec", 0, 59),
    ];

    /// One scale of random ranges: `(scale index, text)`.
    fn any_scale() -> impl Strategy<Value = (usize, String)> {
        (0..SCALES.len()).prop_flat_map(|i| {
            let (name, lo, hi) = SCALES[i];
            let value = lo..=hi;
            let range = (value.clone(), proptest::option::of(value)).prop_map(|(a, b)| match b {
                Some(b) => format!("{a}-{b}"),
                None => a.to_string(),
            });
            proptest::collection::vec(range, 1..4)
                .prop_map(move |ranges| (i, format!("{name} {{{}}}", ranges.join(" "))))
        })
    }

    fn any_sub_period() -> impl Strategy<Value = String> {
        proptest::collection::vec(any_scale(), 1..4).prop_map(|scales| {
            let texts: Vec<String> = scales.into_iter().map(|(_, s)| s).collect();
            texts.join(" ")
        })
    }

    fn any_period() -> impl Strategy<Value = String> {
        proptest::collection::vec(any_sub_period(), 1..4).prop_map(|subs| subs.join(", "))
    }

    proptest! {
        #[test]
        fn full_ranges_and_blank_contain_everything(t in any_time()) {
            for s in [
                "", "wd {Sun-Sat}", "wd {1-7}", "mo {1-12}", "wk {1-6}", "yd {1-366}",
                "md {1-31}", "hr {0-23}", "hr {12am-11pm}", "min {0-59}", "sec {0-59}",
                "yr {1970-2100}", "yr {0-99}", "hr {5-4}", "wd {Mon-Sun}",
            ] {
                prop_assert!(p(s).contains(&t), "{s:?}");
            }
            prop_assert!(!p("none").contains(&t));
        }

        #[test]
        fn comma_is_or(t in any_time(), a in any_period(), b in any_period()) {
            let both = p(&format!("{a}, {b}"));
            prop_assert_eq!(both.contains(&t), p(&a).contains(&t) || p(&b).contains(&t));
        }

        #[test]
        fn juxtaposition_is_and_across_scales_or_within(
            t in any_time(),
            (i, a) in any_scale(),
            (j, b) in any_scale(),
        ) {
            let (ca, cb) = (p(&a).contains(&t), p(&b).contains(&t));
            let want = if i == j { ca || cb } else { ca && cb };
            prop_assert_eq!(p(&format!("{a} {b}")).contains(&t), want);
            prop_assert_eq!(p(&format!("{a}{b}")).contains(&t), want);
        }

        #[test]
        fn wrapped_range_is_the_complement_of_the_gap(
            t in any_time(),
            (i, a, b) in (0..SCALES.len())
                .prop_flat_map(|i| (Just(i), SCALES[i].1..=SCALES[i].2 - 2))
                .prop_flat_map(|(i, b)| (Just(i), b + 2..=SCALES[i].2, Just(b))),
        ) {
            // a > b + 1, so the gap b+1 ..= a-1 is not empty.
            let name = SCALES[i].0;
            let wrapped = p(&format!("{name} {{{a}-{b}}}"));
            let gap = p(&format!("{name} {{{}-{}}}", b + 1, a - 1));
            prop_assert_eq!(wrapped.contains(&t), !gap.contains(&t));
            let both = p(&format!("{name} {{{a}-{b}}}, {name} {{{b}-{a}}}"));
            prop_assert!(both.contains(&t));
        }

        #[test]
        fn display_round_trips(s in any_period()) {
            let period = p(&s);
            prop_assert_eq!(period.to_string(), s.clone());
            prop_assert_eq!(p(&period.to_string()), period);
        }

        #[test]
        fn week_of_month_is_perls(t in any_time()) {
            prop_assert_eq!(t.week_of_month(), perl_week(t.mday, t.wday));
        }

        #[test]
        fn parse_never_panics(s in "[a-z0-9{}, -]{0,40}") {
            if let Ok(period) = Period::parse(&s) {
                prop_assert_eq!(p(&period.to_string()), period);
            }
        }
    }
}
