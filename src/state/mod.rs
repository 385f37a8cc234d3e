//! What outlives a process: the warm-restart state written at a stop and read at the next start
//! (`warm`), and the admissions a gateway shares with its peers over mutual TLS (`peer/`). Uses
//! every layer up to `query/` (the engine's cache, the fence's ledger, the metrics).

pub mod peer;
pub mod warm;
