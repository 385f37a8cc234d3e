//! The command line (`check`, `explain`) and the shipped config and zone files.

use std::path::{Path, PathBuf};
use std::process::Command;

use dnsfence::config::Config;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dnsfence(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dnsfence"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("dnsfence runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shipped_configs_and_zones_load() {
    // The default config takes its upstream from resolv.conf: give it one that names loopback.
    let dir = tempfile::tempdir().unwrap();
    let rc = dir.path().join("resolv.conf");
    std::fs::write(&rc, "nameserver 127.0.0.1\n").unwrap();
    let path = repo().join("config/dnsfence.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = Config::parse(&path, &text, &rc).unwrap();
    assert_eq!(config.server.listen, ["127.0.0.1:5353".parse().unwrap()]);
    assert!(config.upstream.from_resolv_conf);
    let policy = dnsfence::daemon::app::compile(&config).unwrap();
    let view = policy.view_for("127.0.0.1".parse().unwrap()).unwrap();
    assert!(policy.view_for("::1".parse().unwrap()).is_some());
    assert!(policy.view_for("10.0.0.1".parse().unwrap()).is_none());
    // Every endpoint set of the catalog but those of the other clouds (GCC Remote Help, the US
    // Government and China pages) and of the optional feature profiles (Microsoft 365 apps,
    // Apple's feature sections).
    let off = [
        "remote-help-gcc",
        "intune-us-government",
        "intune-china",
        "m365-apps",
        "apple-account",
        "apple-associated-domains",
        "apple-icloud",
        "apple-business-manager",
        "apple-business-essentials",
        "apple-classroom",
        "apple-additional-content",
        "apple-content-caching",
        "apple-beta",
        "apple-diagnostics",
        "apple-siri",
        "apple-tap-to-pay",
        "apple-id-verifier",
        "apple-doh",
    ];
    let on: Vec<u32> = (0..policy.catalog.sets.len() as u32)
        .filter(|&i| !off.contains(&policy.catalog.sets[i as usize].profile.as_str()))
        .collect();
    assert_eq!(view.sets, on);
    assert_eq!(policy.catalog.sets.len() - on.len(), 46);
    for name in [
        "gcc.remotehelp.microsoft.com",
        "x.manage.microsoft.us",
        "x.manage.microsoftonline.cn",
    ] {
        assert!(view.lookup(name).is_none(), "{name}: another cloud's");
    }
    for name in [
        "manage.microsoft.com",
        "x.manage.microsoft.com",
        "swdin02-mscdn.manage.microsoft.com",
        "login.live.com",
        "au.download.windowsupdate.com",
        "time.windows.com",
        "5-courier.push.apple.com",
        "intunecdnpeasd.azureedge.net",
        "login.microsoftonline.com",
        "approdimedatahotfix.azureedge.net",
        "cdn.storeedgefd.dsx.mp.microsoft.com",
        "storeedgefd.dsx.mp.microsoft.com",
        "intunemaape6.ncus.attest.azure.net",
        "intunemaape10.weu.attest.azure.net",
        "intunemaape19.jpe.attest.azure.net",
        "macsidecarprodeu.azureedge.net",
        "has.spserv.microsoft.com",
        "a.dm.microsoft.com",
        "graph.microsoft.com",
        "amsua0101-remoteassistservice-pubsub.webpubsub.azure.com",
        "go-eu.trouter.communications.svc.cloud.microsoft",
        "sin.notify.windows.com",
        "go.microsoft.com",
        "aka.ms",
        "www.powershellgallery.com",
    ] {
        assert!(view.lookup(name).is_some(), "{name} should be allowed");
    }
    // Dropped with the page: Azure CDN and storage names anyone could claim once released.
    for name in [
        "swdin02-mscdn.azureedge.net",
        "sparkcdneus2.azureedge.net",
        "naprodimedatapri.blob.core.windows.net",
    ] {
        assert!(view.lookup(name).is_none(), "{name} is no longer listed");
    }

    // The package's conffile: loopback only, never an open resolver, the fence on.
    let packaged = std::fs::read_to_string(repo().join("deploy/debian/dnsfence.toml"))
        .unwrap()
        .replace(
            "\"/usr/share/dnsfence/zones\"",
            &format!("\"{}\"", repo().join("zones").display()),
        );
    let path = dir.path().join("packaged.toml");
    // A gateway with systemd-resolved: resolv.conf names 127.0.0.53, not dnsfence's 127.0.0.1.
    let resolved = dir.path().join("resolv-resolved.conf");
    std::fs::write(&resolved, "nameserver 127.0.0.53\n").unwrap();
    let config = Config::parse(&path, &packaged, &resolved).unwrap();
    assert!(config.server.listen.iter().all(|a| a.ip().is_loopback()));
    assert!(config.fence.enabled);
    assert_eq!(config.zones.dirs[1], Path::new("/etc/dnsfence/zones.d"));
    let policy = dnsfence::daemon::app::compile(&config).unwrap();
    for view in &policy.views {
        assert!(
            view.networks.iter().all(|n| n.addr().is_loopback()),
            "{}",
            view.name
        );
    }
    assert!(policy.view_for("10.0.0.1".parse().unwrap()).is_none());

    let kiosk = dnsfence::daemon::app::load(&repo().join("config/examples/kiosk.toml"));
    let (config, policy) = kiosk.unwrap();
    assert_eq!(config.views.len(), 3);
    let win = policy.view("windows-kiosk").unwrap();
    assert!(win.lookup("euprodimedatapri.azureedge.net").is_some());
    assert!(
        win.lookup("naprodimedatapri.azureedge.net").is_none(),
        "tenant region eu only"
    );
    assert!(
        win.lookup("login.live.com").is_some(),
        "set 97: Autopilot's deployment service needs it"
    );
    let ipad = policy.view_for("2001:db8:30::5".parse().unwrap()).unwrap();
    assert_eq!(ipad.name, "shared-ipad");
    assert!(ipad.lookup("itunes.apple.com").is_some());
    assert!(
        ipad.lookup("account.apple.com").is_some(),
        "Apple Account added"
    );
    assert!(ipad.lookup("www.icloud.com").is_none(), "iCloud not added");
    let android = policy.view("android-dedicated").unwrap();
    assert!(android.lookup("mtalk.google.com").is_some());
}

/// Every config and zone file the project ships, found by glob, loads and compiles: a shipped
/// file cannot rot, and a new one is covered without naming it here.
#[test]
fn every_shipped_config_and_zone_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    // A gateway's resolv.conf under systemd-resolved: not dnsfence's own 127.0.0.1.
    let rc = dir.path().join("resolv.conf");
    std::fs::write(&rc, "nameserver 127.0.0.53\n").unwrap();
    fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                toml_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    let mut configs = Vec::new();
    toml_files(&repo().join("config"), &mut configs);
    toml_files(&repo().join("deploy"), &mut configs);
    assert!(configs.len() >= 3, "{configs:?}");
    for path in &configs {
        // The package's files point at the installed catalog.
        let text = std::fs::read_to_string(path).unwrap().replace(
            "\"/usr/share/dnsfence/zones\"",
            &format!("\"{}\"", repo().join("zones").display()),
        );
        let config =
            Config::parse(path, &text, &rc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        dnsfence::daemon::app::compile(&config)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let mut zones = Vec::new();
    toml_files(&repo().join("zones"), &mut zones);
    assert!(zones.len() >= 23, "{zones:?}");
    for path in &zones {
        let text = std::fs::read_to_string(path).unwrap();
        let mut warnings = Vec::new();
        let zone = dnsfence::catalog::zones::parse_zone(path, &text, &mut warnings)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !zone.sets.is_empty() || !zone.families.is_empty(),
            "{}",
            path.display()
        );
        // Only the multi-tenant wildcards the files declare; nothing else to look at.
        assert!(warnings.is_empty(), "{}: {warnings:?}", path.display());
    }
}

#[test]
fn zone_catalog_keeps_the_pages_fields() {
    let catalog = dnsfence::catalog::zones::Catalog::load_dir(&repo().join("zones")).unwrap();
    let s163 = catalog.set("163").unwrap();
    // The page's row (83 subnets, one listed twice, and 7 Azure Front Door ranges) and the one
    // subnet only its consolidated list has.
    assert_eq!(s163.networks.len(), 91, "every CIDR of ID 163");
    assert!(s163.networks.contains(&"2620:1ec:4a::/47".parse().unwrap()));
    assert_eq!(
        s163.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        ["tcp/80", "tcp/443"]
    );
    assert!(s163.required);
    assert_eq!(s163.category.as_str(), "allow");
    let s56 = catalog.set("56").unwrap();
    assert!(s56.express_route);
    let s178 = catalog.set("178").unwrap();
    assert!(s178.ports.iter().any(|p| p.to_string() == "tcp/5223"));
    assert!(catalog.set("97").unwrap().required, "Required on the page");
    assert!(!catalog.set("150").unwrap().required);
    for id in [
        "163",
        "172",
        "170",
        "97",
        "164",
        "165",
        "169",
        "173",
        "182",
        "181",
        "187",
        "188",
        "171",
        "178",
        "179",
        "56",
        "150",
        "59",
        "win32-na",
        "win32-eu",
        "win32-ap",
        "store-api",
        "win32-fallback-cache",
        "win32-diagnostics",
        "powershell-gallery",
        "macos-na",
        "macos-eu",
        "macos-ap",
        "maa-na",
        "maa-eu",
        "maa-ap",
        "190",
        "189",
        "192",
        "aka-ms",
        "usgov-service",
        "china-service",
        "dha",
        "mde-settings",
        "epm",
        "graph",
    ] {
        assert!(catalog.set(id).is_some(), "endpoint set {id} missing");
    }
    // The Intune pages' sets (56 and 59 are the web service's now: one set per id), then the
    // other documents'.
    let of_pages = catalog
        .sets
        .iter()
        .filter(|s| s.document.as_ref().is_some_and(|d| d.follows.is_none()))
        .count();
    assert_eq!(of_pages, 44);
    assert_eq!(catalog.sets.len(), 113);
}

#[test]
fn check_prints_counts_and_explain_names_the_endpoint_set() {
    // The example as a gateway would have it: its query log directory exists (the package's
    // unit has systemd create /var/log/dnsfence; check, like run, refuses a missing one).
    let dir = tempfile::tempdir().unwrap();
    let kiosk = std::fs::read_to_string(repo().join("config/examples/kiosk.toml"))
        .unwrap()
        .replace(
            "dir = \"../../zones\"",
            &format!("dir = \"{}\"", repo().join("zones").display()),
        )
        .replace("/var/log/dnsfence", &dir.path().display().to_string());
    let cfg = dir.path().join("kiosk.toml");
    std::fs::write(&cfg, kiosk).unwrap();
    let (code, out, err) = dnsfence(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("113 endpoint sets"), "{out}");
    assert!(out.contains("4 device families"), "{out}");
    assert!(
        out.contains("view windows-kiosk: networks 10.20.0.0/22; families windows;"),
        "{out}"
    );
    assert!(
        out.contains(
            "view shared-ipad: networks 10.30.0.0/22, 2001:db8:30::/64; families apple-mobile;"
        ),
        "{out}"
    );
    assert!(
        out.contains("mode enforce; denied names get REFUSED"),
        "{out}"
    );
    assert!(
        out.contains("mode report; denied names get NXDOMAIN"),
        "{out}"
    );

    let (code, out, _) = dnsfence(&[
        "explain",
        "TIME.windows.com.",
        "--client",
        "10.20.1.9",
        "-c",
        "config/examples/kiosk.toml",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("view windows-kiosk: TIME.windows.com.: allowed"),
        "{out}"
    );
    assert!(out.contains("endpoint set 165"), "{out}");
    assert!(out.contains("udp/123"), "{out}");

    let (code, out, _) = dnsfence(&[
        "explain",
        "evilmanage.microsoft.com",
        "--client",
        "10.20.1.9",
        "-c",
        "config/examples/kiosk.toml",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("denied (not_allowlisted)"), "{out}");
    assert!(out.contains("NXDOMAIN with EDE 15"), "{out}");

    let (_, out, _) = dnsfence(&[
        "explain",
        "manage.microsoft.com",
        "--client",
        "192.0.2.1",
        "-c",
        "config/examples/kiosk.toml",
    ]);
    assert!(out.contains("in no view"), "{out}");
}

#[test]
fn check_on_a_broken_zone_reports_file_line_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).unwrap();
    for entry in std::fs::read_dir(repo().join("zones")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, zones.join(p.file_name().unwrap())).unwrap();
    }
    let apple = std::fs::read_to_string(zones.join("apple.toml")).unwrap();
    let broken = apple.replace("\"ocsp.apple.com\"", "\"*.*.apple.com\"");
    assert_ne!(apple, broken);
    let line = broken
        .lines()
        .position(|l| l.contains("*.*.apple.com"))
        .unwrap()
        + 1;
    std::fs::write(zones.join("apple.toml"), broken).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[zones]\ndir = \"zones\"\n[upstream]\nservers = [\"127.0.0.1:5300\"]\n[[view]]\nname = \"v\"\nnetworks = [\"10.0.0.0/8\"]\nprofiles = [\"apple\"]\n",
    )
    .unwrap();
    let (code, out, err) = dnsfence(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let want = format!(
        "{}:{line}: '*.*.apple.com': more than one wildcard label",
        Path::new(&dir.path().join("c.toml"))
            .parent()
            .unwrap()
            .join("zones/apple.toml")
            .display()
    );
    assert!(err.contains(&want), "stderr: {err}\nwanted: {want}");

    // A config error names the config's line.
    std::fs::write(
        &cfg,
        "[zones]\ndir = \"zones\"\n[upstream]\nservers = [\"127.0.0.1:5300\"]\n[[view]]\nname = \"v\"\nnetworks = [\"10.0.0.0/8\"]\nprofiles = [\"aple\"]\n",
    )
    .unwrap();
    std::fs::write(zones.join("apple.toml"), apple).unwrap();
    let (code, _, err) = dnsfence(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("c.toml:8: 'aple': no such profile"), "{err}");
}

#[test]
fn local_zone_dirs_add_sets_and_a_duplicate_id_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("zones.d");
    std::fs::create_dir(&local).unwrap();
    let site = "[[endpoint_set]]\nid = \"site-portal\"\ndescription = \"Kiosk start page\"\n\
                category = \"default\"\nrequired = false\nexpress_route = false\nports = [\"tcp/443\"]\n\
                profile = \"site\"\nnames = [\"portal.example.org\"]\n";
    std::fs::write(local.join("site.toml"), site).unwrap();
    let cfg = dir.path().join("c.toml");
    let config = |dirs: &str| {
        format!(
            "[zones]\ndirs = {dirs}\n[upstream]\nservers = [\"127.0.0.1:5300\"]\n\
             [[view]]\nname = \"v\"\nnetworks = [\"10.0.0.0/8\"]\nprofiles = [\"apple\", \"site\"]\n"
        )
    };
    let catalog = repo().join("zones");
    std::fs::write(
        &cfg,
        config(&format!(
            "[\"{}\", \"{}\", \"{}\"]",
            catalog.display(),
            local.display(),
            dir.path().join("missing.d").display()
        )),
    )
    .unwrap();
    let (code, out, err) = dnsfence(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "  {}: 1 endpoint sets\n    site.toml: site-portal",
            local.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("missing.d: 0 endpoint sets (missing: nothing added)"),
        "{out}"
    );
    let (config_, policy) = dnsfence::daemon::app::load(&cfg).unwrap();
    assert_eq!(config_.zones.dirs.len(), 3);
    let view = policy.view("v").unwrap();
    assert!(view.lookup("portal.example.org").is_some());
    assert!(view.lookup("itunes.apple.com").is_some());
    let (code, out, _) = dnsfence(&[
        "explain",
        "-c",
        cfg.to_str().unwrap(),
        "--client",
        "10.0.0.1",
        "portal.example.org",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("site.toml"),
        "explain names the local file: {out}"
    );

    // The same id as a shipped set: an error naming both files.
    std::fs::write(local.join("dup.toml"), site.replace("site-portal", "178")).unwrap();
    let (code, _, err) = dnsfence(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{}:", local.join("dup.toml").display()))
            && err.contains(&format!("{}:", catalog.join("apple.toml").display()))
            && err.contains("duplicate endpoint set id"),
        "{err}"
    );

    // The shipped catalog's directory must hold zone files; local ones need not.
    std::fs::write(
        &cfg,
        config(&format!("[\"{}\"]", dir.path().join("missing.d").display())),
    )
    .unwrap();
    let (code, _, err) = dnsfence(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("missing.d"), "{err}");
}

#[test]
fn the_readmes_local_zone_example_loads_without_warnings() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = &readme[readme
        .find("### Local zones")
        .expect("README has the section")..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones.d")).unwrap();
    std::fs::write(dir.path().join("zones.d/local.toml"), block).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[zones]\ndirs = [\"{}\", \"zones.d\"]\n[upstream]\nservers = [\"127.0.0.1:5300\"]\n\
             [[view]]\nname = \"v\"\nnetworks = [\"10.0.0.0/8\"]\nfamilies = [\"android-enterprise\"]\n\
             profiles = [\"local-kiosk\"]\n",
            repo().join("zones").display()
        ),
    )
    .unwrap();
    let (code, out, err) = dnsfence(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("warning"), "{out}");
    assert!(out.contains("zones.d: 2 endpoint sets"), "{out}");
    let (_, policy) = dnsfence::daemon::app::load(&cfg).unwrap();
    let view = policy.view("v").unwrap();
    for name in [
        "accounts.google.co.uk",
        "kiosk.contoso.com",
        "eu.api.contoso.com",
        "play.google.com",
    ] {
        assert!(view.lookup(name).is_some(), "{name}");
    }
    for name in ["www.contoso.com", "accounts.google.de", "api.contoso.com"] {
        assert!(view.lookup(name).is_none(), "{name}");
    }
    let set = policy.catalog.set("local-kiosk-app").unwrap();
    assert_eq!(set.document.as_ref().unwrap().version, "2026-12");
}

/// The first answer of a dnsfence just started on 127.0.0.1:`port` to `manage.microsoft.com A`
/// (asked every 100 ms, 50 times at most).
async fn first_answer(port: u16) -> hickory_proto::op::Message {
    let client = crate::harness::Client {
        server: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    let q = crate::harness::query(
        "manage.microsoft.com.",
        hickory_proto::rr::RecordType::A,
        Some(1232),
    );
    let answered = client
        .first_answer(
            &q.to_vec().unwrap(),
            50,
            std::time::Duration::from_millis(100),
        )
        .await;
    hickory_proto::op::Message::from_vec(&answered.expect("dnsfence answers")).unwrap()
}

#[test]
fn run_serves_and_stops_cleanly_on_sigterm() {
    crate::harness::run(async {
        let upstream = crate::harness::Authority::start().await;
        // A free port for both UDP and TCP, released just before dnsfence binds it.
        let dir = tempfile::tempdir().unwrap();
        let (cfg, port) = crate::harness::binary_config(dir.path(), upstream.addr).await;
        let mut child = crate::harness::spawn_run(&cfg);
        let a = first_answer(port).await;
        assert_eq!(
            a.metadata.response_code,
            hickory_proto::op::ResponseCode::NoError
        );
        let pid = child.id().unwrap();
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait())
            .await
            .expect("dnsfence exits within 5 s of SIGTERM")
            .unwrap();
        assert!(exit.success(), "exit status {exit:?}");
        let mut err = String::new();
        use tokio::io::AsyncReadExt;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        assert!(err.contains("dnsfence ready"), "{err}");
        assert!(err.contains("shutting down"), "{err}");
    });
}

/// A web server that answers every request with a status line, a huge Content-Length and then
/// one byte every half second: a catalog fetch that never ends. Sets `asked` on a request.
fn trickling_server(asked: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let asked = asked.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                asked.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
                for _ in 0..240 {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    if s.write_all(b"#").is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn sigterm_during_a_trickling_catalog_fetch_exits_within_the_bound() {
    crate::harness::run(async {
        let upstream = crate::harness::Authority::start().await;
        let dir = tempfile::tempdir().unwrap();
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let page = trickling_server(asked.clone());
        let (cfg, port) = crate::harness::binary_config(dir.path(), upstream.addr).await;
        let text = std::fs::read_to_string(&cfg).unwrap().replacen(
            "[server]",
            "[server]\nshutdown_timeout_ms = 1500",
            1,
        ) + &format!(
            "\n[catalog]\npage = \"http://127.0.0.1:{page}/endpoints.md\"\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        );
        std::fs::write(&cfg, text).unwrap();
        let mut child = crate::harness::spawn_run(&cfg);
        let client = crate::harness::Client {
            server: format!("127.0.0.1:{port}").parse().unwrap(),
        };
        let q = crate::harness::query(
            "manage.microsoft.com.",
            hickory_proto::rr::RecordType::A,
            Some(1232),
        )
        .to_vec()
        .unwrap();
        let answered = client
            .first_answer(&q, 100, std::time::Duration::from_millis(100))
            .await
            .is_some();
        if !answered {
            let _ = child.start_kill();
            let out = child.wait_with_output().await.unwrap();
            panic!("no answer: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(
            crate::harness::eventually(std::time::Duration::from_secs(5), || asked
                .load(std::sync::atomic::Ordering::SeqCst))
            .await,
            "the page fetch started"
        );
        // The fetch is now trickling (its client gives it 60 s); the stop must not wait for it.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        let pid = child.id().unwrap();
        let sent = std::time::Instant::now();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
        let exit = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
            .await
            .expect("dnsfence exits")
            .unwrap();
        let took = sent.elapsed();
        assert!(exit.success(), "exit status {exit:?}");
        assert!(
            took < std::time::Duration::from_millis(2500),
            "exit {took:?} after SIGTERM; shutdown_timeout_ms is 1500"
        );
    });
}

/// An upstream that is dnsfence's own listen address would loop every allowed query back to
/// dnsfence: `check` and `run` refuse it and say what to set.
#[test]
fn an_upstream_that_loops_to_dnsfence_is_an_error_in_check_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loop.toml");
    let text = std::fs::read_to_string(repo().join("config/dnsfence.toml"))
        .unwrap()
        .replace(
            "\"../zones\"",
            &format!("\"{}\"", repo().join("zones").display()),
        )
        .replace(
            "timeout_ms = 2000",
            "servers = [\"127.0.0.1:5353\"]\ntimeout_ms = 2000",
        );
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap();
    for cmd in ["check", "run"] {
        let (code, out, err) = dnsfence(&[cmd, "-c", path]);
        assert_eq!(code, 1, "{cmd}: {out}{err}");
        assert!(
            err.contains(
                "'127.0.0.1:5353': the upstream is dnsfence's own listen address 127.0.0.1:5353"
            ),
            "{cmd}: {err}"
        );
        assert!(err.contains("Set [upstream] servers"), "{cmd}: {err}");
    }
}

#[test]
fn health_asks_the_running_instance_and_fails_when_it_is_gone_without_ca_certificates() {
    crate::harness::run(async {
        let upstream = crate::harness::Authority::start().await;
        let dir = tempfile::tempdir().unwrap();
        let (cfg, port) = crate::harness::binary_config(dir.path(), upstream.addr).await;
        // [http] on a port of its own, as a wildcard: `health` asks it on loopback.
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "[http]\nlisten = \"127.0.0.1:0\"",
            &format!("[http]\nlisten = \"0.0.0.0:{http_port}\""),
        );
        std::fs::write(&cfg, text).unwrap();
        let cfg_arg = cfg.to_str().unwrap().to_string();
        let (code, _, err) = dnsfence(&["health", "-c", &cfg_arg]);
        assert_eq!(code, 1, "nothing runs yet: {err}");
        assert!(err.contains(&format!("127.0.0.1:{http_port}")), "{err}");
        // As on a host (or in an image) without CA certificates: plain upstreams need none.
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dnsfence"))
            .args(["run", "-c"])
            .arg(&cfg)
            .env("SSL_CERT_FILE", "/nonexistent/ca.pem")
            .env("SSL_CERT_DIR", "/nonexistent")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        first_answer(port).await;
        let (code, out, err) = dnsfence(&["health", "-c", &cfg_arg]);
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, err) = dnsfence(&["health", "--ready", "-c", &cfg_arg]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("ready"), "{out}");
        child.kill().await.unwrap();
        child.wait().await.unwrap();
        let (code, _, err) = dnsfence(&["health", "--ready", "-c", &cfg_arg]);
        assert_eq!(code, 1, "{err}");
    });
}
