//! dnsfence as a service: the systemd notifications it sends (Type=notify), and the Debian
//! package's binary, config and unit run for real with the unit's two capabilities only.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use tokio::net::UnixDatagram;

use crate::harness::{Authority, Client, netns_or_skip, run, start_unbound, wait_for};

/// Notifications received on the test's NOTIFY_SOCKET, with when they came.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<(Instant, String)>,
}

impl Notifications {
    /// Reads datagrams until one has `line` as a whole line (at most 10 s); returns it.
    async fn until(&mut self, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, self.socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {line} within 10 s; got {:?}", self.seen))
                .unwrap();
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push((Instant::now(), msg.clone()));
            if msg.lines().any(|l| l == line) {
                return msg;
            }
        }
    }

    /// Reads whatever comes for `period`.
    async fn collect(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        let mut buf = vec![0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.socket.recv(&mut buf),
        )
        .await
        {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push((Instant::now(), msg));
        }
    }

    /// Everything but watchdog pings, in order (each message's first line).
    fn states(&self) -> Vec<&str> {
        self.seen
            .iter()
            .filter_map(|(_, m)| m.lines().next())
            .filter(|l| *l != "WATCHDOG=1")
            .collect()
    }
}

fn kill(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

#[test]
fn notifies_ready_reloading_stopping_and_watchdog() {
    run(async {
        let upstream = Authority::start().await;
        let dir = tempfile::tempdir().unwrap();
        let (cfg, port) = crate::harness::binary_config(dir.path(), upstream.addr).await;
        let socket_path = dir.path().join("notify.sock");
        let mut notes = Notifications {
            socket: UnixDatagram::bind(&socket_path).unwrap(),
            seen: Vec::new(),
        };
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dnsfence"))
            .args(["run", "-c", cfg.to_str().unwrap()])
            .env("NOTIFY_SOCKET", &socket_path)
            // WatchdogSec=1s: a ping every 500 ms.
            .env("WATCHDOG_USEC", "1000000")
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();

        let ready = notes.until("READY=1").await;
        assert!(ready.contains("STATUS=answering on"), "{ready}");
        // READY means it answers now: one query, no retry.
        let client = Client {
            server: format!("127.0.0.1:{port}").parse().unwrap(),
        };
        let a = client.ask("manage.microsoft.com.", RecordType::A).await;
        assert_eq!(
            crate::harness::rcode(&a),
            hickory_proto::op::ResponseCode::NoError
        );

        // Watchdog pings at half the interval while the workers turn.
        let watch_from = Instant::now();
        notes.collect(Duration::from_millis(2200)).await;
        kill(pid, "HUP");
        let reloading = notes.until("RELOADING=1").await;
        assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
        let pings: Vec<Instant> = notes
            .seen
            .iter()
            .filter(|(t, m)| m.trim_end() == "WATCHDOG=1" && *t >= watch_from)
            .map(|(t, _)| *t)
            .collect();
        assert!(pings.len() >= 3, "pings in 2.2 s: {}", pings.len());
        let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|g| *g < Duration::from_millis(1000)),
            "a ping within every WatchdogSec: {gaps:?}"
        );

        let after_reload = notes.until("READY=1").await;
        assert!(after_reload.contains("STATUS=reloaded"), "{after_reload}");
        kill(pid, "TERM");
        notes.until("STOPPING=1").await;
        let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .expect("exits within 5 s of SIGTERM")
            .unwrap();
        assert!(exit.success(), "{exit:?}");
        assert_eq!(
            notes.states(),
            ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"],
            "in this order, once each"
        );
    });
}

/// The package to test: `DNSFENCE_DEB`, else the one `deploy/debian/build` leaves in
/// target/debian/ for this version.
fn package() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("DNSFENCE_DEB") {
        return Ok(PathBuf::from(p));
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    let prefix = format!("dnsfence_{}-", env!("CARGO_PKG_VERSION"));
    std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .ok_or_else(|| {
            "no package: build it with `bash deploy/debian/build` (.ci/run does) or set DNSFENCE_DEB"
                .to_string()
        })
}

/// A value of the packaged unit, e.g. `AmbientCapabilities`.
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit sets {key}"))
        .to_string()
}

/// Runs the packaged binary in `ns` as nobody with `caps` (e.g. `+net_admin,+net_bind_service`)
/// as its inheritable, ambient and bounding sets: what the unit's User/AmbientCapabilities/
/// CapabilityBoundingSet give it.
fn as_nobody(ns: &crate::harness::Netns, binary: &Path, caps: &str) -> tokio::process::Command {
    let mut c = ns.exec("setpriv");
    c.args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        &format!("--inh-caps=-all,{caps}"),
        &format!("--ambient-caps=-all,{caps}"),
        &format!("--bounding-set=-all,{caps}"),
    ])
    .arg(binary);
    c
}

#[test]
fn the_package_runs_with_only_the_units_two_capabilities() {
    const TEST: &str = "the_package_runs_with_only_the_units_two_capabilities";
    let deb = match package() {
        Ok(p) => p,
        Err(why) => {
            crate::harness::skip(TEST, &why);
            return;
        }
    };
    for tool in ["/usr/bin/setpriv", "/usr/sbin/unbound", "/usr/bin/dig"] {
        if !Path::new(tool).exists() {
            crate::harness::skip(TEST, &format!("{tool} is not installed"));
            return;
        }
    }
    let Some(ns) = netns_or_skip(TEST) else {
        return;
    };
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let ok = std::process::Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .status()
            .unwrap()
            .success();
        assert!(ok, "dpkg-deb -x {}", deb.display());
        // nobody must reach the binary, the config and the zones, as it would under /usr and /etc.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

        // The capabilities are the unit's, read from the packaged unit.
        let unit =
            std::fs::read_to_string(root.join("usr/lib/systemd/system/dnsfence.service")).unwrap();
        let ambient = unit_value(&unit, "AmbientCapabilities");
        assert_eq!(ambient, "CAP_NET_ADMIN CAP_NET_BIND_SERVICE");
        assert_eq!(unit_value(&unit, "CapabilityBoundingSet"), ambient);
        let caps: Vec<String> = ambient
            .split_whitespace()
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect();
        let caps = caps.join(",");

        let up = ns.exec("ip").args(["link", "set", "lo", "up"]).status();
        assert!(up.await.unwrap().success());
        let (_unbound, _) = start_unbound(
            &ns,
            dir.path(),
            "127.0.0.2",
            &["manage.microsoft.com. A 192.0.2.10".to_string()],
        )
        .await;

        // The packaged config, adjusted to the unpacked root and the namespace's upstream.
        let logs = dir.path().join("log");
        std::fs::create_dir(&logs).unwrap();
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o777)).unwrap();
        // The unit's StateDirectory (warm restart), made by systemd as the dynamic user's.
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let packaged = std::fs::read_to_string(root.join("etc/dnsfence/dnsfence.toml")).unwrap();
        assert!(packaged.contains("warm_restart = true"), "{packaged}");
        let text = packaged
            .replace("\"/var/lib/dnsfence\"", &format!("\"{}\"", state.display()))
            .replace("\"/usr/share/", &format!("\"{}/usr/share/", root.display()))
            .replace(
                "\"/etc/dnsfence/",
                &format!("\"{}/etc/dnsfence/", root.display()),
            )
            .replace("\"/var/log/dnsfence/", &format!("\"{}/", logs.display()))
            .replace(
                "timeout_ms = 2000",
                "servers = [\"127.0.0.2:53\"]\ntimeout_ms = 2000",
            );
        assert!(text.contains("listen = [\"127.0.0.1:53\"]"), "{text}");
        assert!(
            text.contains("enabled = true"),
            "the packaged config fences"
        );
        let cfg = dir.path().join("dnsfence.toml");
        std::fs::write(&cfg, text).unwrap();
        let binary = root.join("usr/bin/dnsfence");

        let stderr = dir.path().join("dnsfence.err");
        let mut daemon = as_nobody(&ns, &binary, &caps)
            .args(["run", "-c"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        wait_for(&stderr, "dnsfence ready").await;
        // `ip netns exec` and setpriv exec, so the child is dnsfence itself.
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", daemon.id().unwrap())).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap()
                .trim()
                .to_string()
        };
        assert!(field("Name:").starts_with("dnsfence"), "{status}");
        assert!(
            field("Uid:").starts_with("65534"),
            "runs as nobody: {status}"
        );
        // CAP_NET_BIND_SERVICE (10) and CAP_NET_ADMIN (12), nothing else.
        assert_eq!(field("CapEff:"), "0000000000001400", "{status}");
        assert_eq!(field("CapBnd:"), "0000000000001400", "{status}");

        let dig = |name: &'static str| {
            ns.exec("dig")
                .args(["@127.0.0.1", "+time=2", "+tries=1", name, "A"])
                .output()
        };
        let out = dig("manage.microsoft.com").await.unwrap();
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.contains("status: NOERROR") && out.contains("192.0.2.10"),
            "{out}"
        );
        let elements = ns.elements("local_v4");
        assert!(
            elements
                .iter()
                .any(|(v, t, _)| v == "192.0.2.10" && t.is_some()),
            "the answer's address is in the set, with a timeout: {elements:?}"
        );
        let out = dig("www.example.com").await.unwrap();
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.contains("status: NXDOMAIN"), "{out}");
        wait_for(&logs.join("queries.jsonl"), "www.example.com.").await;
        // A stop as systemd does it: the warm-restart state is written by the unprivileged
        // process with its two capabilities.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(daemon.id().unwrap() as i32, libc::SIGTERM) };
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), daemon.wait()).await;
        assert!(
            stopped.is_ok_and(|s| s.is_ok_and(|s| s.success())),
            "stops on SIGTERM"
        );
        assert!(
            state.join(dnsfence::state::warm::FILE).exists(),
            "the stop wrote the warm-restart state: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );

        // Without either capability it stops at start, naming the one it lacks.
        for (without, missing) in [
            ("+net_bind_service", "CAP_NET_ADMIN"),
            ("+net_admin", "CAP_NET_BIND_SERVICE"),
        ] {
            let out = tokio::time::timeout(
                Duration::from_secs(10),
                as_nobody(&ns, &binary, without)
                    .args(["run", "-c"])
                    .arg(&cfg)
                    .output(),
            )
            .await
            .expect("exits at once")
            .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "with {without} only");
            assert!(err.contains(missing), "with {without} only: {err}");
        }
    });
}
