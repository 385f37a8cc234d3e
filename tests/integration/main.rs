//! One integration-test binary, a module per area, all through the harness that starts the real
//! server and a real upstream on loopback ephemeral ports.

mod answers;
mod catalog;
mod check;
mod cli;
mod clients;
mod container;
mod deny;
mod dot;
mod families;
mod fence;
mod harness;
mod http;
mod ipset;
mod layout;
mod limits;
mod logs;
mod observe;
mod page;
mod parity;
mod peer;
mod protocol;
mod reload;
mod resolve;
mod service;
mod stale;
mod trust;
mod warm;
