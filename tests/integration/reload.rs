//! SIGHUP applies or refuses every setting: each config key changed in turn, and after the
//! reload either the running server has taken the new value, or the reload was refused with a
//! message (the log line) naming the key and the old configuration keeps serving.

use std::sync::atomic::Ordering;
use std::time::Duration;

use dnsfence::base::outcome::Verdict;
use dnsfence::config::DenyRcode;
use dnsfence::query::Engine;

use crate::harness::{Authority, Server, config_text, run};

/// What a reload must do with a changed key.
enum Expect {
    /// Applied: the check holds on the running engine afterwards.
    Applied(fn(&Engine) -> bool),
    /// Refused, naming the key.
    Refused,
}
use Expect::*;

/// Sets `key = value` in `[section]` (`"[view]"` is the `[[view]]` block), replacing the line if
/// there is one, adding the section if there is none.
fn set(text: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let mut out = Vec::new();
    let mut in_section = false;
    let mut done = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            if in_section && !done {
                out.push(format!("{key} = {value}"));
                done = true;
            }
            in_section = t == header;
            out.push(line.to_string());
            continue;
        }
        if in_section && !done && t.split('=').next().map(str::trim) == Some(key) {
            out.push(format!("{key} = {value}"));
            done = true;
            continue;
        }
        out.push(line.to_string());
    }
    if in_section && !done {
        out.push(format!("{key} = {value}"));
        done = true;
    }
    if !done {
        out.push(format!("{header}\n{key} = {value}"));
    }
    out.join("\n") + "\n"
}

#[test]
fn every_setting_is_applied_or_the_reload_is_refused_naming_it() {
    run(async {
        let upstream = Authority::start().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnsfence.toml");
        let log = dir.path().join("q.jsonl");
        let other_log = dir.path().join("other.jsonl");
        let zones = dir.path().join("zones");
        std::fs::create_dir(&zones).unwrap();
        for f in std::fs::read_dir(crate::harness::zones_dir()).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "toml") && !f.ends_with("defender.toml") {
                std::fs::copy(&f, zones.join(f.file_name().unwrap())).unwrap();
            }
        }
        let base = config_text(
            upstream.addr,
            "\"127.0.0.0/8\"",
            "",
            &format!(
                "[fence]\nenabled = true\nbackend = \"list\"\n[query_log]\nlevel = \"denied\"\npath = \"{}\"\n",
                log.display()
            ),
        );
        std::fs::write(&path, &base).unwrap();
        let config = dnsfence::config::Config::load(&path).unwrap();
        let f = Server::from_config(config, upstream).await.unwrap();
        let view_sets = f.engine.policy.load().views[0].sets.len();
        let catalog = f.engine.policy.load().catalog.sets.len();
        // A local directory beside the catalog: its set must appear after the reload.
        let local = dir.path().join("zones.d");
        std::fs::create_dir(&local).unwrap();
        std::fs::write(
            local.join("site.toml"),
            "[[endpoint_set]]\nid = \"site-kiosk\"\ndescription = \"Local portal\"\ncategory = \"default\"\nrequired = false\nexpress_route = false\nports = [\"tcp/443\"]\nprofile = \"site\"\nnames = [\"portal.example.org\"]\n",
        )
        .unwrap();
        let zones_dirs = format!("[\"{}\", \"{}\"]", zones.display(), local.display());
        let other_log_path = format!("\"{}\"", other_log.display());
        let cases: Vec<(&str, &str, &str, Expect)> = vec![
            ("server", "listen", "[\"127.0.0.1:1\"]", Refused),
            ("server", "tcp_idle_timeout_ms", "777", Refused),
            ("server", "max_udp_payload", "1400", Refused),
            ("server", "udp_workers", "3", Refused),
            ("server", "busy_poll_us", "50", Refused),
            ("server", "rate_limit_qps", "10", Refused),
            ("server", "rate_limit_burst", "30", Refused),
            (
                "server",
                "max_waiting",
                "77",
                Applied(|e| e.max_waiting.load(Ordering::Relaxed) == 77),
            ),
            ("server", "state_dir", "\"/tmp/elsewhere\"", Refused),
            ("server", "warm_restart", "true", Applied(|_| true)),
            ("server", "tcp_max_connections", "20", Refused),
            ("server", "tcp_max_connections_per_client", "3", Refused),
            ("server", "tcp_max_queries", "9", Refused),
            ("server", "tcp_max_lifetime_ms", "9000", Refused),
            ("server", "shutdown_timeout_ms", "9000", Refused),
            ("server", "tcp_max_pipelined", "3", Refused),
            (
                "zones",
                "dirs",
                &zones_dirs,
                Applied(|e| {
                    let sets = &e.policy.load().catalog.sets;
                    sets.iter().all(|s| !s.source.ends_with("defender.toml"))
                        && sets.iter().any(|s| s.id == "site-kiosk")
                }),
            ),
            (
                "zones",
                "tenant_regions",
                "[\"eu\"]",
                Applied(|e| {
                    let p = e.policy.load();
                    p.views[0]
                        .lookup("naprodimedatapri.azureedge.net")
                        .is_none()
                        && p.views[0]
                            .lookup("euprodimedatapri.azureedge.net")
                            .is_some()
                }),
            ),
            (
                "upstream",
                "servers",
                "[\"127.0.0.1:9\", \"UPSTREAM\"]",
                Applied(|e| e.upstream.load().settings().servers.len() == 2),
            ),
            (
                "upstream",
                "timeout_ms",
                "900",
                Applied(|e| e.upstream.load().settings().timeout == Duration::from_millis(900)),
            ),
            (
                "upstream",
                "cache_size",
                "320",
                Applied(|e| e.cache.limits().0 == 320),
            ),
            (
                "upstream",
                "positive_min_ttl_secs",
                "7",
                Applied(|e| e.cache.limits().1.positive_min == Duration::from_secs(7)),
            ),
            (
                "upstream",
                "positive_max_ttl_secs",
                "700",
                Applied(|e| e.cache.limits().1.positive_max == Duration::from_secs(700)),
            ),
            (
                "upstream",
                "negative_min_ttl_secs",
                "3",
                Applied(|e| e.cache.limits().1.negative_min == Duration::from_secs(3)),
            ),
            (
                "upstream",
                "negative_max_ttl_secs",
                "30",
                Applied(|e| e.cache.limits().1.negative_max == Duration::from_secs(30)),
            ),
            ("upstream", "probe_interval_ms", "5000", Refused),
            (
                "upstream",
                "max_inflight",
                "99",
                Applied(|e| e.upstream.load().settings().max_inflight == 99),
            ),
            (
                "upstream",
                "udp_sockets",
                "3",
                Applied(|e| e.upstream.load().settings().udp_sockets == 3),
            ),
            (
                "upstream",
                "udp_socket_queries",
                "77",
                Applied(|e| e.upstream.load().settings().udp_socket_queries == 77),
            ),
            (
                "upstream",
                "udp_socket_secs",
                "30",
                Applied(|e| e.upstream.load().settings().udp_socket_age.as_secs() == 30),
            ),
            (
                "upstream",
                "stale_answer_after_ms",
                "250",
                Applied(|e| e.stale_answer_after_ms.load(Ordering::Relaxed) == 250),
            ),
            (
                "upstream",
                "stale_max_secs",
                "60",
                Applied(|e| e.cache.limits().2 == Duration::from_secs(60)),
            ),
            (
                "query_log",
                "level",
                "\"all\"",
                Applied(|e| e.log.wants(Verdict::Allowed)),
            ),
            ("query_log", "path", &other_log_path, Applied(|_| true)),
            (
                "query_log",
                "sample_per_second",
                "3",
                Applied(|e| e.log.per_second() == 3),
            ),
            ("fence", "enabled", "false", Refused),
            ("fence", "backend", "\"nftables\"", Refused),
            ("fence", "netns", "\"elsewhere\"", Refused),
            ("fence", "nft", "\"/bin/true\"", Refused),
            ("fence", "min_ttl_secs", "60", Refused),
            ("fence", "max_ttl_secs", "600", Refused),
            ("fence", "grace_secs", "5", Refused),
            ("fence", "admit_deadline_ms", "80", Refused),
            (
                "fence",
                "on_admit_failure",
                "\"servfail\"",
                Applied(|e| e.servfail_on_admit_failure.load(Ordering::Relaxed)),
            ),
            ("fence", "resync_interval_ms", "9000", Refused),
            ("fence", "recheck_ms", "9000", Refused),
            ("http", "listen", "\"off\"", Refused),
            (
                "catalog",
                "page",
                "\"https://127.0.0.1:9/endpoints.md\"",
                Refused,
            ),
            (
                "catalog",
                "autopilot_page",
                "\"https://127.0.0.1:9/requirements.md\"",
                Refused,
            ),
            ("catalog", "feed", "\"https://127.0.0.1:9\"", Refused),
            ("catalog", "instance", "\"China\"", Refused),
            ("catalog", "refresh_hours", "6", Refused),
            ("catalog", "ca_file", "\"ca.pem\"", Refused),
            ("http", "max_connections", "5", Refused),
            ("http", "max_connections_per_client", "5", Refused),
            ("http", "reserved_connections", "5", Refused),
            ("http", "trusted", "[\"192.0.2.0/24\"]", Refused),
            ("http", "request_timeout_ms", "900", Refused),
            ("http", "idle_timeout_ms", "900", Refused),
            ("http", "max_denied_domains", "5", Refused),
            (
                "[view]",
                "networks",
                "[\"127.0.0.0/16\"]",
                Applied(|e| e.policy.load().views[0].networks[0].to_string() == "127.0.0.0/16"),
            ),
            (
                "[view]",
                "profiles",
                "[\"apple\"]",
                Applied(|e| e.policy.load().views[0].sets.len() < 5),
            ),
            (
                "[view]",
                "sets",
                "[\"dha\"]",
                Applied(|e| {
                    let p = e.policy.load();
                    p.views[0]
                        .sets
                        .iter()
                        .any(|&i| p.catalog.sets[i as usize].id == "dha")
                }),
            ),
            (
                "[view]",
                "exclude_sets",
                "[\"163\"]",
                Applied(|e| {
                    e.policy.load().views[0]
                        .lookup("manage.microsoft.com")
                        .is_none()
                }),
            ),
            (
                "[view]",
                "deny_rcode",
                "\"refused\"",
                Applied(|e| e.policy.load().views[0].deny_rcode == DenyRcode::Refused),
            ),
            (
                "[view]",
                "deny_ttl_secs",
                "5",
                Applied(|e| e.policy.load().views[0].deny_ttl == 5),
            ),
            (
                "[view]",
                "cname_targets",
                "\"allowlisted\"",
                Applied(|e| {
                    e.policy.load().views[0].cname_targets
                        == dnsfence::config::CnameTargets::Allowlisted
                }),
            ),
            (
                "[view]",
                "mode",
                "\"report\"",
                Applied(|e| e.policy.load().views[0].mode == dnsfence::config::ViewMode::Report),
            ),
            ("view.fence", "set_v4", "\"other_v4\"", Refused),
            ("view.fence", "mode", "\"addr_port\"", Refused),
        ];
        let upstream_addr = f.upstream.addr.to_string();
        for (section, key, value, expect) in &cases {
            let value = value.replace("UPSTREAM", &upstream_addr);
            let text = set(&base, section, key, &value);
            let name = if *section == "[view]" {
                format!("view.{key}")
            } else {
                format!("{section}.{key}")
            };
            std::fs::write(&path, &text).unwrap();
            *f.status.last_reload.lock().unwrap() = None;
            f.signals
                .send(dnsfence::daemon::signal::Signal::Reload)
                .unwrap();
            let outcome = loop {
                if let Some(o) = f.status.last_reload.lock().unwrap().clone() {
                    break o;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            match expect {
                Applied(check) => {
                    assert_eq!(outcome, Ok(()), "{name}: reload refused");
                    assert!(check(&f.engine), "{name}: the new value is not in force");
                    if name == "query_log.path" {
                        let c = f.client();
                        c.ask("to-the-new-file.example.", hickory_proto::rr::RecordType::A)
                            .await;
                        let lines = crate::harness::log_lines(&other_log, 1).await;
                        assert_eq!(lines.len(), 1, "{name}: written to the new path");
                    }
                }
                Refused => {
                    let e = outcome.expect_err(&format!("{name}: a reload cannot apply it"));
                    let named = if *section == "view.fence" {
                        "view.fence".to_string()
                    } else {
                        name.clone()
                    };
                    assert!(e.contains(&named), "{name}: {e}");
                    assert!(e.contains("restart"), "{name}: {e}");
                }
            }
            // Back to the base configuration for the next key.
            std::fs::write(&path, &base).unwrap();
            *f.status.last_reload.lock().unwrap() = None;
            f.signals
                .send(dnsfence::daemon::signal::Signal::Reload)
                .unwrap();
            loop {
                if let Some(o) = f.status.last_reload.lock().unwrap().clone() {
                    assert_eq!(o, Ok(()), "{name}: back to base");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // The zone-directory case did take effect: the copy lacks defender.toml.
        assert_eq!(f.engine.policy.load().catalog.sets.len(), catalog);
        assert_eq!(f.engine.policy.load().views[0].sets.len(), view_sets);
        f.stop().await;
    });
}
