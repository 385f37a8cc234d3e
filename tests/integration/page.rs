//! The Intune endpoints page as a catalog source: a fixture in the page's Markdown structure
//! (`tests/fixtures/intune-endpoints-page.md`, written from the 2026-03-24 page's tables and
//! lists) against the shipped catalog, `catalog diff/pull --page`, the daemon following it over
//! HTTPS, and `explain --names` on its consolidated list.

use std::path::Path;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::catalog::{
    FeedServer, Served, catalog_diff, catalog_pull, dnsfence, fetches, line_changes, page_fixture,
    reload_keeps_overlay, repo, start_with,
};

fn page_diff(file: &Path, extra: &[&str]) -> (i32, String, String) {
    catalog_diff("--page", file, extra)
}

/// The fixture changed as a new version of the page might be: a row added to the Autopilot
/// table, a subnet gone from 163, a name only in the consolidated list, one more EU attestation
/// host.
fn changed_page() -> String {
    let page = page_fixture();
    let row165 = page
        .lines()
        .find(|l| l.starts_with("| 165 |"))
        .unwrap()
        .to_string();
    page.replacen(
        &row165,
        &format!(
            "{row165}\n| 193 | Windows Autopilot - New service | Default<BR>Required | False | \
             `new-autopilot.microsoft.com`<BR>`203.0.113.0/24`(a note) | **TCP:** 443 |"
        ),
        1,
    )
    .replacen("20.37.153.0/24, ", "", 1)
    .replacen("aka.ms\n", "aka.ms\nextra.intune.microsoft.com\n", 1)
    .replacen(
        "- 'https://intunemaape12.weu.attest.azure.net'\n",
        "- 'https://intunemaape12.weu.attest.azure.net'\n\n- 'https://intunemaape20.neu.attest.azure.net'\n",
        1,
    )
}

#[test]
fn the_page_adds_nothing_the_shipped_catalog_lacks() {
    let (code, out, err) = page_diff(&repo().join("tests/fixtures/intune-endpoints-page.md"), &[]);
    assert_eq!(code, 0, "{out}{err}");
    // What the catalog holds beyond the page, each said in zones/README.md: a subnet only the
    // consolidated list has, the seed's names kept, the NCSI probes, the GCC name of the
    // consolidated list, the Apple row the page no longer has, and the multi-tenant wildcard the
    // page cannot vouch for.
    let rejected = "rejected '*.webpubsub.azure.com': a wildcard directly under \
                    'webpubsub.azure.com', a multi-tenant suffix: any of its tenants can create \
                    such names";
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "endpoint set 163:",
            "  - network 20.189.172.160/27",
            "endpoint set 172:",
            "  - name *.emdl.ws.microsoft.com",
            "  - name emdl.ws.microsoft.com",
            "endpoint set 181:",
            "  - name *.trouter.skype.com",
            "endpoint set 188:",
            "  - name remoteassistanceweb.usgov.communication.azure.us",
            "endpoint set 164:",
            "  - name emdl.ws.microsoft.com",
            "endpoint set 165:",
            "  - name www.msftncsi.com",
            "  - name www.msftconnecttest.com",
            "  - port tcp/80",
            "endpoint set 178: only in the catalog",
            &format!("endpoint set 187: {rejected}"),
            &format!("consolidated list: {rejected}"),
        ]
    );
}

#[test]
fn a_changed_page_gives_exactly_its_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("endpoints.md");
    std::fs::write(&path, changed_page()).unwrap();
    let (_, before, _) = page_diff(&repo().join("tests/fixtures/intune-endpoints-page.md"), &[]);
    let (code, out, err) = page_diff(&path, &[]);
    assert_eq!(code, 1, "something to add: {out}{err}");
    let (added, removed) = line_changes(&before, &out);
    assert_eq!(
        added,
        [
            "  - network 20.37.153.0/24",
            "endpoint set 193: only in the page (new, profile \"autopilot\"): Windows Autopilot - \
             New service",
            "  + name new-autopilot.microsoft.com",
            "  + network 203.0.113.0/24",
            "  + port tcp/443",
            "consolidated list: not covered by any endpoint set (profile \"intune-core\")",
            "  + name extra.intune.microsoft.com",
            "Migrating device health attestation compliance policies to Microsoft Azure \
             attestation (eu): not covered by any endpoint set of tenant region eu (profile \
             \"attestation\")",
            "  + name intunemaape20.neu.attest.azure.net",
        ],
        "{out}"
    );
    assert!(removed.is_empty(), "{removed:?}");
    let (code, out, _) = page_diff(&path, &["--json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["source"], "page");
    assert_eq!(json["new"][0]["id"], "193");
    assert_eq!(json["new"][0]["networks"][0], "203.0.113.0/24");
    assert_eq!(
        json["uncovered"][0]["names"][0],
        "extra.intune.microsoft.com"
    );
    assert_eq!(json["uncovered"][1]["region"], "eu");
}

#[test]
fn a_restructured_page_is_a_named_failure_and_pull_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let page = page_fixture();
    let autopilot_header = "| ID | Desc | Category | ER | Addresses | Ports |\n|----|------|----------|----|-----------|-------|\n| 164 |";
    assert!(page.contains(autopilot_header));
    let header_line = page[..page.find(autopilot_header).unwrap()].lines().count() + 1;
    for (name, text, want) in [
        (
            "lost-column.md",
            page.replacen(
                autopilot_header,
                "| ID | Desc | Category | ER | Addresses |\n|----|------|----------|----|-----------|\n| 164 |",
                1,
            ),
            format!(
                "page: line {header_line}: the endpoint table under 'Windows Autopilot \
                 dependencies' has no Ports column (header: | ID | Desc | Category | ER | \
                 Addresses |)"
            ),
        ),
        (
            "no-list.md",
            page.replace("## Consolidated Endpoint List", "## Endpoints, all of them"),
            "page: no Consolidated Endpoint List section".to_string(),
        ),
        (
            "truncated.md",
            page[..page.find("IP Subnets").unwrap() + 20].to_string(),
            "never closed (a truncated page?)".to_string(),
        ),
        (
            "no-id.md",
            page.replace("| ID |", "| Number |"),
            "the endpoint table under 'Intune core service' has no ID column".to_string(),
        ),
        (
            "no-tables.md",
            page.replace("| ID", "| Number")
                .replace("Addresses", "Hosts")
                .replace("Category", "Kind"),
            "page: no endpoint table found".to_string(),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = page_diff(&path, &[]);
        assert_eq!(code, 2, "{name}: {out}");
        assert!(err.contains(&want), "{name}: {err}");
        let overlay = dir.path().join("page.toml");
        let (code, _, err) = catalog_pull("--page", &path, &overlay, Path::new("config/dnsfence.toml"));
        assert_ne!(code, 0, "{name}");
        assert!(err.contains(&want), "{name}: {err}");
        assert!(!overlay.exists(), "{name}: no overlay written");
    }
}

/// A config for the shipped catalog and `dir/zones.d`, one view with `profiles`.
fn config_in(dir: &Path, profiles: &str, regions: &str) -> std::path::PathBuf {
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[zones]\ndirs = [\"{}\", \"zones.d\"]\ntenant_regions = [{regions}]\n\
             [upstream]\nservers = [\"127.0.0.1:5300\"]\n\
             [[view]]\nname = \"v\"\nnetworks = [\"10.0.0.0/8\"]\nprofiles = [{profiles}]\n",
            repo().join("zones").display()
        ),
    )
    .unwrap();
    cfg
}

/// A heading longer than a zone file's description may be (found by the `page` fuzz target):
/// the overlay's description is cut, and the overlay still loads.
#[test]
fn a_heading_longer_than_a_description_still_makes_an_overlay_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones.d")).unwrap();
    let page = dir.path().join("endpoints.md");
    // Control characters: the list's name quotes them escaped, six characters each.
    let long = format!(
        "## Migrating device health attestation compliance policies to Microsoft {}Azure attestation",
        "\u{1}".repeat(60)
    );
    let text = changed_page().replacen(
        "## Migrating device health attestation compliance policies to Microsoft Azure attestation",
        &long,
        1,
    );
    std::fs::write(&page, text).unwrap();
    let cfg = config_in(dir.path(), "\"attestation\"", "\"eu\"");
    let overlay = dir.path().join("zones.d/page.toml");
    let (code, out, err) = catalog_pull("--page", &page, &overlay, &cfg);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = dnsfence(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, policy) = dnsfence::daemon::app::load(&cfg).unwrap();
    let set = policy.catalog.set("page-attestation-eu").unwrap();
    assert!(
        set.description.chars().count() <= 256,
        "{}",
        set.description
    );
    assert!(set.description.ends_with('…'), "{}", set.description);
    assert!(
        policy
            .view("v")
            .unwrap()
            .lookup("intunemaape20.neu.attest.azure.net")
            .is_some()
    );
}

#[test]
fn pull_from_the_page_writes_an_overlay_that_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones.d")).unwrap();
    let page = dir.path().join("endpoints.md");
    std::fs::write(&page, changed_page()).unwrap();
    let profiles = "\"intune-core\", \"autopilot\", \"attestation\"";
    let cfg = config_in(dir.path(), profiles, "\"eu\"");
    let overlay = dir.path().join("zones.d/page.toml");
    for round in 0..2 {
        let (code, out, err) = catalog_pull("--page", &page, &overlay, &cfg);
        assert_eq!(code, 0, "round {round}: {out}{err}");
        assert!(
            out.contains("0 endpoint sets extended, 1 new, 2 lists beyond the catalog"),
            "{out}"
        );
    }
    let text = std::fs::read_to_string(&overlay).unwrap();
    assert!(text.contains("# version: 2026-03-24"), "{text}");
    assert!(!text.contains("20.37.153.0"), "nothing removed: {text}");
    let (code, out, err) = dnsfence(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("page.toml: 193, page-consolidated, page-attestation-eu"),
        "{out}"
    );
    let (_, policy) = dnsfence::daemon::app::load(&cfg).unwrap();
    assert!(
        policy
            .catalog
            .set("163")
            .unwrap()
            .networks
            .contains(&"20.37.153.0/24".parse().unwrap()),
        "the floor stays"
    );
    let view = policy.view("v").unwrap();
    for name in [
        "new-autopilot.microsoft.com",
        "extra.intune.microsoft.com",
        "intunemaape20.neu.attest.azure.net",
    ] {
        assert!(view.lookup(name).is_some(), "{name}");
    }
    assert_eq!(
        policy
            .catalog
            .set("page-attestation-eu")
            .unwrap()
            .tenant_region,
        Some(dnsfence::config::TenantRegion::Eu)
    );
    // A North American tenant does not get the EU host.
    let cfg = config_in(dir.path(), profiles, "\"na\"");
    let (_, policy) = dnsfence::daemon::app::load(&cfg).unwrap();
    let view = policy.view("v").unwrap();
    assert!(view.lookup("intunemaape20.neu.attest.azure.net").is_none());
    assert!(view.lookup("new-autopilot.microsoft.com").is_some());
}

#[test]
fn every_name_and_subnet_of_the_consolidated_list_is_allowed_by_the_default_config() {
    let page = dnsfence::catalog::source::page::parse(&page_fixture()).unwrap();
    let list = &page.lists[0];
    assert_eq!(list.name, "consolidated list");
    // 94 lines of FQDNs (one twice, one rejected: 92 names) and 88 subnets.
    assert_eq!((list.names.len(), list.networks.len()), (92, 88));
    let dir = tempfile::tempdir().unwrap();
    let rc = dir.path().join("resolv.conf");
    std::fs::write(&rc, "nameserver 127.0.0.1\n").unwrap();
    let path = repo().join("config/dnsfence.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = dnsfence::config::Config::parse(&path, &text, &rc).unwrap();
    let policy = dnsfence::daemon::app::compile(&config).unwrap();
    let view = policy.view("local").unwrap();
    // The names of the US Government cloud are left to its profile (off by default).
    // The multi-tenant wildcard the parser rejects is in the consolidated list too.
    let rejected = ["*.webpubsub.azure.com".to_string()];
    let mut other_cloud = Vec::new();
    for name in list.names.iter().chain(rejected.iter()) {
        let asked = dnsfence::cli::explain::asked(name).unwrap();
        if view.lookup(&asked.name).is_some() {
            continue;
        }
        let sets: Vec<&str> = policy
            .catalog
            .sets
            .iter()
            .filter(|s| {
                s.names
                    .iter()
                    .any(|p| p.to_string() == *name || p.to_string() == asked.name)
            })
            .map(|s| s.profile.as_str())
            .collect();
        assert_eq!(sets, ["remote-help-gcc"], "{name} is denied");
        other_cloud.push(name.as_str());
    }
    assert_eq!(
        other_cloud,
        [
            "*.gov.teams.microsoft.us",
            "remoteassistanceweb.usgov.communication.azure.us"
        ]
    );
    let statics: Vec<ipnet::IpNet> = view
        .sets
        .iter()
        .flat_map(|&i| policy.catalog.sets[i as usize].networks.clone())
        .collect();
    for net in &list.networks {
        assert!(
            statics.iter().any(|s| s.contains(net)),
            "{net} is in the view's static ranges"
        );
    }
}

#[test]
fn explain_names_checks_a_list_before_a_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("vendor.txt");
    std::fs::write(
        &list,
        "# a vendor's list\n\nmanage.microsoft.com\n*.powershellgallery.com\n\
         'https://intunemaape10.weu.attest.azure.net'\nwww.example.com\na..b\n",
    )
    .unwrap();
    let (code, out, err) = dnsfence(&[
        "explain",
        "--names",
        list.to_str().unwrap(),
        "-c",
        "config/examples/kiosk.toml",
        "--client",
        "10.20.1.9",
    ]);
    assert_eq!(code, 1, "a name is denied: {out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "manage.microsoft.com: allowed by endpoint set 163",
            "*.powershellgallery.com (tried dnsfence-probe.powershellgallery.com): allowed by \
             endpoint set powershell-gallery",
            "'https://intunemaape10.weu.attest.azure.net': allowed by endpoint set maa-eu",
            "www.example.com: denied (not_allowlisted)",
            "a..b: invalid name: empty label",
            "3 allowed, 1 denied, 1 invalid",
        ]
    );
    // From standard input: all allowed, exit 0.
    let cfg = config_in(dir.path(), "\"intune-core\", \"wns\"", "\"na\"");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dnsfence"))
        .args(["explain", "--names", "-", "-c"])
        .arg(&cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .current_dir(repo())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"go.microsoft.com\nsin.notify.windows.com\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("2 allowed, 0 denied\n"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A single invalid name is an error, with the reason.
    let (code, _, err) = dnsfence(&["explain", "a..b", "-c", "config/examples/kiosk.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("'a..b' is not a valid name: empty label"),
        "{err}"
    );
}

#[test]
fn a_running_server_follows_the_page_and_keeps_the_last_good_overlay() {
    crate::harness::run(async {
        let dir = tempfile::tempdir().unwrap();
        let Some(server) =
            FeedServer::start_as(dir.path(), "endpoints.feed.test", Served::fixture("unused"))
        else {
            return;
        };
        let upstream = crate::harness::Authority::start().await;
        let state = dir.path().join("state");
        let extra = format!(
            "[catalog]\npage = \"https://endpoints.feed.test:{}/page/endpoints.md\"\n\
             ca_file = \"{}\"\nstate_dir = \"{}\"\n",
            server.addr.port(),
            dir.path().join("ca.pem").display(),
            state.display()
        );
        let f = start_with(dir.path(), upstream, &extra).await;
        let c = f.client();
        let overlay = state.join("page.toml");
        assert!(
            crate::harness::eventually(Duration::from_secs(5), || overlay.exists()).await,
            "overlay written"
        );
        assert_eq!(fetches(&f, "page", "ok").await, 1.0);
        let denied = c.ask("evilmanage.microsoft.com.", RecordType::A).await;
        assert_eq!(crate::harness::rcode(&denied), ResponseCode::NXDomain);

        // A SIGHUP polls again: the same page is "unchanged".
        f.signals
            .send(dnsfence::daemon::signal::Signal::Reload)
            .unwrap();
        assert!(
            crate::harness::eventually_async(Duration::from_secs(5), || async {
                fetches(&f, "page", "unchanged").await >= 1.0
            })
            .await
        );

        // The page adds a name to 163: answered after one refresh, without a restart.
        let changed = page_fixture().replacen(
            "`*.manage.microsoft.com`<BR>`manage.microsoft.com`",
            "`*.manage.microsoft.com`<BR>`evilmanage.microsoft.com`<BR>`manage.microsoft.com`",
            1,
        );
        server.served.lock().unwrap().page = changed.clone();
        f.signals
            .send(dnsfence::daemon::signal::Signal::Reload)
            .unwrap();
        let allowed = crate::harness::eventually_async(Duration::from_secs(5), || async {
            let a = c.ask("evilmanage.microsoft.com.", RecordType::A).await;
            crate::harness::rcode(&a) == ResponseCode::NoError
        })
        .await;
        assert!(allowed, "the page's name is answered without a restart");
        assert_eq!(fetches(&f, "page", "ok").await, 2.0);
        let (_, catalog) = crate::harness::http_get(f.http.unwrap(), "/v1/catalog").await;
        let catalog: serde_json::Value = serde_json::from_str(&catalog).unwrap();
        let page = catalog["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"] == "page")
            .expect("a page source");
        assert_eq!(page["version"], "2026-03-24");
        assert_eq!(page["extends"], serde_json::json!(["163"]));
        let (_, metrics) = crate::harness::http_get(f.http.unwrap(), "/metrics").await;
        assert!(
            metrics.contains("dnsfence_catalog_version{source=\"page\"} 20260324"),
            "{metrics}"
        );

        // A 500, a truncated body and a restructured page keep the last good overlay.
        let good = std::fs::read_to_string(&overlay).unwrap();
        let restructured = changed.replace("## Consolidated Endpoint List", "## Everything");
        for (status, body, result) in [
            (500, changed.clone(), "http_error"),
            (200, changed[..changed.len() / 2].to_string(), "invalid"),
            (200, restructured, "invalid"),
        ] {
            {
                let mut served = server.served.lock().unwrap();
                served.status = status;
                served.page = body;
            }
            reload_keeps_overlay(&f, &c, "page", result, &overlay, &good).await;
            let error = f.status.sources.followed[0].last_error().unwrap();
            assert!(error.contains("/page/endpoints.md"), "named: {error}");
        }
        f.stop().await;
    });
}

/// The Autopilot requirements fixture (`tests/fixtures/autopilot-requirements.md`: the page's
/// structure and the hosts of its Networking tab).
fn autopilot_fixture() -> String {
    std::fs::read_to_string(repo().join("tests/fixtures/autopilot-requirements.md")).unwrap()
}

/// The fixture with one more Deployment Service host.
fn autopilot_with_new_host() -> String {
    autopilot_fixture().replacen(
        "- `https://login.live.com`",
        "- `https://login.live.com`\n- `https://new.dds.microsoft.com`",
        1,
    )
}

#[test]
fn the_autopilot_page_is_covered_and_a_new_host_is_pulled_into_the_autopilot_profile() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("requirements.md");
    std::fs::write(&fixture, autopilot_fixture()).unwrap();
    let (code, out, err) = catalog_diff("--autopilot-page", &fixture, &[]);
    assert_eq!((code, out.as_str()), (0, "no differences\n"), "{err}");
    std::fs::write(&fixture, autopilot_with_new_host()).unwrap();
    let (code, out, _) = catalog_diff("--autopilot-page", &fixture, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "section \"Windows Autopilot Deployment Service\": not covered by any endpoint set \
             (profile \"autopilot\")",
            "  + name new.dds.microsoft.com",
        ]
    );
    // Pulled into a local zone directory, the host is answered for the Windows family.
    let zones_d = dir.path().join("zones.d");
    std::fs::create_dir(&zones_d).unwrap();
    let overlay = zones_d.join("autopilot-page.toml");
    let (code, out, err) = catalog_pull(
        "--autopilot-page",
        &fixture,
        &overlay,
        Path::new("config/dnsfence.toml"),
    );
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(&overlay).unwrap();
    assert!(text.contains("# version: 2025-07-08"), "{text}");
    assert!(
        text.contains("id = \"autopilot-page-windows-autopilot-deployment-service\""),
        "{text}"
    );
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[zones]\ndirs = [\"{}\", \"zones.d\"]\n[upstream]\nservers = [\"127.0.0.1:5300\"]\n\
             [[view]]\nname = \"kiosk\"\nnetworks = [\"10.0.0.0/8\"]\nfamilies = [\"windows\"]\n",
            repo().join("zones").display()
        ),
    )
    .unwrap();
    let (code, out, err) = dnsfence(&[
        "explain",
        "new.dds.microsoft.com",
        "-c",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("endpoint set autopilot-page-windows-autopilot-deployment-service (autopilot"),
        "{out}"
    );
    // A page without its Networking tab or its Deployment Service section is refused whole.
    for (from, to, why) in [
        ("(#tab/networking)", "(#tab/network)", "no Networking tab"),
        (
            "##### Windows Autopilot Deployment Service",
            "##### Deployment",
            "no 'Deployment Service' section",
        ),
    ] {
        std::fs::write(&fixture, autopilot_fixture().replace(from, to)).unwrap();
        let (code, _, err) = catalog_diff("--autopilot-page", &fixture, &[]);
        assert_eq!(code, 2, "{why}");
        assert!(err.contains(why), "{err}");
    }
}

#[test]
fn a_running_server_follows_the_autopilot_page() {
    crate::harness::run(async {
        let dir = tempfile::tempdir().unwrap();
        let mut served = Served::fixture("unused");
        served.page = autopilot_fixture();
        let Some(server) = FeedServer::start_as(dir.path(), "endpoints.feed.test", served) else {
            return;
        };
        let upstream = crate::harness::Authority::start().await;
        let state = dir.path().join("state");
        let extra = format!(
            "[catalog]\nautopilot_page = \"https://endpoints.feed.test:{}/page/requirements.md\"\n\
             ca_file = \"{}\"\nstate_dir = \"{}\"\n",
            server.addr.port(),
            dir.path().join("ca.pem").display(),
            state.display()
        );
        let f = start_with(dir.path(), upstream, &extra).await;
        let overlay = state.join("autopilot-page.toml");
        assert!(
            crate::harness::eventually(Duration::from_secs(5), || overlay.exists()).await,
            "overlay written"
        );
        assert_eq!(fetches(&f, "autopilot-page", "ok").await, 1.0);
        let allowed = || {
            f.engine
                .policy
                .load()
                .view("loopback")
                .unwrap()
                .lookup("new.dds.microsoft.com")
                .is_some()
        };
        assert!(!allowed());
        // The page names a new host: allowed after one refresh, without a restart.
        server.served.lock().unwrap().page = autopilot_with_new_host();
        f.signals
            .send(dnsfence::daemon::signal::Signal::Reload)
            .unwrap();
        assert!(
            crate::harness::eventually(Duration::from_secs(5), allowed).await,
            "the page's new host is allowed without a restart"
        );
        let m = f
            .client()
            .ask("new.dds.microsoft.com.", RecordType::A)
            .await;
        assert_eq!(crate::harness::ede(&m), None, "not a denial");
        assert_eq!(f.upstream.seen.count("new.dds.microsoft.com."), 1);
        let (_, catalog) = crate::harness::http_get(f.http.unwrap(), "/v1/catalog").await;
        let catalog: serde_json::Value = serde_json::from_str(&catalog).unwrap();
        let source = catalog["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"] == "autopilot-page")
            .expect("an autopilot-page source");
        assert_eq!(source["version"], "2025-07-08");
        // A restructured page keeps the last good overlay.
        let good = std::fs::read_to_string(&overlay).unwrap();
        let before = fetches(&f, "autopilot-page", "invalid").await;
        server.served.lock().unwrap().page =
            autopilot_with_new_host().replace("(#tab/networking)", "(#tab/net)");
        f.signals
            .send(dnsfence::daemon::signal::Signal::Reload)
            .unwrap();
        assert!(
            crate::harness::eventually_async(Duration::from_secs(5), || async {
                fetches(&f, "autopilot-page", "invalid").await > before
            })
            .await
        );
        assert_eq!(std::fs::read_to_string(&overlay).unwrap(), good);
        assert!(allowed(), "kept");
        f.stop().await;
    });
}
