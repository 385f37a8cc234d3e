//! The one error shape for a file an admin writes (the config, a zone file): it names the file,
//! the line and the offending entry, as `file:line: 'entry': reason`.

use std::path::{Path, PathBuf};

use toml::Spanned;

/// An error in a config or zone file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file (or directory) could not be read.
    #[error("{path}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not TOML, or not the file's shape.
    #[error("{path}:{line}: {}", excerpt_lines(message))]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A value is invalid.
    #[error("{path}:{line}: '{}': {reason}", excerpt(entry))]
    Entry {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The offending value as written.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
}

impl FileError {
    /// Reading `path` failed.
    pub fn io(path: &Path, source: std::io::Error) -> FileError {
        FileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The TOML parser refused `text`, the contents of `path`.
    pub fn syntax(path: &Path, text: &str, e: &toml::de::Error) -> FileError {
        FileError::Syntax {
            path: path.to_path_buf(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().to_string(),
        }
    }

    /// The value `s` of `text`, the contents of `path`, is refused for `reason`.
    pub fn entry(path: &Path, text: &str, s: &Spanned<String>, reason: String) -> FileError {
        FileError::Entry {
            path: path.to_path_buf(),
            line: line_of(text, s.span().start),
            entry: s.get_ref().clone(),
            reason,
        }
    }
}

/// How much of an offending value a message quotes.
pub const EXCERPT_CHARS: usize = 80;

/// A value as a message quotes it: control characters escaped, at most [`EXCERPT_CHARS`]
/// characters, then a count of the rest — a 10 MB value gives a one-line error, not 10 MB.
pub fn excerpt(value: &str) -> String {
    excerpt_to(value, EXCERPT_CHARS)
}

/// The same, at most `max` characters.
pub fn excerpt_to(value: &str, max: usize) -> String {
    let mut out = String::new();
    for (shown, c) in value.chars().enumerate() {
        if shown == max {
            let rest = value.chars().count() - shown;
            out.push_str(&format!("… ({rest} more characters)"));
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A parser's message, which may quote the input over several lines: each line cut to an
/// excerpt.
fn excerpt_lines(message: &str) -> String {
    message.lines().map(excerpt).collect::<Vec<_>>().join("\n")
}

/// The longest string a config or zone file may hold, key or value (the longest paths).
pub const MAX_STRING: usize = 4096;

/// Refuses a file with a string (a key or a value) longer than [`MAX_STRING`]: the tighter bounds
/// of each field (names, view names, ids) are checked where the field is, this one keeps every
/// other string short too. `text` must already parse as TOML (this runs after the typed parse).
pub fn bounded_strings(path: &Path, text: &str) -> Result<(), FileError> {
    use toml::de::{DeTable, DeValue};
    fn walk(path: &Path, text: &str, value: &toml::Spanned<DeValue<'_>>) -> Result<(), FileError> {
        let too_long = |s: &str, at: usize| FileError::Entry {
            path: path.to_path_buf(),
            line: line_of(text, at),
            entry: s.to_string(),
            reason: format!(
                "{} characters: strings here are at most {MAX_STRING}",
                s.chars().count()
            ),
        };
        match value.get_ref() {
            DeValue::String(s) if s.len() > MAX_STRING => Err(too_long(s, value.span().start)),
            DeValue::Array(items) => items.iter().try_for_each(|v| walk(path, text, v)),
            DeValue::Table(table) => {
                for (k, v) in table {
                    if k.get_ref().len() > MAX_STRING {
                        return Err(too_long(k.get_ref(), k.span().start));
                    }
                    walk(path, text, v)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    let table = DeTable::parse(text).map_err(|e| FileError::syntax(path, text, &e))?;
    let span = table.span();
    let value = toml::Spanned::new(span, DeValue::Table(table.into_inner()));
    walk(path, text, &value)
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_or_binary_value_is_quoted_short() {
        assert_eq!(excerpt("short"), "short");
        let long = "x".repeat(10_000_000);
        let e = excerpt(&long);
        assert_eq!(e, format!("{}… (9999920 more characters)", "x".repeat(80)));
        assert_eq!(excerpt("a\u{0}b\nc"), "a\\u{0}b\\nc");
    }

    #[test]
    fn every_string_of_a_file_is_bounded() {
        let p = Path::new("c.toml");
        assert!(bounded_strings(p, "[a]\nb = [\"x\", { c = \"y\" }]\n").is_ok());
        let long = "z".repeat(MAX_STRING + 1);
        let text = format!("[a]\nb = 1\nc = [\"x\",\n  \"{long}\"]\n");
        let e = bounded_strings(p, &text).unwrap_err().to_string();
        assert!(e.starts_with("c.toml:4: 'zzz"), "{e}");
        assert!(
            e.ends_with("(4017 more characters)': 4097 characters: strings here are at most 4096"),
            "{e}"
        );
        let key = format!("[a]\n\"{long}\" = 1\n");
        assert!(
            bounded_strings(p, &key)
                .unwrap_err()
                .to_string()
                .starts_with("c.toml:2:")
        );
    }
}
