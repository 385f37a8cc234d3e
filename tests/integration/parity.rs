//! One query path: the same query over the UDP worker's synchronous path, over UDP through the
//! runtime, and over TCP gives the same bytes (TTLs aside) and the same query-log line (transport
//! aside). And a reference: Unbound, forwarding to the same upstream, gives the same answers.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::harness::{Client, Server, log_lines, query, run, test_zone_names};

/// One row of the parity table.
struct Case {
    what: &'static str,
    bytes: Vec<u8>,
    /// Source address: 127.0.0.1 is in the view, 127.0.0.2 in none.
    src: &'static str,
    /// The UDP reply is truncated, the TCP one whole: compared within UDP only.
    truncates: bool,
}

fn case(what: &'static str, msg: Message) -> Case {
    Case {
        what,
        bytes: msg.to_vec().unwrap(),
        src: "127.0.0.1",
        truncates: false,
    }
}

fn q(name: &str, qtype: RecordType) -> Message {
    query(name, qtype, Some(1232))
}

fn with_edns(name: &str, qtype: RecordType, f: impl FnOnce(&mut Edns)) -> Message {
    let mut m = q(name, qtype);
    f(m.edns.as_mut().unwrap());
    m
}

fn table() -> Vec<Case> {
    use RecordType::*;
    let mm = "manage.microsoft.com.";
    let mut cases = vec![
        case("chain across zones, A", q(mm, A)),
        case("chain across zones, AAAA", q(mm, AAAA)),
        case("chain into NODATA, HTTPS", q(mm, HTTPS)),
        case("chain into NODATA, TXT", q(mm, TXT)),
        case(
            "dangling chain followed, A",
            q("tm.manage.microsoft.com.", A),
        ),
        case(
            "dangling chain into NODATA",
            q("tm.manage.microsoft.com.", TXT),
        ),
        case("chain in zone, A", q("cdn.manage.microsoft.com.", A)),
        case("chain in zone, AAAA", q("cdn.manage.microsoft.com.", AAAA)),
        case(
            "chain in zone into NODATA, TXT",
            q("cdn.manage.microsoft.com.", TXT),
        ),
        case(
            "chain in zone into NODATA, MX",
            q("cdn.manage.microsoft.com.", MX),
        ),
        case("chain into NXDOMAIN", q("gone.manage.microsoft.com.", A)),
        case("NXDOMAIN", q("missing.manage.microsoft.com.", A)),
        case("HTTPS with hints", q("graph.microsoft.com.", HTTPS)),
        case("TXT", q("graph.microsoft.com.", TXT)),
        case("MX", q("graph.microsoft.com.", MX)),
        case("AAAA", q("fef.msua06.manage.microsoft.com.", AAAA)),
        case("0x20 mixed case", q("MaNaGe.MiCrOsOfT.CoM.", A)),
        case(
            "no EDNS",
            query("enterpriseenrollment.manage.microsoft.com.", A, None),
        ),
        case(
            "EDNS 512",
            query("enterpriseenrollment.manage.microsoft.com.", A, Some(512)),
        ),
        case("EDNS 4096", query("time.windows.com.", A, Some(4096))),
        case(
            "DO bit",
            with_edns("time.windows.com.", A, |e| {
                e.set_dnssec_ok(true);
            }),
        ),
        case("CD bit", {
            let mut m = q("time.windows.com.", A);
            m.metadata.checking_disabled = true;
            m
        }),
        case(
            "unknown EDNS option",
            with_edns("time.windows.com.", A, |e| {
                e.options_mut()
                    .insert(EdnsOption::Unknown(65001, vec![1, 2, 3, 4]));
            }),
        ),
        case(
            "EDNS version 1",
            with_edns(mm, A, |e| {
                e.set_version(1);
            }),
        ),
        case("denied", q("evil.example.", A)),
        case(
            "denied look-alike, AAAA",
            q("evilmanage.microsoft.com.", AAAA),
        ),
        case("denied, no EDNS", query("evil.example.", A, None)),
        case("denied ANY", q("evil.example.", ANY)),
        case("ANY", q(mm, ANY)),
        case("zone transfer", q(mm, AXFR)),
        case("OPT as query type", q(mm, RecordType::from(41))),
        case("TSIG as query type", q(mm, RecordType::from(250))),
        case("CHAOS class", {
            let mut m = Message::new(7001, MessageType::Query, OpCode::Query);
            let mut qq = Query::query(Name::from_ascii("version.bind.").unwrap(), TXT);
            qq.set_query_class(DNSClass::CH);
            m.add_query(qq);
            m
        }),
        case("opcode NOTIFY", {
            let mut m = q(mm, SOA);
            m.metadata.op_code = OpCode::Notify;
            m
        }),
        case("opcode STATUS", {
            let mut m = q(mm, A);
            m.metadata.op_code = OpCode::Status;
            m
        }),
        case("no question", {
            let mut m = Message::new(7002, MessageType::Query, OpCode::Query);
            m.metadata.recursion_desired = true;
            m
        }),
        case("two questions", {
            let mut m = q(mm, A);
            m.add_query(Query::query(
                Name::from_ascii("graph.microsoft.com.").unwrap(),
                A,
            ));
            m
        }),
    ];
    let mut no_view = case("no view", q(mm, A));
    no_view.src = "127.0.0.2";
    cases.push(no_view);
    let mut no_view = case("no view, no EDNS", query("evil.example.", A, None));
    no_view.src = "127.0.0.2";
    cases.push(no_view);
    let mut bogus = q(mm, A).to_vec().unwrap();
    let n = bogus.len();
    bogus[n - 2..].copy_from_slice(&7u16.to_be_bytes());
    bogus.extend_from_slice(&[0, 10, 0, 9, 1, 2, 3]);
    cases.push(Case {
        what: "malformed OPT option",
        bytes: bogus,
        src: "127.0.0.1",
        truncates: false,
    });
    for (what, m) in [
        ("larger than 1232 bytes", q("huge.manage.microsoft.com.", A)),
        (
            "larger than 512, no EDNS",
            query("big.manage.microsoft.com.", A, None),
        ),
    ] {
        let mut c = case(what, m);
        c.truncates = true;
        cases.push(c);
    }
    cases
}

/// A reply with every TTL set to 0.
fn ttl_aside(mut reply: Vec<u8>) -> Vec<u8> {
    let offsets =
        dnsfence::base::wire::ttl_offsets(&reply).expect("a reply that parses to its end");
    for (off, _) in offsets {
        let off = off as usize;
        reply[off..off + 4].fill(0);
    }
    reply
}

/// A log line without what differs by transport and time.
fn line_aside(mut line: serde_json::Value, also: &[&str]) -> serde_json::Value {
    let map = line.as_object_mut().unwrap();
    for k in ["time", "duration_us", "protocol"].iter().chain(also) {
        map.remove(*k);
    }
    line
}

#[test]
fn every_query_gets_the_same_answer_and_log_line_over_every_path() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.jsonl");
        let f = Server::builder()
            .networks("\"127.0.0.1/32\"")
            .config(&format!(
                "[query_log]\nlevel = \"all\"\npath = \"{}\"\nsample_per_second = 100000\n",
                log.display()
            ))
            .start()
            .await;
        let c = f.client();
        let sync = &f.engine.sync_answers;
        let cases = table();
        assert!(cases.len() >= 40, "{}", cases.len());
        let wait = Duration::from_secs(5);
        for k in &cases {
            // Cold, through the runtime (the upstream where the name is allowed); then the
            // worker's synchronous path; then the runtime's path on the same cache; then TCP.
            sync.store(false, Ordering::Relaxed);
            let cold = c.udp_raw_from(k.src, &k.bytes, wait).await;
            sync.store(true, Ordering::Relaxed);
            let fast = c.udp_raw_from(k.src, &k.bytes, wait).await;
            sync.store(false, Ordering::Relaxed);
            let slow = c.udp_raw_from(k.src, &k.bytes, wait).await;
            sync.store(true, Ordering::Relaxed);
            let tcp = if k.src == "127.0.0.1" {
                c.tcp_raw(&k.bytes).await
            } else {
                // TCP from 127.0.0.2: connect from that source.
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.bind(format!("{}:0", k.src).parse().unwrap()).unwrap();
                let stream = sock.connect(f.addr).await.unwrap();
                crate::harness::tcp_exchange(stream, &k.bytes).await
            };
            let [cold, fast, slow] = [cold, fast, slow]
                .map(|r| ttl_aside(r.unwrap_or_else(|| panic!("{}: no UDP answer", k.what))));
            assert_eq!(cold, fast, "{}: cold runtime path vs worker path", k.what);
            assert_eq!(fast, slow, "{}: worker path vs runtime path", k.what);
            let tcp = ttl_aside(tcp);
            let m = Message::from_vec(&tcp).unwrap();
            if k.truncates {
                assert!(
                    Message::from_vec(&fast).unwrap().metadata.truncation,
                    "{}",
                    k.what
                );
                assert!(
                    !m.metadata.truncation && !m.answers.is_empty(),
                    "{}",
                    k.what
                );
            } else {
                assert_eq!(fast, tcp, "{}: UDP vs TCP", k.what);
            }
        }
        let lines = log_lines(&log, cases.len() * 4).await;
        assert_eq!(lines.len(), cases.len() * 4);
        for (k, four) in cases.iter().zip(lines.chunks(4)) {
            let first = line_aside(four[0].clone(), &["cache_hit"]);
            let rest: Vec<_> = four[1..]
                .iter()
                .map(|l| line_aside(l.clone(), &[]))
                .collect();
            assert_eq!(
                first,
                line_aside(four[1].clone(), &["cache_hit"]),
                "{}: log line, cold vs warm",
                k.what
            );
            assert_eq!(rest[0], rest[1], "{}: log line, worker vs runtime", k.what);
            assert_eq!(rest[1], rest[2], "{}: log line, UDP vs TCP", k.what);
            assert_eq!(four[1]["protocol"], "udp");
            assert_eq!(four[3]["protocol"], "tcp");
        }
        f.stop().await;
    });
}

/// An Unbound started by the test, forwarding to `upstream`, on a loopback port; `None` (with
/// the reason printed) when the unbound binary is not installed.
struct Unbound {
    child: tokio::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Unbound {
    async fn start(upstream: SocketAddr) -> Option<Unbound> {
        let bin = ["/usr/sbin/unbound", "/usr/bin/unbound"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(bin) = bin else {
            crate::harness::skip(
                "the Unbound reference",
                "unbound is not installed (apt-get install unbound)",
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let conf = dir.path().join("unbound.conf");
        std::fs::write(
            &conf,
            format!(
                "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  do-daemonize: no\n  \
                 use-syslog: no\n  logfile: \"\"\n  chroot: \"\"\n  username: \"\"\n  \
                 directory: \"{dir}\"\n  pidfile: \"\"\n  num-threads: 1\n  \
                 access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  \
                 do-not-query-localhost: no\n  qname-minimisation: no\n  \
                 minimal-responses: yes\n  verbosity: 0\n  do-ip6: no\n\
                 forward-zone:\n  name: \".\"\n  forward-addr: {ip}@{up}\n",
                dir = dir.path().display(),
                ip = upstream.ip(),
                up = upstream.port(),
            ),
        )
        .unwrap();
        let child = tokio::process::Command::new(bin)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("unbound starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let probe = query("time.windows.com.", RecordType::A, Some(1232))
            .to_vec()
            .unwrap();
        let client = Client { server: addr };
        let up = client
            .first_answer(&probe, 50, Duration::from_millis(100))
            .await;
        assert!(up.is_some(), "unbound did not answer within 5 s");
        Some(Unbound {
            child,
            addr,
            _dir: dir,
        })
    }
}

/// RRsets of a section as sorted text (TTL aside): order within a section is not meaningful.
fn rrsets(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.name.to_ascii().to_lowercase(),
                r.record_type(),
                r.data
            )
        })
        .collect();
    v.sort();
    v
}

/// What a reply says, TTLs aside: code, flags, answer and authority RRsets.
fn gist(m: &Message) -> String {
    let md = &m.metadata;
    format!(
        "{:?} qr={} aa={} tc={} rd={} ra={} ad={} cd={}\nanswer: {:#?}\nauthority: {:#?}",
        md.response_code,
        md.message_type == MessageType::Response,
        md.authoritative,
        md.truncation,
        md.recursion_desired,
        md.recursion_available,
        md.authentic_data,
        md.checking_disabled,
        rrsets(&m.answers),
        rrsets(&m.authorities),
    )
}

/// Deliberate differences from Unbound, none of which this test's queries reach: denied names
/// get EDE 15 (Unbound has no allowlist), ANY gets the RFC 8482 HINFO (Unbound forwards it),
/// and clients in no view are refused with EDE 18 (Unbound's access-control refuses without).
const DELIBERATE: &[&str] = &["EDE on denials", "ANY (RFC 8482)", "no-view EDE 18"];

#[test]
fn answers_match_unbound_on_the_same_upstream() {
    run(async {
        let f = Server::builder().start().await;
        let Some(mut unbound) = Unbound::start(f.upstream.addr).await else {
            f.stop().await;
            return;
        };
        let policy = f.engine.policy.load();
        let view = &policy.views[0];
        let names: Vec<String> = test_zone_names()
            .into_iter()
            .filter(|n| view.lookup(n).is_some() && !n.ends_with(crate::harness::BLACKHOLE))
            .collect();
        assert!(names.len() >= 10, "{names:?}");
        let ours = f.client();
        let theirs = Client {
            server: unbound.addr,
        };
        let mut compared = 0;
        for name in &names {
            for qtype in [
                RecordType::A,
                RecordType::AAAA,
                RecordType::HTTPS,
                RecordType::TXT,
                RecordType::MX,
            ] {
                let msg = query(name, qtype, Some(1232));
                let (a, b) = (ours.udp(&msg).await, theirs.udp(&msg).await);
                // Unbound truncates large answers differently (it may keep whole RRsets that
                // fit); both must then give the same over TCP.
                let (a, b) = if a.metadata.truncation || b.metadata.truncation {
                    (ours.tcp(&msg).await, theirs.tcp(&msg).await)
                } else {
                    (a, b)
                };
                assert_eq!(gist(&a), gist(&b), "{name} {qtype}: dnsfence vs Unbound");
                compared += 1;
            }
        }
        eprintln!(
            "{compared} answers equal to Unbound's; deliberate differences not asked: {DELIBERATE:?}"
        );
        let _ = unbound.child.kill().await;
        f.stop().await;
    });
}
