//! Tables, durations and timestamps for humans.

use std::io::{self, Write};

/// How a column is aligned.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A table of text, columns sized to their widest cell, two spaces apart.
#[derive(Debug)]
pub(crate) struct Table {
    header: Option<Vec<String>>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new<const N: usize>(columns: [(&str, Align); N]) -> Self {
        Table {
            header: Some(columns.iter().map(|(h, _)| (*h).to_owned()).collect()),
            align: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    /// Two left-aligned columns without a header (key, value).
    pub(crate) fn plain() -> Self {
        Table {
            header: None,
            align: vec![Align::Left, Align::Left],
            rows: Vec::new(),
        }
    }

    pub(crate) fn row<const N: usize>(&mut self, cells: [String; N]) {
        // Control characters would break the layout (and the terminal).
        self.rows.push(
            cells
                .into_iter()
                .map(|c| {
                    c.chars()
                        .map(|ch| if ch.is_control() { ' ' } else { ch })
                        .collect()
                })
                .collect(),
        );
    }

    pub(crate) fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let all = || self.header.iter().chain(&self.rows);
        let widths: Vec<usize> = (0..self.align.len())
            .map(|i| all().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for row in all() {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                let last = i + 1 == row.len();
                if i > 0 {
                    line.push_str("  ");
                }
                match self.align[i] {
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                    Align::Left => {
                        line.push_str(cell);
                        if !last {
                            line.extend(std::iter::repeat_n(' ', pad));
                        }
                    }
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `850µs`, `12.3ms`, `1.25s`, `3m07s`, `2h05m`.
pub(crate) fn format_duration(micros: i64) -> String {
    let us = micros.max(0);
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        1_000_000..60_000_000 => format!("{:.2}s", us as f64 / 1e6),
        _ => {
            let s = us / 1_000_000;
            if s < 3600 {
                format!("{}m{:02}s", s / 60, s % 60)
            } else {
                format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
            }
        }
    }
}

/// Microseconds since the Unix epoch as `2026-11-21 23:24:25.123Z` (UTC).
pub(crate) fn format_time(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let millis = micros.rem_euclid(1_000_000) / 1000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// At most `max` characters, with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_well() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00.000Z");
        // 2024-02-29 12:34:56.789 UTC, a leap day.
        assert_eq!(
            format_time(1_709_210_096_789_000),
            "2024-02-29 12:34:56.789Z"
        );
        assert_eq!(format_duration(850), "850µs");
        assert_eq!(format_duration(12_345), "12.3ms");
        assert_eq!(format_duration(1_250_000), "1.25s");
        assert_eq!(format_duration(187_000_000), "3m07s");
        assert_eq!(format_duration(7_500_000_000), "2h05m");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn tables_align_their_columns() {
        let mut t = Table::new([("NAME", Align::Left), ("N", Align::Right)]);
        t.row(["a".into(), "10".into()]);
        t.row(["long name".into(), "2".into()]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME        N\na          10\nlong name   2\n"
        );
    }
}
