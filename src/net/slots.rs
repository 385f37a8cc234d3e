//! Connection slots: how many connections a listener holds in all and per client address, with a
//! share kept for trusted clients. The TCP listeners and the HTTP server count the same way.
//!
//! The counts sit behind a std `Mutex`: it is held for two integer updates per connection
//! (accept and close), never across an await, and a panic elsewhere leaves them usable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a connection was refused: the `limit` label of `dnsfence_overload_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every slot open to this client is taken.
    Full,
    /// This client holds its share already.
    Client,
}

/// The limits of one kind of listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections at most.
    pub max: usize,
    /// Connections per client address at most.
    pub per_client: usize,
    /// Slots only trusted clients may take (0: none kept).
    pub reserved: usize,
}

/// Open connections, in all and per client address.
#[derive(Debug)]
pub struct Slots {
    limits: Limits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One open connection's place; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.client);
            }
        }
    }
}

impl Slots {
    /// Counts for `limits`.
    pub fn new(limits: Limits) -> Arc<Slots> {
        Arc::new(Slots {
            limits,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    fn lock(&self) -> MutexGuard<'_, (usize, HashMap<IpAddr, usize>)> {
        crate::base::sync::lock(&self.open)
    }

    /// A slot for a new connection from `client`, or why not. Every client is held to its
    /// per-client share; an untrusted one also leaves the reserved slots alone.
    pub fn admit(self: &Arc<Self>, client: IpAddr, trusted: bool) -> Result<Slot, Refused> {
        let mut open = self.lock();
        let ceiling = if trusted {
            self.limits.max
        } else {
            self.limits.max.saturating_sub(self.limits.reserved)
        };
        if open.0 >= ceiling {
            return Err(Refused::Full);
        }
        let mine = open.1.entry(client).or_insert(0);
        if *mine >= self.limits.per_client {
            return Err(Refused::Client);
        }
        *mine += 1;
        open.0 += 1;
        Ok(Slot {
            slots: self.clone(),
            client,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_per_client_and_for_the_trusted() {
        let s = Slots::new(Limits {
            max: 4,
            per_client: 2,
            reserved: 1,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t: IpAddr = "127.0.0.1".parse().unwrap();
        let a1 = s.admit(a, false).unwrap();
        let _a2 = s.admit(a, false).unwrap();
        assert_eq!(s.admit(a, false).unwrap_err(), Refused::Client);
        let _b1 = s.admit(b, false).unwrap();
        // Three of four taken: the last one is the trusted clients'.
        assert_eq!(s.admit(b, false).unwrap_err(), Refused::Full);
        let t1 = s.admit(t, true).unwrap();
        assert_eq!(s.admit(t, true).unwrap_err(), Refused::Full);
        drop(a1);
        drop(t1);
        assert_eq!(s.open(), 2);
        assert!(s.admit(b, false).is_ok());
    }
}
