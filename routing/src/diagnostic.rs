//! Errors and warnings about a topology file, each pinned to a file, line and column.
//!
//! Lines and columns are 1-based and count characters, the way editors show them.

use std::fmt;
use std::path::PathBuf;

/// How serious a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The topology is refused.
    Error,
    /// The topology is accepted, but something in it deserves a look.
    Warning,
}

/// One finding about a topology file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file, as it was named when loaded.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The text of the line, for showing the finding in context.
    #[serde(skip)]
    pub source_line: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, severity, self.message
        )
    }
}

impl Diagnostic {
    /// The finding followed by its source line and a caret under the column, as a compiler
    /// shows it.
    pub fn render(&self) -> String {
        let gutter = self.line.to_string();
        let pad = " ".repeat(gutter.len());
        let caret_pad = " ".repeat(self.column.saturating_sub(1));
        format!(
            "{self}\n{pad} |\n{gutter} | {}\n{pad} | {caret_pad}^\n",
            self.source_line.trim_end()
        )
    }
}

/// Why a topology could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read topology file {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The file is larger than [`crate::TOPOLOGY_BYTES_MAX`].
    #[error("topology file {} is {bytes} bytes; the limit is {limit}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The file was read but is not a valid topology; every error found is listed.
    #[error("{}", render_list(.errors))]
    Invalid {
        /// The errors, in file order; never empty.
        errors: Vec<Diagnostic>,
    },
}

fn render_list(errors: &[Diagnostic]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Maps byte offsets of one text to lines and columns.
pub(crate) struct SourceMap<'a> {
    file: &'a str,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceMap<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file,
            text,
            line_starts,
        }
    }

    pub(crate) fn diagnostic(
        &self,
        severity: Severity,
        offset: usize,
        message: impl Into<String>,
    ) -> Diagnostic {
        let offset = offset.min(self.text.len());
        let line_index = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let line_start = self.line_starts[line_index];
        let line_end = self.text[line_start..]
            .find('\n')
            .map_or(self.text.len(), |i| line_start + i);
        // An offset inside a multi-byte character cannot come from the parser, but a clamp
        // keeps a bad offset from panicking here.
        let before = self.text.get(line_start..offset).unwrap_or_default();
        Diagnostic {
            severity,
            file: self.file.to_owned(),
            line: line_index + 1,
            column: before.chars().count() + 1,
            message: message.into(),
            source_line: self.text[line_start..line_end].to_owned(),
        }
    }

    pub(crate) fn error(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(Severity::Error, offset, message)
    }

    pub(crate) fn warning(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(Severity::Warning, offset, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let map = SourceMap::new("t.toml", "ab\ncdé\n\nx");
        let at = |offset| {
            let d = map.error(offset, "m");
            (d.line, d.column, d.source_line)
        };
        assert_eq!(at(0), (1, 1, "ab".to_owned()));
        assert_eq!(at(3), (2, 1, "cdé".to_owned()));
        assert_eq!(at(7), (2, 4, "cdé".to_owned()));
        assert_eq!(at(8), (3, 1, String::new()));
        assert_eq!(at(9), (4, 1, "x".to_owned()));
        assert_eq!(at(1000), (4, 2, "x".to_owned()));
    }

    #[test]
    fn renders_with_a_caret() {
        let map = SourceMap::new("t.toml", "cost = 0\n");
        let rendered = map.error(7, "bad cost").render();
        assert!(rendered.starts_with("t.toml:1:8: error: bad cost\n"));
        assert!(rendered.contains("1 | cost = 0\n  |        ^"));
    }
}
