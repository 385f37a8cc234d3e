//! The firewall sets, against real kernel nftables in a network namespace each test creates.
//! Without root (or without `ip`/`nft`) each test prints why it is skipped.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{
    Netns, Server, bulk_name, eventually, fence_section, log_lines, netns_or_skip, query, rcode,
    run,
};

async fn start(ns: &Netns, view_opts: &str, fence_extra: &str, extra: &str) -> Server {
    Server::builder()
        .networks("\"127.0.0.0/8\"")
        .view(view_opts)
        .config(&format!("{}\n{extra}", fence_section(ns, fence_extra)))
        .start()
        .await
}

/// An admin replaces dnsfence's set `name` with one whose elements are of type `kind`.
fn replace_set(ns: &Netns, name: &str, kind: &str) {
    ns.nft(&["delete", "set", "inet", "dnsfence", name]);
    let spec = format!("{{ type {kind}; flags timeout; }}");
    ns.nft(&["add", "set", "inet", "dnsfence", name, &spec]);
}

fn values(els: &[(String, Option<u64>, Option<u64>)]) -> Vec<String> {
    let mut v: Vec<String> = els.iter().map(|e| e.0.clone()).collect();
    v.sort();
    v
}

#[test]
fn every_answered_address_is_in_the_set_when_the_answer_arrives() {
    let Some(ns) = netns_or_skip("every_answered_address_is_in_the_set_when_the_answer_arrives")
    else {
        return;
    };
    run(async {
        let f = start(&ns, "", "", "").await;
        let c = f.client();
        // CNAME chain: the final A is admitted.
        let a = c
            .udp(&query("manage.microsoft.com.", RecordType::A, Some(1232)))
            .await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        // Read the set right after the answer: no waiting, it must already be there.
        let v4 = ns.elements("loopback_v4");
        assert_eq!(values(&v4), ["192.0.2.20"]);
        let (_, timeout, expires) = &v4[0];
        // TTL 60 → clamped to min 300, plus grace 60.
        assert_eq!(*timeout, Some(360));
        assert!(expires.unwrap() <= 360 && expires.unwrap() >= 350, "{v4:?}");

        // AAAA, and HTTPS hints of both families.
        c.ask("fef.msua06.manage.microsoft.com.", RecordType::AAAA)
            .await;
        c.ask("graph.microsoft.com.", RecordType::HTTPS).await;
        assert_eq!(
            values(&ns.elements("loopback_v4")),
            ["192.0.2.20", "192.0.2.31"]
        );
        assert_eq!(
            values(&ns.elements("loopback_v6")),
            ["2001:db8::11", "2001:db8::31"]
        );

        // A huge TTL is clamped to max_ttl_secs (1000) + grace.
        c.ask("x.notify.windows.com.", RecordType::A).await;
        let huge = ns
            .elements("loopback_v4")
            .into_iter()
            .find(|e| e.0 == "192.0.2.41")
            .expect("admitted");
        assert_eq!(huge.1, Some(1060));

        // 40 addresses in one answer, all in before the answer.
        c.tcp(&query(
            "big.manage.microsoft.com.",
            RecordType::A,
            Some(1232),
        ))
        .await;
        let n = ns
            .elements("loopback_v4")
            .iter()
            .filter(|e| e.0.starts_with("198.51.100."))
            .count();
        assert_eq!(n, 40);

        // The static ranges of ID 163 are loaded, without timeout.
        let statics = ns.elements("loopback_net_v4");
        assert!(
            statics.iter().any(|e| e.0 == "13.67.13.176/28"),
            "{statics:?}"
        );
        assert!(statics.iter().all(|e| e.1.is_none()));
        let stats = f.engine.fence.as_ref().unwrap().stats();
        assert!(stats.admits_ok.load(std::sync::atomic::Ordering::Relaxed) >= 5);
        f.stop().await;
    });
}

#[test]
fn denied_names_add_nothing() {
    let Some(ns) = netns_or_skip("denied_names_add_nothing") else {
        return;
    };
    run(async {
        let f = start(&ns, "", "", "").await;
        let c = f.client();
        for name in [
            "evilmanage.microsoft.com.",
            "manage-microsoft.com.",
            "manage.microsoft.com.evil.example.",
        ] {
            let a = c.ask(name, RecordType::A).await;
            assert_eq!(rcode(&a), ResponseCode::NXDomain);
        }
        assert_eq!(ns.elements("loopback_v4"), vec![]);
        assert_eq!(ns.elements("loopback_v6"), vec![]);
        f.stop().await;
    });
}

/// In the kernel: a report-mode view admits what it would deny; `cname_targets = "allowlisted"`
/// admits nothing for a chain that leaves the allowlist, and an injected record never gets in.
#[test]
fn report_mode_admits_and_chain_rules_hold_in_the_kernel() {
    let Some(ns) = netns_or_skip("report_mode_admits_and_chain_rules_hold_in_the_kernel") else {
        return;
    };
    run(async {
        let f = start(&ns, "mode = \"report\"", "", "").await;
        let c = f.client();
        c.ask("evilmanage.microsoft.com.", RecordType::A).await;
        c.ask("inject.manage.microsoft.com.", RecordType::A).await;
        assert_eq!(
            values(&ns.elements("loopback_v4")),
            ["192.0.2.60", "192.0.2.66"],
            "the would-be denial is admitted; the injected 198.51.100.66 is not"
        );
        f.stop().await;
    });
    let Some(ns) = netns_or_skip("report_mode_admits_and_chain_rules_hold_in_the_kernel") else {
        return;
    };
    run(async {
        let f = start(&ns, "cname_targets = \"allowlisted\"", "", "").await;
        let c = f.client();
        let a = c.ask("manage.microsoft.com.", RecordType::A).await;
        assert_eq!(rcode(&a), ResponseCode::NXDomain);
        c.ask("cdn.manage.microsoft.com.", RecordType::A).await;
        assert_eq!(values(&ns.elements("loopback_v4")), ["192.0.2.50"]);
        f.stop().await;
    });
}

#[test]
fn an_element_deleted_by_hand_is_readmitted_by_the_next_cache_hit() {
    let Some(ns) = netns_or_skip("an_element_deleted_by_hand_is_readmitted_by_the_next_cache_hit")
    else {
        return;
    };
    run(async {
        // recheck 0: every cache hit confirms its elements with the kernel.
        let f = start(&ns, "", "recheck_ms = 0\nresync_interval_ms = 60000", "").await;
        let c = f.client();
        let q = query(
            "enterpriseenrollment.manage.microsoft.com.",
            RecordType::A,
            Some(1232),
        );
        c.udp(&q).await;
        assert_eq!(values(&ns.elements("loopback_v4")), ["192.0.2.10"]);
        ns.nft(&[
            "delete",
            "element",
            "inet",
            "dnsfence",
            "loopback_v4",
            "{ 192.0.2.10 }",
        ]);
        assert_eq!(ns.elements("loopback_v4"), vec![]);
        let a = c.udp(&q).await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        assert_eq!(
            f.upstream
                .seen
                .count("enterpriseenrollment.manage.microsoft.com."),
            1,
            "a cache hit"
        );
        assert_eq!(
            values(&ns.elements("loopback_v4")),
            ["192.0.2.10"],
            "re-admitted before the answer"
        );
        let stats = f.engine.fence.as_ref().unwrap().stats();
        assert!(
            stats
                .readmits_cache_hit
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
        // The same count on /metrics.
        let s = crate::harness::scrape(&f).await;
        assert_eq!(
            crate::harness::sample(&s, "dnsfence_fence_readmits_total", &[]),
            Some(1.0)
        );
        f.stop().await;
    });
}

#[test]
fn a_fresh_element_costs_no_kernel_round_trip_on_a_cache_hit() {
    let Some(ns) = netns_or_skip("a_fresh_element_costs_no_kernel_round_trip_on_a_cache_hit")
    else {
        return;
    };
    run(async {
        let f = start(&ns, "", "recheck_ms = 60000", "").await;
        let c = f.client();
        let q = query(
            "enterpriseenrollment.manage.microsoft.com.",
            RecordType::A,
            Some(1232),
        );
        c.udp(&q).await;
        let stats = f.engine.fence.as_ref().unwrap().stats();
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        let written = || stats.batches.load(relaxed) + stats.batches_at_pass_end.load(relaxed);
        let batches = written();
        // Hits take the same decision on both transports: the ledger says the elements are
        // fresh, so the answer is sent without asking the fence at all.
        for _ in 0..3 {
            c.udp(&q).await;
        }
        for _ in 0..2 {
            c.tcp(&q).await;
        }
        assert_eq!(written(), batches);
        assert_eq!(stats.admits_fresh.load(relaxed), 0, "no admit was needed");
        assert_eq!(stats.admits_ok.load(relaxed), 1, "only the miss wrote");
        assert_eq!(f.engine.metrics.cache_hits.get(), 5);
        f.stop().await;
    });
}

#[test]
fn flush_ruleset_is_repaired_within_the_resync_interval() {
    let Some(ns) = netns_or_skip("flush_ruleset_is_repaired_within_the_resync_interval") else {
        return;
    };
    run(async {
        let f = start(&ns, "", "", "").await;
        let c = f.client();
        c.ask("manage.microsoft.com.", RecordType::A).await;
        c.ask("fef.msua06.manage.microsoft.com.", RecordType::AAAA)
            .await;
        ns.nft(&["flush", "ruleset"]);
        assert!(
            ns.try_nft(&["list", "table", "inet", "dnsfence"]).is_err(),
            "wiped"
        );
        // Resync interval is 300 ms: everything is back well within 3 s.
        let back = eventually(Duration::from_secs(3), || {
            values(&ns.elements("loopback_v4")) == ["192.0.2.20"]
                && values(&ns.elements("loopback_v6")) == ["2001:db8::11"]
        })
        .await;
        assert!(
            back,
            "live elements restored: {:?}",
            ns.elements("loopback_v4")
        );
        let v4 = ns.elements("loopback_v4");
        assert!(v4[0].1.unwrap() <= 360, "remaining timeout kept: {v4:?}");
        let statics = ns.elements("loopback_net_v4");
        assert!(
            statics.iter().any(|e| e.0 == "52.240.244.160/27"),
            "static ranges restored"
        );
        let stats = f.engine.fence.as_ref().unwrap().stats();
        assert!(
            stats
                .resyncs_missing
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
        // And admits keep working after the resync.
        c.ask("graph.microsoft.com.", RecordType::A).await;
        assert!(values(&ns.elements("loopback_v4")).contains(&"192.0.2.30".to_string()));
        f.stop().await;
    });
}

#[test]
fn addr_port_elements_carry_the_endpoint_sets_ports() {
    let Some(ns) = netns_or_skip("addr_port_elements_carry_the_endpoint_sets_ports") else {
        return;
    };
    run(async {
        let f = start(&ns, "[view.fence]\nmode = \"addr_port\"", "", "").await;
        let c = f.client();
        c.ask("time.windows.com.", RecordType::A).await;
        c.ask("manage.microsoft.com.", RecordType::A).await;
        assert_eq!(
            values(&ns.elements("loopback_v4")),
            [
                "192.0.2.20 . tcp . 443",
                "192.0.2.20 . tcp . 80",
                "192.0.2.40 . tcp . 80",
                "192.0.2.40 . udp . 123",
            ]
        );
        let statics = ns.elements("loopback_net_v4");
        assert!(
            statics.iter().any(|e| e.0 == "13.67.13.176/28 . tcp . 443"),
            "{statics:?}"
        );
        f.stop().await;
    });
}

#[test]
fn apns_and_fcm_elements_carry_their_ports_in_the_kernel() {
    let Some(ns) = netns_or_skip("apns_and_fcm_elements_carry_their_ports_in_the_kernel") else {
        return;
    };
    run(async {
        let f = start(
            &ns,
            "families = [\"apple-mobile\", \"android-enterprise\"]\n[view.fence]\nmode = \"addr_port\"",
            "",
            "",
        )
        .await;
        let c = f.client();
        // Any APNs courier (Apple's *.push.apple.com), and FCM's device host.
        c.ask("17-courier.push.apple.com.", RecordType::A).await;
        c.ask("mtalk.google.com.", RecordType::A).await;
        let elements = values(&ns.elements("loopback_v4"));
        for want in [
            "192.0.2.61 . tcp . 2197",
            "192.0.2.61 . tcp . 443",
            "192.0.2.61 . tcp . 5223",
            "192.0.2.61 . tcp . 80",
            "192.0.2.71 . tcp . 443",
            "192.0.2.71 . tcp . 5228",
            "192.0.2.71 . tcp . 5229",
            "192.0.2.71 . tcp . 5230",
        ] {
            assert!(elements.iter().any(|e| e == want), "{want}: {elements:?}");
        }
        assert!(
            !elements.iter().any(|e| e == "192.0.2.71 . tcp . 5223"),
            "FCM's host is not open on APNs' port: {elements:?}"
        );
        // Apple's 17.0.0.0/8 is static, on the APNs ports only.
        let statics = values(&ns.elements("loopback_net_v4"));
        for port in ["443", "2197", "5223"] {
            let want = format!("17.0.0.0/8 . tcp . {port}");
            assert!(statics.contains(&want), "{want}");
        }
        assert!(!statics.iter().any(|e| e == "17.0.0.0/8 . tcp . 80"));
        f.stop().await;
    });
    // The ruleset an admin loads carries the same static elements.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnsfence"))
        .args(["nft-rules", "-c"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/kiosk.toml"))
        .output()
        .unwrap();
    let rules = String::from_utf8(out.stdout).unwrap();
    for want in ["17.0.0.0/8 . tcp . 5223", "17.0.0.0/8 . tcp . 2197"] {
        assert!(rules.contains(want), "{want}");
    }
}

#[test]
fn admit_failure_answers_or_servfails_as_configured() {
    let Some(ns) = netns_or_skip("admit_failure_answers_or_servfails_as_configured") else {
        return;
    };
    run(async {
        let dir = tempfile::tempdir().unwrap();
        for (policy, want) in [
            ("answer", ResponseCode::NoError),
            ("servfail", ResponseCode::ServFail),
        ] {
            let log = dir.path().join(format!("{policy}.jsonl"));
            let f = start(
                &ns,
                "",
                &format!("on_admit_failure = \"{policy}\"\nresync_interval_ms = 60000"),
                &format!(
                    "[query_log]\nlevel = \"all\"\npath = \"{}\"\n",
                    log.display()
                ),
            )
            .await;
            // An admin replaces the IPv4 set with one of the wrong type.
            replace_set(&ns, "loopback_v4", "ipv6_addr");
            let a = f
                .client()
                .udp(&query(
                    "enterpriseenrollment.manage.microsoft.com.",
                    RecordType::A,
                    Some(1232),
                ))
                .await;
            assert_eq!(rcode(&a), want, "on_admit_failure = {policy}");
            let lines = log_lines(&log, 1).await;
            assert_eq!(lines[0]["fence_error"], "kernel_error", "{lines:?}");
            let stats = f.engine.fence.as_ref().unwrap().stats();
            assert_eq!(
                stats
                    .admits_failed
                    .load(std::sync::atomic::Ordering::Relaxed),
                1
            );
            assert!(f.engine.fence.as_ref().unwrap().last_error().is_some());
            f.stop().await;
            ns.nft(&["delete", "table", "inet", "dnsfence"]);
        }
    });
}

/// A burst of misses: their admits reach the kernel together (far fewer netlink batches than
/// admits), and the one the kernel refuses fails alone: every other answer is in the set when it
/// arrives.
#[test]
fn a_burst_of_admits_is_written_together_and_a_refused_one_fails_alone() {
    let Some(ns) =
        netns_or_skip("a_burst_of_admits_is_written_together_and_a_refused_one_fails_alone")
    else {
        return;
    };
    run(async {
        const BURST: u16 = 300;
        let f = start(
            &ns,
            "",
            "on_admit_failure = \"servfail\"\nresync_interval_ms = 60000",
            "",
        )
        .await;
        // An admin replaces the IPv6 set with one of the wrong type: every AAAA admit is refused.
        replace_set(&ns, "loopback_v6", "ipv4_addr");
        let mut burst = tokio::task::JoinSet::new();
        for n in 0..BURST {
            let c = f.client();
            burst.spawn(async move {
                let (name, ip) = bulk_name(n);
                (c.ask(&name, RecordType::A).await, Some(ip))
            });
            if n == BURST / 2 {
                let c = f.client();
                burst.spawn(async move {
                    (
                        c.ask("fef.msua06.manage.microsoft.com.", RecordType::AAAA)
                            .await,
                        None,
                    )
                });
            }
        }
        let mut want: Vec<String> = Vec::new();
        while let Some(done) = burst.join_next().await {
            let (answer, ip) = done.unwrap();
            match ip {
                Some(ip) => {
                    assert_eq!(rcode(&answer), ResponseCode::NoError, "{ip}");
                    want.push(ip.to_string());
                }
                None => assert_eq!(rcode(&answer), ResponseCode::ServFail, "the refused admit"),
            }
        }
        want.sort();
        let have: Vec<String> = values(&ns.elements("loopback_v4"))
            .into_iter()
            .filter(|v| v.starts_with("198.18."))
            .collect();
        assert_eq!(have, want, "every answered address is in the set");
        let stats = f.engine.fence.as_ref().unwrap().stats();
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        assert_eq!(stats.admits_ok.load(relaxed), u64::from(BURST));
        assert_eq!(stats.admits_failed.load(relaxed), 1);
        // Written where the runtime's passes ended; the fence thread sorted out the batch the
        // kernel refused (and took the passes that found it holding the socket meanwhile).
        let (at_pass_end, by_thread) = (
            stats.batches_at_pass_end.load(relaxed),
            stats.batches.load(relaxed),
        );
        assert!(
            at_pass_end + by_thread <= u64::from(BURST) / 3,
            "{at_pass_end} + {by_thread} netlink batches for {BURST} admits: they were not written together"
        );
        assert!(
            at_pass_end >= 1 && by_thread >= 1,
            "{at_pass_end} {by_thread}"
        );
        let s = crate::harness::scrape(&f).await;
        for (by, n) in [("pass_end", at_pass_end), ("fence_thread", by_thread)] {
            assert_eq!(
                crate::harness::sample(&s, "dnsfence_fence_batches_total", &[("by", by)]),
                Some(n as f64),
                "{by}"
            );
        }
        f.stop().await;
    });
}

#[test]
fn the_generated_ruleset_loads() {
    let Some(ns) = netns_or_skip("the_generated_ruleset_loads") else {
        return;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnsfence"))
        .args(["nft-rules", "--log", "-c"])
        .arg(root.join("config/examples/kiosk.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let rules = String::from_utf8(out.stdout).unwrap();
    ns.nft_script(&rules, true)
        .expect("nft -c accepts the ruleset");
    // Someone else's table, which loading dnsfence's rules must leave alone.
    ns.nft_script(
        "table inet other {\n\tchain c {\n\t\ttype filter hook forward priority 0;\n\t}\n}\n",
        false,
    )
    .unwrap();
    ns.nft_script(&rules, false).expect("nft loads the ruleset");
    let once = ns.nft(&["-s", "list", "ruleset"]);
    // dnsfence admits an element; the admin loads the (same) ruleset again.
    ns.nft(&[
        "add",
        "element",
        "inet",
        "dnsfence",
        "windows_kiosk_v4",
        "{ 192.0.2.1 . tcp . 443 timeout 1h }",
    ]);
    ns.nft_script(&rules, false)
        .expect("nft loads the ruleset twice");
    let twice = ns.nft(&["-s", "list", "ruleset"]);
    let without_element =
        twice.replace("\t\telements = { 192.0.2.1 . tcp . 443 timeout 1h }\n", "");
    assert_eq!(
        once, without_element,
        "loading twice gives the same ruleset"
    );
    assert!(
        twice.contains("192.0.2.1 . tcp . 443"),
        "the dynamic set kept its element"
    );
    assert!(twice.contains("table inet other"), "other tables untouched");
    assert_eq!(
        twice.matches("jump view_windows_kiosk").count(),
        1,
        "no doubled jumps"
    );
    let listed = ns.nft(&["list", "chain", "inet", "dnsfence", "view_windows_kiosk"]);
    assert!(listed.contains("@windows_kiosk_v4"), "{listed}");
    assert!(listed.contains("th dport { 53, 853 }"), "{listed}");
    assert!(listed.contains("limit rate 10/second"), "{listed}");
    assert!(listed.contains("drop"), "{listed}");
    // The shipped deploy file is this very output.
    let shipped = std::fs::read_to_string(root.join("deploy/nftables/dnsfence.nft")).unwrap();
    assert_eq!(
        shipped, rules,
        "deploy/nftables/dnsfence.nft is stale: regenerate it"
    );
}

#[test]
fn fence_start_fails_clearly_without_the_namespace() {
    let Some(_ns) = netns_or_skip("fence_start_fails_clearly_without_the_namespace") else {
        return;
    };
    run(async {
        let err = Server::builder()
            .networks("\"127.0.0.0/8\"")
            .config("[fence]\nenabled = true\nnetns = \"dnsfence-no-such-ns\"\n")
            .try_start()
            .await
            .err()
            .expect("start fails");
        let text = err.to_string();
        assert!(text.contains("dnsfence-no-such-ns"), "{text}");
        assert!(text.contains("ip netns add"), "{text}");
    });
}

#[test]
fn a_cache_hit_refreshes_the_elements_timeout() {
    let Some(ns) = netns_or_skip("a_cache_hit_refreshes_the_elements_timeout") else {
        return;
    };
    run(async {
        let f = start(&ns, "", "recheck_ms = 0\nresync_interval_ms = 60000", "").await;
        let c = f.client();
        let q = query(
            "enterpriseenrollment.manage.microsoft.com.",
            RecordType::A,
            Some(1232),
        );
        c.udp(&q).await;
        tokio::time::sleep(Duration::from_millis(2300)).await;
        let before = ns.elements("loopback_v4")[0].2.unwrap();
        assert!(before <= 358, "time passed: expires {before}");
        c.udp(&q).await;
        let after = ns.elements("loopback_v4")[0].2.unwrap();
        assert!(
            after >= 359,
            "refreshed to a full timeout: {before} -> {after}"
        );
        f.stop().await;
    });
}
