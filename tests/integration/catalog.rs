//! The catalog feed: Microsoft's endpoint web service (a fixture written from the seed
//! document's tables, `tests/fixtures/feed-mem-worldwide.json`, as the service still serves that
//! era's data) against the shipped catalog, and the HTTPS server that plays the service and the
//! page for the daemon tests (`page.rs` has the page's own tests).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> serde_json::Value {
    let text =
        std::fs::read_to_string(repo().join("tests/fixtures/feed-mem-worldwide.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `dnsfence catalog diff --feed FILE -c config/dnsfence.toml [extra]`: (exit, stdout, stderr).
fn diff(feed: &Path, extra: &[&str]) -> (i32, String, String) {
    catalog_diff("--feed", feed, extra)
}

/// `dnsfence catalog pull SOURCE FILE --out OUT -c CONFIG`: (exit, stdout, stderr).
pub fn catalog_pull(source: &str, file: &Path, out: &Path, config: &Path) -> (i32, String, String) {
    dnsfence(&[
        "catalog",
        "pull",
        source,
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
    ])
}

/// `dnsfence catalog diff SOURCE FILE -c config/dnsfence.toml [extra]`.
pub fn catalog_diff(source: &str, file: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dnsfence"))
        .args(["catalog", "diff", source])
        .arg(file)
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

/// The lines of `after` that `before` lacks, and those it lacks of `before`.
pub fn line_changes(before: &str, after: &str) -> (Vec<String>, Vec<String>) {
    let b: Vec<&str> = before.lines().collect();
    let a: Vec<&str> = after.lines().collect();
    (
        a.iter()
            .filter(|l| !b.contains(l))
            .map(|l| l.to_string())
            .collect(),
        b.iter()
            .filter(|l| !a.contains(l))
            .map(|l| l.to_string())
            .collect(),
    )
}

#[test]
fn the_seed_era_feed_would_bring_back_what_the_page_dropped() {
    // Microsoft's caution on the page: the endpoint service no longer returns accurate data for
    // Intune. Its data of the seed's era would add back exactly what the catalog, following the
    // page, dropped: three retired subnets, the azureedge.net names of 170 (a suffix any Azure
    // customer can claim) and an NCSI name moved to 165.
    let (code, out, err) = diff(&repo().join("tests/fixtures/feed-mem-worldwide.json"), &[]);
    assert_eq!(code, 1, "{out}{err}");
    let added: Vec<&str> = out.lines().filter(|l| l.starts_with("  +")).collect();
    let mut want = vec![
        "  + network 13.71.199.64/28",
        "  + network 13.73.244.48/28",
        "  + network 20.49.93.160/27",
        "  + name www.msftncsi.com",
    ];
    let swd: Vec<String> = [
        "a01", "a02", "b01", "b02", "c01", "c02", "d01", "d02", "in01", "in02",
    ]
    .iter()
    .map(|s| format!("  + name swd{s}-mscdn.azureedge.net"))
    .collect();
    want.extend(swd.iter().map(String::as_str));
    let mut got = added.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{out}");
    assert!(
        out.contains("endpoint set 190: only in the catalog"),
        "ids the service does not serve: {out}"
    );
    assert!(out.contains(
        "endpoint set 187: rejected '*.webpubsub.azure.com': a wildcard directly under \
         'webpubsub.azure.com', a multi-tenant suffix: any of its tenants can create such names\n"
    ));
}

#[test]
fn a_changed_feed_gives_exactly_its_changes() {
    let base = fixture();
    let mut feed = fixture();
    let s163 = set_mut(&mut feed, 163);
    s163["urls"]
        .as_array_mut()
        .unwrap()
        .push("New.Manage.Microsoft.com.Example".into());
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
    let (before, after) = (dir.path().join("before.json"), dir.path().join("feed.json"));
    std::fs::write(&before, base.to_string()).unwrap();
    std::fs::write(&after, feed.to_string()).unwrap();
    let (_, was, _) = diff(&before, &[]);
    let (code, out, err) = diff(&after, &[]);
    assert_eq!(code, 1, "something to add: {out}{err}");
    let (added, removed) = line_changes(&was, &out);
    assert_eq!(
        added,
        [
            "  + name new.manage.microsoft.com.example",
            "  - network 13.67.13.176/28",
            "endpoint set 999: only in the feed (new, profile \"feed\"): MEM",
            "  + name new-service.microsoft.com",
            "  + port tcp/443",
            "endpoint set 172: rejected '*.com': a wildcard directly under the public suffix \
             'com' would allow whole top-level domains",
        ]
    );
    assert!(removed.is_empty(), "{removed:?}");
    // The same for machines.
    let (code, out, _) = diff(&after, &["--json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["source"], "feed");
    let s163 = json["changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "163")
        .unwrap();
    assert_eq!(s163["names_added"][0], "new.manage.microsoft.com.example");
    assert_eq!(json["new"][0]["id"], "999");
    assert_eq!(json["new"][0]["names"][0], "new-service.microsoft.com");
    assert_eq!(json["new"][0]["ports"][0], "tcp/443");
    assert_eq!(json["new"][0]["profile"], "feed");
    assert!(
        json["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["entry"] == "*.com" && r["at"] == "endpoint set 172")
    );
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
pub fn dnsfence(args: &[&str]) -> (i32, String, String) {
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
        let (code, out, err) = catalog_pull("--feed", &feed_path, &overlay, &cfg);
        assert_eq!(code, 0, "round {round}: {out}{err}");
        // 163, 169 and 170 (what the seed-era feed brings back, 163's new name among it).
        assert!(out.contains("3 endpoint sets extended, 1 new"), "{out}");
    }
    let text = std::fs::read_to_string(&overlay).unwrap();
    assert!(
        text.contains("# rejected (endpoint set 172): '*.com'"),
        "{text}"
    );
    assert!(
        !text.contains("13.67.13.176"),
        "nothing removed, nothing restated: {text}"
    );
    let (code, out, err) = dnsfence(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("feed.toml: 999"), "{out}");
    let (_, policy) = dnsfence::daemon::app::load(&cfg).unwrap();
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
    /// What `/page…` answers (the Intune endpoints page's Markdown), with `status`.
    pub page: String,
}

impl Served {
    /// The fixture, at `version`, with 200.
    pub fn fixture(version: &str) -> Served {
        Served {
            version: version.into(),
            status: 200,
            body: fixture_text(),
            page: page_fixture(),
        }
    }
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
    /// Starts it with a certificate for 127.0.0.1, or `None` (and why, printed) when openssl
    /// is missing.
    pub fn start(dir: &Path, served: Served) -> Option<FeedServer> {
        FeedServer::start_as(dir, "127.0.0.1", served)
    }

    /// The same with a certificate for `name` (the test upstream resolves
    /// `endpoints.feed.test` to 127.0.0.1).
    pub fn start_as(dir: &Path, name: &str, served: Served) -> Option<FeedServer> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        if !crate::harness::certificates(dir, name) {
            crate::harness::skip(
                "an HTTPS source played by the test",
                "openssl is not installed",
            );
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
                let (status, body) = if path.starts_with("/version/") && now.version.is_empty() {
                    (503, String::new())
                } else if path.starts_with("/version/") {
                    (
                        200,
                        format!(
                            "{{\"instance\":\"Worldwide\",\"latest\":\"{}\"}}",
                            now.version
                        ),
                    )
                } else if path.starts_with("/endpoints/") {
                    (now.status, now.body)
                } else if path.starts_with("/page") {
                    (now.status, now.page)
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

/// The page fixture's Markdown.
pub fn page_fixture() -> String {
    std::fs::read_to_string(repo().join("tests/fixtures/intune-endpoints-page.md")).unwrap()
}

#[test]
fn diff_and_pull_fetch_the_live_service_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = FeedServer::start(dir.path(), Served::fixture("2026112500")) else {
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
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("endpoint set 187: rejected"), "{out}");
    let paths = server.requests.lock().unwrap().clone();
    assert!(
        paths[0].starts_with("/version/Worldwide?clientrequestid="),
        "{paths:?}"
    );
    assert!(
        paths[1].starts_with("/endpoints/Worldwide?ServiceAreas=MEM,Common&clientrequestid="),
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
    assert!(
        err.contains(&format!(
            "{url}/endpoints/Worldwide?ServiceAreas=MEM,Common&clientrequestid="
        )),
        "the URL requested is named: {err}"
    );
    // A failed version poll names the version URL, not the endpoints one.
    server.served.lock().unwrap().version = String::new();
    let (code, _, err) = dnsfence(&[&base[..], &["--ca-file", ca.to_str().unwrap()]].concat());
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("{url}/version/Worldwide?clientrequestid="))
            && err.contains("HTTP 503")
            && !err.contains("/endpoints/"),
        "{err}"
    );
}

/// A fetch result's count, from `/metrics`.
pub async fn fetches(f: &crate::harness::Server, source: &str, result: &str) -> f64 {
    let (_, text) = crate::harness::http_get(f.http.unwrap(), "/metrics").await;
    let needle =
        format!("dnsfence_catalog_fetches_total{{result=\"{result}\",source=\"{source}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A reload after the served document changed: waits until the follower counted a fetch of
/// `source` with `result`, then checks the overlay on disk is still `good` and the name it
/// allows still answers. What every "a bad fetch keeps what it had" case asserts.
pub async fn reload_keeps_overlay(
    f: &crate::harness::Server,
    c: &crate::harness::Client,
    source: &str,
    result: &str,
    overlay: &std::path::Path,
    good: &str,
) {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    let before = fetches(f, source, result).await;
    f.signals
        .send(dnsfence::daemon::signal::Signal::Reload)
        .unwrap();
    let counted = crate::harness::eventually_async(std::time::Duration::from_secs(5), || async {
        fetches(f, source, result).await > before
    })
    .await;
    assert!(counted, "{result} counted");
    assert_eq!(
        std::fs::read_to_string(overlay).unwrap(),
        good,
        "{result}: kept"
    );
    let a = c.ask("evilmanage.microsoft.com.", RecordType::A).await;
    assert_eq!(crate::harness::rcode(&a), ResponseCode::NoError, "{result}");
}

/// A server on the test config for loopback clients, `extra` appended (its `[catalog]`), the
/// config file written into `dir` as an admin would.
pub async fn start_with(
    dir: &Path,
    upstream: crate::harness::Authority,
    extra: &str,
) -> crate::harness::Server {
    let text = crate::harness::config_text(upstream.addr, "\"127.0.0.0/8\"", "", extra);
    let path = dir.join("dnsfence.toml");
    std::fs::write(&path, text).unwrap();
    let config = dnsfence::config::Config::load(&path).unwrap();
    crate::harness::Server::from_config(config, upstream)
        .await
        .unwrap()
}

#[test]
fn a_running_server_follows_the_feed_and_keeps_the_last_good_overlay() {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    use std::time::Duration;
    crate::harness::run(async {
        let dir = tempfile::tempdir().unwrap();
        let Some(server) = FeedServer::start_as(
            dir.path(),
            "endpoints.feed.test",
            Served::fixture("2026110100"),
        ) else {
            return;
        };
        let upstream = crate::harness::Authority::start().await;
        let state = dir.path().join("state");
        // By name: dnsfence resolves the feed host through its own upstream.
        let extra = format!(
            "[catalog]\nfeed = \"https://endpoints.feed.test:{}\"\nca_file = \"{}\"\nstate_dir = \"{}\"\n\
             [fence]\nenabled = true\nbackend = \"list\"\n",
            server.addr.port(),
            dir.path().join("ca.pem").display(),
            state.display()
        );
        let f = start_with(dir.path(), upstream, &extra).await;
        let c = f.client();
        // The first poll at start writes the overlay (nothing to add in the fixture).
        let overlay = state.join("feed-worldwide.toml");
        assert!(
            crate::harness::eventually(Duration::from_secs(5), || overlay.exists()).await,
            "overlay written"
        );
        assert_eq!(fetches(&f, "feed", "ok").await, 1.0);
        assert!(
            f.upstream.seen.count("endpoints.feed.test.") >= 1,
            "the feed host was resolved through the upstream"
        );
        let denied = c.ask("evilmanage.microsoft.com.", RecordType::A).await;
        assert_eq!(crate::harness::rcode(&denied), ResponseCode::NXDomain);
        assert_eq!(f.upstream.seen.count("evilmanage.microsoft.com."), 0);
        // An allowed answer in the cache and the fence.
        c.ask("enterpriseenrollment.manage.microsoft.com.", RecordType::A)
            .await;
        let hits = |f: &crate::harness::Server| f.engine.metrics.cache_hits.get();
        let fence_elements = |f: &crate::harness::Server| {
            let fence = f.engine.fence.as_ref().unwrap();
            (0..fence.sets().len())
                .map(|i| fence.element_count(i).0)
                .sum::<usize>()
        };
        assert_eq!(fence_elements(&f), 1);

        // A new version adds the name to 163: after one refresh (SIGHUP polls) it is answered.
        let mut feed = fixture();
        set_mut(&mut feed, 163)["urls"]
            .as_array_mut()
            .unwrap()
            .push("evilmanage.microsoft.com".into());
        {
            let mut served = server.served.lock().unwrap();
            served.version = "2026112500".into();
            served.body = feed.to_string();
        }
        f.signals
            .send(dnsfence::daemon::signal::Signal::Reload)
            .unwrap();
        let allowed = crate::harness::eventually_async(Duration::from_secs(5), || async {
            let a = c.ask("evilmanage.microsoft.com.", RecordType::A).await;
            crate::harness::rcode(&a) == ResponseCode::NoError
        })
        .await;
        assert!(allowed, "the feed's name is answered without a restart");
        assert_eq!(fetches(&f, "feed", "ok").await, 2.0);
        // The cache and the fence survived the swap.
        let before = hits(&f);
        c.ask("enterpriseenrollment.manage.microsoft.com.", RecordType::A)
            .await;
        assert_eq!(hits(&f), before + 1, "still cached");
        assert_eq!(fence_elements(&f), 2, "old element kept, new one added");
        let (_, catalog) = crate::harness::http_get(f.http.unwrap(), "/v1/catalog").await;
        let catalog: serde_json::Value = serde_json::from_str(&catalog).unwrap();
        let feed_source = catalog["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"] == "feed")
            .expect("a feed source");
        assert_eq!(feed_source["version"], "2026112500");
        assert!(
            feed_source["extends"]
                .as_array()
                .unwrap()
                .contains(&"163".into()),
            "{feed_source}"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_dnsfence"))
            .arg("check")
            .arg("-c")
            .arg(dir.path().join("dnsfence.toml"))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.contains("feed-worldwide.toml (catalog feed): 0 new endpoint sets, 3 extended"),
            "{out}"
        );
        let (_, metrics) = crate::harness::http_get(f.http.unwrap(), "/metrics").await;
        assert!(
            metrics.contains("dnsfence_catalog_version{source=\"feed\"} 2026112500"),
            "{metrics}"
        );

        // Failures keep the last good overlay and count: HTTP 500, truncated JSON, an unknown
        // field.
        let good = std::fs::read_to_string(&overlay).unwrap();
        let text = feed.to_string();
        let mut unknown = feed.clone();
        set_mut(&mut unknown, 163)["newField"] = 1.into();
        for (i, (status, body, result)) in [
            (500, text.clone(), "http_error"),
            (200, text[..text.len() / 2].to_string(), "invalid"),
            (200, unknown.to_string(), "invalid"),
        ]
        .into_iter()
        .enumerate()
        {
            {
                let mut served = server.served.lock().unwrap();
                served.version = format!("20261126{i:02}");
                served.status = status;
                served.body = body;
            }
            reload_keeps_overlay(&f, &c, "feed", result, &overlay, &good).await;
        }
        f.stop().await;
    });
}

#[test]
fn a_certificate_the_daemon_does_not_trust_keeps_the_overlay_it_has() {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    use std::time::Duration;
    crate::harness::run(async {
        let dir = tempfile::tempdir().unwrap();
        let Some(server) = FeedServer::start(dir.path(), Served::fixture("2026112500")) else {
            return;
        };
        // Another CA than the server's.
        let other = tempfile::tempdir().unwrap();
        assert!(crate::harness::certificates(other.path(), "127.0.0.1"));
        // An overlay from an earlier good fetch, in the state directory.
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::write(
            state.join("feed-worldwide.toml"),
            "# version: 2026110100\n[[extend]]\nid = \"163\"\nnames = [\"evilmanage.microsoft.com\"]\n",
        )
        .unwrap();
        let upstream = crate::harness::Authority::start().await;
        let extra = format!(
            "[catalog]\nfeed = \"{}\"\nca_file = \"{}\"\nstate_dir = \"{}\"\n",
            server.url(),
            other.path().join("ca.pem").display(),
            state.display()
        );
        let f = start_with(dir.path(), upstream, &extra).await;
        let failed = crate::harness::eventually_async(Duration::from_secs(5), || async {
            fetches(&f, "feed", "transport").await >= 1.0
        })
        .await;
        assert!(failed, "the bad certificate is counted");
        let error = f.status.sources.followed[0].last_error().unwrap();
        assert!(error.to_lowercase().contains("certificate"), "{error}");
        let a = f
            .client()
            .ask("evilmanage.microsoft.com.", RecordType::A)
            .await;
        assert_eq!(
            crate::harness::rcode(&a),
            ResponseCode::NoError,
            "the old overlay serves"
        );
        assert!(
            server.requests.lock().unwrap().is_empty(),
            "no request got through TLS"
        );
        f.stop().await;
    });
}

/// The feed as the service serves it for `ServiceAreas=MEM,Common`: the seed-era MEM sets, then
/// the Common area (`tests/fixtures/feed-common-worldwide.json`, written from the service's
/// Common sets the catalog holds, and one optional set it does not).
fn mem_and_common() -> serde_json::Value {
    let mut sets: Vec<serde_json::Value> = fixture()
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["serviceArea"] == "MEM")
        .cloned()
        .collect();
    let common: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/feed-common-worldwide.json")).unwrap(),
    )
    .unwrap();
    sets.extend(common.as_array().unwrap().iter().cloned());
    serde_json::Value::Array(sets)
}

#[test]
fn the_common_area_is_followed_for_the_ids_the_catalog_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (before, after) = (dir.path().join("before.json"), dir.path().join("feed.json"));
    std::fs::write(&before, mem_and_common().to_string()).unwrap();
    let (_, was, err) = diff(&before, &[]);
    // Of Common, the catalog agrees with the service but for the page's addition to id 59, and
    // the optional set it does not hold is not followed.
    let common: Vec<&str> = was
        .lines()
        .skip_while(|l| !l.starts_with("endpoint set 59:"))
        .take(2)
        .collect();
    assert_eq!(
        common,
        [
            "endpoint set 59:",
            "  - name certauth.enterpriseregistration.windows.net"
        ],
        "{was}{err}"
    );
    assert!(
        was.contains(
            "Common area, not followed (no endpoint set of the catalog has these ids): 78\n"
        ),
        "{was}"
    );
    for id in ["46", "56", "83", "84", "125", "184"] {
        assert!(
            !was.contains(&format!("endpoint set {id}:")),
            "{id} agrees with the service: {was}"
        );
    }
    // An id added to Common, a name added to 125 and one removed from 56.
    let mut feed = mem_and_common();
    set_mut(&mut feed, 125)["urls"]
        .as_array_mut()
        .unwrap()
        .push("ocsp.example-ca.net".into());
    let urls = set_mut(&mut feed, 56)["urls"].as_array_mut().unwrap();
    urls.retain(|u| u != "login.windows.net");
    feed.as_array_mut().unwrap().push(serde_json::json!({
        "id": 200, "serviceArea": "Common", "urls": ["new-signin.microsoftonline.com"],
        "tcpPorts": "443", "expressRoute": false, "category": "Default", "required": true
    }));
    std::fs::write(&after, feed.to_string()).unwrap();
    let (code, out, err) = diff(&after, &[]);
    assert_eq!(code, 1, "{out}{err}");
    let (added, removed) = line_changes(&was, &out);
    assert_eq!(
        added,
        [
            "endpoint set 56:",
            "  - name login.windows.net",
            "endpoint set 125:",
            "  + name ocsp.example-ca.net",
            "Common area, not followed (no endpoint set of the catalog has these ids): 78, 200",
        ]
    );
    assert_eq!(
        removed,
        ["Common area, not followed (no endpoint set of the catalog has these ids): 78"]
    );
    // The overlay a pull writes adds the name to 125 and leaves 200 and 78 out.
    let overlay = dir.path().join("feed-overlay.toml");
    let (code, out, err) = catalog_pull(
        "--feed",
        &after,
        &overlay,
        Path::new("config/dnsfence.toml"),
    );
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(&overlay).unwrap();
    assert!(
        text.contains("[[extend]]\nid = \"125\"\nnames = [\n  \"ocsp.example-ca.net\",\n]"),
        "{text}"
    );
    assert!(
        !text.contains("\"200\"") && !text.contains("\"78\""),
        "{text}"
    );
}
