//! The ipset backend against real kernel ip_set sets (and iptables for the printed rules) in a
//! network namespace each test creates. Without root, `ip` or `ipset` each test prints why it is
//! skipped.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{Netns, Server, eventually, fence_section, netns_or_skip, query, rcode, run};

pub fn ipset_ns(test: &str) -> Option<Netns> {
    if !std::path::Path::new("/usr/sbin/ipset").exists() {
        crate::harness::skip(test, "ipset is not installed (apt-get install ipset)");
        return None;
    }
    netns_or_skip(test)
}

async fn start(ns: &Netns, view_opts: &str) -> Server {
    start_with(ns, view_opts, "").await
}

async fn start_with(ns: &Netns, view_opts: &str, fence_extra: &str) -> Server {
    Server::builder()
        .networks("\"127.0.0.0/8\"")
        .view(view_opts)
        .config(&fence_section(
            ns,
            &format!("backend = \"ipset\"\n{fence_extra}"),
        ))
        .start()
        .await
}

/// Runs a command in the namespace; its stdout, or its stderr as the error.
pub fn in_ns(ns: &Netns, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .map_err(|e| e.to_string())?;
    drop(input);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Members of an ip_set set: (element as ipset prints it, timeout left if any), sorted.
pub fn members(ns: &Netns, set: &str) -> Vec<(String, Option<u64>)> {
    let Ok(text) = in_ns(ns, &["ipset", "list", set], None) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Option<u64>)> = text
        .split("Members:\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            let value = parts.next().unwrap_or("").to_string();
            let timeout = match (parts.next(), parts.next()) {
                (Some("timeout"), Some(t)) => t.parse().ok(),
                _ => None,
            };
            (value, timeout)
        })
        .collect();
    out.sort();
    out
}

fn values(m: &[(String, Option<u64>)]) -> Vec<&str> {
    m.iter().map(|(v, _)| v.as_str()).collect()
}

#[test]
fn ipset_backend_admits_answers_with_timeouts_and_loads_static_ranges() {
    const TEST: &str = "ipset_backend_admits_answers_with_timeouts_and_loads_static_ranges";
    let Some(ns) = ipset_ns(TEST) else {
        return;
    };
    run(async {
        let f = start(&ns, "").await;
        let c = f.client();
        let a = c
            .udp(&query("manage.microsoft.com.", RecordType::A, Some(1232)))
            .await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        // Read right after the answer: it must already be there.
        let v4 = members(&ns, "dnsfence_loopback_v4");
        assert_eq!(values(&v4), ["192.0.2.20"]);
        // TTL 60 → clamped to min 300, plus grace 60.
        let left = v4[0].1.expect("a timeout");
        assert!((350..=360).contains(&left), "{v4:?}");
        c.ask("fef.msua06.manage.microsoft.com.", RecordType::AAAA)
            .await;
        assert_eq!(
            values(&members(&ns, "dnsfence_loopback_v6")),
            ["2001:db8::11"]
        );
        // Denied names add nothing.
        c.ask("www.example.com.", RecordType::A).await;
        assert_eq!(members(&ns, "dnsfence_loopback_v4").len(), 1);
        // Static ranges of the view's endpoint sets.
        let statics = members(&ns, "dnsfence_loopback_net_v4");
        assert!(
            statics.iter().any(|(v, _)| v == "52.240.244.160/27"),
            "{statics:?}"
        );
        // A huge TTL is clamped to max_ttl_secs (1000) + grace.
        c.ask("x.notify.windows.com.", RecordType::A).await;
        let huge = members(&ns, "dnsfence_loopback_v4")
            .into_iter()
            .find(|(v, _)| v == "192.0.2.41")
            .expect("admitted");
        assert!(huge.1.unwrap() > 1000, "{huge:?}");
        f.stop().await;
    });
}

#[test]
fn ipset_sets_come_back_after_destroy_and_flush() {
    const TEST: &str = "ipset_sets_come_back_after_destroy_and_flush";
    let Some(ns) = ipset_ns(TEST) else {
        return;
    };
    run(async {
        let f = start(&ns, "").await;
        let c = f.client();
        c.ask("manage.microsoft.com.", RecordType::A).await;
        c.ask("fef.msua06.manage.microsoft.com.", RecordType::AAAA)
            .await;
        let restored = |ns: &Netns| {
            values(&members(ns, "dnsfence_loopback_v4")) == ["192.0.2.20"]
                && values(&members(ns, "dnsfence_loopback_v6")) == ["2001:db8::11"]
                && members(ns, "dnsfence_loopback_net_v4")
                    .iter()
                    .any(|(v, _)| v == "52.240.244.160/27")
        };
        for wipe in [
            vec!["ipset", "flush", "dnsfence_loopback_v4"],
            vec!["ipset", "flush", "dnsfence_loopback_net_v4"],
            vec!["ipset", "destroy", "dnsfence_loopback_v6"],
            vec!["ipset", "destroy"],
        ] {
            in_ns(&ns, &wipe, None).unwrap();
            // The resync interval is 300 ms: back well within 3 s, with the remaining timeout.
            let back = eventually(Duration::from_secs(3), || restored(&ns)).await;
            assert!(
                back,
                "after {wipe:?}: {:?} {:?}",
                members(&ns, "dnsfence_loopback_v4"),
                members(&ns, "dnsfence_loopback_net_v4")
            );
            let left = members(&ns, "dnsfence_loopback_v4")[0].1.unwrap();
            assert!(left <= 360, "after {wipe:?}: {left}");
        }
        let stats = f.engine.fence.as_ref().unwrap().stats();
        assert!(
            stats
                .resyncs_missing
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 4
        );
        // Admits keep working.
        c.ask("graph.microsoft.com.", RecordType::A).await;
        assert!(values(&members(&ns, "dnsfence_loopback_v4")).contains(&"192.0.2.30"));
        f.stop().await;
    });
}

#[test]
fn ipset_a_cache_hit_refreshes_the_elements_timeout() {
    const TEST: &str = "ipset_a_cache_hit_refreshes_the_elements_timeout";
    let Some(ns) = ipset_ns(TEST) else {
        return;
    };
    run(async {
        let f = start_with(&ns, "", "recheck_ms = 0\nresync_interval_ms = 60000").await;
        let c = f.client();
        let q = query(
            "enterpriseenrollment.manage.microsoft.com.",
            RecordType::A,
            Some(1232),
        );
        c.udp(&q).await;
        tokio::time::sleep(Duration::from_millis(2300)).await;
        let before = members(&ns, "dnsfence_loopback_v4")[0].1.unwrap();
        assert!(before <= 358, "time passed: {before}");
        c.udp(&q).await;
        let after = members(&ns, "dnsfence_loopback_v4")[0].1.unwrap();
        assert!(
            after >= 359,
            "refreshed to a full timeout: {before} -> {after}"
        );
        f.stop().await;
    });
}

#[test]
fn ipset_refusing_an_update_servfails_when_so_configured() {
    const TEST: &str = "ipset_refusing_an_update_servfails_when_so_configured";
    let Some(ns) = ipset_ns(TEST) else {
        return;
    };
    run(async {
        let f = start_with(
            &ns,
            "",
            "on_admit_failure = \"servfail\"\nresync_interval_ms = 60000",
        )
        .await;
        // Someone replaces the set with one that takes no timeouts: every admit is refused.
        in_ns(&ns, &["ipset", "destroy", "dnsfence_loopback_v4"], None).unwrap();
        in_ns(
            &ns,
            &["ipset", "create", "dnsfence_loopback_v4", "hash:ip"],
            None,
        )
        .unwrap();
        let c = f.client();
        let a = c.ask("manage.microsoft.com.", RecordType::A).await;
        assert_eq!(rcode(&a), ResponseCode::ServFail);
        let fence = f.engine.fence.as_ref().unwrap();
        let error = fence.last_error().unwrap_or_default();
        assert!(error.contains("no timeout support"), "{error}");
        assert!(!fence.healthy());
        f.stop().await;
    });
}

#[test]
fn ipset_addr_port_elements_carry_the_endpoint_sets_ports() {
    const TEST: &str = "ipset_addr_port_elements_carry_the_endpoint_sets_ports";
    let Some(ns) = ipset_ns(TEST) else {
        return;
    };
    run(async {
        let f = start(&ns, "[view.fence]\nmode = \"addr_port\"").await;
        let c = f.client();
        c.ask("time.windows.com.", RecordType::A).await;
        c.ask("manage.microsoft.com.", RecordType::A).await;
        assert_eq!(
            values(&members(&ns, "dnsfence_loopback_v4")),
            [
                "192.0.2.20,tcp:443",
                "192.0.2.20,tcp:80",
                "192.0.2.40,tcp:80",
                "192.0.2.40,udp:123",
            ]
        );
        let statics = members(&ns, "dnsfence_loopback_net_v4");
        assert!(
            statics.iter().any(|(v, _)| v == "13.67.13.176/28,tcp:443"),
            "{statics:?}"
        );
        f.stop().await;
    });
}

#[test]
fn iptables_rules_load_twice_and_match_the_sets() {
    const TEST: &str = "iptables_rules_load_twice_and_match_the_sets";
    if !std::path::Path::new("/usr/sbin/iptables-restore").exists() {
        crate::harness::skip(TEST, "iptables is not installed (apt-get install iptables)");
        return;
    }
    let Some(ns) = ipset_ns(TEST) else {
        return;
    };
    run(async {
        let f = start(&ns, "").await;
        // The printed rules, from the binary, for the same config.
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("ipset.toml");
        let text = crate::harness::config_text(
            "127.0.0.1:5300".parse().unwrap(),
            "\"127.0.0.0/8\", \"::1/128\"",
            "",
            &fence_section(&ns, "backend = \"ipset\""),
        )
        .replace("listen = [\"127.0.0.1:0\"]", "listen = [\"127.0.0.1:53\"]");
        std::fs::write(&cfg, text).unwrap();
        let rules = |family: &str| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnsfence"))
                .args(["iptables-rules", "--log", "--family", family, "-c"])
                .arg(&cfg)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let (v4, v6) = (&rules("4"), &rules("6"));
        let mut first = String::new();
        for round in 0..2 {
            in_ns(&ns, &["iptables-restore", "-n"], Some(v4))
                .unwrap_or_else(|e| panic!("iptables-restore: {e}\n{v4}"));
            in_ns(&ns, &["ip6tables-restore", "-n"], Some(v6))
                .unwrap_or_else(|e| panic!("ip6tables-restore: {e}\n{v6}"));
            let listed = in_ns(&ns, &["iptables", "-S"], None).unwrap();
            if round == 0 {
                first = listed;
            } else {
                assert_eq!(listed, first, "loading twice gives the same rules");
            }
        }
        assert!(
            first.contains(
                "-A DNSFENCE-LOOPBACK -m set --match-set dnsfence_loopback_v4 dst -j ACCEPT"
            ),
            "{first}"
        );
        assert!(
            first.contains("-A DNSFENCE -s 127.0.0.0/8 -j DNSFENCE-LOOPBACK"),
            "{first}"
        );
        let v6_listed = in_ns(&ns, &["ip6tables", "-S"], None).unwrap();
        assert!(
            v6_listed.contains("--match-set dnsfence_loopback_v6 dst -j ACCEPT"),
            "{v6_listed}"
        );
        // A set referenced by a rule cannot be destroyed from under it.
        assert!(in_ns(&ns, &["ipset", "destroy", "dnsfence_loopback_v4"], None).is_err());
        f.stop().await;
    });
}
