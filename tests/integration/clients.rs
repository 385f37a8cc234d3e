//! What real stub resolvers do with dnsfence's deny answers, in a network namespace the test
//! makes: glibc, given dnsfence and a second resolver in resolv.conf, stops at dnsfence's
//! NXDOMAIN (the default) and never asks the second one; with REFUSED it does.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{Netns, netns_or_skip, run, start_unbound, wait_for};

const DENIED: &str = "evil.example";

/// A config from the shipped default, serving 127.0.0.1:53 in the namespace, with a loopback
/// upstream where nothing listens (a denied name never reaches it anyway).
fn config(dir: &Path, deny: Option<&str>) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("config/dnsfence.toml"))
        .unwrap()
        .replace("127.0.0.1:5353", "127.0.0.1:53")
        .replace(
            "\"../zones\"",
            &format!("\"{}\"", root.join("zones").display()),
        )
        .replace(
            "timeout_ms = 2000",
            "servers = [\"127.0.0.3:53\"]\ntimeout_ms = 2000",
        )
        .replace("level = \"denied\"", "level = \"none\"");
    if let Some(rcode) = deny {
        text = text.replace(
            "deny_rcode = \"nxdomain\"",
            &format!("deny_rcode = \"{rcode}\""),
        );
    }
    text.push_str("\n[http]\nlisten = \"off\"\n");
    let path = dir.join(format!("dnsfence-{}.toml", deny.unwrap_or("default")));
    std::fs::write(&path, text).unwrap();
    path
}

/// `getent hosts NAME` in the namespace: (exit code, stdout, how long it took).
async fn getent(ns: &Netns, name: &str) -> (i32, String, Duration) {
    let t = Instant::now();
    let out = ns
        .exec("getent")
        .args(["hosts", name])
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        t.elapsed(),
    )
}

#[test]
fn glibc_stops_at_the_default_denial_and_never_asks_the_next_resolver() {
    let Some(ns) = netns_or_skip("glibc_stops_at_the_default_denial") else {
        return;
    };
    if !Path::new("/usr/sbin/unbound").exists() {
        crate::harness::skip(
            "glibc_stops_at_the_default_denial",
            "unbound is not installed",
        );
        return;
    }
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let up = ns
            .exec("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .await
            .unwrap();
        assert!(up.success());
        // The second resolver: Unbound on 127.0.0.2, which would answer the denied name.
        let (_unbound, unbound_log) = start_unbound(
            &ns,
            dir.path(),
            "127.0.0.2",
            &[
                format!("{DENIED}. A 192.0.2.99"),
                format!("{DENIED}. AAAA 2001:db8::99"),
            ],
        )
        .await;
        ns.resolv_conf(
            "nameserver 127.0.0.1\nnameserver 127.0.0.2\noptions timeout:1 attempts:1\n",
        );

        for (deny, leaks) in [(None, false), (Some("refused"), true)] {
            let cfg = config(dir.path(), deny);
            let stderr = dir
                .path()
                .join(format!("dnsfence-{}.log", deny.unwrap_or("default")));
            let mut dnsfence = ns
                .exec(env!("CARGO_BIN_EXE_dnsfence"))
                .args(["run", "-c"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr).unwrap())
                .spawn()
                .unwrap();
            wait_for(&stderr, "dnsfence ready").await;
            let before = std::fs::read_to_string(&unbound_log).unwrap();
            let (code, out, took) = getent(&ns, DENIED).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = std::fs::read_to_string(&unbound_log).unwrap();
            let asked_second = after[before.len()..].contains(DENIED);
            let _ = dnsfence.kill().await;
            if leaks {
                // The control: REFUSED makes glibc ask the next nameserver, which answers.
                assert!(asked_second, "REFUSED: glibc asked Unbound: {after}");
                assert_eq!(code, 0, "{out}");
                assert!(
                    out.contains("192.0.2.99") || out.contains("2001:db8::99"),
                    "{out}"
                );
            } else {
                assert_eq!(code, 2, "getent: not found ({out})");
                assert!(
                    !asked_second,
                    "the second resolver saw the denied name: {after}"
                );
                assert!(
                    took < Duration::from_secs(2),
                    "glibc stopped at once: {took:?}"
                );
            }
        }
    });
}
