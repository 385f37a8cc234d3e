//! `dnsfence suggest`: turns the names a view denied — or, in report mode, would deny — into a
//! ranked proposal an admin can review and paste into a local zone file: per registrable domain,
//! the names seen, how often, by how many clients, and a ready `[[endpoint_set]]` block.
//!
//! The names come from the query log (every line, with its client) or from a running instance's
//! `/v1/denied` (its bounded top-K of names, without clients). Nothing here decides anything: a
//! proposal lists exact names, never wildcards, and ports are a guess the block says to check.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::BufRead;
use std::net::SocketAddr;
use std::time::Duration;

/// The names are not readable.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    /// The query log could not be read.
    #[error("{0}: {1}")]
    Log(String, std::io::Error),
    /// The running instance could not be asked.
    #[error("http://{0}/v1/denied: {1}")]
    Http(SocketAddr, String),
}

/// One denied (or would-be denied) name, as often as it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Lower case, no trailing dot.
    pub name: String,
    /// The client, when the source says (the query log does, `/v1/denied` does not).
    pub client: Option<String>,
    /// How many queries.
    pub count: u64,
}

/// The names the query log shows denied (reason `not_allowlisted` or `cname_target`) or
/// would-be denied, for `view` (every view when `None`). Lines that are not JSON are skipped.
pub fn from_log(reader: impl BufRead, view: Option<&str>) -> std::io::Result<Vec<Seen>> {
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let verdict = v["verdict"].as_str().unwrap_or_default();
        let reason = v["reason"].as_str().unwrap_or_default();
        let denied = matches!(verdict, "denied" | "would_deny")
            && matches!(reason, "not_allowlisted" | "cname_target");
        if !denied || view.is_some_and(|want| v["view"].as_str() != Some(want)) {
            continue;
        }
        let Some(name) = v["name"].as_str() else {
            continue;
        };
        out.push(Seen {
            name: normalize(name),
            client: v["client"].as_str().map(str::to_string),
            count: 1,
        });
    }
    Ok(out)
}

/// The most denied names of `view` from a running instance's `/v1/denied`.
pub fn from_http(addr: SocketAddr, view: &str) -> Result<Vec<Seen>, SuggestError> {
    let err = |e: String| SuggestError::Http(addr, e);
    // The one HTTP client dnsfence has (the catalog sources'), on loopback plain HTTP here.
    let fetcher = crate::catalog::source::fetch::Fetcher::new(None, None, Duration::from_secs(10))
        .map_err(err)?;
    let url = format!(
        "http://{addr}/v1/denied?view={view}&limit={}",
        crate::query::metrics::TOP_K
    );
    let body = fetcher.get(&url).map_err(|e| err(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| err(e.to_string()))?;
    Ok(v["denied"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            Some(Seen {
                name: normalize(d["name"].as_str()?),
                client: None,
                count: d["count"].as_u64()?,
            })
        })
        .collect())
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// What to allow for one registrable domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The registrable domain (public-suffix list).
    pub domain: String,
    /// Queries in all.
    pub count: u64,
    /// Each name and its queries, most first.
    pub names: Vec<(String, u64)>,
    /// Distinct clients, when the source says.
    pub clients: Option<usize>,
}

/// What is gathered of one registrable domain.
#[derive(Default)]
struct Tally {
    names: BTreeMap<String, u64>,
    clients: BTreeSet<String>,
    /// Some names came without their client.
    unknown_clients: bool,
}

/// Groups names by registrable domain, most queried first.
pub fn rank(seen: &[Seen]) -> Vec<Proposal> {
    let mut by_domain: BTreeMap<String, Tally> = BTreeMap::new();
    for s in seen {
        let domain = psl::domain_str(&s.name).unwrap_or(&s.name).to_string();
        let t = by_domain.entry(domain).or_default();
        *t.names.entry(s.name.clone()).or_default() += s.count;
        match &s.client {
            Some(c) => {
                t.clients.insert(c.clone());
            }
            None => t.unknown_clients = true,
        }
    }
    let mut out: Vec<Proposal> = by_domain
        .into_iter()
        .map(|(domain, t)| {
            let (names, clients, unknown) = (t.names, t.clients, t.unknown_clients);
            let mut names: Vec<(String, u64)> = names.into_iter().collect();
            names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            Proposal {
                domain,
                count: names.iter().map(|n| n.1).sum(),
                names,
                clients: (!unknown).then_some(clients.len()),
            }
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.domain.cmp(&b.domain)));
    out
}

/// The proposal as text: a ranked table, then one `[[endpoint_set]]` block per domain.
pub fn render(proposals: &[Proposal], source: &str) -> String {
    let mut out = String::new();
    let names: usize = proposals.iter().map(|p| p.names.len()).sum();
    let _ = writeln!(
        out,
        "# dnsfence suggest: {} registrable domains, {names} names, from {source}",
        proposals.len()
    );
    if proposals.is_empty() {
        let _ = writeln!(out, "# nothing was denied");
        return out;
    }
    let _ = writeln!(
        out,
        "# {:>4}  {:<40} {:>8} {:>6} {:>8}",
        "rank", "domain", "queries", "names", "clients"
    );
    for (i, p) in proposals.iter().enumerate() {
        let clients = p.clients.map_or("-".to_string(), |c| c.to_string());
        let _ = writeln!(
            out,
            "# {:>4}  {:<40} {:>8} {:>6} {:>8}",
            i + 1,
            p.domain,
            p.count,
            p.names.len(),
            clients
        );
    }
    let _ = writeln!(
        out,
        "\n# Review each block, keep what the devices really need, and paste it into a local zone\n\
         # file; then add the profile \"local\" (or the set's id) to the view."
    );
    for p in proposals {
        let id: String = p
            .domain
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let seen: Vec<String> = p.names.iter().map(|(n, c)| format!("{n} ({c})")).collect();
        let clients = p
            .clients
            .map_or(String::new(), |c| format!(" from {c} clients"));
        let _ = writeln!(out, "\n[[endpoint_set]]");
        let _ = writeln!(out, "# {} queries{clients}: {}", p.count, seen.join(", "));
        let _ = writeln!(out, "id = \"local-{id}\"");
        let _ = writeln!(
            out,
            "description = \"{}: suggested by dnsfence suggest from {} denied queries\"",
            p.domain, p.count
        );
        let _ = writeln!(out, "category = \"default\"");
        let _ = writeln!(out, "required = false");
        let _ = writeln!(out, "express_route = false");
        let _ = writeln!(
            out,
            "ports = [\"tcp/443\"]  # a guess: check what the devices connect to"
        );
        let _ = writeln!(out, "profile = \"local\"");
        let mut sorted: Vec<&str> = p.names.iter().map(|(n, _)| n.as_str()).collect();
        sorted.sort();
        let _ = writeln!(out, "names = [");
        for n in sorted {
            let _ = writeln!(out, "  \"{n}\",");
        }
        let _ = writeln!(out, "]");
    }
    out
}

/// Reads a query log file.
pub fn read_log(path: &std::path::Path, view: Option<&str>) -> Result<Vec<Seen>, SuggestError> {
    let file =
        std::fs::File::open(path).map_err(|e| SuggestError::Log(path.display().to_string(), e))?;
    from_log(std::io::BufReader::new(file), view)
        .map_err(|e| SuggestError::Log(path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"client":"10.20.1.9","view":"kiosk","name":"www.Example.com.","verdict":"denied","reason":"not_allowlisted"}
{"client":"10.20.1.9","view":"kiosk","name":"www.example.com.","verdict":"denied","reason":"not_allowlisted"}
{"client":"10.20.1.10","view":"kiosk","name":"cdn.example.com.","verdict":"would_deny","reason":"not_allowlisted"}
{"client":"10.20.1.11","view":"kiosk","name":"a.b.co.uk.","verdict":"denied","reason":"not_allowlisted"}
{"client":"10.20.1.11","view":"other","name":"x.example.org.","verdict":"denied","reason":"not_allowlisted"}
{"client":"10.20.1.11","view":"kiosk","name":"manage.microsoft.com.","verdict":"allowed"}
{"client":"10.20.1.11","view":"kiosk","name":"y.example.org.","verdict":"refused","reason":"rate_limited"}
not json
"#;

    #[test]
    fn ranks_by_registrable_domain_and_writes_zone_blocks() {
        let seen = from_log(LOG.as_bytes(), Some("kiosk")).unwrap();
        assert_eq!(seen.len(), 4);
        let p = rank(&seen);
        assert_eq!(p[0].domain, "example.com");
        assert_eq!(p[0].count, 3);
        assert_eq!(
            p[0].names,
            [
                ("www.example.com".to_string(), 2),
                ("cdn.example.com".to_string(), 1)
            ]
        );
        assert_eq!(p[0].clients, Some(2));
        assert_eq!(p[1].domain, "b.co.uk");
        let text = render(&p, "q.jsonl");
        assert!(text.contains("#    1  example.com"), "{text}");
        // The blocks are a zone file the catalog accepts.
        let sets = crate::catalog::zones::parse_file(
            std::path::Path::new("local.toml"),
            &text,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].0.id, "local-example-com");
        assert_eq!(sets[0].0.names.len(), 2);
        assert_eq!(from_log(LOG.as_bytes(), None).unwrap().len(), 5);
    }
}
