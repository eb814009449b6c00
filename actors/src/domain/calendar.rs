//! Office-hours calendars, and the clock that petition deadlines run on.
//!
//! A deadline is a duration of *counted* time after an instant ("answer within half a day").
//! With [`DeadlineClock::WallClock`] all time counts; with [`DeadlineClock::OfficeHours`] only the
//! time when the community office is open counts, as an [`OfficeCalendar`] sets out: opening
//! intervals per weekday, holidays, and make-up workdays (调休), all in the community's local time,
//! a fixed offset from UTC (UTC+8 in China, which has no daylight saving).
//!
//! Instants are milliseconds since the Unix epoch (UTC). Opening intervals are half-open: with
//! hours 08:30–12:00 the office is open at 08:30:00.000 and closed at 12:00:00.000.
//!
//! The arithmetic walks the calendar a day at a time and jumps whole weeks between holidays and
//! make-up workdays, so its cost grows with the number of days and special dates crossed, never
//! with the number of minutes; [`DeadlineClock::elapsed`] costs only the special dates in its
//! range. Results beyond the range of `i64` saturate at `i64::MAX` (or `i64::MIN` going
//! backwards), and so does a deadline that can never be met because the calendar has no open time
//! left (possible only with a calendar that fails [`OfficeCalendar::validate`]).
//!
//! The date lists are parsed again on every call (a few microseconds for a year of holidays);
//! [`OfficeCalendar::validate`] checks them once up front. Given an unchecked calendar the
//! functions still terminate and stay consistent with each other: they clamp intervals into the
//! day, merge overlapping ones, and ignore dates that do not parse.

use serde::{Deserialize, Serialize};

/// Milliseconds in a minute.
const MINUTE_MS: i64 = 60_000;
/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// Minutes in a day: the largest `end_minute`.
const DAY_MINUTES: u16 = 1440;
/// The names of the weekdays, as used in error messages.
const WEEKDAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// One opening interval within a day, local time, minutes after midnight, start < end <= 1440.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    /// Opening, in minutes after local midnight (510 is 08:30).
    pub start_minute: u16,
    /// Closing, in minutes after local midnight (1440 is the next midnight); closed from then on.
    pub end_minute: u16,
}

/// Office hours: intervals per weekday (Monday = index 0 .. Sunday = 6), holidays (local dates
/// "YYYY-MM-DD" on which the office is closed although the weekday has hours), and make-up
/// workdays (调休: local dates on which the office opens although the weekday has no hours; they use
/// `makeup_hours`, default the Monday hours).
///
/// Fields missing from a configuration file take their values from [`OfficeCalendar::typical`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfficeCalendar {
    /// Local time's offset from UTC in minutes (480 in China: UTC+8, no daylight saving).
    pub utc_offset_minutes: i32,
    /// Opening intervals of each weekday, Monday first; an empty list closes that weekday.
    pub weekdays: [Vec<Interval>; 7],
    /// Local dates ("YYYY-MM-DD") on which the office is closed all day.
    pub holidays: Vec<String>,
    /// Local dates ("YYYY-MM-DD") on which the office opens with `makeup_hours` (调休).
    pub makeup_workdays: Vec<String>,
    /// Opening intervals of make-up workdays; empty means the Monday hours.
    pub makeup_hours: Vec<Interval>,
}

/// How deadline time runs: on the wall clock, or only in office hours.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per policy and kept; callers construct OfficeHours(calendar) directly"
)]
pub enum DeadlineClock {
    /// All time counts.
    #[default]
    WallClock,
    /// Only the time when the office is open counts.
    OfficeHours(OfficeCalendar),
}

/// The first problem [`OfficeCalendar::validate`] found in a calendar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// The UTC offset is a whole day or more.
    #[error("utc_offset_minutes {0} is not between -1439 and 1439")]
    Offset(i32),
    /// An interval is empty or reversed, or ends after midnight.
    #[error(
        "{hours} interval {index} ({start_minute}..{end_minute}) needs start_minute < end_minute <= 1440"
    )]
    Interval {
        /// Whose hours: a weekday ("monday") or "makeup_hours".
        hours: &'static str,
        /// The interval's position in its list, from 0.
        index: usize,
        /// Its start.
        start_minute: u16,
        /// Its end.
        end_minute: u16,
    },
    /// An interval starts before the previous one of the same list ends.
    #[error(
        "{hours} interval {index} starts at minute {start_minute}, before the previous interval ends at minute {previous_end}; intervals must be in order and must not overlap"
    )]
    Overlap {
        /// Whose hours: a weekday ("monday") or "makeup_hours".
        hours: &'static str,
        /// The interval's position in its list, from 0.
        index: usize,
        /// Its start.
        start_minute: u16,
        /// The end of the interval before it.
        previous_end: u16,
    },
    /// A date is not a valid "YYYY-MM-DD".
    #[error("{list} entry {value:?} is not a date written YYYY-MM-DD")]
    Date {
        /// Which list: "holidays" or "makeup_workdays".
        list: &'static str,
        /// The entry.
        value: String,
    },
    /// A date is listed both as a holiday and as a make-up workday.
    #[error("{0} is both a holiday and a make-up workday")]
    HolidayAndWorkday(String),
    /// No weekday has opening hours, so deadlines could never pass.
    #[error("the calendar has no opening hours on any weekday")]
    NeverOpen,
}

/// An interval from hours and minutes.
const fn hm(start_hour: u16, start_minute: u16, end_hour: u16, end_minute: u16) -> Interval {
    Interval {
        start_minute: start_hour * 60 + start_minute,
        end_minute: end_hour * 60 + end_minute,
    }
}

impl Default for OfficeCalendar {
    fn default() -> Self {
        Self::typical()
    }
}

impl OfficeCalendar {
    /// A typical Chinese community office: Mon–Fri 08:30–12:00 and 13:30–17:30, UTC+8.
    pub fn typical() -> Self {
        let day = || vec![hm(8, 30, 12, 0), hm(13, 30, 17, 30)];
        OfficeCalendar {
            utc_offset_minutes: 480,
            weekdays: [day(), day(), day(), day(), day(), Vec::new(), Vec::new()],
            holidays: Vec::new(),
            makeup_workdays: Vec::new(),
            makeup_hours: Vec::new(),
        }
    }

    /// Checks the calendar (offset under a day; intervals ordered, non-overlapping, in range;
    /// dates parse; no date both a holiday and a make-up workday; at least one open interval in a
    /// week) and returns the first problem.
    pub fn validate(&self) -> Result<(), CalendarError> {
        if self.utc_offset_minutes.unsigned_abs() >= u32::from(DAY_MINUTES) {
            return Err(CalendarError::Offset(self.utc_offset_minutes));
        }
        for (hours, intervals) in WEEKDAY_NAMES.iter().zip(&self.weekdays) {
            check_intervals(hours, intervals)?;
        }
        check_intervals("makeup_hours", &self.makeup_hours)?;
        let mut holidays = parse_dates("holidays", &self.holidays)?;
        holidays.sort_unstable();
        let workdays = parse_dates("makeup_workdays", &self.makeup_workdays)?;
        for (day, text) in workdays.iter().zip(&self.makeup_workdays) {
            if holidays.binary_search(day).is_ok() {
                return Err(CalendarError::HolidayAndWorkday(text.clone()));
            }
        }
        if self.weekdays.iter().all(Vec::is_empty) {
            return Err(CalendarError::NeverOpen);
        }
        Ok(())
    }

    /// Whether the office is open at this instant.
    pub fn is_open(&self, at_ms: i64) -> bool {
        Schedule::new(self).is_open(at_ms)
    }
}

impl DeadlineClock {
    /// The instant when `duration_ms` of counted time has passed after `start_ms`.
    ///
    /// On the wall clock this is plain (saturating) addition. In office hours only open time
    /// counts: starting outside hours, the clock starts at the next opening, and the result is the
    /// instant within an open interval when the counted time is used up; used up exactly at a
    /// closing, the result is that closing, not the next opening. A zero duration gives `start_ms`
    /// if the office is open then, else the next opening. A negative duration counts backwards
    /// like [`DeadlineClock::sub`]. Saturates at `i64::MAX`.
    pub fn add(&self, start_ms: i64, duration_ms: i64) -> i64 {
        match self {
            DeadlineClock::WallClock => start_ms.saturating_add(duration_ms),
            DeadlineClock::OfficeHours(calendar) => {
                let schedule = Schedule::new(calendar);
                if duration_ms >= 0 {
                    schedule.forward(start_ms, i128::from(duration_ms))
                } else {
                    schedule.backward(start_ms, -i128::from(duration_ms))
                }
            }
        }
    }

    /// The inverse for a step before a deadline: the instant `duration_ms` of counted time before
    /// `end_ms` (used for "warn one hour before the deadline").
    ///
    /// On the wall clock this is plain (saturating) subtraction. In office hours it mirrors
    /// [`DeadlineClock::add`]: counting back from `end_ms` (from the previous closing when the
    /// office is closed then), the result is the instant within an open interval when the counted
    /// time is used up; used up exactly at an opening, the result is that opening, not the
    /// previous closing. A zero duration gives `end_ms` if the office is open then or has just
    /// closed at `end_ms`, else the previous closing. A negative duration counts forwards like
    /// [`DeadlineClock::add`]. Saturates at `i64::MIN`.
    ///
    /// For a positive duration `d`, `sub(add(s, d), d) == add(s, 0)`: the first open instant at
    /// or after `s`.
    pub fn sub(&self, end_ms: i64, duration_ms: i64) -> i64 {
        match self {
            DeadlineClock::WallClock => end_ms.saturating_sub(duration_ms),
            DeadlineClock::OfficeHours(calendar) => {
                let schedule = Schedule::new(calendar);
                if duration_ms >= 0 {
                    schedule.backward(end_ms, i128::from(duration_ms))
                } else {
                    schedule.forward(end_ms, -i128::from(duration_ms))
                }
            }
        }
    }

    /// Counted time between two instants (0 if end <= start): wall clock difference, or open time
    /// only. Saturates at `i64::MAX`.
    pub fn elapsed(&self, start_ms: i64, end_ms: i64) -> i64 {
        if end_ms <= start_ms {
            return 0;
        }
        match self {
            DeadlineClock::WallClock => end_ms.saturating_sub(start_ms),
            DeadlineClock::OfficeHours(calendar) => {
                clamp(Schedule::new(calendar).elapsed(start_ms, end_ms))
            }
        }
    }
}

/// Checks one list of intervals: each in range, in order, not overlapping.
fn check_intervals(hours: &'static str, intervals: &[Interval]) -> Result<(), CalendarError> {
    let mut previous_end = 0;
    for (index, interval) in intervals.iter().enumerate() {
        let Interval {
            start_minute,
            end_minute,
        } = *interval;
        if start_minute >= end_minute || end_minute > DAY_MINUTES {
            return Err(CalendarError::Interval {
                hours,
                index,
                start_minute,
                end_minute,
            });
        }
        if start_minute < previous_end {
            return Err(CalendarError::Overlap {
                hours,
                index,
                start_minute,
                previous_end,
            });
        }
        previous_end = end_minute;
    }
    Ok(())
}

/// Parses a list of dates into day numbers, in list order.
fn parse_dates(list: &'static str, dates: &[String]) -> Result<Vec<i64>, CalendarError> {
    dates
        .iter()
        .map(|value| {
            parse_date(value).ok_or_else(|| CalendarError::Date {
                list,
                value: value.clone(),
            })
        })
        .collect()
}

/// The day number (days since 1970-01-01) of a date written exactly "YYYY-MM-DD".
fn parse_date(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let year = number(&bytes[0..4])?;
    let month = number(&bytes[5..7])?;
    let day = number(&bytes[8..10])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(i64::from(year), month, day))
}

/// The number of days in a month of the proleptic Gregorian calendar.
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        // 28 or 29: the days from February 1 to March 1.
        2 => {
            (days_from_civil(i64::from(year), 3, 1) - days_from_civil(i64::from(year), 2, 1)) as u32
        }
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The weekday of a day number, Monday = 0 (1970-01-01 was a Thursday).
fn weekday(day: i64) -> usize {
    (day + 3).rem_euclid(7) as usize
}

/// An `i128` instant or duration, saturated into `i64`.
fn clamp(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// A day that does not follow its weekday's hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Special {
    /// A make-up workday (sorts first, so it wins over a holiday on the same date).
    Workday,
    /// A holiday.
    Holiday,
}

/// A calendar prepared for arithmetic: merged opening intervals in milliseconds after local
/// midnight, and the special dates by day number.
struct Schedule {
    /// The UTC offset in milliseconds.
    offset_ms: i128,
    /// Each weekday's opening intervals, sorted, merged, non-empty.
    week: [Vec<(i64, i64)>; 7],
    /// Each weekday's open time.
    week_ms: [i64; 7],
    /// The open time of a week without special dates.
    weekly_ms: i64,
    /// The make-up workdays' opening intervals.
    makeup: Vec<(i64, i64)>,
    /// A make-up workday's open time.
    makeup_ms: i64,
    /// Special dates, sorted by day number, one entry per day.
    special: Vec<(i64, Special)>,
}

/// Intervals in milliseconds, clamped into the day, without empty ones, sorted and merged.
fn normalize(intervals: &[Interval]) -> Vec<(i64, i64)> {
    let minute = |m: u16| i64::from(m.min(DAY_MINUTES)) * MINUTE_MS;
    let mut sorted: Vec<(i64, i64)> = intervals
        .iter()
        .map(|i| (minute(i.start_minute), minute(i.end_minute)))
        .filter(|(start, end)| start < end)
        .collect();
    sorted.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(sorted.len());
    for (start, end) in sorted {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The total length of some intervals.
fn total(intervals: &[(i64, i64)]) -> i64 {
    intervals.iter().map(|(start, end)| end - start).sum()
}

impl Schedule {
    /// Prepares a calendar, leniently (see the module documentation).
    fn new(calendar: &OfficeCalendar) -> Schedule {
        let week: [Vec<(i64, i64)>; 7] = std::array::from_fn(|i| normalize(&calendar.weekdays[i]));
        let week_ms: [i64; 7] = std::array::from_fn(|i| total(&week[i]));
        let makeup = if calendar.makeup_hours.is_empty() {
            week[0].clone()
        } else {
            normalize(&calendar.makeup_hours)
        };
        let dates = |list: &[String], kind: Special| {
            list.iter()
                .filter_map(|text| parse_date(text))
                .map(move |day| (day, kind))
                .collect::<Vec<_>>()
        };
        let mut special = dates(&calendar.makeup_workdays, Special::Workday);
        special.extend(dates(&calendar.holidays, Special::Holiday));
        special.sort_unstable();
        special.dedup_by_key(|(day, _)| *day);
        Schedule {
            offset_ms: i128::from(calendar.utc_offset_minutes) * i128::from(MINUTE_MS),
            weekly_ms: week_ms.iter().sum(),
            makeup_ms: total(&makeup),
            week,
            week_ms,
            makeup,
            special,
        }
    }

    /// The special kind of a day, if any.
    fn special_on(&self, day: i64) -> Option<Special> {
        self.special
            .binary_search_by_key(&day, |&(d, _)| d)
            .ok()
            .map(|i| self.special[i].1)
    }

    /// The opening intervals of a day.
    fn segments(&self, day: i64) -> &[(i64, i64)] {
        match self.special_on(day) {
            Some(Special::Holiday) => &[],
            Some(Special::Workday) => &self.makeup,
            None => &self.week[weekday(day)],
        }
    }

    /// The first special day on or after `day`.
    fn next_special(&self, day: i64) -> Option<i64> {
        let i = self.special.partition_point(|&(d, _)| d < day);
        self.special.get(i).map(|&(d, _)| d)
    }

    /// The last special day on or before `day`.
    fn previous_special(&self, day: i64) -> Option<i64> {
        let i = self.special.partition_point(|&(d, _)| d <= day);
        i.checked_sub(1).map(|i| self.special[i].0)
    }

    /// The local day of an instant, and the milliseconds since its local midnight.
    fn locate(&self, at_ms: i64) -> (i64, i64) {
        let local = i128::from(at_ms) + self.offset_ms;
        let day = local.div_euclid(i128::from(DAY_MS));
        let in_day = local.rem_euclid(i128::from(DAY_MS));
        // |local| < 2^64, so the day number is far inside i64; in_day < DAY_MS.
        (day as i64, in_day as i64)
    }

    /// The instant (UTC) of a day's local midnight.
    fn midnight(&self, day: i64) -> i128 {
        i128::from(day) * i128::from(DAY_MS) - self.offset_ms
    }

    /// The instant `in_day + extra` milliseconds after a day's local midnight, saturated.
    fn instant(&self, day: i64, in_day: i64, extra: i128) -> i64 {
        clamp(self.midnight(day) + i128::from(in_day) + extra)
    }

    /// Whether the office is open at an instant.
    fn is_open(&self, at_ms: i64) -> bool {
        let (day, in_day) = self.locate(at_ms);
        self.segments(day)
            .iter()
            .any(|&(start, end)| start <= in_day && in_day < end)
    }

    /// Open time of a day between two times of that day.
    fn overlap(&self, day: i64, from: i64, to: i64) -> i128 {
        self.segments(day)
            .iter()
            .map(|&(start, end)| i128::from((end.min(to) - start.max(from)).max(0)))
            .sum()
    }

    /// Open time of the whole days `from..to` (`from <= to`).
    fn whole_days(&self, from: i64, to: i64) -> i128 {
        let days = to - from;
        let mut sum = i128::from(days / 7) * i128::from(self.weekly_ms);
        for day in from..from + days % 7 {
            sum += i128::from(self.week_ms[weekday(day)]);
        }
        let first = self.special.partition_point(|&(d, _)| d < from);
        let last = self.special.partition_point(|&(d, _)| d < to);
        for &(day, kind) in &self.special[first..last] {
            let actual = match kind {
                Special::Workday => self.makeup_ms,
                Special::Holiday => 0,
            };
            sum += i128::from(actual - self.week_ms[weekday(day)]);
        }
        sum
    }

    /// Open time between two instants (`start_ms < end_ms`).
    fn elapsed(&self, start_ms: i64, end_ms: i64) -> i128 {
        let (first, from) = self.locate(start_ms);
        let (last, to) = self.locate(end_ms);
        if first == last {
            return self.overlap(first, from, to);
        }
        self.overlap(first, from, DAY_MS)
            + self.whole_days(first + 1, last)
            + self.overlap(last, 0, to)
    }

    /// The instant when `rest` (>= 0) of open time has passed after `start_ms`.
    fn forward(&self, start_ms: i64, mut rest: i128) -> i64 {
        let (mut day, in_day) = self.locate(start_ms);
        for &(start, end) in self.segments(day) {
            if end > in_day {
                let from = start.max(in_day);
                let open = i128::from(end - from);
                if rest <= open {
                    return self.instant(day, from, rest);
                }
                rest -= open;
            }
        }
        loop {
            day += 1;
            if self.midnight(day) > i128::from(i64::MAX) {
                return i64::MAX;
            }
            let next = self.next_special(day);
            if self.weekly_ms == 0 {
                // Only special days can have open time.
                match next {
                    Some(special) => day = special,
                    None => return i64::MAX,
                }
            } else if rest > 0 {
                // Skip whole ordinary weeks, leaving some time to place within a day.
                let room = next.map_or(i64::MAX, |special| (special - day) / 7);
                let needed = (rest - 1) / i128::from(self.weekly_ms);
                let weeks = i128::from(room).min(needed);
                // weeks <= 2^64 / 60_000, so neither product overflows.
                day += weeks as i64 * 7;
                rest -= weeks * i128::from(self.weekly_ms);
            }
            for &(start, end) in self.segments(day) {
                let open = i128::from(end - start);
                if rest <= open {
                    return self.instant(day, start, rest);
                }
                rest -= open;
            }
        }
    }

    /// The instant `rest` (>= 0) of open time before `end_ms`.
    fn backward(&self, end_ms: i64, mut rest: i128) -> i64 {
        let (mut day, in_day) = self.locate(end_ms);
        for &(start, end) in self.segments(day).iter().rev() {
            if start < in_day || (rest == 0 && start == in_day) {
                let to = end.min(in_day);
                let open = i128::from(to - start);
                if rest <= open {
                    return self.instant(day, to, -rest);
                }
                rest -= open;
            }
        }
        loop {
            day -= 1;
            if self.midnight(day) + i128::from(DAY_MS) < i128::from(i64::MIN) {
                return i64::MIN;
            }
            let previous = self.previous_special(day);
            if self.weekly_ms == 0 {
                match previous {
                    Some(special) => day = special,
                    None => return i64::MIN,
                }
            } else if rest > 0 {
                let room = previous.map_or(i64::MAX, |special| (day - special) / 7);
                let needed = (rest - 1) / i128::from(self.weekly_ms);
                let weeks = i128::from(room).min(needed);
                day -= weeks as i64 * 7;
                rest -= weeks * i128::from(self.weekly_ms);
            }
            for &(start, end) in self.segments(day).iter().rev() {
                let open = i128::from(end - start);
                if rest <= open {
                    return self.instant(day, end, -rest);
                }
                rest -= open;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MIN: i64 = MINUTE_MS;
    const HOUR: i64 = 60 * MIN;

    /// The instant of a local date and time at UTC+8.
    fn at(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
        days_from_civil(year, month, day) * DAY_MS + hour * HOUR + minute * MIN - 8 * HOUR
    }

    fn typical() -> DeadlineClock {
        DeadlineClock::OfficeHours(OfficeCalendar::typical())
    }

    /// The typical calendar with a National Day week 2026-10-01 (Thu) ..= 10-07 (Wed), and
    /// make-up workdays on Sunday 09-27 and Saturday 10-10.
    fn national_day() -> OfficeCalendar {
        OfficeCalendar {
            holidays: (1..=7).map(|d| format!("2026-10-{d:02}")).collect(),
            makeup_workdays: vec!["2026-09-27".into(), "2026-10-10".into()],
            ..OfficeCalendar::typical()
        }
    }

    // ---- Dates. ----

    #[test]
    fn local_times_match_known_instants() {
        // Values from `TZ=Asia/Shanghai date -d ... +%s`.
        assert_eq!(at(2026, 3, 13, 16, 30), 1_773_390_600_000);
        assert_eq!(at(2026, 3, 17, 12, 0), 1_773_720_000_000);
        assert_eq!(at(2026, 10, 1, 0, 0), 1_790_784_000_000);
        assert_eq!(at(2024, 1, 1, 0, 0), 1_704_038_400_000);
        assert_eq!(at(2000, 2, 29, 0, 0), 951_753_600_000);
        assert_eq!(at(1969, 12, 31, 23, 59), -28_860_000);
        // Weekdays: Friday, Thursday, Sunday, Saturday, Monday, Tuesday, Wednesday.
        for ((y, m, d), wd) in [
            ((2026, 3, 13), 4),
            ((2026, 10, 1), 3),
            ((2026, 9, 27), 6),
            ((2026, 10, 10), 5),
            ((2024, 1, 1), 0),
            ((2000, 2, 29), 1),
            ((1969, 12, 31), 2),
        ] {
            assert_eq!(weekday(days_from_civil(y, m, d)), wd, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-10-01"), Some(days_from_civil(2026, 10, 1)));
        assert_eq!(parse_date("2024-02-29"), Some(days_from_civil(2024, 2, 29)));
        assert_eq!(parse_date("2000-02-29"), Some(days_from_civil(2000, 2, 29)));
        for bad in [
            "",
            "2026-02-29",
            "1900-02-29",
            "2026-04-31",
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
            "2026-01-32",
            "2026-1-01",
            "2026/01/01",
            " 2026-01-01",
            "2026-01-01 ",
            "+026-01-01",
            "２０２６-01-01",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }

    // ---- Opening hours. ----

    #[test]
    fn typical_calendar_is_valid_and_open_in_office_hours() {
        let cal = OfficeCalendar::typical();
        assert_eq!(cal.validate(), Ok(()));
        assert_eq!(OfficeCalendar::default(), cal);
        let monday = |h, m| at(2026, 3, 16, h, m);
        assert!(!cal.is_open(monday(8, 30) - 1));
        assert!(cal.is_open(monday(8, 30)));
        assert!(cal.is_open(monday(12, 0) - 1));
        assert!(!cal.is_open(monday(12, 0)));
        assert!(!cal.is_open(monday(13, 30) - 1));
        assert!(cal.is_open(monday(13, 30)));
        assert!(!cal.is_open(monday(17, 30)));
        assert!(cal.is_open(at(2026, 3, 20, 17, 29))); // Friday
        assert!(!cal.is_open(at(2026, 3, 21, 10, 0))); // Saturday
        assert!(!cal.is_open(at(2026, 3, 22, 10, 0))); // Sunday
    }

    #[test]
    fn utc_offset_is_a_field() {
        // Monday 2026-03-16 01:00 UTC is 09:00 in Beijing but 01:00 in London (winter).
        let utc_one = days_from_civil(2026, 3, 16) * DAY_MS + HOUR;
        let beijing = OfficeCalendar::typical();
        let utc = OfficeCalendar {
            utc_offset_minutes: 0,
            ..OfficeCalendar::typical()
        };
        assert!(beijing.is_open(utc_one));
        assert!(!utc.is_open(utc_one));
        let utc_clock = DeadlineClock::OfficeHours(utc);
        assert_eq!(
            utc_clock.add(utc_one, HOUR),
            days_from_civil(2026, 3, 16) * DAY_MS + 9 * HOUR + 30 * MIN
        );
        // A negative offset (UTC-5): Monday 08:30 local is 13:30 UTC.
        let west = OfficeCalendar {
            utc_offset_minutes: -300,
            ..OfficeCalendar::typical()
        };
        let monday_0830 = days_from_civil(2026, 3, 16) * DAY_MS + 13 * HOUR + 30 * MIN;
        assert!(!west.is_open(monday_0830 - 1));
        assert!(west.is_open(monday_0830));
        assert_eq!(west.validate(), Ok(()));
    }

    // ---- add. ----

    #[test]
    fn friday_afternoon_twelve_hours_is_due_tuesday_noon() {
        // Fri 16:30–17:30 = 1 h; Mon 3.5 h + 4 h = 8.5 h in all; Tue 08:30–12:00 the last 3.5 h,
        // used up exactly at the 12:00 closing.
        let friday = at(2026, 3, 13, 16, 30);
        assert_eq!(typical().add(friday, 12 * HOUR), at(2026, 3, 17, 12, 0));
        assert_eq!(typical().add(friday, 12 * HOUR), 1_773_720_000_000);
        // One more minute goes into the afternoon.
        assert_eq!(
            typical().add(friday, 12 * HOUR + MIN),
            at(2026, 3, 17, 13, 31)
        );
    }

    #[test]
    fn night_submission_starts_at_the_opening() {
        let wednesday_night = at(2026, 3, 11, 3, 0);
        assert_eq!(typical().add(wednesday_night, HOUR), at(2026, 3, 11, 9, 30));
    }

    #[test]
    fn used_up_at_a_closing_gives_the_closing() {
        let clock = typical();
        assert_eq!(
            clock.add(at(2026, 3, 16, 8, 30), 3 * HOUR + 30 * MIN),
            at(2026, 3, 16, 12, 0)
        );
        assert_eq!(
            clock.add(at(2026, 3, 16, 13, 30), 4 * HOUR),
            at(2026, 3, 16, 17, 30)
        );
        // A whole Friday ends on Friday evening, not on Monday morning.
        assert_eq!(
            clock.add(at(2026, 3, 20, 7, 0), 7 * HOUR + 30 * MIN),
            at(2026, 3, 20, 17, 30)
        );
    }

    #[test]
    fn zero_duration_gives_the_start_or_the_next_opening() {
        let clock = typical();
        let open = at(2026, 3, 16, 10, 15);
        assert_eq!(clock.add(open, 0), open);
        assert_eq!(clock.add(at(2026, 3, 16, 8, 30), 0), at(2026, 3, 16, 8, 30));
        assert_eq!(clock.add(at(2026, 3, 11, 3, 0), 0), at(2026, 3, 11, 8, 30));
        // At a closing instant the office is closed.
        assert_eq!(
            clock.add(at(2026, 3, 16, 12, 0), 0),
            at(2026, 3, 16, 13, 30)
        );
        assert_eq!(
            clock.add(at(2026, 3, 20, 17, 30), 0),
            at(2026, 3, 23, 8, 30)
        );
    }

    #[test]
    fn a_holiday_week_is_skipped() {
        let clock = DeadlineClock::OfficeHours(national_day());
        // Wed 09-30 17:00–17:30 = 30 min; Thu 10-01 ..= Wed 10-07 closed; Thu 10-08 08:30–09:00.
        assert_eq!(
            clock.add(at(2026, 9, 30, 17, 0), HOUR),
            at(2026, 10, 8, 9, 0)
        );
        assert_eq!(at(2026, 10, 8, 9, 0), 1_791_421_200_000);
        assert!(!national_day().is_open(at(2026, 10, 1, 10, 0)));
        assert!(!national_day().is_open(at(2026, 10, 5, 10, 0))); // a Monday
        assert!(national_day().is_open(at(2026, 10, 8, 10, 0)));
        // Only National Day itself: due on Friday 10-02.
        let one_day = DeadlineClock::OfficeHours(OfficeCalendar {
            holidays: vec!["2026-10-01".into()],
            ..OfficeCalendar::typical()
        });
        assert_eq!(
            one_day.add(at(2026, 9, 30, 17, 0), HOUR),
            at(2026, 10, 2, 9, 0)
        );
        assert_eq!(
            one_day.elapsed(at(2026, 9, 30, 0, 0), at(2026, 10, 3, 0, 0)),
            2 * (7 * HOUR + 30 * MIN)
        );
    }

    #[test]
    fn a_makeup_sunday_opens_with_the_monday_hours() {
        let cal = national_day();
        let clock = DeadlineClock::OfficeHours(cal.clone());
        // Saturday 09-26 is closed; Sunday 09-27 is a make-up workday.
        assert_eq!(
            clock.add(at(2026, 9, 26, 10, 0), HOUR),
            at(2026, 9, 27, 9, 30)
        );
        assert!(cal.is_open(at(2026, 9, 27, 8, 30)));
        assert!(!cal.is_open(at(2026, 9, 27, 12, 30)));
        assert!(cal.is_open(at(2026, 9, 27, 17, 0)));
        assert!(cal.is_open(at(2026, 10, 10, 14, 0))); // make-up Saturday
        assert!(!cal.is_open(at(2026, 10, 11, 10, 0))); // the Sunday after it
        assert_eq!(
            clock.elapsed(at(2026, 9, 26, 0, 0), at(2026, 9, 28, 0, 0)),
            7 * HOUR + 30 * MIN
        );
    }

    #[test]
    fn makeup_hours_replace_the_monday_hours() {
        let cal = OfficeCalendar {
            makeup_hours: vec![hm(9, 0, 12, 0)],
            ..national_day()
        };
        assert_eq!(cal.validate(), Ok(()));
        assert!(!cal.is_open(at(2026, 9, 27, 8, 45)));
        assert!(cal.is_open(at(2026, 9, 27, 9, 0)));
        assert!(!cal.is_open(at(2026, 9, 27, 14, 0)));
        let clock = DeadlineClock::OfficeHours(cal);
        assert_eq!(
            clock.add(at(2026, 9, 26, 10, 0), HOUR),
            at(2026, 9, 27, 10, 0)
        );
        // 3 h on the Sunday, then Monday 08:30.
        assert_eq!(
            clock.add(at(2026, 9, 26, 10, 0), 3 * HOUR + MIN),
            at(2026, 9, 28, 8, 31)
        );
    }

    #[test]
    fn thirty_days_of_office_time() {
        // 720 h / 7.5 h = 96 workdays: 19 whole weeks, then the Monday after them.
        let start = at(2026, 3, 16, 8, 30);
        let due = typical().add(start, 720 * HOUR);
        assert_eq!(due, at(2026, 7, 27, 17, 30));
        assert_eq!(due, 1_785_144_600_000);
        assert_eq!(typical().elapsed(start, due), 720 * HOUR);
        assert_eq!(typical().sub(due, 720 * HOUR), start);
    }

    #[test]
    fn wall_clock_counts_all_the_time() {
        let clock = DeadlineClock::WallClock;
        assert_eq!(clock, DeadlineClock::default());
        let night = at(2026, 3, 14, 23, 0);
        assert_eq!(clock.add(night, 12 * HOUR), at(2026, 3, 15, 11, 0));
        assert_eq!(clock.add(night, 0), night);
        assert_eq!(clock.sub(night, HOUR), at(2026, 3, 14, 22, 0));
        assert_eq!(clock.add(night, -HOUR), at(2026, 3, 14, 22, 0));
        assert_eq!(clock.elapsed(night, at(2026, 3, 15, 11, 0)), 12 * HOUR);
        assert_eq!(clock.elapsed(night, night - 1), 0);
        assert_eq!(clock.add(i64::MAX - 1, 10), i64::MAX);
        assert_eq!(clock.sub(i64::MIN + 1, 10), i64::MIN);
        assert_eq!(clock.elapsed(i64::MIN, i64::MAX), i64::MAX);
    }

    // ---- sub. ----

    #[test]
    fn warning_an_hour_before_tuesday_nine_is_monday_five() {
        // Tue 08:30–09:00 = 30 min, then Mon 17:00–17:30.
        assert_eq!(
            typical().sub(at(2026, 3, 17, 9, 0), HOUR),
            at(2026, 3, 16, 17, 0)
        );
        // An hour before the Tuesday-noon deadline of the Friday petition.
        assert_eq!(
            typical().sub(at(2026, 3, 17, 12, 0), HOUR),
            at(2026, 3, 17, 11, 0)
        );
        // An hour before a Monday 09:00 deadline is Friday 17:00.
        assert_eq!(
            typical().sub(at(2026, 3, 23, 9, 0), HOUR),
            at(2026, 3, 20, 17, 0)
        );
    }

    #[test]
    fn sub_used_up_at_an_opening_gives_the_opening() {
        let clock = typical();
        assert_eq!(
            clock.sub(at(2026, 3, 16, 17, 30), 4 * HOUR),
            at(2026, 3, 16, 13, 30)
        );
        assert_eq!(
            clock.sub(at(2026, 3, 16, 13, 30), 30 * MIN),
            at(2026, 3, 16, 11, 30)
        );
        assert_eq!(
            clock.sub(at(2026, 3, 16, 20, 0), 7 * HOUR + 30 * MIN),
            at(2026, 3, 16, 8, 30)
        );
    }

    #[test]
    fn sub_zero_gives_the_end_or_the_previous_closing() {
        let clock = typical();
        for open in [
            at(2026, 3, 16, 10, 0),
            at(2026, 3, 16, 8, 30),
            at(2026, 3, 16, 12, 0), // just closed
        ] {
            assert_eq!(clock.sub(open, 0), open);
        }
        assert_eq!(
            clock.sub(at(2026, 3, 16, 12, 30), 0),
            at(2026, 3, 16, 12, 0)
        );
        assert_eq!(clock.sub(at(2026, 3, 16, 3, 0), 0), at(2026, 3, 13, 17, 30));
    }

    #[test]
    fn negative_durations_count_the_other_way() {
        let clock = typical();
        let t = at(2026, 3, 17, 9, 0);
        assert_eq!(clock.add(t, -HOUR), clock.sub(t, HOUR));
        assert_eq!(clock.sub(t, -HOUR), clock.add(t, HOUR));
        assert_eq!(clock.add(t, i64::MIN), i64::MIN);
        assert_eq!(clock.sub(t, i64::MIN), i64::MAX);
    }

    // ---- elapsed. ----

    #[test]
    fn elapsed_across_a_weekend() {
        let clock = typical();
        // Fri 16:00–17:30 = 1.5 h, Mon 08:30–10:00 = 1.5 h.
        let friday = at(2026, 3, 13, 16, 0);
        let monday = at(2026, 3, 16, 10, 0);
        assert_eq!(clock.elapsed(friday, monday), 3 * HOUR);
        assert_eq!(clock.elapsed(monday, friday), 0);
        assert_eq!(
            clock.elapsed(at(2026, 3, 14, 0, 0), at(2026, 3, 16, 0, 0)),
            0
        );
        // A whole week, and a whole year of 2026 without holidays (261 workdays).
        assert_eq!(
            clock.elapsed(at(2026, 3, 16, 0, 0), at(2026, 3, 23, 0, 0)),
            37 * HOUR + 30 * MIN
        );
        assert_eq!(
            clock.elapsed(at(2026, 1, 1, 0, 0), at(2027, 1, 1, 0, 0)),
            261 * (7 * HOUR + 30 * MIN)
        );
    }

    // ---- Validation and unchecked calendars. ----

    #[test]
    fn validate_reports_the_first_problem() {
        let with = |f: fn(&mut OfficeCalendar)| {
            let mut cal = OfficeCalendar::typical();
            f(&mut cal);
            cal.validate()
        };
        assert_eq!(national_day().validate(), Ok(()));
        assert_eq!(
            with(|c| c.utc_offset_minutes = -1439),
            Ok(()),
            "just under a day is allowed"
        );
        assert_eq!(
            with(|c| c.utc_offset_minutes = 1440),
            Err(CalendarError::Offset(1440))
        );
        assert_eq!(
            with(|c| c.weekdays[2] = vec![hm(9, 0, 9, 0)]),
            Err(CalendarError::Interval {
                hours: "wednesday",
                index: 0,
                start_minute: 540,
                end_minute: 540,
            })
        );
        assert_eq!(
            with(|c| c.weekdays[6] = vec![hm(20, 0, 24, 1)]),
            Err(CalendarError::Interval {
                hours: "sunday",
                index: 0,
                start_minute: 1200,
                end_minute: 1441,
            })
        );
        assert_eq!(
            with(|c| c.weekdays[0] = vec![hm(13, 30, 17, 30), hm(8, 30, 12, 0)]),
            Err(CalendarError::Overlap {
                hours: "monday",
                index: 1,
                start_minute: 510,
                previous_end: 1050,
            })
        );
        assert_eq!(
            with(|c| c.weekdays[4] = vec![hm(8, 0, 12, 0), hm(11, 0, 14, 0)]),
            Err(CalendarError::Overlap {
                hours: "friday",
                index: 1,
                start_minute: 660,
                previous_end: 720,
            })
        );
        // Touching intervals do not overlap; an interval may end at midnight.
        assert_eq!(
            with(|c| c.weekdays[5] = vec![hm(8, 0, 12, 0), hm(12, 0, 24, 0)]),
            Ok(())
        );
        assert_eq!(
            with(|c| c.makeup_hours = vec![hm(10, 0, 9, 0)]),
            Err(CalendarError::Interval {
                hours: "makeup_hours",
                index: 0,
                start_minute: 600,
                end_minute: 540,
            })
        );
        assert_eq!(
            with(|c| c.holidays = vec!["2026-10-01".into(), "2026-10-32".into()]),
            Err(CalendarError::Date {
                list: "holidays",
                value: "2026-10-32".into(),
            })
        );
        assert_eq!(
            with(|c| c.makeup_workdays = vec!["26-09-27".into()]),
            Err(CalendarError::Date {
                list: "makeup_workdays",
                value: "26-09-27".into(),
            })
        );
        assert_eq!(
            with(|c| {
                c.holidays = vec!["2026-10-01".into()];
                c.makeup_workdays = vec!["2026-09-27".into(), "2026-10-01".into()];
            }),
            Err(CalendarError::HolidayAndWorkday("2026-10-01".into()))
        );
        assert_eq!(
            with(|c| {
                c.weekdays = Default::default();
                c.makeup_workdays = vec!["2026-09-27".into()];
            }),
            Err(CalendarError::NeverOpen)
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            CalendarError::Date {
                list: "holidays",
                value: "2026-10-32".into(),
            }
            .to_string(),
            "holidays entry \"2026-10-32\" is not a date written YYYY-MM-DD"
        );
        assert_eq!(
            CalendarError::Interval {
                hours: "sunday",
                index: 0,
                start_minute: 1200,
                end_minute: 1441,
            }
            .to_string(),
            "sunday interval 0 (1200..1441) needs start_minute < end_minute <= 1440"
        );
        assert_eq!(
            CalendarError::NeverOpen.to_string(),
            "the calendar has no opening hours on any weekday"
        );
    }

    #[test]
    fn an_empty_unchecked_calendar_terminates() {
        let empty = OfficeCalendar {
            weekdays: Default::default(),
            ..OfficeCalendar::typical()
        };
        assert!(empty.validate().is_err());
        let clock = DeadlineClock::OfficeHours(empty.clone());
        let t = at(2026, 3, 16, 10, 0);
        assert!(!empty.is_open(t));
        assert_eq!(clock.add(t, HOUR), i64::MAX);
        assert_eq!(clock.add(t, 0), i64::MAX);
        assert_eq!(clock.sub(t, HOUR), i64::MIN);
        assert_eq!(clock.elapsed(t, t + 365 * DAY_MS), 0);
        assert_eq!(clock.elapsed(i64::MIN, i64::MAX), 0);
    }

    #[test]
    fn make_up_days_alone_run_out() {
        // No weekday hours (unchecked): only the make-up Sunday 09-27 is ever open.
        let cal = OfficeCalendar {
            weekdays: Default::default(),
            makeup_workdays: vec!["2026-09-27".into(), "not a date".into()],
            makeup_hours: vec![hm(9, 0, 12, 0)],
            ..OfficeCalendar::typical()
        };
        let clock = DeadlineClock::OfficeHours(cal);
        let before = at(2020, 1, 1, 0, 0);
        assert_eq!(clock.add(before, HOUR), at(2026, 9, 27, 10, 0));
        assert_eq!(clock.add(before, 3 * HOUR), at(2026, 9, 27, 12, 0));
        assert_eq!(clock.add(before, 3 * HOUR + 1), i64::MAX);
        let after = at(2030, 1, 1, 0, 0);
        assert_eq!(clock.sub(after, HOUR), at(2026, 9, 27, 11, 0));
        assert_eq!(clock.sub(after, 3 * HOUR + 1), i64::MIN);
        assert_eq!(clock.elapsed(before, after), 3 * HOUR);
    }

    #[test]
    fn unchecked_intervals_are_clamped_and_merged() {
        let cal = OfficeCalendar {
            weekdays: [
                vec![hm(10, 0, 13, 20), hm(8, 0, 12, 0), hm(15, 0, 14, 0)],
                vec![hm(22, 0, 30, 0)],
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            ],
            ..OfficeCalendar::typical()
        };
        let clock = DeadlineClock::OfficeHours(cal);
        // Monday 08:00–13:20 once (320 min), Tuesday 22:00–24:00.
        let monday = at(2026, 3, 16, 0, 0);
        assert_eq!(clock.elapsed(monday, monday + DAY_MS), 320 * MIN);
        assert_eq!(
            clock.elapsed(monday, monday + 2 * DAY_MS),
            320 * MIN + 2 * HOUR
        );
        assert_eq!(clock.add(monday, 320 * MIN), at(2026, 3, 16, 13, 20));
        // Used up at Tuesday midnight: the closing, not next Monday.
        assert_eq!(
            clock.add(monday, 320 * MIN + 2 * HOUR),
            at(2026, 3, 18, 0, 0)
        );
    }

    #[test]
    fn extreme_instants_saturate() {
        let clock = typical();
        assert_eq!(clock.add(i64::MAX - 1000, HOUR), i64::MAX);
        assert_eq!(clock.add(i64::MAX, 0), i64::MAX);
        assert_eq!(clock.add(0, i64::MAX), i64::MAX);
        assert_eq!(clock.sub(0, i64::MAX), i64::MIN);
        assert_eq!(clock.sub(i64::MIN + 5, 1), i64::MIN);
        assert_eq!(clock.sub(i64::MIN, 0), i64::MIN);
        let all = clock.elapsed(i64::MIN, i64::MAX);
        assert!(all > 0 && all < i64::MAX, "{all}");
        // About 37.5 h in every 168 h.
        let ratio = all as f64 / (2.0 * i64::MAX as f64);
        assert!((ratio - 37.5 / 168.0).abs() < 1e-6, "{ratio}");
        // Office time of a millennium stays exact.
        let start = at(2026, 3, 16, 8, 30);
        let far = clock.add(start, 1_000 * 365 * DAY_MS);
        assert_eq!(clock.elapsed(start, far), 1_000 * 365 * DAY_MS);
    }

    // ---- Configuration. ----

    #[test]
    fn calendars_come_from_toml() {
        let cal: OfficeCalendar = toml::from_str(
            r#"
            holidays = ["2026-10-01", "2026-10-02"]
            makeup_workdays = ["2026-09-27"]
            "#,
        )
        .unwrap();
        assert_eq!(
            cal,
            OfficeCalendar {
                holidays: vec!["2026-10-01".into(), "2026-10-02".into()],
                makeup_workdays: vec!["2026-09-27".into()],
                ..OfficeCalendar::typical()
            }
        );
        let custom: OfficeCalendar = toml::from_str(
            r#"
            utc_offset_minutes = 0
            weekdays = [[{ start_minute = 540, end_minute = 1020 }], [], [], [], [], [], []]
            makeup_hours = [{ start_minute = 600, end_minute = 720 }]
            "#,
        )
        .unwrap();
        assert_eq!(custom.utc_offset_minutes, 0);
        assert_eq!(custom.weekdays[0], vec![hm(9, 0, 17, 0)]);
        assert!(custom.weekdays[1..].iter().all(Vec::is_empty));
        assert_eq!(custom.makeup_hours, vec![hm(10, 0, 12, 0)]);
        assert_eq!(custom.validate(), Ok(()));
        // Typos are refused rather than ignored.
        assert!(toml::from_str::<OfficeCalendar>("holiday = [\"2026-10-01\"]").is_err());
        assert!(
            toml::from_str::<OfficeCalendar>("makeup_hours = [{ start_minute = 1, end = 2 }]")
                .is_err()
        );
        // Round trip.
        let text = toml::to_string(&national_day()).unwrap();
        assert_eq!(
            toml::from_str::<OfficeCalendar>(&text).unwrap(),
            national_day()
        );
    }

    #[test]
    fn deadline_clocks_come_from_toml() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Config {
            clock: DeadlineClock,
        }
        let wall: Config = toml::from_str("clock = \"wall_clock\"").unwrap();
        assert_eq!(wall.clock, DeadlineClock::WallClock);
        let office: Config = toml::from_str(
            r#"
            [clock.office_hours]
            holidays = ["2026-10-01"]
            "#,
        )
        .unwrap();
        let DeadlineClock::OfficeHours(cal) = &office.clock else {
            panic!("{office:?}");
        };
        assert_eq!(cal.holidays, vec!["2026-10-01".to_owned()]);
        let text = toml::to_string(&office).unwrap();
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), office);
    }

    // ---- Property tests. ----

    mod properties {
        use super::*;

        /// 2024-01-01, a Monday, as a day number.
        const BASE_DAY: i64 = 19_723;
        /// Days of the range in which random calendars have special dates (2024 ..= 2031).
        const SPAN_DAYS: i64 = 8 * 366;
        /// The longest random duration: 60 days.
        const LONGEST: i64 = 60 * DAY_MS;

        /// The date of a day number (Hinnant's `civil_from_days`, independent of `parse_date`).
        fn date_string(day: i64) -> String {
            let z = day + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = yoe + era * 400 + i64::from(m <= 2);
            format!("{y:04}-{m:02}-{d:02}")
        }

        /// One day's hours: up to three ordered, separate intervals.
        fn day_hours() -> impl Strategy<Value = Vec<Interval>> {
            prop::collection::btree_set(0u16..=DAY_MINUTES, 0..=6).prop_map(|cuts| {
                let cuts: Vec<u16> = cuts.into_iter().collect();
                cuts.chunks_exact(2)
                    .map(|c| Interval {
                        start_minute: c[0],
                        end_minute: c[1],
                    })
                    .collect()
            })
        }

        /// The typical calendar with Chinese-style holidays and make-up days in 2024 ..= 2031.
        fn typical_with_holidays() -> OfficeCalendar {
            let mut holidays = Vec::new();
            let mut makeup_workdays = Vec::new();
            for year in 2024..=2031 {
                holidays.push(format!("{year}-01-01"));
                holidays.extend((1..=7).map(|d| format!("{year}-10-{d:02}")));
                holidays.extend((1..=3).map(|d| format!("{year}-05-{d:02}")));
                makeup_workdays.push(format!("{year}-09-28"));
                makeup_workdays.push(format!("{year}-10-11"));
            }
            OfficeCalendar {
                holidays,
                makeup_workdays,
                ..OfficeCalendar::typical()
            }
        }

        /// A valid calendar: typical ones, or random hours, offsets, holidays and make-up days.
        fn calendar() -> impl Strategy<Value = OfficeCalendar> {
            let random = (
                -720i32..=840,
                prop::array::uniform7(day_hours()),
                prop::collection::vec(0..SPAN_DAYS, 0..60),
                prop::collection::vec(0..SPAN_DAYS, 0..20),
                day_hours(),
            )
                .prop_filter_map(
                    "no weekday hours",
                    |(offset, weekdays, hol, mk, hours)| {
                        if weekdays.iter().all(Vec::is_empty) {
                            return None;
                        }
                        Some(OfficeCalendar {
                            utc_offset_minutes: offset,
                            weekdays,
                            holidays: hol.iter().map(|&d| date_string(BASE_DAY + d)).collect(),
                            makeup_workdays: mk
                                .iter()
                                .filter(|d| !hol.contains(*d))
                                .map(|&d| date_string(BASE_DAY + d))
                                .collect(),
                            makeup_hours: hours,
                        })
                    },
                );
            prop_oneof![
                1 => Just(OfficeCalendar::typical()),
                2 => Just(typical_with_holidays()),
                4 => random,
            ]
        }

        /// An instant in 2024 ..= 2029.
        fn instant() -> impl Strategy<Value = i64> {
            prop_oneof![
                // Anywhere, to the millisecond.
                3 => at(2024, 1, 1, 0, 0)..at(2030, 1, 1, 0, 0),
                // On a minute, where openings and closings are.
                1 => (0..6 * 366 * 1440i64).prop_map(|m| at(2024, 1, 1, 0, 0) + m * MIN),
            ]
        }

        /// A duration up to [`LONGEST`], sometimes a whole number of minutes.
        fn duration() -> impl Strategy<Value = i64> {
            prop_oneof![
                3 => 0..=LONGEST,
                1 => (0..=LONGEST / MIN).prop_map(|m| m * MIN),
                1 => (0..=24 * 60i64).prop_map(|m| m * MIN),
            ]
        }

        /// A day's open intervals, as a naive reading of the calendar.
        fn reference_hours(cal: &OfficeCalendar, day: i64) -> Vec<(i64, i64)> {
            let date = date_string(day);
            let hours = if cal.makeup_workdays.contains(&date) {
                if cal.makeup_hours.is_empty() {
                    &cal.weekdays[0]
                } else {
                    &cal.makeup_hours
                }
            } else if cal.holidays.contains(&date) {
                return Vec::new();
            } else {
                &cal.weekdays[(day - BASE_DAY).rem_euclid(7) as usize]
            };
            let midnight = day * DAY_MS - i64::from(cal.utc_offset_minutes) * MIN;
            hours
                .iter()
                .map(|i| {
                    (
                        midnight + i64::from(i.start_minute) * MIN,
                        midnight + i64::from(i.end_minute) * MIN,
                    )
                })
                .collect()
        }

        /// The local day of an instant, naively.
        fn reference_day(cal: &OfficeCalendar, t: i64) -> i64 {
            (t + i64::from(cal.utc_offset_minutes) * MIN).div_euclid(DAY_MS)
        }

        /// `add`, walking day by day (none after 4000 days).
        fn reference_add(cal: &OfficeCalendar, start: i64, duration: i64) -> Option<i64> {
            let mut rest = duration;
            let first = reference_day(cal, start);
            for day in first..first + 4000 {
                for (open, close) in reference_hours(cal, day) {
                    if close > start {
                        let from = open.max(start);
                        if rest <= close - from {
                            return Some(from + rest);
                        }
                        rest -= close - from;
                    }
                }
            }
            None
        }

        /// `elapsed`, walking day by day.
        fn reference_elapsed(cal: &OfficeCalendar, start: i64, end: i64) -> i64 {
            (reference_day(cal, start)..=reference_day(cal, end))
                .flat_map(|day| reference_hours(cal, day))
                .map(|(open, close)| (close.min(end) - open.max(start)).max(0))
                .sum()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn random_calendars_are_valid(cal in calendar()) {
                prop_assert_eq!(cal.validate(), Ok(()));
            }

            #[test]
            fn add_matches_a_day_by_day_walk(cal in calendar(), s in instant(), d in duration()) {
                if let Some(expected) = reference_add(&cal, s, d) {
                    prop_assert_eq!(DeadlineClock::OfficeHours(cal).add(s, d), expected);
                }
            }

            #[test]
            fn elapsed_matches_a_day_by_day_walk(
                cal in calendar(),
                s in instant(),
                len in prop_oneof![0..2 * DAY_MS, 0..400 * DAY_MS],
            ) {
                let clock = DeadlineClock::OfficeHours(cal.clone());
                prop_assert_eq!(clock.elapsed(s, s + len), reference_elapsed(&cal, s, s + len));
            }

            #[test]
            fn elapsed_inverts_add(cal in calendar(), s in instant(), d in duration()) {
                // Open time before the first opening at or after `s` is zero, so counting from
                // `s` and from that opening agree.
                let clock = DeadlineClock::OfficeHours(cal);
                let due = clock.add(s, d);
                prop_assert!(due >= s);
                prop_assert_eq!(clock.elapsed(s, due), d);
                prop_assert_eq!(clock.elapsed(clock.add(s, 0), due), d);
                let wall = DeadlineClock::WallClock;
                prop_assert_eq!(wall.elapsed(s, wall.add(s, d)), d);
            }

            #[test]
            fn add_and_sub_are_monotonic(
                cal in calendar(),
                s in instant(),
                t in instant(),
                d1 in duration(),
                d2 in duration(),
            ) {
                let clock = DeadlineClock::OfficeHours(cal);
                let (short, long) = (d1.min(d2), d1.max(d2));
                prop_assert!(clock.add(s, short) <= clock.add(s, long));
                prop_assert!(clock.sub(s, short) >= clock.sub(s, long));
                let (early, late) = (s.min(t), s.max(t));
                prop_assert!(clock.add(early, d1) <= clock.add(late, d1));
                prop_assert!(clock.sub(early, d1) <= clock.sub(late, d1));
            }

            #[test]
            fn sub_round_trips(cal in calendar(), s in instant(), d in duration()) {
                let clock = DeadlineClock::OfficeHours(cal);
                // Back from a deadline lands on the first open instant at or after the start
                // (never before the start); for a zero duration, `sub(x, 0) == x` at any `x`
                // where the office is open.
                let first_open = clock.add(s, 0);
                prop_assert!(first_open >= s);
                prop_assert_eq!(clock.sub(clock.add(s, d), d), first_open);
                // From any end instant: `sub` counts exactly `d`, and forward again lands at the
                // end itself or at the closing just before it, with no open time in between.
                let e = s;
                let warn = clock.sub(e, d);
                prop_assert!(warn <= e);
                prop_assert_eq!(clock.elapsed(warn, e), d);
                if d > 0 {
                    let back = clock.add(warn, d);
                    prop_assert!(back <= e);
                    prop_assert_eq!(clock.elapsed(back, e), 0);
                    prop_assert_eq!(back, clock.sub(back, 0));
                }
                let wall = DeadlineClock::WallClock;
                prop_assert_eq!(wall.sub(wall.add(s, d), d), s);
            }

            #[test]
            fn is_open_agrees_with_elapsed(cal in calendar(), t in instant(), d in 1..=LONGEST) {
                let open = cal.is_open(t);
                let clock = DeadlineClock::OfficeHours(cal.clone());
                prop_assert_eq!(open, clock.elapsed(t, t + 1) == 1);
                prop_assert_eq!(open, clock.add(t, 0) == t);
                // A deadline lies where the office was open just before it.
                let due = clock.add(t, d);
                prop_assert!(cal.is_open(due - 1));
                prop_assert!(cal.is_open(clock.sub(t, d)));
            }

            #[test]
            fn elapsed_is_additive(cal in calendar(), a in instant(), b in instant(), c in instant()) {
                let mut v = [a, b, c];
                v.sort_unstable();
                let clock = DeadlineClock::OfficeHours(cal);
                prop_assert_eq!(
                    clock.elapsed(v[0], v[2]),
                    clock.elapsed(v[0], v[1]) + clock.elapsed(v[1], v[2])
                );
            }
        }

        #[test]
        fn minute_by_minute_agreement_around_national_day() {
            // Every minute from 2026-09-20 to 2026-10-20 with the holiday calendar.
            let cal = typical_with_holidays();
            let clock = DeadlineClock::OfficeHours(cal.clone());
            let start = at(2026, 9, 20, 0, 0);
            let mut counted = 0;
            let mut t = start;
            while t < at(2026, 10, 20, 0, 0) {
                let open = cal.is_open(t);
                assert_eq!(clock.elapsed(t, t + MIN), if open { MIN } else { 0 }, "{t}");
                if open {
                    counted += MIN;
                    assert_eq!(clock.add(start, counted), t + MIN);
                }
                t += MIN;
            }
            assert_eq!(clock.elapsed(start, t), counted);
        }
    }
}
