//! What happened to a query, as bounded sets: the [`Verdict`] and the [`Reason`]. Each value is
//! both a metric label and a query-log field, so the two name things the same way. A module of
//! its own, below `query`, `metrics` and `querylog`, which all use it.

use serde::Serialize;

/// What happened to a query. A bounded set: it is also a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Allowed and answered (or attempted) through the cache or the upstream.
    Allowed,
    /// Denied by the view's allowlist.
    Denied,
    /// Would have been denied, answered because the view is in report mode.
    WouldDeny,
    /// Refused before any policy decision: no view, bad opcode, class, question or type.
    Refused,
}

impl Verdict {
    /// Every verdict, in label order.
    pub const ALL: [Verdict; 4] = [
        Verdict::Allowed,
        Verdict::Denied,
        Verdict::WouldDeny,
        Verdict::Refused,
    ];

    /// The label used in logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::WouldDeny => "would_deny",
            Verdict::Refused => "refused",
        }
    }
}

/// Why a query was denied, refused, dropped or failed: one enum for the metric label and the
/// log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The client sent more than its rate allows (UDP; dropped, not answered).
    RateLimited,
    /// No endpoint set of the view's profiles matches the name.
    NotAllowlisted,
    /// The client's address is in no view.
    NoView,
    /// A query type dnsfence does not serve (zone transfers, meta types).
    Qtype,
    /// A message that does not parse or breaks the format's rules.
    Malformed,
    /// Not a standard query.
    Opcode,
    /// A class other than IN.
    Class,
    /// An EDNS version above 0.
    EdnsVersion,
    /// The upstream did not answer within the deadline.
    UpstreamTimeout,
    /// The upstream exchange failed or answered with an error.
    UpstreamError,
    /// The upstream's CNAME chain looped or was too long.
    BadChain,
    /// A CNAME target is not on the allowlist of a view with `cname_targets = "allowlisted"`.
    CnameTarget,
    /// dnsfence was at a limit (resolutions in flight, queries waiting) and answered SERVFAIL.
    Overloaded,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 13] = [
        Reason::RateLimited,
        Reason::NotAllowlisted,
        Reason::NoView,
        Reason::Qtype,
        Reason::Malformed,
        Reason::Opcode,
        Reason::Class,
        Reason::EdnsVersion,
        Reason::UpstreamTimeout,
        Reason::UpstreamError,
        Reason::BadChain,
        Reason::CnameTarget,
        Reason::Overloaded,
    ];

    /// The label used in logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimited => "rate_limited",
            Reason::NotAllowlisted => "not_allowlisted",
            Reason::NoView => "no_view",
            Reason::Qtype => "qtype",
            Reason::Malformed => "malformed",
            Reason::Opcode => "opcode",
            Reason::Class => "class",
            Reason::EdnsVersion => "edns_version",
            Reason::UpstreamTimeout => "timeout",
            Reason::UpstreamError => "error",
            Reason::BadChain => "bad_chain",
            Reason::CnameTarget => "cname_target",
            Reason::Overloaded => "overloaded",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct() {
        let reasons: std::collections::HashSet<_> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(reasons.len(), Reason::ALL.len());
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL is in declaration order");
        }
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
    }
}
