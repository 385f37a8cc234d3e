//! The fence: every address of an allowed answer goes into the view's firewall sets (nftables or
//! ipset; the `list` backend keeps them for HTTP pull lists only), confirmed by the kernel before
//! the answer leaves, with a timeout tied to the TTL.
//!
//! Shape: this module is the handle the query path holds ([`Fence`]): it asks the [`Ledger`]
//! which of an answer's elements need writing and queues those in a bounded inbox (`inbox.rs`),
//! then awaits the kernel's verdict up to `admit_deadline`. When the runtime's pass ends, the
//! thread that ends it writes the pass's admits in one netlink transaction; what it cannot
//! write goes to one dedicated thread (`worker.rs`), which owns the socket's setup in the
//! network namespace, finds whose update the kernel refused, resyncs, and keeps the ledger —
//! the source of truth a resync restores the kernel's sets from.

mod inbox;
pub mod ipset;
pub mod ledger;
pub mod netlink;
pub mod nft;
pub mod plan;
mod worker;
pub(crate) use worker::netns_path;

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::base::sync::lock;
use crate::catalog::zones::PortSpec;
use crate::config::{FenceBackend, FenceConfig, FenceMode};
use crate::resolve::answer::AnswerAddr;
use inbox::Inbox;
pub use ledger::ElementKey;
pub use ledger::{Admission, Ledger, LedgerEntry, Restored};
use ledger::{Confirmed, Freshness, decode_key};
pub use plan::ViewPlan;
use worker::Worker;

/// The fence could not start.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The network namespace could not be entered.
    #[error("fence: network namespace '{0}': {1}")]
    Netns(String, String),
    /// The process lacks CAP_NET_ADMIN: nftables would refuse every change.
    #[error(
        "fence: dnsfence lacks CAP_NET_ADMIN, which [fence] needs to create and fill its firewall sets: \
         run it as root, or as the packaged unit does (AmbientCapabilities=CAP_NET_ADMIN \
         CAP_NET_BIND_SERVICE), or set [fence] backend = \"list\""
    )]
    NoCapability,
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
    #[error("the kernel refused the update: {0}")]
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
    /// Elements refreshed on a cache hit (written again before the answer).
    pub readmits_cache_hit: AtomicU64,
    /// Netlink batches of admits the fence thread sent.
    pub batches: AtomicU64,
    /// Netlink batches of admits written where a pass of the runtime ended.
    pub batches_at_pass_end: AtomicU64,
    /// Resyncs after the table or a set was found missing by the periodic check.
    pub resyncs_missing: AtomicU64,
    /// Resyncs triggered by a write that failed on a missing table or set.
    pub resyncs_write_failure: AtomicU64,
    /// Resyncs that failed (nft could not recreate the table and sets).
    pub resync_failures: AtomicU64,
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

/// An element this gateway's answer put in a set, confirmed by the kernel: what the fence hands
/// its tap (peer sync) after every batch.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The dynamic set's index ([`Fence::sets`]).
    pub set: u16,
    /// The element's key bytes as the kernel stores them.
    pub element: Vec<u8>,
    /// The timeout it was written with.
    pub timeout: Duration,
    /// The question name of the answer that carried it.
    pub name: Box<str>,
}

/// Called with what each batch confirmed for this gateway's own answers (never what a peer
/// sent), on the fence's thread: it must only queue.
pub type Tap = Arc<dyn Fn(&[Shared]) + Send + Sync>;

/// Hands the confirmed elements of this gateway's answers to the tap, if one is set.
fn tap(state: &State, confirmed: &[Confirmed]) {
    let Some(tap) = lock(&state.tap).clone() else {
        return;
    };
    let shared: Vec<Shared> = confirmed
        .iter()
        .filter(|c| c.admission.via.is_none())
        .map(|c| Shared {
            set: c.key.set(),
            element: c.key.element().to_vec(),
            timeout: c.timeout,
            name: c.admission.name.clone(),
        })
        .collect();
    if !shared.is_empty() {
        tap(&shared);
    }
}

/// One element waiting for the kernel.
#[derive(Debug, Clone)]
struct Pending {
    /// What the ledger records once the kernel confirms it.
    element: Confirmed,
    /// The kernel still holds it: a refresh replaces it.
    refresh: bool,
}

struct AdmitJob {
    elements: Vec<Pending>,
    reply: Option<tokio::sync::oneshot::Sender<Result<(), AdmitError>>>,
}

/// What the query path and the fence thread share.
struct State {
    cfg: FenceConfig,
    sets: Vec<DynSet>,
    /// Per view index: (v4 set, v6 set); `None` for views without a fence.
    views: Vec<Option<(u16, u16)>>,
    plans: Vec<ViewPlan>,
    /// A std mutex: held only for map lookups and inserts (and copies for readers), never
    /// across a wait.
    ledger: Mutex<Ledger>,
    stats: Arc<FenceStats>,
    /// Elements found in the kernel's sets at start that the ledger did not have.
    adopted: AtomicU64,
    /// Peer sync's queue of this gateway's admissions.
    tap: Mutex<Option<Tap>>,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl State {
    fn freshness(&self) -> Freshness {
        Freshness {
            grace: self.cfg.grace,
            recheck: self.cfg.recheck,
        }
    }

    /// The view's (v4, v6) sets and the answer's elements there, each with the timeout it gets:
    /// the address's TTL less `age`, clamped to the bounds, plus grace. One walk for both
    /// [`Fence::admit`] and [`Fence::is_fresh`].
    fn for_each_element(
        &self,
        view: usize,
        addrs: &[AnswerAddr],
        ports: &[PortSpec],
        age: u32,
        mut f: impl FnMut(ElementKey, Duration) -> bool,
    ) -> bool {
        let Some(Some((v4, v6))) = self.views.get(view).copied() else {
            return true;
        };
        let cfg = &self.cfg;
        addrs.iter().all(|a| {
            let set = if a.ip.is_ipv6() { v6 } else { v4 };
            let lifetime = Duration::from_secs(a.ttl.saturating_sub(age).into())
                .clamp(cfg.min_ttl, cfg.max_ttl);
            ledger::element_keys(set, a.ip, self.sets[set as usize].mode, ports)
                .all(|key| f(key, lifetime))
        })
    }
}

/// Handle to the fence. Dropping it stops the thread; the kernel keeps the sets and their
/// elements, which time out by themselves.
pub struct Fence {
    state: Arc<State>,
    /// The fence thread's queue; `None` for the list backend, which only keeps the ledger.
    jobs: Option<Arc<Inbox>>,
}

impl Drop for Fence {
    fn drop(&mut self) {
        if let Some(inbox) = &self.jobs {
            inbox.close();
        }
    }
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("sets", &self.state.sets.len())
            .finish_non_exhaustive()
    }
}

/// Whether this process's effective capabilities include CAP_NET_ADMIN (bit 12 of `CapEff` in
/// /proc/self/status). If the file cannot be read, assume so and let the kernel answer.
pub(crate) fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

impl Fence {
    /// Starts the fence thread: enters the network namespace, opens the netlink socket, creates the
    /// table and sets and loads the static ranges. `plans[i]` belongs to view `i`.
    pub fn start(cfg: &FenceConfig, plans: Vec<ViewPlan>) -> Result<Fence, FenceError> {
        Fence::start_restoring(cfg, plans, Vec::new())
    }

    /// [`Fence::start`], with the elements of a warm-restart state: those of a set this config
    /// still has go into the ledger and are written to the kernel before the fence is ready (the
    /// kernel may have lost them: a reboot, a flush while dnsfence was down). How many were
    /// restored is logged.
    pub fn start_restoring(
        cfg: &FenceConfig,
        plans: Vec<ViewPlan>,
        restored: Vec<Restored>,
    ) -> Result<Fence, FenceError> {
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
        let ledger = restore(&sets, restored);
        let state = Arc::new(State {
            cfg: cfg.clone(),
            sets,
            views,
            plans,
            ledger: Mutex::new(ledger),
            stats: Arc::default(),
            adopted: AtomicU64::new(0),
            tap: Mutex::new(None),
            healthy: AtomicBool::new(false),
            last_error: Mutex::new(None),
        });
        if cfg.backend == FenceBackend::List {
            state.healthy.store(true, Ordering::Relaxed);
            tracing::info!(
                sets = state.sets.len(),
                "fence ready: list backend (no kernel sets; pull lists over HTTP)"
            );
            return Ok(Fence { state, jobs: None });
        }
        if !has_net_admin() {
            return Err(FenceError::NoCapability);
        }
        let inbox = Inbox::new();
        let rx = inbox.clone();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Arc<worker::Writer>, FenceError>>();
        let thread_state = state.clone();
        std::thread::Builder::new()
            .name("dnsfence-fence".into())
            .spawn(move || {
                let mut worker = match Worker::init(thread_state) {
                    Ok(w) => {
                        let _ = ready_tx.send(Ok(w.writer()));
                        w
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                worker.run(&rx);
            })
            .map_err(|e| FenceError::Thread(e.to_string()))?;
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(writer)) => {
                let direct_state = state.clone();
                inbox.set_direct(Box::new(move |jobs| writer.try_write(&direct_state, jobs)));
                Ok(Fence {
                    state,
                    jobs: Some(inbox),
                })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(FenceError::Thread("the fence thread did not start".into())),
        }
    }

    /// Puts the addresses of an answer into the view's sets and waits for the kernel, at most
    /// `admit_deadline`. `why` says which answer it is (called only if something is written);
    /// `age`: seconds since the answer was stored (its TTLs count down). Elements the ledger
    /// knows fresh are skipped; when all are, no round trip is made.
    pub async fn admit(
        &self,
        view: usize,
        why: &(dyn Fn() -> Admission + Sync),
        addrs: &[AnswerAddr],
        ports: &[PortSpec],
        age: u32,
        cache_hit: bool,
    ) -> Result<Admitted, AdmitError> {
        let state = &self.state;
        let now = Instant::now();
        let rule = state.freshness();
        let mut elements = Vec::new();
        // Made once, for the first element that needs writing, and shared by all of them.
        let mut admission: Option<Arc<Admission>> = None;
        {
            let ledger = lock(&state.ledger);
            state.for_each_element(view, addrs, ports, age, |key, lifetime| {
                if let ledger::State::Stale { live } = ledger.state(&key, lifetime, now, rule) {
                    let admission = admission.get_or_insert_with(|| Arc::new(why())).clone();
                    elements.push(Pending {
                        element: Confirmed {
                            key,
                            timeout: lifetime + rule.grace,
                            admission,
                        },
                        refresh: live,
                    });
                }
                true
            });
        }
        let stats = &state.stats;
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
            let confirmed: Vec<Confirmed> = elements.into_iter().map(|p| p.element).collect();
            tap(state, &confirmed);
            lock(&state.ledger).record(confirmed, now);
            stats.admits_ok.fetch_add(1, Ordering::Relaxed);
            return Ok(Admitted::Written(written));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = AdmitJob {
            elements,
            reply: Some(tx),
        };
        jobs.push(job)?;
        match tokio::time::timeout(state.cfg.admit_deadline, rx).await {
            Ok(Ok(Ok(()))) => Ok(Admitted::Written(written)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(AdmitError::Closed),
            Err(_) => Err(AdmitError::Deadline),
        }
    }

    /// Sets the tap peer sync queues this gateway's admissions with.
    pub fn set_tap(&self, tap: Tap) {
        *lock(&self.state.tap) = Some(tap);
    }

    /// The dynamic set of `view` for one address family, and the key of `element` in it: `None`
    /// when this config has no such view (or no fence for it), or the element is not an
    /// address (with a port in `addr_port` mode) of that family.
    pub fn peer_key(&self, view: &str, v6: bool, element: &[u8]) -> Option<ElementKey> {
        let i = self
            .state
            .sets
            .iter()
            .position(|s| s.view == view && s.v6 == v6)?;
        let key = ElementKey::from_element(i as u16, element)?;
        let (ip, port) = decode_key(key.element())?;
        let s = &self.state.sets[i];
        (ip.is_ipv6() == v6 && port.is_some() == (s.mode == FenceMode::AddrPort)).then_some(key)
    }

    /// The longest timeout this fence gives an element: `max_ttl_secs` plus the grace.
    pub fn max_timeout(&self) -> Duration {
        self.state.cfg.max_ttl + self.state.cfg.grace
    }

    /// Puts elements a peer gateway sent into the sets, without waiting (the peer's answer has
    /// long left): each with its own timeout and admission. An element the ledger already has
    /// for at least as long is skipped — union, the later expiry wins. How many were queued.
    pub fn admit_from_peer(
        &self,
        elements: Vec<(ElementKey, Duration, Arc<Admission>)>,
    ) -> Result<usize, AdmitError> {
        let state = &self.state;
        let now = Instant::now();
        let pending: Vec<Pending> = {
            let ledger = lock(&state.ledger);
            elements
                .into_iter()
                .filter_map(|(key, timeout, admission)| {
                    let live = match ledger.expires(&key) {
                        Some(e) if e >= now + timeout => return None,
                        Some(e) => e > now,
                        None => false,
                    };
                    Some(Pending {
                        element: Confirmed {
                            key,
                            timeout,
                            admission,
                        },
                        refresh: live,
                    })
                })
                .collect()
        };
        let n = pending.len();
        if n == 0 {
            return Ok(0);
        }
        let Some(jobs) = &self.jobs else {
            lock(&state.ledger).record(pending.into_iter().map(|p| p.element), now);
            return Ok(n);
        };
        let job = AdmitJob {
            elements: pending,
            reply: None,
        };
        jobs.push(job).map(|()| n)
    }

    /// Whether the view's sets are keyed by port too (addr_port mode).
    pub fn needs_ports(&self, view: usize) -> bool {
        matches!(self.state.views.get(view), Some(Some((v4, _)))
            if self.state.sets[*v4 as usize].mode == FenceMode::AddrPort)
    }

    /// Whether every element of an answer stored `age` seconds ago is fresh by the same rule as
    /// [`Fence::admit`]: a cached answer is then served without waiting, else it goes through
    /// `admit` first. No allocation: this is the UDP workers' path.
    pub fn is_fresh(
        &self,
        view: usize,
        addrs: &[AnswerAddr],
        ports: &[PortSpec],
        age: u32,
        now: Instant,
    ) -> bool {
        let state = &self.state;
        let rule = state.freshness();
        let ledger = lock(&state.ledger);
        state.for_each_element(view, addrs, ports, age, |key, lifetime| {
            ledger.state(&key, lifetime, now, rule) == ledger::State::Fresh
        })
    }

    /// The counters.
    pub fn stats(&self) -> &FenceStats {
        &self.state.stats
    }

    /// The counters, to read at scrape time.
    pub fn shared_stats(&self) -> Arc<FenceStats> {
        self.state.stats.clone()
    }

    /// Elements found in the kernel's sets at start that no state file had (after a crash):
    /// adopted into the ledger with provenance "restored".
    pub fn adopted(&self) -> u64 {
        self.state.adopted.load(Ordering::Relaxed)
    }

    /// Whether the last write or check succeeded.
    pub fn healthy(&self) -> bool {
        self.state.healthy.load(Ordering::Relaxed)
    }

    /// The last error the fence met, if any.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.state.last_error).clone()
    }

    /// Every dynamic set.
    pub fn sets(&self) -> &[DynSet] {
        &self.state.sets
    }

    /// Live elements of one dynamic set: (address, port spec if any, entry).
    pub fn elements(&self, set: usize) -> Vec<(IpAddr, Option<PortSpec>, LedgerEntry)> {
        let now = Instant::now();
        let ledger = lock(&self.state.ledger);
        ledger
            .live(set as u16, now)
            .filter_map(|(k, e)| {
                let (ip, port) = decode_key(k)?;
                Some((ip, port, e.clone()))
            })
            .collect()
    }

    /// Number of live elements of one dynamic set, and how many of them only report-mode answers
    /// the allowlist would deny put there.
    pub fn element_count(&self, set: usize) -> (usize, usize) {
        let ledger = lock(&self.state.ledger);
        ledger
            .live(set as u16, Instant::now())
            .fold((0, 0), |(n, w), (_, e)| {
                (n + 1, w + usize::from(e.would_deny()))
            })
    }

    /// Every live element with its set, its time left and why it is there: what the
    /// warm-restart state keeps.
    pub fn snapshot(&self) -> Vec<Restored> {
        let now = Instant::now();
        let ledger = lock(&self.state.ledger);
        ledger
            .entries(now)
            .filter_map(|(set, element, e)| {
                let s = self.state.sets.get(set as usize)?;
                Some(Restored {
                    table: s.table.clone(),
                    set: s.name.clone(),
                    element: element.to_vec(),
                    left: e.expires - now,
                    admissions: e.admissions.iter().map(|a| (**a).clone()).collect(),
                })
            })
            .collect()
    }

    /// The static ranges of each view, as planned.
    pub fn plans(&self) -> &[ViewPlan] {
        &self.state.plans
    }
}

/// The ledger a start begins with: each restored element of a set this config has (by table
/// and name, and of the set's address family and key layout), the rest left out and counted in
/// the log line.
fn restore(sets: &[DynSet], restored: Vec<Restored>) -> Ledger {
    let mut ledger = Ledger::default();
    if restored.is_empty() {
        return ledger;
    }
    let now = Instant::now();
    let (mut kept, mut left_out) = (0usize, 0usize);
    for r in restored {
        let key = sets
            .iter()
            .position(|s| s.table == r.table && s.name == r.set)
            .and_then(|i| {
                let key = ElementKey::from_element(i as u16, &r.element)?;
                let (ip, port) = decode_key(key.element())?;
                let s = &sets[i];
                let fits =
                    ip.is_ipv6() == s.v6 && port.is_some() == (s.mode == FenceMode::AddrPort);
                fits.then_some(key)
            });
        match key {
            Some(key) => {
                let admissions = r.admissions.into_iter().map(Arc::new).collect();
                ledger.restore(key, now + r.left, admissions, now);
                kept += 1;
            }
            None => left_out += 1,
        }
    }
    tracing::info!(
        elements = kept,
        left_out,
        "fence: elements of the warm-restart state restored (those of sets this config no longer has left out)"
    );
    ledger
}
