//! Peer sync between a gateway pair: two real dnsfence binaries in two network namespaces the
//! test creates, joined by a veth and syncing over it with test-made certificates, each with
//! its own Unbound upstream and its own nftables sets.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::harness::{Netns, netns_or_skip, query, start_unbound};

const A_ADDR: &str = "10.201.0.1";
const B_ADDR: &str = "10.201.0.2";
const SYNC_PORT: u16 = 8853;

/// Runs `f` on a thread inside the namespace (setns(2) changes only that thread's).
fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns(2) on a valid namespace descriptor, for this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        f()
    })
    .join()
    .unwrap()
}

/// One UDP query to 127.0.0.1:5353 in the namespace, from `src`; the answer, if any in 2 s.
fn ask(ns: &Netns, src: &'static str, name: &str) -> Option<Message> {
    let bytes = query(name, RecordType::A, Some(1232)).to_vec().unwrap();
    in_ns(ns, move || {
        let sock = UdpSocket::bind((src, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        sock.send_to(&bytes, "127.0.0.1:5353").unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).ok()?;
        Message::from_vec(&buf[..n]).ok()
    })
}

/// A GET of the namespace's dnsfence HTTP endpoint; the body, or "" when nothing listens.
fn get(ns: &Netns, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    in_ns(ns, move || {
        let Ok(mut s) = TcpStream::connect("127.0.0.1:9153") else {
            return String::new();
        };
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    })
}

/// A sample of the namespace's dnsfence metrics.
fn metric(ns: &Netns, series: &str) -> f64 {
    get(ns, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// The CA and the gateways' certificates (see [`crate::harness::signed_certificates`]); the
/// test checked that openssl is here.
fn certificates(dir: &Path, ca: &str, names: &[(&str, &str)]) {
    assert!(crate::harness::signed_certificates(dir, ca, names));
}

/// The config of gateway `me` (a or b) syncing with `peer`; gateway A also has a view `lab`
/// that B does not, and a longer `max_ttl_secs`.
fn config(dir: &Path, me: &str, my_addr: &str, peer: &str, peer_addr: &str) -> PathBuf {
    let (lab, max_ttl) = if me == "a" {
        (
            "[[view]]\nname = \"lab\"\nnetworks = [\"127.0.0.3/32\"]\nprofiles = [\"intune-core\"]\n",
            7200,
        )
    } else {
        ("", 1000)
    };
    let zones = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:5353\"]\n\
         [zones]\ndir = \"{zones}\"\n\
         [upstream]\nservers = [\"127.0.0.2:53\"]\ntimeout_ms = 2000\n\
         [query_log]\nlevel = \"none\"\n\
         [http]\nlisten = \"127.0.0.1:9153\"\n\
         [fence]\nenabled = true\nresync_interval_ms = 300\nmin_ttl_secs = 300\nmax_ttl_secs = {max_ttl}\ngrace_secs = 60\n\
         [sync]\nlisten = \"{my_addr}:{SYNC_PORT}\"\nca_file = \"{d}/ca.pem\"\ncert_file = \"{d}/gw-{me}.pem\"\nkey_file = \"{d}/gw-{me}.key\"\n\
         [[sync.peer]]\nname = \"gw-{peer}.test\"\naddress = \"{peer_addr}:{SYNC_PORT}\"\n\
         [[view]]\nname = \"kiosk\"\nnetworks = [\"127.0.0.0/8\"]\nprofiles = [\"intune-core\"]\n{lab}",
        zones = zones.display(),
        d = dir.display(),
    );
    let path = dir.join(format!("gw-{me}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(ns: &Netns, cfg: &Path, log: &Path) -> tokio::process::Child {
    ns.exec(env!("CARGO_BIN_EXE_dnsfence"))
        .args(["run", "-c"])
        .arg(cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn addrs(ns: &Netns, set: &str) -> Vec<(String, Option<u64>)> {
    ns.elements(set)
        .into_iter()
        .map(|(v, t, _)| (v, t))
        .collect()
}

fn has(ns: &Netns, set: &str, ip: &str) -> bool {
    addrs(ns, set).iter().any(|(v, _)| v == ip)
}

/// A TLS client to B's sync listener from inside B's namespace, with `cert` (the CA and the
/// file stem in `dir`) or none; it sends a hello and reads. The listener's verdict shows in its
/// metrics.
fn probe(ns: &Netns, dir: &Path, cert: Option<(&str, &str)>) {
    let dir = dir.to_path_buf();
    let cert = cert.map(|(ca, c)| (ca.to_string(), c.to_string()));
    in_ns(ns, move || {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match &cert {
            Some((_, c)) => {
                let chain: Vec<CertificateDer> =
                    CertificateDer::pem_file_iter(dir.join(format!("{c}.pem")))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                let key = PrivateKeyDer::from_pem_file(dir.join(format!("{c}.key"))).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from("gw-b.test").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut tcp = TcpStream::connect((B_ADDR, SYNC_PORT)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        // The hello; the server refuses either during the handshake or after it.
        let _ = tls.write_all(b"dnsfsync\x00\x01");
        let mut buf = [0u8; 16];
        let _ = tls.read(&mut buf);
    });
}

#[test]
fn a_gateway_pair_shares_its_admissions() {
    const TEST: &str = "a_gateway_pair_shares_its_admissions";
    for tool in ["/usr/sbin/unbound", "/usr/bin/openssl"] {
        if !Path::new(tool).exists() {
            crate::harness::skip(TEST, &format!("{tool} is not installed"));
            return;
        }
    }
    let Some(na) = netns_or_skip(TEST) else {
        return;
    };
    let Some(nb) = netns_or_skip(TEST) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(
        d,
        "ca",
        &[
            ("gw-a", "gw-a.test"),
            ("gw-b", "gw-b.test"),
            ("intruder", "intruder.test"),
        ],
    );
    certificates(d, "other-ca", &[("other", "gw-a.test")]);
    // The veth between them: A 10.201.0.1, B 10.201.0.2.
    let veth = format!("dfp{}", std::process::id() % 100_000);
    let ip = crate::harness::ip;
    ip(&[
        "link",
        "add",
        &format!("{veth}a"),
        "netns",
        &na.name,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{veth}b"),
        "netns",
        &nb.name,
    ]);
    for (ns, end, addr) in [(&na, "a", A_ADDR), (&nb, "b", B_ADDR)] {
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &format!("{veth}{end}"),
        ]);
        ip(&["-n", &ns.name, "link", "set", &format!("{veth}{end}"), "up"]);
    }
    let records = [
        "manage.microsoft.com. 300 A 192.0.2.10".to_string(),
        "graph.microsoft.com. 300 A 192.0.2.30".to_string(),
        "fef.msua06.manage.microsoft.com. 5000 A 192.0.2.77".to_string(),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(90), async {
            let da = d.join("a");
            let db = d.join("b");
            std::fs::create_dir(&da).unwrap();
            std::fs::create_dir(&db).unwrap();
            let _ua = start_unbound(&na, &da, "127.0.0.2", &records).await;
            let _ub = start_unbound(&nb, &db, "127.0.0.2", &records).await;
            let cfg_a = config(d, "a", A_ADDR, "b", B_ADDR);
            let cfg_b = config(d, "b", B_ADDR, "a", A_ADDR);
            let _a = spawn(&na, &cfg_a, &d.join("a.log"));
            let mut b = spawn(&nb, &cfg_b, &d.join("b.log"));
            let logs = || {
                format!(
                    "A: {}\nB: {}",
                    std::fs::read_to_string(d.join("a.log")).unwrap_or_default(),
                    std::fs::read_to_string(d.join("b.log")).unwrap_or_default()
                )
            };
            let linked = |ns: &Netns, peer: &str| {
                get(ns, "/readyz").contains(&format!("sync peer {peer} "))
                    && get(ns, "/readyz").contains(": up")
            };
            assert!(
                until(Duration::from_secs(15), || linked(&na, "gw-b.test")
                    && linked(&nb, "gw-a.test")),
                "both links up: {}",
                logs()
            );

            // An answer from A: its address is in B's kernel set within 1 s.
            let a = ask(&na, "127.0.0.1", "manage.microsoft.com.").expect("A answers");
            assert_eq!(a.metadata.response_code, ResponseCode::NoError);
            let t = Instant::now();
            assert!(
                until(Duration::from_secs(1), || has(
                    &nb,
                    "kiosk_v4",
                    "192.0.2.10"
                )),
                "in B's set within 1 s: {:?}\n{}",
                addrs(&nb, "kiosk_v4"),
                logs()
            );
            eprintln!("A's answer in B's kernel set after {:?}", t.elapsed());
            let sets = get(&nb, "/v1/sets");
            let v: serde_json::Value = serde_json::from_str(&sets).unwrap();
            let e = v["views"][0]["sets"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["elements"].as_array().into_iter().flatten())
                .find(|e| e["addr"] == "192.0.2.10")
                .cloned()
                .expect("listed on B");
            assert_eq!(e["provenance"], "peer:gw-a.test", "{e}");
            assert_eq!(e["admitted_by"][0]["name"], "manage.microsoft.com", "{e}");
            // Never sent back: A's own element stays A's.
            assert!(metric(&nb, "dnsfence_sync_elements_sent_total{peer=\"gw-a.test\"}") == 0.0);

            // A view B does not have: refused there and counted. An expiry past B's
            // max_ttl_secs + grace: clamped and counted.
            ask(&na, "127.0.0.3", "graph.microsoft.com.").expect("A answers lab");
            ask(&na, "127.0.0.1", "fef.msua06.manage.microsoft.com.").expect("A answers");
            assert!(
                until(Duration::from_secs(2), || {
                    metric(&nb, "dnsfence_sync_refused_total{reason=\"unknown_view\"}") >= 1.0
                        && metric(&nb, "dnsfence_sync_refused_total{reason=\"clamped\"}") >= 1.0
                        && has(&nb, "kiosk_v4", "192.0.2.77")
                }),
                "refused and clamped: {}",
                get(&nb, "/metrics")
            );
            let long = addrs(&nb, "kiosk_v4")
                .into_iter()
                .find(|(v, _)| v == "192.0.2.77")
                .unwrap();
            assert!(long.1.unwrap() <= 1060, "clamped to B's bound: {long:?}");
            assert!(!has(&nb, "lab_v4", "192.0.2.30"), "B has no lab view");

            // Certificates: none, another CA's, or the CA's for a name that is not a peer.
            let before = metric(&nb, "dnsfence_sync_refused_total{reason=\"handshake\"}");
            probe(&nb, d, None);
            probe(&nb, d, Some(("other-ca", "other")));
            probe(&nb, d, Some(("ca", "intruder")));
            assert!(
                until(Duration::from_secs(3), || {
                    metric(&nb, "dnsfence_sync_refused_total{reason=\"handshake\"}") >= before + 2.0
                        && metric(&nb, "dnsfence_sync_refused_total{reason=\"unknown_peer\"}")
                            >= 1.0
                }),
                "refused and counted: {}",
                get(&nb, "/metrics")
            );

            // B stops: A answers as before; the peer is down in A's metrics and /readyz.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(b.id().unwrap() as i32, libc::SIGTERM) };
            let _ = b.wait().await;
            let t = Instant::now();
            let a = ask(&na, "127.0.0.1", "graph.microsoft.com.").expect("A answers with B down");
            assert_eq!(a.metadata.response_code, ResponseCode::NoError);
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "no wait on the peer: {:?}",
                t.elapsed()
            );
            assert!(
                until(Duration::from_secs(3), || {
                    metric(&na, "dnsfence_sync_peer_up{peer=\"gw-b.test\"}") == 0.0
                        && get(&na, "/readyz")
                            .contains("sync peer gw-b.test (10.201.0.2:8853): down")
                }),
                "peer down: {}",
                get(&na, "/readyz")
            );
            assert!(get(&na, "/readyz").starts_with("ready"), "still ready");

            // B's sets wiped while it is down, then B back: every live element of A is in B
            // within 5 s (a snapshot on the reconnect).
            nb.nft(&["flush", "ruleset"]);
            let _b = spawn(&nb, &cfg_b, &d.join("b2.log"));
            let want: Vec<String> = addrs(&na, "kiosk_v4").into_iter().map(|(v, _)| v).collect();
            assert!(want.len() >= 3, "{want:?}");
            assert!(
                until(Duration::from_secs(5), || {
                    let got = addrs(&nb, "kiosk_v4");
                    want.iter().all(|w| got.iter().any(|(v, _)| v == w))
                }),
                "A's elements in B again: {:?} of {want:?}\n{}",
                addrs(&nb, "kiosk_v4"),
                logs()
            );
            assert!(metric(&na, "dnsfence_sync_snapshots_total{peer=\"gw-b.test\"}") >= 2.0);
        })
        .await
        .expect("the pair test finished within 90 s");
    });
}
