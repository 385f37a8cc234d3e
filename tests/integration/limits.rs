//! Bounded work: identical questions share a resolution, distinct ones are capped, and TCP and
//! HTTP connections are capped per client and in all, with limits on each connection's life.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{Server, ede, http_get, ips, query, rcode, run, sample, scrape};

/// 20 clients ask the same slow question at once: the upstream sees it once, every client gets
/// the answer.
#[test]
fn identical_questions_share_one_upstream_resolution() {
    run(async {
        let f = Server::builder().start().await;
        let name = "delay.manage.microsoft.com.";
        let mut asks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let c = f.client();
            asks.spawn(async move { c.ask(name, RecordType::A).await });
        }
        while let Some(a) = asks.join_next().await {
            let a = a.unwrap();
            assert_eq!(rcode(&a), ResponseCode::NoError);
            assert_eq!(
                ips(&a).0,
                ["192.0.2.70".parse::<std::net::Ipv4Addr>().unwrap()]
            );
        }
        assert_eq!(
            f.upstream.seen.count(name),
            1,
            "one upstream query for 20 clients"
        );
        let s = scrape(&f).await;
        assert_eq!(
            sample(&s, "dnsfence_upstream_coalesced_total", &[]),
            Some(19.0)
        );
        assert_eq!(sample(&s, "dnsfence_cache_misses_total", &[]), Some(20.0));
        f.stop().await;
    });
}

/// With max_inflight = 4, ten distinct questions to a silent upstream: four wait for the
/// deadline (EDE 22), six get SERVFAIL at once with EDE 14, and only four reach the upstream.
#[test]
fn distinct_resolutions_in_flight_are_capped() {
    run(async {
        let f = Server::builder()
            .config("[upstream]\ntimeout_ms = 700\nmax_inflight = 4\n")
            .start()
            .await;
        let mut asks = tokio::task::JoinSet::new();
        for i in 0..10 {
            let c = f.client();
            asks.spawn(async move {
                let t = Instant::now();
                let a = c
                    .ask(&format!("n{i}.slow.manage.microsoft.com."), RecordType::A)
                    .await;
                (a, t.elapsed())
            });
        }
        let (mut waited, mut refused) = (0, 0);
        while let Some(r) = asks.join_next().await {
            let (a, took) = r.unwrap();
            assert_eq!(rcode(&a), ResponseCode::ServFail);
            match ede(&a).map(|e| e.0) {
                Some(22) => waited += 1,
                Some(14) => {
                    refused += 1;
                    assert!(took < Duration::from_millis(300), "at once: {took:?}");
                }
                other => panic!("EDE {other:?}"),
            }
        }
        assert_eq!((waited, refused), (4, 6));
        // hickory may retransmit a query over UDP within the deadline: count names, not packets.
        let mut names: Vec<String> = f.upstream.seen.all().into_iter().map(|q| q.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 4, "{names:?}");
        let s = scrape(&f).await;
        assert_eq!(
            sample(&s, "dnsfence_overload_total", &[("limit", "inflight")]),
            Some(6.0)
        );
        // Once they are done, new questions are taken again.
        let a = f.client().ask("manage.microsoft.com.", RecordType::A).await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        f.stop().await;
    });
}

/// With max_waiting = 2, queries past the second waiting one get SERVFAIL/EDE 14 from the UDP
/// worker at once.
#[test]
fn queries_waiting_on_the_runtime_are_capped() {
    run(async {
        let f = Server::builder()
            .config("[server]\nlisten = [\"127.0.0.1:0\"]\nmax_waiting = 2\n")
            .start()
            .await;
        let mut asks = tokio::task::JoinSet::new();
        for i in 0..6 {
            let c = f.client();
            asks.spawn(async move {
                c.ask(&format!("w{i}.slow.manage.microsoft.com."), RecordType::A)
                    .await
            });
        }
        let mut codes = Vec::new();
        while let Some(r) = asks.join_next().await {
            codes.push(ede(&r.unwrap()).map(|e| e.0));
        }
        codes.sort();
        assert_eq!(
            codes,
            [Some(14), Some(14), Some(14), Some(14), Some(22), Some(22)]
        );
        let s = scrape(&f).await;
        assert_eq!(
            sample(&s, "dnsfence_overload_total", &[("limit", "waiting")]),
            Some(4.0)
        );
        f.stop().await;
    });
}

async fn connect_from(src: &str, to: std::net::SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// A connection dnsfence refused or closed: reading gives end of file (or a reset) promptly.
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// One query over an open connection; `None` if the connection is closed instead.
async fn ask_on(s: &mut TcpStream) -> Option<ResponseCode> {
    let q = query("manage.microsoft.com.", RecordType::A, Some(1232))
        .to_vec()
        .unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).await.ok()?;
    let len = tokio::time::timeout(Duration::from_secs(2), s.read_u16())
        .await
        .ok()?
        .ok()? as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await.ok()?;
    Some(
        hickory_proto::op::Message::from_vec(&buf)
            .ok()?
            .metadata
            .response_code,
    )
}

/// TCP: per-client and total caps refuse at once (counted), and UDP and HTTP keep answering.
#[test]
fn tcp_connections_are_capped_per_client_and_in_all() {
    run(async {
        let f = Server::builder().config("[server]\nlisten = [\"127.0.0.1:0\"]\ntcp_max_connections = 6\ntcp_max_connections_per_client = 4\n").start()
        .await;
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut s = connect_from("127.0.0.1", f.addr).await;
            assert_eq!(ask_on(&mut s).await, Some(ResponseCode::NoError));
            held.push(s);
        }
        let mut fifth = connect_from("127.0.0.1", f.addr).await;
        assert!(
            closed(&mut fifth).await,
            "a fifth from the same client is refused"
        );
        for _ in 0..2 {
            let mut s = connect_from("127.0.0.2", f.addr).await;
            assert_eq!(ask_on(&mut s).await, Some(ResponseCode::NoError));
            held.push(s);
        }
        let mut seventh = connect_from("127.0.0.3", f.addr).await;
        assert!(closed(&mut seventh).await, "past the total cap");
        // Everything else keeps working.
        let a = f.client().ask("manage.microsoft.com.", RecordType::A).await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        let s = scrape(&f).await;
        assert_eq!(
            sample(&s, "dnsfence_overload_total", &[("limit", "tcp_client")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&s, "dnsfence_overload_total", &[("limit", "tcp")]),
            Some(1.0)
        );
        // A closed connection gives its place back.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut again = connect_from("127.0.0.3", f.addr).await;
        assert_eq!(ask_on(&mut again).await, Some(ResponseCode::NoError));
        f.stop().await;
    });
}

/// A kept-alive connection ends after tcp_max_queries queries, and after tcp_max_lifetime_ms
/// however busy it is.
#[test]
fn tcp_connections_end_after_their_queries_or_lifetime() {
    run(async {
        let f = Server::builder().config("[server]\nlisten = [\"127.0.0.1:0\"]\ntcp_max_queries = 3\ntcp_max_lifetime_ms = 1500\n").start()
        .await;
        let mut s = connect_from("127.0.0.1", f.addr).await;
        for _ in 0..3 {
            assert_eq!(ask_on(&mut s).await, Some(ResponseCode::NoError));
        }
        assert_eq!(ask_on(&mut s).await, None, "closed after three queries");
        f.stop().await;
        let f = Server::builder()
            .config("[server]\nlisten = [\"127.0.0.1:0\"]\ntcp_max_lifetime_ms = 1500\n")
            .start()
            .await;
        let mut s = connect_from("127.0.0.1", f.addr).await;
        let t = Instant::now();
        let mut answered = 0;
        while ask_on(&mut s).await.is_some() {
            answered += 1;
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the connection must end"
            );
        }
        assert!((3..=4).contains(&answered), "{answered}");
        assert!(
            t.elapsed() >= Duration::from_millis(1400),
            "{:?}",
            t.elapsed()
        );
        f.stop().await;
    });
}

/// RFC 7766 §6.2.1.1: queries pipelined on one connection are answered concurrently, each reply
/// when it is ready: a cached answer behind an uncached one (its upstream slow) comes first.
#[test]
fn pipelined_tcp_queries_are_answered_as_they_are_ready() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        // manage.microsoft.com in the cache; delay.manage.microsoft.com's upstream takes 300 ms.
        c.ask("manage.microsoft.com.", RecordType::A).await;
        let slow = query("delay.manage.microsoft.com.", RecordType::A, Some(1232));
        let cached = query("manage.microsoft.com.", RecordType::A, Some(1232));
        let mut framed = Vec::new();
        for m in [&slow, &cached] {
            let bytes = m.to_vec().unwrap();
            framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            framed.extend_from_slice(&bytes);
        }
        let mut s = connect_from("127.0.0.1", f.addr).await;
        let sent = Instant::now();
        s.write_all(&framed).await.unwrap();
        let mut order = Vec::new();
        for _ in 0..2 {
            let read = async {
                let len = s.read_u16().await.unwrap() as usize;
                let mut buf = vec![0u8; len];
                s.read_exact(&mut buf).await.unwrap();
                buf
            };
            let buf = tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .unwrap();
            let m = hickory_proto::op::Message::from_vec(&buf).unwrap();
            assert_eq!(rcode(&m), ResponseCode::NoError);
            order.push((m.metadata.id, sent.elapsed()));
        }
        assert_eq!(
            order.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [cached.metadata.id, slow.metadata.id],
            "the cached answer first: {order:?}"
        );
        assert!(order[0].1 < Duration::from_millis(200), "{order:?}");
        assert!(order[1].1 >= Duration::from_millis(280), "{order:?}");
        f.stop().await;
    });
}

/// HTTP: at most max_connections at once (more are closed and counted), and error bodies never
/// echo what the client sent.
#[test]
fn http_connections_are_capped_and_bodies_do_not_echo() {
    run(async {
        let f = Server::builder().config("[http]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\n[fence]\nenabled = true\nbackend = \"list\"\n").start()
        .await;
        let http = f.http.unwrap();
        let (status, body) = http_get(http, "/v1/sets/<script>alert(1)</script>.txt").await;
        assert_eq!(status, 404);
        assert!(!body.contains("script"), "{body}");
        let (status, body) = http_get(http, "/v1/denied?view=<b>x</b>").await;
        assert_eq!(status, 404);
        assert!(!body.contains("<b>"), "{body}");
        // The two requests' places are given back when their tasks end, just after the client
        // reads EOF: under a loaded parallel run that can come after the next connect, which
        // then takes a place the idle ones were meant to hold.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Two idle connections hold both places; a third is closed at once.
        let idle1 = TcpStream::connect(http).await.unwrap();
        let idle2 = TcpStream::connect(http).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = TcpStream::connect(http).await.unwrap();
        assert!(closed(&mut third).await);
        drop((idle1, idle2));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = scrape(&f).await;
        assert!(sample(&s, "dnsfence_overload_total", &[("limit", "http")]) >= Some(1.0));
        f.stop().await;
    });
}

fn free_port() -> u16 {
    loop {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The overload of a stuck app or a scan: 15,000 queries a second for 20 s, each a new random
/// name under an allowed wildcard, while the upstream is black-holed. dnsfence (the real binary,
/// so its memory and descriptors are its own) stays under 128 MiB and its descriptor caps,
/// `/metrics` keeps answering, and a cached name keeps being answered.
#[test]
fn a_flood_of_random_allowed_names_with_a_dead_upstream_stays_bounded() {
    run_long(async {
        let upstream = crate::harness::Authority::start().await;
        let (port, http_port) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("dnsfence.toml");
        let text = crate::harness::config_text(
            upstream.addr,
            "\"127.0.0.0/8\"",
            "",
            &format!(
                "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
                 [upstream]\ntimeout_ms = 2000\ncache_size = 10000\n"
            ),
        );
        std::fs::write(&cfg, text).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dnsfence"))
            .args(["run", "-c"])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let server: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let http: std::net::SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
        let c = crate::harness::Client { server };
        let probe = query("manage.microsoft.com.", RecordType::A, Some(1232))
            .to_vec()
            .unwrap();
        let up = c
            .first_answer(&probe, 100, Duration::from_millis(100))
            .await;
        assert!(up.is_some(), "dnsfence answers");
        // Cached while the upstream still answers; then the upstream goes silent.
        assert_eq!(
            rcode(&c.ask("manage.microsoft.com.", RecordType::A).await),
            ResponseCode::NoError
        );
        upstream.set_silent(true);

        let flood = tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let drain = {
                let sock = std::sync::Arc::new(sock);
                let rx = sock.clone();
                let replies = tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    let mut n = 0u64;
                    while let Ok(Ok(_)) =
                        tokio::time::timeout(Duration::from_secs(3), rx.recv(&mut buf)).await
                    {
                        n += 1;
                    }
                    n
                });
                let start = Instant::now();
                let mut sent = 0u64;
                let mut x: u64 = 0x2545_f491_4f6c_dd1d;
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                while start.elapsed() < Duration::from_secs(20) {
                    tick.tick().await;
                    for _ in 0..150 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let name = format!("r{x:x}.manage.microsoft.com.");
                        let q = query(&name, RecordType::A, Some(1232)).to_vec().unwrap();
                        let _ = sock.send_to(&q, server).await;
                        sent += 1;
                    }
                }
                (sent, replies)
            };
            let (sent, replies) = drain;
            (sent, replies.await.unwrap())
        });

        let (mut max_rss, mut max_fds, mut checks) = (0u64, 0usize, 0);
        while !flood.is_finished() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            max_rss = max_rss.max(status_kib(pid, "VmRSS:"));
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
            max_fds = max_fds.max(fds);
            let a = c.ask("manage.microsoft.com.", RecordType::A).await;
            assert_eq!(
                rcode(&a),
                ResponseCode::NoError,
                "the cached name is answered"
            );
            let (status, _) =
                tokio::time::timeout(Duration::from_secs(3), http_get(http, "/metrics"))
                    .await
                    .expect("/metrics answers during the flood");
            assert_eq!(status, 200);
            checks += 1;
        }
        let (sent, replies) = flood.await.unwrap();
        let peak = status_kib(pid, "VmHWM:");
        eprintln!(
            "flood: {sent} queries sent, {replies} answered; peak RSS {} MiB, max {max_fds} descriptors, {checks} checks",
            peak / 1024
        );
        assert!(checks >= 15, "{checks}");
        // The generator asks for 15k queries a second; on two shared cores under a parallel
        // test run it reaches 11k-14k. 200k in 20 s (10k a second sustained) is still the flood
        // this test is about.
        assert!(sent >= 200_000, "the flood was a flood: {sent} queries");
        assert!(peak < 128 * 1024, "peak RSS {} KiB", peak);
        // A UDP flood opens no TCP or HTTP connections: the descriptors are the listeners, the
        // runtime's, the state files and the upstream's pool (`udp_sockets`, 8), not one per
        // query in flight (hickory's UDP client held up to 3 per resolution: 3,000 and more).
        assert!(max_fds < 64, "{max_fds} descriptors");
        assert!(
            replies > sent / 2,
            "most of the flood got an answer: {replies} of {sent}"
        );
        let _ = child.kill().await;
    });
}

/// Like `harness::run`, with room for a 20-second flood.
fn run_long<F: std::future::Future<Output = ()>>(body: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), body)
            .await
            .expect("the flood test finished within its time bound");
    });
}

/// Several upstreams: a silent first server costs one query a share of the deadline, then the
/// healthy one is asked first; each server has its own metrics and line in /readyz.
#[test]
fn a_dead_upstream_is_failed_over_within_the_deadline() {
    run(async {
        // Bound, never read: a server that swallows every query.
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        let f = Server::builder()
            .config(&format!(
                "[upstream]\nservers = [\"{dead_addr}\", \"UPSTREAM\"]\ntimeout_ms = 1000\n"
            ))
            .start()
            .await;
        let c = f.client();
        let t = Instant::now();
        let a = c.ask("manage.microsoft.com.", RecordType::A).await;
        assert_eq!(
            rcode(&a),
            ResponseCode::NoError,
            "answered by the second server"
        );
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let a = c.ask("graph.microsoft.com.", RecordType::A).await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "the healthy server first now: {:?}",
            t.elapsed()
        );
        let s = scrape(&f).await;
        let dead_label = dead_addr.to_string();
        let live_label = f.upstream.addr.to_string();
        assert!(
            sample(
                &s,
                "dnsfence_upstream_server_failures_total",
                &[("server", &dead_label)]
            ) >= Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                "dnsfence_upstream_server_answers_total",
                &[("server", &dead_label)]
            ),
            Some(0.0)
        );
        assert!(
            sample(
                &s,
                "dnsfence_upstream_server_answers_total",
                &[("server", &live_label)]
            ) >= Some(2.0)
        );
        assert_eq!(
            sample(
                &s,
                "dnsfence_upstream_server_up",
                &[("server", &live_label)]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                "dnsfence_upstream_server_up",
                &[("server", &dead_label)]
            ),
            Some(0.0)
        );
        let (status, body) = http_get(f.http.unwrap(), "/readyz").await;
        assert_eq!(status, 200, "one healthy upstream is enough: {body}");
        assert!(
            body.contains(&format!("upstream {dead_label}: down")),
            "{body}"
        );
        assert!(
            body.contains(&format!("upstream {live_label}: up")),
            "{body}"
        );
        drop(dead);
        f.stop().await;
    });
}
