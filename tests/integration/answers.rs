//! Right answers, byte for byte where it matters: CNAME chains into NODATA and NXDOMAIN, truncation
//! without EDNS, compression and case, the OPT we advertise, malformed OPT, meta query types, and
//! IPv4/IPv6 listeners.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::{Client, Server, answer_types, ede, query, rcode, run};

/// NODATA and NXDOMAIN reached through a CNAME keep the chain, with the SOA in authority
/// (RFC 2308 §2.1–2.2), on a miss and on a hit, over UDP and TCP; and nothing more is asked of
/// the upstream than the client's question when its answer is final.
#[test]
fn negative_answers_through_a_cname_keep_the_chain() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        let alias = "cdn.manage.microsoft.com.";
        for qtype in [RecordType::TXT, RecordType::HTTPS, RecordType::MX] {
            for over_tcp in [false, true, false] {
                let q = query(alias, qtype, Some(1232));
                let a = if over_tcp {
                    c.tcp(&q).await
                } else {
                    c.udp(&q).await
                };
                assert_eq!(rcode(&a), ResponseCode::NoError, "{qtype}");
                assert_eq!(
                    answer_types(&a),
                    [(alias.to_string(), RecordType::CNAME)],
                    "{qtype}: the CNAME stays"
                );
                assert_eq!(a.authorities.len(), 1, "{qtype}");
                assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
                assert_eq!(a.authorities[0].name.to_string(), "microsoft.com.");
            }
            assert_eq!(f.upstream.seen.count_type(alias, qtype), 1, "cached");
            assert_eq!(
                f.upstream
                    .seen
                    .count_type("edge.manage.microsoft.com.", qtype),
                0,
                "the upstream's NODATA is final: the target is not asked with {qtype}"
            );
        }
        let gone = "gone.manage.microsoft.com.";
        for over_tcp in [false, true, false] {
            let q = query(gone, RecordType::A, Some(1232));
            let a = if over_tcp {
                c.tcp(&q).await
            } else {
                c.udp(&q).await
            };
            assert_eq!(rcode(&a), ResponseCode::NXDomain);
            assert_eq!(answer_types(&a), [(gone.to_string(), RecordType::CNAME)]);
            assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
        }
        assert_eq!(f.upstream.seen.count(gone), 1);
        assert_eq!(
            f.upstream
                .seen
                .count("missing-target.manage.microsoft.com."),
            0
        );
        f.stop().await;
    });
}

/// A CNAME into another zone of an authority-style upstream (only the CNAME comes back, no
/// SOA) is followed, as a recursive resolver would: the answer carries the whole chain.
#[test]
fn a_dangling_chain_is_followed_to_its_end() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        let name = "tm.manage.microsoft.com.";
        let a = c.ask(name, RecordType::A).await;
        assert_eq!(
            answer_types(&a),
            [
                (name.to_string(), RecordType::CNAME),
                ("tm.trafficmanager.net.".to_string(), RecordType::A),
            ]
        );
        let a = c.ask(name, RecordType::TXT).await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        assert_eq!(answer_types(&a), [(name.to_string(), RecordType::CNAME)]);
        assert_eq!(a.authorities[0].name.to_string(), "trafficmanager.net.");
        // A recursive upstream's whole chain needs no follow-up.
        c.ask("manage.microsoft.com.", RecordType::A).await;
        assert_eq!(f.upstream.seen.count("manage.trafficmanager.net."), 0);
        f.stop().await;
    });
}

/// `kdig +noedns … TXT` on a large answer: TC, the header and the question, nothing else.
#[test]
fn truncation_without_edns_is_header_and_question_only() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        let q = query("big.manage.microsoft.com.", RecordType::A, None)
            .to_vec()
            .unwrap();
        for _ in 0..2 {
            let raw = c.udp_raw(&q, Duration::from_secs(5)).await.unwrap();
            assert_eq!(raw.len(), q.len(), "header and question: {raw:?}");
            assert_eq!(&raw[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
            assert_eq!(raw[2] & 0x02, 0x02, "TC");
            assert_eq!(&raw[12..], &q[12..], "the question as asked");
            Message::from_vec(&raw).expect("well formed");
        }
        // With EDNS 512: header, question and OPT.
        let q = query("huge.manage.microsoft.com.", RecordType::A, Some(512))
            .to_vec()
            .unwrap();
        let raw = c.udp_raw(&q, Duration::from_secs(5)).await.unwrap();
        let m = Message::from_vec(&raw).unwrap();
        assert!(m.metadata.truncation && m.answers.is_empty() && m.edns.is_some());
        // Over 1232 bytes: truncated even for a client advertising 4096; TCP has it all.
        let m = c
            .udp(&query(
                "huge.manage.microsoft.com.",
                RecordType::A,
                Some(4096),
            ))
            .await;
        assert!(m.metadata.truncation);
        let m = c
            .tcp(&query(
                "huge.manage.microsoft.com.",
                RecordType::A,
                Some(4096),
            ))
            .await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 100);
        f.stop().await;
    });
}

/// The first owner name is a pointer to the question, so it echoes the client's case (0x20
/// randomization survives); the OPT advertises dnsfence's max_udp_payload whatever the client's.
#[test]
fn owners_compress_against_the_question_and_the_opt_is_ours() {
    run(async {
        let f = Server::builder()
            .config("[server]\nlisten = [\"127.0.0.1:0\"]\nmax_udp_payload = 1400\n")
            .start()
            .await;
        let c = f.client();
        for (name, edns) in [
            ("mAnAgE.MiCrOsOfT.cOm.", Some(4096)),
            ("EnterpriseEnrollment.Manage.Microsoft.COM.", Some(600)),
            ("eViL.eXaMpLe.", Some(1232)),
        ] {
            for over_tcp in [false, false, true] {
                let q = query(name, RecordType::A, edns).to_vec().unwrap();
                let raw = if over_tcp {
                    c.tcp_raw(&q).await
                } else {
                    c.udp_raw(&q, Duration::from_secs(5)).await.unwrap()
                };
                let qe = q.len() - 11; // the query's OPT is 11 bytes
                assert_eq!(&raw[12..qe], &q[12..qe], "question echoed as asked");
                let m = Message::from_vec(&raw).unwrap();
                if !m.answers.is_empty() {
                    assert_eq!(&raw[qe..qe + 2], &[0xc0, 0x0c], "first owner → question");
                    assert_eq!(m.answers[0].name.to_ascii(), name);
                }
                assert_eq!(m.edns.unwrap().max_payload(), 1400, "{name} {edns:?}");
            }
        }
        f.stop().await;
    });
}

/// An OPT whose option runs past its data, or two OPTs: FORMERR on UDP and TCP alike.
#[test]
fn a_malformed_opt_is_formerr_on_every_transport() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        let good = query("manage.microsoft.com.", RecordType::A, Some(1232))
            .to_vec()
            .unwrap();
        // An option claiming 9 bytes with 3 there.
        let mut overrun = good.clone();
        overrun.truncate(overrun.len() - 2);
        overrun.extend_from_slice(&7u16.to_be_bytes());
        overrun.extend_from_slice(&[0, 10, 0, 9, 1, 2, 3]);
        // Two OPTs.
        let mut twice = good.clone();
        twice.extend_from_slice(&good[good.len() - 11..]);
        twice[11] = 2;
        for bad in [overrun, twice] {
            let udp = c.udp_raw(&bad, Duration::from_secs(5)).await.unwrap();
            let tcp = c.tcp_raw(&bad).await;
            for raw in [&udp, &tcp] {
                let m = Message::from_vec(raw).unwrap();
                assert_eq!(rcode(&m), ResponseCode::FormErr);
            }
            assert_eq!(udp, tcp, "the same bytes over both");
        }
        assert_eq!(f.upstream.seen.all(), vec![]);
        f.stop().await;
    });
}

/// OPT, TSIG, TKEY and the other meta types as query types are answered locally (FORMERR; the
/// obsolete MAILA/MAILB NOTIMP) and never forwarded.
#[test]
fn meta_query_types_are_never_forwarded() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        for (t, want) in [
            (41u16, ResponseCode::FormErr),
            (249, ResponseCode::FormErr),
            (250, ResponseCode::FormErr),
            (128, ResponseCode::FormErr),
            (200, ResponseCode::FormErr),
            (253, ResponseCode::NotImp),
            (254, ResponseCode::NotImp),
        ] {
            let q = query("manage.microsoft.com.", RecordType::from(t), Some(1232));
            let a = c.udp(&q).await;
            assert_eq!(rcode(&a), want, "type {t}");
            assert_eq!(ede(&a).map(|e| e.0), Some(21), "type {t}");
            assert_eq!(rcode(&c.tcp(&q).await), want, "type {t} over TCP");
        }
        assert_eq!(f.upstream.seen.all(), vec![], "none was forwarded");
        f.stop().await;
    });
}

fn free_port() -> u16 {
    // Free on both families and both transports, as far as a probe can tell.
    loop {
        let port = std::net::UdpSocket::bind("[::]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let free = std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::TcpListener::bind(("::", port)).is_ok()
            && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok();
        if free {
            return port;
        }
    }
}

async fn both_families_answer(port: u16) {
    for server in [
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
    ] {
        let src = if server.is_ipv4() { "127.0.0.1" } else { "::1" };
        let c = Client { server };
        let q = query("manage.microsoft.com.", RecordType::A, Some(1232));
        let a = c.udp_from(src, &q).await;
        assert_eq!(rcode(&a), ResponseCode::NoError, "udp to {server}");
        let a = c.tcp(&q).await;
        assert_eq!(rcode(&a), ResponseCode::NoError, "tcp to {server}");
        let a = c
            .udp_from(src, &query("evil.example.", RecordType::A, Some(1232)))
            .await;
        assert_eq!(rcode(&a), ResponseCode::NXDomain, "denial to {server}");
        assert_eq!(ede(&a).map(|e| e.0), Some(15));
    }
}

/// `[::]` alone serves IPv4 and IPv6 clients on UDP and TCP; `0.0.0.0` and `[::]` on the same
/// port both bind (then `[::]` is IPv6-only). One rule, both transports.
#[test]
fn ipv6_wildcard_alone_or_beside_ipv4() {
    run(async {
        let networks = "\"127.0.0.0/8\", \"::1/128\"";
        let port = free_port();
        let f = Server::builder()
            .networks(networks)
            .config(&format!("[server]\nlisten = [\"[::]:{port}\"]\n"))
            .start()
            .await;
        both_families_answer(port).await;
        f.stop().await;

        let port = free_port();
        let f = Server::builder()
            .networks(networks)
            .config(&format!(
                "[server]\nlisten = [\"0.0.0.0:{port}\", \"[::]:{port}\"]\n"
            ))
            .start()
            .await;
        both_families_answer(port).await;
        f.stop().await;
    });
}
