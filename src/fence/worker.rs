//! The fence thread: it owns the netlink socket (blocking, in the configured network namespace),
//! drains every admit that is waiting into one netlink batch, records what the kernel confirmed
//! in the ledger, and checks every `resync_interval` that the table and sets still exist —
//! recreating them and writing every live element back when someone wiped them. At start it
//! adopts what the sets already hold (an earlier process's elements) and writes back what a
//! warm-restart state gave the ledger, before the fence is ready.
//!
//! Refreshing an element: NEWSETELEM leaves an existing element's timeout unchanged on kernels
//! before 6.11, so a refresh is DESTROYSETELEM + NEWSETELEM in the same transaction (DESTROY needs
//! Linux 6.3; on older kernels dnsfence falls back to add-only and says so once).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use super::inbox::{Inbox, Taken};
use super::ipset::{self, Element};
use super::netlink::{FAMILY_INET, NetfilterSocket, OpKind, OpResult, SetOp};
use super::{AdmitError, AdmitJob, FenceError, Pending, State, lock, nft};
use crate::config::FenceBackend;

/// Admits are coalesced into one batch until it holds this many elements (about 100 KiB of
/// netlink: a batch must fit in one send).
const MAX_BATCH_ELEMENTS: usize = 2048;

/// The kernel subsystem the sets live in: the same netlink socket, other messages and another
/// setup tool. The `list` backend has no kernel sets and no worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// nf_tables (`nft`).
    Nftables,
    /// ip_set (`ipset`).
    Ipset,
}

impl Kernel {
    fn of(backend: FenceBackend) -> Kernel {
        match backend {
            FenceBackend::Ipset => Kernel::Ipset,
            FenceBackend::Nftables | FenceBackend::List => Kernel::Nftables,
        }
    }

    /// One batch to the kernel: an nf_tables transaction, or ip_set messages.
    fn write(
        self,
        sock: &mut NetfilterSocket,
        ops: &[SetOp<'_>],
    ) -> std::io::Result<Vec<OpResult>> {
        match self {
            Kernel::Nftables => sock.apply(ops),
            Kernel::Ipset => sock.ipset_apply(ops),
        }
    }

    /// Creates the sets if missing and (re)loads the static ranges: one `nft -f` or one
    /// `ipset restore`.
    fn setup(self, state: &State) -> Result<(), String> {
        match self {
            Kernel::Nftables => nft::run_script(&state.cfg.nft, &nft::setup_script(&state.plans)),
            Kernel::Ipset => ipset::run_restore(&ipset::setup_script(&state.plans)),
        }
    }

    /// The elements a dynamic set holds now, with the milliseconds each has left.
    fn elements(
        self,
        sock: &mut NetfilterSocket,
        s: &super::DynSet,
    ) -> std::io::Result<Vec<(Vec<u8>, Option<u64>)>> {
        match self {
            Kernel::Nftables => sock.set_elements(FAMILY_INET, &s.table, &s.name),
            Kernel::Ipset => sock.ipset_elements(&s.name),
        }
    }

    /// Whether a dynamic set exists.
    fn set_exists(self, sock: &mut NetfilterSocket, s: &super::DynSet) -> std::io::Result<bool> {
        match self {
            Kernel::Nftables => sock.set_exists(FAMILY_INET, &s.table, &s.name),
            Kernel::Ipset => sock.ipset_exists(&s.name),
        }
    }
}

/// The netlink socket (opened in the fence's network namespace, where it stays whichever thread
/// uses it) and what writing to it needs: shared by the fence thread and the end of each pass
/// of the runtime ([`Writer::try_write`]). Whoever holds the lock writes.
pub(super) struct Writer {
    sock: Mutex<NetfilterSocket>,
    kernel: Kernel,
    /// DESTROYSETELEM works here: nf_tables on Linux 6.3 and later (ip_set replaces an
    /// element's timeout on ADD: a refresh needs no delete).
    destroy_supported: AtomicBool,
}

impl Writer {
    fn destroy_supported(&self) -> bool {
        self.destroy_supported.load(Ordering::Relaxed)
    }

    /// The admits of one pass of the runtime, written by the thread that ends the pass: one
    /// transaction (a pass of more than [`MAX_BATCH_ELEMENTS`] elements, one per batch), whose acknowledgements the kernel has queued by the time `send` returns
    /// (nfnetlink handles a batch in the sender's system call), so nothing waits on another
    /// thread. Those it could not write — the fence thread holds the socket (a resync, the
    /// periodic check), or the kernel refused the batch — are returned for the fence thread,
    /// which finds whose update was refused and resyncs when a set is gone.
    ///
    /// On one core the thread hand-off cost more than the kernel's write: waking the fence
    /// thread, switching to it and back, and waking each admit's task from outside the runtime
    /// (`perf record -e cpu-clock -g`, fenced cold run at a fixed 15k qps: the fence thread was
    /// all of the fence's cost, a third of it in futex waits and wake-ups).
    pub(super) fn try_write(&self, state: &State, jobs: Vec<AdmitJob>) -> Vec<AdmitJob> {
        let mut sock = match self.sock.try_lock() {
            Ok(sock) => sock,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return jobs,
        };
        let mut left = Vec::new();
        for batch in batches(jobs) {
            state
                .stats
                .batches_at_pass_end
                .fetch_add(1, Ordering::Relaxed);
            if self.write_merged(state, &mut sock, &batch) {
                confirm_all(state, batch);
            } else {
                left.extend(batch);
            }
        }
        left
    }

    /// One transaction with one message per set and kind for all of `jobs`' elements: an
    /// element two jobs carry is written once, with the longer timeout, and refreshed if either
    /// refreshes it. Whether the kernel committed it.
    fn write_merged(&self, state: &State, sock: &mut NetfilterSocket, jobs: &[AdmitJob]) -> bool {
        let mut all: Vec<(u16, &[u8], u64, bool)> = jobs
            .iter()
            .flat_map(|j| &j.elements)
            .map(|p| {
                let key = &p.element.key;
                let ms = p.element.timeout.as_millis() as u64;
                (key.set(), key.element(), ms, p.refresh)
            })
            .collect();
        // Per set and element, the longest timeout first; the duplicates after it go, leaving
        // it refreshed if any of them was.
        all.sort_unstable_by(|a, b| (a.0, a.1, b.2).cmp(&(b.0, b.1, a.2)));
        all.dedup_by(|later, kept| {
            let same = (later.0, later.1) == (kept.0, kept.1);
            kept.3 |= same && later.3;
            same
        });
        let sets = &state.sets;
        let mut ops: Vec<SetOp<'_>> = Vec::new();
        for group in all.chunk_by(|a, b| a.0 == b.0) {
            let s = &sets[group[0].0 as usize];
            let op = |kind, elements| SetOp {
                kind,
                family: FAMILY_INET,
                table: &s.table,
                set: &s.name,
                elements,
            };
            let refresh: Vec<(&[u8], Option<u64>)> =
                group.iter().filter(|e| e.3).map(|e| (e.1, None)).collect();
            if self.destroy_supported() && !refresh.is_empty() {
                ops.push(op(OpKind::Destroy, refresh));
            }
            let add = group.iter().map(|e| (e.1, Some(e.2))).collect();
            ops.push(op(OpKind::Add, add));
        }
        matches!(self.kernel.write(sock, &ops),
            Ok(r) if r.iter().all(|r| *r == OpResult::Ok))
    }
}

/// The fence thread.
pub(super) struct Worker {
    state: Arc<State>,
    writer: Arc<Writer>,
    last_check: Instant,
}

impl Worker {
    pub(super) fn init(state: Arc<State>) -> Result<Worker, FenceError> {
        if let Some(ns) = &state.cfg.netns {
            enter_netns(ns).map_err(|e| FenceError::Netns(ns.clone(), e))?;
        }
        let sock = NetfilterSocket::open(Duration::from_secs(2)).map_err(FenceError::Socket)?;
        let kernel = Kernel::of(state.cfg.backend);
        kernel.setup(&state).map_err(FenceError::Setup)?;
        state.healthy.store(true, Ordering::Relaxed);
        let mut worker = Worker {
            state,
            writer: Arc::new(Writer {
                sock: Mutex::new(sock),
                kernel,
                destroy_supported: AtomicBool::new(kernel == Kernel::Nftables),
            }),
            last_check: Instant::now(),
        };
        // What the sets already hold (a crash left no state file; an element admitted before
        // is still there) joins the ledger, so resync and /v1/sets cover it.
        let adopted = worker.adopt();
        worker
            .state
            .adopted
            .store(adopted as u64, Ordering::Relaxed);
        // A warm restart: what the ledger was given goes back into the kernel before dnsfence
        // serves (a reboot or a flush while it was down left the sets without it).
        let restored = if lock(&worker.state.ledger).is_empty() {
            0
        } else {
            worker.write_back()
        };
        tracing::info!(
            sets = worker.state.sets.len(),
            netns = worker.state.cfg.netns.as_deref().unwrap_or("(own)"),
            adopted,
            restored,
            "fence ready: table and sets in place, static ranges loaded"
        );
        Ok(worker)
    }

    /// The socket and its writer, for the runtime's end-of-pass writes.
    pub(super) fn writer(&self) -> Arc<Writer> {
        self.writer.clone()
    }

    /// Reads every dynamic set's elements from the kernel into the ledger with the time they
    /// have left (provenance "restored": no answer of this process admitted them); an element
    /// the ledger has keeps the later expiry. How many were new to the ledger.
    fn adopt(&mut self) -> usize {
        let state = self.state.clone();
        let now = Instant::now();
        let mut adopted = 0;
        for (i, s) in state.sets.iter().enumerate() {
            let elements = match self.writer.kernel.elements(&mut lock(&self.writer.sock), s) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(set = %s.name, error = %e, "fence: cannot read the set's elements; not adopted");
                    continue;
                }
            };
            let mut ledger = lock(&state.ledger);
            for (element, left) in elements {
                // An element without a timeout is not one dnsfence wrote.
                let Some(left) = left.filter(|ms| *ms > 0) else {
                    continue;
                };
                let Some(key) = super::ledger::ElementKey::from_element(i as u16, &element) else {
                    continue;
                };
                adopted += usize::from(ledger.adopt(key, now + Duration::from_millis(left), now));
            }
        }
        adopted
    }

    /// Why the kernel sets need a resync, if they do: a set gone (nf_tables or ip_set) or, for
    /// ip_set, flushed (an element that must be there is not: the first static range, or a live
    /// element of the ledger).
    fn missing(&mut self) -> Option<String> {
        let state = self.state.clone();
        let kernel = self.writer.kernel;
        let mut sock = lock(&self.writer.sock);
        for s in &state.sets {
            match kernel.set_exists(&mut sock, s) {
                Ok(true) => {}
                Ok(false) if kernel == Kernel::Ipset => {
                    return Some(format!("ipset {} is gone", s.name));
                }
                Ok(false) => return Some(format!("set inet {} {} is gone", s.table, s.name)),
                Err(e) => return Some(format!("checking set {}: {e}", s.name)),
            }
        }
        // nf_tables sets are not flushed by hand without being noticed as missing elements on
        // a cache hit; an ipset flush is checked here.
        if kernel == Kernel::Nftables {
            return None;
        }
        for plan in &state.plans {
            let f = &plan.fence;
            for (name, v6) in [(&f.net_v4, false), (&f.net_v6, true)] {
                let present = match Element::first_static(plan, v6) {
                    Some(e) => sock.ipset_test(name, &e),
                    None => sock.ipset_exists(name),
                };
                match present {
                    Ok(true) => {}
                    Ok(false) => return Some(format!("ipset {name} is gone or was flushed")),
                    Err(e) => return Some(format!("checking ipset {name}: {e}")),
                }
            }
        }
        // One live element per dynamic set, long enough before its timeout to be sure.
        let live = lock(&state.ledger).outliving(Instant::now(), Duration::from_secs(2));
        let mut tested = vec![false; state.sets.len()];
        for (set, key, _) in &live {
            let i = *set as usize;
            if tested[i] {
                continue;
            }
            tested[i] = true;
            let Some(e) = Element::from_key(key) else {
                continue;
            };
            let name = &state.sets[i].name;
            match sock.ipset_test(name, &e) {
                Ok(true) => {}
                Ok(false) => return Some(format!("ipset {name} lost live elements (flushed?)")),
                Err(err) => return Some(format!("checking ipset {name}: {err}")),
            }
        }
        None
    }

    /// Takes every admit waiting, writes them in batches of at most [`MAX_BATCH_ELEMENTS`],
    /// and checks the sets every `resync_interval`, until the fence handle is dropped.
    pub(super) fn run(&mut self, inbox: &Inbox) {
        loop {
            let wait = self
                .state
                .cfg
                .resync_interval
                .saturating_sub(self.last_check.elapsed());
            match inbox.take(wait) {
                Taken::Jobs(jobs) => {
                    for batch in batches(jobs) {
                        self.process(batch);
                    }
                }
                Taken::Idle => {}
                Taken::Closed => return,
            }
            if self.last_check.elapsed() >= self.state.cfg.resync_interval {
                self.check();
            }
        }
    }

    /// Writes the jobs' elements in one transaction and answers each job. The first try puts
    /// every job's elements of a set in one message (the kernel's cost per message — parsing, the
    /// set's look-up, an acknowledgement to read back — was as much as its cost per element);
    /// if the kernel refuses it, one message a job and set tells whose update it was, and the
    /// innocent are retried (the kernel committed nothing).
    fn process(&mut self, jobs: Vec<AdmitJob>) {
        let merged = jobs.len() > 1 && {
            self.state.stats.batches.fetch_add(1, Ordering::Relaxed);
            let mut sock = lock(&self.writer.sock);
            self.writer.write_merged(&self.state, &mut sock, &jobs)
        };
        if merged {
            confirm_all(&self.state, jobs);
            return;
        }
        self.process_each(jobs);
    }

    /// Writes the jobs' elements in one transaction, one message per job and set, retrying the
    /// innocent when one job's update is refused (the kernel then commits nothing), and answers
    /// each job.
    fn process_each(&mut self, mut jobs: Vec<AdmitJob>) {
        let mut resynced = false;
        for _round in 0..4 {
            if jobs.is_empty() {
                return;
            }
            let sets = &self.state.sets;
            let mut ops: Vec<SetOp<'_>> = Vec::new();
            let mut owner: Vec<(usize, OpKind)> = Vec::new();
            for (j, job) in jobs.iter().enumerate() {
                let mut by_set: Vec<(u16, Vec<&Pending>)> = Vec::new();
                for p in &job.elements {
                    let set = p.element.key.set();
                    match by_set.iter_mut().find(|(s, _)| *s == set) {
                        Some((_, v)) => v.push(p),
                        None => by_set.push((set, vec![p])),
                    }
                }
                for (set, elems) in by_set {
                    let s = &sets[set as usize];
                    let refresh: Vec<(&[u8], Option<u64>)> = elems
                        .iter()
                        .filter(|p| p.refresh)
                        .map(|p| (p.element.key.element(), None))
                        .collect();
                    if self.writer.destroy_supported() && !refresh.is_empty() {
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
                            .map(|p| {
                                let timeout = p.element.timeout.as_millis() as u64;
                                (p.element.key.element(), Some(timeout))
                            })
                            .collect(),
                    });
                    owner.push((j, OpKind::Add));
                }
            }
            let stats = &self.state.stats;
            stats.batches.fetch_add(1, Ordering::Relaxed);
            let results = match self.writer.kernel.write(&mut lock(&self.writer.sock), &ops) {
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
            if verdict.iter().any(|v| v.2) && self.writer.destroy_supported() {
                tracing::warn!(
                    "this kernel has no DESTROYSETELEM (Linux < 6.3): refreshed elements keep their old timeout until they expire"
                );
                self.writer
                    .destroy_supported
                    .store(false, Ordering::Relaxed);
            }
            let mut retry = Vec::new();
            let mut missing = Vec::new();
            for (job, (err, aborted, destroy_unsupported)) in jobs.into_iter().zip(verdict) {
                match err {
                    Some(e) if e == libc::ENOENT && !resynced => missing.push(job),
                    Some(e) => finish(&self.state, job, Err(ipset::error_text(e))),
                    None if aborted || destroy_unsupported => retry.push(job),
                    None => finish(&self.state, job, Ok(())),
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
            finish(&self.state, job, Err(msg.to_string()));
        }
    }

    /// The periodic check: the table and every set must exist; if not, resync.
    fn check(&mut self) {
        self.last_check = Instant::now();
        if let Some(why) = self.missing() {
            tracing::warn!(reason = %why, "fence resync");
            self.state
                .stats
                .resyncs_missing
                .fetch_add(1, Ordering::Relaxed);
            self.resync("missing");
        }
        lock(&self.state.ledger).prune(Instant::now());
    }

    /// Recreates the table and sets, reloads the static ranges and writes every live element back
    /// with its remaining timeout.
    fn resync(&mut self, reason: &str) {
        if let Err(e) = self.writer.kernel.setup(&self.state) {
            self.state
                .stats
                .resync_failures
                .fetch_add(1, Ordering::Relaxed);
            self.state.healthy.store(false, Ordering::Relaxed);
            tracing::error!(error = %e, reason, "fence resync failed");
            *lock(&self.state.last_error) = Some(e);
            return;
        }
        let count = self.write_back();
        self.state.healthy.store(true, Ordering::Relaxed);
        tracing::info!(
            reason,
            elements = count,
            "fence resynced: table, sets, static ranges and live elements restored"
        );
    }

    /// Writes every element of the ledger that outlives the next half second to the kernel with
    /// its remaining timeout; how many.
    fn write_back(&mut self) -> usize {
        // Copied out under the lock, written without it.
        let live = lock(&self.state.ledger).outliving(Instant::now(), Duration::from_millis(500));
        let count = live.len();
        for chunk in live.chunks(1024) {
            let mut ops: Vec<SetOp<'_>> = Vec::new();
            for (set, key, left) in chunk {
                let ms = left.as_millis() as u64;
                let s = &self.state.sets[*set as usize];
                match ops
                    .iter_mut()
                    .find(|o| o.set == s.name && o.table == s.table)
                {
                    Some(op) => op.elements.push((key, Some(ms))),
                    None => ops.push(SetOp {
                        kind: OpKind::Add,
                        family: FAMILY_INET,
                        table: &s.table,
                        set: &s.name,
                        elements: vec![(key, Some(ms))],
                    }),
                }
            }
            let written = self.writer.kernel.write(&mut lock(&self.writer.sock), &ops);
            match written {
                Ok(r) if r.iter().all(|r| *r == OpResult::Ok) => {}
                Ok(r) => tracing::warn!(results = ?r, "fence resync: some elements were refused"),
                Err(e) => tracing::warn!(error = %e, "fence resync: netlink failed"),
            }
        }
        count
    }
}

/// `jobs` in batches of at most [`MAX_BATCH_ELEMENTS`] elements (a job larger than that alone),
/// in order: what one transaction carries, on either path.
fn batches(jobs: Vec<AdmitJob>) -> impl Iterator<Item = Vec<AdmitJob>> {
    let mut jobs = jobs.into_iter().peekable();
    std::iter::from_fn(move || {
        let mut batch = vec![jobs.next()?];
        let mut size = batch[0].elements.len();
        while let Some(job) = jobs.next_if(|j| size + j.elements.len() <= MAX_BATCH_ELEMENTS) {
            size += job.elements.len();
            batch.push(job);
        }
        Some(batch)
    })
}

/// Answers admits the kernel confirmed together: their elements go into the ledger (one lock for
/// all) and to the tap.
fn confirm_all(state: &State, jobs: Vec<AdmitJob>) {
    let stats = &state.stats;
    stats
        .admits_ok
        .fetch_add(jobs.len() as u64, Ordering::Relaxed);
    state.healthy.store(true, Ordering::Relaxed);
    let mut replies = Vec::with_capacity(jobs.len());
    let mut confirmed: Vec<super::Confirmed> = Vec::new();
    for job in jobs {
        confirmed.extend(job.elements.into_iter().map(|p| p.element));
        replies.extend(job.reply);
    }
    super::tap(state, &confirmed);
    lock(&state.ledger).record(confirmed, Instant::now());
    for reply in replies {
        let _ = reply.send(Ok(()));
    }
}

/// Answers an admit; what the kernel confirmed goes into the ledger and to the tap.
fn finish(state: &State, mut job: AdmitJob, result: Result<(), String>) {
    let stats = &state.stats;
    let now = Instant::now();
    match &result {
        Ok(()) => {
            stats.admits_ok.fetch_add(1, Ordering::Relaxed);
            state.healthy.store(true, Ordering::Relaxed);
            let confirmed: Vec<super::Confirmed> = std::mem::take(&mut job.elements)
                .into_iter()
                .map(|p| p.element)
                .collect();
            super::tap(state, &confirmed);
            lock(&state.ledger).record(confirmed, now);
        }
        Err(msg) => {
            stats.admits_failed.fetch_add(1, Ordering::Relaxed);
            state.healthy.store(false, Ordering::Relaxed);
            crate::warn_limited!(error = %msg, elements = job.elements.len(), "fence admit failed");
            *lock(&state.last_error) = Some(msg.clone());
        }
    }
    if let Some(reply) = job.reply.take() {
        let _ = reply.send(result.map_err(AdmitError::Kernel));
    }
}

/// The file of the named network namespace (`ip netns add NAME`).
pub(crate) fn netns_path(name: &str) -> Result<std::path::PathBuf, String> {
    ["/run/netns", "/var/run/netns"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or_else(|| "not found in /run/netns (create it with `ip netns add`)".to_string())
}

/// Moves the calling thread into the named network namespace (`ip netns add NAME`).
fn enter_netns(name: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let path = netns_path(name)?;
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
    use crate::fence::ledger::{Admission, ElementKey};
    use crate::fence::{Confirmed, Pending};

    fn job(elements: usize) -> AdmitJob {
        let admission = Arc::new(Admission {
            name: "a.example".into(),
            chain: Box::new([]),
            endpoint_sets: Box::new([]),
            would_deny: false,
            via: None,
        });
        let key = ElementKey::new(0, "192.0.2.1".parse().unwrap(), None);
        let pending = Pending {
            element: Confirmed {
                key,
                timeout: Duration::from_secs(60),
                admission,
            },
            refresh: false,
        };
        AdmitJob {
            elements: vec![pending; elements],
            reply: None,
        }
    }

    #[test]
    fn batches_hold_at_most_the_batch_size_in_order_and_a_larger_job_alone() {
        let sizes = [1000, 1000, 100, 3000, 10];
        let jobs = sizes.iter().map(|n| job(*n)).collect();
        let got: Vec<Vec<usize>> = batches(jobs)
            .map(|b| b.iter().map(|j| j.elements.len()).collect())
            .collect();
        assert_eq!(got, [vec![1000, 1000], vec![100], vec![3000], vec![10]]);
    }
}
