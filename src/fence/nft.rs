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

use crate::config::{Config, FenceMode, ViewFence};
use crate::policy::Policy;
use crate::zones::{PortSpec, Proto};

/// One view's firewall: its sets, its clients and its static ranges.
#[derive(Debug, Clone)]
pub struct ViewPlan {
    /// The view's name.
    pub name: String,
    /// Client networks (for the forward chain's jump).
    pub clients: Vec<IpNet>,
    /// Table, set names and mode.
    pub fence: ViewFence,
    /// Static ranges of the view's endpoint sets, with the ports of each set.
    pub statics: Vec<(IpNet, Vec<PortSpec>)>,
}

impl ViewPlan {
    /// One plan per view of the policy, in view order: the view's fence settings and the static
    /// ranges of its endpoint sets with their ports.
    pub fn for_views(config: &Config, policy: &Policy) -> Vec<ViewPlan> {
        policy
            .views
            .iter()
            .zip(&config.views)
            .map(|(view, vc)| ViewPlan {
                name: view.name.clone(),
                clients: view.networks.clone(),
                fence: vc.fence.clone(),
                statics: view
                    .sets
                    .iter()
                    .flat_map(|&i| {
                        let set = &policy.catalog.sets[i as usize];
                        set.networks.iter().map(|n| (*n, set.ports.clone()))
                    })
                    .collect(),
            })
            .collect()
    }
}

fn set_type(mode: FenceMode, v6: bool) -> &'static str {
    match (mode, v6) {
        (FenceMode::Addr, false) => "ipv4_addr",
        (FenceMode::Addr, true) => "ipv6_addr",
        (FenceMode::AddrPort, false) => "ipv4_addr . inet_proto . inet_service",
        (FenceMode::AddrPort, true) => "ipv6_addr . inet_proto . inet_service",
    }
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

/// The static elements of one family, as nft writes them, in address order.
fn static_elements(plan: &ViewPlan, v6: bool) -> Vec<String> {
    let mut items: Vec<(IpNet, Option<PortSpec>)> = Vec::new();
    for (net, ports) in &plan.statics {
        if matches!(net, IpNet::V6(_)) != v6 {
            continue;
        }
        match plan.fence.mode {
            FenceMode::Addr => items.push((*net, None)),
            FenceMode::AddrPort => items.extend(ports.iter().map(|p| (*net, Some(*p)))),
        }
    }
    items.sort();
    items.dedup();
    items
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

/// The complete ruleset for admins: the table and sets with their static ranges, and per view a
/// forward chain that accepts established traffic, DNS to the resolver, set members and static
/// ranges, then counts (and optionally logs) and drops the rest.
pub fn ruleset(plans: &[ViewPlan], resolvers: &[SocketAddr], log: bool) -> String {
    let mut out = String::from(
        "#!/usr/sbin/nft -f\n\
         # Generated by `dnsfence nft-rules`. Load with `nft -f FILE`; dnsfence fills the sets.\n\
         # Traffic from a view's clients is accepted only to addresses dnsfence answered for\n\
         # allowed names (and the catalog's static ranges); everything else is counted and dropped.\n\n",
    );
    let v4: Vec<String> = resolvers
        .iter()
        .filter(|a| a.is_ipv4() && !a.ip().is_unspecified())
        .map(|a| a.ip().to_string())
        .collect();
    let v6: Vec<String> = resolvers
        .iter()
        .filter(|a| a.is_ipv6() && !a.ip().is_unspecified())
        .map(|a| a.ip().to_string())
        .collect();
    for (header, mut body) in set_declarations(plans, true) {
        let in_table: Vec<&ViewPlan> = plans
            .iter()
            .filter(|p| p.fence.table.to_string() == header)
            .collect();
        let _ = writeln!(
            body,
            "\n\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;"
        );
        for plan in &in_table {
            let chain = chain_name(&plan.name);
            for (family, nets) in [
                ("ip", family_nets(&plan.clients, false)),
                ("ip6", family_nets(&plan.clients, true)),
            ] {
                if !nets.is_empty() {
                    let _ = writeln!(
                        body,
                        "\t\t{family} saddr {{ {} }} jump {chain}",
                        nets.join(", ")
                    );
                }
            }
        }
        let _ = writeln!(body, "\t}}");
        for plan in &in_table {
            let f = &plan.fence;
            let _ = writeln!(body, "\n\tchain {} {{", chain_name(&plan.name));
            let _ = writeln!(body, "\t\tct state established,related accept");
            if !v4.is_empty() {
                let _ = writeln!(
                    body,
                    "\t\tip daddr {{ {} }} meta l4proto {{ tcp, udp }} th dport 53 accept",
                    v4.join(", ")
                );
            }
            if !v6.is_empty() {
                let _ = writeln!(
                    body,
                    "\t\tip6 daddr {{ {} }} meta l4proto {{ tcp, udp }} th dport 53 accept",
                    v6.join(", ")
                );
            }
            let key = |fam: &str| match f.mode {
                FenceMode::Addr => format!("{fam} daddr"),
                FenceMode::AddrPort => format!("{fam} daddr . meta l4proto . th dport"),
            };
            let _ = writeln!(body, "\t\t{} @{} accept", key("ip"), f.set_v4);
            let _ = writeln!(body, "\t\t{} @{} accept", key("ip6"), f.set_v6);
            let _ = writeln!(body, "\t\t{} @{} accept", key("ip"), f.net_v4);
            let _ = writeln!(body, "\t\t{} @{} accept", key("ip6"), f.net_v6);
            if log {
                let _ = writeln!(
                    body,
                    "\t\tcounter log prefix \"dnsfence {} drop: \" drop",
                    plan.name
                );
            } else {
                let _ = writeln!(body, "\t\tcounter drop");
            }
            let _ = writeln!(body, "\t}}");
        }
        let _ = writeln!(out, "table {header} {{\n{body}}}");
    }
    if v4.is_empty() && v6.is_empty() {
        out.push_str(
            "# dnsfence listens on an unspecified address: DNS queries to this gateway arrive on\n\
             # the input hook and are not affected by these forward chains.\n",
        );
    }
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
    use crate::config::TableRef;

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
        let r = ruleset(
            &[plan(FenceMode::Addr)],
            &["10.20.0.1:53".parse().unwrap()],
            true,
        );
        assert!(
            r.contains("ip saddr { 10.20.0.0/22 } jump view_win_kiosk"),
            "{r}"
        );
        assert!(
            r.contains("ip6 saddr { 2001:db8:20::/64 } jump view_win_kiosk"),
            "{r}"
        );
        assert!(
            r.contains("ip daddr { 10.20.0.1 } meta l4proto { tcp, udp } th dport 53 accept"),
            "{r}"
        );
        assert!(r.contains("ip daddr @win_kiosk_v4 accept"), "{r}");
        assert!(
            r.contains("counter log prefix \"dnsfence win-kiosk drop: \" drop"),
            "{r}"
        );
    }
}
