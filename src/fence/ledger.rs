//! The ledger: what the kernel has confirmed, by set and element, with when it expires and why it
//! was admitted. It is the fence's source of truth — a resync writes it back after someone wiped
//! the sets — and it decides, with the one freshness rule ([`Ledger::state`]), whether an
//! answer's elements need a kernel round trip at all. Elements are keyed by the one key encoding
//! ([`ElementKey`]): the dynamic set's index, then the bytes the kernel stores.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::zones::{PortSpec, Proto};
use crate::config::FenceMode;

/// Admissions remembered per element: enough to explain it, bounded so a CDN address shared by
/// thousands of names cannot grow the ledger.
pub const MAX_NAMES: usize = 4;

/// Why an element is in a set: the answer that carried it. One per answer, shared by its
/// elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The question name (lower case, no trailing dot).
    pub name: Box<str>,
    /// The CNAME targets from the question to the address's owner, in order.
    pub chain: Box<[Box<str>]>,
    /// Catalog indices of the endpoint sets that allowed the name (none for `would_deny`).
    pub endpoint_sets: Box<[u32]>,
    /// Admitted for a report-mode view although its allowlist would deny the name.
    pub would_deny: bool,
    /// The peer gateway whose answer it was (`[[sync.peer]]` name); `None`: this gateway's.
    pub via: Option<Box<str>>,
}

/// One confirmed element.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    /// When the kernel will drop it.
    pub expires: Instant,
    /// When the kernel last confirmed it.
    pub confirmed: Instant,
    /// The answers that carried it, newest last (at most [`MAX_NAMES`], one per name).
    pub admissions: Vec<Arc<Admission>>,
}

impl LedgerEntry {
    /// True when only report-mode answers the allowlist would deny put it there.
    pub fn would_deny(&self) -> bool {
        !self.admissions.is_empty() && self.admissions.iter().all(|a| a.would_deny)
    }

    /// Where it comes from: "answer" (an answer of this gateway, before a warm restart or
    /// since), "`peer:<name>`" (only answers of that peer gateway), or "restored" (found in the
    /// kernel's set at start, no answer known).
    pub fn provenance(&self) -> String {
        match self.admissions.last() {
            None => "restored".to_string(),
            Some(_) if self.admissions.iter().any(|a| a.via.is_none()) => "answer".to_string(),
            Some(a) => format!("peer:{}", a.via.as_deref().unwrap_or_default()),
        }
    }
}

/// Longest element key: the set index, an IPv6 address, then protocol and port padded to
/// 4-byte registers as nftables lays out concatenations.
const KEY_MAX: usize = 2 + 16 + 4 + 4;

/// An element's ledger key, built on the stack: the dynamic set's index (2 bytes, big-endian)
/// then the element's key bytes as the kernel stores them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ElementKey {
    bytes: [u8; KEY_MAX],
    len: u8,
}

impl std::fmt::Debug for ElementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ElementKey(set {}, {:?})",
            self.set(),
            decode_key(self.element())
        )
    }
}

fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

impl ElementKey {
    /// The key of `ip` (and, in `addr_port` sets, `port`) in dynamic set `set`.
    pub fn new(set: u16, ip: IpAddr, port: Option<PortSpec>) -> ElementKey {
        let mut bytes = [0u8; KEY_MAX];
        bytes[..2].copy_from_slice(&set.to_be_bytes());
        let mut len = 2;
        match ip {
            IpAddr::V4(v) => {
                bytes[2..6].copy_from_slice(&v.octets());
                len += 4;
            }
            IpAddr::V6(v) => {
                bytes[2..18].copy_from_slice(&v.octets());
                len += 16;
            }
        }
        if let Some(p) = port {
            bytes[len] = proto_number(p.proto);
            bytes[len + 4..len + 6].copy_from_slice(&p.port.to_be_bytes());
            len += 8;
        }
        ElementKey {
            bytes,
            len: len as u8,
        }
    }

    /// The dynamic set's index.
    pub fn set(&self) -> u16 {
        u16::from_be_bytes([self.bytes[0], self.bytes[1]])
    }

    /// The element's key bytes as the kernel stores them.
    pub fn element(&self) -> &[u8] {
        &self.bytes[2..self.len as usize]
    }

    /// The key of element bytes read back from outside (the warm-restart state): `None` unless
    /// they are an address, or an address with a protocol and port, as the kernel stores them.
    pub fn from_element(set: u16, element: &[u8]) -> Option<ElementKey> {
        let (ip, port) = decode_key(element)?;
        let key = ElementKey::new(set, ip, port);
        (key.element() == element).then_some(key)
    }
}

/// The keys of one address in a set: one in `addr` mode, one per port in `addr_port` mode.
pub fn element_keys(
    set: u16,
    ip: IpAddr,
    mode: FenceMode,
    ports: &[PortSpec],
) -> impl Iterator<Item = ElementKey> + '_ {
    let (plain, with_ports) = match mode {
        FenceMode::Addr => (Some(ElementKey::new(set, ip, None)), &[][..]),
        FenceMode::AddrPort => (None, ports),
    };
    plain.into_iter().chain(
        with_ports
            .iter()
            .map(move |p| ElementKey::new(set, ip, Some(*p))),
    )
}

/// The address (and port) of an element's key bytes.
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

/// How the ledger judges an element for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Known in the kernel, outliving the answer: no round trip needed.
    Fresh,
    /// Must be written; `live` when the kernel still holds it (a refresh replaces it).
    Stale {
        /// The kernel still has it (its timeout not yet reached).
        live: bool,
    },
}

/// What the freshness rule needs from the fence's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// Added to every element's timeout.
    pub grace: Duration,
    /// How long a kernel confirmation is trusted without asking again.
    pub recheck: Duration,
}

/// One element that was written and confirmed.
#[derive(Debug, Clone)]
pub struct Confirmed {
    /// Its key.
    pub key: ElementKey,
    /// The timeout it was written with.
    pub timeout: Duration,
    /// The answer that carried it.
    pub admission: Arc<Admission>,
}

/// An element read back from the warm-restart state, by the names of its table and set (set
/// indices depend on the config's order of views).
#[derive(Debug, Clone)]
pub struct Restored {
    /// The table (family inet) of nftables; empty for ipset.
    pub table: String,
    /// The set.
    pub set: String,
    /// The element's key bytes as the kernel stores them.
    pub element: Vec<u8>,
    /// Time left before the kernel drops it.
    pub left: Duration,
    /// Why it was admitted, oldest first.
    pub admissions: Vec<Admission>,
}

/// What the kernel has confirmed, by set and key.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Keyed by the key itself (27 bytes, no allocation of its own).
    map: HashMap<ElementKey, LedgerEntry>,
}

impl Ledger {
    /// The one freshness rule: an element is fresh for an answer that still has `lifetime` to
    /// live when the kernel will keep it at least half the grace beyond that, and confirmed it
    /// within `recheck` (so an element deleted by hand is written again soon).
    pub fn state(
        &self,
        key: &ElementKey,
        lifetime: Duration,
        now: Instant,
        rule: Freshness,
    ) -> State {
        match self.map.get(key) {
            Some(e)
                if e.expires >= now + lifetime + rule.grace / 2
                    && now.duration_since(e.confirmed) < rule.recheck =>
            {
                State::Fresh
            }
            Some(e) => State::Stale {
                live: e.expires > now,
            },
            None => State::Stale { live: false },
        }
    }

    /// Records elements the kernel confirmed at `now`.
    pub fn record(&mut self, elements: impl IntoIterator<Item = Confirmed>, now: Instant) {
        for c in elements {
            let e = self.map.entry(c.key).or_insert_with(|| LedgerEntry {
                expires: now,
                confirmed: now,
                admissions: Vec::new(),
            });
            e.expires = now + c.timeout;
            e.confirmed = now;
            // The newest answer for a name replaces an older one (its chain may have changed).
            e.admissions.retain(|a| a.name != c.admission.name);
            if e.admissions.len() == MAX_NAMES {
                e.admissions.remove(0);
            }
            e.admissions.push(c.admission);
        }
    }

    /// Live elements of set `set`: (element key bytes, entry).
    pub fn live(&self, set: u16, now: Instant) -> impl Iterator<Item = (&[u8], &LedgerEntry)> {
        self.map.iter().filter_map(move |(k, e)| {
            (k.set() == set && e.expires > now).then_some((k.element(), e))
        })
    }

    /// Every element that outlives `margin`: (set, element key bytes, time left) — what a
    /// resync writes back.
    pub fn outliving(&self, now: Instant, margin: Duration) -> Vec<(u16, Box<[u8]>, Duration)> {
        self.map
            .iter()
            .filter(|(_, e)| e.expires > now + margin)
            .map(|(k, e)| (k.set(), k.element().into(), e.expires - now))
            .collect()
    }

    /// Every live element: (set, element key bytes, entry) — what the warm-restart state keeps.
    pub fn entries(&self, now: Instant) -> impl Iterator<Item = (u16, &[u8], &LedgerEntry)> {
        self.map
            .iter()
            .filter(move |(_, e)| e.expires > now)
            .map(|(k, e)| (k.set(), k.element(), e))
    }

    /// Puts an element read back from the warm-restart state in, as confirmed at `now` (the
    /// fence writes every such element back to the kernel before it serves). An element the
    /// ledger already has keeps the later expiry.
    pub fn restore(
        &mut self,
        key: ElementKey,
        expires: Instant,
        admissions: Vec<Arc<Admission>>,
        now: Instant,
    ) {
        let e = self.map.entry(key).or_insert_with(|| LedgerEntry {
            expires,
            confirmed: now,
            admissions: Vec::new(),
        });
        e.expires = e.expires.max(expires);
        for a in admissions {
            e.admissions.retain(|old| old.name != a.name);
            if e.admissions.len() == MAX_NAMES {
                e.admissions.remove(0);
            }
            e.admissions.push(a);
        }
    }

    /// An element found in the kernel's set at start, `expires` when its timeout runs out: new
    /// to the ledger (true), or extending what the ledger has (false).
    pub fn adopt(&mut self, key: ElementKey, expires: Instant, now: Instant) -> bool {
        let mut new = false;
        let e = self.map.entry(key).or_insert_with(|| {
            new = true;
            LedgerEntry {
                expires,
                confirmed: now,
                admissions: Vec::new(),
            }
        });
        e.expires = e.expires.max(expires);
        new
    }

    /// When the kernel drops an element, if the ledger has it.
    pub fn expires(&self, key: &ElementKey) -> Option<Instant> {
        self.map.get(key).map(|e| e.expires)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets expired elements.
    pub fn prune(&mut self, now: Instant) {
        self.map.retain(|_, e| e.expires > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let ports: Vec<PortSpec> = vec!["udp/123".parse().unwrap(), "tcp/443".parse().unwrap()];
        let ip: IpAddr = "192.0.2.40".parse().unwrap();
        let keys: Vec<ElementKey> = element_keys(3, ip, FenceMode::AddrPort, &ports).collect();
        assert_eq!(
            keys[0].element(),
            &[192, 0, 2, 40, 17, 0, 0, 0, 0, 123, 0, 0]
        );
        assert_eq!(keys[0].set(), 3);
        assert_eq!(decode_key(keys[1].element()), Some((ip, Some(ports[1]))));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let keys: Vec<ElementKey> = element_keys(0, v6, FenceMode::Addr, &ports).collect();
        assert_eq!(keys.len(), 1);
        assert_eq!(decode_key(keys[0].element()), Some((v6, None)));
        let with_port = element_keys(0, v6, FenceMode::AddrPort, &ports)
            .next()
            .unwrap();
        assert_eq!(with_port.element().len(), 24);
    }

    #[test]
    fn one_freshness_rule() {
        let rule = Freshness {
            grace: Duration::from_secs(60),
            recheck: Duration::from_secs(5),
        };
        let key = ElementKey::new(0, "192.0.2.1".parse().unwrap(), None);
        let t0 = Instant::now();
        let mut l = Ledger::default();
        let ttl = Duration::from_secs(300);
        assert_eq!(l.state(&key, ttl, t0, rule), State::Stale { live: false });
        let admission = |name: &str, would_deny| {
            Arc::new(Admission {
                name: name.into(),
                chain: Box::new(["b.example".into()]),
                endpoint_sets: Box::new([1]),
                would_deny,
                via: None,
            })
        };
        l.record(
            [Confirmed {
                key,
                timeout: ttl + rule.grace,
                admission: admission("a.example", true),
            }],
            t0,
        );
        let entry = |l: &Ledger| l.live(0, t0).next().unwrap().1.clone();
        assert!(entry(&l).would_deny());
        // The same name again replaces its admission; another name adds one.
        for name in [
            "a.example",
            "c.example",
            "d.example",
            "e.example",
            "f.example",
        ] {
            l.record(
                [Confirmed {
                    key,
                    timeout: ttl + rule.grace,
                    admission: admission(name, name != "f.example"),
                }],
                t0,
            );
        }
        let e = entry(&l);
        let names: Vec<&str> = e.admissions.iter().map(|a| &*a.name).collect();
        assert_eq!(names, ["c.example", "d.example", "e.example", "f.example"]);
        assert!(!entry(&l).would_deny(), "an allowed answer carried it too");
        assert_eq!(l.state(&key, ttl, t0, rule), State::Fresh);
        // Past the recheck interval: written again (it may have been deleted by hand).
        let later = t0 + Duration::from_secs(6);
        assert_eq!(l.state(&key, ttl, later, rule), State::Stale { live: true });
        // An answer that outlives the element by more than half the grace: refreshed.
        let longer = Duration::from_secs(340);
        assert_eq!(l.state(&key, longer, t0, rule), State::Stale { live: true });
        assert_eq!(l.live(0, t0).count(), 1);
        assert_eq!(l.live(1, t0).count(), 0);
        l.prune(t0 + Duration::from_secs(400));
        assert_eq!(l.live(0, t0).count(), 0);
    }
}
