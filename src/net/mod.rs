//! Transports in front of the query path: the UDP workers (`udp/`), TCP connections (`tcp`),
//! binding both (`server`), the HTTP endpoints (`http`) and what they report of the process
//! (`status`), connection slots (`slots`) and per-client rate limits (`ratelimit`). Uses every
//! layer below; nothing below uses it.

pub mod http;
pub mod ratelimit;
pub mod server;
pub mod slots;
pub mod status;
pub mod tcp;
pub mod udp;
