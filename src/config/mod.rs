//! The TOML configuration, one file per section: each holds its section as written (serde,
//! `deny_unknown_fields`, every default written once in its `Default`), its validation with the
//! offending key's `file:line`, and its [`Reload`] sorting of every setting into applied in place
//! or needs a restart, next to its fields.
//!
//! Parsing is strict so that a misspelt key is an error, not a silently ignored setting. Entries
//! that refer to the zone catalog (profiles, set ids) are checked when the policy is compiled;
//! they keep their line number ([`Located`]) so that those errors still point into this file.
//!
//! Sections: `server`, `zones`, `upstream`, `query_log`, `fence`, `http`, `catalog`, `sync`
//! (`peer_sync.rs`), `view`;
//! [`section`] holds what they share.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

mod catalog;
mod fence;
mod http;
mod peer_sync;
mod query_log;
pub mod section;
mod server;
mod upstream;
mod view;
mod zones;

pub use catalog::CatalogConfig;
pub use fence::{AdmitFailure, FenceBackend, FenceConfig, FenceMode, TableRef, ViewFence};
pub use http::HttpConfig;
pub use peer_sync::{PeerConfig, SyncConfig, SyncTls};
pub use query_log::{LogLevel, QueryLogConfig};
pub use section::{Reload, ReloadPlan};
pub use server::{MAX_UDP_PAYLOAD, ServerConfig};
pub use upstream::{PoolSettings, UpstreamConfig, UpstreamServer, UpstreamTransport};
pub use view::{CnameTargets, DenyRcode, MAX_VIEW_NAME, ViewConfig, ViewMode};
pub use zones::{TenantRegion, ZonesConfig};

use section::Ctx;

/// An error in the config file: the file, the line and the entry.
pub type ConfigError = crate::base::fileerror::FileError;

/// A value with the config line it was written on, for errors found after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// 1-based line in the config file.
    pub line: usize,
}

/// The file as written: one raw value per section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    zones: zones::RawZones,
    #[serde(default)]
    upstream: upstream::RawUpstream,
    #[serde(default)]
    query_log: query_log::RawQueryLog,
    #[serde(default)]
    fence: fence::RawFence,
    #[serde(default)]
    http: http::RawHttp,
    #[serde(default)]
    catalog: catalog::RawCatalog,
    #[serde(default)]
    sync: peer_sync::RawSync,
    #[serde(default)]
    view: Vec<Spanned<view::RawView>>,
}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (errors and relative paths refer to it).
    pub path: PathBuf,
    /// Listening sockets and limits.
    pub server: ServerConfig,
    /// Where the catalog is and which tenant-specific rows apply.
    pub zones: ZonesConfig,
    /// Upstream resolvers and the cache.
    pub upstream: UpstreamConfig,
    /// The per-query JSON log.
    pub query_log: QueryLogConfig,
    /// The firewall sets.
    pub fence: FenceConfig,
    /// The HTTP endpoints (metrics, health, pull lists).
    pub http: HttpConfig,
    /// Following Microsoft's endpoint web service.
    pub catalog: CatalogConfig,
    /// The peer gateways admissions are shared with.
    pub sync: SyncConfig,
    /// Client networks and what they may resolve.
    pub views: Vec<ViewConfig>,
    /// What is accepted but should change (an older key): `check` prints them, `run` logs them.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates a config file. With no `upstream.servers`, the name servers of
    /// /etc/resolv.conf are used.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::io(path, source))?;
        Config::parse(path, &text, Path::new("/etc/resolv.conf"))
    }

    /// Parses config text; `path` locates errors and relative paths, `resolv_conf` is read only
    /// when the config names no upstream.
    pub fn parse(path: &Path, text: &str, resolv_conf: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::syntax(path, text, &e))?;
        crate::base::fileerror::bounded_strings(path, text)?;
        let ctx = Ctx {
            path,
            text,
            base: path.parent().unwrap_or(Path::new(".")),
        };
        let mut warnings = Vec::new();
        let state_dir = match (&raw.server.state_dir, &raw.catalog.state_dir) {
            (Some(dir), old) => {
                if old.is_some() {
                    warnings.push(
                        "[catalog] state_dir is ignored: [server] state_dir is set (remove the older key)"
                            .to_string(),
                    );
                }
                ctx.path(dir)
            }
            (None, Some(dir)) => {
                warnings.push(
                    "[catalog] state_dir is deprecated: move it to [server] state_dir, which holds all of dnsfence's state"
                        .to_string(),
                );
                ctx.path(dir)
            }
            (None, None) => PathBuf::from(server::DEFAULT_STATE_DIR),
        };
        let server = raw.server.validate(&ctx, state_dir.clone())?;
        let upstream = raw.upstream.validate(&ctx, &server.listen, resolv_conf)?;
        let mut views: Vec<ViewConfig> = Vec::new();
        for v in &raw.view {
            let line = ctx.line(v);
            let view = v
                .get_ref()
                .validate(&ctx, line, &views, raw.fence.backend)?;
            views.push(view);
        }
        if views.is_empty() {
            return Err(ctx.at(1, "view", "no [[view]]: every client would be refused"));
        }
        let sync = raw.sync.validate(&ctx)?;
        let fence = raw.fence.validate(&ctx)?;
        if sync.enabled() && !fence.enabled {
            return Err(ctx.at(
                1,
                "sync",
                "[sync] shares what the fence admits: it needs [fence] enabled = true",
            ));
        }
        Ok(Config {
            path: path.to_path_buf(),
            server,
            zones: raw.zones.validate(&ctx)?,
            upstream,
            query_log: raw.query_log.validate(&ctx)?,
            fence,
            http: raw.http.validate(&ctx)?,
            catalog: raw.catalog.validate(&ctx, state_dir)?,
            sync,
            views,
            warnings,
        })
    }

    /// How `new` differs from this config: every setting applied in place, or needing a restart.
    /// Each section sorts its own settings ([`Reload`]); the views' policy part is compiled anew,
    /// their firewall sets (and, with the fence on, which views exist) belong to the fence thread.
    pub fn reload_plan(&self, new: &Config) -> ReloadPlan {
        let mut plan = ReloadPlan::default();
        // Every section is sorted (a new one does not compile until it is).
        let Config {
            path: _,
            server,
            zones,
            upstream,
            query_log,
            fence,
            http,
            catalog,
            sync,
            views,
            warnings: _,
        } = self;
        server.reload(&new.server, &mut plan);
        zones.reload(&new.zones, &mut plan);
        upstream.reload(&new.upstream, &mut plan);
        query_log.reload(&new.query_log, &mut plan);
        fence.reload(&new.fence, &mut plan);
        http.reload(&new.http, &mut plan);
        catalog.reload(&new.catalog, &mut plan);
        sync.reload(&new.sync, &mut plan);
        let changed = views.len() != new.views.len()
            || views
                .iter()
                .zip(&new.views)
                .any(|(a, b)| a.policy_part() != b.policy_part());
        plan.check("view", changed, true);
        let fences = |c: &Config| {
            c.views
                .iter()
                .map(|v| (v.name.clone(), v.fence.clone()))
                .collect::<Vec<_>>()
        };
        plan.check(
            "view.fence",
            fence.enabled && fences(self) != fences(new),
            false,
        );
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIN: &str = r#"
[upstream]
servers = ["127.0.0.1:5300"]

[[view]]
name = "lab"
networks = ["10.0.0.0/8"]
profiles = ["apple"]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            Path::new("config/test.toml"),
            text,
            Path::new("/nonexistent"),
        )
    }

    #[test]
    fn the_sync_section_is_checked_with_its_lines() {
        let sync = |fence: &str, body: &str| {
            parse(&format!(
                "{MIN}\n[fence]\nenabled = {fence}\n[sync]\n{body}"
            ))
            .map(|c| c.sync)
            .map_err(|e| e.to_string())
        };
        let files = "ca_file = \"ca.pem\"\ncert_file = \"a.pem\"\nkey_file = \"a.key\"\n";
        let ok = sync(
            "true",
            &format!(
                "listen = \"10.0.0.1:8853\"\n{files}[[sync.peer]]\nname = \"GW-B.example.\"\naddress = \"10.0.0.2:8853\"\n"
            ),
        )
        .unwrap();
        assert!(ok.enabled());
        assert_eq!(ok.peers[0].name, "gw-b.example");
        assert_eq!(ok.queue, 65_536);
        assert_eq!(
            ok.tls.unwrap().ca_file,
            Path::new("config/ca.pem"),
            "relative to the config"
        );
        assert!(
            !sync("false", "").unwrap().enabled(),
            "off without a peer or listen"
        );
        for (fence, body, want) in [
            (
                "true",
                "listen = \"10.0.0.1:8853\"\n".to_string(),
                "test.toml:12: 'sync': sync needs ca_file, cert_file and key_file",
            ),
            (
                "true",
                format!(
                    "listen = \"10.0.0.1:8853\"\n{files}[[sync.peer]]\nname = \"gw-a\"\naddress = \"10.0.0.1:8853\"\n"
                ),
                "'10.0.0.1:8853': this is [sync] listen",
            ),
            (
                "true",
                format!("{files}[[sync.peer]]\nname = \"gw_b!\"\naddress = \"10.0.0.2:8853\"\n"),
                "'gw_b!': a peer's name is the DNS name",
            ),
            (
                "true",
                format!(
                    "{files}[[sync.peer]]\nname = \"b\"\naddress = \"10.0.0.2:1\"\n[[sync.peer]]\nname = \"b\"\naddress = \"10.0.0.3:1\"\n"
                ),
                "two [[sync.peer]] have this name",
            ),
            (
                "true",
                format!("{files}[[sync.peer]]\nname = \"b\"\naddress = \"b:1\"\n"),
                "'b:1': not an ip:port address",
            ),
            (
                "false",
                format!("{files}[[sync.peer]]\nname = \"b\"\naddress = \"10.0.0.2:1\"\n"),
                "it needs [fence] enabled = true",
            ),
        ] {
            let e = sync(fence, &body).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn an_upstream_that_is_dnsfence_itself_is_refused() {
        let cfg = |listen: &str, servers: &str| {
            let text = MIN
                .replace("servers = [\"127.0.0.1:5300\"]", servers)
                .replace(
                    "[upstream]",
                    &format!("[server]\nlisten = [{listen}]\n[upstream]"),
                );
            let dir = tempfile::tempdir().unwrap();
            let rc = dir.path().join("resolv.conf");
            std::fs::write(&rc, "nameserver 127.0.0.53\n").unwrap();
            Config::parse(Path::new("c.toml"), &text, &rc).map(|_| ())
        };
        let e = cfg("\"127.0.0.1:53\"", "servers = [\"127.0.0.1\"]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'127.0.0.1': the upstream is dnsfence's own listen address 127.0.0.1:53"),
            "{e}"
        );
        assert!(e.contains("Set [upstream] servers"), "{e}");
        // A wildcard listener catches every loopback address, from resolv.conf too.
        let e = cfg("\"0.0.0.0:53\"", "").unwrap_err().to_string();
        assert!(e.contains("127.0.0.53:53 from"), "{e}");
        assert!(e.contains("resolv.conf"), "{e}");
        let e = cfg("\"[::]:53\"", "servers = [\"127.0.0.9\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("own listen address [::]:53"), "{e}");
        // Another port, or a non-local address: fine.
        assert!(cfg("\"127.0.0.1:5353\"", "servers = [\"127.0.0.1\"]").is_ok());
        assert!(cfg("\"0.0.0.0:53\"", "servers = [\"192.0.2.53\"]").is_ok());
    }

    #[test]
    fn numbers_are_bounded_with_file_line_and_entry() {
        let text = MIN.replace(
            "[upstream]\n",
            "[fence]\ngrace_secs = 99999999999\n[upstream]\n",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert_eq!(
            e,
            "config/test.toml:3: 'grace_secs = 99999999999': fence.grace_secs must be between 0 and 2592000"
        );
        let text = MIN.replace("[upstream]\n", "[upstream]\nmax_inflight = 0\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains(":3: 'max_inflight = 0': upstream.max_inflight must be between 1"),
            "{e}"
        );
    }

    #[test]
    fn errors_found_across_keys_name_the_keys_line() {
        let text = MIN.replace(
            "[upstream]\n",
            "[upstream]\n\n# comment\npositive_max_ttl_secs = 5\npositive_min_ttl_secs = 10\n",
        );
        assert_eq!(
            parse(&text).unwrap_err().to_string(),
            "config/test.toml:6: 'positive_min_ttl_secs = 10': a minimum TTL is greater than its maximum"
        );
        let text = MIN.replace(
            "[upstream]\n",
            "[fence]\nmax_ttl_secs = 60\nmin_ttl_secs = 600\n[upstream]\n",
        );
        assert!(
            parse(&text)
                .unwrap_err()
                .to_string()
                .starts_with("config/test.toml:4: 'min_ttl_secs = 600'"),
        );
        let text = MIN.replace(
            "[upstream]\n",
            "[zones]\ndir = \"a\"\ndirs = [\"b\"]\n[upstream]\n",
        );
        assert!(parse(&text).unwrap_err().to_string().starts_with(
            "config/test.toml:4: 'zones.dir': give zones.dirs or zones.dir, not both"
        ));
    }

    #[test]
    fn defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.server.listen, ["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(c.upstream.timeout, Duration::from_secs(2));
        assert_eq!(c.zones.dirs, [Path::new("config/../zones")]);
        assert_eq!(c.views[0].deny_rcode, DenyRcode::Nxdomain);
        assert_eq!(c.views[0].deny_ttl, 60);
        assert_eq!(c.views[0].mode, ViewMode::Enforce);
        assert_eq!(c.views[0].profiles[0].line, 8);
        assert_eq!(c.query_log.level, LogLevel::Denied);
    }

    #[test]
    fn busy_poll_is_off_by_default_and_bounded() {
        assert_eq!(parse(MIN).unwrap().server.busy_poll, Duration::ZERO);
        let c = parse(&format!("[server]\nbusy_poll_us = 200\n{MIN}")).unwrap();
        assert_eq!(c.server.busy_poll, Duration::from_micros(200));
        let e = parse(&format!("[server]\nbusy_poll_us = 20000\n{MIN}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                ":2: 'busy_poll_us = 20000': server.busy_poll_us must be between 0 and 10000"
            ),
            "{e}"
        );
    }

    #[test]
    fn errors_name_line_and_entry() {
        let e = parse(&MIN.replace("10.0.0.0/8", "10.0.0.1/8"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "config/test.toml:7: '10.0.0.1/8': host bits set; the network is 10.0.0.0/8"
        );
        let e = parse(&MIN.replace("127.0.0.1:5300", "localhost"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config/test.toml:3: 'localhost': not an upstream"),
            "{e}"
        );
        let e = parse(&MIN.replace("profiles", "profile"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config/test.toml:8:"), "{e}");
        assert!(e.contains("profile"), "{e}");
    }

    #[test]
    fn ipset_set_names_are_prefixed_and_at_most_31_characters() {
        let ipset = format!("[fence]\nenabled = true\nbackend = \"ipset\"\n{MIN}");
        let c = parse(&ipset).unwrap();
        assert_eq!(c.views[0].fence.set_v4, "dnsfence_lab_v4");
        assert_eq!(c.views[0].fence.net_v6, "dnsfence_lab_net_v6");
        let long = ipset.replace("name = \"lab\"", "name = \"windows-kiosk-building-b\"");
        let e = parse(&long).unwrap_err().to_string();
        assert!(
            e.starts_with("config/test.toml:9: 'windows-kiosk-building-b': the ipset set name"),
            "{e}"
        );
        // Named in [view.fence], it is fine.
        let named = format!(
            "{long}[view.fence]\nset_v4 = \"kb_v4\"\nset_v6 = \"kb_v6\"\nnet_v4 = \"kb_n4\"\nnet_v6 = \"kb_n6\"\n"
        );
        assert_eq!(parse(&named).unwrap().views[0].fence.set_v4, "kb_v4");
        // nftables names live in dnsfence's own table: no prefix.
        assert_eq!(parse(MIN).unwrap().views[0].fence.set_v4, "lab_v4");
    }

    #[test]
    fn resolv_conf_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("resolv.conf");
        fs::write(
            &rc,
            "# x\nsearch lan\nnameserver 127.0.0.53\nnameserver ::1\n",
        )
        .unwrap();
        let text = MIN.replace("servers = [\"127.0.0.1:5300\"]", "");
        let c = Config::parse(Path::new("c.toml"), &text, &rc).unwrap();
        assert!(c.upstream.from_resolv_conf);
        let labels: Vec<&str> = c
            .upstream
            .servers
            .iter()
            .map(|s| s.label.as_str())
            .collect();
        assert_eq!(labels, ["127.0.0.53:53", "[::1]:53"]);
    }
}
