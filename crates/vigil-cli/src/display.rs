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
        all.iter()
            .map(|r| {
                let mut line = String::new();
                for (i, w) in widths.iter().enumerate() {
                    let cell = r.get(i).map_or("", String::as_str);
                    if i > 0 {
                        line.push_str("  ");
                    }
                    line.push_str(cell);
                    if i + 1 < columns {
                        line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
                    }
                }
                line.truncate(line.trim_end().len());
                line
            })
            .collect()
    }
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

/// A cell as it may reach a terminal: control characters (newlines, tabs,
/// escape sequences) escaped. Hostnames, reasons and audit summaries come
/// from devices and other users; they must neither break the table into
/// more lines nor send the terminal commands.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

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
