//! Microsoft's "Network endpoints for Microsoft Intune" page, as the public docs repository
//! serves its Markdown (MicrosoftDocs/memdocs, `intune/fundamentals/endpoints.md`), read into a
//! [`Source`]: the endpoint tables (`| ID | Desc | Category | ER | Addresses | Ports |`), the
//! lists per tenant location (the MAA tabs `# [Europe](#tab/europe)`, the `| Region | CDN | Port |`
//! tables) and the "Consolidated Endpoint List" (its `FQDNs` and `IP Subnets` blocks).
//!
//! Written against the page's conventions, checked on the version of 2026-03-24: cells separate
//! entries with `<BR>`/`<br>`, wrap names and CIDR lists in backticks and put notes in
//! parentheses after them; one cell holds a comma-separated CIDR list, the label `Azure Front
//! Door Endpoints:` and more CIDRs; some rows lack the leading `|` or the header's last (Notes)
//! column; an older table sits in an HTML comment (not current: skipped). Columns are found by
//! their header names, so a reordered table still reads right.
//!
//! A page whose structure changed is refused whole, naming what is missing — no endpoint table,
//! a table without one of its columns, an ID cell that is not a number, no consolidated list or
//! one of its blocks — so that a restructured page is a failed fetch, never an empty or partial
//! overlay.

use std::collections::BTreeSet;

use super::{
    Source, SourceKind, SourceList, SourceSet, parse_ports, validate_name, validate_network,
};
use crate::base::fileerror::{excerpt, excerpt_to};
use crate::catalog::zones::{Category, PortSpec, Proto};
use crate::config::TenantRegion;

/// Why a page cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// No table with ID or Addresses columns.
    #[error("page: no endpoint table found (a table whose header has ID and Addresses columns)")]
    NoEndpointTable,
    /// An endpoint table lacks a column.
    #[error(
        "page: line {line}: the endpoint table under '{section}' has no {column} column (header: {header})"
    )]
    MissingColumn {
        /// The header's line.
        line: usize,
        /// The heading above it.
        section: String,
        /// The column it lacks.
        column: &'static str,
        /// The header as written.
        header: String,
    },
    /// A row that does not fit its table.
    #[error("page: line {line}: {reason}")]
    Row {
        /// The row's line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No consolidated list, or one of its blocks is missing.
    #[error("page: {0}")]
    Consolidated(String),
}

/// The columns of an endpoint table, by index.
struct Columns {
    id: usize,
    desc: usize,
    category: usize,
    er: usize,
    addresses: usize,
    ports: usize,
    /// The most cells a row must have (the header's count without optional trailing columns).
    needed: usize,
}

/// A table's cells: the leading and trailing `|` optional.
fn cells(line: &str) -> Vec<String> {
    let t = line.trim();
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = t.strip_suffix('|').unwrap_or(t);
    t.split('|').map(|c| c.trim().to_string()).collect()
}

fn is_separator(line: &str) -> bool {
    let c = cells(line);
    line.contains('-')
        && c.iter()
            .all(|c| !c.is_empty() && c.bytes().all(|b| matches!(b, b'-' | b':' | b' ')))
}

/// The pieces of a cell between `<br>` tags (`<BR>`, `<br/>`, `<br />`).
fn split_br(cell: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lower = cell.to_ascii_lowercase();
    let mut rest = 0;
    let mut at = 0;
    while let Some(i) = lower[at..].find("<br") {
        let start = at + i;
        match lower[start..].find('>') {
            Some(j) => {
                out.push(cell[rest..start].to_string());
                rest = start + j + 1;
                at = rest;
            }
            None => break,
        }
    }
    out.push(cell[rest..].to_string());
    out
}

impl Columns {
    fn find(
        header: &[String],
        line: usize,
        section: &str,
        raw: &str,
    ) -> Result<Columns, PageError> {
        let at = |names: &[&str], column: &'static str| {
            header
                .iter()
                .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
                .ok_or_else(|| PageError::MissingColumn {
                    line,
                    section: excerpt(section),
                    column,
                    header: excerpt(raw.trim()),
                })
        };
        let c = Columns {
            id: at(&["ID"], "ID")?,
            desc: at(&["Desc", "Description"], "Desc")?,
            category: at(&["Category"], "Category")?,
            er: at(&["ER"], "ER")?,
            addresses: at(&["Addresses"], "Addresses")?,
            ports: at(&["Ports", "Port"], "Ports")?,
            needed: 0,
        };
        let needed = 1 + [c.id, c.desc, c.category, c.er, c.addresses, c.ports]
            .into_iter()
            .max()
            .unwrap_or(0);
        Ok(Columns { needed, ..c })
    }
}

/// Names and networks of a cell, and what could not be read, as (entry, reason).
#[derive(Default)]
struct Entries {
    names: BTreeSet<String>,
    networks: BTreeSet<ipnet::IpNet>,
    rejected: Vec<(String, String)>,
}

impl Entries {
    /// One token: a CIDR, an address (a /32 or /128), a name or a URL's host.
    fn token(&mut self, token: &str) {
        let t = token
            .trim()
            .trim_matches(|c| c == '\'' || c == '"' || c == '`');
        let t = t
            .strip_prefix("https://")
            .or_else(|| t.strip_prefix("http://"))
            .map_or(t, |rest| rest.split('/').next().unwrap_or(rest));
        if t.is_empty() || t.ends_with(':') {
            // Empty, or a label such as "Azure Front Door Endpoints:".
            return;
        }
        if t.contains(char::is_whitespace) {
            self.rejected
                .push((t.to_string(), "not a name or a network".to_string()));
            return;
        }
        let looks_ip = t
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b".:/".contains(&b));
        if looks_ip && (t.contains('/') || t.parse::<std::net::IpAddr>().is_ok()) {
            let cidr = if t.contains('/') {
                t.to_string()
            } else if t.contains(':') {
                format!("{t}/128")
            } else {
                format!("{t}/32")
            };
            match validate_network(&cidr) {
                Ok(n) => {
                    self.networks.insert(n);
                }
                Err(reason) => self.rejected.push((t.to_string(), reason)),
            }
            return;
        }
        match validate_name(t) {
            Ok(n) => {
                self.names.insert(n);
            }
            Err(reason) => self.rejected.push((t.to_string(), reason)),
        }
    }

    /// A cell: what is inside backticks, comma-separated; a piece without backticks counts when
    /// it is one word with a dot (notes in parentheses and prose do not).
    fn cell(&mut self, cell: &str) {
        for piece in split_br(cell) {
            let spans: Vec<&str> = piece.split('`').skip(1).step_by(2).collect();
            // An unmatched backtick leaves its last "span" open: not an entry.
            let closed = piece.matches('`').count() / 2;
            if closed == 0 {
                let bare = piece.trim();
                if !bare.is_empty()
                    && !bare.starts_with('(')
                    && !bare.contains(char::is_whitespace)
                    && bare.contains('.')
                {
                    self.token(bare);
                }
                continue;
            }
            for span in spans.into_iter().take(closed) {
                for token in span.split(',') {
                    self.token(token);
                }
            }
        }
    }
}

/// A Ports cell: `**TCP:** 80, 443`, `**UDP:** 123`, several separated by `<br>`.
fn ports_cell(cell: &str) -> Result<BTreeSet<PortSpec>, String> {
    let mut out = BTreeSet::new();
    for piece in split_br(&cell.replace('*', "")) {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        let (proto, numbers) = piece
            .split_once(':')
            .ok_or_else(|| format!("'{}' is not 'TCP: ports' or 'UDP: ports'", excerpt(piece)))?;
        let proto = match proto.trim().to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => return Err(format!("'{}' is not TCP or UDP", excerpt(other))),
        };
        out.extend(parse_ports(numbers, proto)?);
    }
    if out.is_empty() {
        return Err("no ports".into());
    }
    Ok(out)
}

/// The profile a section's sets and lists join: the catalog's profile for that part of the page,
/// or `page` for a section dnsfence does not know yet (a view must list it).
pub fn profile_for(section: &str) -> &'static str {
    let s = section.to_ascii_lowercase();
    const BY_WORDS: [(&str, &str); 15] = [
        ("core service", "intune-core"),
        ("authentication", "authentication"),
        ("android", "android"),
        ("apple", "apple"),
        ("delivery optimization", "delivery-optimization"),
        ("push notification", "wns"),
        ("remote help", "remote-help"),
        ("autopilot", "autopilot"),
        ("win32", "win32-apps"),
        ("macos", "macos-apps"),
        ("attestation", "attestation"),
        ("microsoft store", "microsoft-store"),
        ("defender", "defender"),
        ("privilege management", "endpoint-privilege-management"),
        ("consolidated", "intune-core"),
    ];
    BY_WORDS
        .iter()
        .find(|(words, _)| s.contains(words))
        .map_or("page", |(_, profile)| profile)
}

/// A tenant location as the page's tabs and tables name it.
fn region_for(label: &str) -> Option<TenantRegion> {
    match label.trim().to_ascii_lowercase().as_str() {
        "north america" => Some(TenantRegion::Na),
        "europe" => Some(TenantRegion::Eu),
        "asia pacific" => Some(TenantRegion::Ap),
        _ => None,
    }
}

/// The page's text with HTML comments blanked (their newlines kept, so line numbers stay).
pub(super) fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let end = after.find("-->").map_or(after.len(), |j| j + 3);
        out.extend(after[..end].chars().filter(|&c| c == '\n'));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// `ms.date: 03/24/2026` of the front matter, as `2026-03-24`.
pub(super) fn version(text: &str) -> Option<String> {
    let front = text.strip_prefix("---")?;
    let end = front.find("\n---")?;
    let date = front[..end]
        .lines()
        .find_map(|l| l.trim().strip_prefix("ms.date:"))?
        .trim();
    let mut parts = date.split('/');
    let (m, d, y) = (parts.next()?, parts.next()?, parts.next()?);
    let (m, d, y): (u32, u32, u32) = (m.parse().ok()?, d.parse().ok()?, y.parse().ok()?);
    (m <= 12 && d <= 31).then(|| format!("{y:04}-{m:02}-{d:02}"))
}

/// Reads the page while it walks its lines.
struct Reader<'t> {
    lines: Vec<&'t str>,
    source: Source,
    /// The nearest heading (`##` or deeper) above the current line.
    section: String,
    /// The region of the tab the current line is in.
    tab: Option<String>,
    /// Whether an endpoint table was found.
    tables: usize,
    /// The consolidated list's blocks, when found: (FQDNs, IP Subnets).
    consolidated: (Option<Vec<String>>, Option<Vec<String>>),
    in_consolidated: bool,
}

impl<'t> Reader<'t> {
    /// The list of `(section, region)`, created on first use.
    fn list(&mut self, region: TenantRegion) -> &mut SourceList {
        let name = format!("{} ({})", self.section, region.as_str());
        if let Some(i) = self.source.lists.iter().position(|l| l.name == name) {
            return &mut self.source.lists[i];
        }
        let profile = profile_for(&self.section);
        self.source.lists.push(SourceList {
            name,
            slug: format!("{profile}-{}", region.as_str()),
            profile: profile.to_string(),
            region: Some(region),
            names: BTreeSet::new(),
            networks: BTreeSet::new(),
            ports: BTreeSet::new(),
        });
        self.source.lists.last_mut().expect("just pushed")
    }

    fn entries_into_list(&mut self, at: &str, region: TenantRegion, e: Entries) {
        for (entry, reason) in e.rejected {
            self.source.reject(at, &entry, reason);
        }
        let list = self.list(region);
        list.names.extend(e.names);
        list.networks.extend(e.networks);
    }

    /// The rows of a table whose header is at `i`; returns the index after its last row.
    fn table(&mut self, i: usize) -> Result<usize, PageError> {
        let header = cells(self.lines[i]);
        let has = |name: &str| header.iter().any(|h| h.eq_ignore_ascii_case(name));
        let mut end = i + 2;
        while end < self.lines.len() && self.lines[end].contains('|') {
            end += 1;
        }
        // An endpoint table by any of its telling columns: one that lost its ID or its
        // Addresses column is then a named failure, not a table silently skipped.
        if has("Addresses") || (has("ID") && (has("Category") || has("ER"))) {
            let cols = Columns::find(&header, i + 1, &self.section, self.lines[i])?;
            self.tables += 1;
            for row in i + 2..end {
                self.endpoint_row(row, &cols)?;
            }
        } else if has("Region") && has("CDN") {
            let at = |n: &str| header.iter().position(|h| h.eq_ignore_ascii_case(n));
            let (region, cdn, port) = (at("Region"), at("CDN"), at("Port").or(at("Ports")));
            for row in i + 2..end {
                let c = cells(self.lines[row]);
                let cell = |ix: Option<usize>| ix.and_then(|ix| c.get(ix)).map_or("", |s| s);
                let label = cell(region);
                let Some(r) = region_for(label) else {
                    let section = self.section.clone();
                    self.source.reject(
                        &section,
                        label,
                        "not a tenant location dnsfence knows (North America, Europe, Asia \
                         Pacific): its names are left out",
                    );
                    continue;
                };
                let mut e = Entries::default();
                e.cell(cell(cdn));
                let at = format!("{} ({})", self.section, r.as_str());
                self.entries_into_list(&at, r, e);
                if let Ok(p) = ports_cell(cell(port)) {
                    self.list(r).ports.extend(p);
                }
            }
        }
        Ok(end)
    }

    fn endpoint_row(&mut self, row: usize, cols: &Columns) -> Result<(), PageError> {
        let line = row + 1;
        let c = cells(self.lines[row]);
        if c.len() < cols.needed {
            return Err(PageError::Row {
                line,
                reason: format!(
                    "{} cells where the table's header needs {}: the table's columns moved",
                    c.len(),
                    cols.needed
                ),
            });
        }
        let id: u32 = c[cols.id].parse().map_err(|_| PageError::Row {
            line,
            reason: format!(
                "the ID cell holds '{}', not a number: the table's columns moved",
                excerpt(&c[cols.id])
            ),
        })?;
        let at = format!("endpoint set {id}");
        let words: Vec<String> = split_br(&c[cols.category])
            .iter()
            .map(|w| w.trim().to_ascii_lowercase())
            .collect();
        let category = match words.first().map(String::as_str) {
            Some("optimize") => Category::Optimize,
            Some("allow") => Category::Allow,
            Some("default") => Category::Default,
            _ => {
                self.source.reject(
                    &at,
                    &c[cols.category],
                    "category is Optimize, Allow or Default: the row is left out",
                );
                return Ok(());
            }
        };
        let express_route = matches!(c[cols.er].to_ascii_lowercase().as_str(), "true" | "yes");
        let mut e = Entries::default();
        e.cell(&c[cols.addresses]);
        for (entry, reason) in std::mem::take(&mut e.rejected) {
            self.source.reject(&at, &entry, reason);
        }
        let ports = match ports_cell(&c[cols.ports]) {
            Ok(p) => p,
            Err(reason) => {
                self.source.reject(&at, &c[cols.ports], reason);
                BTreeSet::new()
            }
        };
        // The same id in two tables (172: the core table and Delivery Optimization's): one set.
        if let Some(s) = self.source.sets.iter_mut().find(|s| s.id == id.to_string()) {
            s.names.extend(e.names);
            s.networks.extend(e.networks);
            s.ports.extend(ports);
            return Ok(());
        }
        self.source.sets.push(SourceSet {
            id: id.to_string(),
            description: excerpt_to(c[cols.desc].replace('`', "").trim(), 200),
            category,
            required: words.iter().any(|w| w == "required"),
            express_route,
            names: e.names,
            networks: e.networks,
            ports,
            profile: profile_for(&self.section).to_string(),
            area: None,
        });
        Ok(())
    }

    /// A fenced block starting at `i` (its opening line): its lines, and the index after it.
    fn fenced(&self, i: usize) -> Result<(Vec<String>, usize), PageError> {
        let body: Vec<String> = self.lines[i + 1..]
            .iter()
            .take_while(|l| !l.trim_start().starts_with("```"))
            .map(|l| l.trim().to_string())
            .collect();
        let close = i + 1 + body.len();
        if close >= self.lines.len() {
            return Err(PageError::Consolidated(format!(
                "line {}: the block opened here is never closed (a truncated page?)",
                i + 1
            )));
        }
        Ok((body, close + 1))
    }

    /// The block after a `FQDNs` or `IP Subnets` line at `i` of the consolidated list.
    fn consolidated_block(&mut self, i: usize, fqdns: bool) -> Result<usize, PageError> {
        let open = (i + 1..self.lines.len())
            .find(|&j| !self.lines[j].trim().is_empty())
            .filter(|&j| self.lines[j].trim_start().starts_with("```"));
        let Some(open) = open else {
            return Ok(i + 1);
        };
        let (body, next) = self.fenced(open)?;
        let body: Vec<String> = body.into_iter().filter(|l| !l.is_empty()).collect();
        if fqdns {
            self.consolidated.0 = Some(body);
        } else {
            self.consolidated.1 = Some(body);
        }
        Ok(next)
    }

    fn walk(&mut self) -> Result<(), PageError> {
        let mut i = 0;
        while i < self.lines.len() {
            let line = self.lines[i].trim();
            if let Some(label) = line
                .strip_prefix("# [")
                .and_then(|l| l.split_once("](#tab/"))
                .map(|(label, _)| label.to_string())
            {
                self.tab = Some(label);
            } else if line == "---" {
                self.tab = None;
            } else if line.starts_with("##") {
                // Headings name lists and sets in diffs and overlays: bounded, printable.
                self.section = excerpt_to(line.trim_start_matches('#').trim(), 160);
                self.tab = None;
                self.in_consolidated = self
                    .section
                    .to_ascii_lowercase()
                    .contains("consolidated endpoint list");
            } else if line.starts_with("```") {
                // A code block of prose (commands): skipped whole.
                let (_, next) = self.fenced(i).unwrap_or((Vec::new(), self.lines.len()));
                i = next;
                continue;
            } else if self.in_consolidated && line.eq_ignore_ascii_case("FQDNs") {
                i = self.consolidated_block(i, true)?;
                continue;
            } else if self.in_consolidated && line.eq_ignore_ascii_case("IP Subnets") {
                i = self.consolidated_block(i, false)?;
                continue;
            } else if line.contains('|')
                && i + 1 < self.lines.len()
                && is_separator(self.lines[i + 1])
            {
                i = self.table(i)?;
                continue;
            } else if let (Some(label), Some(item)) = (self.tab.clone(), line.strip_prefix("- ")) {
                let at = format!("{} ({label})", self.section);
                match region_for(&label) {
                    Some(r) => {
                        let mut e = Entries::default();
                        e.token(item);
                        self.entries_into_list(&at, r, e);
                    }
                    None => self.source.reject(
                        &at,
                        item,
                        "not a tenant location dnsfence knows (North America, Europe, Asia \
                         Pacific)",
                    ),
                }
            }
            i += 1;
        }
        Ok(())
    }
}

/// Parses the page's Markdown and validates every entry.
pub fn parse(text: &str) -> Result<Source, PageError> {
    let clean = without_comments(text);
    let mut r = Reader {
        lines: clean.lines().collect(),
        source: Source::new(SourceKind::Page),
        section: String::new(),
        tab: None,
        tables: 0,
        consolidated: (None, None),
        in_consolidated: false,
    };
    r.source.version = version(text);
    r.walk()?;
    if r.tables == 0 {
        return Err(PageError::NoEndpointTable);
    }
    let (Some(fqdns), Some(subnets)) = r.consolidated.clone() else {
        let missing = match &r.consolidated {
            (None, None) => {
                if r.lines.iter().any(|l| {
                    l.starts_with("##")
                        && l.to_ascii_lowercase()
                            .contains("consolidated endpoint list")
                }) {
                    "the Consolidated Endpoint List has neither its FQDNs nor its IP Subnets block"
                } else {
                    "no Consolidated Endpoint List section"
                }
            }
            (None, _) => "the Consolidated Endpoint List has no FQDNs block",
            (_, None) => "the Consolidated Endpoint List has no IP Subnets block",
            _ => unreachable!("both found"),
        };
        return Err(PageError::Consolidated(missing.into()));
    };
    let mut names = Entries::default();
    for f in &fqdns {
        names.token(f);
    }
    for s in &subnets {
        names.token(s);
    }
    let at = "consolidated list";
    for (entry, reason) in std::mem::take(&mut names.rejected) {
        r.source.reject(at, &entry, reason);
    }
    r.source.lists.insert(
        0,
        SourceList {
            name: at.to_string(),
            slug: "consolidated".into(),
            profile: profile_for("consolidated").to_string(),
            region: None,
            names: names.names,
            networks: names.networks,
            ports: BTreeSet::new(),
        },
    );
    Ok(r.source)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "---\ntitle: x\nms.date: 03/24/2026\n---\n\n## Endpoints\n\n\
### Intune core service\n\n\
| ID | Desc | Category | ER | Addresses | Ports |\n\
|----|------|----------|----|-----------|-------|\n\
| 163 | Core| Allow<BR>Required | False | `*.manage.microsoft.com`<BR>`104.46.162.96/27, 13.67.13.176/28,13.89.174.240/28`<br><br>`Azure Front Door Endpoints:`<br>` 13.107.219.0/24, 2620:1ec:40::/48` | **TCP:** 80, 443 |\n\
| 192 | Messages | Default<BR>Required | False | `fd.api.orgmsg.microsoft.com`<BR>` | **TCP:** 443|\n\n\
### Remote Help\n\n\
| ID |Desc |Category |ER |Addresses |Ports|Notes|\n\
|----|-----|---------|---|----------|-----|-----|\n\
181 | Remote Help| Default | True |`a.example.com`(rolling out)<BR>`*.com`<BR> | **TCP:** 443<br>**UDP:** 3478 |\n\n\
## Attestation\n\n# [Europe](#tab/europe)\n\n- 'https://intunemaape7.neu.attest.azure.net'\n\n\
# [Mars](#tab/mars)\n\n- 'https://x.mars.example'\n\n---\n\n\
## Network requirements for macOS app and script deployments\n\n\
|Region | CDN | Port |\n|-------|-----|------|\n\
|Asia Pacific| `macsidecarap.manage.microsoft.com`<br>(Starting March 2025, moves) |**TCP:** 443 |\n\n\
```powershell\n.\\Test.ps1\n```\n\n\
## Consolidated Endpoint List\n\nFQDNs\n```\n*.manage.microsoft.com\naka.ms\n```\n\nIP Subnets\n```\n13.107.219.0/24\n```\n\n\
<!-- Older table\n| ID | Desc | Category | ER | Addresses | Ports |\n|---|---|---|---|---|---|\n| 1 | old | Default | False | `old.example` | **TCP:** 1 |\n-->\n";

    #[test]
    fn reads_the_pages_structures() {
        let s = parse(PAGE).unwrap();
        assert_eq!(s.version.as_deref(), Some("2026-03-24"));
        let ids: Vec<&str> = s.sets.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            ["163", "192", "181"],
            "the commented-out table is skipped"
        );
        let s163 = &s.sets[0];
        assert_eq!(s163.category, Category::Allow);
        assert!(s163.required);
        assert_eq!(s163.profile, "intune-core");
        assert_eq!(
            s163.networks
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            [
                "13.67.13.176/28",
                "13.89.174.240/28",
                "13.107.219.0/24",
                "104.46.162.96/27",
                "2620:1ec:40::/48"
            ]
        );
        assert_eq!(s163.ports.len(), 2);
        // A stray backtick at the end of a cell is not an entry.
        assert_eq!(
            s.sets[1].names.iter().collect::<Vec<_>>(),
            ["fd.api.orgmsg.microsoft.com"]
        );
        let s181 = &s.sets[2];
        assert!(!s181.required && s181.express_route);
        assert_eq!(s181.profile, "remote-help");
        assert_eq!(s181.names.iter().collect::<Vec<_>>(), ["a.example.com"]);
        assert_eq!(
            s181.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            ["tcp/443", "udp/3478"]
        );
        assert!(
            s.rejected
                .iter()
                .any(|r| r.at == "endpoint set 181" && r.entry == "*.com")
        );
        assert!(
            s.rejected
                .iter()
                .any(|r| r.entry == "'https://x.mars.example'")
        );
        let names: Vec<(&str, Vec<&String>)> = s
            .lists
            .iter()
            .map(|l| (l.name.as_str(), l.names.iter().collect()))
            .collect();
        assert_eq!(
            names,
            [
                (
                    "consolidated list",
                    vec![&"*.manage.microsoft.com".to_string(), &"aka.ms".to_string()]
                ),
                (
                    "Attestation (eu)",
                    vec![&"intunemaape7.neu.attest.azure.net".to_string()]
                ),
                (
                    "Network requirements for macOS app and script deployments (ap)",
                    vec![&"macsidecarap.manage.microsoft.com".to_string()]
                ),
            ]
        );
        assert_eq!(s.lists[1].profile, "attestation");
        assert_eq!(s.lists[2].profile, "macos-apps");
        assert_eq!(s.lists[2].slug, "macos-apps-ap");
        assert_eq!(s.lists[0].networks.len(), 1);
    }

    #[test]
    fn a_restructured_page_is_refused_naming_what_is_missing() {
        let no_ports = PAGE.replacen("| ER | Addresses | Ports |", "| ER | Addresses |", 1);
        assert_eq!(
            parse(&no_ports).unwrap_err().to_string(),
            "page: line 10: the endpoint table under 'Intune core service' has no Ports column \
             (header: | ID | Desc | Category | ER | Addresses |)"
        );
        let moved = PAGE.replacen("| ID | Desc |", "| Desc | ID |", 1);
        assert_eq!(
            parse(&moved).unwrap_err().to_string(),
            "page: line 12: the ID cell holds 'Core', not a number: the table's columns moved"
        );
        let no_list = PAGE.replace("## Consolidated Endpoint List", "## Other");
        assert_eq!(
            parse(&no_list).unwrap_err(),
            PageError::Consolidated("no Consolidated Endpoint List section".into())
        );
        let no_block = PAGE.replace("IP Subnets\n", "Subnets\n");
        assert_eq!(
            parse(&no_block).unwrap_err(),
            PageError::Consolidated(
                "the Consolidated Endpoint List has no IP Subnets block".into()
            )
        );
        let cut = &PAGE[..PAGE.find("aka.ms").unwrap()];
        assert!(
            parse(cut).unwrap_err().to_string().contains("never closed"),
            "a page cut inside a block"
        );
        let no_tables =
            "## Consolidated Endpoint List\nFQDNs\n```\na.b\n```\nIP Subnets\n```\n```\n";
        assert_eq!(parse(no_tables).unwrap_err(), PageError::NoEndpointTable);
    }

    #[test]
    fn sections_pick_profiles() {
        for (section, profile) in [
            ("Intune core service", "intune-core"),
            ("Windows Autopilot dependencies", "autopilot"),
            (
                "Windows Push Notification Services (WNS) dependencies",
                "wns",
            ),
            (
                "Network requirements for PowerShell scripts and Win32 apps",
                "win32-apps",
            ),
            (
                "Migrating device health attestation compliance policies to Microsoft Azure attestation",
                "attestation",
            ),
            ("Something new", "page"),
        ] {
            assert_eq!(profile_for(section), profile, "{section}");
        }
    }
}
