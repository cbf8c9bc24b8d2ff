//! How the text log (`serve --log-format text`) writes an event's fields: like
//! tracing-subscriber's default (`message` first, then `name=value`), but with every
//! control character in a value or a message escaped (`\n`, `\r`, `\u{1b}`, `\0`...).
//!
//! Why: values in the log come from peers and files (a system id, a link name, a
//! reason, an error message). Written raw, a newline in one starts a line that looks
//! like the node's own, a carriage return rewrites the current one, and an escape
//! sequence drives the operator's terminal. Escaped, one event is always one line.
//! Validation refuses control characters in ids, but the log must not depend on every
//! value having been validated first. The JSON format escapes by itself.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

/// The field formatter of the text log (`SubscriberBuilder::fmt_fields`). It formats
/// span fields too, so a link's span (link id, remote system) is escaped as well.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'a> MakeVisitor<Writer<'a>> for EscapedFields {
    type Visitor = EscapingVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> EscapingVisitor<'a> {
        EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's (or span's) fields, separated by spaces.
pub struct EscapingVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write_field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // Metadata of events that came through the `log` crate: already shown.
        if name.starts_with("log.") {
            return;
        }
        self.result = self.write_field_inner(name, value);
    }

    fn write_field_inner(&mut self, name: &str, value: fmt::Arguments<'_>) -> fmt::Result {
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            if self.writer.has_ansi_escapes() {
                // Italic name, dimmed '=', as the default formatter paints them.
                write!(self.writer, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m")?;
            } else {
                write!(self.writer, "{name}=")?;
            }
        }
        Escaping(&mut self.writer).write_fmt(value)
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // The message reads as text; other strings are quoted, as by default.
        if field.name() == "message" {
            self.write_field(field, format_args!("{value}"));
        } else {
            self.write_field(field, format_args!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut chain = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        self.write_field(field, format_args!("{chain}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write_field(field, format_args!("{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for EscapingVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for EscapingVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// A writer that escapes control characters (and the Unicode line and paragraph
/// separators, which some viewers break lines at) on their way through.
struct Escaping<'w, W: Write>(&'w mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let needs = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
        let mut rest = s;
        while let Some(at) = rest.find(needs) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                '\0' => self.0.write_str("\\0")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Where the test subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log_text(emit: impl FnOnce()) -> String {
        log_text_with(EscapedFields, emit)
    }

    fn log_text_with<N>(fields: N, emit: impl FnOnce()) -> String
    where
        N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
    {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(fields)
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_newline_in_a_field_cannot_start_a_line_issue_14() {
        let text = log_text(|| {
            let span = tracing::info_span!("link", remote = %"peer\nINFO forged span");
            let _in = span.enter();
            tracing::warn!(
                peer = %"a\nFAKE line",
                quoted = "b\r\n",
                error = &io::Error::other("bad\u{1b}[2J\0") as &(dyn std::error::Error + 'static),
                "refused\n  INFO rhizome: all good {}",
                "\u{2028}"
            );
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with('\n'));
        for escaped in [
            r"peer=a\nFAKE line",
            r#"quoted="b\r\n""#,
            r"error=bad\u{1b}[2J\0",
            r"refused\n  INFO rhizome: all good \u{2028}",
            r"remote=peer\nINFO forged span",
        ] {
            assert!(text.contains(escaped), "no {escaped:?} in {text:?}");
        }
        assert!(!text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\0'));
    }

    #[test]
    fn plain_fields_read_as_the_default_format() {
        let emit = || {
            let span = tracing::info_span!("link", id = 7, remote = %"peer-1");
            let _in = span.enter();
            tracing::info!(link = "up", count = 3, url = %"http://h:1", r#type = "x", "opened {}", 1);
        };
        let ours = log_text(emit);
        let default = log_text_with(tracing_subscriber::fmt::format::DefaultFields::new(), emit);
        assert_eq!(ours, default);
    }
}
