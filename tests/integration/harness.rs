//! The test harness: a real upstream (hickory-server authority on 127.0.0.1:0 that counts every
//! query), a real dnsfence on 127.0.0.1:0 (UDP and TCP), and a raw DNS client over real sockets.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dnsfence::config::Config;
use dnsfence::daemon::app::App;
use dnsfence::net::server::Listeners;
use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::svcb::{IpHint, SVCB, SvcParamKey, SvcParamValue};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, HTTPS, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;

/// Every test's overall bound: nothing here may hang a CI run.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Queries whose name is under this label are swallowed by the upstream: it never answers them.
pub const BLACKHOLE: &str = "slow.manage.microsoft.com.";

/// Every owner name of the test zones, once each, lower case with the trailing dot.
pub fn test_zone_names() -> Vec<String> {
    let mut names: Vec<String> = test_zones()
        .into_iter()
        .flat_map(|(_, records)| records.into_iter().map(|r| r.name.to_ascii()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The zones the test upstream serves.
fn test_zones() -> Vec<(Name, Vec<Record>)> {
    let n = |s: &str| Name::from_str(s).unwrap();
    let rec = |name: &str, ttl: u32, data: RData| Record::from_rdata(n(name), ttl, data);
    let soa = |origin: &str| {
        rec(
            origin,
            3600,
            RData::SOA(SOA::new(
                n(&format!("ns1.{origin}")),
                n(&format!("hostmaster.{origin}")),
                2026112501,
                3600,
                600,
                86400,
                // Negative TTL (RFC 2308): how long NXDOMAIN/NODATA may be cached.
                300,
            )),
        )
    };
    let mut microsoft = vec![
        soa("microsoft.com."),
        rec(
            "manage.microsoft.com.",
            300,
            RData::CNAME(CNAME(n("manage.trafficmanager.net."))),
        ),
        rec(
            "enterpriseenrollment.manage.microsoft.com.",
            120,
            RData::A(A::new(192, 0, 2, 10)),
        ),
        rec(
            "fef.msua06.manage.microsoft.com.",
            120,
            RData::A(A::new(192, 0, 2, 11)),
        ),
        rec(
            "fef.msua06.manage.microsoft.com.",
            120,
            RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11)),
        ),
        rec("graph.microsoft.com.", 60, RData::A(A::new(192, 0, 2, 30))),
        rec(
            "graph.microsoft.com.",
            60,
            RData::HTTPS(HTTPS(SVCB::new(
                1,
                Name::root(),
                vec![
                    (
                        SvcParamKey::Ipv4Hint,
                        SvcParamValue::Ipv4Hint(IpHint(vec![A::new(192, 0, 2, 31)])),
                    ),
                    (
                        SvcParamKey::Ipv6Hint,
                        SvcParamValue::Ipv6Hint(IpHint(vec![AAAA::new(
                            0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x31,
                        )])),
                    ),
                ],
            ))),
        ),
        // Exists upstream, so a leak would be visible: dnsfence must never ask for it.
        rec(
            "evilmanage.microsoft.com.",
            60,
            RData::A(A::new(192, 0, 2, 66)),
        ),
        rec("manage-microsoft.com.", 60, RData::A(A::new(192, 0, 2, 67))),
    ];
    // 40 A records: about 680 bytes, more than a plain (non-EDNS) UDP answer may carry.
    for i in 0..40u8 {
        microsoft.push(rec(
            "big.manage.microsoft.com.",
            60,
            RData::A(A::new(198, 51, 100, i)),
        ));
    }
    // 100 A records: about 1,650 bytes, more than any UDP answer of dnsfence's (1232).
    for i in 0..100u8 {
        microsoft.push(rec(
            "huge.manage.microsoft.com.",
            60,
            RData::A(A::new(198, 51, 101, i)),
        ));
    }
    // A CNAME inside the zone to a name with A and AAAA only: TXT, MX, HTTPS get NODATA through
    // the chain. And one to a name that does not exist: NXDOMAIN through the chain.
    microsoft.extend([
        rec(
            "cdn.manage.microsoft.com.",
            300,
            RData::CNAME(CNAME(n("edge.manage.microsoft.com."))),
        ),
        rec(
            "edge.manage.microsoft.com.",
            60,
            RData::A(A::new(192, 0, 2, 50)),
        ),
        rec(
            "edge.manage.microsoft.com.",
            60,
            RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x50)),
        ),
        rec(
            "delay.manage.microsoft.com.",
            60,
            RData::A(A::new(192, 0, 2, 70)),
        ),
        rec(
            "inject.manage.microsoft.com.",
            60,
            RData::A(A::new(192, 0, 2, 60)),
        ),
        rec(
            "tm.manage.microsoft.com.",
            300,
            RData::CNAME(CNAME(n("tm.trafficmanager.net."))),
        ),
        rec(
            "gone.manage.microsoft.com.",
            300,
            RData::CNAME(CNAME(n("missing-target.manage.microsoft.com."))),
        ),
        rec(
            "graph.microsoft.com.",
            60,
            RData::TXT(TXT::new(vec!["v=spf1 -all".into()])),
        ),
        rec(
            "graph.microsoft.com.",
            60,
            RData::MX(MX::new(10, n("mail.graph.microsoft.com."))),
        ),
    ]);
    let trafficmanager = vec![
        soa("trafficmanager.net."),
        rec(
            "tm.trafficmanager.net.",
            60,
            RData::A(A::new(192, 0, 2, 21)),
        ),
        rec(
            "manage.trafficmanager.net.",
            60,
            RData::A(A::new(192, 0, 2, 20)),
        ),
        rec(
            "manage.trafficmanager.net.",
            60,
            RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20)),
        ),
    ];
    let windows = vec![
        soa("windows.com."),
        rec("time.windows.com.", 60, RData::A(A::new(192, 0, 2, 40))),
        // A TTL far above any sane bound: the element timeout must still be clamped.
        rec(
            "x.notify.windows.com.",
            1_000_000,
            RData::A(A::new(192, 0, 2, 41)),
        ),
    ];
    let example = vec![
        soa("evil.example."),
        rec(
            "manage.microsoft.com.evil.example.",
            60,
            RData::A(A::new(192, 0, 2, 68)),
        ),
    ];
    // Names of the device families' vendor sets (Apple, Google).
    let apple = vec![
        soa("apple.com."),
        rec("albert.apple.com.", 60, RData::A(A::new(192, 0, 2, 60))),
        rec(
            "17-courier.push.apple.com.",
            60,
            RData::A(A::new(192, 0, 2, 61)),
        ),
    ];
    let google = vec![
        soa("google.com."),
        rec("play.google.com.", 60, RData::A(A::new(192, 0, 2, 70))),
        rec("mtalk.google.com.", 60, RData::A(A::new(192, 0, 2, 71))),
    ];
    // The catalog feed's host in the tests (the feed service the test plays listens there).
    let feed = vec![
        soa("feed.test."),
        rec("endpoints.feed.test.", 60, RData::A(A::new(127, 0, 0, 1))),
    ];
    vec![
        (n("microsoft.com."), microsoft),
        (n("trafficmanager.net."), trafficmanager),
        (n("windows.com."), windows),
        (n("evil.example."), example),
        (n("feed.test."), feed),
        (n("apple.com."), apple),
        (n("google.com."), google),
    ]
}

/// Records every query the upstream receives.
#[derive(Clone, Default)]
pub struct QueryCounter(
    Arc<Mutex<Vec<(String, RecordType)>>>,
    /// (source port, ID, question name as sent) of each query.
    Arc<Mutex<Vec<(u16, u16, String)>>>,
);

impl QueryCounter {
    /// How many queries for `name` (any type) arrived. `name` is lower case with trailing dot.
    pub fn count(&self, name: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .count()
    }

    /// How many queries for `name` of `qtype` arrived.
    pub fn count_type(&self, name: &str, qtype: RecordType) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, t)| n == name && *t == qtype)
            .count()
    }

    /// (source port, ID, question name as sent) of every query so far.
    pub fn wire(&self) -> Vec<(u16, u16, String)> {
        self.1.lock().unwrap().clone()
    }

    /// Every query so far, but dnsfence's own health probes (the root's NS).
    pub fn all(&self) -> Vec<(String, RecordType)> {
        let mut all = self.0.lock().unwrap().clone();
        all.retain(|(n, t)| !(n == "." && *t == RecordType::NS));
        all
    }
}

/// The suffix of the test upstream's many names: `hN.bulk.manage.microsoft.com.` (N below
/// 65,536) has one A record, 198.18.(N / 256).(N % 256), TTL 600.
pub const BULK: &str = "bulk.manage.microsoft.com.";

/// The name and the address of bulk name `n`.
pub fn bulk_name(n: u16) -> (String, std::net::Ipv4Addr) {
    let [hi, lo] = n.to_be_bytes();
    (
        format!("h{n}.{BULK}"),
        std::net::Ipv4Addr::new(198, 18, hi, lo),
    )
}

fn bulk_answer(qname: &Name, qtype: RecordType) -> Option<Record> {
    let text = qname.to_ascii().to_ascii_lowercase();
    let n: u16 = text
        .strip_suffix(&format!(".{BULK}"))?
        .strip_prefix('h')?
        .parse()
        .ok()?;
    let (_, ip) = bulk_name(n);
    (qtype == RecordType::A).then(|| Record::from_rdata(qname.clone(), 600, RData::A(A(ip))))
}

/// The test upstream: answers like a recursive resolver over the test zones (CNAME chains
/// followed across zones, NODATA and NXDOMAIN with the final zone's SOA, RFC 2308), except for
/// names whose first label is `tm`, answered authority-style (only the records at the name, no
/// chasing, no SOA), as hickory's own authority and many zone servers do, and names whose first
/// label is `inject`, whose answers carry records nobody asked for; those whose first label is
/// `delay` are answered after 300 ms.
struct CountingHandler {
    zones: Vec<(Name, Vec<Record>)>,
    seen: QueryCounter,
    silent: Arc<std::sync::atomic::AtomicBool>,
}

impl CountingHandler {
    /// (rcode, answers, authorities) for a question.
    fn resolve(&self, qname: &Name, qtype: RecordType) -> (ResponseCode, Vec<Record>, Vec<Record>) {
        if let Some(a) = bulk_answer(qname, qtype) {
            return (ResponseCode::NoError, vec![a], Vec::new());
        }
        let mut answers = Vec::new();
        let mut current = qname.clone();
        let authority_style = qname
            .iter()
            .next()
            .is_some_and(|l| l.eq_ignore_ascii_case(b"tm"));
        for _ in 0..16 {
            let Some((origin, records)) = self
                .zones
                .iter()
                .filter(|(origin, _)| origin.zone_of(&current))
                .max_by_key(|(origin, _)| origin.num_labels())
            else {
                return (ResponseCode::Refused, answers, Vec::new());
            };
            let soa = || {
                records
                    .iter()
                    .filter(|r| r.name == *origin && r.record_type() == RecordType::SOA)
                    .cloned()
                    .collect::<Vec<_>>()
            };
            let at: Vec<&Record> = records.iter().filter(|r| r.name == current).collect();
            let hits: Vec<Record> = at
                .iter()
                .filter(|r| r.record_type() == qtype)
                .map(|r| (*r).clone())
                .collect();
            if !hits.is_empty() {
                answers.extend(hits);
                if qname
                    .iter()
                    .next()
                    .is_some_and(|l| l.eq_ignore_ascii_case(b"inject"))
                {
                    // An upstream (or a spoofer) adding what nobody asked for: an A record of an
                    // unrelated name, and a CNAME owned by an unrelated name.
                    let n = |s: &str| Name::from_str(s).unwrap();
                    answers.push(Record::from_rdata(
                        n("evil.example."),
                        60,
                        RData::A(A::new(198, 51, 100, 66)),
                    ));
                    answers.push(Record::from_rdata(
                        n("other.example."),
                        60,
                        RData::CNAME(CNAME(n("evil.example."))),
                    ));
                }
                return (ResponseCode::NoError, answers, Vec::new());
            }
            if let Some(cname) = at.iter().find(|r| r.record_type() == RecordType::CNAME) {
                answers.push((*cname).clone());
                if authority_style {
                    return (ResponseCode::NoError, answers, Vec::new());
                }
                let RData::CNAME(target) = &cname.data else {
                    unreachable!()
                };
                current = target.0.clone();
                continue;
            }
            let exists = records.iter().any(|r| current.zone_of(&r.name));
            let rcode = if exists {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            return (rcode, answers, soa());
        }
        (ResponseCode::ServFail, Vec::new(), Vec::new())
    }
}

#[async_trait::async_trait]
impl RequestHandler for CountingHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut blackhole = false;
        for q in request.queries.queries() {
            let name = q.name().to_string().to_ascii_lowercase();
            blackhole |= name.ends_with(BLACKHOLE);
            self.seen.0.lock().unwrap().push((name, q.query_type()));
            self.seen.1.lock().unwrap().push((
                request.src().port(),
                request.metadata.id,
                q.original().name().to_ascii(),
            ));
        }
        let mut md = Metadata::response_from_request(&request.metadata);
        if blackhole || self.silent.load(std::sync::atomic::Ordering::Relaxed) {
            // Never answer: the resolver must give up on its own deadline.
            return ResponseInfo::from(hickory_proto::op::Header {
                metadata: md,
                counts: Default::default(),
            });
        }
        md.recursion_available = true;
        let delayed = request.queries.queries().iter().any(|q| {
            q.name()
                .iter()
                .next()
                .is_some_and(|l| l.eq_ignore_ascii_case(b"delay"))
        });
        if delayed {
            // A slow upstream: identical questions meanwhile must share this one resolution.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let (rcode, answers, authorities) = match request.queries.queries() {
            [q] => self.resolve(&q.name().into(), q.query_type()),
            _ => (ResponseCode::FormErr, Vec::new(), Vec::new()),
        };
        md.response_code = rcode;
        let edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            e
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let sent = response
            .send_response(builder.build(
                md,
                answers.iter(),
                authorities.iter(),
                std::iter::empty(),
                std::iter::empty(),
            ))
            .await;
        sent.unwrap_or_else(|_| {
            ResponseInfo::from(hickory_proto::op::Header {
                metadata: md,
                counts: Default::default(),
            })
        })
    }
}

/// A running in-process upstream.
pub struct Authority {
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    /// What it was asked.
    pub seen: QueryCounter,
    silent: Arc<std::sync::atomic::AtomicBool>,
    _stop: oneshot::Sender<()>,
}

impl Authority {
    /// Starts the authority on 127.0.0.1, an ephemeral port.
    pub async fn start() -> Authority {
        let seen = QueryCounter::default();
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handler = CountingHandler {
            zones: test_zones(),
            seen: seen.clone(),
            silent: silent.clone(),
        };
        let listeners = Listeners::bind(&["127.0.0.1:0".parse().unwrap()])
            .await
            .unwrap();
        let addr = listeners.local_addrs()[0];
        let mut server = hickory_server::Server::new(handler);
        for s in listeners.udp {
            s.set_nonblocking(true).unwrap();
            server.register_socket(tokio::net::UdpSocket::from_std(s).unwrap());
        }
        for l in listeners.tcp {
            server.register_listener(l, Duration::from_secs(5), 16);
        }
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::select! {
                _ = server.block_until_done() => {}
                _ = rx => { let _ = server.shutdown_gracefully().await; }
            }
        });
        Authority {
            addr,
            seen,
            silent,
            _stop: tx,
        }
    }

    /// Makes the upstream stop answering anything (`true`) or answer again (`false`).
    pub fn set_silent(&self, silent: bool) {
        self.silent
            .store(silent, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The repository's own zone directory.
pub fn zones_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("zones")
}

/// A single-view config for clients in `networks` (a TOML array body), with `view_opts` added to
/// that view and `extra` appended (more views, other sections). `[server]`, `[http]`,
/// `[query_log]` or `[upstream]` in `extra` replace the test defaults (an `[upstream]` keeps the
/// test upstream's address).
pub fn config_text(upstream: SocketAddr, networks: &str, view_opts: &str, extra: &str) -> String {
    let server = if extra.contains("[server]") {
        ""
    } else {
        "[server]\nlisten = [\"127.0.0.1:0\"]"
    };
    let http = if extra.contains("[http]") {
        ""
    } else {
        "[http]\nlisten = \"127.0.0.1:0\""
    };
    let log = if extra.contains("[query_log]") {
        ""
    } else {
        "[query_log]\nlevel = \"none\""
    };
    // An [upstream] in `extra` replaces the default one, keeping the test upstream's address.
    let (upstream_section, extra) = if extra.contains("[upstream]") {
        // "UPSTREAM" in the test's own `servers` stands for the test upstream.
        let servers = if extra.contains("servers =") {
            String::new()
        } else {
            format!("servers = [\"{upstream}\"]\n")
        };
        (
            String::new(),
            extra
                .replace(
                    "[upstream]",
                    &format!("[upstream]\n{servers}probe_interval_ms = 300"),
                )
                .replace("UPSTREAM", &upstream.to_string()),
        )
    } else {
        (
            format!(
                "[upstream]\nservers = [\"{upstream}\"]\ntimeout_ms = 700\ncache_size = 1000\nprobe_interval_ms = 300"
            ),
            extra.to_string(),
        )
    };
    format!(
        r#"
{server}

{http}

[zones]
dirs = ["{zones}"]
tenant_regions = ["na", "eu", "ap"]

{upstream_section}

{log}

[[view]]
name = "loopback"
networks = [{networks}]
profiles = ["intune-core", "autopilot", "wns", "delivery-optimization", "apple", "authentication", "win32-apps"]
{view_opts}
{extra}
"#,
        zones = zones_dir().display()
    )
}

/// A running dnsfence and its upstream.
pub struct Server {
    /// dnsfence's address (UDP and TCP).
    pub addr: SocketAddr,
    /// The upstream and its query record.
    pub upstream: Authority,
    /// What the server's query path reads (policy, cache, fence, counters).
    pub engine: std::sync::Arc<dnsfence::query::Engine>,
    /// What it reports about itself (listening, last reload, catalog sources).
    pub status: std::sync::Arc<dnsfence::net::status::Status>,
    /// The HTTP endpoints' address.
    pub http: Option<SocketAddr>,
    /// Control signals (reload, shutdown).
    pub signals: dnsfence::daemon::signal::SignalSender,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A test's dnsfence, described before it starts: the loopback view (its networks and extra
/// keys), more config text (`[server]`, `[http]`, `[fence]`, …) and the upstream authority.
#[derive(Default)]
pub struct Builder {
    networks: Option<String>,
    view: String,
    config: String,
    upstream: Option<Authority>,
    forward_to: Option<SocketAddr>,
}

impl Builder {
    /// The view's client networks, as TOML list items (default `"127.0.0.0/8"`).
    pub fn networks(mut self, networks: &str) -> Builder {
        self.networks = Some(networks.to_string());
        self
    }

    /// Extra keys of the view (`mode = "report"`, …).
    pub fn view(mut self, opts: &str) -> Builder {
        self.view.push_str(opts);
        self.view.push('\n');
        self
    }

    /// Extra config text after the view (its own sections).
    pub fn config(mut self, text: &str) -> Builder {
        self.config.push_str(text);
        self.config.push('\n');
        self
    }

    /// The upstream to use instead of a fresh in-process authority.
    pub fn upstream(mut self, upstream: Authority) -> Builder {
        self.upstream = Some(upstream);
        self
    }

    /// Forward to `addr` (a spoofer in front of the authority, say) instead of the authority.
    pub fn forward_to(mut self, addr: SocketAddr) -> Builder {
        self.forward_to = Some(addr);
        self
    }

    /// Starts it; panics when dnsfence refuses to start.
    pub async fn start(self) -> Server {
        self.try_start().await.expect("dnsfence starts")
    }

    /// Starts it, or the start-up error.
    pub async fn try_start(self) -> Result<Server, dnsfence::daemon::app::StartError> {
        let upstream = match self.upstream {
            Some(u) => u,
            None => Authority::start().await,
        };
        let networks = self.networks.as_deref().unwrap_or("\"127.0.0.0/8\"");
        let to = self.forward_to.unwrap_or(upstream.addr);
        let text = config_text(to, networks, &self.view, &self.config);
        let config = Config::parse(Path::new("test.toml"), &text, Path::new("/nonexistent"))
            .expect("test config parses");
        Server::from_config(config, upstream).await
    }
}

impl Server {
    /// A test's dnsfence, to describe and start.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Starts dnsfence on a parsed config, with an upstream already running.
    pub async fn from_config(
        config: Config,
        upstream: Authority,
    ) -> Result<Server, dnsfence::daemon::app::StartError> {
        let app = App::build(config).await?;
        let (engine, status) = (app.engine.clone(), app.status.clone());
        let bound = app.bind().await.expect("dnsfence binds");
        let addr = bound.dns.local_addrs()[0];
        let http = bound.http_addr();
        let (tx, rx) = dnsfence::daemon::signal::channel();
        let task = tokio::spawn(async move {
            app.run(bound, rx).await.expect("dnsfence serves");
        });
        Ok(Server {
            addr,
            upstream,
            engine,
            status,
            http,
            signals: tx,
            task: Some(task),
        })
    }

    /// A client of this dnsfence.
    pub fn client(&self) -> Client {
        Client { server: self.addr }
    }

    /// Stops dnsfence gracefully and waits for it.
    pub async fn stop(self) {
        self.stop_keeping_upstream().await;
    }

    /// Stops dnsfence gracefully, waits for it, and hands back its upstream (a restart test
    /// starts the next dnsfence on the same one, which remembers what it was asked).
    pub async fn stop_keeping_upstream(mut self) -> Authority {
        let _ = self
            .signals
            .send(dnsfence::daemon::signal::Signal::Shutdown);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("dnsfence stops within 5 s")
                .expect("dnsfence task ends cleanly");
        }
        self.upstream
    }
}

/// A DNS client over real sockets that shows every bit of the answer.
pub struct Client {
    /// The server.
    pub server: SocketAddr,
}

/// A query message. `edns`: the advertised UDP payload size, or no EDNS at all.
pub fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    // from_ascii keeps the case as written (from_str lower-cases).
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(4242);
    NEXT.fetch_add(7, Ordering::Relaxed)
}

impl Client {
    /// Sends a message over UDP and returns the answer, or `None` after `wait`.
    pub async fn udp_raw(&self, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
        self.udp_raw_from("127.0.0.1", bytes, wait).await
    }

    /// A server that is starting: asks `bytes` up to `tries` times, `wait` each, and returns the
    /// first answer (`None` when it never answered).
    pub async fn first_answer(
        &self,
        bytes: &[u8],
        tries: usize,
        wait: Duration,
    ) -> Option<Vec<u8>> {
        for _ in 0..tries {
            if let Some(a) = self.udp_raw(bytes, wait).await {
                return Some(a);
            }
        }
        None
    }

    /// Same, from a chosen loopback source address (127.0.0.0/8 is all local on Linux).
    pub async fn udp_raw_from(&self, src: &str, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
        let sock = UdpSocket::bind((src, 0)).await.unwrap();
        sock.send_to(bytes, self.server).await.unwrap();
        let mut buf = vec![0u8; 65535];
        match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// A UDP exchange that must be answered within 5 s with the request's id.
    pub async fn udp(&self, msg: &Message) -> Message {
        self.udp_from("127.0.0.1", msg).await
    }

    /// The usual question: `name`/`qtype` over UDP with EDNS (1232 bytes), answered within 5 s.
    pub async fn ask(&self, name: &str, qtype: RecordType) -> Message {
        self.udp(&query(name, qtype, Some(1232))).await
    }

    /// A UDP exchange from a chosen loopback source address.
    pub async fn udp_from(&self, src: &str, msg: &Message) -> Message {
        let bytes = self
            .udp_raw_from(src, &msg.to_vec().unwrap(), Duration::from_secs(5))
            .await
            .expect("an answer over UDP within 5 s");
        let answer = Message::from_vec(&bytes).expect("a well-formed answer");
        assert_eq!(answer.metadata.id, msg.metadata.id);
        assert_eq!(answer.metadata.message_type, MessageType::Response);
        answer
    }

    /// A TCP exchange of raw bytes (two-byte length prefix), answered within 5 s.
    pub async fn tcp_raw(&self, bytes: &[u8]) -> Vec<u8> {
        tcp_exchange(TcpStream::connect(self.server).await.unwrap(), bytes).await
    }

    /// A TCP exchange (two-byte length prefix) that must be answered within 5 s.
    pub async fn tcp(&self, msg: &Message) -> Message {
        let mut stream = TcpStream::connect(self.server).await.unwrap();
        let bytes = msg.to_vec().unwrap();
        stream
            .write_all(&(bytes.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&bytes).await.unwrap();
        let read = async {
            let len = stream.read_u16().await.unwrap() as usize;
            let mut buf = vec![0u8; len];
            stream.read_exact(&mut buf).await.unwrap();
            buf
        };
        let buf = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("an answer over TCP within 5 s");
        let answer = Message::from_vec(&buf).expect("a well-formed answer");
        assert_eq!(answer.metadata.id, msg.metadata.id);
        answer
    }
}

/// Sends one framed message on a connected stream and reads the framed answer, within 5 s.
pub async fn tcp_exchange(mut stream: TcpStream, bytes: &[u8]) -> Vec<u8> {
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.unwrap();
    let read = async {
        let len = stream.read_u16().await.unwrap() as usize;
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an answer over TCP within 5 s")
}

/// The RFC 8914 extended error of an answer: (info code, text).
pub fn ede(msg: &Message) -> Option<(u16, String)> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    let edns = msg.edns.as_ref()?;
    match edns.option(EdnsCode::Unknown(15))? {
        EdnsOption::Unknown(15, data) if data.len() >= 2 => Some((
            u16::from_be_bytes([data[0], data[1]]),
            String::from_utf8_lossy(&data[2..]).into_owned(),
        )),
        _ => None,
    }
}

/// The A and AAAA addresses of the answer section.
pub fn ips(msg: &Message) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for r in &msg.answers {
        match &r.data {
            RData::A(a) => v4.push(a.0),
            RData::AAAA(a) => v6.push(a.0),
            _ => {}
        }
    }
    (v4, v6)
}

/// The response code.
pub fn rcode(msg: &Message) -> ResponseCode {
    msg.metadata.response_code
}

/// Record types of the answer section, in order, with their owner names.
pub fn answer_types(msg: &Message) -> Vec<(String, RecordType)> {
    msg.answers
        .iter()
        .map(|r| (r.name.to_string(), r.record_type()))
        .collect()
}

/// An HTTP GET over a real socket: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: dnsfence\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    };
    let out = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("HTTP answer within 5 s");
    let text = String::from_utf8(out).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// Scrapes `/metrics` and parses it with an exposition-format parser.
pub async fn scrape(f: &Server) -> prometheus_parse::Scrape {
    let (status, body) = http_get(f.http.expect("http enabled"), "/metrics").await;
    assert_eq!(status, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("valid exposition format")
}

/// The value of one sample: metric name and exact labels (all of them).
pub fn sample(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// A network namespace made for one test, deleted when dropped.
pub struct Netns {
    /// Its name (`ip netns`).
    pub name: String,
}

impl Netns {
    /// Creates a namespace, or says why fence tests cannot run here.
    pub fn create(test: &str) -> Result<Netns, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: nftables in a network namespace needs root".into());
        }
        for (tool, arg) in [("ip", "-V"), ("nft", "-v")] {
            let found = std::process::Command::new(tool)
                .arg(arg)
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Err(format!(
                    "`{tool}` is not installed (apt-get install iproute2 nftables)"
                ));
            }
        }
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "dnsfence-t{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let out = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "ip netns add failed for {test}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Netns { name })
    }

    /// Runs `nft ARGS` inside the namespace; panics on failure.
    pub fn nft(&self, args: &[&str]) -> String {
        self.try_nft(args)
            .unwrap_or_else(|e| panic!("nft {args:?}: {e}"))
    }

    /// Runs `nft ARGS` inside the namespace.
    pub fn try_nft(&self, args: &[&str]) -> Result<String, String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Feeds a script to `nft -f -` inside the namespace.
    pub fn nft_script(&self, script: &str, check_only: bool) -> Result<(), String> {
        use std::io::Write;
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.name, "nft"]);
        if check_only {
            cmd.arg("-c");
        }
        let mut child = cmd
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Elements of a set as (value, timeout secs, expires secs), from `nft -j`.
    pub fn elements(&self, set: &str) -> Vec<(String, Option<u64>, Option<u64>)> {
        let Ok(json) = self.try_nft(&["-j", "list", "set", "inet", "dnsfence", set]) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&json).expect("nft -j prints JSON");
        let mut out = Vec::new();
        for item in v["nftables"].as_array().into_iter().flatten() {
            for e in item["set"]["elem"].as_array().into_iter().flatten() {
                let (val, timeout, expires) = match e.get("elem") {
                    Some(inner) => (
                        inner["val"].clone(),
                        inner["timeout"].as_u64(),
                        inner["expires"].as_u64(),
                    ),
                    None => (e.clone(), None, None),
                };
                out.push((value_text(&val), timeout, expires));
            }
        }
        out
    }
}

/// nft's JSON value of an element as the text nft would print.
fn value_text(v: &serde_json::Value) -> String {
    if let Some(parts) = v.get("concat").and_then(|c| c.as_array()) {
        return parts.iter().map(value_text).collect::<Vec<_>>().join(" . ");
    }
    if let Some(p) = v.get("prefix") {
        return format!("{}/{}", p["addr"].as_str().unwrap_or(""), p["len"]);
    }
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Netns {
    /// Runs a command inside the namespace (`ip netns exec`), which also bind-mounts
    /// `/etc/netns/NAME/resolv.conf` over `/etc/resolv.conf` when [`Netns::resolv_conf`] wrote one.
    pub fn exec(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c.kill_on_drop(true);
        c
    }

    /// The resolv.conf the namespace's processes see.
    pub fn resolv_conf(&self, text: &str) {
        let dir = std::path::Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&self.name));
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// `dnsfence run -c cfg` as a child process: standard error piped (the test reads it), killed
/// when dropped.
pub fn spawn_run(cfg: &Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_dnsfence"))
        .args(["run", "-c"])
        .arg(cfg)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// A config file in `dir` for running the real binary: [`config_text`] for loopback clients,
/// served on a port free for both UDP and TCP (released just before dnsfence binds it).
pub async fn binary_config(dir: &Path, upstream: SocketAddr) -> (PathBuf, u16) {
    let port = {
        let l = Listeners::bind(&["127.0.0.1:0".parse().unwrap()])
            .await
            .unwrap();
        l.local_addrs()[0].port()
    };
    let text = config_text(upstream, "\"127.0.0.0/8\"", "", "").replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"127.0.0.1:{port}\"]"),
    );
    let path = dir.join("dnsfence.toml");
    std::fs::write(&path, text).unwrap();
    (path, port)
}

/// Waits (at most 10 s) until `file` contains `what`; panics with the file's text otherwise.
pub async fn wait_for(file: &Path, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if std::fs::read_to_string(file).is_ok_and(|t| t.contains(what)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} never said {what:?}: {}",
        file.display(),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// Starts Unbound in `ns` on `interface`:53, answering `local_data` records (Unbound's
/// `local-data` syntax) and logging every query to the returned log file, once it serves.
pub async fn start_unbound(
    ns: &Netns,
    dir: &Path,
    interface: &str,
    local_data: &[String],
) -> (tokio::process::Child, PathBuf) {
    let log = dir.join(format!("unbound-{interface}.log"));
    let conf = dir.join(format!("unbound-{interface}.conf"));
    let mut text = format!(
        "server:\n  interface: {interface}\n  port: 53\n  do-daemonize: no\n  \
         use-syslog: no\n  logfile: \"{log}\"\n  log-queries: yes\n  verbosity: 1\n  \
         chroot: \"\"\n  username: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  \
         do-ip6: no\n  module-config: \"iterator\"\n  access-control: 127.0.0.0/8 allow\n",
        log = log.display(),
        dir = dir.display(),
    );
    for record in local_data {
        text.push_str(&format!("  local-data: \"{record}\"\n"));
    }
    std::fs::write(&conf, text).unwrap();
    let child = ns
        .exec("/usr/sbin/unbound")
        .args(["-d", "-c"])
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&log, "start of service").await;
    (child, log)
}

/// Says why `test` cannot run here. Under `CI=true` that is a failure: CI must prove that the
/// kernel, Unbound and package tests ran, so a missing tool or privilege fails the run.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
    println!("SKIPPED {test}: {why}");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} did not run under CI=true: {why}");
    }
}

/// `Some(())` as root; otherwise says why `test` is skipped (see [`skip`]).
pub fn root_or_skip(test: &str) -> Option<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Some(())
    } else {
        skip(test, "needs root");
        None
    }
}

/// Creates a namespace for a fence test, or prints why the test is skipped and returns `None`.
pub fn netns_or_skip(test: &str) -> Option<Netns> {
    match Netns::create(test) {
        Ok(ns) => Some(ns),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

/// The `[fence]` section for a test namespace; keys in `extra` override the test defaults.
pub fn fence_section(ns: &Netns, extra: &str) -> String {
    let defaults = [
        ("admit_deadline_ms", "2000"),
        ("resync_interval_ms", "300"),
        ("min_ttl_secs", "300"),
        ("max_ttl_secs", "1000"),
        ("grace_secs", "60"),
    ];
    let mut out = format!("[fence]\nenabled = true\nnetns = \"{}\"\n", ns.name);
    for (key, value) in defaults {
        if !extra.lines().any(|l| l.trim_start().starts_with(key)) {
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
    out.push_str(extra);
    out.push('\n');
    out
}

/// Polls `check` every 50 ms for up to `within`.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls an async check every 50 ms for up to `within`.
pub async fn eventually_async<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The query log's lines once at least `n` have been written (polls for up to 3 s).
pub async fn log_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each log line is JSON"))
            .collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a test body on a fresh multi-threaded runtime with the overall time bound.
pub fn run<F: std::future::Future<Output = ()>>(body: F) {
    run_within(TEST_TIMEOUT, body)
}

/// [`run`] with a bound of its own, for tests that start containers.
pub fn run_within<F: std::future::Future<Output = ()>>(limit: Duration, body: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(limit, body)
            .await
            .expect("test finished within its time bound");
    });
}

/// Makes a CA (`ca.pem`) and a server certificate (`server.pem`, `server.key`) for `name` (a
/// DNS name or an IP address) in `dir` with openssl; false (and why,
/// printed) when openssl is missing.
pub fn certificates(dir: &Path, name: &str) -> bool {
    signed_certificates(dir, "ca", &[("server", name)])
}

/// A CA (`{ca}.pem`, `{ca}.key`) and, signed by it, `{file}.pem`/`{file}.key` for each
/// `(file, name)` (a DNS name or an IP address), usable by both ends of a TLS link; false when
/// openssl is missing.
pub fn signed_certificates(dir: &Path, ca: &str, certs: &[(&str, &str)]) -> bool {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => true,
            Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
            Err(_) => false,
        }
    };
    let made_ca = run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &format!("{ca}.key"),
        "-out",
        &format!("{ca}.pem"),
        "-days",
        "2",
        "-subj",
        &format!("/CN=dnsfence test {ca}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    certs.iter().fold(made_ca, |made, (file, name)| {
        let san = if name.parse::<std::net::IpAddr>().is_ok() {
            format!("IP:{name}")
        } else {
            format!("DNS:{name}")
        };
        std::fs::write(
            dir.join(format!("{file}.cnf")),
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )
        .unwrap();
        made && run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{file}.key"),
            "-out",
            &format!("{file}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]) && run(&[
            "x509",
            "-req",
            "-in",
            &format!("{file}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{file}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{file}.cnf"),
        ])
    })
}

/// Runs `ip ARGS`; panics with its error output on failure.
pub fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
