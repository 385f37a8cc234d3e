//! DNS over TLS upstreams, against a real DoT server: an Unbound the test starts on loopback with
//! a CA and certificate the test generates (openssl), forwarding to the test upstream.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{Client, Server, certificates, ips, query, rcode, run};

/// An Unbound serving DoT on a loopback port, forwarding to `upstream`.
fn start_dot(dir: &Path, upstream: std::net::SocketAddr) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("unbound.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n  interface: 127.0.0.1@{port}\n  tls-port: {port}\n  \
             tls-service-key: \"{d}/server.key\"\n  tls-service-pem: \"{d}/server.pem\"\n  \
             do-daemonize: no\n  use-syslog: no\n  logfile: \"{d}/unbound.log\"\n  verbosity: 1\n  \
             chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  num-threads: 1\n  \
             do-ip6: no\n  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  \
             do-not-query-localhost: no\n  qname-minimisation: no\n\
             forward-zone:\n  name: \".\"\n  forward-addr: {}@{}\n",
            upstream.ip(),
            upstream.port(),
            d = dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new("/usr/sbin/unbound")
        .args(["-d", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::fs::read_to_string(dir.join("unbound.log"))
            .is_ok_and(|t| t.contains("start of service"))
        {
            return (child, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "unbound (DoT) did not start: {:?}",
        std::fs::read_to_string(dir.join("unbound.log"))
    );
}

/// The real binary with `servers` and `tls_ca_file`, asked one allowed name: (answer code, its
/// stderr).
async fn run_binary(dir: &Path, upstream: &str, ca: &Path) -> (ResponseCode, String) {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.join(format!("dnsfence-{port}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[http]\nlisten = \"off\"\n[zones]\ndir = \"{}\"\n\
             [upstream]\nservers = [\"{upstream}\"]\ntls_ca_file = \"{}\"\ntimeout_ms = 1500\n\
             [query_log]\nlevel = \"none\"\n\
             [[view]]\nname = \"lab\"\nnetworks = [\"127.0.0.0/8\"]\nprofiles = [\"intune-core\"]\n",
            crate::harness::zones_dir().display(),
            ca.display()
        ),
    )
    .unwrap();
    let log = dir.join(format!("dnsfence-{port}.log"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dnsfence"))
        .args(["run", "-c"])
        .arg(&cfg)
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let c = Client {
        server: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    let q = query("manage.microsoft.com.", RecordType::A, Some(1232))
        .to_vec()
        .unwrap();
    let code = c
        .first_answer(&q, 50, Duration::from_secs(3))
        .await
        .map(|a| {
            hickory_proto::op::Message::from_vec(&a)
                .unwrap()
                .metadata
                .response_code
        });
    // The reason is logged once a diagnostic handshake is done: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while code != Some(ResponseCode::NoError)
        && Instant::now() < deadline
        && !std::fs::read_to_string(&log).is_ok_and(|t| t.contains(" tls="))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill().await;
    (
        code.expect("dnsfence answered"),
        std::fs::read_to_string(&log).unwrap(),
    )
}

#[test]
fn dns_over_tls_upstream_with_a_private_ca() {
    if !Path::new("/usr/sbin/unbound").exists() {
        crate::harness::skip(
            "dns_over_tls_upstream_with_a_private_ca",
            "unbound is not installed",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    if !certificates(dir.path(), "dot.test") {
        crate::harness::skip(
            "dns_over_tls_upstream_with_a_private_ca",
            "openssl is not installed",
        );
        return;
    }
    run(async {
        let upstream = crate::harness::Authority::start().await;
        let (mut unbound, port) = start_dot(dir.path(), upstream.addr);
        let ca = dir.path().join("ca.pem");
        // In process: answered over TLS.
        let f = Server::builder().config(&format!(
            "[upstream]\nservers = [\"tls://127.0.0.1:{port}#dot.test\"]\ntls_ca_file = \"{}\"\ntimeout_ms = 2000\n",
            ca.display()
        )).start()
        .await;
        let a = f.client().ask("manage.microsoft.com.", RecordType::A).await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        assert_eq!(
            ips(&a).0,
            ["192.0.2.20".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert!(
            upstream.seen.count("manage.microsoft.com.") >= 1,
            "Unbound forwarded it"
        );
        f.stop().await;

        // A certificate for another name: refused, and the log says why.
        let (code, log) = run_binary(
            dir.path(),
            &format!("tls://127.0.0.1:{port}#other.test"),
            &ca,
        )
        .await;
        assert_eq!(code, ResponseCode::ServFail);
        assert!(
            log.contains("NotValidForName") || log.contains("not valid for"),
            "{log}"
        );
        // A CA the server's certificate does not chain to.
        let other = tempfile::tempdir().unwrap();
        assert!(certificates(other.path(), "dot.test"));
        let (code, log) = run_binary(
            dir.path(),
            &format!("tls://127.0.0.1:{port}#dot.test"),
            &other.path().join("ca.pem"),
        )
        .await;
        assert_eq!(code, ResponseCode::ServFail);
        assert!(
            log.contains("UnknownIssuer")
                || log.contains("unknown issuer")
                || log.contains("BadSignature"),
            "{log}"
        );
        let _ = unbound.kill();
        let _ = unbound.wait();
    });
}
