//! Files of deltas as `export` writes them and `import` reads them: JSON lines, one
//! delta per line, gzip-compressed when the name ends in `.gz`; `-` is stdin or stdout.
//!
//! Reading is bounded: a line is held whole only up to [`MAX_LINE`] bytes; a longer one
//! is passed over (and reported) without being kept. Offsets count bytes of the
//! uncompressed text, so a resumed import finds its place in a `.gz` file too.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::Context;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

/// The longest line kept: over any delta size a node accepts (`maxDeltaBytes` is at
/// most 16 MiB), so only garbage is passed over.
pub const MAX_LINE: usize = 16 * 1024 * 1024 + 1024;

/// Whether `path` names a gzip file.
pub fn is_gzip(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// One line of input.
pub enum Line {
    /// The line's bytes, without the newline.
    Text(Vec<u8>),
    /// A line longer than [`MAX_LINE`], passed over.
    TooLong(u64),
}

/// JSON lines from a file (plain or gzip) or stdin, with the offset after each line.
pub struct LineReader {
    inner: Box<dyn BufRead>,
    offset: u64,
}

impl LineReader {
    /// Opens `path` (`-` for stdin) and moves to `offset` bytes of its text.
    ///
    /// # Errors
    /// When the file cannot be opened, or is shorter than `offset`.
    pub fn open(path: &Path, offset: u64) -> anyhow::Result<LineReader> {
        if path == Path::new("-") {
            anyhow::ensure!(offset == 0, "standard input cannot be resumed");
            return Ok(LineReader {
                inner: Box::new(BufReader::new(io::stdin())),
                offset,
            });
        }
        let mut file =
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let short = |held: u64| {
            anyhow::anyhow!(
                "{} holds {held} bytes, fewer than the {offset} already imported: is it the same file? (--restart imports it from the start)",
                path.display()
            )
        };
        if !is_gzip(path) {
            let len = file.metadata()?.len();
            if len < offset {
                return Err(short(len));
            }
            file.seek(SeekFrom::Start(offset))?;
            return Ok(LineReader {
                inner: Box::new(BufReader::new(file)),
                offset,
            });
        }
        let mut inner: Box<dyn BufRead> = Box::new(BufReader::new(MultiGzDecoder::new(file)));
        // A compressed stream is read from its start up to the offset.
        let skipped = io::copy(&mut (&mut inner).take(offset), &mut io::sink())?;
        if skipped < offset {
            return Err(short(skipped));
        }
        Ok(LineReader { inner, offset })
    }

    /// Bytes of text read so far (the start of the next line).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next line, `None` at the end.
    ///
    /// # Errors
    /// Read (or decompression) errors.
    pub fn next_line(&mut self) -> io::Result<Option<Line>> {
        let mut buf = Vec::new();
        let n = (&mut self.inner)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.offset += n as u64;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(Line::Text(buf)));
        }
        if n <= MAX_LINE {
            // The last line, without a newline.
            return Ok(Some(Line::Text(buf)));
        }
        // Pass over the rest of the long line without keeping it.
        let mut len = n as u64;
        loop {
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            let (used, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            self.inner.consume(used);
            self.offset += used as u64;
            len += used as u64;
            if done {
                break;
            }
        }
        Ok(Some(Line::TooLong(len)))
    }
}

/// Where an export writes: stdout, a file, or a gzip file.
pub enum LineWriter {
    Plain(BufWriter<Box<dyn Write>>),
    Gzip(GzEncoder<BufWriter<File>>),
}

impl LineWriter {
    /// Writes to `path` (created or truncated; gzip when it ends in `.gz`), or stdout.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn create(path: Option<&Path>) -> anyhow::Result<LineWriter> {
        Ok(match path {
            None => LineWriter::Plain(BufWriter::new(Box::new(io::stdout()))),
            Some(p) if p == Path::new("-") => {
                LineWriter::Plain(BufWriter::new(Box::new(io::stdout())))
            }
            Some(p) => {
                let file =
                    File::create(p).with_context(|| format!("cannot create {}", p.display()))?;
                if is_gzip(p) {
                    LineWriter::Gzip(GzEncoder::new(BufWriter::new(file), Compression::fast()))
                } else {
                    LineWriter::Plain(BufWriter::new(Box::new(file)))
                }
            }
        })
    }

    /// Writes one line.
    ///
    /// # Errors
    /// Write errors.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        let w: &mut dyn Write = match self {
            LineWriter::Plain(w) => w,
            LineWriter::Gzip(w) => w,
        };
        w.write_all(text.as_bytes())?;
        w.write_all(b"\n")
    }

    /// Flushes everything written, ends a gzip stream, and syncs a file to disk.
    ///
    /// # Errors
    /// Write errors.
    pub fn finish(self) -> io::Result<()> {
        match self {
            LineWriter::Plain(mut w) => w.flush(),
            LineWriter::Gzip(w) => {
                let mut file = w.finish()?;
                file.flush()?;
                file.get_ref().sync_all()
            }
        }
    }
}
