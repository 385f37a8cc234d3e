//! The fence thread's inbox: admits wait here until the thread takes them all at once into one
//! netlink batch. Handing them over costs one wake-up a pass of the runtime, not one an admit:
//! the first admit pushed while the thread sleeps schedules the wake for the end of the pass
//! ([`after_pass`]); the admits the pass makes after it ride on it. While the thread is busy
//! with a batch nothing wakes it: it looks again when the batch is done.
//!
//! Before, admits went through a std channel and each woke the thread; on the one core a gateway
//! pins dnsfence to, the thread then ran batches of one, and its wake-ups and context switches
//! were a quarter of its CPU (`perf record -e cpu-clock -g`, fenced cold run, one context switch
//! a miss).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{AdmitError, AdmitJob};
use crate::base::sendq::after_pass;
use crate::base::sync::lock;

/// Admits waiting for the thread before new ones are refused.
const QUEUE: usize = 4096;

/// Admits waiting for the fence thread.
pub(super) struct Inbox {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<AdmitJob>,
    /// The thread waits on `ready`.
    sleeping: bool,
    /// A wake is scheduled for the end of this pass: later admits ride on it.
    waking: bool,
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
        })
    }

    /// Queues an admit; a full queue refuses it.
    pub(super) fn push(self: &Arc<Self>, job: AdmitJob) -> Result<(), AdmitError> {
        let wake = {
            let mut q = lock(&self.queue);
            if q.closed {
                return Err(AdmitError::Closed);
            }
            if q.jobs.len() >= QUEUE {
                return Err(AdmitError::QueueFull);
            }
            q.jobs.push(job);
            q.sleeping && !std::mem::replace(&mut q.waking, true)
        };
        if wake {
            let inbox = self.clone();
            after_pass(move || {
                lock(&inbox.queue).waking = false;
                inbox.ready.notify_one();
            });
        }
        Ok(())
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

    #[test]
    fn the_admits_of_one_pass_wake_the_thread_once_when_the_pass_ends() {
        let inbox = Inbox::new();
        let thread = taker(&inbox);
        while !sleeping(&inbox) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            for _ in 0..10 {
                inbox.push(job()).unwrap();
            }
            // The pass is not over: the thread still sleeps, the admits wait.
            std::thread::sleep(Duration::from_millis(50));
            assert!(sleeping(&inbox));
            assert_eq!(lock(&inbox.queue).jobs.len(), 10);
            // The pass ends: the wake goes out, the thread takes all ten at once.
            let woke = async {
                while !lock(&inbox.queue).jobs.is_empty() {
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
