//! Text for terminals: sanitising what comes from the database, tables,
//! durations and timestamps, and JSON that escapes every control character.
//!
//! Everything read from a database (ids, action names, task keys, errors,
//! results) may hold any character, a terminal escape sequence included;
//! [`clean`] makes it inert before it is printed, and [`Guard`] catches
//! anything that slipped past on its way to the terminal.

use std::io::{self, Write};

use comfy_table::{CellAlignment, ContentArrangement, TableComponent};
use jiff::fmt::friendly::{FractionalUnit, SpanPrinter};
use jiff::{SignedDuration, Timestamp, Unit};

/// How a column is aligned.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Align {
    Left,
    Right,
}

/// Whether `c` must not reach a terminal as it is: control characters
/// (C0, DEL, C1: escape sequences start with ESC or CSI) and the
/// formatting characters that reorder text (bidirectional overrides and
/// isolates), which can make a line read other than it is.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every unsafe character written as a visible `\u{..}` escape
/// (newlines and tabs included: a value stays on its line).
pub(crate) fn clean(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, keep_newlines: bool) -> String {
    if !s.chars().any(unsafe_char) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) && !(keep_newlines && c == '\n') {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A writer that escapes, as [`clean`] does, any unsafe character other
/// than a newline that reaches it: the last line of defence between the
/// database and the terminal.
pub(crate) struct Guard<'a>(pub(crate) &'a mut dyn Write);

impl Write for Guard<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(escape(&text, true).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A table: a header row, columns sized by display width (wide and
/// combining characters included), two spaces apart, no borders.
#[derive(Debug)]
pub(crate) struct Table {
    inner: comfy_table::Table,
    align: Vec<Align>,
    has_header: bool,
    empty: bool,
}

impl Table {
    pub(crate) fn new<'a>(columns: impl IntoIterator<Item = (&'a str, Align)>) -> Self {
        let columns: Vec<(&str, Align)> = columns.into_iter().collect();
        let mut table = Self::bare(columns.iter().map(|(_, a)| *a).collect());
        table.inner.set_header(columns.iter().map(|(h, a)| {
            comfy_table::Cell::new(h).set_alignment(match a {
                Align::Left => CellAlignment::Left,
                Align::Right => CellAlignment::Right,
            })
        }));
        table.has_header = true;
        table
    }

    /// Two left-aligned columns without a header (key, value).
    pub(crate) fn plain() -> Self {
        Self::bare(vec![Align::Left, Align::Left])
    }

    fn bare(align: Vec<Align>) -> Self {
        let mut inner = comfy_table::Table::new();
        inner
            .load_preset(comfy_table::presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled);
        for component in [
            TableComponent::LeftBorder,
            TableComponent::RightBorder,
            TableComponent::TopBorder,
            TableComponent::BottomBorder,
            TableComponent::HeaderLines,
            TableComponent::HorizontalLines,
            TableComponent::VerticalLines,
            TableComponent::LeftHeaderIntersection,
            TableComponent::RightHeaderIntersection,
            TableComponent::MiddleHeaderIntersections,
            TableComponent::TopBorderIntersections,
            TableComponent::BottomBorderIntersections,
            TableComponent::LeftBorderIntersections,
            TableComponent::RightBorderIntersections,
            TableComponent::MiddleIntersections,
            TableComponent::TopLeftCorner,
            TableComponent::TopRightCorner,
            TableComponent::BottomLeftCorner,
            TableComponent::BottomRightCorner,
        ] {
            inner.remove_style(component);
        }
        Table {
            inner,
            align,
            has_header: false,
            empty: true,
        }
    }

    /// Add a row; every cell is [`clean`]ed.
    pub(crate) fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        let cells: Vec<String> = cells.into_iter().collect();
        self.inner
            .add_row(cells.iter().map(|c| clean(c)).collect::<Vec<_>>());
        self.empty = false;
    }

    pub(crate) fn write(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if self.empty && !self.has_header {
            return Ok(());
        }
        let last = self.align.len().saturating_sub(1);
        for (i, align) in self.align.iter().enumerate() {
            if let Some(column) = self.inner.column_mut(i) {
                // No separators: two spaces of padding set columns apart.
                column.set_padding((0, if i == last { 0 } else { 2 }));
                column.set_cell_alignment(match align {
                    Align::Left => CellAlignment::Left,
                    Align::Right => CellAlignment::Right,
                });
            }
        }
        writeln!(out, "{}", self.inner.trim_fmt())
    }
}

/// `850µs`, `12.3ms`, `1.25s`, `3m 7s`, `2h 5m`: a duration in
/// microseconds for people (negative ones are shown as `-`).
pub(crate) fn format_duration(micros: i64) -> String {
    if micros < 0 {
        return "-".to_owned();
    }
    let d = SignedDuration::from_micros(micros);
    let (printer, d) = match micros {
        0..1_000 => (SpanPrinter::new(), d),
        1_000..1_000_000 => (
            SpanPrinter::new()
                .fractional(Some(FractionalUnit::Millisecond))
                .precision(Some(1)),
            d,
        ),
        1_000_000..60_000_000 => (
            SpanPrinter::new()
                .fractional(Some(FractionalUnit::Second))
                .precision(Some(2)),
            d,
        ),
        60_000_000..3_600_000_000 => (SpanPrinter::new(), d.round(Unit::Second).unwrap_or(d)),
        _ => (SpanPrinter::new(), d.round(Unit::Minute).unwrap_or(d)),
    };
    let mut text = String::new();
    match printer.print_duration(&d, &mut text) {
        Ok(()) => text,
        Err(_) => format!("{micros}µs"),
    }
}

/// Microseconds since the Unix epoch as `2026-11-21 23:24:25.123Z` (UTC);
/// a value out of any calendar's range is shown as it is, not as a date.
pub(crate) fn format_time(micros: i64) -> String {
    match Timestamp::from_microsecond(micros) {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M:%S%.3fZ").to_string(),
        Err(_) => format!("(invalid time {micros})"),
    }
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

// ===== JSON =====

/// serde_json's pretty output, with every unsafe character in a string
/// written as a `\uXXXX` escape (serde_json escapes only C0 controls, so
/// DEL, C1 controls such as CSI, and bidirectional overrides would reach
/// the terminal raw).
pub(crate) struct SafeJson(serde_json::ser::PrettyFormatter<'static>);

impl SafeJson {
    pub(crate) fn new() -> Self {
        SafeJson(serde_json::ser::PrettyFormatter::new())
    }
}

impl serde_json::ser::Formatter for SafeJson {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some(at) = rest.find(unsafe_char) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
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
        assert_eq!(
            format_time(i64::MAX),
            format!("(invalid time {})", i64::MAX)
        );
        assert_eq!(
            format_time(i64::MIN),
            format!("(invalid time {})", i64::MIN)
        );
        assert_eq!(format_duration(850), "850µs");
        assert_eq!(format_duration(12_345), "12.3ms");
        assert_eq!(format_duration(1_250_000), "1.25s");
        assert_eq!(format_duration(187_000_000), "3m 7s");
        assert_eq!(format_duration(7_500_000_000), "2h 5m");
        assert_eq!(format_duration(-5), "-");
        assert!(!format_duration(i64::MAX).is_empty());
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn tables_align_their_columns_by_display_width() {
        let mut t = Table::new([("NAME", Align::Left), ("N", Align::Right)]);
        t.row(["a".into(), "10".into()]);
        t.row(["long name".into(), "2".into()]);
        // Two columns wide each: the column is sized by display width.
        t.row(["水水".into(), "3".into()]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME        N\na          10\nlong name   2\n水水        3\n"
        );
    }

    #[test]
    fn unsafe_characters_are_escaped_in_text_and_json() {
        let evil = "a\u{1b}[2Jb\u{9b}c\u{7f}d\u{202e}e\nf";
        assert_eq!(clean(evil), "a\\u{1b}[2Jb\\u{9b}c\\u{7f}d\\u{202e}e\\u{a}f");
        let mut out = Vec::new();
        Guard(&mut out).write_all(evil.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\u{1b}[2Jb\\u{9b}c\\u{7f}d\\u{202e}e\nf"
        );
        let mut json = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut json, SafeJson::new());
        serde::Serialize::serialize(&serde_json::json!({ "k": evil }), &mut ser).unwrap();
        let text = String::from_utf8(json).unwrap();
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text}");
        assert!(
            text.contains("\\u009b") && text.contains("\\u202e"),
            "{text}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["k"], evil);
    }
}
