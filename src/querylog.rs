//! The query log: one JSON line per query, to standard output or a file.
//!
//! Lines are handed to a writer task through a bounded channel so that a slow disk or a blocked
//! terminal never stalls the query path. When the channel is full the line is dropped and counted
//! ([`QueryLog::dropped`]); it is never silently lost.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::config::{LogLevel, QueryLogConfig};
use crate::outcome::Verdict;

/// One query's log line.
#[derive(Debug, Clone, Serialize)]
pub struct QueryRecord<'a> {
    /// RFC 3339 UTC time the query arrived.
    pub time: String,
    /// Client address.
    pub client: IpAddr,
    /// "udp" or "tcp".
    pub protocol: &'a str,
    /// View name, absent when the client is in none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<&'a str>,
    /// Query name as asked.
    pub name: String,
    /// Query type.
    #[serde(rename = "type")]
    pub qtype: String,
    /// The decision.
    pub verdict: Verdict,
    /// The matched endpoint set (first id) for allowed names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_set: Option<&'a str>,
    /// Why the query was denied, refused or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// Response code sent.
    pub rcode: &'static str,
    /// The CNAME targets from the question name to the answer (why their addresses were
    /// admitted).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub chain: &'a [Box<str>],
    /// Time from arrival to the answer being handed to the socket, in microseconds.
    pub duration_us: u64,
    /// Whether the answer came from the cache.
    pub cache_hit: bool,
    /// Served past its expiry because the upstream failed or was slow (RFC 8767).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// Why the firewall did not confirm the answer's addresses, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence_error: Option<&'static str>,
}

/// Handle to the log writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct QueryLog {
    level: LogLevel,
    tx: Option<mpsc::Sender<String>>,
    dropped: Arc<AtomicU64>,
}

/// Lines buffered before new ones are dropped (and counted).
const QUEUE: usize = 8192;

impl QueryLog {
    /// Starts the writer task for `config`. Must be called inside a tokio runtime.
    pub async fn start(config: &QueryLogConfig) -> std::io::Result<QueryLog> {
        if config.level == LogLevel::None {
            return Ok(QueryLog::disabled());
        }
        let out: Box<dyn AsyncWrite + Send + Unpin> = match &config.path {
            None => Box::new(tokio::io::stdout()),
            Some(path) => Box::new(open_append(path).await?),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_lines(rx, out));
        Ok(QueryLog {
            level: config.level,
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A log that writes nothing.
    pub fn disabled() -> QueryLog {
        QueryLog {
            level: LogLevel::None,
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether a query with this verdict is logged at the configured level; lets the caller skip
    /// building the record.
    pub fn wants(&self, verdict: Verdict) -> bool {
        match self.level {
            LogLevel::None => false,
            LogLevel::All => true,
            LogLevel::Denied => matches!(
                verdict,
                Verdict::Denied | Verdict::WouldDeny | Verdict::Refused
            ),
        }
    }

    /// Queues one record (never blocks).
    pub fn log(&self, record: &QueryRecord<'_>) {
        let Some(tx) = &self.tx else { return };
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        if tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn open_append(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

async fn write_lines(mut rx: mpsc::Receiver<String>, mut out: Box<dyn AsyncWrite + Send + Unpin>) {
    while let Some(line) = rx.recv().await {
        let mut ok = out.write_all(line.as_bytes()).await.is_ok();
        // Batch whatever else is already queued before flushing.
        while let Ok(line) = rx.try_recv() {
            ok &= out.write_all(line.as_bytes()).await.is_ok();
        }
        ok &= out.flush().await.is_ok();
        if !ok {
            tracing::warn!("query log write failed; lines are being lost");
        }
    }
}

/// Formats a time as RFC 3339 UTC with milliseconds (`2026-11-25T05:40:19.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_time() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_585_219_123);
        assert_eq!(rfc3339(t), "2026-11-25T05:40:19.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn levels() {
        let log = QueryLog {
            level: LogLevel::Denied,
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        assert!(log.wants(Verdict::Denied));
        assert!(log.wants(Verdict::WouldDeny));
        assert!(!log.wants(Verdict::Allowed));
        assert!(!QueryLog::disabled().wants(Verdict::Denied));
    }
}
