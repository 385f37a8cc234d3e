//! The bottom layer: the vocabulary every other layer shares, depending on nothing of dnsfence
//! outside this folder — DNS names and rcodes as text (`wire`), name patterns and their compiled
//! matcher (`matcher`), time (`clock`), the one lock helper (`sync`), `file:line: 'entry':
//! reason` errors (`fileerror`), rate-limited warnings (`warn`), the byte layouts of state files
//! and sync frames (`codec`), a query's verdict and reason (`outcome`), the socket options std
//! lacks (`sockopt`), datagrams sent in batches (`sendq`) and systemd's notification socket (`notify`). The matcher is here, not in
//! `catalog/`, because the configuration checks names with it too.

pub mod clock;
pub mod codec;
pub mod fileerror;
pub mod matcher;
pub mod notify;
pub mod outcome;
pub mod sendq;
pub mod sockopt;
pub mod sync;
pub mod warn;
pub mod wire;
