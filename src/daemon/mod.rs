//! The process: start-up order, the run loop, reload and the bounded stop (`app`), the control
//! signal every task listens to (`signal`), what `run` refuses before it binds (`preflight`) and
//! the capabilities it passes to `nft` and `ipset` (`caps`). Uses every layer below.

pub mod app;
pub mod caps;
pub mod preflight;
pub mod signal;
