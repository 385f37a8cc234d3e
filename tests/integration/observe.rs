//! Observability through real scrapes: metrics parsed with an exposition-format parser, health,
//! readiness, pull lists, the top denied names, and reload.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{Server, ede, eventually_async, http_get, query, rcode, run, sample, scrape};

#[test]
fn counters_move_by_exactly_the_queries_made() {
    run(async {
        // The loopback view is 127.0.0.1 only: 127.0.0.2 is in no view.
        let f = Server::builder().networks("\"127.0.0.1/32\"").start().await;
        let c = f.client();
        let before = scrape(&f).await;
        assert_eq!(
            sample(
                &before,
                "dnsfence_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            Some(1.0)
        );
        let q = |n: &str| query(n, RecordType::A, Some(1232));
        c.udp(&q("manage.microsoft.com.")).await;
        c.udp(&q("manage.microsoft.com.")).await; // cache hit
        c.udp(&q("enterpriseenrollment.manage.microsoft.com."))
            .await;
        c.udp(&q("evilmanage.microsoft.com.")).await;
        c.udp(&q("x.evilmanage.microsoft.com.")).await;
        c.ask("graph.microsoft.com.", RecordType::AAAA).await; // NODATA
        c.udp_from("127.0.0.2", &q("manage.microsoft.com.")).await;

        let s = scrape(&f).await;
        let v = |name: &str, labels: &[(&str, &str)]| sample(&s, name, labels).unwrap_or(0.0);
        let q_total = "dnsfence_queries_total";
        assert_eq!(
            v(
                q_total,
                &[("view", "loopback"), ("qtype", "A"), ("verdict", "allowed")]
            ),
            3.0
        );
        assert_eq!(
            v(
                q_total,
                &[
                    ("view", "loopback"),
                    ("qtype", "AAAA"),
                    ("verdict", "allowed")
                ]
            ),
            1.0
        );
        assert_eq!(
            v(
                q_total,
                &[("view", "loopback"), ("qtype", "A"), ("verdict", "denied")]
            ),
            2.0
        );
        assert_eq!(
            v(
                q_total,
                &[("view", "_none"), ("qtype", "A"), ("verdict", "refused")]
            ),
            1.0
        );
        let denied = "dnsfence_denied_queries_total";
        assert_eq!(
            v(
                denied,
                &[("view", "loopback"), ("reason", "not_allowlisted")]
            ),
            2.0
        );
        assert_eq!(v(denied, &[("view", "_none"), ("reason", "no_view")]), 1.0);
        assert_eq!(
            v(
                "dnsfence_denied_domains_total",
                &[("view", "loopback"), ("domain", "microsoft.com")]
            ),
            2.0,
            "registrable domain of both denied names"
        );
        let allowed = "dnsfence_allowed_queries_total";
        assert_eq!(
            v(allowed, &[("view", "loopback"), ("endpoint_set", "163")]),
            3.0
        );
        assert_eq!(
            v(allowed, &[("view", "loopback"), ("endpoint_set", "graph")]),
            1.0
        );
        assert_eq!(v("dnsfence_cache_hits_total", &[]), 1.0);
        assert_eq!(v("dnsfence_cache_misses_total", &[]), 3.0);
        assert_eq!(v("dnsfence_cache_entries", &[]), 3.0);
        assert_eq!(
            v("dnsfence_upstream_requests_total", &[("result", "answer")]),
            2.0
        );
        assert_eq!(
            v("dnsfence_upstream_requests_total", &[("result", "nodata")]),
            1.0
        );
        let hist = |verdict: &str| {
            s.samples
                .iter()
                .find(|x| {
                    x.metric == "dnsfence_response_duration_seconds"
                        && x.labels.get("verdict") == Some(verdict)
                })
                .map(|x| match &x.value {
                    prometheus_parse::Value::Histogram(buckets) => {
                        buckets.last().map_or(0.0, |b| b.count)
                    }
                    _ => f64::NAN,
                })
        };
        assert_eq!(hist("allowed"), Some(4.0));
        assert_eq!(hist("denied"), Some(2.0));
        assert_eq!(hist("refused"), Some(1.0));
        f.stop().await;
    });
}

#[test]
fn a_thousand_denied_domains_give_at_most_n_plus_one_labels() {
    run(async {
        let f = Server::builder()
            .config("[http]\nlisten = \"127.0.0.1:0\"\nmax_denied_domains = 50\n")
            .start()
            .await;
        let c = f.client();
        for i in 0..1000 {
            let a = c
                .udp(&query(
                    &format!("www.tracker{i}.com."),
                    RecordType::A,
                    Some(1232),
                ))
                .await;
            assert_eq!(rcode(&a), ResponseCode::NXDomain);
        }
        let s = scrape(&f).await;
        let labels: Vec<&str> = s
            .samples
            .iter()
            .filter(|x| {
                x.metric == "dnsfence_denied_domains_total"
                    && x.labels.get("view") == Some("loopback")
            })
            .filter_map(|x| x.labels.get("domain"))
            .collect();
        assert_eq!(labels.len(), 51, "50 domains and _other");
        assert!(labels.contains(&"_other"));
        let total: f64 = s
            .samples
            .iter()
            .filter(|x| x.metric == "dnsfence_denied_domains_total")
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v) => v,
                _ => 0.0,
            })
            .sum();
        assert_eq!(total, 1000.0, "every denial counted once");
        // The top denied exact names: bounded, and never metric labels.
        let (status, body) = http_get(f.http.unwrap(), "/v1/denied?view=loopback&limit=3").await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["denied"].as_array().unwrap().len(), 3);
        assert!(
            !scrape(&f)
                .await
                .samples
                .iter()
                .any(|x| x.labels.values().any(|l| l == "www.tracker0.com"))
        );
        f.stop().await;
    });
}

#[test]
fn top_denied_names_per_view() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        for _ in 0..5 {
            c.ask("Evil.Example.", RecordType::A).await;
        }
        for _ in 0..2 {
            c.ask("manage-microsoft.com.", RecordType::AAAA).await;
        }
        c.ask("manage.microsoft.com.", RecordType::A).await;
        let (status, body) = http_get(f.http.unwrap(), "/v1/denied?view=loopback").await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["denied"],
            serde_json::json!([
                {"name": "evil.example", "count": 5},
                {"name": "manage-microsoft.com", "count": 2}
            ])
        );
        assert_eq!(
            http_get(f.http.unwrap(), "/v1/denied?view=nope").await.0,
            404
        );
        assert_eq!(http_get(f.http.unwrap(), "/v1/denied").await.0, 400);
        f.stop().await;
    });
}

#[test]
fn pull_list_holds_exactly_the_live_elements_and_static_ranges() {
    run(async {
        // The list backend keeps the ledger without kernel sets: no root needed.
        let f = Server::builder()
            .config(concat!(
                "[fence]\nenabled = true\nbackend = \"list\"\n",
                "min_ttl_secs = 1\nmax_ttl_secs = 3600\ngrace_secs = 0\n",
            ))
            .start()
            .await;
        let c = f.client();
        c.ask("manage.microsoft.com.", RecordType::A).await;
        c.ask("fef.msua06.manage.microsoft.com.", RecordType::AAAA)
            .await;
        c.ask("graph.microsoft.com.", RecordType::HTTPS).await;
        c.ask("evilmanage.microsoft.com.", RecordType::A).await;
        let statics: Vec<String> = {
            let policy = f.engine.policy.load();
            let view = policy.view("loopback").unwrap();
            let mut nets: Vec<ipnet::IpNet> = view
                .sets
                .iter()
                .flat_map(|&i| policy.catalog.sets[i as usize].networks.clone())
                .collect();
            nets.sort();
            nets.dedup();
            nets.iter().map(|n| n.to_string()).collect()
        };
        // ID 163's subnets: 84 IPv4 (with the Azure Front Door ranges) and 3 IPv6 ones, and the
        // consolidated list's one more; ID 56's (Entra ID sign-in): 4 IPv4 and 12 IPv6.
        assert_eq!(statics.len(), 91 + 16);
        let v6_statics: Vec<&String> = statics.iter().filter(|n| n.contains(':')).collect();
        assert_eq!(v6_statics.len(), 3 + 12);
        let (status, body) = http_get(f.http.unwrap(), "/v1/sets/loopback.txt").await;
        assert_eq!(status, 200);
        let mut want = vec!["192.0.2.20".to_string(), "192.0.2.31".to_string()];
        want.extend(["2001:db8::11".to_string(), "2001:db8::31".to_string()]);
        want.extend(statics.iter().cloned());
        assert_eq!(body.lines().collect::<Vec<_>>(), want);
        let (_, v6) = http_get(f.http.unwrap(), "/v1/sets/loopback.txt?family=6").await;
        let mut want6 = vec!["2001:db8::11", "2001:db8::31"];
        want6.extend(v6_statics.iter().map(|s| s.as_str()));
        assert_eq!(v6.lines().collect::<Vec<_>>(), want6);
        let (_, v4) = http_get(f.http.unwrap(), "/v1/sets/loopback.txt?family=4").await;
        assert_eq!(v4.lines().count(), 2 + statics.len() - v6_statics.len());
        assert_eq!(http_get(f.http.unwrap(), "/v1/sets/nope.txt").await.0, 404);
        assert_eq!(
            http_get(f.http.unwrap(), "/v1/sets/loopback.txt?family=5")
                .await
                .0,
            400
        );

        // The JSON view explains each element.
        let (status, json) = http_get(f.http.unwrap(), "/v1/sets").await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let sets = v["views"][0]["sets"].as_array().unwrap();
        let e = sets[0]["elements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["addr"] == "192.0.2.20")
            .unwrap();
        assert_eq!(e["names"], serde_json::json!(["manage.microsoft.com"]));
        assert_eq!(e["endpoint_sets"], serde_json::json!(["163"]));
        assert!(e["expires_in_secs"].as_u64().unwrap() <= 300);

        // Elements leave the list when they expire: TTL 60 here, so check the gauge instead of
        // waiting; the scrape reports the live count per set.
        let s = scrape(&f).await;
        assert_eq!(
            sample(
                &s,
                "dnsfence_fence_elements",
                &[("view", "loopback"), ("set", "loopback_v4")]
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(&s, "dnsfence_fence_admits_total", &[("result", "ok")]),
            Some(3.0)
        );
        f.stop().await;
    });
}

#[test]
fn readyz_follows_the_upstream() {
    run(async {
        let f = Server::builder().config("").start().await;
        let http = f.http.unwrap();
        assert_eq!(http_get(http, "/healthz").await.0, 200);
        // The probe runs at start-up; the test config's upstream deadline is 700 ms.
        assert!(
            eventually_async(Duration::from_secs(5), || async {
                http_get(http, "/readyz").await.0 == 200
            })
            .await
        );
        f.upstream.set_silent(true);
        // A client query times out: the upstream is no longer ready.
        let a = f
            .client()
            .udp(&query(
                "enterpriseenrollment.manage.microsoft.com.",
                RecordType::A,
                Some(1232),
            ))
            .await;
        assert_eq!(rcode(&a), ResponseCode::ServFail);
        let (status, body) = http_get(http, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("upstream"), "{body}");
        f.upstream.set_silent(false);
        assert!(
            eventually_async(Duration::from_secs(8), || async {
                http_get(http, "/readyz").await.0 == 200
            })
            .await,
            "ready again once the upstream answers"
        );
        let s = scrape(&f).await;
        assert_eq!(
            sample(
                &s,
                "dnsfence_upstream_requests_total",
                &[("result", "timeout")]
            ),
            Some(1.0)
        );
        f.stop().await;
    });
}

#[test]
fn sighup_reload_swaps_the_policy_or_keeps_the_old_one() {
    run(async {
        let upstream = crate::harness::Authority::start().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnsfence.toml");
        let text = crate::harness::config_text(upstream.addr, "\"127.0.0.0/8\"", "", "");
        std::fs::write(&path, &text).unwrap();
        let config = dnsfence::config::Config::load(&path).unwrap();
        let f = Server::from_config(config, upstream).await.unwrap();
        let c = f.client();
        let remote = query("remotehelp.microsoft.com.", RecordType::A, Some(1232));
        // Denied: EDE 15 (once allowed, the test upstream's NXDOMAIN for it carries none).
        let blocked = |m: &hickory_proto::op::Message| ede(m).map(|e| e.0) == Some(15);
        assert!(blocked(&c.udp(&remote).await));

        // Add the remote-help profile and reload.
        std::fs::write(
            &path,
            text.replace("\"win32-apps\"]", "\"win32-apps\", \"remote-help\"]"),
        )
        .unwrap();
        f.signals
            .send(dnsfence::daemon::signal::Signal::Reload)
            .unwrap();
        let allowed = eventually_async(Duration::from_secs(3), || async {
            !blocked(&c.udp(&remote).await)
        })
        .await;
        assert!(allowed, "the new policy serves");
        // A broken file: the reload fails and the last good policy keeps serving.
        std::fs::write(&path, "this is not toml = = =").unwrap();
        f.signals
            .send(dnsfence::daemon::signal::Signal::Reload)
            .unwrap();
        let failed = eventually_async(Duration::from_secs(3), || async {
            let s = scrape(&f).await;
            sample(&s, "dnsfence_config_reloads_total", &[("result", "error")]) == Some(1.0)
        })
        .await;
        assert!(failed);
        assert!(!blocked(&c.udp(&remote).await), "still the reloaded policy");
        let s = scrape(&f).await;
        assert_eq!(
            sample(&s, "dnsfence_config_reloads_total", &[("result", "ok")]),
            Some(1.0)
        );
        f.stop().await;
    });
}

#[test]
fn udp_floods_are_rate_limited_per_client_and_counted() {
    run(async {
        let f = Server::builder()
            .config(
                "[server]\nlisten = [\"127.0.0.1:0\"]\nrate_limit_qps = 5\nrate_limit_burst = 5\n",
            )
            .start()
            .await;
        let c = f.client();
        let q = query("evil.example.", RecordType::A, Some(1232))
            .to_vec()
            .unwrap();
        // 20 queries at once from one socket: the burst of 5 is answered, the rest dropped.
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for _ in 0..20 {
            sock.send_to(&q, f.addr).await.unwrap();
        }
        let mut answered = 0;
        let mut buf = [0u8; 1500];
        while tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf))
            .await
            .is_ok()
        {
            answered += 1;
        }
        assert_eq!(answered, 5);
        // Another client has its own bucket.
        let other = c
            .udp_raw_from("127.0.0.9", &q, Duration::from_secs(2))
            .await;
        assert!(other.is_some());
        let s = scrape(&f).await;
        let limited = sample(
            &s,
            "dnsfence_denied_queries_total",
            &[("view", "loopback"), ("reason", "rate_limited")],
        );
        assert_eq!(limited, Some((20 - answered) as f64));
        f.stop().await;
    });
}

/// `dnsfence suggest` turns what a report-mode view would deny into a ranked proposal, from the
/// query log and from the running instance's /v1/denied alike.
#[test]
fn suggest_proposes_zone_blocks_from_the_log_and_the_running_instance() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.jsonl");
        let f = Server::builder()
            .networks("\"127.0.0.0/8\"")
            .view("mode = \"report\"")
            .config(&format!(
                "[query_log]\nlevel = \"denied\"\npath = \"{}\"\n",
                log.display()
            ))
            .start()
            .await;
        let c = f.client();
        for (src, name) in [
            ("127.0.0.1", "evilmanage.microsoft.com."),
            ("127.0.0.2", "evilmanage.microsoft.com."),
            ("127.0.0.3", "manage-microsoft.com."),
        ] {
            c.udp_from(src, &query(name, RecordType::A, Some(1232)))
                .await;
        }
        crate::harness::log_lines(&log, 3).await;
        // A config naming the running instance's HTTP address and the same view.
        let cfg = dir.path().join("dnsfence.toml");
        let text = crate::harness::config_text(
            f.upstream.addr,
            "\"127.0.0.0/8\"",
            "",
            &format!("[http]\nlisten = \"{}\"\n", f.http.unwrap()),
        );
        std::fs::write(&cfg, text).unwrap();
        let run_suggest = |args: Vec<String>| async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dnsfence"))
                .args(&args)
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let cfg = cfg.display().to_string();
        let from_log = run_suggest(vec![
            "suggest".into(),
            "-c".into(),
            cfg.clone(),
            "--view".into(),
            "loopback".into(),
            "--log".into(),
            log.display().to_string(),
        ])
        .await;
        assert!(
            from_log.contains("2 registrable domains, 2 names"),
            "{from_log}"
        );
        assert!(
            from_log.contains(
                "#    1  microsoft.com                                   2      1        2"
            ),
            "{from_log}"
        );
        assert!(
            from_log.contains("id = \"local-microsoft-com\""),
            "{from_log}"
        );
        assert!(
            from_log.contains("  \"evilmanage.microsoft.com\","),
            "{from_log}"
        );
        let sets = dnsfence::catalog::zones::parse_file(
            std::path::Path::new("suggested.toml"),
            &from_log,
            &mut Vec::new(),
        )
        .expect("the proposal is a valid zone file");
        assert_eq!(sets.len(), 2);
        let from_http = run_suggest(vec!["suggest".into(), "-c".into(), cfg]).await;
        assert!(from_http.contains("microsoft.com"), "{from_http}");
        assert!(from_http.contains("manage-microsoft.com"), "{from_http}");
        assert!(from_http.contains("from http://"), "{from_http}");
        f.stop().await;
    });
}
