//! Allowed names: resolution, CNAME chains, caching, negative answers, failures, report mode.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::harness::{Server, answer_types, ede, ips, log_lines, query, rcode, run};

#[test]
fn allowed_exact_wildcard_deep_case_and_trailing_dot() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        // Exact name from set 163.
        let a = c
            .udp(&query(
                "enterpriseenrollment.manage.microsoft.com.",
                RecordType::A,
                Some(1232),
            ))
            .await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        assert_eq!(
            ips(&a).0,
            ["192.0.2.10".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert!(a.metadata.recursion_available);
        assert_eq!(ede(&a), None);
        // Two labels below *.manage.microsoft.com, in mixed case: allowed; the question keeps the
        // client's case.
        let a = c
            .udp(&query(
                "FEF.Msua06.MANAGE.microsoft.COM.",
                RecordType::AAAA,
                Some(1232),
            ))
            .await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        assert_eq!(
            ips(&a).1,
            ["2001:db8::11".parse::<std::net::Ipv6Addr>().unwrap()]
        );
        assert_eq!(
            a.queries[0].name().to_string(),
            "FEF.Msua06.MANAGE.microsoft.COM."
        );
        f.stop().await;
    });
}

#[test]
fn cname_chain_is_returned_whole() {
    run(async {
        let f = Server::builder().start().await;
        let a = f
            .client()
            .udp(&query("manage.microsoft.com.", RecordType::A, Some(1232)))
            .await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        assert_eq!(
            answer_types(&a),
            [
                ("manage.microsoft.com.".to_string(), RecordType::CNAME),
                ("manage.trafficmanager.net.".to_string(), RecordType::A),
            ]
        );
        match &a.answers[0].data {
            RData::CNAME(target) => assert_eq!(target.0.to_string(), "manage.trafficmanager.net."),
            other => panic!("expected CNAME, got {other:?}"),
        }
        assert_eq!(
            ips(&a).0,
            ["192.0.2.20".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        // The same chain's addresses are what the firewall will admit.
        let addrs: Vec<String> = dnsfence::resolve::answer::addresses(&a.answers)
            .iter()
            .map(|x| x.ip.to_string())
            .collect();
        assert_eq!(addrs, ["192.0.2.20"]);
        f.stop().await;
    });
}

#[test]
fn https_hints_are_answer_addresses() {
    run(async {
        let f = Server::builder().start().await;
        let a = f
            .client()
            .udp(&query(
                "graph.microsoft.com.",
                RecordType::HTTPS,
                Some(1232),
            ))
            .await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        assert_eq!(
            answer_types(&a),
            [("graph.microsoft.com.".into(), RecordType::HTTPS)]
        );
        let addrs: Vec<String> = dnsfence::resolve::answer::addresses(&a.answers)
            .iter()
            .map(|x| x.ip.to_string())
            .collect();
        assert_eq!(addrs, ["192.0.2.31", "2001:db8::31"]);
        f.stop().await;
    });
}

#[test]
fn cache_hit_does_not_reach_the_upstream_and_ttl_counts_down() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        let name = "enterpriseenrollment.manage.microsoft.com.";
        let first = c.ask(name, RecordType::A).await;
        assert_eq!(f.upstream.seen.count_type(name, RecordType::A), 1);
        // A second later on the cache's clock, without waiting for it.
        f.engine.clock.advance(Duration::from_millis(1100));
        let second = c.tcp(&query(name, RecordType::A, Some(1232))).await;
        assert_eq!(ips(&first), ips(&second));
        assert_eq!(
            f.upstream.seen.count_type(name, RecordType::A),
            1,
            "the second answer must come from the cache"
        );
        let (t1, t2) = (first.answers[0].ttl, second.answers[0].ttl);
        assert!(
            t1 <= 120 && t2 < t1,
            "TTL counts down in the cache: {t1} then {t2}"
        );
        f.stop().await;
    });
}

#[test]
fn nxdomain_and_nodata_carry_the_soa_and_are_cached() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        let missing = "missing.manage.microsoft.com.";
        for _ in 0..2 {
            let a = c.ask(missing, RecordType::A).await;
            assert_eq!(rcode(&a), ResponseCode::NXDomain);
            assert!(a.answers.is_empty());
            assert_eq!(a.authorities.len(), 1, "{a:?}");
            assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
            assert_eq!(a.authorities[0].name.to_string(), "microsoft.com.");
        }
        assert_eq!(
            f.upstream.seen.count(missing),
            1,
            "negative answers are cached"
        );

        let nodata = "enterpriseenrollment.manage.microsoft.com.";
        for _ in 0..2 {
            let a = c.ask(nodata, RecordType::AAAA).await;
            assert_eq!(rcode(&a), ResponseCode::NoError);
            assert!(a.answers.is_empty());
            assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
        }
        assert_eq!(f.upstream.seen.count_type(nodata, RecordType::AAAA), 1);
        f.stop().await;
    });
}

#[test]
fn upstream_that_never_answers_gives_servfail_within_the_deadline() {
    run(async {
        // The test config's deadline is 700 ms.
        let f = Server::builder().start().await;
        let started = Instant::now();
        let a = f
            .client()
            .udp(&query(
                "x.slow.manage.microsoft.com.",
                RecordType::A,
                Some(1232),
            ))
            .await;
        let took = started.elapsed();
        assert_eq!(rcode(&a), ResponseCode::ServFail);
        assert_eq!(
            ede(&a).map(|e| e.0),
            Some(22),
            "EDE 22 No Reachable Authority"
        );
        assert!(
            took >= Duration::from_millis(650),
            "answered before the deadline: {took:?}"
        );
        assert!(took < Duration::from_millis(2000), "SERVFAIL took {took:?}");
        assert!(f.upstream.seen.count("x.slow.manage.microsoft.com.") >= 1);
        f.stop().await;
    });
}

#[test]
fn report_mode_answers_denied_names_and_says_so() {
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
        let a = f
            .client()
            .udp(&query(
                "evilmanage.microsoft.com.",
                RecordType::A,
                Some(1232),
            ))
            .await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        assert_eq!(
            ips(&a).0,
            ["192.0.2.66".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert_eq!(ede(&a), None);
        assert_eq!(f.upstream.seen.count("evilmanage.microsoft.com."), 1);
        // An allowed name is not logged at level "denied"; the would-be denial is.
        let ok = f
            .client()
            .udp(&query("manage.microsoft.com.", RecordType::A, Some(1232)))
            .await;
        assert_eq!(rcode(&ok), ResponseCode::NoError);
        let lines = log_lines(&log, 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let lines_after = log_lines(&log, 1).await;
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines_after.len(), 1, "{lines_after:?}");
        let l = &lines[0];
        assert_eq!(l["verdict"], "would_deny");
        assert_eq!(l["reason"], "not_allowlisted");
        assert_eq!(l["view"], "loopback");
        assert_eq!(l["name"], "evilmanage.microsoft.com.");
        assert_eq!(l["type"], "A");
        assert_eq!(l["rcode"], "NOERROR");
        f.stop().await;
    });
}

#[test]
fn udp_cache_hits_keep_the_clients_id_case_flags_and_edns() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        let name = "fef.msua06.manage.microsoft.com.";
        let first = c.ask(name, RecordType::AAAA).await;
        // Served from the packet cache: another id (the client checks it), other case, CD set.
        let mut q = query(
            "FEF.msua06.MANAGE.microsoft.com.",
            RecordType::AAAA,
            Some(1232),
        );
        q.metadata.checking_disabled = true;
        q.edns.as_mut().unwrap().set_dnssec_ok(true);
        let dnssec_hit = c.udp(&q).await;
        let mut q = query(
            "FEF.msua06.MANAGE.microsoft.com.",
            RecordType::AAAA,
            Some(1232),
        );
        q.metadata.checking_disabled = true;
        // A second later on the cache's clock, without waiting for it.
        f.engine.clock.advance(Duration::from_millis(1100));
        let hit = c.udp(&q).await;
        assert_eq!(f.upstream.seen.count_type(name, RecordType::AAAA), 1);
        assert_eq!(ips(&hit), ips(&first));
        assert_eq!(
            hit.queries[0].name().to_string(),
            "FEF.msua06.MANAGE.microsoft.com."
        );
        assert!(hit.metadata.checking_disabled && hit.metadata.recursion_desired);
        assert!(
            hit.answers[0].ttl < first.answers[0].ttl,
            "TTL counts down on a hit"
        );
        assert!(!hit.edns.as_ref().unwrap().flags().dnssec_ok);
        assert!(
            dnssec_hit.edns.as_ref().unwrap().flags().dnssec_ok,
            "DO echoed"
        );
        // Without EDNS: no OPT in the answer.
        let plain = c.udp(&query(name, RecordType::AAAA, None)).await;
        assert!(plain.edns.is_none());
        assert_eq!(ips(&plain), ips(&first));
        assert_eq!(f.engine.metrics.cache_hits.get(), 3);
        f.stop().await;
    });
}
