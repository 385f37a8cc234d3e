//! The query log: one JSON line per query, to standard output or a file.
//!
//! Cheap on the query path: a line is handed over as a fixed-size [`Entry`] (the name's wire
//! bytes copied into an array, the time as a clock reading, the view and endpoint set as
//! indices into the policy it came from) through a bounded queue to the writer thread, which
//! does all the formatting and writing. Nothing is allocated or formatted per line by the
//! thread answering the query.
//!
//! Floods are sampled, not queued: per thread, at most `sample_per_second` lines a second for
//! each (view, registrable domain); the rest are counted and, when the second is over, one
//! summary line says how many of that view's and domain's lines were left out
//! (`"sampled_out": N`). A stuck app or a DGA flood then costs a counter, not the disk.
//!
//! Never lies: every line lost — the queue full, or a write failing (disk full) — is counted
//! (`dnsfence_querylog_dropped_total`), and sampled-out lines have their own counter.
//! [`QueryLog::reopen`] (SIGHUP) closes and reopens the file, as logrotate's default expects.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::base::outcome::{Reason, Verdict};
use crate::catalog::policy::Policy;
use crate::config::{LogLevel, QueryLogConfig};
use crate::resolve::answer::Answer;

/// Lines buffered before new ones are dropped (and counted).
const QUEUE: usize = 8192;
/// Keys a thread tracks per second for sampling; past it, one shared key.
const SAMPLE_KEYS: usize = 1024;

/// One query's log line, as the query path hands it over.
#[derive(Debug)]
pub struct Entry {
    /// When the query arrived.
    pub time: SystemTime,
    /// Client address.
    pub client: IpAddr,
    /// "udp" or "tcp".
    pub protocol: &'static str,
    /// The policy the query was decided with (view and endpoint-set indices refer to it).
    pub policy: Option<Arc<Policy>>,
    /// The view's index.
    pub view: Option<u16>,
    /// The question name in wire form (`name_len` bytes; empty without a question).
    pub name: [u8; 255],
    /// Bytes of `name` used.
    pub name_len: u8,
    /// Query type (0 without a question).
    pub qtype: u16,
    /// The decision.
    pub verdict: Verdict,
    /// The endpoint set (catalog index) that allowed the name.
    pub endpoint_set: Option<u32>,
    /// Why it was denied, refused or failed.
    pub reason: Option<Reason>,
    /// Response code sent.
    pub rcode: u16,
    /// Microseconds from arrival to the answer being handed to the socket.
    pub duration_us: u64,
    /// Whether the answer came from the cache.
    pub cache_hit: bool,
    /// Served past its expiry (RFC 8767).
    pub stale: bool,
    /// Why the firewall did not confirm the answer's addresses.
    pub fence_error: Option<&'static str>,
    /// The answer, for its CNAME chain.
    pub answer: Option<Arc<Answer>>,
}

// A line travels by value (no allocation per line); the queue's slots are sized for it.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Line(Entry),
    Summary {
        time: SystemTime,
        view: Option<(Arc<Policy>, u16)>,
        domain: String,
        sampled_out: u64,
    },
    Reopen(Option<PathBuf>),
}

/// Handle to the log writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct QueryLog {
    level: Arc<AtomicU8>,
    per_second: Arc<AtomicU32>,
    tx: SyncSender<Msg>,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    dropped: AtomicU64,
    sampled: AtomicU64,
}

fn level_code(level: LogLevel) -> u8 {
    match level {
        LogLevel::None => 0,
        LogLevel::Denied => 1,
        LogLevel::All => 2,
    }
}

impl QueryLog {
    /// Starts the writer thread for `config` (it opens the file now when anything is logged,
    /// so that a bad path fails start-up).
    pub fn start(config: &QueryLogConfig) -> std::io::Result<QueryLog> {
        let out = match config.level {
            LogLevel::None => None,
            _ => Some(open(config.path.as_deref())?),
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let path = config.path.clone();
        std::thread::Builder::new()
            .name("dnsfence-log".into())
            .spawn(move || write_lines(rx, out, path, &thread_counters))?;
        Ok(QueryLog {
            level: Arc::new(AtomicU8::new(level_code(config.level))),
            per_second: Arc::new(AtomicU32::new(config.sample_per_second)),
            tx,
            counters,
        })
    }

    /// Whether a query with this verdict is logged at the current level; lets the caller skip
    /// building the entry.
    pub fn wants(&self, verdict: Verdict) -> bool {
        match self.level.load(Ordering::Relaxed) {
            0 => false,
            2 => true,
            _ => matches!(
                verdict,
                Verdict::Denied | Verdict::WouldDeny | Verdict::Refused
            ),
        }
    }

    /// Applies a reloaded `[query_log]`: the level at once, the path (and a fresh file handle,
    /// for logrotate) through the writer.
    pub fn reconfigure(&self, config: &QueryLogConfig) {
        self.level
            .store(level_code(config.level), Ordering::Relaxed);
        self.per_second
            .store(config.sample_per_second, Ordering::Relaxed);
        self.reopen(config.path.clone());
    }

    /// Closes and reopens the file (creating it if it was moved away), at `path`.
    pub fn reopen(&self, path: Option<PathBuf>) {
        // A control message may wait for room: it is sent by a reload, not by a query.
        let _ = self.tx.send(Msg::Reopen(path));
    }

    /// Queues one line, unless this thread has logged `sample_per_second` lines for the view
    /// and registrable domain this second (then it is counted, and summarized later). Never
    /// blocks.
    pub fn log(&self, entry: Entry, domain: &str) {
        let key_view = entry.view;
        let policy = entry.policy.clone();
        let second = entry
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let pass = SAMPLER.with(|s| {
            let mut s = s.borrow_mut();
            if s.second != second {
                for summary in s.roll(second) {
                    self.send(summary);
                }
            }
            let per_second = self.per_second.load(Ordering::Relaxed);
            s.admit(key_view, policy, domain, per_second)
        });
        if pass {
            self.send(Msg::Line(entry));
        } else {
            self.counters.sampled.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn send(&self, msg: Msg) {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines per second per view and domain, per thread.
    pub fn per_second(&self) -> u32 {
        self.per_second.load(Ordering::Relaxed)
    }

    /// Lines lost: the queue was full, or writing failed (disk full, file gone).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Lines left out by sampling (and summarized).
    pub fn sampled(&self) -> u64 {
        self.counters.sampled.load(Ordering::Relaxed)
    }
}

/// Per-thread sampling state for the current second.
#[derive(Default)]
struct Sampler {
    second: u64,
    /// By a hash of (view, domain): a collision only merges two keys' allowances.
    keys: HashMap<u64, Tally, rustc_hash::FxBuildHasher>,
}

struct Tally {
    written: u64,
    left_out: u64,
    view: Option<u16>,
    domain: Box<str>,
    policy: Option<Arc<Policy>>,
}

thread_local! {
    static SAMPLER: RefCell<Sampler> = RefCell::new(Sampler::default());
}

impl Sampler {
    /// Starts `second`; returns the summaries of the keys that had lines left out before.
    fn roll(&mut self, second: u64) -> Vec<Msg> {
        let time = UNIX_EPOCH + Duration::from_secs(self.second + 1);
        self.second = second;
        self.keys
            .drain()
            .filter(|(_, t)| t.left_out > 0)
            .map(|(_, t)| Msg::Summary {
                time,
                view: t.view.zip(t.policy).map(|(v, p)| (p, v)),
                domain: t.domain.into(),
                sampled_out: t.left_out,
            })
            .collect()
    }

    /// Whether one more line of (view, domain) may be written this second.
    fn admit(
        &mut self,
        view: Option<u16>,
        policy: Option<Arc<Policy>>,
        domain: &str,
        per_second: u32,
    ) -> bool {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = rustc_hash::FxBuildHasher.build_hasher();
        view.hash(&mut h);
        domain.hash(&mut h);
        let mut key = h.finish();
        let domain = if self.keys.len() >= SAMPLE_KEYS && !self.keys.contains_key(&key) {
            // Too many keys this second: the rest share one allowance.
            key = u64::MAX;
            "_other"
        } else {
            domain
        };
        let t = self.keys.entry(key).or_insert_with(|| Tally {
            written: 0,
            left_out: 0,
            view,
            domain: domain.into(),
            policy,
        });
        if t.written < u64::from(per_second) {
            t.written += 1;
            true
        } else {
            t.left_out += 1;
            false
        }
    }
}

fn open(path: Option<&Path>) -> std::io::Result<Box<dyn std::io::Write + Send>> {
    Ok(match path {
        None => Box::new(std::io::stdout()),
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
        ),
    })
}

/// The writer thread: formats and writes every line it is handed, in batches.
fn write_lines(
    rx: Receiver<Msg>,
    mut out: Option<Box<dyn std::io::Write + Send>>,
    mut path: Option<PathBuf>,
    counters: &Counters,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut scratch = Scratch::default();
    let mut pending = 0u64;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(e) => {
                    format_entry(&mut buf, &mut scratch, &e);
                    pending += 1;
                }
                Msg::Summary {
                    time,
                    view,
                    domain,
                    sampled_out,
                } => {
                    format_summary(
                        &mut buf,
                        &mut scratch,
                        time,
                        view.as_ref(),
                        &domain,
                        sampled_out,
                    );
                    pending += 1;
                }
                Msg::Reopen(new) => {
                    flush(&mut out, path.as_deref(), &mut buf, &mut pending, counters);
                    path = new.or(path.take());
                    match open(path.as_deref()) {
                        Ok(o) => out = Some(o),
                        Err(e) => {
                            crate::warn_limited!(error = %e, "query log: cannot reopen; keeping the old file");
                        }
                    }
                }
            }
            if buf.len() < 48 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        flush(&mut out, path.as_deref(), &mut buf, &mut pending, counters);
    }
}

/// Writes what is formatted; on failure the lines are counted as lost.
fn flush(
    out: &mut Option<Box<dyn std::io::Write + Send>>,
    path: Option<&Path>,
    buf: &mut Vec<u8>,
    pending: &mut u64,
    counters: &Counters,
) {
    if *pending == 0 {
        return;
    }
    if out.is_none() {
        // The level was raised by a reload: open the configured output now.
        *out = open(path).ok();
    }
    let ok = match out.as_mut() {
        Some(o) => o.write_all(buf).is_ok() && o.flush().is_ok(),
        None => false,
    };
    if !ok {
        counters.dropped.fetch_add(*pending, Ordering::Relaxed);
        crate::warn_limited!(lines = *pending, "query log write failed; lines were lost");
    }
    buf.clear();
    *pending = 0;
}

/// One line as written: keys in this order, optional ones left out.
#[derive(serde::Serialize)]
struct Line<'a> {
    time: &'a str,
    client: IpAddr,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    view: Option<&'a str>,
    name: &'a str,
    #[serde(rename = "type")]
    qtype: &'a str,
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_set: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    rcode: &'static str,
    duration_us: u64,
    cache_hit: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    fence_error: Option<&'static str>,
    #[serde(skip_serializing_if = "<[Box<str>]>::is_empty")]
    chain: &'a [Box<str>],
}

/// A summary of a second's sampled-out lines.
#[derive(serde::Serialize)]
struct Summary<'a> {
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    view: Option<&'a str>,
    domain: &'a str,
    sampled_out: u64,
}

/// Text a line borrows, kept between lines so the writer thread allocates nothing per line.
#[derive(Default)]
struct Scratch {
    time: String,
    name: String,
    qtype: String,
}

/// Appends `value` as one JSON line. serde_json (a dependency already) writes the escaping
/// that query names, zone ids and view names need; it formats on the writer thread, straight
/// into the batch buffer, off the query path.
fn json_line(buf: &mut Vec<u8>, value: &impl serde::Serialize) {
    let start = buf.len();
    // Serializing these plain structs into memory cannot fail; if it did, the partial line goes.
    if serde_json::to_writer(&mut *buf, value).is_ok() {
        buf.push(b'\n');
    } else {
        buf.truncate(start);
    }
}

fn format_entry(buf: &mut Vec<u8>, scratch: &mut Scratch, e: &Entry) {
    use std::fmt::Write as _;
    let name = &e.name[..e.name_len as usize];
    let policy = e.policy.as_deref();
    let Scratch {
        time,
        name: name_text,
        qtype,
    } = scratch;
    time.clear();
    crate::base::clock::rfc3339_into(time, e.time);
    name_text.clear();
    if !name.is_empty() {
        let _ = write!(name_text, "{}", crate::base::wire::WireName(name));
    }
    qtype.clear();
    if e.qtype != 0 || !name.is_empty() {
        let _ = write!(qtype, "{}", hickory_proto::rr::RecordType::from(e.qtype));
    }
    json_line(
        buf,
        &Line {
            time,
            client: e.client,
            protocol: e.protocol,
            view: policy
                .zip(e.view)
                .and_then(|(p, v)| p.views.get(v as usize))
                .map(|v| v.name.as_str()),
            name: name_text,
            qtype,
            verdict: e.verdict.as_str(),
            endpoint_set: policy
                .zip(e.endpoint_set)
                .and_then(|(p, s)| p.catalog.sets.get(s as usize))
                .map(|s| s.id.as_str()),
            reason: e.reason.map(|r| r.as_str()),
            rcode: crate::base::wire::rcode::name(e.rcode),
            duration_us: e.duration_us,
            cache_hit: e.cache_hit,
            stale: e.stale,
            fence_error: e.fence_error,
            chain: e.answer.as_ref().map_or(&[], |a| &a.chain),
        },
    );
}

fn format_summary(
    buf: &mut Vec<u8>,
    scratch: &mut Scratch,
    time: SystemTime,
    view: Option<&(Arc<Policy>, u16)>,
    domain: &str,
    sampled_out: u64,
) {
    scratch.time.clear();
    crate::base::clock::rfc3339_into(&mut scratch.time, time);
    json_line(
        buf,
        &Summary {
            time: &scratch.time,
            view: view
                .and_then(|(p, v)| p.views.get(*v as usize))
                .map(|v| v.name.as_str()),
            domain,
            sampled_out,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_with_the_optional_keys_left_out() {
        let mut s = Vec::new();
        format_summary(
            &mut s,
            &mut Scratch::default(),
            UNIX_EPOCH,
            None,
            "a\"b\\c\u{1}",
            3,
        );
        assert_eq!(
            String::from_utf8(s).unwrap(),
            "{\"time\":\"1970-01-01T00:00:00.000Z\",\"domain\":\"a\\\"b\\\\c\\u0001\",\"sampled_out\":3}\n"
        );
    }

    #[test]
    fn sampling_keeps_n_per_second_per_key_and_summarizes_the_rest() {
        let mut s = Sampler::default();
        s.roll(100);
        let admitted = (0..50)
            .filter(|_| s.admit(Some(0), None, "example.com", 10))
            .count();
        assert_eq!(admitted, 10);
        assert!(s.admit(Some(1), None, "example.com", 10), "another view");
        assert!(s.admit(Some(0), None, "example.org", 10), "another domain");
        let summaries = s.roll(101);
        let left_out: Vec<u64> = summaries
            .iter()
            .filter_map(|m| match m {
                Msg::Summary {
                    domain,
                    sampled_out,
                    ..
                } if domain == "example.com" => Some(*sampled_out),
                _ => None,
            })
            .collect();
        assert_eq!(left_out, [40]);
        assert!(s.admit(Some(0), None, "example.com", 10), "a new second");
    }
}
