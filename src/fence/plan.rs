//! A view's firewall as the backends build it: its sets, its clients and its static ranges with
//! their ports. nftables and ipset (and the `list` backend's pull lists) read the same plan.

use ipnet::IpNet;

use crate::catalog::policy::Policy;
use crate::catalog::zones::PortSpec;
use crate::config::{Config, FenceMode, ViewFence};

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

impl ViewPlan {
    /// The static ranges of one family as the view's static set holds them (with each port of
    /// their endpoint set in `addr_port` mode), in order, once each: for either backend.
    pub fn static_items(&self, v6: bool) -> Vec<(IpNet, Option<PortSpec>)> {
        let mut items: Vec<(IpNet, Option<PortSpec>)> = Vec::new();
        for (net, ports) in &self.statics {
            if matches!(net, IpNet::V6(_)) != v6 {
                continue;
            }
            match self.fence.mode {
                FenceMode::Addr => items.push((*net, None)),
                FenceMode::AddrPort => items.extend(ports.iter().map(|p| (*net, Some(*p)))),
            }
        }
        items.sort();
        items.dedup();
        items
    }
}
