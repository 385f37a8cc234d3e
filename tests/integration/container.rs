//! The container image and the Kubernetes DaemonSet's pod, run for real with podman inside a
//! network namespace the test creates, with Unbound on that namespace's loopback as the
//! upstream and dig as the client. Needs root, podman, dig, Unbound and the image that
//! `deploy/container/build` makes (`DNSFENCE_IMAGE`, default `localhost/dnsfence:<version>`;
//! CI builds it before the tests).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{Netns, eventually_async, ip, skip, start_unbound};

const ALLOWED: &str = "manage.microsoft.com";
const ALLOWED_IP: &str = "192.0.2.10";
const SITE: &str = "kiosk-portal.example.net";
const SITE_IP: &str = "192.0.2.20";
const DENIED: &str = "www.example.com";
/// Starting a container or a pod takes seconds; the whole test stays bounded.
const CONTAINER_TEST_TIMEOUT: Duration = Duration::from_secs(180);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn image() -> String {
    std::env::var("DNSFENCE_IMAGE")
        .unwrap_or_else(|_| format!("localhost/dnsfence:{}", env!("CARGO_PKG_VERSION")))
}

/// `Some(image)` when podman, dig, Unbound and the image are here (as root); else says why.
fn image_or_skip(test: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip(test, "needs root (a network namespace, nftables)");
        return None;
    }
    for tool in ["podman", "dig", "/usr/sbin/unbound"] {
        if std::process::Command::new(tool).arg("-h").output().is_err() {
            skip(test, &format!("{tool} is not installed"));
            return None;
        }
    }
    let image = image();
    let (ok, _, _) = podman(&["image", "exists", &image]);
    if !ok {
        skip(
            test,
            &format!("no image {image}: run `bash deploy/container/build` first"),
        );
        return None;
    }
    Some(image)
}

fn podman(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new("podman")
        .args(args)
        .output()
        .expect("podman runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// podman commands that remove what a test made (a container, a pod and its ConfigMap
/// volumes), run when the test ends, however it ends.
struct Cleanup(Vec<Vec<String>>);

impl Cleanup {
    fn run(&self) {
        for args in &self.0 {
            // A removal podman refuses while a container settles is tried again.
            for _ in 0..3 {
                let done = std::process::Command::new("podman")
                    .args(args)
                    .output()
                    .is_ok_and(|o| o.status.success());
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

fn command(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// The namespace's loopback up, Unbound on 127.0.0.2:53 answering the test names (and logging
/// every question it gets).
async fn namespace(test: &str, dir: &Path) -> Option<(Netns, tokio::process::Child, PathBuf)> {
    let ns = match Netns::create(test) {
        Ok(ns) => ns,
        Err(why) => {
            skip(test, &why);
            return None;
        }
    };
    ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
    let records = [
        format!("{ALLOWED}. 300 IN A {ALLOWED_IP}"),
        format!("{SITE}. 300 IN A {SITE_IP}"),
        format!("{DENIED}. 300 IN A 192.0.2.99"),
    ];
    let (unbound, log) = start_unbound(&ns, dir, "127.0.0.2", &records).await;
    Some((ns, unbound, log))
}

/// dig's output for `name` asked of `server` from inside the namespace (from `source`).
async fn dig(ns: &Netns, server: &str, source: Option<&str>, name: &str, tcp: bool) -> String {
    let mut cmd = ns.exec("dig");
    cmd.args([&format!("@{server}"), name, "A", "+tries=1", "+time=2"]);
    if let Some(s) = source {
        cmd.args(["-b", s]);
    }
    if tcp {
        cmd.arg("+tcp");
    }
    let out = cmd.output().await.unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn answered(dig: &str, ip: &str) -> bool {
    dig.contains("status: NOERROR")
        && dig
            .lines()
            .any(|l| l.contains("IN\tA\t") && l.ends_with(ip))
}

/// What both the image and the DaemonSet's pod must do, asked from inside the namespace.
async fn answers_like_dnsfence(ns: &Netns, server: &str, source: Option<&str>, unbound: &Path) {
    let up = eventually_async(Duration::from_secs(30), || async {
        answered(&dig(ns, server, source, ALLOWED, false).await, ALLOWED_IP)
    })
    .await;
    assert!(up, "{ALLOWED} answered over UDP within 30 s");
    let tcp = dig(ns, server, source, ALLOWED, true).await;
    assert!(answered(&tcp, ALLOWED_IP), "over TCP: {tcp}");
    let denied = dig(ns, server, source, DENIED, false).await;
    assert!(denied.contains("status: NXDOMAIN"), "{denied}");
    assert!(
        denied.contains("EDE: 15"),
        "the extended error says why: {denied}"
    );
    let asked = std::fs::read_to_string(unbound).unwrap();
    assert!(
        !asked.contains(DENIED),
        "a denied name is never forwarded: {asked}"
    );
}

/// The namespace's nftables sets hold the allowed answer's address.
fn fenced(ns: &Netns, set: &str) -> bool {
    ns.elements(set)
        .iter()
        .any(|(v, _, _)| v.starts_with(ALLOWED_IP))
}

async fn metrics(ns: &Netns) -> String {
    let out = ns
        .exec("curl")
        .args(["-s", "--max-time", "3", "http://127.0.0.1:9153/metrics"])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The capabilities and user of the container's process (podman's `State.Pid`), from
/// `/proc/<pid>/status` as the kernel reports them.
fn process_status(container: &str) -> String {
    let (ok, pid, err) = podman(&["inspect", "--format", "{{.State.Pid}}", container]);
    assert!(ok, "{err}");
    std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap()
}

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(str::trim)
        .unwrap_or_default()
}

/// CAP_NET_BIND_SERVICE (10) and CAP_NET_ADMIN (12), and nothing else.
const TWO_CAPS: &str = "0000000000001400";

fn assert_two_capabilities_as_999(status: &str) {
    assert_eq!(status_field(status, "CapEff:"), TWO_CAPS, "{status}");
    assert_eq!(status_field(status, "CapPrm:"), TWO_CAPS, "{status}");
    // Ambient too (dnsfence raises them from its file capabilities), so that the nft it runs
    // has the same two.
    assert_eq!(status_field(status, "CapAmb:"), TWO_CAPS, "{status}");
    assert_eq!(status_field(status, "CapInh:"), TWO_CAPS, "{status}");
    assert!(
        status_field(status, "Uid:").starts_with("999\t"),
        "non-root: {status}"
    );
}

/// The state volume: owned by the image's user, or by root as a new hostPath is.
fn state_dir(dir: &Path, owner: u32) -> PathBuf {
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(owner), Some(owner)).unwrap();
    state
}

#[test]
fn the_image_answers_fences_with_two_capabilities_on_a_read_only_root_and_stops_cleanly() {
    const TEST: &str = "the_image_answers_fences";
    crate::harness::run_within(CONTAINER_TEST_TIMEOUT, async {
        let Some(image) = image_or_skip(TEST) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let Some((ns, _unbound, unbound_log)) = namespace(TEST, dir.path()).await else {
            return;
        };
        // The image's own config, with the namespace's Unbound as its upstream.
        let shipped =
            std::fs::read_to_string(repo().join("deploy/container/dnsfence.toml")).unwrap();
        let config = shipped.replacen(
            "timeout_ms = 2000",
            "servers = [\"127.0.0.2:53\"]\ntimeout_ms = 2000",
            1,
        );
        assert_ne!(
            config, shipped,
            "the image's config has [upstream] timeout_ms"
        );
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(etc.join("zones.d")).unwrap();
        std::fs::write(etc.join("dnsfence.toml"), config).unwrap();
        let state = state_dir(dir.path(), 999);
        let name = format!("dnsfence-test-{}", std::process::id());
        let _cleanup = Cleanup(vec![command(&["rm", "-f", "-t", "0", &name])]);
        let netns = format!("ns:/var/run/netns/{}", ns.name);
        let etc_mount = format!("{}:/etc/dnsfence:ro", etc.display());
        let state_mount = format!("{}:/var/lib/dnsfence", state.display());
        let (ok, _, err) = podman(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &netns,
            "--read-only",
            "--read-only-tmpfs=false",
            "--cap-drop",
            "all",
            "--cap-add",
            "NET_ADMIN,NET_BIND_SERVICE",
            "--security-opt",
            "no-new-privileges",
            "-v",
            &etc_mount,
            "-v",
            &state_mount,
            &image,
        ]);
        assert!(ok, "podman run: {err}");

        answers_like_dnsfence(&ns, "127.0.0.1", None, &unbound_log).await;
        assert!(fenced(&ns, "local_v4"), "{:?}", ns.elements("local_v4"));
        let m = metrics(&ns).await;
        assert!(
            m.contains(
                "dnsfence_denied_queries_total{reason=\"not_allowlisted\",view=\"local\"} 1"
            ),
            "{m}"
        );
        let status = process_status(&name);
        assert_two_capabilities_as_999(&status);
        assert_eq!(status_field(&status, "NoNewPrivs:"), "1", "{status}");
        let (ok, out, err) = podman(&["healthcheck", "run", &name]);
        assert!(ok, "HEALTHCHECK (dnsfence health): {out}{err}");
        // The denied query's line on standard output.
        let (_, logs, _) = podman(&["logs", &name]);
        assert!(
            logs.lines()
                .any(|l| l.contains(&format!("\"{DENIED}.\"")) && l.contains("\"denied\"")),
            "{logs}"
        );

        // SIGHUP: a local zone file added on the mounted config is loaded.
        let before = dig(&ns, "127.0.0.1", None, SITE, false).await;
        assert!(before.contains("status: NXDOMAIN"), "{before}");
        std::fs::write(
            etc.join("zones.d/site.toml"),
            "[[endpoint_set]]\nid = \"site-portal\"\ndescription = \"start page\"\n\
             category = \"allow\"\nrequired = false\nexpress_route = false\n\
             ports = [\"tcp/443\"]\nprofile = \"intune-core\"\nnames = [\"kiosk-portal.example.net\"]\n",
        )
        .unwrap();
        let (ok, _, err) = podman(&["kill", "--signal", "HUP", &name]);
        assert!(ok, "{err}");
        let reloaded = eventually_async(Duration::from_secs(10), || async {
            answered(&dig(&ns, "127.0.0.1", None, SITE, false).await, SITE_IP)
        })
        .await;
        assert!(reloaded, "SIGHUP loads the new zone file");

        // Nothing written outside the volume: the root filesystem refuses writes, and all it
        // differs from the image by is podman's own mount points under /etc ("C /etc").
        let (ok, diff, err) = podman(&["diff", &name]);
        assert!(ok, "{err}");
        assert!(
            diff.lines().all(|l| l.trim() == "C /etc"),
            "the container wrote {diff}"
        );
        let (ok, _, err) = podman(&["exec", &name, "sh", "-c", "touch /probe"]);
        assert!(!ok && err.contains("Read-only file system"), "{err}");
        let (ok, _, err) = podman(&["exec", &name, "sh", "-c", "touch /var/lib/dnsfence/probe"]);
        assert!(ok, "the volume is writable: {err}");
        std::fs::remove_file(state.join("probe")).unwrap();

        // SIGTERM: a clean exit (0, not the SIGKILL of the grace period) and the state written.
        let started = Instant::now();
        let (ok, _, err) = podman(&["stop", "-t", "20", &name]);
        assert!(ok, "{err}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(20), "stopped in {took:?}");
        let (_, code, _) = podman(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
        assert_eq!(code.trim(), "0", "dnsfence exited by itself");
        let (_, logs, errs) = podman(&["logs", &name]);
        assert!(
            errs.contains("shutting down") || logs.contains("shutting down"),
            "{errs}"
        );
        assert!(
            state.join("warm-restart.state").exists(),
            "the stop wrote the warm-restart state into the volume"
        );
        eprintln!("container stopped in {took:?}");
    });
}

/// The DaemonSet's pod template as a Pod named `name` (podman plays Pods, not DaemonSets), its
/// state hostPath moved to `state`.
fn daemonset_pod(name: &str, state: &Path) -> String {
    let ds = std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    let mut lines = ds.lines().skip_while(|l| *l != "  template:").skip(1);
    let mut pod = String::from("apiVersion: v1\nkind: Pod\n");
    // podman 4.3 refuses port declarations on a host-network pod ("PortMappings can only be
    // used with Bridge or slirp4netns networking"); Kubernetes only lists them. Left out.
    let mut in_ports = false;
    for line in lines.by_ref() {
        if !line.is_empty() && !line.starts_with("    ") {
            break;
        }
        let line = line.strip_prefix("    ").unwrap_or(line);
        if in_ports && line.starts_with("        ") {
            continue;
        }
        in_ports = line == "      ports:";
        if in_ports {
            continue;
        }
        pod.push_str(line);
        pod.push('\n');
        if line == "metadata:" {
            pod.push_str(&format!("  name: {name}\n  namespace: dnsfence\n"));
        }
        // podman removes a "once" init container after it ran, and 4.3 races doing so when
        // several containers start at once; "always" keeps it (it only matters to podman).
        if line == "  annotations:" {
            pod.push_str("    io.podman.annotations.init.container.type: always\n");
        }
    }
    assert!(
        pod.contains("hostNetwork: true"),
        "the template was found: {pod}"
    );
    let host_path = "path: /var/lib/dnsfence";
    assert!(pod.contains(host_path), "{pod}");
    pod.replace(host_path, &format!("path: {}", state.display()))
        .replace(
            &format!("image: localhost/dnsfence:{}", env!("CARGO_PKG_VERSION")),
            &format!("image: {}", image()),
        )
}

#[test]
fn the_daemonsets_pod_played_with_its_configmap_answers_the_same_way() {
    const TEST: &str = "the_daemonsets_pod_played";
    crate::harness::run_within(CONTAINER_TEST_TIMEOUT, async {
        let Some(_image) = image_or_skip(TEST) else {
            return;
        };
        let ds = std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
        assert!(
            ds.contains(&format!(
                "image: localhost/dnsfence:{}",
                env!("CARGO_PKG_VERSION")
            )),
            "the DaemonSet runs the image deploy/container/build tags"
        );
        let dir = tempfile::tempdir().unwrap();
        let Some((ns, _unbound, unbound_log)) = namespace(TEST, dir.path()).await else {
            return;
        };
        // A gateway node: the kiosk VLAN's address, and the node's resolver (dnsPolicy Default)
        // is the namespace's Unbound.
        ip(&["-n", &ns.name, "addr", "add", "10.20.0.1/24", "dev", "lo"]);
        ns.resolv_conf("nameserver 127.0.0.2\n");
        let state = state_dir(dir.path(), 0);
        let name = format!("dnsfence-ds-{}", std::process::id());
        // The shipped ConfigMaps as they are, then the pod; podman, run inside the namespace,
        // takes it as the pod's host network.
        let configmaps =
            std::fs::read_to_string(repo().join("deploy/kubernetes/configmap.yaml")).unwrap();
        let play = dir.path().join("pod.yaml");
        std::fs::write(
            &play,
            format!("{configmaps}---\n{}", daemonset_pod(&name, &state)),
        )
        .unwrap();
        // `kube play` makes a volume per ConfigMap, and would reuse one left by an earlier run.
        let cleanup = Cleanup(vec![
            command(&["pod", "rm", "-f", "-t", "0", &name]),
            command(&["volume", "rm", "-f", "dnsfence-config", "dnsfence-zones"]),
        ]);
        cleanup.run();
        // podman in the namespace's network, seeing the namespace's resolv.conf as the node's
        // (nsenter, not `ip netns exec`, which would hide the cgroup filesystem podman needs).
        let resolv = format!("/etc/netns/{}/resolv.conf", ns.name);
        for attempt in 1.. {
            let out = tokio::process::Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{}", ns.name))
                .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind {resolv} /etc/resolv.conf && exec podman kube play {}",
                    play.display()
                ))
                .output()
                .await
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            // Should podman 4.3 still see the init container, already exited, as running when it
            // removes it ("failed to remove once init container … container state improper"):
            // its race, not the pod's; the pod is played again from scratch.
            if !out.status.success() && attempt < 3 && err.contains("once init container") {
                eprintln!("podman kube play, attempt {attempt}: {err}");
                cleanup.run();
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            assert!(
                out.status.success(),
                "podman kube play: {}{err}",
                String::from_utf8_lossy(&out.stdout)
            );
            break;
        }

        // A kiosk device on the VLAN asks the gateway's VLAN address.
        answers_like_dnsfence(&ns, "10.20.0.1", Some("10.20.0.1"), &unbound_log).await;
        let site = dig(&ns, "10.20.0.1", Some("10.20.0.1"), SITE, false).await;
        assert!(
            answered(&site, SITE_IP),
            "the zones ConfigMap's set: {site}"
        );
        assert!(fenced(&ns, "kiosk_v4"), "{:?}", ns.elements("kiosk_v4"));
        let m = metrics(&ns).await;
        assert!(
            m.contains(
                "dnsfence_denied_queries_total{reason=\"not_allowlisted\",view=\"kiosk\"} 1"
            ),
            "{m}"
        );
        let status = process_status(&format!("{name}-dnsfence"));
        assert_two_capabilities_as_999(&status);
        // The init container left the node's state directory to the image's user.
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&state).unwrap());
        assert_eq!(owner, 999);
    });
}
