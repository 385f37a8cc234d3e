//! The ipset backend, for gateways that filter with iptables: the same ledger, admits, deadline,
//! failure policy and resync as nftables, with ip_set sets in the kernel.
//!
//! - Sets are created (if missing) and the static ranges loaded with one `ipset restore -exist`
//!   at start-up and on resync: the only process dnsfence spawns, as with `nft -f`.
//! - Elements go over netlink (NFNL_SUBSYS_IPSET on the same NETLINK_NETFILTER socket as
//!   nf_tables): every element of a batch is one IPSET_CMD_ADD message, all sent in one
//!   `send`, each acknowledged on its own. ip_set has no transactions, so a refused element
//!   never holds back the others. Without NLM_F_EXCL an ADD of an element already there replaces
//!   its timeout: a refresh needs no delete first.
//! - Dynamic sets: `hash:ip` (`hash:ip,port` in `addr_port` mode) with timeout, one per view and
//!   family. Static ranges: `hash:net` (`hash:net,port`).
//!
//! Message layout from include/uapi/linux/netfilter/ipset/ip_set.h (stable kernel ABI).

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};

use super::ViewPlan;
use super::ledger::decode_key;
use super::netlink::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetfilterSocket, OpKind, OpResult, SetOp, attr, attr_str,
    attributes, msg_end, nest_begin, nest_end, subsys_msg_begin,
};
use super::nft::{RulesetOptions, proto_name};
use crate::catalog::zones::{PortSpec, Proto};
use crate::config::FenceMode;
use ipnet::IpNet;

const NFNL_SUBSYS_IPSET: u16 = 6;
/// The protocol version dnsfence speaks (6: every kernel since 3.x; 7 adds nothing used here).
const IPSET_PROTOCOL: u8 = 6;
const IPSET_CMD_LIST: u16 = 7;
const IPSET_CMD_ADD: u16 = 9;
const IPSET_CMD_DEL: u16 = 10;
const IPSET_CMD_TEST: u16 = 11;
const IPSET_CMD_HEADER: u16 = 12;
/// IPSET_ERR_EXIST: an ADD of an element already there (never sent: no NLM_F_EXCL), a DEL or
/// TEST of one not there.
const IPSET_ERR_EXIST: i32 = 4103;

const IPSET_ATTR_PROTOCOL: u16 = 1;
const IPSET_ATTR_SETNAME: u16 = 2;
const IPSET_ATTR_DATA: u16 = 7;
const IPSET_ATTR_ADT: u16 = 8;
const IPSET_ATTR_IP: u16 = 1;
const IPSET_ATTR_CIDR: u16 = 3;
const IPSET_ATTR_PORT: u16 = 4;
const IPSET_ATTR_TIMEOUT: u16 = 6;
const IPSET_ATTR_PROTO: u16 = 7;
const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
const IPSET_ATTR_IPADDR_IPV6: u16 = 2;
const NLA_F_NET_BYTEORDER: u16 = 0x4000;
const AF_INET: u8 = 2;

/// ip_set's longest timeout, in seconds (UINT_MAX / 1000 / 2, ip_set_timeout.h).
const MAX_TIMEOUT_SECS: u64 = 2_147_483;
/// Room in each dynamic set.
const MAXELEM: u32 = 262_144;

/// The ip_set type of a view's dynamic (`dynamic = true`) or static set.
fn set_type(mode: FenceMode, dynamic: bool) -> &'static str {
    match (mode, dynamic) {
        (FenceMode::Addr, true) => "hash:ip",
        (FenceMode::Addr, false) => "hash:net",
        (FenceMode::AddrPort, true) => "hash:ip,port",
        (FenceMode::AddrPort, false) => "hash:net,port",
    }
}

/// The `ipset restore -exist` input that creates every view's sets if missing and reloads the
/// static ranges. Dynamic sets are never flushed: their elements belong to the ledger and time
/// out.
pub fn setup_script(plans: &[ViewPlan]) -> String {
    let mut out = String::new();
    for plan in plans {
        let f = &plan.fence;
        for (name, family) in [(&f.set_v4, "inet"), (&f.set_v6, "inet6")] {
            let _ = writeln!(
                out,
                "create {name} {} family {family} timeout 300 maxelem {MAXELEM}",
                set_type(f.mode, true)
            );
        }
        for (name, family, v6) in [(&f.net_v4, "inet", false), (&f.net_v6, "inet6", true)] {
            let _ = writeln!(
                out,
                "create {name} {} family {family}",
                set_type(f.mode, false)
            );
            let _ = writeln!(out, "flush {name}");
            for element in static_elements(plan, v6) {
                let _ = writeln!(out, "add {name} {element}");
            }
        }
    }
    out
}

/// A view's static ranges of one family, as `ipset` writes them.
fn static_elements(plan: &ViewPlan, v6: bool) -> Vec<String> {
    plan.static_items(v6)
        .into_iter()
        .map(|(net, port)| match port {
            None => net.to_string(),
            Some(p) => format!("{net},{}:{}", proto_name(p.proto), p.port),
        })
        .collect()
}

/// Runs `ipset restore -exist` with `script`; the error is ipset's own message.
pub fn run_restore(script: &str) -> Result<(), String> {
    let mut child = Command::new("ipset")
        .args(["restore", "-exist"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ipset (apt-get install ipset): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("ipset restore: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("ipset restore: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ipset restore: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Text for ip_set's own error numbers (above 4096), else the system's.
pub fn error_text(errno: i32) -> String {
    let what = match errno {
        4097 => "ipset protocol error",
        4102 => "the set has another type",
        4103 => "the element is already there, or not there",
        4107 => "the set has no timeout support",
        4352 => "the set is full (maxelem)",
        _ => return format!("{} (errno {errno})", io::Error::from_raw_os_error(errno)),
    };
    format!("{what} (ipset error {errno})")
}

/// An element as ip_set takes it: an address (a network in `hash:net` sets), and proto/port in
/// `addr_port` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    /// The address, or the network's.
    pub ip: IpAddr,
    /// The prefix length, for a network.
    pub cidr: Option<u8>,
    /// Protocol and port, in `addr_port` mode.
    pub port: Option<PortSpec>,
}

impl Element {
    /// From the ledger's key (the nftables encoding: address, then proto and port).
    pub fn from_key(key: &[u8]) -> Option<Element> {
        let (ip, port) = decode_key(key)?;
        Some(Element {
            ip,
            cidr: None,
            port,
        })
    }

    /// The first static range of `plan` in one family, as its static set holds it.
    pub fn first_static(plan: &ViewPlan, v6: bool) -> Option<Element> {
        plan.statics
            .iter()
            .filter(|(net, _)| matches!(net, IpNet::V6(_)) == v6)
            .find_map(|(net, ports)| {
                let port = match plan.fence.mode {
                    FenceMode::Addr => None,
                    FenceMode::AddrPort => Some(*ports.first()?),
                };
                Some(Element {
                    ip: net.network(),
                    cidr: Some(net.prefix_len()),
                    port,
                })
            })
    }
}

/// One ADD, DEL or TEST message for an element.
fn element_message(
    buf: &mut Vec<u8>,
    cmd: u16,
    seq: u32,
    set: &str,
    e: &Element,
    timeout_ms: Option<u64>,
) {
    let Element { ip, cidr, port } = *e;
    let start = subsys_msg_begin(
        buf,
        NFNL_SUBSYS_IPSET,
        cmd,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        AF_INET,
    );
    attr(buf, IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
    attr_str(buf, IPSET_ATTR_SETNAME, set);
    let data = nest_begin(buf, IPSET_ATTR_DATA);
    let ip_attr = nest_begin(buf, IPSET_ATTR_IP);
    match ip {
        IpAddr::V4(v4) => attr(
            buf,
            IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER,
            &v4.octets(),
        ),
        IpAddr::V6(v6) => attr(
            buf,
            IPSET_ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER,
            &v6.octets(),
        ),
    }
    nest_end(buf, ip_attr);
    if let Some(c) = cidr {
        attr(buf, IPSET_ATTR_CIDR, &[c]);
    }
    if let Some(ms) = timeout_ms {
        // Rounded up: an element never leaves before the answer's TTL.
        let secs = ms.div_ceil(1000).clamp(1, MAX_TIMEOUT_SECS) as u32;
        attr(
            buf,
            IPSET_ATTR_TIMEOUT | NLA_F_NET_BYTEORDER,
            &secs.to_be_bytes(),
        );
    }
    if let Some(p) = port {
        attr(
            buf,
            IPSET_ATTR_PORT | NLA_F_NET_BYTEORDER,
            &p.port.to_be_bytes(),
        );
        let proto = match p.proto {
            Proto::Tcp => libc::IPPROTO_TCP,
            Proto::Udp => libc::IPPROTO_UDP,
        } as u8;
        attr(buf, IPSET_ATTR_PROTO, &[proto]);
    }
    nest_end(buf, data);
    msg_end(buf, start);
}

impl NetfilterSocket {
    /// Writes `ops` to ip_set: one message per element, sent together, each acknowledged. An
    /// op's result is its first refused element's errno, else Ok; nothing is ever Aborted.
    pub fn ipset_apply(&mut self, ops: &[SetOp<'_>]) -> io::Result<Vec<OpResult>> {
        let mut buf = Vec::with_capacity(64 * ops.iter().map(|o| o.elements.len()).sum::<usize>());
        // (seq, op index) of every message, in order.
        let mut sent: Vec<(u32, usize)> = Vec::new();
        let mut results: Vec<OpResult> = vec![OpResult::Ok; ops.len()];
        for (i, op) in ops.iter().enumerate() {
            let cmd = match op.kind {
                OpKind::Add => IPSET_CMD_ADD,
                OpKind::Destroy => IPSET_CMD_DEL,
            };
            for (key, timeout) in &op.elements {
                let seq = self.next_seq();
                let timeout = if op.kind == OpKind::Add {
                    *timeout
                } else {
                    None
                };
                match Element::from_key(key) {
                    Some(e) => {
                        element_message(&mut buf, cmd, seq, op.set, &e, timeout);
                        sent.push((seq, i));
                    }
                    None => results[i] = OpResult::Err(libc::EINVAL),
                }
            }
        }
        if sent.is_empty() {
            return Ok(results);
        }
        self.send(&buf)?;
        let first = sent[0].0;
        let mut acked = vec![false; sent.len()];
        let mut left = sent.len();
        self.receive(|seq, errno| {
            let k = seq.wrapping_sub(first) as usize;
            if k < sent.len() && sent[k].0 == seq && !acked[k] {
                acked[k] = true;
                left -= 1;
                let op = sent[k].1;
                // A DEL of an element not there is what was wanted.
                let absent = ops[op].kind == OpKind::Destroy && errno == IPSET_ERR_EXIST;
                if errno != 0 && !absent && results[op] == OpResult::Ok {
                    results[op] = OpResult::Err(errno);
                }
            }
            left == 0
        })?;
        for (k, (_, op)) in sent.iter().enumerate() {
            if !acked[k] && results[*op] == OpResult::Ok {
                // No verdict within the timeout: failed, so the caller retries later.
                results[*op] = OpResult::Err(libc::ETIMEDOUT);
            }
        }
        Ok(results)
    }

    /// Whether `set` holds `e` (false also when the set is gone).
    pub fn ipset_test(&mut self, set: &str, e: &Element) -> io::Result<bool> {
        let seq = self.next_seq();
        let mut buf = Vec::with_capacity(96);
        element_message(&mut buf, IPSET_CMD_TEST, seq, set, e, None);
        match self.ack(&buf, seq)? {
            0 => Ok(true),
            e if e == IPSET_ERR_EXIST || e == libc::ENOENT => Ok(false),
            e => Err(io::Error::other(error_text(e))),
        }
    }

    /// The elements of a dynamic set with the time each has left (`None`: no timeout), as the
    /// ledger keys them: one LIST dump. An error when the set does not exist.
    pub fn ipset_elements(&mut self, set: &str) -> io::Result<Vec<(Vec<u8>, Option<u64>)>> {
        let seq = self.next_seq();
        let mut buf = Vec::with_capacity(64);
        let start = subsys_msg_begin(
            &mut buf,
            NFNL_SUBSYS_IPSET,
            IPSET_CMD_LIST,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            AF_INET,
        );
        attr(&mut buf, IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
        attr_str(&mut buf, IPSET_ATTR_SETNAME, set);
        msg_end(&mut buf, start);
        let mut out = Vec::new();
        self.dump(&buf, seq, |payload| {
            for (kind, adt) in attributes(payload) {
                if kind != IPSET_ATTR_ADT {
                    continue;
                }
                for (kind, data) in attributes(adt) {
                    if kind == IPSET_ATTR_DATA
                        && let Some(e) = listed_element(data)
                    {
                        out.push(e);
                    }
                }
            }
        })?;
        Ok(out)
    }

    /// Whether an ip_set set of this name exists.
    pub fn ipset_exists(&mut self, set: &str) -> io::Result<bool> {
        let seq = self.next_seq();
        let mut buf = Vec::with_capacity(64);
        let start = subsys_msg_begin(
            &mut buf,
            NFNL_SUBSYS_IPSET,
            IPSET_CMD_HEADER,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            AF_INET,
        );
        attr(&mut buf, IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
        attr_str(&mut buf, IPSET_ATTR_SETNAME, set);
        msg_end(&mut buf, start);
        self.get(&buf, seq)
    }
}

/// One element of a LIST reply: its ledger key bytes and the milliseconds it has left.
fn listed_element(data: &[u8]) -> Option<(Vec<u8>, Option<u64>)> {
    let (mut ip, mut port, mut proto, mut left) = (None, None, None, None);
    for (kind, value) in attributes(data) {
        match kind {
            IPSET_ATTR_IP => {
                ip = attributes(value).find_map(|(k, v)| match k {
                    IPSET_ATTR_IPADDR_IPV4 => <[u8; 4]>::try_from(v).ok().map(IpAddr::from),
                    IPSET_ATTR_IPADDR_IPV6 => <[u8; 16]>::try_from(v).ok().map(IpAddr::from),
                    _ => None,
                });
            }
            IPSET_ATTR_PORT => port = <[u8; 2]>::try_from(value).ok().map(u16::from_be_bytes),
            IPSET_ATTR_PROTO => proto = value.first().copied(),
            IPSET_ATTR_TIMEOUT => {
                left = <[u8; 4]>::try_from(value)
                    .ok()
                    .map(|b| u64::from(u32::from_be_bytes(b)) * 1000);
            }
            _ => {}
        }
    }
    let port = match (port, proto.map(i32::from)) {
        (Some(port), Some(libc::IPPROTO_TCP)) => Some(PortSpec {
            proto: Proto::Tcp,
            port,
        }),
        (Some(port), Some(libc::IPPROTO_UDP)) => Some(PortSpec {
            proto: Proto::Udp,
            port,
        }),
        (None, _) => None,
        // A protocol dnsfence never writes: not one of its elements.
        (Some(_), _) => return None,
    };
    let key = super::ledger::ElementKey::new(0, ip?, port);
    Some((key.element().to_vec(), left))
}

/// `iptables-restore` and `ip6tables-restore` input for the configured views: per view a chain
/// in the filter table's FORWARD path that accepts its clients' traffic to the addresses of its
/// sets (and their ports, in `addr_port` mode) and drops the rest, DNS to dnsfence accepted and
/// DNS/DoT to anyone else refused. Loading it again gives the same rules (`-n`: only dnsfence's
/// chains are flushed).
/// `family`: 4 or 6 for one of them (to pipe into the matching tool), `None` for both.
pub fn iptables_rules(
    plans: &[ViewPlan],
    listen: &[SocketAddr],
    opts: RulesetOptions,
    family: Option<u8>,
) -> String {
    let mut out = String::new();
    let families: &[bool] = match family {
        Some(4) => &[false],
        Some(_) => &[true],
        None => &[false, true],
    };
    for &v6 in families {
        let (tool, comment) = if v6 {
            ("ip6tables-restore -n", "IPv6")
        } else {
            ("iptables-restore -n", "IPv4")
        };
        let _ = writeln!(
            out,
            "# {comment}: load with `{tool}` (the ipset sets must exist: start dnsfence first).\n\
             # Reloading replaces only dnsfence's chains. Hook them in once, in your own rules:\n\
             #   {} -I FORWARD -j DNSFENCE",
            if v6 { "ip6tables" } else { "iptables" }
        );
        let _ = writeln!(out, "*filter");
        let _ = writeln!(out, ":DNSFENCE - [0:0]");
        for plan in plans {
            let _ = writeln!(out, ":{} - [0:0]", chain_name(&plan.name));
        }
        let _ = writeln!(out, "-F DNSFENCE");
        for plan in plans {
            let clients: Vec<&IpNet> = plan
                .clients
                .iter()
                .filter(|n| matches!(n, IpNet::V6(_)) == v6)
                .collect();
            for net in clients {
                let _ = writeln!(out, "-A DNSFENCE -s {net} -j {}", chain_name(&plan.name));
            }
        }
        for plan in plans {
            let chain = chain_name(&plan.name);
            let f = &plan.fence;
            let _ = writeln!(out, "-F {chain}");
            let _ = writeln!(
                out,
                "-A {chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
            );
            // DNS to dnsfence itself.
            for addr in listen.iter().filter(|a| a.is_ipv6() == v6) {
                let dst = if addr.ip().is_unspecified() {
                    String::new()
                } else {
                    format!(" -d {}", addr.ip())
                };
                for proto in ["udp", "tcp"] {
                    let _ = writeln!(
                        out,
                        "-A {chain}{dst} -p {proto} --dport {} -j ACCEPT",
                        addr.port()
                    );
                }
            }
            // Any other resolver: refused, so devices cannot walk around the allowlist.
            for (proto, port) in [("udp", 53), ("tcp", 53), ("tcp", 853)] {
                let _ = writeln!(
                    out,
                    "-A {chain} -p {proto} --dport {port} -j {}",
                    refuse(opts, proto, v6)
                );
            }
            let (set, net) = if v6 {
                (&f.set_v6, &f.net_v6)
            } else {
                (&f.set_v4, &f.net_v4)
            };
            let flags = match f.mode {
                FenceMode::Addr => "dst",
                FenceMode::AddrPort => "dst,dst",
            };
            for s in [set, net] {
                let _ = writeln!(out, "-A {chain} -m set --match-set {s} {flags} -j ACCEPT");
            }
            if opts.log {
                let _ = writeln!(
                    out,
                    "-A {chain} -m limit --limit 10/second -j LOG --log-prefix \"dnsfence {} drop: \"",
                    plan.name
                );
            }
            let _ = writeln!(out, "-A {chain} -j {}", refuse(opts, "", v6));
        }
        let _ = writeln!(out, "COMMIT");
        if !v6 && family.is_none() {
            out.push('\n');
        }
    }
    out
}

/// The verdict for refused traffic: DROP, or REJECT (a TCP reset for TCP).
fn refuse(opts: RulesetOptions, proto: &str, v6: bool) -> String {
    match (opts.reject, proto, v6) {
        (false, _, _) => "DROP".into(),
        (true, "tcp", _) => "REJECT --reject-with tcp-reset".into(),
        (true, _, false) => "REJECT --reject-with icmp-admin-prohibited".into(),
        (true, _, true) => "REJECT --reject-with icmp6-adm-prohibited".into(),
    }
}

/// A view's chain: `DNSFENCE-<VIEW>` (iptables chain names: at most 28 characters).
fn chain_name(view: &str) -> String {
    let mut name = format!("DNSFENCE-{}", view.to_ascii_uppercase());
    name.truncate(28);
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TableRef, ViewFence};

    fn plan(mode: FenceMode) -> ViewPlan {
        ViewPlan {
            name: "kiosk".into(),
            clients: vec!["10.20.0.0/22".parse().unwrap()],
            fence: ViewFence {
                table: TableRef {
                    family: "inet".into(),
                    name: "dnsfence".into(),
                },
                set_v4: "dnsfence_kiosk_v4".into(),
                set_v6: "dnsfence_kiosk_v6".into(),
                net_v4: "dnsfence_kiosk_net_v4".into(),
                net_v6: "dnsfence_kiosk_net_v6".into(),
                mode,
            },
            statics: vec![(
                "13.67.13.176/28".parse().unwrap(),
                vec!["tcp/443".parse().unwrap()],
            )],
        }
    }

    #[test]
    fn restore_script_creates_and_reloads_statics() {
        let s = setup_script(&[plan(FenceMode::Addr)]);
        assert!(
            s.contains("create dnsfence_kiosk_v4 hash:ip family inet timeout 300 maxelem 262144\n")
        );
        assert!(s.contains("create dnsfence_kiosk_net_v6 hash:net family inet6\n"));
        assert!(
            s.contains("flush dnsfence_kiosk_net_v4\nadd dnsfence_kiosk_net_v4 13.67.13.176/28\n")
        );
        assert!(
            !s.contains("flush dnsfence_kiosk_v4"),
            "dynamic sets keep elements"
        );
        let s = setup_script(&[plan(FenceMode::AddrPort)]);
        assert!(s.contains("create dnsfence_kiosk_v4 hash:ip,port family inet"));
        assert!(s.contains("add dnsfence_kiosk_net_v4 13.67.13.176/28,tcp:443\n"));
    }

    #[test]
    fn element_messages_carry_address_timeout_and_port() {
        let mut buf = Vec::new();
        let e = Element::from_key(&[192, 0, 2, 1]).unwrap();
        element_message(&mut buf, IPSET_CMD_ADD, 1, "s", &e, Some(1500));
        // nlmsghdr type: subsystem 6, command 9.
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), 0x0609);
        let len = u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len());
        // The timeout (rounded up to 2 s) is in there, big-endian.
        assert!(buf.windows(4).any(|w| w == [0, 0, 0, 2]));
        let mut key = vec![192, 0, 2, 1, 6, 0, 0, 0];
        key.extend_from_slice(&[1, 187, 0, 0]);
        let mut buf = Vec::new();
        let e = Element::from_key(&key).unwrap();
        assert_eq!(e.port, Some("tcp/443".parse().unwrap()));
        element_message(&mut buf, IPSET_CMD_ADD, 2, "s", &e, None);
        assert!(buf.windows(2).any(|w| w == [1, 187]), "port 443");
        assert!(Element::from_key(&[1, 2, 3]).is_none());
        let p = plan(FenceMode::AddrPort);
        let first = Element::first_static(&p, false).unwrap();
        assert_eq!(first.cidr, Some(28));
        assert_eq!(first.port, Some("tcp/443".parse().unwrap()));
        assert!(Element::first_static(&p, true).is_none());
    }

    #[test]
    fn iptables_rules_per_family() {
        let rules = iptables_rules(
            &[plan(FenceMode::Addr)],
            &["10.20.0.1:53".parse().unwrap()],
            RulesetOptions::default(),
            None,
        );
        assert!(rules.contains("-A DNSFENCE -s 10.20.0.0/22 -j DNSFENCE-KIOSK\n"));
        assert!(rules.contains("-A DNSFENCE-KIOSK -d 10.20.0.1 -p udp --dport 53 -j ACCEPT\n"));
        assert!(
            rules
                .contains("-A DNSFENCE-KIOSK -m set --match-set dnsfence_kiosk_v4 dst -j ACCEPT\n")
        );
        assert!(rules.contains(
            "-A DNSFENCE-KIOSK -m set --match-set dnsfence_kiosk_net_v6 dst -j ACCEPT\n"
        ));
        assert_eq!(rules.matches("COMMIT").count(), 2);
        assert!(rules.contains("-A DNSFENCE-KIOSK -p tcp --dport 853 -j DROP\n"));
        let reject = iptables_rules(
            &[plan(FenceMode::AddrPort)],
            &[],
            RulesetOptions {
                log: true,
                reject: true,
            },
            Some(6),
        );
        assert!(!reject.contains("# IPv4"));
        assert!(reject.contains("--match-set dnsfence_kiosk_v6 dst,dst -j ACCEPT"));
        assert!(reject.contains("-j LOG --log-prefix \"dnsfence kiosk drop: \""));
        assert!(reject.contains("-A DNSFENCE-KIOSK -j REJECT --reject-with icmp6-adm-prohibited"));
    }
}
