//! Readable output for people: aligned columns under a header, and sizes in binary
//! units. What a script reads is the `--json` form of the same commands, never this.

use std::fmt::Write;

/// Rows under a header, each column as wide as its widest cell, two spaces apart;
/// every line starts with `indent`. Cells are single-line (control characters are
/// escaped), so one row stays one line whatever a peer put in a field.
pub fn render(indent: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let clean = |cell: &str| cell.escape_debug().to_string();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = indent.to_owned();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `bytes` in the largest binary unit that keeps it at least 1: `512 B`, `2.7 KiB`,
/// `64.0 MiB`.
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Precision beyond one decimal is not the point of a human-readable size.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units_issue_16() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(2736), "2.7 KiB");
        assert_eq!(bytes(67_108_864), "64.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn columns_line_up_under_their_header() {
        let text = render(
            "  ",
            &["NAME", "STATUS", "SENT"],
            &[
                vec!["upstream".into(), "connected".into(), "12".into()],
                vec!["b".into(), "error\nforged".into(), "0".into()],
            ],
        );
        assert_eq!(
            text,
            "  NAME      STATUS         SENT\n  \
               upstream  connected      12\n  \
               b         error\\nforged  0\n"
        );
    }
}
