//! `[query_log]`: the per-query JSON log.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::section::{Ctx, Reload, ReloadPlan, default};

/// Which queries get a line in the query log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// No lines.
    None,
    /// Denied, would-be-denied and refused queries.
    Denied,
    /// Every query.
    All,
}

/// `[query_log]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawQueryLog {
    level: LogLevel,
    path: Option<PathBuf>,
    sample_per_second: Spanned<u64>,
}

impl Default for RawQueryLog {
    fn default() -> Self {
        RawQueryLog {
            level: LogLevel::Denied,
            path: None,
            sample_per_second: default(20),
        }
    }
}

/// `[query_log]`.
#[derive(Debug, Clone)]
pub struct QueryLogConfig {
    /// Which queries are logged.
    pub level: LogLevel,
    /// The file lines are appended to; `None`: standard output.
    pub path: Option<PathBuf>,
    /// Lines a second per view and registrable domain before sampling.
    pub sample_per_second: u32,
}

impl RawQueryLog {
    pub(super) fn validate(&self, ctx: &Ctx) -> Result<QueryLogConfig, ConfigError> {
        Ok(QueryLogConfig {
            level: self.level,
            path: self
                .path
                .as_ref()
                .filter(|p| !p.as_os_str().is_empty() && p.as_path() != Path::new("-"))
                .map(|p| ctx.path(p)),
            sample_per_second: ctx.bounded(
                &self.sample_per_second,
                "query_log",
                "sample_per_second",
                1,
                1_000_000,
            )? as u32,
        })
    }
}

impl Reload for QueryLogConfig {
    fn reload(&self, new: &Self, plan: &mut ReloadPlan) {
        let QueryLogConfig {
            level,
            path,
            sample_per_second,
        } = self;
        // The writer thread takes the new file and level.
        plan.check("query_log.level", *level != new.level, true);
        plan.check("query_log.path", *path != new.path, true);
        plan.check(
            "query_log.sample_per_second",
            *sample_per_second != new.sample_per_second,
            true,
        );
    }
}
