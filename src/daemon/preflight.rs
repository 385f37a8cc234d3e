//! What `run` refuses at start that can be known without binding a socket, in one place, so that
//! `dnsfence check` refuses the same configs with the same messages (`check && systemctl restart`
//! must not take the resolver down): the descriptor budget of the connection caps, the query log
//! file, the CA files, the sync certificates, the state directory (followed sources, warm restart), and the fence's capability and
//! network namespace. `App::build` runs it first; `check` runs it after loading the config.

use std::io;
use std::path::Path;

use crate::config::{Config, FenceBackend, LogLevel};

/// A start-up check that failed: the message `run` and `check` both print.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PreflightError(pub String);

/// Every check, in the order `run` meets them; the first failure.
pub fn check(config: &Config) -> Result<(), PreflightError> {
    descriptor_budget(config)?;
    query_log(config)?;
    if let Some(ca) = &config.upstream.tls_ca_file
        && config.upstream.servers.iter().any(|s| s.transport.is_tls())
    {
        crate::resolve::tls::client_config(Some(ca))
            .map(drop)
            .map_err(|e| PreflightError(format!("upstream tls_ca_file: {e}")))?;
    }
    let c = &config.catalog;
    if (c.page.is_some() || c.feed.is_some())
        && let Some(ca) = &c.ca_file
    {
        crate::catalog::source::fetch::Fetcher::new(
            Some(ca),
            None,
            std::time::Duration::from_secs(1),
        )
        .map(drop)
        .map_err(|e| PreflightError(format!("catalog ca_file: {e}")))?;
    }
    let s = &config.server;
    if s.warm_restart || c.page.is_some() || c.feed.is_some() {
        writable_dir(&s.state_dir).map_err(|e| {
            PreflightError(format!("server state_dir {}: {e}", s.state_dir.display()))
        })?;
    }
    if let Some(tls) = config.sync.tls.as_ref().filter(|_| config.sync.enabled()) {
        crate::state::peer::tls::configs(tls).map_err(|e| PreflightError(format!("sync: {e}")))?;
    }
    let f = &config.fence;
    if f.enabled && f.backend != FenceBackend::List {
        if !crate::fence::has_net_admin() {
            return Err(PreflightError(
                crate::fence::FenceError::NoCapability.to_string(),
            ));
        }
        if let Some(ns) = &f.netns {
            crate::fence::netns_path(ns).map_err(|e| {
                PreflightError(crate::fence::FenceError::Netns(ns.clone(), e).to_string())
            })?;
        }
    }
    Ok(())
}

/// The query log file can be appended to: an existing regular file that opens for writing, or a
/// missing one in a directory that exists and is writable. Nothing is created.
fn query_log(config: &Config) -> Result<(), PreflightError> {
    let q = &config.query_log;
    let Some(path) = q.path.as_deref().filter(|_| q.level != LogLevel::None) else {
        return Ok(());
    };
    let fail = |why: String| PreflightError(format!("query_log path {}: {why}", path.display()));
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(fail("is a directory".into())),
        Ok(_) => std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| fail(e.to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The file is created at start; its directory is not.
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => access(dir, libc::W_OK | libc::X_OK),
                Ok(_) => Err("not a directory".into()),
                Err(e) => Err(e.to_string()),
            }
            .map_err(|e| fail(format!("its directory {}: {e}", dir.display())))
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

/// `dir` is a directory this process may create files in, or does not exist yet but its parent
/// is (it is created when first written).
fn writable_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err("not a directory".into()),
        Ok(_) => access(dir, libc::W_OK | libc::X_OK),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match dir.parent() {
            Some(parent) if parent.is_dir() => access(parent, libc::W_OK | libc::X_OK)
                .map_err(|e| format!("missing, and its parent cannot be written: {e}")),
            _ => Err("missing, and so is its parent directory".into()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// access(2): what the kernel says of writing there (read-only file systems included).
fn access(path: &Path, mode: libc::c_int) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| "a NUL byte in the path".to_string())?;
    // SAFETY: access(2) with a NUL-terminated path that lives across the call.
    if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error().to_string())
    }
}

/// Sockets one upstream resolution may hold: hickory's UDP client sends each transmission from
/// a new random port (spoofing resistance) and keeps up to three in flight per query.
const UPSTREAM_SOCKETS_PER_RESOLUTION: u64 = 3;

/// Raises the soft limit on open files to the hard one (systemd's default soft limit is 1024),
/// and checks that the configured caps fit below it: TCP and HTTP connections, upstream
/// resolutions (a socket each), the UDP sockets, and a margin for the rest (log file, netlink,
/// `nft`). A config whose caps cannot be honoured is refused here rather than discovered under
/// load as EMFILE.
pub fn descriptor_budget(config: &Config) -> Result<u64, PreflightError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(PreflightError(format!(
                "getrlimit: {}",
                io::Error::last_os_error()
            )));
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    let sv = &config.server;
    let needed = sv.tcp_max_connections as u64
        + config.http.max_connections as u64
        + UPSTREAM_SOCKETS_PER_RESOLUTION * config.upstream.max_inflight as u64
        + (sv.listen.len() * (sv.udp_workers + 1)) as u64
        + 64;
    if needed > lim.rlim_cur {
        return Err(PreflightError(format!(
            "{}: the connection caps need about {needed} open files (tcp_max_connections {} + \
             http max_connections {} + 3 x upstream max_inflight {} + sockets and margin) but \
             the limit is {}: raise LimitNOFILE (systemd) / ulimit -n, or lower the caps",
            config.path.display(),
            sv.tcp_max_connections,
            config.http.max_connections,
            config.upstream.max_inflight,
            lim.rlim_cur
        )));
    }
    Ok(lim.rlim_cur)
}
