//! Warm restart: on stop, the answer cache and the fence's ledger (elements, expiry, why each
//! was admitted) are written to `[server] state_dir`; at start they are read back before
//! dnsfence serves, so a restart (an upgrade, a crash recovery) is a cache hit for every device
//! and the fence can still repair the sets for what was admitted before. Unbound's
//! `dump_cache`/`load_cache` and Cilium's DNS-proxy restore are the models.
//!
//! The file (`warm-restart.state`) is written atomically (a temporary file, then a rename). Its
//! format is versioned and checked: a header (magic, version, when it was written), the elements,
//! the answers, then a checksum of all that. TTLs and timeouts count down by the time that passed
//! between stop and start; what expired in between is skipped. Answers are proven again
//! ([`Answer::restore`]: the CNAME chain from the question), elements checked against the sets
//! this config has, endpoint sets matched by id. A file that is missing, foreign, of another
//! version, corrupt or too large is ignored with a warning and a metric — never a failed start.
//! Its size is bounded by the cache size (the budget below), at writing and at reading.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::base::codec::{CodecError, Reader, Writer};
use crate::catalog::policy::Policy;
use crate::catalog::zones::Catalog;
use crate::fence::{Admission, Restored};
use crate::query::metrics::Metrics;
use crate::resolve::answer::Answer;
use crate::resolve::cache::AnswerCache;

/// The file in the state directory.
pub const FILE: &str = "warm-restart.state";
const MAGIC: &[u8; 14] = b"dnsfence-warm\n";
const VERSION: u16 = 1;

/// Bytes the file may hold for a cache of `cache_size` answers: 2 KiB an answer (the messages
/// of a cache are mostly under 1,232 bytes) and 16 MiB for the ledger.
pub fn budget(cache_size: usize) -> u64 {
    (16 << 20) + (cache_size as u64) * 2048
}

/// Why a state file was not read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No file: a first start, or warm restart was off at the last stop.
    #[error("no state file")]
    Missing,
    /// Not a dnsfence state file.
    #[error("not a dnsfence warm-restart state file")]
    Foreign,
    /// Written by a dnsfence with another format.
    #[error("format version {0}, this dnsfence reads version {VERSION}")]
    Version(u16),
    /// Damaged: truncated, checksum wrong, a length out of range.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// Larger than the budget of the configured cache size.
    #[error("{0} bytes, more than the {1} bytes the cache size allows")]
    TooLarge(u64, u64),
    /// It could not be read.
    #[error("{0}")]
    Io(std::io::Error),
}

impl From<CodecError> for LoadError {
    fn from(e: CodecError) -> LoadError {
        LoadError::Corrupt(e.to_string())
    }
}

impl LoadError {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            LoadError::Missing => "missing",
            LoadError::Foreign => "foreign",
            LoadError::Version(_) => "version",
            LoadError::Corrupt(_) => "corrupt",
            LoadError::TooLarge(..) => "too_large",
            LoadError::Io(_) => "io",
        }
    }
}

/// One answer as the file keeps it.
#[derive(Debug, Clone, PartialEq)]
struct SavedAnswer {
    /// Milliseconds since it was stored, at the time of writing.
    age_ms: u64,
    /// Milliseconds it had left, at the time of writing.
    left_ms: u64,
    /// [`Answer::message`].
    message: Vec<u8>,
}

/// What a start read back: the fence's elements (for [`crate::fence::Fence::start_restoring`])
/// and the answers, put into the cache by [`Loaded::restore_answers`] once it exists.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Elements with their time left, counted down to the start.
    pub elements: Vec<Restored>,
    answers: Vec<SavedAnswer>,
    /// Time between the stop that wrote the file and this start.
    elapsed: Duration,
}

impl Loaded {
    /// Puts the answers into the cache (`now` on its clock); how many went in. An answer that is
    /// not a valid answer to its question is left out.
    pub fn restore_answers(&mut self, cache: &AnswerCache, now: std::time::Instant) -> usize {
        let elapsed = self.elapsed.as_millis() as u64;
        let mut n = 0;
        for a in self.answers.drain(..) {
            let Some(left) = a.left_ms.checked_sub(elapsed).filter(|l| *l > 0) else {
                continue;
            };
            let age = u32::try_from((a.age_ms + elapsed) / 1000).unwrap_or(u32::MAX);
            let Some(answer) = Answer::restore(&a.message, age, Duration::from_millis(left), now)
            else {
                continue;
            };
            n += usize::from(cache.restore(Arc::new(answer), now));
        }
        n
    }
}

/// The state file of a state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Writes the cache's live answers and the fence's live elements (elements first: they matter
/// most), at most [`budget`] bytes. Returns (answers, elements) written.
pub fn save(
    file: &Path,
    cache: &AnswerCache,
    cache_now: std::time::Instant,
    elements: &[Restored],
    catalog: &Catalog,
    cache_size: usize,
) -> std::io::Result<(usize, usize)> {
    let budget = budget(cache_size) as usize;
    let mut w = Writer(Vec::with_capacity(64 * 1024));
    w.0.extend_from_slice(MAGIC);
    w.u16(VERSION);
    w.u64(unix_ms(SystemTime::now()));
    let mut n_elements = 0;
    let count_at = w.0.len();
    w.u32(0);
    for e in elements {
        if w.0.len() >= budget {
            break;
        }
        write_element(&mut w, e, catalog);
        n_elements += 1;
    }
    w.0[count_at..count_at + 4].copy_from_slice(&(n_elements as u32).to_be_bytes());
    let mut n_answers = 0;
    let count_at = w.0.len();
    w.u32(0);
    for a in cache.live(cache_now) {
        if w.0.len() >= budget || n_answers >= cache_size {
            break;
        }
        let age = cache_now.saturating_duration_since(a.stored);
        w.u64(age.as_millis() as u64);
        w.u64(a.expires.saturating_duration_since(cache_now).as_millis() as u64);
        w.bytes16(a.message());
        n_answers += 1;
    }
    w.0[count_at..count_at + 4].copy_from_slice(&(n_answers as u32).to_be_bytes());
    let sum = fnv1a(&w.0);
    w.u64(sum);
    write_atomically(file, &w.0)?;
    Ok((n_answers, n_elements))
}

fn write_element(w: &mut Writer, e: &Restored, catalog: &Catalog) {
    w.str8(&e.table);
    w.str8(&e.set);
    w.bytes8(&e.element);
    w.u64(e.left.as_millis() as u64);
    let admissions = &e.admissions[..e.admissions.len().min(255)];
    w.u8(admissions.len() as u8);
    for a in admissions {
        w.str8(&a.name);
        let chain = &a.chain[..a.chain.len().min(255)];
        w.u8(chain.len() as u8);
        for c in chain {
            w.str8(c);
        }
        let ids: Vec<&str> = a
            .endpoint_sets
            .iter()
            .filter_map(|&i| catalog.sets.get(i as usize).map(|s| s.id.as_str()))
            .take(255)
            .collect();
        w.u8(ids.len() as u8);
        for id in ids {
            w.str8(id);
        }
        w.u8(u8::from(a.would_deny));
        w.str8(a.via.as_deref().unwrap_or_default());
    }
}

/// Reads a state file: its elements counted down to now, and the answers to restore. Endpoint
/// set ids are matched to `catalog`'s (those it no longer has are left out).
pub fn load(file: &Path, catalog: &Catalog, cache_size: usize) -> Result<Loaded, LoadError> {
    let limit = budget(cache_size);
    let meta = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => return Err(LoadError::Io(e)),
    };
    if meta.len() > limit {
        return Err(LoadError::TooLarge(meta.len(), limit));
    }
    let bytes = std::fs::read(file).map_err(LoadError::Io)?;
    parse(&bytes, catalog, SystemTime::now())
}

/// [`load`] of bytes already read, as if read at `now` (for tools and the fuzz target).
pub fn parse(bytes: &[u8], catalog: &Catalog, now: SystemTime) -> Result<Loaded, LoadError> {
    if bytes.len() < MAGIC.len() + 2 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(LoadError::Foreign);
    }
    let version = u16::from_be_bytes([bytes[MAGIC.len()], bytes[MAGIC.len() + 1]]);
    if version != VERSION {
        return Err(LoadError::Version(version));
    }
    let Some(body_len) = bytes.len().checked_sub(8) else {
        return Err(LoadError::Corrupt("truncated".into()));
    };
    let (body, sum) = bytes.split_at(body_len);
    if body_len < MAGIC.len() + 2 + 8 || fnv1a(body).to_be_bytes() != sum {
        return Err(LoadError::Corrupt(
            "checksum mismatch (truncated or changed)".into(),
        ));
    }
    let mut r = Reader::at(body, MAGIC.len() + 2);
    let written = UNIX_EPOCH + Duration::from_millis(r.u64()?);
    // A clock set back between stop and start counts as no time passed.
    let elapsed = now.duration_since(written).unwrap_or(Duration::ZERO);
    let mut loaded = Loaded {
        elapsed,
        ..Loaded::default()
    };
    for _ in 0..r.u32()? {
        let table = r.str8()?;
        let set = r.str8()?;
        let element = r.bytes8()?.to_vec();
        let left = Duration::from_millis(r.u64()?);
        let mut admissions = Vec::new();
        for _ in 0..r.u8()? {
            admissions.push(read_admission(&mut r, catalog)?);
        }
        if let Some(left) = left.checked_sub(elapsed).filter(|l| !l.is_zero()) {
            loaded.elements.push(Restored {
                table,
                set,
                element,
                left,
                admissions,
            });
        }
    }
    for _ in 0..r.u32()? {
        let age_ms = r.u64()?;
        let left_ms = r.u64()?;
        let message = r.bytes16()?.to_vec();
        loaded.answers.push(SavedAnswer {
            age_ms,
            left_ms,
            message,
        });
    }
    if r.left() != 0 {
        return Err(LoadError::Corrupt(format!(
            "{} bytes after the last entry",
            r.left()
        )));
    }
    Ok(loaded)
}

fn read_admission(r: &mut Reader<'_>, catalog: &Catalog) -> Result<Admission, LoadError> {
    let name = r.str8()?.into_boxed_str();
    let mut chain = Vec::new();
    for _ in 0..r.u8()? {
        chain.push(r.str8()?.into_boxed_str());
    }
    let mut endpoint_sets = Vec::new();
    for _ in 0..r.u8()? {
        let id = r.str8()?;
        if let Some(i) = catalog.sets.iter().position(|s| s.id == id) {
            endpoint_sets.push(i as u32);
        }
    }
    let would_deny = r.u8()? != 0;
    let via = r.str8()?;
    Ok(Admission {
        name,
        chain: chain.into_boxed_slice(),
        endpoint_sets: endpoint_sets.into_boxed_slice(),
        would_deny,
        via: (!via.is_empty()).then(|| via.into_boxed_str()),
    })
}

/// At start: reads the state file of `state_dir` when warm restart is on, logging and counting
/// the outcome. Never fails: a file that cannot be used is ignored.
pub fn read_at_start(
    state_dir: &Path,
    policy: &Policy,
    cache_size: usize,
    metrics: &Metrics,
) -> Loaded {
    let file = path(state_dir);
    match load(&file, &policy.catalog, cache_size) {
        Ok(loaded) => {
            metrics
                .warm_restart
                .with_label_values(&["load", "ok"])
                .inc();
            tracing::info!(
                file = %file.display(),
                elements = loaded.elements.len(),
                answers = loaded.answers.len(),
                stopped_for_ms = loaded.elapsed.as_millis() as u64,
                "warm restart: state read"
            );
            loaded
        }
        Err(e) => {
            metrics
                .warm_restart
                .with_label_values(&["load", e.label()])
                .inc();
            match e {
                LoadError::Missing => {
                    tracing::info!(file = %file.display(), "warm restart: no state to read (first start)");
                }
                e => {
                    tracing::warn!(file = %file.display(), error = %e, "warm restart: state file ignored; starting cold");
                }
            }
            Loaded::default()
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// FNV-1a, 64 bits: enough to tell a damaged file, with no dependency.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Writes `bytes` to a temporary file beside `path`, flushes it to disk and renames it over
/// `path`: a stop interrupted half-way leaves the old file or the new one, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = crate::catalog::source::temporary_beside(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        // Query names are in it: readable by the service and its group only.
        .mode(0o640)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::answer::Resolution;
    use crate::resolve::cache::TtlBounds;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::time::Instant;

    fn catalog() -> Catalog {
        let zones = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
        Catalog::load(&[zones], &[]).unwrap()
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// A cache holding one CNAME → A answer with TTLs 300 and 120.
    fn cache(now: Instant) -> AnswerCache {
        let bounds = TtlBounds {
            positive_min: Duration::from_secs(1),
            positive_max: Duration::from_secs(3600),
            negative_min: Duration::from_secs(1),
            negative_max: Duration::from_secs(3600),
        };
        let c = AnswerCache::new(100, bounds, Duration::ZERO);
        let r = Resolution {
            rcode: ResponseCode::NoError,
            answers: vec![
                Record::from_rdata(
                    n("manage.microsoft.com."),
                    300,
                    RData::CNAME(CNAME(n("edge.example."))),
                ),
                Record::from_rdata(n("edge.example."), 120, RData::A(A::new(192, 0, 2, 7))),
            ],
            authorities: vec![],
        };
        let checked = r
            .chain_from(&n("manage.microsoft.com."), RecordType::A)
            .unwrap();
        c.answer(&n("manage.microsoft.com."), RecordType::A, checked, now)
            .unwrap();
        c
    }

    fn element(catalog: &Catalog) -> Restored {
        let i = catalog.sets.iter().position(|s| s.id == "163").unwrap() as u32;
        Restored {
            table: "dnsfence".into(),
            set: "kiosk_v4".into(),
            element: vec![192, 0, 2, 7],
            left: Duration::from_secs(180),
            admissions: vec![Admission {
                name: "manage.microsoft.com".into(),
                chain: Box::new(["edge.example".into()]),
                endpoint_sets: Box::new([i]),
                would_deny: false,
                via: None,
            }],
        }
    }

    fn saved(dir: &Path, catalog: &Catalog) -> Vec<u8> {
        let now = Instant::now();
        let file = path(dir);
        let written = save(&file, &cache(now), now, &[element(catalog)], catalog, 100).unwrap();
        assert_eq!(written, (1, 1));
        std::fs::read(&file).unwrap()
    }

    #[test]
    fn a_state_reads_back_counted_down_by_the_time_that_passed() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = catalog();
        let bytes = saved(dir.path(), &catalog);
        let later = SystemTime::now() + Duration::from_secs(60);
        let mut loaded = parse(&bytes, &catalog, later).unwrap();
        assert_eq!(loaded.elements.len(), 1);
        let e = &loaded.elements[0];
        assert_eq!((e.table.as_str(), e.set.as_str()), ("dnsfence", "kiosk_v4"));
        assert_eq!(e.element, [192, 0, 2, 7]);
        assert!(
            e.left <= Duration::from_secs(120) && e.left > Duration::from_secs(115),
            "{:?}",
            e.left
        );
        assert_eq!(e.admissions, element(&catalog).admissions);
        // The answer: 120 s of life less the 60 s that passed; TTLs counted down alike.
        let fresh = AnswerCache::new(100, TtlBounds::default(), Duration::ZERO);
        let now = Instant::now();
        assert_eq!(loaded.restore_answers(&fresh, now), 1);
        let name = {
            use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
            let mut out = Vec::new();
            n("manage.microsoft.com.")
                .emit(&mut BinEncoder::new(&mut out))
                .unwrap();
            out
        };
        let a = fresh.get(&name, 1, now).expect("restored into the cache");
        let ttls: Vec<u32> = a
            .records(now)
            .unwrap()
            .answers
            .iter()
            .map(|r| r.ttl)
            .collect();
        assert!(ttls[0] <= 240 && ttls[0] >= 238, "{ttls:?}");
        assert!(ttls[1] <= 60 && ttls[1] >= 58, "{ttls:?}");
        assert!(a.expires <= now + Duration::from_secs(60));
        assert_eq!(&*a.chain, &["edge.example".into()] as &[Box<str>]);
        // An hour later everything has expired: nothing comes back.
        let mut late = parse(
            &bytes,
            &catalog,
            SystemTime::now() + Duration::from_secs(3600),
        )
        .unwrap();
        assert!(late.elements.is_empty());
        assert_eq!(late.restore_answers(&fresh, now), 0);
    }

    #[test]
    fn a_damaged_foreign_or_newer_file_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = catalog();
        let bytes = saved(dir.path(), &catalog);
        let now = SystemTime::now();
        let truncated = &bytes[..bytes.len() - 20];
        assert!(matches!(
            parse(truncated, &catalog, now),
            Err(LoadError::Corrupt(_))
        ));
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(matches!(
            parse(&flipped, &catalog, now),
            Err(LoadError::Corrupt(_))
        ));
        assert!(matches!(
            parse(b"{\"json\": true}", &catalog, now),
            Err(LoadError::Foreign)
        ));
        assert!(matches!(parse(&[], &catalog, now), Err(LoadError::Foreign)));
        let mut newer = bytes.clone();
        newer[MAGIC.len()..MAGIC.len() + 2].copy_from_slice(&2u16.to_be_bytes());
        assert!(matches!(
            parse(&newer, &catalog, now),
            Err(LoadError::Version(2))
        ));
        // Larger than the cache size allows: not even read.
        let big = dir.path().join("big.state");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(budget(0) + 1)
            .unwrap();
        assert!(matches!(
            load(&big, &catalog, 0),
            Err(LoadError::TooLarge(..))
        ));
        assert!(matches!(
            load(&dir.path().join("none"), &catalog, 0),
            Err(LoadError::Missing)
        ));
    }

    #[test]
    fn an_answer_the_chain_does_not_prove_is_not_restored() {
        // A message whose A record is owned off the chain: a state file cannot add it.
        let mut m = hickory_proto::op::Message::new(
            0,
            hickory_proto::op::MessageType::Response,
            hickory_proto::op::OpCode::Query,
        );
        m.add_query(hickory_proto::op::Query::query(
            n("manage.microsoft.com."),
            RecordType::A,
        ));
        m.add_answer(Record::from_rdata(
            n("evil.example."),
            300,
            RData::A(A::new(203, 0, 113, 1)),
        ));
        let bytes = m.to_vec().unwrap();
        assert!(Answer::restore(&bytes, 0, Duration::from_secs(60), Instant::now()).is_none());
    }
}
