//! The HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/v1/sets`, `/v1/sets/{view}.txt`,
//! `/v1/denied`.
//!
//! A deliberately small HTTP/1.1 server on tokio rather than a web framework: the clients are
//! Prometheus and firewalls pulling lists with plain GETs, one request per connection, and the
//! dependency tree (two cores, one build at a time) stays lean. Requests are bounded: 8 KiB of
//! head, 5 s to send it, GET and HEAD only.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Encoder, TextEncoder};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::fence::DynSet;
use crate::query::Engine;

/// Largest request head accepted.
const MAX_HEAD: usize = 8192;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP on `listener` until `shutdown` completes, at most `max_connections` at once (more
/// are closed at once and counted).
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    use std::sync::atomic::Ordering::Relaxed;
                    if open.fetch_add(1, Relaxed) >= max_connections {
                        open.fetch_sub(1, Relaxed);
                        engine.metrics.overload("http");
                        drop(stream);
                        continue;
                    }
                    let (engine, open) = (engine.clone(), open.clone());
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, &engine).await {
                            tracing::debug!(error = %e, "http connection");
                        }
                        open.fetch_sub(1, Relaxed);
                    });
                }
                Err(e) => {
                    // Out of descriptors, usually: back off rather than spin on it.
                    crate::warn_limited!(error = %e, "http accept failed");
                    tokio::time::sleep(crate::tcp::accept_backoff(&e)).await;
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

async fn handle(mut stream: TcpStream, engine: &Engine) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(true);
            }
        }
    };
    let complete = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    if !complete {
        return Ok(());
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let response = if head.len() > MAX_HEAD {
        Response::text(431, "request head too large\n")
    } else if method != "GET" && method != "HEAD" {
        Response::text(405, "only GET and HEAD\n")
    } else {
        route(target, engine)
    };
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
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(&response.body);
    }
    let write = async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn route(target: &str, engine: &Engine) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/metrics" => metrics(engine),
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" => ready(engine),
        "/v1/sets" => sets_json(engine),
        "/v1/denied" => denied(engine, query),
        "/v1/catalog" => catalog_json(engine),
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
fn last_success(f: &crate::source::follow::SourceStatus) -> Option<String> {
    let at = f.last_success.load(std::sync::atomic::Ordering::Relaxed);
    (at > 0).then(|| {
        crate::querylog::rfc3339(
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(at),
        )
    })
}

/// `/v1/catalog`: per source file (shipped, local, page, feed) its endpoint sets, the sets it
/// extends, and for a followed source its version, last fetch and last error.
fn catalog_json(engine: &Engine) -> Response {
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
    let shipped = engine.sources.shipped();
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for set in &policy.catalog.sets {
        for f in std::iter::once(&set.source).chain(&set.extended_by) {
            if !files.contains(f) {
                files.push(f.clone());
            }
        }
    }
    let ids = |pick: &dyn Fn(&crate::zones::EndpointSet) -> bool| {
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
            let followed = engine.sources.overlay(&file);
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
    let unwritten: Vec<Source> = engine
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
    let m = &engine.metrics;
    m.cache_entries.set(engine.cache.len() as i64);
    m.upstream_inflight
        .set(engine.upstream.load().inflight() as i64);
    if let Some(fence) = &engine.fence {
        for (i, set) in fence.sets().iter().enumerate() {
            let (all, would_deny) = fence.element_count(i);
            let labels = [set.view.as_str(), set.name.as_str()];
            m.fence_elements.with_label_values(&labels).set(all as i64);
            m.fence_would_deny
                .with_label_values(&labels)
                .set(would_deny as i64);
        }
    }
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

fn ready(engine: &Engine) -> Response {
    let mut problems = Vec::new();
    if !engine.listening.load(std::sync::atomic::Ordering::Relaxed) {
        problems.push("DNS sockets are not serving".to_string());
    }
    let upstream = engine.upstream.load();
    let servers = upstream.health(engine.upstream_fresh);
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
                        crate::zones::Proto::Tcp => "tcp",
                        crate::zones::Proto::Udp => "udp",
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
fn ids_of(policy: &crate::policy::Policy, sets: &[u32]) -> Vec<String> {
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
        Some(Ok(n)) => n.min(crate::metrics::TOP_K),
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
