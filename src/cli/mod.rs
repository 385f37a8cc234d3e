//! The commands beside `run`: `check`'s report (`check`), `explain` and `catalog diff --names`
//! (`explain`), `suggest` (`suggest`). `main.rs` parses the arguments and prints what these
//! return. The top layer: it may use every other.

pub mod check;
pub mod explain;
pub mod suggest;
