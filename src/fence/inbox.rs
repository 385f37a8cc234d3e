//! Where admits wait for the kernel. Those of one pass of the runtime are gathered and, when the
//! pass ends ([`after_pass`]), written together by the thread that ends it (the [`Direct`]
//! writer: one netlink transaction, no other thread woken); what it cannot write goes to the
//! fence thread, woken once for all of it, which takes everything waiting at once.
//!
//! Before, each admit went through a std channel to the fence thread and woke it: on the one
//! core a gateway pins dnsfence to, the thread then ran batches of one, and its wake-ups,
//! context switches and the wake-ups of the admits' tasks from outside the runtime cost more
//! than the kernel's write (`perf record -e cpu-clock -g` of fenced cold runs: one context
//! switch a miss).

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use super::{AdmitError, AdmitJob};
use crate::base::sendq::after_pass;
use crate::base::sync::lock;

/// Admits waiting for the thread before new ones are refused.
const QUEUE: usize = 4096;

/// Writes the admits of a pass, if it can, on the thread that ends the pass; returns those it
/// could not write, for the fence thread.
pub(super) type Direct = Box<dyn Fn(Vec<AdmitJob>) -> Vec<AdmitJob> + Send + Sync>;

/// Admits waiting for the kernel.
pub(super) struct Inbox {
    queue: Mutex<Queue>,
    ready: Condvar,
    direct: OnceLock<Direct>,
}

#[derive(Default)]
struct Queue {
    /// This pass's admits, written when it ends.
    pass: Vec<AdmitJob>,
    /// The fence thread's.
    jobs: Vec<AdmitJob>,
    /// The thread waits on `ready`.
    sleeping: bool,
    /// The handle is gone: the thread ends once the queue is empty.
    closed: bool,
}

/// What the fence thread takes from the inbox.
pub(super) enum Taken {
    /// Every admit that was waiting.
    Jobs(Vec<AdmitJob>),
    /// Nothing came within the wait.
    Idle,
    /// The fence handle is gone and nothing is left.
    Closed,
}

impl Inbox {
    pub(super) fn new() -> Arc<Inbox> {
        Arc::new(Inbox {
            queue: Mutex::default(),
            ready: Condvar::new(),
            direct: OnceLock::new(),
        })
    }

    /// From now on the admits of a pass are first handed to `direct`.
    pub(super) fn set_direct(&self, direct: Direct) {
        let _ = self.direct.set(direct);
    }

    /// Queues an admit for the end of this pass; a full queue refuses it.
    pub(super) fn push(self: &Arc<Self>, job: AdmitJob) -> Result<(), AdmitError> {
        let first = {
            let mut q = lock(&self.queue);
            if q.closed {
                return Err(AdmitError::Closed);
            }
            if q.pass.len() + q.jobs.len() >= QUEUE {
                return Err(AdmitError::QueueFull);
            }
            q.pass.push(job);
            q.pass.len() == 1
        };
        if first {
            let inbox = self.clone();
            after_pass(move || inbox.end_pass());
        }
        Ok(())
    }

    /// The pass is over: its admits are written, or handed to the fence thread.
    fn end_pass(&self) {
        let pass = std::mem::take(&mut lock(&self.queue).pass);
        let left = match self.direct.get() {
            Some(direct) => direct(pass),
            None => pass,
        };
        if left.is_empty() {
            return;
        }
        let wake = {
            let mut q = lock(&self.queue);
            q.jobs.extend(left);
            q.sleeping
        };
        if wake {
            self.ready.notify_one();
        }
    }

    /// Every admit waiting, after at most `wait` for the first.
    pub(super) fn take(&self, wait: Duration) -> Taken {
        let mut q = lock(&self.queue);
        if q.jobs.is_empty() && !q.closed {
            q.sleeping = true;
            q = match self.ready.wait_timeout(q, wait) {
                Ok((q, _)) => q,
                Err(poisoned) => poisoned.into_inner().0,
            };
            q.sleeping = false;
        }
        match std::mem::take(&mut q.jobs) {
            jobs if !jobs.is_empty() => Taken::Jobs(jobs),
            _ if q.closed => Taken::Closed,
            _ => Taken::Idle,
        }
    }

    /// The handle is gone: the thread finishes what is queued and ends.
    pub(super) fn close(&self) {
        lock(&self.queue).closed = true;
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> AdmitJob {
        AdmitJob {
            elements: Vec::new(),
            reply: None,
        }
    }

    /// A thread that takes from the inbox as the fence thread does; what each take returned.
    fn taker(inbox: &Arc<Inbox>) -> std::thread::JoinHandle<Vec<usize>> {
        let inbox = inbox.clone();
        std::thread::spawn(move || {
            let mut taken = Vec::new();
            loop {
                match inbox.take(Duration::from_secs(10)) {
                    Taken::Jobs(jobs) => taken.push(jobs.len()),
                    Taken::Idle => taken.push(0),
                    Taken::Closed => return taken,
                }
            }
        })
    }

    fn sleeping(inbox: &Inbox) -> bool {
        lock(&inbox.queue).sleeping
    }

    /// A taker gone to sleep on the inbox, and a runtime whose passes push to it.
    fn asleep_with_runtime(
        inbox: &Arc<Inbox>,
    ) -> (std::thread::JoinHandle<Vec<usize>>, tokio::runtime::Runtime) {
        let thread = taker(inbox);
        while !sleeping(inbox) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        (thread, runtime)
    }

    #[test]
    fn the_admits_of_one_pass_wake_the_thread_once_when_the_pass_ends() {
        let inbox = Inbox::new();
        let (thread, runtime) = asleep_with_runtime(&inbox);
        runtime.block_on(async {
            for _ in 0..10 {
                inbox.push(job()).unwrap();
            }
            // The pass is not over: the thread still sleeps, the admits wait.
            std::thread::sleep(Duration::from_millis(50));
            assert!(sleeping(&inbox));
            assert_eq!(lock(&inbox.queue).pass.len(), 10);
            // The pass ends: no direct writer, so the thread is woken and takes all ten at once.
            let woke = async {
                while !lock(&inbox.queue).pass.is_empty() || !lock(&inbox.queue).jobs.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(5), woke)
                .await
                .expect("the thread was woken");
        });
        inbox.close();
        assert_eq!(thread.join().unwrap(), [10]);
    }

    #[test]
    fn a_pass_goes_to_the_direct_writer_and_only_what_it_leaves_wakes_the_thread() {
        let inbox = Inbox::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        // Writes every pass but keeps back the last admit of a pass of three or more.
        inbox.set_direct(Box::new(move |mut jobs: Vec<AdmitJob>| {
            lock(&s).push(jobs.len());
            if jobs.len() >= 3 {
                jobs.split_off(jobs.len() - 1)
            } else {
                Vec::new()
            }
        }));
        let (thread, runtime) = asleep_with_runtime(&inbox);
        runtime.block_on(async {
            for pass in [2, 5] {
                for _ in 0..pass {
                    inbox.push(job()).unwrap();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        inbox.close();
        assert_eq!(
            *lock(&seen),
            [2, 5],
            "one call a pass, with all of its admits"
        );
        assert_eq!(
            thread.join().unwrap(),
            [1],
            "the thread woke once, for the one left"
        );
    }

    #[test]
    fn a_full_inbox_refuses_and_a_closed_one_ends_the_thread_after_what_is_queued() {
        let inbox = Inbox::new();
        // No runtime and nobody sleeping: pushes queue without a wake.
        for _ in 0..QUEUE {
            inbox.push(job()).unwrap();
        }
        assert_eq!(inbox.push(job()).unwrap_err(), AdmitError::QueueFull);
        inbox.close();
        assert_eq!(inbox.push(job()).unwrap_err(), AdmitError::Closed);
        assert_eq!(
            taker(&inbox).join().unwrap(),
            [QUEUE],
            "the queued ones first"
        );
    }
}
