//! How the command line shows things to people: tables, key–value blocks,
//! times and sizes. Everything here is pure (values in, strings out), so the
//! commands' output is unit-tested without a server.

use anyhow::Result;
use serde_json::Value;

/// A table of text columns, each as wide as its widest cell, separated by two
/// spaces; the last column is not padded, so no line ends in spaces.
///
/// Written here rather than taken from `comfy-table` or `tabled`: the command
/// line needs only left-aligned columns without borders, which is twenty
/// lines, and every cell must be escaped anyway (below), which a crate would
/// not do for us.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are kept (and widen the table).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    #[cfg(test)]
    pub fn header(&self) -> &[String] {
        &self.header
    }

    #[cfg(test)]
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// The header line, then one line per row.
    pub fn lines(&self) -> Vec<String> {
        let all: Vec<Vec<String>> = std::iter::once(&self.header)
            .chain(&self.rows)
            .map(|r| r.iter().map(|c| clean(c)).collect())
            .collect();
        let columns = all.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for r in &all {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        all.iter().map(|r| padded(&widths, r)).collect()
    }
}

/// One line of cells already cleaned: every column but the last padded to
/// its width (a wider cell pushes the rest right), two spaces between.
fn padded(widths: &[usize], cells: &[String]) -> String {
    let columns = widths.len().max(cells.len());
    let mut line = String::new();
    for i in 0..columns {
        let cell = cells.get(i).map_or("", String::as_str);
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(cell);
        if i + 1 < columns {
            let w = widths.get(i).copied().unwrap_or(0);
            line.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(cell.chars().count()),
            ));
        }
    }
    line.truncate(line.trim_end().len());
    line
}

/// A table row printed on its own, for output that streams (`hunt search`,
/// `hunt watch`): rows cannot wait for the widest cell, so the columns have
/// fixed widths, and a wider cell pushes the rest of its row right.
pub fn row_line(widths: &[usize], cells: &[String]) -> String {
    let cells: Vec<String> = cells.iter().map(|c| clean(c)).collect();
    padded(widths, &cells)
}

/// Key–value lines (`Name       value`), the keys padded to one width: the
/// form of `show` commands.
pub fn fields(pairs: &[(&str, String)]) -> Vec<String> {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| {
            let line = format!("{k:<width$}  {}", clean(v));
            line.trim_end().to_owned()
        })
        .collect()
}

/// Writes lines to standard output (a closed pipe ends the command quietly, see `out!`).
pub fn print(lines: &[String]) -> Result<()> {
    for l in lines {
        out!("{l}");
    }
    Ok(())
}

pub use vigil_evaluate::clean;

/// A Unix time in nanoseconds as RFC 3339 UTC (empty if out of range).
pub fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A time for a table: `-` when the schema says 0 means none.
pub fn time_or_dash(ns: i64) -> String {
    if ns == 0 { "-".into() } else { rfc3339(ns) }
}

/// An expiry time: `never` for 0.
pub fn expiry(ns: i64) -> String {
    if ns == 0 { "never".into() } else { rfc3339(ns) }
}

/// A time for JSON: RFC 3339, or `null` for 0 (the `_unix_ns` field beside it keeps the number).
pub fn time_json(ns: i64) -> Value {
    if ns == 0 {
        Value::Null
    } else {
        Value::String(rfc3339(ns))
    }
}

/// Bytes in binary units, one decimal from KiB up: `0 B`, `1023 B`, `1.0 KiB`, `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // Exact unit choice in integers; the float only formats the quotient.
    let mut unit = 0;
    let mut scale: u64 = 1024;
    while unit + 1 < UNITS.len() && n / scale >= 1024 {
        scale *= 1024;
        unit += 1;
    }
    let v = n as f64 / scale as f64;
    // 1023.96 KiB would print as "1024.0 KiB": say 1.0 MiB instead.
    if format!("{v:.1}") == "1024.0" && unit + 1 < UNITS.len() {
        return format!("1.0 {}", UNITS[unit + 1]);
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A device as people name it: its hostname, or its id when the hostname is not known.
pub fn host_or_id<'a>(hostname: &'a str, device_id: &'a str) -> &'a str {
    if hostname.is_empty() {
        device_id
    } else {
        hostname
    }
}

/// Text, or `-` when empty.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_owned()
    }
}

/// A time bound as given on the command line, in Unix nanoseconds: RFC 3339
/// (`2026-12-07T10:00:00Z`), or a duration back from `now_ns` in seconds,
/// minutes, hours or days (`90s`, `15m`, `2h`, `7d`).
pub fn parse_time(s: &str, now_ns: i64) -> Result<i64> {
    use anyhow::Context as _;
    let s = s.trim();
    if let Some((n, unit)) = s
        .find(|c: char| !c.is_ascii_digit())
        .filter(|&i| i > 0 && i + 1 == s.len())
        .map(|i| s.split_at(i))
    {
        let seconds: i64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => anyhow::bail!("time `{s}`: unknown unit `{unit}` (s, m, h, d)"),
        };
        let back = n
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(seconds))
            .and_then(|s| s.checked_mul(1_000_000_000))
            .and_then(|ns| now_ns.checked_sub(ns))
            .filter(|&t| t > 0)
            .with_context(|| format!("time `{s}`: too far back"))?;
        return Ok(back);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!("time `{s}`: expected RFC 3339 (2026-12-07T10:00:00Z) or a duration back from now (90s, 15m, 2h, 7d)")
        })?;
    i64::try_from(t.unix_timestamp_nanos())
        .ok()
        .filter(|&t| t > 0)
        .with_context(|| format!("time `{s}`: out of range"))
}

/// Now, in Unix nanoseconds (for [`parse_time`]).
pub fn now_ns() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// `yes` / `no`.
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_every_column_but_the_last() {
        let mut t = Table::new(&["id", "name", "size"]);
        t.row(vec!["t1".into(), "Acme".into(), "1.0 KiB".into()]);
        t.row(vec!["tenant-2".into(), "B".into(), "0 B".into()]);
        assert_eq!(
            t.lines(),
            [
                "id        name  size",
                "t1        Acme  1.0 KiB",
                "tenant-2  B     0 B",
            ]
        );
    }

    #[test]
    fn table_lines_never_end_in_spaces_and_short_rows_are_padded() {
        let mut t = Table::new(&["a", "b"]);
        t.row(vec!["x".into(), String::new()]);
        t.row(vec!["long".into()]);
        assert_eq!(t.lines(), ["a     b", "x", "long"]);
    }

    #[test]
    fn table_escapes_control_characters_in_cells() {
        let mut t = Table::new(&["host", "n"]);
        t.row(vec!["evil\n\u{1b}[2J".into(), "1".into()]);
        let lines = t.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], "evil\\n\\u{1b}[2J  1");
    }

    #[test]
    fn table_widths_count_characters_not_bytes() {
        let mut t = Table::new(&["name", "x"]);
        t.row(vec!["Zürich".into(), "1".into()]);
        assert_eq!(t.lines(), ["name    x", "Zürich  1"]);
    }

    #[test]
    fn streamed_rows_have_fixed_widths_and_wider_cells_push() {
        let w = [4, 3];
        assert_eq!(
            row_line(&w, &["a".into(), "b".into(), "c".into()]),
            "a     b    c"
        );
        assert_eq!(
            row_line(&w, &["abcdef".into(), "b".into(), "c".into()]),
            "abcdef  b    c"
        );
        assert_eq!(row_line(&w, &["a\n".into(), String::new()]), "a\\n");
    }

    const NOW: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn times_are_rfc3339_or_back_from_now() {
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", 0).unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20.5+01:00", 0).unwrap(),
            1_700_000_000_500_000_000
        );
        assert_eq!(parse_time("90s", NOW).unwrap(), NOW - 90_000_000_000);
        assert_eq!(parse_time("15m", NOW).unwrap(), NOW - 900_000_000_000);
        assert_eq!(parse_time("2h", NOW).unwrap(), NOW - 7_200_000_000_000);
        assert_eq!(parse_time("7d", NOW).unwrap(), NOW - 604_800_000_000_000);
        assert_eq!(parse_time("0s", NOW).unwrap(), NOW);
    }

    #[test]
    fn bad_times_say_what_is_accepted() {
        for bad in [
            "",
            "yesterday",
            "2h30m",
            "h",
            "-5m",
            "5w",
            "2023-11-14",
            "10",
        ] {
            let e = parse_time(bad, NOW).unwrap_err().to_string();
            assert!(e.contains("time `"), "{bad}: {e}");
        }
        assert!(
            parse_time("5w", NOW)
                .unwrap_err()
                .to_string()
                .contains("unit")
        );
        // Before the epoch, or overflowing: refused, not wrapped.
        assert!(parse_time("99999999999999d", NOW).is_err());
        assert!(parse_time("20000d", NOW).is_err());
    }

    #[test]
    fn fields_align_keys() {
        assert_eq!(
            fields(&[("Tenant", "t1".into()), ("Retention", "90 days".into())]),
            ["Tenant     t1", "Retention  90 days"]
        );
    }

    #[test]
    fn human_bytes_at_the_unit_edges() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_bytes(1024 * 1024), "1.0 MiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024 + 1), "5.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn zero_times_are_dash_never_or_null() {
        assert_eq!(time_or_dash(0), "-");
        assert_eq!(expiry(0), "never");
        assert_eq!(time_json(0), Value::Null);
        assert_eq!(
            time_or_dash(1_700_000_000_000_000_000),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(expiry(1_700_000_000_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            time_json(1_700_000_000_500_000_000),
            Value::String("2023-11-14T22:13:20.5Z".into())
        );
    }
}
