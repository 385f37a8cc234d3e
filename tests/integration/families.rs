//! Device families: the vendors' required rows (fixtures in `tests/fixtures/vendors/`, written
//! from their tables: host and ports) are allowed by the default config on their ports; the kiosk
//! example's VLANs each get their family and nothing of the others, over real sockets; readiness
//! names what a view denies and follows a reload; a pasted vendor list is compared with a profile;
//! the deny traps hold with the vendors' sets in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dnsfence::catalog::policy::{Policy, View};
use dnsfence::catalog::zones::{PortSpec, parse_port_range};
use dnsfence::config::Config;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::catalog::dnsfence;
use crate::harness::{
    Authority, Server, ede, eventually_async, http_get, ips, rcode, run, sample, scrape,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The default config's policy (its upstream from a resolv.conf naming loopback).
fn default_policy() -> Policy {
    let dir = tempfile::tempdir().unwrap();
    let rc = dir.path().join("resolv.conf");
    std::fs::write(&rc, "nameserver 127.0.0.1\n").unwrap();
    let path = repo().join("config/dnsfence.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = Config::parse(&path, &text, &rc).unwrap();
    dnsfence::daemon::app::compile(&config).unwrap()
}

/// A fixture's rows: (host or CIDR, ports), `#` comments and blank lines skipped.
fn rows(file: &str) -> Vec<(String, Vec<PortSpec>)> {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/vendors").join(file)).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut words = l.split_whitespace();
            let host = words.next().unwrap().to_string();
            let ports = match words.next() {
                Some("-") | None => Vec::new(),
                Some(list) => list
                    .split(',')
                    .flat_map(|p| parse_port_range(p).unwrap())
                    .collect(),
            };
            (host, ports)
        })
        .collect()
}

/// Why a row is not served as the vendor says, or `None` when it is: its name (a wildcard tried
/// one label below) is allowed, its network is a static range of a set the view selects, and the
/// sets that allow it carry every port the vendor gives (what port-precise firewall sets key by).
fn served(policy: &Policy, view: &View, host: &str, ports: &[PortSpec]) -> Option<String> {
    let sets: Vec<u32> = if let Ok(net) = host.parse::<ipnet::IpNet>() {
        view.sets
            .iter()
            .copied()
            .filter(|&i| policy.catalog.sets[i as usize].networks.contains(&net))
            .collect()
    } else {
        let name = dnsfence::base::matcher::Pattern::parse(host)
            .unwrap()
            .example();
        match view.lookup(&name) {
            Some(entry) => entry.values.clone(),
            None => Vec::new(),
        }
    };
    if sets.is_empty() {
        return Some("denied".into());
    }
    let have = policy.ports_of(&sets);
    let missing: Vec<String> = ports
        .iter()
        .filter(|p| !have.contains(p))
        .map(|p| p.to_string())
        .collect();
    (!missing.is_empty()).then(|| format!("ports {} not in its sets", missing.join(" ")))
}

#[test]
fn every_required_vendor_row_is_allowed_by_the_default_config_on_its_ports() {
    let policy = default_policy();
    let view = &policy.views[0];
    for (file, count) in [
        ("apple-required.txt", 63),
        ("google-required.txt", 60),
        ("autopilot-required.txt", 10),
        ("m365-common-device.txt", 81),
    ] {
        let rows = rows(file);
        assert_eq!(rows.len(), count, "{file}");
        let wrong: Vec<String> = rows
            .iter()
            .filter_map(|(host, ports)| {
                served(&policy, view, host, ports).map(|why| format!("{host}: {why}"))
            })
            .collect();
        assert!(wrong.is_empty(), "{file}: {wrong:#?}");
    }
    // The traps the issue names hold with the vendors' sets in.
    for (name, why) in [
        (
            "apple.com.evil.example",
            "a look-alike under another domain",
        ),
        ("albert-apple.com", "a look-alike registrable domain"),
        ("evilgstatic.com", "Google's '*gstatic.com' is not a glob"),
        ("anyone.blob.core.windows.net", "multi-tenant storage"),
        ("anyone.azurewebsites.net", "multi-tenant web apps"),
        ("anyone.appspot.com", "multi-tenant App Engine"),
        (
            "omahaproxy.appspot.com",
            "retired: any App Engine tenant may claim it",
        ),
        ("anyone.firebaseapp.com", "multi-tenant Firebase hosting"),
        ("anyone.run.app", "Cloud Run: not Google's API hosts"),
        ("www.icloud.com", "iCloud is an optional profile"),
        ("guzzoni.apple.com", "Siri is an optional profile"),
        (
            "www.office.com",
            "Microsoft 365 apps are an optional profile",
        ),
    ] {
        assert!(view.lookup(name).is_none(), "{name} allowed: {why}");
    }
    for name in [
        "chromiumdash.appspot.com",
        "lgmsapeweu.blob.core.windows.net",
        "17-courier.push.apple.com",
    ] {
        assert!(view.lookup(name).is_some(), "{name}: a named host");
    }
    // Every family the default view selects is ready at every stage.
    let report = dnsfence::catalog::readiness::report(&policy, None);
    let families: Vec<&str> = report.views[0]
        .families
        .iter()
        .map(|f| f.family.as_str())
        .collect();
    assert_eq!(
        families,
        ["windows", "apple-mobile", "macos", "android-enterprise"]
    );
    assert!(report.ready(), "{}", report.text());
    let stages: Vec<&str> = report.views[0].families[0]
        .stages
        .iter()
        .map(|s| s.stage)
        .collect();
    assert_eq!(
        stages,
        [
            "setup",
            "enrollment",
            "check-in",
            "push",
            "apps",
            "updates",
            "certificates",
            "diagnostics",
            "remote-help"
        ]
    );
}

#[test]
fn every_shipped_set_names_its_source_section_and_stage() {
    let policy = default_policy();
    let catalog = &policy.catalog;
    for set in &catalog.sets {
        let doc = set.document.as_ref();
        assert!(
            doc.is_some_and(|d| !d.name.is_empty() && !d.version.is_empty()),
            "{}: no [source] with a version in {}",
            set.id,
            set.source.display()
        );
        assert!(set.stage.is_some(), "{}: no stage", set.id);
        assert!(set.section.is_some(), "{}: no section", set.id);
    }
    // One set per id: the Intune page's 56 and 59 are the web service's, with its full lists.
    let s56 = catalog.set("56").unwrap();
    assert!(s56.source.ends_with("m365-common.toml"));
    assert_eq!(s56.names.len(), 25);
    assert_eq!(s56.networks.len(), 16);
    // Four families, each naming only profiles that exist.
    let names: Vec<&str> = catalog.families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["windows", "apple-mobile", "macos", "android-enterprise"]
    );
    // FCM's range is three ports; APNs' network carries APNs' ports only.
    let fcm = catalog.set("fcm-devices").unwrap();
    for p in ["tcp/5228", "tcp/5229", "tcp/5230", "tcp/443"] {
        assert!(fcm.ports.contains(&p.parse().unwrap()), "{p}");
    }
    let apns = catalog.set("apple-push-network").unwrap();
    assert_eq!(
        apns.networks,
        ["17.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(
        apns.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        ["tcp/443", "tcp/5223", "tcp/2197"]
    );
}

/// The kiosk example with its three VLANs on loopback addresses (127.0.0.20, .30, .40), the
/// test upstream, and the fence's list backend (its elements carry ports, port-precise views).
fn kiosk_on_loopback(upstream: std::net::SocketAddr, extra_view_keys: &str) -> String {
    std::fs::read_to_string(repo().join("config/examples/kiosk.toml"))
        .unwrap()
        .replace(
            "listen = [\"10.20.0.1:53\", \"10.30.0.1:53\", \"10.40.0.1:53\"]",
            "listen = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"",
        )
        .replace(
            "dir = \"../../zones\"",
            &format!("dir = \"{}\"", repo().join("zones").display()),
        )
        .replace(
            "servers = [\"127.0.0.1:5300\"]",
            &format!("servers = [\"{upstream}\"]"),
        )
        .replace(
            "level = \"denied\"\npath = \"/var/log/dnsfence/queries.jsonl\"",
            "level = \"none\"",
        )
        .replace("enabled = true", "enabled = true\nbackend = \"list\"")
        .replace("[\"10.20.0.0/22\"]", "[\"127.0.0.20/32\"]")
        .replace(
            "[\"10.30.0.0/22\", \"2001:db8:30::/64\"]",
            &format!("[\"127.0.0.30/32\"]\n{extra_view_keys}"),
        )
        .replace("[\"10.40.0.0/22\"]", "[\"127.0.0.40/32\"]")
}

/// The fence's elements of `view` for `addr`, as `proto/port`.
async fn element_ports(f: &Server, view: &str, addr: &str) -> Vec<String> {
    let (status, body) = http_get(f.http.unwrap(), "/v1/sets").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut ports: Vec<String> = json["views"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["view"] == view)
        .flat_map(|v| v["sets"].as_array().unwrap().clone())
        .flat_map(|s| s["elements"].as_array().unwrap().clone())
        .filter(|e| e["addr"] == addr)
        .map(|e| format!("{}/{}", e["proto"].as_str().unwrap(), e["port"]))
        .collect();
    ports.sort();
    ports
}

#[test]
fn each_kiosk_vlan_resolves_its_family_and_nothing_of_the_others() {
    run(async {
        let upstream = Authority::start().await;
        let text = kiosk_on_loopback(upstream.addr, "");
        let config = Config::parse(Path::new("kiosk.toml"), &text, Path::new("/nonexistent"))
            .expect("the example parses");
        let f = Server::from_config(config, upstream).await.unwrap();
        let c = f.client();
        let ask = |src: &'static str, name: &'static str| {
            let msg = crate::harness::query(name, RecordType::A, Some(1232));
            let c = &c;
            async move { c.udp_from(src, &msg).await }
        };
        // Windows VLAN: Autopilot's names, not Google Play's nor Apple's activation.
        for name in ["play.google.com", "albert.apple.com"] {
            let m = ask("127.0.0.20", name).await;
            assert_eq!(rcode(&m), ResponseCode::NXDomain, "{name}");
            assert_eq!(ede(&m).map(|e| e.0), Some(15), "{name}: Blocked");
        }
        let m = ask("127.0.0.20", "time.windows.com").await;
        assert_eq!(
            ips(&m).0,
            ["192.0.2.40".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        // iPad VLAN: Apple's activation and any APNs courier, not Autopilot nor Play.
        for name in ["ztd.dds.microsoft.com", "play.google.com"] {
            let m = ask("127.0.0.30", name).await;
            assert_eq!(rcode(&m), ResponseCode::Refused, "{name}");
            assert_eq!(ede(&m).map(|e| e.0), Some(15), "{name}: Blocked");
        }
        for (name, ip) in [
            ("albert.apple.com", "192.0.2.60"),
            ("17-courier.push.apple.com", "192.0.2.61"),
        ] {
            let m = ask("127.0.0.30", name).await;
            assert_eq!(
                ips(&m).0,
                [ip.parse::<std::net::Ipv4Addr>().unwrap()],
                "{name}"
            );
        }
        // Android VLAN: FCM answered.
        let m = ask("127.0.0.40", "mtalk.google.com").await;
        assert_eq!(
            ips(&m).0,
            ["192.0.2.71".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        // The denied names never reached the upstream.
        for name in ["ztd.dds.microsoft.com.", "play.google.com."] {
            assert_eq!(f.upstream.seen.count(name), 0, "{name} forwarded");
        }
        // Port-precise sets carry APNs' and FCM's ports.
        assert_eq!(
            element_ports(&f, "shared-ipad", "192.0.2.61").await,
            ["tcp/2197", "tcp/443", "tcp/5223", "tcp/80"]
        );
        assert_eq!(
            element_ports(&f, "android-dedicated", "192.0.2.71").await,
            ["tcp/443", "tcp/5228", "tcp/5229", "tcp/5230"]
        );
        // Each VLAN reports its family only, ready.
        let (status, body) = http_get(f.http.unwrap(), "/v1/readiness").await;
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let got: Vec<(String, String, bool)> = json["views"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| {
                v["families"].as_array().unwrap().iter().map(move |fam| {
                    (
                        v["view"].as_str().unwrap().to_string(),
                        fam["family"].as_str().unwrap().to_string(),
                        fam["ready"].as_bool().unwrap(),
                    )
                })
            })
            .collect();
        let want = [
            ("windows-kiosk", "windows"),
            ("shared-ipad", "apple-mobile"),
            ("android-dedicated", "android-enterprise"),
        ];
        assert_eq!(
            got,
            want.map(|(v, fam)| (v.to_string(), fam.to_string(), true))
        );
        let (status, _) = http_get(f.http.unwrap(), "/v1/readiness?view=nope").await;
        assert_eq!(status, 404);
        f.stop().await;
    });
}

#[test]
fn readiness_names_albert_and_its_stage_when_the_apple_setup_profile_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let text = kiosk_on_loopback(
        "127.0.0.1:5300".parse().unwrap(),
        "exclude_profiles = [\"apple-setup\"]",
    );
    let cfg = dir.path().join("kiosk.toml");
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.to_str().unwrap();
    let (code, out, err) = dnsfence(&["readiness", "-c", cfg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("view windows-kiosk: family windows: ready"),
        "{out}"
    );
    assert!(
        out.contains("view shared-ipad: family apple-mobile: NOT READY"),
        "{out}"
    );
    let setup = out
        .lines()
        .skip_while(|l| !l.contains("family apple-mobile"))
        .find(|l| l.trim_start().starts_with("setup"))
        .unwrap();
    assert!(setup.contains("NOT READY (apple-setup)"), "{setup}");
    let denied = out
        .lines()
        .find(|l| l.contains("denied:") && l.contains("albert.apple.com"))
        .expect("albert.apple.com named");
    assert!(denied.contains("endpoint set apple-setup"), "{denied}");
    assert!(denied.contains("support.apple.com/101555"), "{denied}");
    assert!(denied.contains("section \"Device setup\""), "{denied}");
    // gs.apple.com is Apple's setup row too, but apple-updates still allows it.
    assert!(!denied.contains("gs.apple.com"), "{denied}");
    // The other stages stay ready; --view and --json say the same.
    let (code, json, _) = dnsfence(&["readiness", "-c", cfg, "--view", "shared-ipad", "--json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let stages = json["views"][0]["families"][0]["stages"]
        .as_array()
        .unwrap();
    let not_ready: Vec<&str> = stages
        .iter()
        .filter(|s| s["ready"] == false)
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(not_ready, ["setup"]);
    assert_eq!(stages[0]["denied"][0]["entry"], "albert.apple.com");
    let (code, out, _) = dnsfence(&["readiness", "-c", cfg, "--view", "windows-kiosk"]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = dnsfence(&["readiness", "-c", cfg, "--view", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no view named 'nope'"), "{err}");
}

#[test]
fn a_reload_that_removes_a_stage_flips_family_ready() {
    run(async {
        let upstream = Authority::start().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiosk.toml");
        std::fs::write(&path, kiosk_on_loopback(upstream.addr, "")).unwrap();
        let config = Config::load(&path).unwrap();
        let f = Server::from_config(config, upstream).await.unwrap();
        let setup = [
            ("view", "shared-ipad"),
            ("family", "apple-mobile"),
            ("stage", "setup"),
        ];
        let push = [
            ("view", "shared-ipad"),
            ("family", "apple-mobile"),
            ("stage", "push"),
        ];
        let s = scrape(&f).await;
        assert_eq!(sample(&s, "dnsfence_family_ready", &setup), Some(1.0));
        assert_eq!(sample(&s, "dnsfence_family_ready", &push), Some(1.0));
        std::fs::write(
            &path,
            kiosk_on_loopback(f.upstream.addr, "exclude_profiles = [\"apple-setup\"]"),
        )
        .unwrap();
        f.signals
            .send(dnsfence::daemon::signal::Signal::Reload)
            .unwrap();
        let flipped = eventually_async(Duration::from_secs(5), || async {
            sample(&scrape(&f).await, "dnsfence_family_ready", &setup) == Some(0.0)
        })
        .await;
        assert!(flipped, "the setup stage's gauge drops to 0 on the reload");
        let s = scrape(&f).await;
        assert_eq!(sample(&s, "dnsfence_family_ready", &push), Some(1.0));
        // And the answer follows: Apple's activation is denied now.
        let m = f
            .client()
            .udp_from(
                "127.0.0.30",
                &crate::harness::query("albert.apple.com", RecordType::A, Some(1232)),
            )
            .await;
        assert_eq!(rcode(&m), ResponseCode::Refused);
        let (_, body) = http_get(f.http.unwrap(), "/v1/readiness?view=shared-ipad").await;
        assert!(body.contains("\"albert.apple.com\""), "{body}");
        f.stop().await;
    });
}

#[test]
fn a_pasted_vendor_list_is_compared_with_a_profile() {
    let dir = tempfile::tempdir().unwrap();
    // Apple's device-setup rows as an admin pastes them (host, then the table's other columns),
    // less time-macos.apple.com, plus a row the catalog lacks.
    let list = dir.path().join("apple-setup.txt");
    let apple = rows("apple-required.txt");
    let mut text = String::from("# pasted from Apple's table\n");
    for (host, _) in apple.iter().take(10) {
        if host != "time-macos.apple.com" {
            text.push_str(&format!("{host}\t443\tiOS, macOS\n"));
        }
    }
    text.push_str("newsetup.apple.com 443\n\n");
    std::fs::write(&list, text).unwrap();
    let list = list.to_str().unwrap();
    let (code, out, err) = dnsfence(&[
        "catalog",
        "diff",
        "--names",
        list,
        "--profile",
        "apple-setup",
        "-c",
        "config/dnsfence.toml",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let diffs: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with('+') || l.starts_with('-'))
        .collect();
    assert_eq!(
        diffs,
        [
            "+ newsetup.apple.com: in the list, not allowed by the profile",
            "- time-macos.apple.com: in the profile, not in the list",
        ],
        "{out}"
    );
    assert!(
        out.contains("9 of the list allowed by the profile"),
        "{out}"
    );
    // The same list against Google's profile: everything differs; an unknown profile is an
    // error (exit 2) naming the known ones.
    let (code, out, _) = dnsfence(&[
        "catalog",
        "diff",
        "--names",
        list,
        "--profile",
        "android-play",
        "--json",
        "-c",
        "config/dnsfence.toml",
    ]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["common"], 0);
    assert!(
        json["lacks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "play.google.com")
    );
    let (code, _, err) = dnsfence(&[
        "catalog",
        "diff",
        "--names",
        list,
        "--profile",
        "nope",
        "-c",
        "config/dnsfence.toml",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no such profile 'nope'") && err.contains("apple-setup"),
        "{err}"
    );
    // A list equal to the profile: exit 0. Google's own form of a wildcard-less host list.
    let same = dir.path().join("fcm.txt");
    let fcm: String = rows("google-required.txt")
        .iter()
        .filter(|(h, _)| h.contains("mtalk"))
        .map(|(h, _)| format!("{h}\n"))
        .collect();
    std::fs::write(&same, fcm).unwrap();
    let (code, out, _) = dnsfence(&[
        "catalog",
        "diff",
        "--names",
        same.to_str().unwrap(),
        "--profile",
        "android-push",
        "-c",
        "config/dnsfence.toml",
    ]);
    // android-push also has FCM's and GCM's API hosts, which the mtalk list lacks.
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("12 of the list allowed by the profile, 0 added by the list"),
        "{out}"
    );
    assert!(out.contains("- fcm.googleapis.com"), "{out}");
}
