//! nftables text: the script that creates dnsfence's table and sets, and the complete ruleset
//! `dnsfence nft-rules` prints for admins.
//!
//! The script is fed to `nft -f -` once at start-up and after a resync finds the table or a set
//! missing: that is the only time a process is spawned. Element updates go over netlink.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use ipnet::IpNet;

use super::ViewPlan;
use crate::catalog::zones::Proto;
use crate::config::FenceMode;

fn set_type(mode: FenceMode, v6: bool) -> &'static str {
    match (mode, v6) {
        (FenceMode::Addr, false) => "ipv4_addr",
        (FenceMode::Addr, true) => "ipv6_addr",
        (FenceMode::AddrPort, false) => "ipv4_addr . inet_proto . inet_service",
        (FenceMode::AddrPort, true) => "ipv6_addr . inet_proto . inet_service",
    }
}

pub(super) fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

/// The static elements of one family, as nft writes them, in address order.
fn static_elements(plan: &ViewPlan, v6: bool) -> Vec<String> {
    plan.static_items(v6)
        .into_iter()
        .map(|(net, port)| match port {
            None => net.to_string(),
            Some(p) => format!("{net} . {} . {}", proto_name(p.proto), p.port),
        })
        .collect()
}

/// Set declarations of every plan, grouped by table: `(table header, body lines)`.
fn set_declarations(plans: &[ViewPlan], with_elements: bool) -> Vec<(String, String)> {
    let mut tables: Vec<(String, String)> = Vec::new();
    for plan in plans {
        let header = plan.fence.table.to_string();
        let mut body = String::new();
        let f = &plan.fence;
        for (name, v6) in [(&f.set_v4, false), (&f.set_v6, true)] {
            let _ = writeln!(
                body,
                "\tset {name} {{\n\t\ttype {}\n\t\tflags timeout\n\t}}",
                set_type(f.mode, v6)
            );
        }
        for (name, v6) in [(&f.net_v4, false), (&f.net_v6, true)] {
            let _ = write!(
                body,
                "\tset {name} {{\n\t\ttype {}\n\t\tflags interval\n\t\tauto-merge\n",
                set_type(f.mode, v6)
            );
            let elements = static_elements(plan, v6);
            if with_elements && !elements.is_empty() {
                let _ = writeln!(
                    body,
                    "\t\telements = {{ {} }}",
                    elements.join(",\n\t\t\t     ")
                );
            }
            let _ = writeln!(body, "\t}}");
        }
        match tables.iter_mut().find(|(h, _)| *h == header) {
            Some((_, b)) => b.push_str(&body),
            None => tables.push((header, body)),
        }
    }
    tables
}

/// The script dnsfence runs to create its table and sets if missing and (re)load the static
/// ranges. Dynamic sets are never flushed: their elements belong to the ledger and time out.
pub fn setup_script(plans: &[ViewPlan]) -> String {
    let mut out = String::new();
    for (header, body) in set_declarations(plans, false) {
        let _ = writeln!(out, "table {header} {{\n{body}}}");
    }
    for plan in plans {
        let f = &plan.fence;
        for (name, v6) in [(&f.net_v4, false), (&f.net_v6, true)] {
            let _ = writeln!(out, "flush set {} {name}", f.table);
            let elements = static_elements(plan, v6);
            if !elements.is_empty() {
                let _ = writeln!(
                    out,
                    "add element {} {name} {{ {} }}",
                    f.table,
                    elements.join(", ")
                );
            }
        }
    }
    out
}

/// Runs `nft -f -` with `script` in the calling thread's network namespace.
pub fn run_script(nft: &Path, script: &str) -> Result<(), String> {
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", nft.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft -f failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// How `nft-rules` treats what a view's clients may not reach.
#[derive(Debug, Clone, Copy, Default)]
pub struct RulesetOptions {
    /// Log refused packets, rate-limited (prefix "dnsfence VIEW drop: ").
    pub log: bool,
    /// Reject (TCP reset, ICMP administratively prohibited) instead of dropping, so that
    /// clients fail at once rather than wait for their timeouts.
    pub reject: bool,
}

/// Logged refusals per second per view, and the burst above it: enough to see what is blocked,
/// never enough to flood the kernel log.
const LOG_RATE: &str = "limit rate 10/second burst 20 packets";

/// The complete ruleset for admins: the table and sets with their static ranges, and per view a
/// forward chain that accepts established traffic, DNS to dnsfence on the ports and families it
/// listens on, set members and static ranges; refuses DNS and DNS over TLS to anything else in
/// a rule of its own (its counter shows clients trying to route around dnsfence); then counts
/// and refuses the rest.
///
/// Loading it again gives the same ruleset: it declares the table, sets and chains (a no-op
/// when they exist, and the dynamic sets keep their elements), then flushes and refills only
/// dnsfence's own chains and static sets. Nothing outside dnsfence's table is touched.
pub fn ruleset(plans: &[ViewPlan], listen: &[SocketAddr], options: RulesetOptions) -> String {
    let mut out = String::from(
        "#!/usr/sbin/nft -f\n\
         # Generated by `dnsfence nft-rules`. Load with `nft -f FILE` (again after a change: it\n\
         # replaces only dnsfence's own chains and static sets; dnsfence fills the other sets).\n\
         # Traffic from a view's clients is accepted only to addresses dnsfence answered for\n\
         # allowed names (and the catalog's static ranges); DNS and DNS over TLS to any other\n\
         # resolver is refused in a rule of its own; everything else is counted and refused.\n\n",
    );
    let (dns, wildcard) = dns_to_dnsfence(listen);
    let refuse = |prefix: &str, what: &str| refusal(options, prefix, what);
    for (header, body) in set_declarations(plans, false) {
        let in_table: Vec<&ViewPlan> = plans
            .iter()
            .filter(|p| p.fence.table.to_string() == header)
            .collect();
        let table = &header;
        // 1. Declare: table, sets, chains. Existing ones are left as they are.
        let _ = writeln!(out, "table {table} {{\n{body}");
        let _ = writeln!(
            out,
            "\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t}}"
        );
        for plan in &in_table {
            let _ = writeln!(out, "\tchain {} {{\n\t}}", chain_name(&plan.name));
        }
        let _ = writeln!(out, "}}\n");
        // 2. Empty what this file owns: the chains and the static sets.
        let _ = writeln!(out, "flush chain {table} forward");
        for plan in &in_table {
            let f = &plan.fence;
            let _ = writeln!(out, "flush chain {table} {}", chain_name(&plan.name));
            let _ = writeln!(out, "flush set {table} {}", f.net_v4);
            let _ = writeln!(out, "flush set {table} {}", f.net_v6);
        }
        // 3. Fill them.
        let _ = writeln!(out, "\ntable {table} {{");
        for plan in &in_table {
            let f = &plan.fence;
            for (name, v6) in [(&f.net_v4, false), (&f.net_v6, true)] {
                let elements = static_elements(plan, v6);
                if !elements.is_empty() {
                    let _ = writeln!(
                        out,
                        "\tset {name} {{\n\t\ttype {}\n\t\tflags interval\n\t\tauto-merge\n\t\telements = {{ {} }}\n\t}}",
                        set_type(f.mode, v6),
                        elements.join(",\n\t\t\t     ")
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;"
        );
        for plan in &in_table {
            let chain = chain_name(&plan.name);
            for (family, nets) in [
                ("ip", family_nets(&plan.clients, false)),
                ("ip6", family_nets(&plan.clients, true)),
            ] {
                if !nets.is_empty() {
                    let _ = writeln!(
                        out,
                        "\t\t{family} saddr {{ {} }} jump {chain}",
                        nets.join(", ")
                    );
                }
            }
        }
        let _ = writeln!(out, "\t}}");
        for plan in &in_table {
            out.push_str(&view_chain(plan, &dns, &refuse));
        }
        let _ = writeln!(out, "}}");
    }
    if wildcard {
        out.push_str(
            "# dnsfence also listens on a wildcard address: DNS queries to this gateway's own\n\
             # addresses arrive on the input hook and are not affected by these forward chains.\n",
        );
    }
    out
}

/// Where DNS to dnsfence goes: a family (`ip`, `ip6`), a port, the addresses.
type DnsTarget = (&'static str, u16, Vec<String>);

/// DNS to dnsfence: per family and port, the addresses it listens on; and whether it also
/// listens on a wildcard address.
fn dns_to_dnsfence(listen: &[SocketAddr]) -> (Vec<DnsTarget>, bool) {
    let mut dns: Vec<DnsTarget> = Vec::new();
    let mut wildcard = false;
    for a in listen {
        if a.ip().is_unspecified() {
            wildcard = true;
            continue;
        }
        let family = if a.is_ipv4() { "ip" } else { "ip6" };
        match dns
            .iter_mut()
            .find(|(f, p, _)| *f == family && *p == a.port())
        {
            Some((_, _, addrs)) => addrs.push(a.ip().to_string()),
            None => dns.push((family, a.port(), vec![a.ip().to_string()])),
        }
    }
    (dns, wildcard)
}

/// The rules that refuse what `prefix` matches: logged (rate-limited) when asked, rejected or
/// dropped, counted.
fn refusal(options: RulesetOptions, prefix: &str, what: &str) -> String {
    let mut r = String::new();
    if options.log {
        let _ = writeln!(r, "\t\t{prefix}{LOG_RATE} log prefix \"{what}\"");
    }
    if options.reject {
        let _ = writeln!(
            r,
            "\t\t{prefix}meta l4proto tcp counter reject with tcp reset"
        );
        let _ = writeln!(
            r,
            "\t\t{prefix}counter reject with icmpx type admin-prohibited"
        );
    } else {
        let _ = writeln!(r, "\t\t{prefix}counter drop");
    }
    r
}

/// A view's chain: established traffic, DNS to dnsfence, DNS elsewhere refused, the sets, the
/// rest refused.
fn view_chain(plan: &ViewPlan, dns: &[DnsTarget], refuse: &dyn Fn(&str, &str) -> String) -> String {
    let mut out = String::new();
    let f = &plan.fence;
    let _ = writeln!(out, "\n\tchain {} {{", chain_name(&plan.name));
    let _ = writeln!(out, "\t\tct state established,related accept");
    for (family, port, addrs) in dns {
        let _ = writeln!(
            out,
            "\t\t{family} daddr {{ {} }} meta l4proto {{ tcp, udp }} th dport {port} accept",
            addrs.join(", ")
        );
    }
    out.push_str(&refuse(
        "meta l4proto { tcp, udp } th dport { 53, 853 } ",
        &format!("dnsfence {} other resolver: ", plan.name),
    ));
    let key = |fam: &str| match f.mode {
        FenceMode::Addr => format!("{fam} daddr"),
        FenceMode::AddrPort => format!("{fam} daddr . meta l4proto . th dport"),
    };
    let _ = writeln!(out, "\t\t{} @{} accept", key("ip"), f.set_v4);
    let _ = writeln!(out, "\t\t{} @{} accept", key("ip6"), f.set_v6);
    let _ = writeln!(out, "\t\t{} @{} accept", key("ip"), f.net_v4);
    let _ = writeln!(out, "\t\t{} @{} accept", key("ip6"), f.net_v6);
    out.push_str(&refuse("", &format!("dnsfence {} drop: ", plan.name)));
    let _ = writeln!(out, "\t}}");
    out
}

fn chain_name(view: &str) -> String {
    let base: String = view
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("view_{base}")
}

fn family_nets(nets: &[IpNet], v6: bool) -> Vec<String> {
    nets.iter()
        .filter(|n| matches!(n, IpNet::V6(_)) == v6)
        .map(|n| n.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TableRef, ViewFence};

    fn plan(mode: FenceMode) -> ViewPlan {
        ViewPlan {
            name: "win-kiosk".into(),
            clients: vec![
                "10.20.0.0/22".parse().unwrap(),
                "2001:db8:20::/64".parse().unwrap(),
            ],
            fence: ViewFence {
                table: TableRef {
                    family: "inet".into(),
                    name: "dnsfence".into(),
                },
                set_v4: "win_kiosk_v4".into(),
                set_v6: "win_kiosk_v6".into(),
                net_v4: "win_kiosk_net_v4".into(),
                net_v6: "win_kiosk_net_v6".into(),
                mode,
            },
            statics: vec![(
                "13.67.13.176/28".parse().unwrap(),
                vec!["tcp/443".parse().unwrap(), "tcp/80".parse().unwrap()],
            )],
        }
    }

    #[test]
    fn script_creates_sets_and_reloads_statics() {
        let s = setup_script(&[plan(FenceMode::AddrPort)]);
        assert!(
            s.contains("type ipv4_addr . inet_proto . inet_service\n\t\tflags timeout"),
            "{s}"
        );
        assert!(
            s.contains("flush set inet dnsfence win_kiosk_net_v4\n"),
            "{s}"
        );
        assert!(s.contains("add element inet dnsfence win_kiosk_net_v4 { 13.67.13.176/28 . tcp . 80, 13.67.13.176/28 . tcp . 443 }"), "{s}");
        assert!(
            !s.contains("flush set inet dnsfence win_kiosk_v4\n"),
            "dynamic sets are never flushed"
        );
        assert!(
            !s.contains("add element inet dnsfence win_kiosk_net_v6"),
            "{s}"
        );
    }

    #[test]
    fn ruleset_has_chain_per_view() {
        let listen = [
            "10.20.0.1:53".parse().unwrap(),
            "[2001:db8:20::1]:5353".parse().unwrap(),
            "0.0.0.0:53".parse().unwrap(),
        ];
        let options = RulesetOptions {
            log: true,
            reject: false,
        };
        let r = ruleset(&[plan(FenceMode::Addr)], &listen, options);
        for want in [
            "ip saddr { 10.20.0.0/22 } jump view_win_kiosk",
            "ip6 saddr { 2001:db8:20::/64 } jump view_win_kiosk",
            "ip daddr { 10.20.0.1 } meta l4proto { tcp, udp } th dport 53 accept",
            "ip6 daddr { 2001:db8:20::1 } meta l4proto { tcp, udp } th dport 5353 accept",
            "meta l4proto { tcp, udp } th dport { 53, 853 } limit rate 10/second burst 20 packets log prefix \"dnsfence win-kiosk other resolver: \"",
            "meta l4proto { tcp, udp } th dport { 53, 853 } counter drop",
            "ip daddr @win_kiosk_v4 accept",
            "limit rate 10/second burst 20 packets log prefix \"dnsfence win-kiosk drop: \"\n\t\tcounter drop",
            "flush chain inet dnsfence forward\n",
            "flush chain inet dnsfence view_win_kiosk\n",
            "flush set inet dnsfence win_kiosk_net_v4\n",
            "# dnsfence also listens on a wildcard address",
        ] {
            assert!(r.contains(want), "missing {want:?} in\n{r}");
        }
        // The DNS bypass rule comes before the sets: a resolver's address in a set opens no port 53.
        assert!(r.find("th dport { 53, 853 }").unwrap() < r.find("@win_kiosk_v4 accept").unwrap());
        assert!(
            !r.contains("flush set inet dnsfence win_kiosk_v4\n"),
            "dynamic sets keep their elements"
        );
        let r = ruleset(
            &[plan(FenceMode::Addr)],
            &listen[..1],
            RulesetOptions {
                log: false,
                reject: true,
            },
        );
        assert!(r.contains("\t\tmeta l4proto tcp counter reject with tcp reset\n\t\tcounter reject with icmpx type admin-prohibited\n"), "{r}");
        assert!(!r.contains(" log "), "{r}");
        assert!(!r.contains("wildcard"), "{r}");
    }
}
