//! `dnsfence check` and `dnsfence run` on the same broken configs: what `run` refuses at start,
//! `check` refuses too, with the same message — so `check && systemctl restart dnsfence` never
//! takes a working resolver down. And a huge value is refused with a short message.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A config that starts (loopback, ephemeral port, HTTP off, an upstream nobody asks), with
/// `extra` appended; `extra` lines starting with `upstream.` or `server.` go into that section.
fn config(dir: &Path, name: &str, view: &str, extra: &str) -> PathBuf {
    let path = dir.join(name);
    let (upstream, extra): (Vec<&str>, Vec<&str>) =
        extra.lines().partition(|l| l.starts_with("upstream."));
    let upstream: String = if upstream.is_empty() {
        "servers = [\"127.0.0.1:9\"]".into()
    } else {
        upstream
            .iter()
            .map(|l| l.trim_start_matches("upstream."))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (server, extra): (Vec<&str>, Vec<&str>) =
        extra.into_iter().partition(|l| l.starts_with("server."));
    let server: String = server
        .iter()
        .map(|l| l.trim_start_matches("server."))
        .collect::<Vec<_>>()
        .join("\n");
    let extra = extra.join("\n");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n{server}\n[http]\nlisten = \"off\"\n\
             [zones]\ndirs = [\"{}\"]\n[upstream]\n{upstream}\n{extra}\n\
             [[view]]\nname = \"{view}\"\nnetworks = [\"127.0.0.0/8\"]\nprofiles = [\"intune-core\"]\n",
            repo().join("zones").display()
        ),
    )
    .unwrap();
    path
}

/// `prefix… dnsfence ARGS` (a shell prefix such as `ulimit -n 256;`): exit code and the last
/// line of standard error, within 3 s (a `run` that starts is stopped and reported as `None`).
fn dnsfence(prefix: &[&str], args: &[&str]) -> (Option<i32>, String) {
    let bin = env!("CARGO_BIN_EXE_dnsfence");
    let mut cmd = if prefix.is_empty() {
        Command::new(bin)
    } else {
        let mut c = Command::new(prefix[0]);
        c.args(&prefix[1..]).arg(bin);
        c
    };
    let mut child = cmd
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > Duration::from_secs(3) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let last = err.lines().last().unwrap_or_default().to_string();
    (code, last)
}

/// Runs `check` and `run` on `cfg` (each behind `prefix`) and asserts they refuse it alike.
fn both_refuse(prefix: &[&str], cfg: &Path, want: &str) {
    let cfg = cfg.to_str().unwrap();
    let (check_code, check_err) = dnsfence(prefix, &["check", "-c", cfg]);
    let (run_code, run_err) = dnsfence(prefix, &["run", "-c", cfg]);
    assert_eq!(check_code, Some(1), "{cfg}: check: {check_err}");
    assert_eq!(run_code, Some(1), "{cfg}: run: {run_err}");
    // run's line carries no log prefix: errors at start are printed as check prints them.
    assert_eq!(check_err, run_err, "{cfg}: the same message");
    assert!(check_err.contains(want), "{cfg}: {check_err}");
    assert!(check_err.len() < 500, "{cfg}: a short message: {check_err}");
}

#[test]
fn check_refuses_what_run_refuses_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("logs-as-dir")).unwrap();
    std::fs::write(d.join("empty.pem"), "").unwrap();
    std::fs::write(d.join("a-file"), "").unwrap();
    let cases: Vec<(&str, String, String)> = vec![
        (
            "log-missing-dir.toml",
            format!(
                "[query_log]\nlevel = \"all\"\npath = \"{}/missing/q.jsonl\"",
                d.display()
            ),
            "missing/q.jsonl: its directory".into(),
        ),
        (
            "log-is-dir.toml",
            format!(
                "[query_log]\nlevel = \"all\"\npath = \"{}/logs-as-dir\"",
                d.display()
            ),
            "logs-as-dir: is a directory".into(),
        ),
        (
            "tls-ca.toml",
            format!(
                "upstream.servers = [\"tls://127.0.0.1:9#dns.test\"]\n\
                 upstream.tls_ca_file = \"{}/nope.pem\"",
                d.display()
            ),
            "upstream tls_ca_file:".into(),
        ),
        (
            "catalog-ca.toml",
            format!(
                "[catalog]\npage = \"https://127.0.0.1:9/endpoints.md\"\nca_file = \"{}/empty.pem\"\nstate_dir = \"{}\"",
                d.display(),
                d.display()
            ),
            "catalog ca_file:".into(),
        ),
        (
            "state-dir.toml",
            format!(
                "[catalog]\npage = \"https://127.0.0.1:9/endpoints.md\"\nstate_dir = \"{}/a-file\"",
                d.display()
            ),
            "a-file: not a directory".into(),
        ),
        (
            "warm-state-dir.toml",
            format!(
                "server.warm_restart = true\nserver.state_dir = \"{}/a-file\"",
                d.display()
            ),
            "server state_dir".into(),
        ),
        (
            "sync-certs.toml",
            format!(
                "[fence]\nenabled = true\nbackend = \"list\"\n[sync]\nlisten = \"127.0.0.1:0\"\n\
                 ca_file = \"{d}/empty.pem\"\ncert_file = \"{d}/empty.pem\"\nkey_file = \"{d}/empty.pem\"",
                d = d.display()
            ),
            "sync: ".into(),
        ),
        (
            "netns.toml",
            "[fence]\nenabled = true\nnetns = \"dnsfence-no-such-namespace\"".into(),
            "fence: network namespace 'dnsfence-no-such-namespace': not found".into(),
        ),
    ];
    for (name, extra, want) in &cases {
        let cfg = config(d, name, "v", extra);
        both_refuse(&[], &cfg, want);
    }
    // The descriptor budget, under a low limit.
    let cfg = config(d, "budget.toml", "v", "");
    both_refuse(
        &["sh", "-c", "ulimit -n 256 && exec \"$0\" \"$@\""],
        &cfg,
        "raise LimitNOFILE",
    );
    // The fence without CAP_NET_ADMIN (setpriv drops it from the bounding set).
    let cfg = config(d, "caps.toml", "v", "[fence]\nenabled = true");
    if Command::new("setpriv").arg("--version").output().is_ok() {
        both_refuse(
            &[
                "setpriv",
                "--bounding-set=-net_admin",
                "--inh-caps=-net_admin",
            ],
            &cfg,
            "lacks CAP_NET_ADMIN",
        );
    } else {
        crate::harness::skip(
            "check_refuses_what_run_refuses (capabilities)",
            "setpriv is not installed",
        );
    }
    // A huge value: refused with a short message naming the bound; a view name that would not
    // fit a set name or a metric label, too.
    let huge = "v".repeat(10_000_000);
    let cfg = config(d, "huge.toml", &huge, "");
    both_refuse(
        &[],
        &cfg,
        "… (9999920 more characters)': 10000000 characters: strings here are at most 4096",
    );
    let cfg = config(d, "long.toml", &"v".repeat(40), "");
    both_refuse(&[], &cfg, "40 characters: a view name is at most 32");
    // And the control: a good config passes check and run starts.
    let cfg = config(d, "good.toml", "v", "");
    let (code, err) = dnsfence(&[], &["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = dnsfence(&[], &["run", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, None, "run serves until stopped: {err}");
}

#[test]
fn a_read_only_query_log_is_refused_by_check_and_run() {
    // A read-only tmpfs in a mount namespace of the test's own (root bypasses file modes; a
    // read-only file system it does not).
    let Some(_) = crate::harness::root_or_skip("a_read_only_query_log_is_refused_by_check_and_run")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let cfg = config(
        dir.path(),
        "ro.toml",
        "v",
        &format!(
            "[query_log]\nlevel = \"all\"\npath = \"{}/q.jsonl\"",
            ro.display()
        ),
    );
    let mount = format!(
        "mount -t tmpfs -o ro tmpfs {} && exec \"$0\" \"$@\"",
        ro.display()
    );
    both_refuse(
        &["unshare", "--mount", "sh", "-c", &mount],
        &cfg,
        "Read-only file system",
    );
}
