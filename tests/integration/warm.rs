//! Warm restart: what a stop writes to `[server] state_dir` and the next start reads back — the
//! answer cache (every device's next query is a cache hit, the upstream is not asked again) and
//! the fence's ledger (its elements back in the kernel before dnsfence serves, explained on
//! `/v1/sets`, repaired after a flush). The kernel part runs against real nftables in a network
//! namespace the test creates; the cache part with the list backend, everywhere.

use std::path::Path;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::harness::{
    Authority, Netns, Server, bulk_name, eventually, fence_section, http_get, log_lines,
    netns_or_skip, rcode, run,
};

/// Distinct names a test answers before the restart.
const NAMES: u16 = 1000;

fn config(dir: &Path, fence: &str, log: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nwarm_restart = true\nstate_dir = \"{}\"\n\
         [upstream]\ntimeout_ms = 2000\ncache_size = 5000\n\
         [query_log]\nlevel = \"all\"\nsample_per_second = 1000000\npath = \"{}\"\n{fence}",
        dir.display(),
        dir.join(log).display(),
    )
}

/// Asks every bulk name; each answer must carry its address.
async fn ask_all(f: &Server) {
    let c = f.client();
    for n in 0..NAMES {
        let (name, ip) = bulk_name(n);
        let a = c.ask(&name, RecordType::A).await;
        assert_eq!(rcode(&a), ResponseCode::NoError, "{name}");
        assert_eq!(a.answers.len(), 1, "{name}");
        assert_eq!(a.answers[0].data, RData::A(hickory_proto::rr::rdata::A(ip)));
    }
}

fn bulk_asked(upstream: &Authority) -> usize {
    upstream
        .seen
        .all()
        .iter()
        .filter(|(n, _)| n.ends_with(crate::harness::BULK))
        .count()
}

/// A restart on the same config: the first query for each of 1,000 names is a cache hit (the
/// upstream sees none of them, the query log says `cache_hit`), and the elements come back with
/// what admitted them. `ns`: the kernel's sets too.
async fn restart_keeps_cache_and_ledger(ns: Option<&Netns>) {
    let dir = tempfile::tempdir().unwrap();
    let fence = match ns {
        Some(ns) => fence_section(ns, ""),
        None => "[fence]\nenabled = true\nbackend = \"list\"\n".to_string(),
    };
    let first = Server::builder()
        .config(&config(dir.path(), &fence, "before.jsonl"))
        .start()
        .await;
    ask_all(&first).await;
    let asked = bulk_asked(&first.upstream);
    assert_eq!(asked, usize::from(NAMES), "each name asked once");
    let upstream = first.stop_keeping_upstream().await;
    assert!(
        dir.path().join(dnsfence::state::warm::FILE).exists(),
        "the stop wrote the state"
    );
    if let Some(ns) = ns {
        // As a reboot would: the kernel's sets are gone while dnsfence is down.
        ns.nft(&["flush", "ruleset"]);
    }

    let second = Server::builder()
        .upstream(upstream)
        .config(&config(dir.path(), &fence, "after.jsonl"))
        .start()
        .await;
    let restored = &second.engine.metrics.warm_restored;
    assert_eq!(
        restored.with_label_values(&["answers"]).get(),
        i64::from(NAMES)
    );
    assert!(restored.with_label_values(&["elements"]).get() >= i64::from(NAMES));
    if let Some(ns) = ns {
        // Back in the kernel before the first query.
        let v4 = ns.elements("loopback_v4");
        let (_, ip) = bulk_name(7);
        assert!(
            v4.iter().any(|e| e.0 == ip.to_string()),
            "restored into the kernel at start: {} elements",
            v4.len()
        );
        assert!(v4.len() >= usize::from(NAMES), "{} elements", v4.len());
    }
    ask_all(&second).await;
    assert_eq!(
        bulk_asked(&second.upstream),
        asked,
        "no name was asked upstream again"
    );
    assert_eq!(second.engine.metrics.cache_hits.get(), u64::from(NAMES));
    let lines = log_lines(&dir.path().join("after.jsonl"), usize::from(NAMES)).await;
    assert_eq!(lines.len(), usize::from(NAMES));
    assert!(
        lines.iter().all(|l| l["cache_hit"] == true),
        "every first query after the restart is a cache hit"
    );

    // /v1/sets explains the elements admitted before the restart.
    let (status, body) = http_get(second.http.unwrap(), "/v1/sets").await;
    assert_eq!(status, 200);
    let sets: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (name, ip) = bulk_name(42);
    let e = sets["views"][0]["sets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["elements"].as_array().into_iter().flatten())
        .find(|e| e["addr"] == ip.to_string())
        .expect("the element is listed");
    assert_eq!(e["admitted_by"][0]["name"], name.trim_end_matches('.'));
    assert!(
        !e["admitted_by"][0]["endpoint_sets"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    if let Some(ns) = ns {
        // And a flush afterwards is repaired with them (resync every 300 ms).
        ns.nft(&["flush", "ruleset"]);
        let back = eventually(Duration::from_secs(3), || {
            ns.elements("loopback_v4").len() >= usize::from(NAMES)
        })
        .await;
        assert!(
            back,
            "repaired: {} elements",
            ns.elements("loopback_v4").len()
        );
    }
    second.stop().await;
}

#[test]
fn a_restart_answers_every_name_from_the_cache_and_keeps_the_pull_list() {
    run(restart_keeps_cache_and_ledger(None));
}

#[test]
fn a_restart_keeps_the_kernel_sets_even_after_a_reboot_and_a_flush() {
    let Some(ns) = netns_or_skip("a_restart_keeps_the_kernel_sets_even_after_a_reboot_and_a_flush")
    else {
        return;
    };
    run(restart_keeps_cache_and_ledger(Some(&ns)));
}

/// A state file that is truncated, foreign or from another version: the real binary starts cold,
/// says why on standard error, counts it, and serves.
#[test]
fn a_damaged_state_file_is_ignored_with_a_warning() {
    run(async {
        let upstream = Authority::start().await;
        let dir = tempfile::tempdir().unwrap();
        let (cfg, port) = crate::harness::binary_config(dir.path(), upstream.addr).await;
        let text = std::fs::read_to_string(&cfg).unwrap().replacen(
            "[server]",
            &format!(
                "[server]\nwarm_restart = true\nstate_dir = \"{}\"",
                dir.path().display()
            ),
            1,
        );
        std::fs::write(&cfg, text).unwrap();
        let state = dir.path().join(dnsfence::state::warm::FILE);
        // A real state file first, then damaged three ways.
        let q = crate::harness::query("manage.microsoft.com.", RecordType::A, Some(1232))
            .to_vec()
            .unwrap();
        let client = crate::harness::Client {
            server: format!("127.0.0.1:{port}").parse().unwrap(),
        };
        let run_once = || async {
            let child = crate::harness::spawn_run(&cfg);
            let answered = client
                .first_answer(&q, 100, Duration::from_millis(100))
                .await;
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
            let out = child.wait_with_output().await.unwrap();
            assert!(out.status.success(), "{out:?}");
            (
                answered.is_some(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        };
        let (answered, err) = run_once().await;
        assert!(answered);
        assert!(err.contains("no state to read"), "{err}");
        assert!(err.contains("warm restart: state written"), "{err}");
        let good = std::fs::read(&state).unwrap();
        let mut newer = good.clone();
        newer[14] = 0xff;
        for (bytes, why) in [
            (good[..good.len() / 2].to_vec(), "corrupt"),
            (
                b"not ours".to_vec(),
                "not a dnsfence warm-restart state file",
            ),
            (newer, "format version"),
        ] {
            std::fs::write(&state, &bytes).unwrap();
            let (answered, err) = run_once().await;
            assert!(answered, "{why}: serves anyway");
            assert!(
                err.contains("state file ignored; starting cold"),
                "{why}: {err}"
            );
            assert!(err.contains(why), "{why}: {err}");
        }
    });
}

/// The real binary with the fence in `ns` (`fence_extra` added to `[fence]`), HTTP on a port of
/// its own, warm restart off: what a crash leaves is only what the kernel holds.
async fn crash_config(
    dir: &Path,
    ns: &Netns,
    fence_extra: &str,
) -> (std::path::PathBuf, u16, u16, Authority) {
    let upstream = Authority::start().await;
    let (cfg, port) = crate::harness::binary_config(dir, upstream.addr).await;
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[http]\nlisten = \"127.0.0.1:0\"",
        &format!("[http]\nlisten = \"127.0.0.1:{http}\""),
        1,
    ) + &fence_section(ns, fence_extra);
    std::fs::write(&cfg, text).unwrap();
    (cfg, port, http, upstream)
}

/// The element for `addr` on /v1/sets, once it is listed (at most 5 s).
async fn listed(http: u16, addr: &str) -> Option<serde_json::Value> {
    let at: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    for _ in 0..100 {
        // Until the restarted binary listens.
        if tokio::net::TcpStream::connect(at).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if let (200, body) = http_get(at, "/v1/sets").await {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let found = v["views"][0]["sets"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["elements"].as_array().into_iter().flatten())
                .find(|e| e["addr"] == addr)
                .cloned();
            if found.is_some() {
                return found;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// `kill -9`, no state file: the next start adopts what the kernel's sets hold (provenance
/// "restored", its remaining timeout), and repairs it after a flush. `flush` wipes the sets.
async fn a_crash_is_adopted(
    ns: &Netns,
    fence_extra: &str,
    flush: impl Fn(),
    present: impl Fn() -> bool,
) {
    let dir = tempfile::tempdir().unwrap();
    // The upstream lives as long as the test: the binary asks it.
    let (cfg, port, http, _upstream) = crash_config(dir.path(), ns, fence_extra).await;
    let client = crate::harness::Client {
        server: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    let probe = crate::harness::query("graph.microsoft.com.", RecordType::A, Some(1232))
        .to_vec()
        .unwrap();
    let mut child = crate::harness::spawn_run(&cfg);
    assert!(
        client
            .first_answer(&probe, 100, Duration::from_millis(100))
            .await
            .is_some()
    );
    let a = client.ask("manage.microsoft.com.", RecordType::A).await;
    assert_eq!(rcode(&a), ResponseCode::NoError);
    if !present() {
        child.kill().await.unwrap();
        let out = child.wait_with_output().await.unwrap();
        panic!(
            "admitted before the crash: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    child.kill().await.unwrap();
    assert!(present(), "the kernel keeps it through the crash");

    let mut child = crate::harness::spawn_run(&cfg);
    let e = listed(http, "192.0.2.20")
        .await
        .expect("adopted from the kernel, no query asked");
    assert_eq!(e["provenance"], "restored", "{e}");
    assert_eq!(e["admitted_by"], serde_json::json!([]), "{e}");
    let left = e["expires_in_secs"].as_u64().unwrap();
    assert!(left > 0 && left <= 360, "its remaining timeout: {e}");
    let metrics = http_get(format!("127.0.0.1:{http}").parse().unwrap(), "/metrics")
        .await
        .1;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("dnsfence_warm_restart_restored{what=\"adopted\"}")
                && !l.ends_with(" 0")
        ),
        "counted"
    );
    flush();
    assert!(!present(), "flushed");
    let back = eventually(Duration::from_secs(5), &present).await;
    assert!(back, "repaired from the adopted element");
    child.kill().await.unwrap();
}

#[test]
fn a_crash_leaves_the_kernel_sets_adopted_and_repaired_nftables() {
    let Some(ns) = netns_or_skip("a_crash_leaves_the_kernel_sets_adopted_and_repaired_nftables")
    else {
        return;
    };
    let present = || {
        ns.elements("loopback_v4")
            .iter()
            .any(|e| e.0 == "192.0.2.20")
    };
    run(a_crash_is_adopted(
        &ns,
        "",
        || {
            ns.nft(&["flush", "ruleset"]);
        },
        present,
    ));
}

#[test]
fn a_crash_leaves_the_kernel_sets_adopted_and_repaired_ipset() {
    let Some(ns) =
        crate::ipset::ipset_ns("a_crash_leaves_the_kernel_sets_adopted_and_repaired_ipset")
    else {
        return;
    };
    let present = || {
        crate::ipset::members(&ns, "dnsfence_loopback_v4")
            .iter()
            .any(|(v, _)| v == "192.0.2.20")
    };
    run(a_crash_is_adopted(
        &ns,
        "backend = \"ipset\"",
        || {
            crate::ipset::in_ns(&ns, &["ipset", "flush", "dnsfence_loopback_v4"], None).unwrap();
        },
        present,
    ));
}
