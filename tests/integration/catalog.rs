//! The catalog feed: Microsoft's endpoint web service (a fixture written from the seed
//! document's tables, `tests/fixtures/feed-mem-worldwide.json`) against the shipped catalog.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> serde_json::Value {
    let text =
        std::fs::read_to_string(repo().join("tests/fixtures/feed-mem-worldwide.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `dnsfence catalog diff --feed FILE -c config/dnsfence.toml [extra]`: (exit, stdout, stderr).
fn diff(feed: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dnsfence"))
        .args(["catalog", "diff", "--feed"])
        .arg(feed)
        .args(["-c", "config/dnsfence.toml"])
        .args(extra)
        .current_dir(repo())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn set_mut(feed: &mut serde_json::Value, id: u64) -> &mut serde_json::Value {
    feed.as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["id"] == id)
        .unwrap()
}

#[test]
fn the_fixture_adds_nothing_to_the_shipped_catalog() {
    let (code, out, err) = diff(&repo().join("tests/fixtures/feed-mem-worldwide.json"), &[]);
    assert_eq!(code, 0, "{out}{err}");
    // The one difference: the feed cannot vouch for a wildcard under a multi-tenant suffix
    // (the catalog keeps it, marked multi_tenant with the seed's reason).
    assert_eq!(
        out,
        "endpoint set 187: rejected '*.webpubsub.azure.com': a wildcard directly under \
         'webpubsub.azure.com', a multi-tenant suffix: any of its tenants can create such names\n"
    );
}

#[test]
fn a_changed_feed_gives_exactly_its_changes() {
    let mut feed = fixture();
    let s163 = set_mut(&mut feed, 163);
    s163["urls"]
        .as_array_mut()
        .unwrap()
        .push("New.Manage.Microsoft.com".into());
    let ips = s163["ips"].as_array_mut().unwrap();
    let at = ips.iter().position(|i| i == "13.67.13.176/28").unwrap();
    ips.remove(at);
    set_mut(&mut feed, 172)["urls"]
        .as_array_mut()
        .unwrap()
        .push("*.com".into());
    feed.as_array_mut().unwrap().push(serde_json::json!({
        "id": 999, "serviceArea": "MEM", "urls": ["new-service.microsoft.com"],
        "tcpPorts": "443", "expressRoute": false, "category": "Default", "required": true
    }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feed.json");
    std::fs::write(&path, feed.to_string()).unwrap();
    let (code, out, err) = diff(&path, &[]);
    assert_eq!(code, 1, "something to add: {out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "endpoint set 163:",
            "  + name new.manage.microsoft.com",
            "  - network 13.67.13.176/28",
            "endpoint set 999: only in the feed (new)",
            "endpoint set 172: rejected '*.com': a wildcard directly under the public suffix \
             'com' would allow whole top-level domains",
            "endpoint set 187: rejected '*.webpubsub.azure.com': a wildcard directly under \
             'webpubsub.azure.com', a multi-tenant suffix: any of its tenants can create such names",
        ]
    );
    // The same for machines.
    let (code, out, _) = diff(&path, &["--json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json["changed"][0]["names_added"][0],
        "new.manage.microsoft.com"
    );
    assert_eq!(json["feed_only"][0], "999");
    assert_eq!(json["rejected"][0]["entry"], "*.com");
}

#[test]
fn a_feed_that_is_not_the_services_json_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(repo().join("tests/fixtures/feed-mem-worldwide.json")).unwrap();
    let truncated = dir.path().join("truncated.json");
    std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
    let (code, _, err) = diff(&truncated, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("feed: line"), "{err}");

    let mut feed = fixture();
    set_mut(&mut feed, 163)["newField"] = "x".into();
    let unknown = dir.path().join("unknown.json");
    std::fs::write(&unknown, feed.to_string()).unwrap();
    let (code, _, err) = diff(&unknown, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown field `newField`"), "{err}");
}

/// `dnsfence ARGS` in the repository: (exit, stdout, stderr).
fn dnsfence(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dnsfence"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pull_writes_an_overlay_that_check_accepts_and_that_only_adds() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("zones.d");
    std::fs::create_dir(&local).unwrap();
    let mut feed = fixture();
    let s163 = set_mut(&mut feed, 163);
    s163["urls"]
        .as_array_mut()
        .unwrap()
        .push("new.manage.microsoft.com".into());
    // A network the catalog has is missing from the feed: the overlay must not remove it.
    let ips = s163["ips"].as_array_mut().unwrap();
    let at = ips.iter().position(|i| i == "13.67.13.176/28").unwrap();
    ips.remove(at);
    ips.push("203.0.113.0/24".into());
    set_mut(&mut feed, 172)["urls"]
        .as_array_mut()
        .unwrap()
        .push("*.com".into());
    feed.as_array_mut().unwrap().push(serde_json::json!({
        "id": 999, "serviceArea": "MEM", "notes": "A \"new\" service",
        "urls": ["new-service.microsoft.com"], "tcpPorts": "443,5228-5230",
        "expressRoute": false, "category": "Allow", "required": false
    }));
    let feed_path = dir.path().join("feed.json");
    std::fs::write(&feed_path, feed.to_string()).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[zones]\ndirs = [\"{}\", \"zones.d\"]\n[upstream]\nservers = [\"127.0.0.1:5300\"]\n\
             [[view]]\nname = \"v\"\nnetworks = [\"10.0.0.0/8\"]\nprofiles = [\"intune-core\", \"feed\"]\n",
            repo().join("zones").display()
        ),
    )
    .unwrap();
    let overlay = local.join("feed.toml");
    for round in 0..2 {
        // Twice: the second pull leaves the first overlay out of the comparison, so the result
        // is the same (an overlay never diffs against itself into nothing).
        let (code, out, err) = dnsfence(&[
            "catalog",
            "pull",
            "--feed",
            feed_path.to_str().unwrap(),
            "--out",
            overlay.to_str().unwrap(),
            "-c",
            cfg.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "round {round}: {out}{err}");
        assert!(out.contains("1 endpoint sets extended, 1 new"), "{out}");
    }
    let text = std::fs::read_to_string(&overlay).unwrap();
    assert!(text.contains("# rejected (id 172): '*.com'"), "{text}");
    assert!(
        !text.contains("13.67.13.176"),
        "nothing removed, nothing restated: {text}"
    );
    let (code, out, err) = dnsfence(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("feed.toml: 999"), "{out}");
    let (_, policy) = dnsfence::app::load(&cfg).unwrap();
    let set = policy.catalog.set("163").unwrap();
    assert!(
        set.networks.contains(&"13.67.13.176/28".parse().unwrap()),
        "the floor stays"
    );
    assert!(set.networks.contains(&"203.0.113.0/24".parse().unwrap()));
    let new = policy.catalog.set("999").unwrap();
    assert_eq!(new.profile, "feed");
    assert_eq!(new.description, "A \"new\" service");
    assert_eq!(new.ports.len(), 4);
    let view = policy.view("v").unwrap();
    assert!(view.lookup("new.manage.microsoft.com").is_some());
    assert!(view.lookup("new-service.microsoft.com").is_some());
    assert!(view.lookup("example.com").is_none());
    let (_, out, _) = dnsfence(&[
        "explain",
        "new.manage.microsoft.com",
        "-c",
        cfg.to_str().unwrap(),
    ]);
    assert!(
        out.contains(&format!("extended by {}", overlay.display())),
        "{out}"
    );
}

/// What the test's feed service answers.
#[derive(Clone)]
pub struct Served {
    /// `/version/…`'s `latest`.
    pub version: String,
    /// `/endpoints/…`'s status and body.
    pub status: u16,
    /// The body.
    pub body: String,
}

/// Microsoft's endpoint web service, played by the test: HTTPS on 127.0.0.1 with a certificate
/// from a CA the test made (`ca.pem` in the given directory).
pub struct FeedServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it answers; change it to play a new version.
    pub served: Arc<Mutex<Served>>,
    /// Requests it got (paths).
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl FeedServer {
    /// Starts it, or `None` (and why, printed) when openssl is missing.
    pub fn start(dir: &Path, served: Served) -> Option<FeedServer> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        if !crate::harness::certificates(dir, "127.0.0.1") {
            println!("SKIPPED: openssl is not installed");
            return None;
        }
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("server.pem"))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(Mutex::new(served));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (served.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(tcp) = stream else { continue };
                let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let Some(path) = text.split_whitespace().nth(1).map(str::to_string) else {
                    continue;
                };
                r.lock().unwrap().push(path.clone());
                let now = s.lock().unwrap().clone();
                let (status, body) = if path.starts_with("/version/") {
                    (
                        200,
                        format!(
                            "{{\"instance\":\"Worldwide\",\"latest\":\"{}\"}}",
                            now.version
                        ),
                    )
                } else if path.starts_with("/endpoints/") {
                    (now.status, now.body)
                } else {
                    (404, String::new())
                };
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        Some(FeedServer {
            addr,
            served,
            requests,
        })
    }

    /// The base URL to give dnsfence.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

fn fixture_text() -> String {
    std::fs::read_to_string(repo().join("tests/fixtures/feed-mem-worldwide.json")).unwrap()
}

#[test]
fn diff_and_pull_fetch_the_live_service_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = FeedServer::start(
        dir.path(),
        Served {
            version: "2026112500".into(),
            status: 200,
            body: fixture_text(),
        },
    ) else {
        return;
    };
    let ca = dir.path().join("ca.pem");
    let url = server.url();
    let base = [
        "catalog",
        "diff",
        "--feed",
        &url,
        "-c",
        "config/dnsfence.toml",
    ];
    let (code, out, err) = dnsfence(&[&base[..], &["--ca-file", ca.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("endpoint set 187: rejected"), "{out}");
    let paths = server.requests.lock().unwrap().clone();
    assert!(
        paths[0].starts_with("/version/Worldwide?clientrequestid="),
        "{paths:?}"
    );
    assert!(
        paths[1].starts_with("/endpoints/Worldwide?ServiceAreas=MEM&clientrequestid="),
        "{paths:?}"
    );

    // pull records the service's version in the overlay's header.
    let out_file = dir.path().join("feed.toml");
    let (code, out, err) = dnsfence(&[
        "catalog",
        "pull",
        "--feed",
        &url,
        "--ca-file",
        ca.to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
        "-c",
        "config/dnsfence.toml",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let overlay = std::fs::read_to_string(&out_file).unwrap();
    assert!(overlay.contains("# version: 2026112500"), "{overlay}");
    assert!(
        overlay.contains(&format!("# source: {url}/endpoints/Worldwide")),
        "{overlay}"
    );

    // The system trust store does not know the test's CA: a bad certificate is an error.
    let (code, _, err) = dnsfence(&base);
    assert_eq!(code, 2);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // An error status is an error, named.
    server.served.lock().unwrap().status = 500;
    let (code, _, err) = dnsfence(&[&base[..], &["--ca-file", ca.to_str().unwrap()]].concat());
    assert_eq!(code, 2);
    assert!(err.contains("HTTP 500"), "{err}");
}
