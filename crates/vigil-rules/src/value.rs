//! Typed comparisons: numbers (`lt`…`gte`), time parts (`minute`…`year`) and
//! networks (`cidr`).

use crate::event::FieldValue;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl CmpOp {
    pub(crate) fn parse(s: &str) -> Option<CmpOp> {
        Some(match s {
            "lt" => CmpOp::Lt,
            "lte" => CmpOp::Lte,
            "gt" => CmpOp::Gt,
            "gte" => CmpOp::Gte,
            _ => return None,
        })
    }

    /// Also `eq` and `neq`, as correlation conditions allow.
    pub(crate) fn parse_condition(s: &str) -> Option<CmpOp> {
        match s {
            "eq" => Some(CmpOp::Eq),
            "neq" => Some(CmpOp::Neq),
            other => CmpOp::parse(other),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Neq => "neq",
            CmpOp::Lt => "lt",
            CmpOp::Lte => "lte",
            CmpOp::Gt => "gt",
            CmpOp::Gte => "gte",
        }
    }

    pub(crate) fn holds(self, field: f64, value: f64) -> bool {
        match self {
            CmpOp::Eq => field == value,
            CmpOp::Neq => field != value,
            CmpOp::Lt => field < value,
            CmpOp::Lte => field <= value,
            CmpOp::Gt => field > value,
            CmpOp::Gte => field >= value,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimePart {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

/// (year, month, day, hour, minute) of a civil date.
type Civil = (i64, u32, u32, u32, u32);

fn civil_from_unix(secs: i64) -> Civil {
    // Howard Hinnant's days-to-civil algorithm.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, (rem / 3600) as u32, ((rem % 3600) / 60) as u32)
}

/// Parses `YYYY-MM-DD[T ]HH:MM...` (anything after the minutes is ignored).
fn civil_from_text(s: &str) -> Option<Civil> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| std::str::from_utf8(b.get(r)?).ok()?.parse::<u32>().ok();
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (y, m, d) = (i64::from(num(0..4)?), num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let (h, min) = if matches!(b.get(10), Some(b'T' | b' ')) {
        (num(11..13)?, num(14..16)?)
    } else {
        (0, 0)
    };
    Some((y, m, d, h, min))
}

/// ISO 8601 week number (1–53).
fn iso_week(y: i64, m: u32, d: u32) -> u32 {
    let days_before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let ordinal = days_before[(m - 1) as usize] + d + u32::from(leap && m > 2);
    // Weekday, Monday = 1 (Zeller-free: from days since epoch).
    let days = {
        let (yy, mm) = if m <= 2 { (y - 1, m + 12) } else { (y, m) };
        let era = yy.div_euclid(400);
        let yoe = yy - era * 400;
        let doy = (153 * (i64::from(mm) - 3) + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    };
    let weekday = ((days + 3).rem_euclid(7) + 1) as u32;
    let week = (ordinal + 10 - weekday) / 7;
    let weeks_in = |year: i64| {
        let p = |yr: i64| (yr + yr / 4 - yr / 100 + yr / 400).rem_euclid(7);
        if p(year) == 4 || p(year - 1) == 3 {
            53
        } else {
            52
        }
    };
    match week {
        0 => weeks_in(y - 1),
        w if w > weeks_in(y) => 1,
        w => w,
    }
}

impl TimePart {
    pub(crate) fn parse(s: &str) -> Option<TimePart> {
        Some(match s {
            "minute" => TimePart::Minute,
            "hour" => TimePart::Hour,
            "day" => TimePart::Day,
            "week" => TimePart::Week,
            "month" => TimePart::Month,
            "year" => TimePart::Year,
            _ => return None,
        })
    }

    /// The part of a date field: ISO 8601 text, or Unix seconds as a number.
    pub(crate) fn extract(self, v: &FieldValue<'_>) -> Option<i64> {
        let (y, m, d, h, min) = match v {
            FieldValue::Int(secs) => civil_from_unix(*secs),
            FieldValue::Str(s) => civil_from_text(s)?,
            _ => return None,
        };
        Some(match self {
            TimePart::Minute => i64::from(min),
            TimePart::Hour => i64::from(h),
            TimePart::Day => i64::from(d),
            TimePart::Week => i64::from(iso_week(y, m, d)),
            TimePart::Month => i64::from(m),
            TimePart::Year => y,
        })
    }
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: u128,
    prefix: u32,
    v6: bool,
}

fn ip_bits(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), false),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (u128::from(u32::from(v4)), false),
            None => (u128::from(v6), true),
        },
    }
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s.trim(), None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("`{s}` is not an IP network"))?;
        let (addr, v6) = ip_bits(ip);
        let max = if v6 { 128 } else { 32 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: bad prefix length"))?,
        };
        Ok(Cidr {
            addr: addr & Self::mask(prefix, max),
            prefix,
            v6,
        })
    }

    fn mask(prefix: u32, max: u32) -> u128 {
        if prefix == 0 {
            0
        } else {
            (u128::MAX << (128 - prefix)) >> (128 - max)
        }
    }

    pub(crate) fn contains_text(&self, s: &str) -> bool {
        let t = s.trim().trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = t.parse::<IpAddr>() else {
            return false;
        };
        let (bits, v6) = ip_bits(ip);
        let max = if self.v6 { 128 } else { 32 };
        v6 == self.v6 && bits & Self::mask(self.prefix, max) == self.addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn cidr_v4_v6_and_mapped() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains_text("10.1.2.3"));
        assert!(c.contains_text("::ffff:10.9.9.9"));
        assert!(!c.contains_text("11.0.0.1"));
        assert!(!c.contains_text("not an ip"));
        let six = Cidr::parse("fe80::/10").unwrap();
        assert!(six.contains_text("fe80::1"));
        assert!(!six.contains_text("10.1.2.3"));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains_text("8.8.8.8"));
        assert!(Cidr::parse("1.2.3.4/33").is_err());
        assert!(Cidr::parse("1.2.3").is_err());
        assert!(Cidr::parse("1.2.3.4").unwrap().contains_text("1.2.3.4"));
    }

    #[test]
    fn time_parts() {
        let v = FieldValue::Str(Cow::Borrowed("2024-12-30T23:59:01Z"));
        assert_eq!(TimePart::Hour.extract(&v), Some(23));
        assert_eq!(TimePart::Minute.extract(&v), Some(59));
        assert_eq!(
            TimePart::Week.extract(&v),
            Some(1),
            "30 Dec 2024 is in ISO week 1 of 2025"
        );
        assert_eq!(TimePart::Year.extract(&FieldValue::Int(0)), Some(1970));
        assert_eq!(
            TimePart::Day.extract(&FieldValue::Int(86_400 * 31)),
            Some(1)
        );
        assert_eq!(
            TimePart::Week.extract(&FieldValue::Str(Cow::Borrowed("2021-01-03"))),
            Some(53)
        );
        assert_eq!(
            TimePart::Month.extract(&FieldValue::Str(Cow::Borrowed("garbage"))),
            None
        );
    }
}
