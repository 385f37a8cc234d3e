//! The fence: every address of an allowed answer goes into the view's nftables sets, confirmed by
//! the kernel before the answer leaves, with a timeout tied to the TTL.
//!
//! Shape: the query path builds the elements and hands them to one dedicated thread through a
//! bounded channel, then awaits the kernel's verdict up to `admit_deadline`. The thread owns the
//! netlink socket (blocking, in the configured network namespace), drains every admit that is
//! waiting into one netlink batch, and records what the kernel confirmed in the [`Ledger`]. The
//! ledger is the source of truth: the same thread checks every `resync_interval` that the table and
//! sets still exist and, when someone wiped them (`nft flush ruleset`, a restart of
//! nftables.service), recreates them and writes every live element back.
//!
//! Refreshing an element: NEWSETELEM leaves an existing element's timeout unchanged on kernels
//! before 6.11, so a refresh is DESTROYSETELEM + NEWSETELEM in the same transaction (DESTROY needs
//! Linux 6.3; on older kernels dnsfence falls back to add-only and says so once).

pub mod netlink;
pub mod nft;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::answer::AnswerAddr;
use crate::config::{FenceBackend, FenceConfig, FenceMode};
use crate::zones::{PortSpec, Proto};
use netlink::{FAMILY_INET, NftSocket, OpKind, OpResult, SetOp};
use nft::ViewPlan;

/// The fence could not start.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The network namespace could not be entered.
    #[error("fence: network namespace '{0}': {1}")]
    Netns(String, String),
    /// The netlink socket could not be opened (usually: not root / no CAP_NET_ADMIN).
    #[error(
        "fence: cannot talk to nftables over netlink: {0} (dnsfence needs CAP_NET_ADMIN for [fence])"
    )]
    Socket(std::io::Error),
    /// Creating the table and sets failed.
    #[error("fence: creating the table and sets failed: {0}")]
    Setup(String),
    /// Two views name the same set.
    #[error("fence: views '{0}' and '{1}' both use set {2}")]
    SharedSet(String, String, String),
    /// The fence thread did not come up.
    #[error("fence: {0}")]
    Thread(String),
}

/// Why an answer's addresses are not (known to be) in the set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The kernel refused the update.
    #[error("nftables refused the update: {0}")]
    Kernel(String),
    /// No verdict within `admit_deadline`.
    #[error("no kernel confirmation within the admit deadline")]
    Deadline,
    /// Too many admits waiting.
    #[error("the fence queue is full")]
    QueueFull,
    /// The fence thread is gone.
    #[error("the fence is not running")]
    Closed,
}

impl AdmitError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AdmitError::Kernel(_) => "kernel_error",
            AdmitError::Deadline => "deadline",
            AdmitError::QueueFull => "queue_full",
            AdmitError::Closed => "closed",
        }
    }
}

/// What an admit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Every element was known fresh in the ledger: no kernel round trip.
    Fresh,
    /// This many elements were written and confirmed.
    Written(usize),
}

/// Counters of the fence, kept in one place for the metrics endpoint.
#[derive(Debug, Default)]
pub struct FenceStats {
    /// Admits confirmed by the kernel.
    pub admits_ok: AtomicU64,
    /// Admits that needed no write (ledger fresh).
    pub admits_fresh: AtomicU64,
    /// Admits the kernel refused.
    pub admits_failed: AtomicU64,
    /// Admits that missed the deadline (they may still complete later).
    pub admits_deadline: AtomicU64,
    /// Admits dropped because the queue was full.
    pub admits_queue_full: AtomicU64,
    /// Elements refreshed on a cache hit (written again before the answer).
    pub readmits_cache_hit: AtomicU64,
    /// Elements written (adds, counting refreshes and resyncs).
    pub elements_written: AtomicU64,
    /// Netlink batches sent.
    pub batches: AtomicU64,
    /// Resyncs after the table or a set was found missing by the periodic check.
    pub resyncs_missing: AtomicU64,
    /// Resyncs triggered by a write that failed on a missing table or set.
    pub resyncs_write_failure: AtomicU64,
    /// Resyncs that failed (nft could not recreate the table and sets).
    pub resync_failures: AtomicU64,
    /// Sum of admit round trips in microseconds (with `admits_ok`, an average).
    pub admit_micros_total: AtomicU64,
}

/// One confirmed element.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    /// When the kernel will drop it.
    pub expires: Instant,
    /// When the kernel last confirmed it.
    pub confirmed: Instant,
    /// Names whose answers carried it (at most [`MAX_NAMES`]).
    pub names: Vec<Box<str>>,
    /// Catalog indices of the endpoint sets that allowed those names.
    pub endpoint_sets: Vec<u32>,
}

/// Names remembered per element: enough to explain it, bounded so a CDN address shared by
/// thousands of names cannot grow the ledger.
pub const MAX_NAMES: usize = 4;

/// Ledger key: the dynamic set's index (2 bytes, big-endian) then the element's key bytes as the
/// kernel stores them. One flat byte string, so a lookup can borrow a key built on the stack.
type Key = Box<[u8]>;

fn ledger_key(set: u16, key: &[u8]) -> Key {
    let mut k = Vec::with_capacity(2 + key.len());
    k.extend_from_slice(&set.to_be_bytes());
    k.extend_from_slice(key);
    k.into_boxed_slice()
}

fn key_set(k: &[u8]) -> u16 {
    u16::from_be_bytes([k[0], k[1]])
}

/// What the kernel has confirmed, by set and key.
#[derive(Debug, Default)]
pub struct Ledger {
    map: HashMap<Key, LedgerEntry>,
}

/// A dynamic set: where it lives.
#[derive(Debug, Clone)]
pub struct DynSet {
    /// Table name (family inet).
    pub table: String,
    /// Set name.
    pub name: String,
    /// The view it belongs to.
    pub view: String,
    /// IPv6 or IPv4.
    pub v6: bool,
    /// Key layout.
    pub mode: FenceMode,
}

/// One element waiting for the kernel.
#[derive(Debug, Clone)]
struct Pending {
    set: u16,
    key: Box<[u8]>,
    timeout: Duration,
    refresh: bool,
    name: Box<str>,
    endpoint_sets: Vec<u32>,
}

struct AdmitJob {
    elements: Vec<Pending>,
    reply: Option<tokio::sync::oneshot::Sender<Result<(), AdmitError>>>,
    enqueued: Instant,
}

/// State shared by the query path and the fence thread.
struct Shared {
    cfg: FenceConfig,
    sets: Vec<DynSet>,
    /// Per view index: (v4 set, v6 set); `None` for views without a fence.
    views: Vec<Option<(u16, u16)>>,
    plans: Vec<ViewPlan>,
    /// A std mutex: held only for map lookups and inserts, never across a wait.
    ledger: Mutex<Ledger>,
    stats: FenceStats,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// Handle to the fence. Dropping it stops the thread; the kernel keeps the sets and their
/// elements, which time out by themselves.
pub struct Fence {
    shared: Arc<Shared>,
    /// The fence thread's queue; `None` for the list backend, which only keeps the ledger.
    jobs: Option<SyncSender<AdmitJob>>,
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("sets", &self.shared.sets.len())
            .finish_non_exhaustive()
    }
}

/// Admits waiting for the thread before new ones are refused.
const QUEUE: usize = 4096;
/// Admits are coalesced into one batch until it holds this many elements (about 100 KiB of
/// netlink: a batch must fit in one send).
const MAX_BATCH_ELEMENTS: usize = 2048;

impl Fence {
    /// Starts the fence thread: enters the network namespace, opens the netlink socket, creates the
    /// table and sets and loads the static ranges. `plans[i]` belongs to view `i`.
    pub fn start(cfg: &FenceConfig, plans: Vec<ViewPlan>) -> Result<Fence, FenceError> {
        let mut sets: Vec<DynSet> = Vec::new();
        let mut views = Vec::with_capacity(plans.len());
        for plan in &plans {
            let f = &plan.fence;
            let mut idx = [0u16; 2];
            for (i, (name, v6)) in [(&f.set_v4, false), (&f.set_v6, true)]
                .into_iter()
                .enumerate()
            {
                if let Some(other) = sets
                    .iter()
                    .find(|s| s.table == f.table.name && s.name == *name)
                {
                    return Err(FenceError::SharedSet(
                        other.view.clone(),
                        plan.name.clone(),
                        name.clone(),
                    ));
                }
                idx[i] = sets.len() as u16;
                sets.push(DynSet {
                    table: f.table.name.clone(),
                    name: name.clone(),
                    view: plan.name.clone(),
                    v6,
                    mode: f.mode,
                });
            }
            views.push(Some((idx[0], idx[1])));
        }
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            sets,
            views,
            plans,
            ledger: Mutex::new(Ledger::default()),
            stats: FenceStats::default(),
            healthy: AtomicBool::new(false),
            last_error: Mutex::new(None),
        });
        if cfg.backend == FenceBackend::List {
            shared.healthy.store(true, Ordering::Relaxed);
            tracing::info!(
                sets = shared.sets.len(),
                "fence ready: list backend (no kernel sets; pull lists over HTTP)"
            );
            return Ok(Fence { shared, jobs: None });
        }
        let (tx, rx) = mpsc::sync_channel::<AdmitJob>(QUEUE);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), FenceError>>();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("dnsfence-fence".into())
            .spawn(move || {
                let mut worker = match Worker::init(thread_shared) {
                    Ok(w) => {
                        let _ = ready_tx.send(Ok(()));
                        w
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                worker.run(rx);
            })
            .map_err(|e| FenceError::Thread(e.to_string()))?;
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => Ok(Fence {
                shared,
                jobs: Some(tx),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(FenceError::Thread("the fence thread did not start".into())),
        }
    }

    /// Puts the addresses of an allowed answer into the view's sets and waits for the kernel, at
    /// most `admit_deadline`. Elements the ledger knows to outlive this answer, confirmed within
    /// `recheck`, are skipped; when all are, no round trip is made.
    pub async fn admit(
        &self,
        view: usize,
        name: &str,
        addrs: &[AnswerAddr],
        endpoint_sets: &[u32],
        ports: &[PortSpec],
        cache_hit: bool,
    ) -> Result<Admitted, AdmitError> {
        let Some(Some((v4, v6))) = self.shared.views.get(view).copied() else {
            return Ok(Admitted::Fresh);
        };
        let cfg = &self.shared.cfg;
        let now = Instant::now();
        let mut elements = Vec::new();
        {
            let ledger = lock(&self.shared.ledger);
            for a in addrs {
                let set = if a.ip.is_ipv6() { v6 } else { v4 };
                let lifetime = Duration::from_secs(a.ttl.into()).clamp(cfg.min_ttl, cfg.max_ttl);
                let timeout = lifetime + cfg.grace;
                let keys = element_keys(a.ip, self.shared.sets[set as usize].mode, ports);
                for key in keys {
                    let known = ledger.map.get(&ledger_key(set, &key));
                    // Fresh: it outlives this answer by at least half the grace, and the kernel
                    // confirmed it recently enough to trust it without asking.
                    let fresh = known.is_some_and(|e| {
                        e.expires >= now + lifetime + cfg.grace / 2
                            && now.duration_since(e.confirmed) < cfg.recheck
                    });
                    if fresh {
                        continue;
                    }
                    elements.push(Pending {
                        set,
                        key,
                        timeout,
                        refresh: known.is_some_and(|e| e.expires > now),
                        name: name.into(),
                        endpoint_sets: endpoint_sets.to_vec(),
                    });
                }
            }
        }
        let stats = &self.shared.stats;
        if elements.is_empty() {
            stats.admits_fresh.fetch_add(1, Ordering::Relaxed);
            return Ok(Admitted::Fresh);
        }
        let written = elements.len();
        if cache_hit {
            stats
                .readmits_cache_hit
                .fetch_add(written as u64, Ordering::Relaxed);
        }
        let Some(jobs) = &self.jobs else {
            // List backend: nothing to confirm; the ledger is the list.
            record(&self.shared.ledger, elements, now);
            stats.admits_ok.fetch_add(1, Ordering::Relaxed);
            return Ok(Admitted::Written(written));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = AdmitJob {
            elements,
            reply: Some(tx),
            enqueued: now,
        };
        match jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                stats.admits_queue_full.fetch_add(1, Ordering::Relaxed);
                return Err(AdmitError::QueueFull);
            }
            Err(TrySendError::Disconnected(_)) => return Err(AdmitError::Closed),
        }
        match tokio::time::timeout(cfg.admit_deadline, rx).await {
            Ok(Ok(Ok(()))) => Ok(Admitted::Written(written)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(AdmitError::Closed),
            Err(_) => {
                stats.admits_deadline.fetch_add(1, Ordering::Relaxed);
                Err(AdmitError::Deadline)
            }
        }
    }

    /// Whether the view's sets are keyed by port too (addr_port mode).
    pub fn needs_ports(&self, view: usize) -> bool {
        matches!(self.shared.views.get(view), Some(Some((v4, _)))
            if self.shared.sets[*v4 as usize].mode == FenceMode::AddrPort)
    }

    /// Whether every element of an answer is known fresh (the same rule as [`Fence::admit`]),
    /// `age` seconds after the answer was first given: the UDP fast path serves a cached answer
    /// only then, and leaves the rest to the full handler, which re-admits.
    pub fn is_fresh(
        &self,
        view: usize,
        addrs: &[AnswerAddr],
        ports: &[PortSpec],
        age: u32,
        now: Instant,
    ) -> bool {
        let Some(Some((v4, v6))) = self.shared.views.get(view).copied() else {
            return true;
        };
        let cfg = &self.shared.cfg;
        let ledger = lock(&self.shared.ledger);
        let mut key = [0u8; 2 + 24];
        addrs.iter().all(|a| {
            let set = if a.ip.is_ipv6() { v6 } else { v4 };
            let lifetime = Duration::from_secs(a.ttl.saturating_sub(age).into())
                .clamp(cfg.min_ttl, cfg.max_ttl);
            let fresh = |k: &[u8]| {
                ledger.map.get(k).is_some_and(|e| {
                    e.expires >= now + lifetime + cfg.grace / 2
                        && now.duration_since(e.confirmed) < cfg.recheck
                })
            };
            key[..2].copy_from_slice(&set.to_be_bytes());
            let addr_len = match a.ip {
                IpAddr::V4(v) => {
                    key[2..6].copy_from_slice(&v.octets());
                    4
                }
                IpAddr::V6(v) => {
                    key[2..18].copy_from_slice(&v.octets());
                    16
                }
            };
            match self.shared.sets[set as usize].mode {
                FenceMode::Addr => fresh(&key[..2 + addr_len]),
                FenceMode::AddrPort => ports.iter().all(|p| {
                    let o = 2 + addr_len;
                    key[o..o + 4].copy_from_slice(&[proto_number(p.proto), 0, 0, 0]);
                    key[o + 4..o + 6].copy_from_slice(&p.port.to_be_bytes());
                    key[o + 6..o + 8].fill(0);
                    fresh(&key[..o + 8])
                }),
            }
        })
    }

    /// The counters.
    pub fn stats(&self) -> &FenceStats {
        &self.shared.stats
    }

    /// Whether the last write or check succeeded.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// The last error the fence met, if any.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }

    /// Every dynamic set.
    pub fn sets(&self) -> &[DynSet] {
        &self.shared.sets
    }

    /// Live elements of one dynamic set: (address, port spec if any, entry).
    pub fn elements(&self, set: usize) -> Vec<(IpAddr, Option<PortSpec>, LedgerEntry)> {
        let now = Instant::now();
        let ledger = lock(&self.shared.ledger);
        ledger
            .map
            .iter()
            .filter(|(k, e)| key_set(k) as usize == set && e.expires > now)
            .filter_map(|(k, e)| {
                let (ip, port) = decode_key(&k[2..])?;
                Some((ip, port, e.clone()))
            })
            .collect()
    }

    /// Number of live elements of one dynamic set.
    pub fn element_count(&self, set: usize) -> usize {
        let now = Instant::now();
        lock(&self.shared.ledger)
            .map
            .iter()
            .filter(|(k, e)| key_set(k) as usize == set && e.expires > now)
            .count()
    }

    /// The static ranges of each view, as planned.
    pub fn plans(&self) -> &[ViewPlan] {
        &self.shared.plans
    }
}

/// Locks a mutex, recovering the data if a thread panicked while holding it: the ledger is a
/// cache of kernel state, and a resync repairs any inconsistency.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records confirmed elements in the ledger.
fn record(ledger: &Mutex<Ledger>, elements: Vec<Pending>, now: Instant) {
    let mut ledger = lock(ledger);
    for p in elements {
        let e = ledger
            .map
            .entry(ledger_key(p.set, &p.key))
            .or_insert_with(|| LedgerEntry {
                expires: now,
                confirmed: now,
                names: Vec::new(),
                endpoint_sets: Vec::new(),
            });
        e.expires = now + p.timeout;
        e.confirmed = now;
        if !e.names.contains(&p.name) {
            if e.names.len() == MAX_NAMES {
                e.names.remove(0);
            }
            e.names.push(p.name);
        }
        for s in p.endpoint_sets {
            if !e.endpoint_sets.contains(&s) {
                e.endpoint_sets.push(s);
            }
        }
    }
}

fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

/// Kernel key bytes of an address (and, in addr_port mode, each port): concatenated fields are
/// each padded to a 4-byte register, as nftables lays them out.
pub fn element_keys(ip: IpAddr, mode: FenceMode, ports: &[PortSpec]) -> Vec<Box<[u8]>> {
    let addr: Vec<u8> = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    match mode {
        FenceMode::Addr => vec![addr.into_boxed_slice()],
        FenceMode::AddrPort => ports
            .iter()
            .map(|p| {
                let mut k = addr.clone();
                k.extend_from_slice(&[proto_number(p.proto), 0, 0, 0]);
                k.extend_from_slice(&p.port.to_be_bytes());
                k.extend_from_slice(&[0, 0]);
                k.into_boxed_slice()
            })
            .collect(),
    }
}

/// The inverse of [`element_keys`].
pub fn decode_key(key: &[u8]) -> Option<(IpAddr, Option<PortSpec>)> {
    let (ip, rest): (IpAddr, &[u8]) = match key.len() {
        4 | 12 => (
            IpAddr::from(<[u8; 4]>::try_from(&key[..4]).ok()?),
            &key[4..],
        ),
        16 | 24 => (
            IpAddr::from(<[u8; 16]>::try_from(&key[..16]).ok()?),
            &key[16..],
        ),
        _ => return None,
    };
    if rest.is_empty() {
        return Some((ip, None));
    }
    let proto = match rest[0] {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        _ => return None,
    };
    let port = u16::from_be_bytes([rest[4], rest[5]]);
    Some((ip, Some(PortSpec { proto, port })))
}

/// The fence thread.
struct Worker {
    shared: Arc<Shared>,
    sock: NftSocket,
    destroy_supported: bool,
    last_check: Instant,
}

impl Worker {
    fn init(shared: Arc<Shared>) -> Result<Worker, FenceError> {
        if let Some(ns) = &shared.cfg.netns {
            enter_netns(ns).map_err(|e| FenceError::Netns(ns.clone(), e))?;
        }
        let sock = NftSocket::open(Duration::from_secs(2)).map_err(FenceError::Socket)?;
        nft::run_script(&shared.cfg.nft, &nft::setup_script(&shared.plans))
            .map_err(FenceError::Setup)?;
        shared.healthy.store(true, Ordering::Relaxed);
        tracing::info!(
            sets = shared.sets.len(),
            netns = shared.cfg.netns.as_deref().unwrap_or("(own)"),
            "fence ready: table and sets in place, static ranges loaded"
        );
        Ok(Worker {
            shared,
            sock,
            destroy_supported: true,
            last_check: Instant::now(),
        })
    }

    fn run(&mut self, rx: mpsc::Receiver<AdmitJob>) {
        loop {
            let wait = self
                .shared
                .cfg
                .resync_interval
                .saturating_sub(self.last_check.elapsed());
            match rx.recv_timeout(wait) {
                Ok(first) => {
                    let mut size = first.elements.len();
                    let mut jobs = vec![first];
                    while size < MAX_BATCH_ELEMENTS {
                        match rx.try_recv() {
                            Ok(j) => {
                                size += j.elements.len();
                                jobs.push(j);
                            }
                            Err(_) => break,
                        }
                    }
                    self.process(jobs);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.last_check.elapsed() >= self.shared.cfg.resync_interval {
                self.check();
            }
        }
    }

    /// Writes the jobs' elements in one transaction, retrying the innocent when one job's update
    /// is refused (the kernel then commits nothing), and answers each job.
    fn process(&mut self, mut jobs: Vec<AdmitJob>) {
        let mut resynced = false;
        for _round in 0..4 {
            if jobs.is_empty() {
                return;
            }
            let sets = &self.shared.sets;
            let mut ops: Vec<SetOp<'_>> = Vec::new();
            let mut owner: Vec<(usize, OpKind)> = Vec::new();
            for (j, job) in jobs.iter().enumerate() {
                let mut by_set: Vec<(u16, Vec<&Pending>)> = Vec::new();
                for p in &job.elements {
                    match by_set.iter_mut().find(|(s, _)| *s == p.set) {
                        Some((_, v)) => v.push(p),
                        None => by_set.push((p.set, vec![p])),
                    }
                }
                for (set, elems) in by_set {
                    let s = &sets[set as usize];
                    let refresh: Vec<(Vec<u8>, Option<u64>)> = elems
                        .iter()
                        .filter(|p| p.refresh)
                        .map(|p| (p.key.to_vec(), None))
                        .collect();
                    if self.destroy_supported && !refresh.is_empty() {
                        ops.push(SetOp {
                            kind: OpKind::Destroy,
                            family: FAMILY_INET,
                            table: &s.table,
                            set: &s.name,
                            elements: refresh,
                        });
                        owner.push((j, OpKind::Destroy));
                    }
                    ops.push(SetOp {
                        kind: OpKind::Add,
                        family: FAMILY_INET,
                        table: &s.table,
                        set: &s.name,
                        elements: elems
                            .iter()
                            .map(|p| (p.key.to_vec(), Some(p.timeout.as_millis() as u64)))
                            .collect(),
                    });
                    owner.push((j, OpKind::Add));
                }
            }
            let stats = &self.shared.stats;
            stats.batches.fetch_add(1, Ordering::Relaxed);
            let results = match self.sock.apply(&ops) {
                Ok(r) => r,
                Err(e) => {
                    let msg = format!("netlink: {e}");
                    self.fail_all(jobs, &msg);
                    return;
                }
            };
            drop(ops);
            // Per job: the first error, and whether anything was only aborted.
            let mut verdict: Vec<(Option<i32>, bool, bool)> =
                vec![(None, false, false); jobs.len()];
            for ((j, kind), r) in owner.iter().zip(&results) {
                match r {
                    OpResult::Ok => {}
                    OpResult::Aborted => verdict[*j].1 = true,
                    OpResult::Err(e) => {
                        if *kind == OpKind::Destroy
                            && (*e == libc::EOPNOTSUPP || *e == libc::EINVAL)
                        {
                            verdict[*j].2 = true;
                        } else if verdict[*j].0.is_none() {
                            verdict[*j].0 = Some(*e);
                        }
                    }
                }
            }
            if verdict.iter().any(|v| v.2) && self.destroy_supported {
                tracing::warn!(
                    "this kernel has no DESTROYSETELEM (Linux < 6.3): refreshed elements keep their old timeout until they expire"
                );
                self.destroy_supported = false;
            }
            let mut retry = Vec::new();
            let mut missing = Vec::new();
            for (job, (err, aborted, destroy_unsupported)) in jobs.into_iter().zip(verdict) {
                match err {
                    Some(e) if e == libc::ENOENT && !resynced => missing.push(job),
                    Some(e) => self.finish(job, Err(errno_text(e))),
                    None if aborted || destroy_unsupported => retry.push(job),
                    None => self.finish(job, Ok(())),
                }
            }
            if !missing.is_empty() {
                // A write found the table or a set gone: restore everything now, then retry.
                resynced = true;
                stats.resyncs_write_failure.fetch_add(1, Ordering::Relaxed);
                self.resync("write_failed");
                retry.extend(missing);
            }
            jobs = retry;
        }
        self.fail_all(jobs, "gave up after repeated aborted batches");
    }

    fn fail_all(&self, jobs: Vec<AdmitJob>, msg: &str) {
        for job in jobs {
            self.finish(job, Err(msg.to_string()));
        }
    }

    fn finish(&self, mut job: AdmitJob, result: Result<(), String>) {
        let stats = &self.shared.stats;
        let now = Instant::now();
        match &result {
            Ok(()) => {
                stats.admits_ok.fetch_add(1, Ordering::Relaxed);
                stats
                    .elements_written
                    .fetch_add(job.elements.len() as u64, Ordering::Relaxed);
                stats.admit_micros_total.fetch_add(
                    now.duration_since(job.enqueued).as_micros() as u64,
                    Ordering::Relaxed,
                );
                self.shared.healthy.store(true, Ordering::Relaxed);
                record(&self.shared.ledger, std::mem::take(&mut job.elements), now);
            }
            Err(msg) => {
                stats.admits_failed.fetch_add(1, Ordering::Relaxed);
                self.shared.healthy.store(false, Ordering::Relaxed);
                tracing::warn!(error = %msg, elements = job.elements.len(), "fence admit failed");
                *lock(&self.shared.last_error) = Some(msg.clone());
            }
        }
        if let Some(reply) = job.reply.take() {
            let _ = reply.send(result.map_err(AdmitError::Kernel));
        }
    }

    /// The periodic check: the table and every set must exist; if not, resync.
    fn check(&mut self) {
        self.last_check = Instant::now();
        let mut missing = None;
        for s in &self.shared.sets {
            match self.sock.set_exists(FAMILY_INET, &s.table, &s.name) {
                Ok(true) => {}
                Ok(false) => {
                    missing = Some(format!("set inet {} {} is gone", s.table, s.name));
                    break;
                }
                Err(e) => {
                    missing = Some(format!("checking set {}: {e}", s.name));
                    break;
                }
            }
        }
        if let Some(why) = missing {
            tracing::warn!(reason = %why, "fence resync");
            self.shared
                .stats
                .resyncs_missing
                .fetch_add(1, Ordering::Relaxed);
            self.resync("missing");
        }
        let now = Instant::now();
        lock(&self.shared.ledger).map.retain(|_, e| e.expires > now);
    }

    /// Recreates the table and sets, reloads the static ranges and writes every live element back
    /// with its remaining timeout.
    fn resync(&mut self, reason: &str) {
        if let Err(e) =
            nft::run_script(&self.shared.cfg.nft, &nft::setup_script(&self.shared.plans))
        {
            self.shared
                .stats
                .resync_failures
                .fetch_add(1, Ordering::Relaxed);
            self.shared.healthy.store(false, Ordering::Relaxed);
            tracing::error!(error = %e, reason, "fence resync failed");
            *lock(&self.shared.last_error) = Some(e);
            return;
        }
        let now = Instant::now();
        let live: Vec<(u16, Box<[u8]>, u64)> = lock(&self.shared.ledger)
            .map
            .iter()
            .filter(|(_, e)| e.expires > now + Duration::from_millis(500))
            .map(|(k, e)| {
                (
                    key_set(k),
                    k[2..].to_vec().into_boxed_slice(),
                    (e.expires - now).as_millis() as u64,
                )
            })
            .collect();
        let count = live.len();
        for chunk in live.chunks(1024) {
            let mut ops: Vec<SetOp<'_>> = Vec::new();
            for (set, key, ms) in chunk {
                let s = &self.shared.sets[*set as usize];
                match ops
                    .iter_mut()
                    .find(|o| o.set == s.name && o.table == s.table)
                {
                    Some(op) => op.elements.push((key.to_vec(), Some(*ms))),
                    None => ops.push(SetOp {
                        kind: OpKind::Add,
                        family: FAMILY_INET,
                        table: &s.table,
                        set: &s.name,
                        elements: vec![(key.to_vec(), Some(*ms))],
                    }),
                }
            }
            match self.sock.apply(&ops) {
                Ok(r) if r.iter().all(|r| *r == OpResult::Ok) => {}
                Ok(r) => tracing::warn!(results = ?r, "fence resync: some elements were refused"),
                Err(e) => tracing::warn!(error = %e, "fence resync: netlink failed"),
            }
        }
        self.shared.healthy.store(true, Ordering::Relaxed);
        tracing::info!(
            reason,
            elements = count,
            "fence resynced: table, sets, static ranges and live elements restored"
        );
    }
}

fn errno_text(e: i32) -> String {
    format!("{} (errno {e})", std::io::Error::from_raw_os_error(e))
}

/// Moves the calling thread into the named network namespace (`ip netns add NAME`).
fn enter_netns(name: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let path = ["/run/netns", "/var/run/netns"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or_else(|| "not found in /run/netns (create it with `ip netns add`)".to_string())?;
    let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: setns(2) on a valid namespace descriptor; it only changes this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let ports: Vec<PortSpec> = vec!["udp/123".parse().unwrap(), "tcp/443".parse().unwrap()];
        let ip: IpAddr = "192.0.2.40".parse().unwrap();
        let keys = element_keys(ip, FenceMode::AddrPort, &ports);
        assert_eq!(&*keys[0], &[192, 0, 2, 40, 17, 0, 0, 0, 0, 123, 0, 0]);
        assert_eq!(decode_key(&keys[1]), Some((ip, Some(ports[1]))));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let keys = element_keys(v6, FenceMode::Addr, &ports);
        assert_eq!(keys.len(), 1);
        assert_eq!(decode_key(&keys[0]), Some((v6, None)));
        assert_eq!(element_keys(v6, FenceMode::AddrPort, &ports)[0].len(), 24);
    }
}
