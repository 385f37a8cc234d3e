//! What dnsfence admits must be exactly the answer to the client's question: records the CNAME
//! chain does not prove are dropped (answer, cache and fence), and replies an off-path spoofer
//! could forge are not used.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::harness::{Authority, Server, ede, http_get, ips, rcode, run, sample, scrape};

/// An upstream that adds an unrelated A record and a CNAME owned by an unrelated name: neither
/// reaches the client, the cache or the firewall set, and both are counted.
#[test]
fn records_the_chain_does_not_prove_are_dropped_and_counted() {
    run(async {
        let f = Server::builder()
            .config("[fence]\nenabled = true\nbackend = \"list\"\n")
            .start()
            .await;
        let c = f.client();
        for _ in 0..2 {
            let a = c.ask("inject.manage.microsoft.com.", RecordType::A).await;
            assert_eq!(rcode(&a), ResponseCode::NoError);
            assert_eq!(
                ips(&a).0,
                [Ipv4Addr::new(192, 0, 2, 60)],
                "only the asked name's A"
            );
            assert!(
                a.answers.iter().all(|r| r
                    .name
                    .to_ascii()
                    .eq_ignore_ascii_case("inject.manage.microsoft.com.")),
                "{:?}",
                a.answers
            );
        }
        let fence = f.engine.fence.as_ref().unwrap();
        let admitted: Vec<String> = (0..fence.sets().len())
            .flat_map(|i| fence.elements(i))
            .map(|(ip, _, _)| ip.to_string())
            .collect();
        assert_eq!(
            admitted,
            ["192.0.2.60"],
            "the injected address is not admitted"
        );
        let (_, list) = http_get(f.http.unwrap(), "/v1/sets/loopback.txt").await;
        assert!(!list.contains("198.51.100.66"), "{list}");
        let s = scrape(&f).await;
        let dropped = |reason| {
            sample(
                &s,
                "dnsfence_upstream_records_dropped_total",
                &[("reason", reason)],
            )
        };
        assert_eq!(
            dropped("unrelated_owner"),
            Some(2.0),
            "once: the hit is the cached answer"
        );
        f.stop().await;
    });
}

/// What the spoofer saw: (source port, ID, question name as sent).
type Seen = Arc<Mutex<Vec<(u16, u16, String)>>>;

/// A spoofer in front of the real upstream: over UDP it answers every query itself, with a
/// forged A record and either the question's name in the wrong case or another name; over TCP
/// it relays to the real upstream.
async fn spoofer(real: SocketAddr, other_name: bool) -> (SocketAddr, Seen) {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, src)) = udp.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(query) = q.queries.first().cloned() else {
                continue;
            };
            let asked = query.name().to_ascii();
            log.lock()
                .unwrap()
                .push((src.port(), q.metadata.id, asked.clone()));
            let forged_name = if other_name {
                Name::from_ascii("evil.example.").unwrap()
            } else {
                // Every letter in the other case: never the case that was sent.
                let flipped: String = asked
                    .chars()
                    .map(|c| {
                        if c.is_ascii_lowercase() {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        }
                    })
                    .collect();
                Name::from_ascii(&flipped).unwrap()
            };
            let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
            r.metadata.recursion_desired = true;
            r.metadata.recursion_available = true;
            let mut fq = query.clone();
            fq.set_name(forged_name.clone());
            r.add_query(fq);
            r.add_answer(Record::from_rdata(
                forged_name,
                60,
                RData::A(A::new(198, 51, 100, 99)),
            ));
            let _ = udp.send_to(&r.to_vec().unwrap(), src).await;
        }
    });
    tokio::spawn(async move {
        while let Ok((mut client, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let Ok(mut upstream) = TcpStream::connect(real).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut ur, mut uw) = upstream.split();
                let _ = tokio::join!(
                    tokio::io::copy(&mut cr, &mut uw),
                    tokio::io::copy(&mut ur, &mut cw)
                );
            });
        }
    });
    (addr, seen)
}

async fn start_behind(spoof: SocketAddr, upstream: Authority) -> Server {
    Server::builder()
        .upstream(upstream)
        .forward_to(spoof)
        .config("[fence]\nenabled = true\nbackend = \"list\"")
        .start()
        .await
}

/// 0x20: a UDP reply whose question differs from the query only in case is not used — the query
/// is retried over TCP, which the spoofer cannot reach — and one for another name is ignored.
/// Allowed test names the upstream answers with an A record (some through a CNAME).
const WITH_A: [&str; 8] = [
    "manage.microsoft.com.",
    "enterpriseenrollment.manage.microsoft.com.",
    "fef.msua06.manage.microsoft.com.",
    "graph.microsoft.com.",
    "time.windows.com.",
    "cdn.manage.microsoft.com.",
    "edge.manage.microsoft.com.",
    "x.notify.windows.com.",
];

#[test]
fn spoofed_replies_are_not_used() {
    run(async {
        let upstream = Authority::start().await;
        let (spoof, seen) = spoofer(upstream.addr, false).await;
        let f = start_behind(spoof, upstream).await;
        let c = f.client();
        for name in WITH_A {
            let a = c.ask(name, RecordType::A).await;
            assert_eq!(rcode(&a), ResponseCode::NoError, "{name}");
            let (v4, _) = ips(&a);
            assert!(!v4.is_empty(), "{name}: the real answer, over TCP");
            assert!(
                !v4.contains(&Ipv4Addr::new(198, 51, 100, 99)),
                "{name}: forged A used"
            );
        }
        let fence = f.engine.fence.as_ref().unwrap();
        let admitted: HashSet<String> = (0..fence.sets().len())
            .flat_map(|i| fence.elements(i))
            .map(|(ip, _, _)| ip.to_string())
            .collect();
        assert!(!admitted.contains("198.51.100.99"), "{admitted:?}");
        let seen = seen.lock().unwrap().clone();
        assert!(
            !seen.is_empty(),
            "the spoofer answered over UDP first: {seen:?}"
        );
        f.stop().await;

        // A reply for another name is ignored outright: the query times out (SERVFAIL),
        // the forged record goes nowhere.
        let upstream = Authority::start().await;
        let (spoof, _) = spoofer(upstream.addr, true).await;
        let f = start_behind(spoof, upstream).await;
        let a = f.client().ask("manage.microsoft.com.", RecordType::A).await;
        assert_eq!(rcode(&a), ResponseCode::ServFail);
        assert_eq!(ede(&a).map(|e| e.0), Some(22));
        assert!(a.answers.is_empty());
        f.stop().await;
    });
}

/// What an off-path spoofer must guess: a random source port (the first queries each open one of
/// the pool's sockets, on a port the kernel picks at random), a random ID, and the name in random
/// case (0x20).
#[test]
fn upstream_queries_use_random_ports_ids_and_case() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        for name in WITH_A {
            c.ask(name, RecordType::A).await;
        }
        let wire: Vec<_> = f
            .upstream
            .seen
            .wire()
            .into_iter()
            .filter(|q| q.2 != ".")
            .collect();
        assert_eq!(wire.len(), WITH_A.len(), "{wire:?}");
        let ports: HashSet<u16> = wire.iter().map(|q| q.0).collect();
        let ids: HashSet<u16> = wire.iter().map(|q| q.1).collect();
        // Spread over the pool's 8 sockets (one of them also carried the start-up probe).
        assert!(
            ports.len() >= WITH_A.len() - 1,
            "the pool's sockets, each on its own port: {wire:?}"
        );
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let low: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
        assert!(
            ports.iter().all(|&p| p >= low),
            "ports the kernel picked from its ephemeral range: {ports:?}"
        );
        assert!(ids.len() >= WITH_A.len() - 1, "random IDs: {wire:?}");
        let mixed = wire
            .iter()
            .filter(|q| q.2.chars().any(|c| c.is_ascii_uppercase()))
            .count();
        assert!(
            mixed >= WITH_A.len() - 1,
            "0x20 case randomization: {wire:?}"
        );
        f.stop().await;
    });
}

fn element<'a>(sets: &'a serde_json::Value, addr: &str) -> Option<&'a serde_json::Value> {
    sets["views"][0]["sets"]
        .as_array()?
        .iter()
        .flat_map(|s| s["elements"].as_array().into_iter().flatten())
        .find(|e| e["addr"] == addr)
}

/// Every element remembers the answer that admitted it: the question name, the CNAME chain to the
/// address's owner, the endpoint set — on /v1/sets and in the allowed query-log line.
#[test]
fn elements_remember_the_chain_that_admitted_them() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.jsonl");
        let f = Server::builder().config(&format!(
            "[fence]\nenabled = true\nbackend = \"list\"\n[query_log]\nlevel = \"all\"\npath = \"{}\"\n",
            log.display()
        )).start()
        .await;
        let c = f.client();
        c.ask("manage.microsoft.com.", RecordType::A).await;
        c.ask("graph.microsoft.com.", RecordType::A).await;
        let (status, body) = http_get(f.http.unwrap(), "/v1/sets").await;
        assert_eq!(status, 200);
        let sets: serde_json::Value = serde_json::from_str(&body).unwrap();
        let e = element(&sets, "192.0.2.20").expect("the chain's address is admitted");
        assert_eq!(e["would_deny"], false);
        let by = &e["admitted_by"][0];
        assert_eq!(by["name"], "manage.microsoft.com");
        assert_eq!(
            by["chain"],
            serde_json::json!(["manage.trafficmanager.net"])
        );
        assert_eq!(by["endpoint_sets"], serde_json::json!(["163"]));
        let e = element(&sets, "192.0.2.30").unwrap();
        assert_eq!(e["admitted_by"][0]["chain"], serde_json::json!([]));
        let lines = crate::harness::log_lines(&log, 2).await;
        assert_eq!(
            lines[0]["chain"],
            serde_json::json!(["manage.trafficmanager.net"])
        );
        assert!(
            lines[1].get("chain").is_none(),
            "no chain, no field: {}",
            lines[1]
        );
        f.stop().await;
    });
}

/// `cname_targets = "allowlisted"`: a chain whose target is off the view's allowlist is denied
/// (EDE 15, reason cname_target), on a miss and on a hit, and nothing is admitted; a chain
/// that stays on the allowlist is answered.
#[test]
fn cname_targets_allowlisted_denies_chains_that_leave_the_allowlist() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.jsonl");
        let f = Server::builder().networks("\"127.0.0.0/8\"").view("cname_targets = \"allowlisted\"").config(&format!(
                "[fence]\nenabled = true\nbackend = \"list\"\n[query_log]\nlevel = \"all\"\npath = \"{}\"\n",
                log.display()
            )).start()
        .await;
        let c = f.client();
        for _ in 0..2 {
            let a = c.ask("manage.microsoft.com.", RecordType::A).await;
            assert_eq!(rcode(&a), ResponseCode::NXDomain);
            let (code, text) = ede(&a).unwrap();
            assert_eq!(code, 15);
            assert!(text.contains("CNAME"), "{text}");
            assert!(a.answers.is_empty());
        }
        // edge.manage.microsoft.com is under *.manage.microsoft.com: allowed.
        let a = c.ask("cdn.manage.microsoft.com.", RecordType::A).await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        assert_eq!(ips(&a).0, [Ipv4Addr::new(192, 0, 2, 50)]);
        let fence = f.engine.fence.as_ref().unwrap();
        let admitted: Vec<String> = (0..fence.sets().len())
            .flat_map(|i| fence.elements(i))
            .map(|(ip, _, _)| ip.to_string())
            .collect();
        assert_eq!(admitted, ["192.0.2.50"]);
        let lines = crate::harness::log_lines(&log, 3).await;
        assert_eq!(lines[0]["verdict"], "denied");
        assert_eq!(lines[0]["reason"], "cname_target");
        assert_eq!(lines[1]["reason"], "cname_target");
        let s = scrape(&f).await;
        assert_eq!(
            sample(
                &s,
                "dnsfence_denied_queries_total",
                &[("view", "loopback"), ("reason", "cname_target")]
            ),
            Some(2.0)
        );
        f.stop().await;
    });
}

/// A report-mode view admits the addresses of what it would deny, tagged would_deny, so that
/// turning on the ruleset breaks nothing while the admin learns.
#[test]
fn report_mode_admits_would_be_denials_tagged() {
    run(async {
        let f = Server::builder()
            .networks("\"127.0.0.0/8\"")
            .view("mode = \"report\"")
            .config("[fence]\nenabled = true\nbackend = \"list\"\n")
            .start()
            .await;
        let c = f.client();
        let a = c.ask("evilmanage.microsoft.com.", RecordType::A).await;
        assert_eq!(ips(&a).0, [Ipv4Addr::new(192, 0, 2, 66)]);
        c.ask("graph.microsoft.com.", RecordType::A).await;
        let (_, body) = http_get(f.http.unwrap(), "/v1/sets").await;
        let sets: serde_json::Value = serde_json::from_str(&body).unwrap();
        let e = element(&sets, "192.0.2.66").expect("admitted in report mode");
        assert_eq!(e["would_deny"], true);
        assert_eq!(e["admitted_by"][0]["would_deny"], true);
        assert_eq!(e["admitted_by"][0]["endpoint_sets"], serde_json::json!([]));
        assert_eq!(element(&sets, "192.0.2.30").unwrap()["would_deny"], false);
        let s = scrape(&f).await;
        assert_eq!(
            sample(
                &s,
                "dnsfence_fence_would_deny_elements",
                &[("view", "loopback"), ("set", "loopback_v4")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                "dnsfence_fence_elements",
                &[("view", "loopback"), ("set", "loopback_v4")]
            ),
            Some(2.0)
        );
        f.stop().await;
    });
}

/// A forger in front of the real upstream, on UDP only: for each query it relays to the real
/// upstream, then sends the client (dnsfence's socket) the real reply with the wrong ID, from
/// another port, from another address, and for another name — and only then the real reply
/// (after `delay`, past the query's deadline, when the name's first label is `late`).
async fn forger(real: SocketAddr) -> SocketAddr {
    let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = udp.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, client)) = udp.recv_from(&mut buf).await else {
                return;
            };
            let query = buf[..n].to_vec();
            let udp = udp.clone();
            tokio::spawn(async move {
                let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                relay.send_to(&query, real).await.unwrap();
                let mut b = vec![0u8; 4096];
                let Ok(Ok((n, _))) =
                    tokio::time::timeout(Duration::from_secs(2), relay.recv_from(&mut b)).await
                else {
                    return;
                };
                let real_reply = b[..n].to_vec();
                let mut wrong_id = real_reply.clone();
                wrong_id[0] ^= 0xff;
                let _ = udp.send_to(&wrong_id, client).await;
                let other_port = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let _ = other_port.send_to(&real_reply, client).await;
                let other_addr = UdpSocket::bind("127.0.0.2:0").await.unwrap();
                let _ = other_addr.send_to(&real_reply, client).await;
                let mut other_name = Message::from_vec(&real_reply).unwrap();
                let mut q = other_name.queries[0].clone();
                q.set_name(Name::from_ascii("evil.example.").unwrap());
                other_name.queries = vec![q];
                let _ = udp.send_to(&other_name.to_vec().unwrap(), client).await;
                let asked = Message::from_vec(&query).unwrap();
                if asked.queries[0]
                    .name()
                    .to_ascii()
                    .to_ascii_lowercase()
                    .starts_with("late.")
                {
                    tokio::time::sleep(Duration::from_millis(1200)).await;
                }
                let _ = udp.send_to(&real_reply, client).await;
            });
        }
    });
    addr
}

#[test]
fn forged_replies_are_dropped_and_counted_and_the_real_one_answered() {
    run(async {
        let upstream = Authority::start().await;
        let real = upstream.addr;
        let spoof = forger(real).await;
        let f = start_behind(spoof, upstream).await;
        let c = f.client();
        for name in WITH_A {
            let a = c.ask(name, RecordType::A).await;
            assert_eq!(rcode(&a), ResponseCode::NoError, "{name}");
            assert!(!ips(&a).0.is_empty(), "{name}: the real answer");
        }
        let server = spoof.to_string();
        let dropped = |s: &prometheus_parse::Scrape, reason: &str| {
            sample(
                s,
                "dnsfence_upstream_replies_dropped_total",
                &[("server", &server), ("reason", reason)],
            )
            .unwrap_or(0.0)
        };
        let s = scrape(&f).await;
        let asked = WITH_A.len() as f64;
        // Each forgery sent before the real reply of every query (some names take two
        // questions, through a CNAME into another zone).
        assert!(dropped(&s, "id") >= asked, "wrong ID");
        assert!(
            dropped(&s, "source") >= 2.0 * asked,
            "other port and address"
        );
        assert!(dropped(&s, "question") >= asked, "another name");
        assert_eq!(dropped(&s, "late"), 0.0);
        // A real reply after the deadline: SERVFAIL within it, the reply counted as late.
        let started = std::time::Instant::now();
        let a = c.ask("late.manage.microsoft.com.", RecordType::A).await;
        assert_eq!(rcode(&a), ResponseCode::ServFail);
        assert!(
            started.elapsed() < Duration::from_millis(1100),
            "within the deadline"
        );
        let late = crate::harness::eventually_async(Duration::from_secs(3), || async {
            dropped(&scrape(&f).await, "late") >= 1.0
        })
        .await;
        assert!(late, "the late reply is counted");
        f.stop().await;
    });
}

#[test]
fn the_pools_ports_rotate_and_a_burst_larger_than_the_pool_is_answered() {
    run(async {
        let f = Server::builder()
            .config("[upstream]\ntimeout_ms = 2000\nudp_sockets = 2\nudp_socket_queries = 3\n")
            .start()
            .await;
        let c = f.client();
        for n in 0..12u16 {
            let (name, _) = crate::harness::bulk_name(n);
            let a = c.ask(&name, RecordType::A).await;
            assert_eq!(rcode(&a), ResponseCode::NoError, "{name}");
        }
        let wire: Vec<_> = f
            .upstream
            .seen
            .wire()
            .into_iter()
            .filter(|q| q.2 != ".")
            .collect();
        let mut per_port: std::collections::HashMap<u16, usize> = Default::default();
        for q in &wire {
            *per_port.entry(q.0).or_default() += 1;
        }
        assert!(per_port.len() >= 4, "new ports as queries go: {per_port:?}");
        assert!(
            per_port.values().all(|&n| n <= 3),
            "at most udp_socket_queries a port: {per_port:?}"
        );
        // A burst of 300 distinct questions over 2 sockets: every one answered, sockets bounded
        // by the pool (and its rotations), not one per query.
        let opened_before = sample(
            &scrape(&f).await,
            "dnsfence_upstream_udp_sockets_opened_total",
            &[("server", &f.upstream.addr.to_string())],
        )
        .unwrap_or(0.0);
        let mut burst = tokio::task::JoinSet::new();
        for n in 1000..1300u16 {
            let c = crate::harness::Client { server: f.addr };
            burst.spawn(async move {
                let (name, ip) = crate::harness::bulk_name(n);
                let a = c.ask(&name, RecordType::A).await;
                (rcode(&a), ips(&a).0, ip)
            });
        }
        while let Some(r) = burst.join_next().await {
            let (code, got, want) = r.unwrap();
            assert_eq!(code, ResponseCode::NoError);
            assert_eq!(got, [want]);
        }
        let opened = sample(
            &scrape(&f).await,
            "dnsfence_upstream_udp_sockets_opened_total",
            &[("server", &f.upstream.addr.to_string())],
        )
        .unwrap_or(0.0)
            - opened_before;
        assert!(
            opened <= 300.0 / 3.0 + 2.0,
            "sockets rotate every 3 queries, never one per query: {opened}"
        );
        f.stop().await;
    });
}

#[test]
fn a_query_the_kernel_refuses_to_send_fails_at_once() {
    run(async {
        // Port 0: the kernel refuses the datagram (EINVAL) and no packet leaves. The queued
        // query is told so by the send queue and fails at once (SERVFAIL, the server counted as
        // failing), as a direct send did, not at the end of its 2 s deadline.
        let f = Server::builder()
            .config("[upstream]\nservers = [\"127.0.0.3:0\"]\ntimeout_ms = 2000\n")
            .start()
            .await;
        let c = f.client();
        for n in 0..3u16 {
            let (name, _) = crate::harness::bulk_name(n);
            let started = std::time::Instant::now();
            let a = c.ask(&name, RecordType::A).await;
            assert_eq!(rcode(&a), ResponseCode::ServFail, "{name}");
            assert!(
                started.elapsed() < Duration::from_millis(1000),
                "{name}: failed without waiting for the deadline ({:?})",
                started.elapsed()
            );
        }
        f.stop().await;
    });
}
