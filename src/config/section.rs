//! What every section of the config shares: the `Ctx` its validation reports through (the
//! file, its text for line numbers, its directory for relative paths), and the [`Reload`] sorting
//! of its settings into applied-in-place and needs-a-restart.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{ConfigError, Located};
use crate::base::fileerror::line_of;

/// The config file being validated.
pub(crate) struct Ctx<'a> {
    /// The file, for errors.
    pub path: &'a Path,
    /// Its text, for line numbers.
    pub text: &'a str,
    /// Its directory: relative paths are relative to it.
    pub base: &'a Path,
}

impl Ctx<'_> {
    /// The 1-based line of a value (1 for a default, which has no place in the file).
    pub fn line<T>(&self, s: &Spanned<T>) -> usize {
        line_of(self.text, s.span().start)
    }

    /// `s` is refused for `reason`.
    pub fn entry(&self, s: &Spanned<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::entry(self.path, self.text, s, reason.into())
    }

    /// A refusal at `line` of something that is not one string value (a key, a whole list).
    pub fn at(
        &self,
        line: usize,
        entry: impl Into<String>,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Entry {
            path: self.path.to_path_buf(),
            line,
            entry: entry.into(),
            reason: reason.into(),
        }
    }

    /// The value with its line, for errors found later (against the catalog).
    pub fn located(&self, s: &Spanned<String>) -> Located<String> {
        Located {
            value: s.get_ref().trim().to_string(),
            line: self.line(s),
        }
    }

    /// A number within `lo..=hi`, or an error naming `section.key` on its line.
    pub fn bounded<T>(
        &self,
        v: &Spanned<T>,
        section: &str,
        key: &str,
        lo: u64,
        hi: u64,
    ) -> Result<u64, ConfigError>
    where
        T: Copy + Into<u64> + Display,
    {
        let value: u64 = (*v.get_ref()).into();
        if (lo..=hi).contains(&value) {
            return Ok(value);
        }
        Err(self.at(
            self.line(v),
            format!("{key} = {value}"),
            format!("{section}.{key} must be between {lo} and {hi}"),
        ))
    }

    /// A path as written, relative to the config file's directory.
    pub fn path(&self, p: &Path) -> PathBuf {
        self.base.join(p)
    }
}

/// A spanned default: it has no place in the file.
pub(crate) fn default<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

/// Where each changed setting goes on a reload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Changed, and applied in place.
    pub applied: Vec<&'static str>,
    /// Changed, and held by running sockets or threads: the reload is refused.
    pub restart: Vec<&'static str>,
}

impl ReloadPlan {
    /// Sorts `key` when it `changed`: applied in place when `live`, else only by a restart.
    pub fn check(&mut self, key: &'static str, changed: bool, live: bool) {
        match (changed, live) {
            (false, _) => {}
            (true, true) => self.applied.push(key),
            (true, false) => self.restart.push(key),
        }
    }
}

/// A section whose every setting is sorted for reloads. Implementations destructure the section
/// whole, so a setting added to it does not compile until it is sorted, next to its field.
pub trait Reload {
    /// Adds to `plan` what changed from `self` to `new`.
    fn reload(&self, new: &Self, plan: &mut ReloadPlan);
}
