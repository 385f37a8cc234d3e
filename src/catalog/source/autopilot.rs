//! Microsoft's "Windows Autopilot requirements" page, as the public docs repository serves its
//! Markdown (MicrosoftDocs/memdocs, `autopilot/requirements.md`), read into a [`Source`]: the
//! Networking tab's service headings (`##### Windows Autopilot Deployment Service`, …), each with
//! the host names it writes in backticks — as a list of URLs (`` `https://ztd.dds.microsoft.com` ``)
//! or inside a sentence (`` `*.msftconnecttest.com` must be resolvable``).
//!
//! The page has no ids: each heading is a list (`SourceList`), and `catalog diff` reports the
//! names no endpoint set covers; `catalog pull` puts them into `autopilot-page-<heading>` sets of
//! profile `autopilot`. Ports follow the page's words: an `https://` URL is tcp/443, a section
//! that says "via HTTP" adds tcp/80, "UDP port N" gives udp/N; a host the page names without a
//! protocol gets the page's general rule, tcp/80 and tcp/443.
//!
//! A page whose structure changed is refused whole, naming what is missing — no Networking tab,
//! no service heading naming hosts, no Deployment Service section — so that a restructured page is
//! a failed fetch, never an empty overlay.

use std::collections::BTreeSet;

use super::{Source, SourceKind, SourceList, validate_name};
use crate::catalog::zones::{PortSpec, Proto};

/// Why the Autopilot page cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AutopilotError {
    /// No `## … (#tab/networking)` heading.
    #[error("autopilot page: no Networking tab (a '## …(#tab/networking)' heading)")]
    NoNetworkingTab,
    /// The tab names no host under any heading.
    #[error("autopilot page: the Networking tab names no host under any service heading")]
    NoHosts,
    /// The section the whole of Autopilot depends on is gone or names nothing.
    #[error(
        "autopilot page: no 'Deployment Service' section naming its hosts in the Networking tab"
    )]
    NoDeploymentService,
}

/// The profile the page's lists join.
const PROFILE: &str = "autopilot";

/// A heading as an id part: lower-case letters, digits and '-', at most 40 characters.
fn slug(heading: &str) -> String {
    let mut out = String::new();
    for c in heading.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut out: String = out.chars().take(40).collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// The host of a backticked token: a URL's host, or the token when it is a name; `None` for
/// anything else (a path, a variable, a sentence).
fn host_of(token: &str) -> Option<(String, bool)> {
    let token = token.trim();
    let (rest, https) = match token.strip_prefix("https://") {
        Some(r) => (r, true),
        None => (token.strip_prefix("http://").unwrap_or(token), false),
    };
    let host = rest.split(['/', '?', ':']).next().unwrap_or(rest);
    let looks_like_a_name = host.contains('.')
        && !host.starts_with('.')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'*' || b == b'_');
    looks_like_a_name.then(|| (host.to_ascii_lowercase(), https))
}

/// "UDP port **123**" → 123.
fn udp_port(text: &str) -> Option<u16> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find("udp port")? + "udp port".len();
    let digits: String = lower[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|&p| p > 0)
}

/// One service heading of the Networking tab and what it says.
#[derive(Default)]
struct Section {
    heading: String,
    text: String,
}

impl Section {
    /// The list of this heading, or `None` when it names no host.
    fn list(&self, source: &mut Source) -> Option<SourceList> {
        let mut names = BTreeSet::new();
        let mut ports = BTreeSet::new();
        let http = self.text.to_ascii_lowercase().contains("via http");
        let udp = udp_port(&self.text);
        let at = format!("autopilot page: {}", self.heading);
        for (i, token) in self.text.split('`').enumerate() {
            // Odd pieces are inside backticks.
            if i % 2 == 0 {
                continue;
            }
            let Some((host, https)) = host_of(token) else {
                continue;
            };
            match validate_name(&host) {
                Ok(name) => {
                    names.insert(name);
                }
                Err(reason) => {
                    source.reject(&at, &host, reason);
                    continue;
                }
            }
            let tcp = |port| PortSpec {
                proto: Proto::Tcp,
                port,
            };
            if https {
                ports.insert(tcp(443));
            }
            if http {
                ports.insert(tcp(80));
            }
            if let Some(port) = udp {
                ports.insert(PortSpec {
                    proto: Proto::Udp,
                    port,
                });
            }
            if !https && !http && udp.is_none() {
                ports.extend([tcp(80), tcp(443)]);
            }
        }
        (!names.is_empty()).then(|| SourceList {
            name: format!("section \"{}\"", self.heading),
            slug: slug(&self.heading),
            profile: PROFILE.to_string(),
            region: None,
            names,
            networks: BTreeSet::new(),
            ports,
        })
    }
}

/// Parses the page's Markdown: one list per service heading of its Networking tab.
pub fn parse(text: &str) -> Result<Source, AutopilotError> {
    let clean = super::page::without_comments(text);
    let mut source = Source::new(SourceKind::AutopilotPage);
    source.version = super::page::version(text);
    let mut lines = clean.lines();
    // The tab's heading, then its body up to the next tab (or any level-2 heading).
    if !lines
        .by_ref()
        .any(|l| l.starts_with("## ") && l.contains("(#tab/networking)"))
    {
        return Err(AutopilotError::NoNetworkingTab);
    }
    let mut sections: Vec<Section> = Vec::new();
    for line in lines {
        if line.starts_with("## ") {
            break;
        }
        if let Some(heading) = line.strip_prefix('#') {
            sections.push(Section {
                heading: heading.trim_start_matches('#').trim().to_string(),
                text: String::new(),
            });
        } else if let Some(s) = sections.last_mut() {
            s.text.push_str(line);
            s.text.push('\n');
        }
    }
    let mut deployment = false;
    for section in &sections {
        if let Some(list) = section.list(&mut source) {
            deployment |= section.heading.contains("Deployment Service");
            source.lists.push(list);
        }
    }
    if source.lists.is_empty() {
        return Err(AutopilotError::NoHosts);
    }
    if !deployment {
        return Err(AutopilotError::NoDeploymentService);
    }
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "---\ntitle: x\nms.date: 07/08/2025\n---\n\n\
        ## [**Software**](#tab/software)\n\nUse `https://not.this.tab.example`.\n\n\
        ## [:::image::: **Networking**](#tab/networking)\n\n### Networking requirements\n\n\
        Allow port 80, 443 and 123.\n\n#### Service requirements\n\n\
        ##### Windows Autopilot Deployment Service\n\n- `https://ztd.dds.microsoft.com`\n\
        - `https://login.live.com/path`\n\n\
        ##### Network Time Protocol (NTP) sync\n\nEnsure that UDP port **123** to `time.windows.com` is open.\n\n\
        ##### Network Connection Status Indicator (NCSI)\n\n`*.msftconnecttest.com` must be reachable via HTTP.\n\n\
        ##### Diagnostics\n\nMake sure `lgmsapeweu.blob.core.windows.net` isn't blocked; set `&locale=en-us`.\n\n\
        <!-- ##### Old\n`https://old.example.com` -->\n\
        ## [**Licensing**](#tab/licensing)\n\n`https://not.this.either.example`\n";

    #[test]
    fn reads_the_networking_tab_by_heading() {
        let s = parse(PAGE).unwrap();
        assert_eq!(s.version.as_deref(), Some("2025-07-08"));
        let got: Vec<(String, Vec<String>, Vec<String>)> = s
            .lists
            .iter()
            .map(|l| {
                (
                    l.slug.clone(),
                    l.names.iter().cloned().collect(),
                    l.ports.iter().map(|p| p.to_string()).collect(),
                )
            })
            .collect();
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            [
                (
                    "windows-autopilot-deployment-service".to_string(),
                    v(&["login.live.com", "ztd.dds.microsoft.com"]),
                    v(&["tcp/443"])
                ),
                (
                    "network-time-protocol-ntp-sync".to_string(),
                    v(&["time.windows.com"]),
                    v(&["udp/123"])
                ),
                (
                    "network-connection-status-indicator-ncsi".to_string(),
                    v(&["*.msftconnecttest.com"]),
                    v(&["tcp/80"])
                ),
                (
                    "diagnostics".to_string(),
                    v(&["lgmsapeweu.blob.core.windows.net"]),
                    v(&["tcp/80", "tcp/443"])
                ),
            ]
        );
        assert!(s.lists.iter().all(|l| l.profile == "autopilot"));
    }

    #[test]
    fn a_restructured_page_is_refused_naming_what_is_missing() {
        assert_eq!(
            parse(&PAGE.replace("#tab/networking", "#tab/network")).unwrap_err(),
            AutopilotError::NoNetworkingTab
        );
        assert_eq!(
            parse(&PAGE.replace("Deployment Service", "Deployment")).unwrap_err(),
            AutopilotError::NoDeploymentService
        );
        let no_hosts: String = PAGE.replace('`', "");
        assert_eq!(parse(&no_hosts).unwrap_err(), AutopilotError::NoHosts);
        // A wildcard under a multi-tenant suffix is rejected, not followed.
        let s = parse(&PAGE.replace(
            "`lgmsapeweu.blob.core.windows.net`",
            "`*.blob.core.windows.net`",
        ))
        .unwrap();
        assert_eq!(s.rejected.len(), 1);
        assert_eq!(s.rejected[0].entry, "*.blob.core.windows.net");
    }
}
