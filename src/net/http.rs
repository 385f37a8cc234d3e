//! The HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/v1/sets`, `/v1/sets/{view}.txt`,
//! `/v1/denied`.
//!
//! A deliberately small HTTP/1.1 server on tokio rather than a web framework: the clients are
//! Prometheus and firewalls pulling lists with plain GETs, and the dependency tree (two cores,
//! one build at a time) stays lean; hyper's server would bring its own connection machinery for
//! the same four limits. Bounded so that no client, slow or many, shuts the scrapers out: open
//! connections in all and per client address with a share only loopback and `[http] trusted`
//! clients may take; 8 KiB of head, `request_timeout_ms` to send it (a slowloris client is cut
//! then, however it trickles); kept-alive connections wait `idle_timeout_ms` for their next
//! request, 100 requests at most; GET and HEAD only.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Encoder, TextEncoder};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::HttpConfig;
use crate::fence::DynSet;
use crate::net::slots::{Limits, Refused, Slots};
use crate::net::status::Status;
use crate::query::Engine;

/// Largest request head accepted.
const MAX_HEAD: usize = 8192;
/// Time a client has to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one kept-alive connection carries at most.
const MAX_REQUESTS: usize = 100;

/// Serves HTTP on `listener` until `shutdown` completes, within the limits of `config`: open
/// connections in all and per client (with `reserved_connections` only loopback and `trusted`
/// clients may take), a deadline for each request head, and an idle timeout between kept-alive
/// requests. Connections refused or cut are counted (`dnsfence_overload_total{limit}`: http,
/// http_client, http_head_timeout).
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    status: Arc<Status>,
    config: HttpConfig,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let config = Arc::new(config);
    let slots = Slots::new(Limits {
        max: config.max_connections,
        per_client: config.max_connections_per_client,
        reserved: config.reserved_connections,
    });
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let client = crate::query::canonical(peer.ip());
                    let slot = match slots.admit(client, config.trusts(client)) {
                        Ok(slot) => slot,
                        Err(refused) => {
                            // Closed at once: a refused connection costs no more than this.
                            engine.metrics.overload(match refused {
                                Refused::Full => "http",
                                Refused::Client => "http_client",
                            });
                            drop(stream);
                            continue;
                        }
                    };
                    let (engine, status, config) = (engine.clone(), status.clone(), config.clone());
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, &engine, &status, &config).await {
                            tracing::debug!(error = %e, "http connection");
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of descriptors, usually: back off rather than spin on it.
                    crate::warn_limited!(error = %e, "http accept failed");
                    tokio::time::sleep(crate::net::tcp::accept_backoff(&e)).await;
                }
            },
            () = &mut shutdown => return,
        }
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }

    fn json(value: &impl Serialize) -> Response {
        match serde_json::to_vec_pretty(value) {
            Ok(body) => Response {
                status: 200,
                content_type: "application/json",
                body,
            },
            Err(e) => Response::text(500, format!("encoding: {e}\n")),
        }
    }
}

/// What reading a request head came to.
enum Head {
    /// A complete head (without its blank line); bytes after it stay in the buffer.
    Complete(Vec<u8>),
    /// Longer than [`MAX_HEAD`].
    TooLarge,
    /// The client closed, or sent nothing before the wait for a next request ran out.
    Closed,
    /// The client started a head and did not finish it in time (slowloris), or never sent a
    /// first request.
    TimedOut,
}

/// The end of a head in `buf`: (where it ends, where the next request starts).
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    buf.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}

/// Reads a request head into `buf`. The first byte must come within `first_byte` (`None`: it
/// is already due by `deadline`); the whole head by `deadline`, or `request_timeout` after the
/// first byte.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    first_byte: Option<Duration>,
    deadline: tokio::time::Instant,
    request_timeout: Duration,
) -> std::io::Result<Head> {
    let mut chunk = [0u8; 2048];
    let mut deadline = deadline;
    if buf.is_empty()
        && let Some(wait) = first_byte
    {
        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
            Err(_) | Ok(Ok(0)) => return Ok(Head::Closed),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
        deadline = tokio::time::Instant::now() + request_timeout;
    }
    loop {
        if let Some((end, next)) = head_end(buf) {
            let head = buf[..end].to_vec();
            buf.drain(..next);
            return Ok(Head::Complete(head));
        }
        if buf.len() > MAX_HEAD {
            return Ok(Head::TooLarge);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Ok(Head::TimedOut),
            Ok(Ok(0)) => return Ok(Head::Closed),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Whether the client asks to keep the connection: HTTP/1.1 unless `Connection: close`, HTTP/1.0
/// only with `Connection: keep-alive`.
fn keep_alive(head: &str) -> bool {
    let mut lines = head.lines();
    let http11 = lines
        .next()
        .is_some_and(|l| l.trim_end().ends_with("HTTP/1.1"));
    let connection = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        .map(|(_, v)| v.trim().to_ascii_lowercase());
    match connection.as_deref() {
        Some(v) if v.contains("close") => false,
        Some(v) if v.contains("keep-alive") => true,
        _ => http11,
    }
}

/// Whether the head announces a body (which dnsfence does not read: the connection closes).
fn has_body(head: &str) -> bool {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .any(|(k, v)| {
            let k = k.trim();
            (k.eq_ignore_ascii_case("content-length") && v.trim() != "0")
                || k.eq_ignore_ascii_case("transfer-encoding")
        })
}

async fn connection(
    mut stream: TcpStream,
    engine: &Engine,
    status: &Status,
    config: &HttpConfig,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    // The first request is due `request_timeout` after the connection opens.
    let mut first_byte = None;
    let mut deadline = tokio::time::Instant::now() + config.request_timeout;
    for served in 0..MAX_REQUESTS {
        let head = match read_head(
            &mut stream,
            &mut buf,
            first_byte,
            deadline,
            config.request_timeout,
        )
        .await?
        {
            Head::Complete(head) => String::from_utf8_lossy(&head).into_owned(),
            Head::TooLarge => {
                let r = Response::text(431, "request head too large\n");
                return respond(&mut stream, &r, false, false).await;
            }
            Head::Closed => return Ok(()),
            Head::TimedOut => {
                engine.metrics.overload("http_head_timeout");
                return Ok(());
            }
        };
        let line = head.lines().next().unwrap_or_default();
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let response = if method != "GET" && method != "HEAD" {
            Response::text(405, "only GET and HEAD\n")
        } else {
            route(target, engine, status)
        };
        let keep = served + 1 < MAX_REQUESTS
            && !config.idle_timeout.is_zero()
            && response.status != 405
            && !has_body(&head)
            && keep_alive(&head);
        respond(&mut stream, &response, method == "HEAD", keep).await?;
        if !keep {
            return Ok(());
        }
        first_byte = Some(config.idle_timeout);
        deadline = tokio::time::Instant::now() + config.idle_timeout;
    }
    Ok(())
}

/// Writes `response` (without its body for HEAD), then closes unless `keep`.
async fn respond(
    stream: &mut TcpStream,
    response: &Response,
    head_only: bool,
    keep: bool,
) -> std::io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {}\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len(),
        if keep { "keep-alive" } else { "close" }
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(&response.body);
    }
    let write = async {
        stream.write_all(&out).await?;
        if !keep {
            stream.shutdown().await?;
        }
        Ok(())
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client does not take the response",
        )),
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn route(target: &str, engine: &Engine, status: &Status) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/metrics" => metrics(engine),
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" => ready(engine, status),
        "/v1/sets" => sets_json(engine),
        "/v1/denied" => denied(engine, query),
        "/v1/catalog" => catalog_json(engine, status),
        "/v1/readiness" => {
            let policy = engine.policy.load();
            let view = query_param(query, "view");
            if let Some(v) = view
                && policy.view(v).is_none()
            {
                return Response::text(404, "no such view\n");
            }
            Response::json(&crate::catalog::readiness::report(&policy, view))
        }
        _ => match path
            .strip_prefix("/v1/sets/")
            .and_then(|p| p.strip_suffix(".txt"))
        {
            Some(view) => set_list(engine, view, query),
            None => Response::text(404, "not found\n"),
        },
    }
}

/// When a followed source last answered usefully, in RFC 3339.
fn last_success(f: &crate::catalog::source::follow::SourceStatus) -> Option<String> {
    let at = f.last_success.load(std::sync::atomic::Ordering::Relaxed);
    (at > 0).then(|| {
        crate::base::clock::rfc3339(
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(at),
        )
    })
}

/// `/v1/catalog`: per source file (shipped, local, page, autopilot-page, feed) its endpoint sets, the sets it
/// extends, and for a followed source its version, last fetch and last error.
fn catalog_json(engine: &Engine, status: &Status) -> Response {
    #[derive(serde::Serialize)]
    struct Source {
        source: &'static str,
        file: String,
        sets: Vec<String>,
        extends: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_success: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
    }
    let policy = engine.policy.load();
    let shipped = status.sources.shipped();
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for set in &policy.catalog.sets {
        for f in std::iter::once(&set.source).chain(&set.extended_by) {
            if !files.contains(f) {
                files.push(f.clone());
            }
        }
    }
    let ids = |pick: &dyn Fn(&crate::catalog::zones::EndpointSet) -> bool| {
        policy
            .catalog
            .sets
            .iter()
            .filter(|s| pick(s))
            .map(|s| s.id.clone())
            .collect::<Vec<_>>()
    };
    let mut sources: Vec<Source> = files
        .into_iter()
        .map(|file| {
            let followed = status.sources.overlay(&file);
            let kind = match followed {
                Some(f) => f.kind.as_str(),
                None if file.parent() == Some(shipped.as_path()) => "shipped",
                None => "local",
            };
            Source {
                source: kind,
                sets: ids(&|s| s.source == file),
                extends: ids(&|s| s.extended_by.contains(&file)),
                version: followed.and_then(|f| f.version()),
                last_success: followed.and_then(last_success),
                last_error: followed.and_then(|f| f.last_error()),
                file: file.display().to_string(),
            }
        })
        .collect();
    // A followed source that has not written an overlay yet is listed too, with its error.
    let unwritten: Vec<Source> = status
        .sources
        .followed
        .iter()
        .filter(|f| {
            let file = f.overlay.display().to_string();
            !sources.iter().any(|s| s.file == file)
        })
        .map(|f| Source {
            source: f.kind.as_str(),
            file: f.overlay.display().to_string(),
            sets: Vec::new(),
            extends: Vec::new(),
            version: f.version(),
            last_success: last_success(f),
            last_error: f.last_error(),
        })
        .collect();
    sources.extend(unwritten);
    Response::json(&serde_json::json!({ "sources": sources }))
}

fn metrics(engine: &Engine) -> Response {
    // Every value is read at this gather: the live metrics are collectors over the state.
    let m = &engine.metrics;
    let mut body = Vec::new();
    match TextEncoder::new().encode(&m.registry.gather(), &mut body) {
        Ok(()) => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body,
        },
        Err(e) => Response::text(500, format!("encoding metrics: {e}\n")),
    }
}

fn ready(engine: &Engine, status: &Status) -> Response {
    let mut problems = Vec::new();
    if !status.listening.load(std::sync::atomic::Ordering::Relaxed) {
        problems.push("DNS sockets are not serving".to_string());
    }
    let upstream = engine.upstream.load();
    let servers = upstream.health(status.upstream_fresh);
    if !servers.iter().any(|s| s.healthy) {
        problems.push("no upstream server has answered recently".to_string());
    }
    // Every server's state, healthy or not: an admin reading /readyz sees which one is down.
    let upstreams: Vec<String> = servers
        .iter()
        .map(|s| {
            let last = s.since_last_answer.map_or("never".to_string(), |d| {
                format!("{:.1}s ago", d.as_secs_f64())
            });
            format!(
                "upstream {}: {} (last answer {last}, srtt {:.1} ms, {} failures in a row)",
                s.label,
                if s.healthy { "up" } else { "down" },
                s.srtt.as_secs_f64() * 1000.0,
                s.consecutive_failures
            )
        })
        .collect();
    if let Some(fence) = &engine.fence
        && !fence.healthy()
    {
        problems.push(format!(
            "firewall backend unhealthy: {}",
            fence.last_error().unwrap_or_else(|| "unknown".into())
        ));
    }
    let mut body = String::from(if problems.is_empty() {
        "ready\n"
    } else {
        "not ready\n"
    });
    for p in &problems {
        let _ = writeln!(body, "- {p}");
    }
    for u in upstreams {
        let _ = writeln!(body, "{u}");
    }
    // Peer gateways: listed, never a reason to be unready (answering does not depend on them).
    for p in status.peers.iter().flat_map(|p| p.statuses()) {
        let state = if p.up() {
            "up".to_string()
        } else {
            format!("down ({})", p.last_error().unwrap_or_default())
        };
        let _ = writeln!(body, "sync peer {} ({}): {state}", p.name, p.address);
    }
    Response::text(if problems.is_empty() { 200 } else { 503 }, body)
}

#[derive(Serialize)]
struct ElementJson {
    addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    proto: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    expires_in_secs: u64,
    /// The question names whose answers put it there.
    names: Vec<String>,
    /// The endpoint sets that allowed them.
    endpoint_sets: Vec<String>,
    /// Only report-mode answers the allowlist would deny put it there.
    would_deny: bool,
    /// "answer", "peer:<name>", or "restored" (found in the kernel's set at start: no answer
    /// known).
    provenance: String,
    /// Each answer that put it there: question name, CNAME chain, endpoint sets.
    admitted_by: Vec<AdmissionJson>,
}

#[derive(Serialize)]
struct AdmissionJson {
    name: String,
    chain: Vec<String>,
    endpoint_sets: Vec<String>,
    would_deny: bool,
}

#[derive(Serialize)]
struct SetJson {
    table: String,
    set: String,
    family: u8,
    mode: &'static str,
    elements: Vec<ElementJson>,
}

#[derive(Serialize)]
struct ViewJson {
    view: String,
    sets: Vec<SetJson>,
    static_ranges: Vec<String>,
}

fn sets_json(engine: &Engine) -> Response {
    let Some(fence) = &engine.fence else {
        return Response::text(404, "the fence is not enabled ([fence] enabled = true)\n");
    };
    let policy = engine.policy.load();
    let now = Instant::now();
    let mut views: Vec<ViewJson> = Vec::new();
    for plan in fence.plans() {
        let mut sets = Vec::new();
        for (i, set) in fence
            .sets()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.view == plan.name)
        {
            let mut elements: Vec<ElementJson> = fence
                .elements(i)
                .into_iter()
                .map(|(ip, port, e)| ElementJson {
                    addr: ip.to_string(),
                    proto: port.map(|p| match p.proto {
                        crate::catalog::zones::Proto::Tcp => "tcp",
                        crate::catalog::zones::Proto::Udp => "udp",
                    }),
                    port: port.map(|p| p.port),
                    expires_in_secs: e.expires.saturating_duration_since(now).as_secs(),
                    names: e.admissions.iter().map(|a| a.name.to_string()).collect(),
                    endpoint_sets: {
                        let mut ids: Vec<String> = e
                            .admissions
                            .iter()
                            .flat_map(|a| ids_of(&policy, &a.endpoint_sets))
                            .collect();
                        ids.sort();
                        ids.dedup();
                        ids
                    },
                    would_deny: e.would_deny(),
                    provenance: e.provenance(),
                    admitted_by: e
                        .admissions
                        .iter()
                        .map(|a| AdmissionJson {
                            name: a.name.to_string(),
                            chain: a.chain.iter().map(|c| c.to_string()).collect(),
                            endpoint_sets: ids_of(&policy, &a.endpoint_sets),
                            would_deny: a.would_deny,
                        })
                        .collect(),
                })
                .collect();
            elements.sort_by(|a, b| (&a.addr, a.port).cmp(&(&b.addr, b.port)));
            sets.push(set_json(set, elements));
        }
        let mut static_ranges: Vec<String> =
            plan.statics.iter().map(|(n, _)| n.to_string()).collect();
        static_ranges.sort();
        static_ranges.dedup();
        views.push(ViewJson {
            view: plan.name.clone(),
            sets,
            static_ranges,
        });
    }
    Response::json(&serde_json::json!({ "views": views }))
}

/// Endpoint-set ids of catalog indices.
fn ids_of(policy: &crate::catalog::policy::Policy, sets: &[u32]) -> Vec<String> {
    sets.iter()
        .filter_map(|&s| policy.catalog.sets.get(s as usize).map(|s| s.id.clone()))
        .collect()
}

fn set_json(set: &DynSet, elements: Vec<ElementJson>) -> SetJson {
    SetJson {
        table: format!("inet {}", set.table),
        set: set.name.clone(),
        family: if set.v6 { 6 } else { 4 },
        mode: match set.mode {
            crate::config::FenceMode::Addr => "addr",
            crate::config::FenceMode::AddrPort => "addr_port",
        },
        elements,
    }
}

/// One address or CIDR per line: the view's live elements (addresses only, once each) and its
/// static ranges, optionally one family. The format Palo Alto EDLs, FortiGate threat feeds and
/// pfSense/OPNsense URL tables read.
fn set_list(engine: &Engine, view: &str, query: &str) -> Response {
    let Some(fence) = &engine.fence else {
        return Response::text(404, "the fence is not enabled ([fence] enabled = true)\n");
    };
    let family = match query_param(query, "family") {
        None => None,
        Some("4") => Some(false),
        Some("6") => Some(true),
        Some(_) => return Response::text(400, "family is 4 or 6\n"),
    };
    let Some(plan) = fence.plans().iter().find(|p| p.name == view) else {
        // The body never echoes the request: nothing a client sends comes back to a browser.
        return Response::text(404, "no such view\n");
    };
    let mut lines: Vec<String> = Vec::new();
    for (i, set) in fence.sets().iter().enumerate() {
        if set.view != view || family.is_some_and(|v6| v6 != set.v6) {
            continue;
        }
        let mut addrs: Vec<std::net::IpAddr> =
            fence.elements(i).into_iter().map(|(ip, _, _)| ip).collect();
        addrs.sort();
        addrs.dedup();
        lines.extend(addrs.into_iter().map(|a| a.to_string()));
    }
    let mut statics: Vec<ipnet::IpNet> = plan
        .statics
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| family.is_none_or(|v6| v6 == matches!(n, ipnet::IpNet::V6(_))))
        .collect();
    statics.sort();
    statics.dedup();
    lines.extend(statics.into_iter().map(|n| n.to_string()));
    let mut body = lines.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    Response::text(200, body)
}

#[derive(Serialize)]
struct DeniedJson {
    name: String,
    count: u64,
}

fn denied(engine: &Engine, query: &str) -> Response {
    let Some(view) = query_param(query, "view") else {
        return Response::text(400, "view= is required\n");
    };
    let limit = match query_param(query, "limit").map(str::parse::<usize>) {
        None => 50,
        Some(Ok(n)) => n.min(crate::query::metrics::TOP_K),
        Some(Err(_)) => return Response::text(400, "limit is a number\n"),
    };
    let known = engine.policy.load().view(view).is_some();
    if !known {
        // The body never echoes the request: nothing a client sends comes back to a browser.
        return Response::text(404, "no such view\n");
    }
    let top: Vec<DeniedJson> = engine
        .metrics
        .top_denied(view, limit)
        .into_iter()
        .map(|(name, count)| DeniedJson { name, count })
        .collect();
    Response::json(&serde_json::json!({ "view": view, "denied": top }))
}
