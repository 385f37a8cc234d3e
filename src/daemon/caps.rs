//! The process's two capabilities (CAP_NET_ADMIN, CAP_NET_BIND_SERVICE), passed on to the
//! programs the fence runs (`nft -f`, `ipset restore`). Under systemd they arrive as ambient
//! capabilities, which children inherit. From file capabilities (the container image's
//! binary, run as a non-root user) they are only permitted and effective, and a child with no
//! file capabilities of its own would start with none: `nft` would be refused. So, before any
//! thread starts (capabilities are per thread, and threads copy their creator's), each of the
//! two this process holds is made inheritable and ambient: children get what dnsfence has,
//! never more. Root keeps its usual rules and is left alone.

/// The capabilities dnsfence works with, by number (linux/capability.h).
const SHARED: [(u32, &str); 2] = [(10, "CAP_NET_BIND_SERVICE"), (12, "CAP_NET_ADMIN")];
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn last_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Makes the permitted ones of the two capabilities ambient (see the module docs). Returns
/// the names of those it raised; an empty list as root or when there was nothing to do.
pub fn share_with_children() -> Result<Vec<&'static str>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(Vec::new());
    }
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two Data words for version 3, which `data` holds.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(last_error("capget"));
    }
    let ambient = |cap: u32| {
        // SAFETY: PR_CAP_AMBIENT_IS_SET reads this thread's ambient set.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_IS_SET,
                cap as libc::c_ulong,
                0,
                0,
            ) == 1
        }
    };
    let raise: Vec<(u32, &'static str)> = SHARED
        .into_iter()
        .filter(|(cap, _)| data[0].permitted & (1 << cap) != 0 && !ambient(*cap))
        .collect();
    if raise.is_empty() {
        return Ok(Vec::new());
    }
    for (cap, _) in &raise {
        data[0].inheritable |= 1 << cap;
    }
    // SAFETY: capset reads the header and two Data words; the inheritable set only gains
    // capabilities that are permitted, which needs no privilege.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(last_error("capset"));
    }
    for (cap, name) in &raise {
        // SAFETY: raising an ambient capability that is permitted and inheritable.
        let raised = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                *cap as libc::c_ulong,
                0,
                0,
            )
        };
        if raised != 0 {
            return Err(last_error(&format!("raising {name} to ambient")));
        }
    }
    Ok(raise.into_iter().map(|(_, name)| name).collect())
}
