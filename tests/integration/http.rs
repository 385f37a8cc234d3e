//! The HTTP endpoints under hostile clients: slow heads, idle connections, many addresses. The
//! scrapers that matter (loopback, `[http] trusted`) keep being answered; what is refused or cut
//! is counted.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::harness::{Server, run, sample, scrape};

/// A TCP connection to `to` from the source address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from, 0))?;
    s.connect(to).await
}

/// One scrape of `/metrics` from `from` on a fresh connection: whether a 200 came back in time.
async fn scraped(from: IpAddr, to: SocketAddr) -> bool {
    let exchange = async {
        let mut s = connect_from(from, to).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(out.starts_with(b"HTTP/1.1 200") && out.windows(14).any(|w| w == b"dnsfence_build"))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[test]
fn slow_and_idle_clients_from_one_address_do_not_shut_out_a_loopback_scraper() {
    run(async {
        let f = Server::builder()
            .config("[http]\nlisten = \"127.0.0.1:0\"\nrequest_timeout_ms = 1500\n")
            .start()
            .await;
        let http = f.http.unwrap();
        let attacker: IpAddr = "127.0.0.2".parse().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let connects = Arc::new(AtomicUsize::new(0));
        // 70 slowloris clients: a byte of a head every 400 ms, reconnecting when dropped.
        let mut tasks = Vec::new();
        for _ in 0..70 {
            let (stop, connects) = (stop.clone(), connects.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = connect_from(attacker, http).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    connects.fetch_add(1, Ordering::Relaxed);
                    for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n".iter().cycle() {
                        if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(400)).await;
                    }
                }
            }));
        }
        // And 1,000 idle connections from the same address, held open.
        let mut idle = Vec::new();
        for _ in 0..1000 {
            if let Ok(s) = connect_from(attacker, http).await {
                idle.push(s);
            }
        }
        // The loopback scraper, every 200 ms for 8 s: every scrape answered.
        let started = Instant::now();
        let (mut asked, mut answered) = (0, 0);
        while started.elapsed() < Duration::from_secs(8) {
            asked += 1;
            if scraped("127.0.0.1".parse().unwrap(), http).await {
                answered += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        drop(idle);
        assert_eq!(answered, asked, "every scrape answered");
        assert!(asked >= 30, "{asked} scrapes");
        assert!(
            connects.load(Ordering::Relaxed) > 70,
            "the slow clients were cut and came back"
        );
        let s = scrape(&f).await;
        let refused = |limit| sample(&s, "dnsfence_overload_total", &[("limit", limit)]);
        assert!(
            refused("http_client") >= Some(900.0),
            "{:?}",
            refused("http_client")
        );
        assert!(
            refused("http_head_timeout") >= Some(8.0),
            "{:?}",
            refused("http_head_timeout")
        );
        f.stop().await;
    });
}

#[test]
fn kept_alive_connections_carry_several_requests_and_close_when_idle() {
    run(async {
        let f = Server::builder().config("[http]\nlisten = \"127.0.0.1:0\"\nidle_timeout_ms = 500\nrequest_timeout_ms = 1000\n").start()
        .await;
        let http = f.http.unwrap();
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        // Two requests in one write (pipelined), then a third after the answers.
        s.write_all(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got
            .windows(12)
            .filter(|w| *w == b"HTTP/1.1 200" || *w == b"HTTP/1.1 503")
            .count()
            < 2
        {
            let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                .await
                .expect("answers on the kept connection")
                .unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        assert_eq!(text.matches("Connection: keep-alive").count(), 2, "{text}");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        let rest = String::from_utf8_lossy(&rest).into_owned();
        assert!(
            rest.starts_with("HTTP/1.1 200") && rest.contains("Connection: close"),
            "{rest}"
        );
        // An idle kept-alive connection is closed after idle_timeout_ms, not counted as a refusal.
        let mut idle = tokio::net::TcpStream::connect(http).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let opened = Instant::now();
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), idle.read_to_end(&mut all))
            .await
            .expect("closed when idle")
            .unwrap();
        assert!(
            opened.elapsed() >= Duration::from_millis(450),
            "{:?}",
            opened.elapsed()
        );
        let s = scrape(&f).await;
        assert_eq!(
            sample(
                &s,
                "dnsfence_overload_total",
                &[("limit", "http_head_timeout")]
            ),
            None
        );
        f.stop().await;
    });
}

/// Runs `f` on a thread that has entered network namespace `ns` (sockets it makes stay there).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    let path = std::path::Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns(2) on a namespace descriptor; it changes only this thread's namespace.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
    .join()
    .unwrap()
}

/// A blocking scrape of `to` from `from` (inside whatever namespace the thread is in).
fn scrape_blocking(from: IpAddr, to: SocketAddr) -> bool {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if s.bind(&SocketAddr::new(from, 0).into()).is_err()
        || s.connect_timeout(&to.into(), Duration::from_secs(1))
            .is_err()
    {
        return false;
    }
    let mut s: std::net::TcpStream = s.into();
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.starts_with(b"HTTP/1.1 200")
}

#[test]
fn many_addresses_cannot_take_the_share_kept_for_trusted_scrapers() {
    let Some(ns) = crate::harness::netns_or_skip(
        "many_addresses_cannot_take_the_share_kept_for_trusted_scrapers",
    ) else {
        return;
    };
    // A LAN inside the namespace: the server on 10.77.0.1, 40 client addresses, and the
    // configured Prometheus server (10.77.0.200).
    // (On the namespace's lo: the addresses are not loopback ones, which is what counts.)
    let mut cmds = vec![
        "ip link set lo up".to_string(),
        "ip addr add 10.77.0.1/24 dev lo".to_string(),
        "ip addr add 10.77.0.200/24 dev lo".to_string(),
    ];
    for i in 2..42 {
        cmds.push(format!("ip addr add 10.77.0.{i}/24 dev lo"));
    }
    for c in &cmds {
        let mut args = vec!["netns", "exec", ns.name.as_str()];
        args.extend(c.split_whitespace());
        assert!(
            std::process::Command::new("ip")
                .args(&args)
                .status()
                .unwrap()
                .success(),
            "{c}"
        );
    }
    run(async {
        // The real HTTP server on a listener made inside the namespace, in front of a running
        // dnsfence's engine.
        let f = Server::builder().config("").start().await;
        let listener = in_netns(&ns.name, || {
            let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
            l.set_nonblocking(true).unwrap();
            l
        });
        let port = listener.local_addr().unwrap().port();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            format!(
                "[upstream]\nservers = [\"127.0.0.1:9\"]\n[zones]\ndirs = [\"{}\"]\n\
                 [http]\nmax_connections = 64\nreserved_connections = 16\n\
                 trusted = [\"10.77.0.200/32\"]\nrequest_timeout_ms = 30000\n\
                 [[view]]\nname = \"v\"\nnetworks = [\"10.0.0.0/8\"]\nprofiles = [\"intune-core\"]\n",
                crate::harness::zones_dir().display()
            ),
        )
        .unwrap();
        let http = dnsfence::config::Config::load(&cfg).unwrap().http;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(dnsfence::net::http::serve(
            listener,
            f.engine.clone(),
            f.status.clone(),
            http,
            async {
                let _ = stop_rx.await;
            },
        ));
        let server_addr: SocketAddr = format!("10.77.0.1:{port}").parse().unwrap();
        let ns_name = ns.name.clone();
        let (held, loopback, prometheus, stranger) = tokio::task::spawn_blocking(move || {
            in_netns(&ns_name, move || {
                // 40 addresses, 8 idle connections each: they fill the 48 general slots.
                let mut held = Vec::new();
                for i in 2..42 {
                    let from: IpAddr = format!("10.77.0.{i}").parse().unwrap();
                    for _ in 0..8 {
                        let s = socket2::Socket::new(
                            socket2::Domain::IPV4,
                            socket2::Type::STREAM,
                            None,
                        )
                        .unwrap();
                        s.bind(&SocketAddr::new(from, 0).into()).unwrap();
                        if s.connect(&server_addr.into()).is_ok() {
                            held.push(s);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
                let loopback = (0..5).all(|_| {
                    scrape_blocking(
                        "127.0.0.1".parse().unwrap(),
                        format!("127.0.0.1:{port}").parse().unwrap(),
                    )
                });
                let prometheus =
                    (0..5).all(|_| scrape_blocking("10.77.0.200".parse().unwrap(), server_addr));
                let stranger = scrape_blocking("10.77.0.41".parse().unwrap(), server_addr);
                (held.len(), loopback, prometheus, stranger)
            })
        })
        .await
        .unwrap();
        assert_eq!(held, 320, "every connect is accepted by the kernel");
        assert!(loopback, "a loopback scraper is answered");
        assert!(prometheus, "the trusted Prometheus server is answered");
        assert!(!stranger, "another client finds the general share full");
        let s = scrape(&f).await;
        let refused = |limit| sample(&s, "dnsfence_overload_total", &[("limit", limit)]);
        // 320 held: 48 taken, the rest refused (at most 8 per address fit before the share was
        // full, so most are "http").
        assert!(refused("http") >= Some(250.0), "{:?}", refused("http"));
        let _ = stop_tx.send(());
        let _ = server.await;
        f.stop().await;
    });
}
