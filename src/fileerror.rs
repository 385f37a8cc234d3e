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
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A value is invalid.
    #[error("{path}:{line}: '{entry}': {reason}")]
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

/// 1-based line number of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}
