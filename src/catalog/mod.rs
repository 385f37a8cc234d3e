//! The allowlist: the endpoint-set catalog and device families (`zones`), views and their
//! compiled policy (`policy`), readiness per view, family and stage (`readiness`), and the
//! catalog's sources — the Intune page, the Autopilot page, the Microsoft 365 web service: parsed,
//! compared, pulled and followed (`source/`). Uses `base/`, `config/` and `resolve/` (a source is
//! fetched through dnsfence's own upstream, never the system resolver).

pub mod policy;
pub mod readiness;
pub mod source;
pub mod zones;
