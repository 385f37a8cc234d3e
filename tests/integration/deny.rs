//! Denied names and clients: deny answers, extended errors, and nothing forwarded.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::harness::{Server, ede, log_lines, query, rcode, run};

/// Names that look like allowlisted ones but are not, and names outside the view's profiles.
const TRAPS: &[&str] = &[
    "evilmanage.microsoft.com.",
    "manage.microsoft.com.evil.example.",
    "x.manage.microsoft.com.evil.example.",
    "manage-microsoft.com.",
    "microsoft.com.",
    "com.",
    ".",
    "sparkcdn.evil.azureedge.net.",
    "xswda01-mscdn.azureedge.net.",
    // Exists in the catalog, but only in profiles this view does not select.
    "gcc.remotehelp.microsoft.com.",
    "remotehelp.microsoft.com.",
    "www.example.com.",
];

#[test]
fn every_trap_is_denied_with_a_cacheable_nxdomain_and_ede_15_and_never_forwarded() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        for name in TRAPS {
            for qtype in [RecordType::A, RecordType::AAAA, RecordType::HTTPS] {
                let a = c.udp(&query(name, qtype, Some(1232))).await;
                assert_eq!(rcode(&a), ResponseCode::NXDomain, "{name} {qtype}");
                let (code, text) = ede(&a).unwrap_or_else(|| panic!("{name}: no EDE"));
                assert_eq!(code, 15, "{name}: EDE 15 Blocked");
                assert!(text.contains("allowlist"), "{text}");
                assert!(a.answers.is_empty());
                // A synthesized SOA, so that stub caches cache the denial (RFC 2308): owned by
                // an ancestor of the name, TTL and MINIMUM the default deny_ttl_secs.
                assert_eq!(a.authorities.len(), 1, "{name}");
                let soa = &a.authorities[0];
                assert_eq!(soa.ttl, 60);
                let RData::SOA(data) = &soa.data else {
                    panic!("{name}: {soa:?}")
                };
                assert_eq!(data.minimum, 60);
                let owner = soa.name.to_ascii().to_lowercase();
                assert!(
                    name.to_lowercase().ends_with(&format!(".{owner}")) || owner == ".",
                    "{name}: SOA owner {owner} is an ancestor"
                );
            }
            // TCP gets the same answer.
            let a = c.tcp(&query(name, RecordType::A, Some(1232))).await;
            assert_eq!(rcode(&a), ResponseCode::NXDomain, "{name} over TCP");
        }
        assert_eq!(
            f.upstream.seen.all(),
            vec![],
            "denied names must never reach the upstream"
        );
        f.stop().await;
    });
}

#[test]
fn deny_rcode_is_chosen_per_view_and_longest_prefix_wins() {
    run(async {
        // 127.0.0.0/8 → "loopback" (REFUSED); 127.0.0.2/32 → "musl" (NXDOMAIN).
        let f = Server::builder()
            .networks("\"127.0.0.0/8\"")
            .view("deny_rcode = \"refused\"")
            .config(
                r#"
[[view]]
name = "musl"
networks = ["127.0.0.2/32"]
profiles = ["apple"]
deny_rcode = "nxdomain"
"#,
            )
            .start()
            .await;
        let c = f.client();
        let q = query("evilmanage.microsoft.com.", RecordType::A, Some(1232));
        let a = c.udp_from("127.0.0.1", &q).await;
        assert_eq!(rcode(&a), ResponseCode::Refused);
        assert_eq!(ede(&a).map(|e| e.0), Some(15));
        let a = c.udp_from("127.0.0.2", &q).await;
        assert_eq!(rcode(&a), ResponseCode::NXDomain);
        assert_eq!(ede(&a).map(|e| e.0), Some(15));
        // The "musl" view allows Apple names but not Intune's; the loopback view the reverse.
        let apple = query("itunes.apple.com.", RecordType::A, Some(1232));
        let a = c
            .udp_from(
                "127.0.0.2",
                &query("manage.microsoft.com.", RecordType::A, Some(1232)),
            )
            .await;
        assert_eq!(rcode(&a), ResponseCode::NXDomain);
        let a = c.udp_from("127.0.0.2", &apple).await;
        assert_ne!(
            ede(&a).map(|e| e.0),
            Some(15),
            "apple is allowed in the musl view"
        );
        assert_eq!(f.upstream.seen.count("evilmanage.microsoft.com."), 0);
        assert_eq!(f.upstream.seen.count("manage.microsoft.com."), 0);
        f.stop().await;
    });
}

#[test]
fn client_in_no_view_is_refused_with_ede_18() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.jsonl");
        let f = Server::builder()
            .networks("\"127.0.0.2/32\"")
            .config(&format!(
                "[query_log]\nlevel = \"denied\"\npath = \"{}\"\n",
                log.display()
            ))
            .start()
            .await;
        let c = f.client();
        // Even an allowlisted name: this client belongs to no view.
        let a = c
            .udp_from(
                "127.0.0.1",
                &query("manage.microsoft.com.", RecordType::A, Some(1232)),
            )
            .await;
        assert_eq!(rcode(&a), ResponseCode::Refused);
        let (code, _) = ede(&a).expect("EDE present");
        assert_eq!(code, 18, "EDE 18 Prohibited");
        let a = c
            .tcp(&query("manage.microsoft.com.", RecordType::A, Some(1232)))
            .await;
        assert_eq!(rcode(&a), ResponseCode::Refused);
        assert_eq!(ede(&a).map(|e| e.0), Some(18));
        assert_eq!(
            f.upstream.seen.all(),
            vec![],
            "nothing forwarded for clients in no view"
        );
        let lines = log_lines(&log, 2).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["verdict"], "refused");
        assert_eq!(lines[0]["reason"], "no_view");
        assert_eq!(lines[0]["client"], "127.0.0.1");
        assert_eq!(lines[0]["rcode"], "REFUSED");
        assert!(lines[0].get("view").is_none());
        assert_eq!(lines[1]["protocol"], "tcp");
        f.stop().await;
    });
}

#[test]
fn denied_query_log_line_has_every_field() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.jsonl");
        let f = Server::builder()
            .config(&format!(
                "[query_log]\nlevel = \"all\"\npath = \"{}\"\n",
                log.display()
            ))
            .start()
            .await;
        let c = f.client();
        c.ask("Evil.Example.", RecordType::AAAA).await;
        c.ask("manage.microsoft.com.", RecordType::A).await;
        c.ask("manage.microsoft.com.", RecordType::A).await;
        let lines = log_lines(&log, 3).await;
        assert_eq!(lines.len(), 3, "{lines:?}");
        let d = &lines[0];
        assert_eq!(d["verdict"], "denied");
        assert_eq!(d["reason"], "not_allowlisted");
        assert_eq!(d["name"], "Evil.Example.");
        assert_eq!(d["type"], "AAAA");
        assert_eq!(d["view"], "loopback");
        assert_eq!(d["rcode"], "NXDOMAIN");
        assert_eq!(d["cache_hit"], false);
        assert!(d["time"].as_str().unwrap().ends_with('Z'));
        assert!(d["duration_us"].as_u64().is_some());
        let (miss, hit) = (&lines[1], &lines[2]);
        assert_eq!(miss["verdict"], "allowed");
        assert_eq!(miss["endpoint_set"], "163");
        assert_eq!(miss["cache_hit"], false);
        assert_eq!(hit["cache_hit"], true);
        assert_eq!(hit["rcode"], "NOERROR");
        f.stop().await;
    });
}
