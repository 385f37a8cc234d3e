//! Socket options that std does not expose, set through libc in one place.

use std::io;
use std::os::fd::RawFd;

/// Sets an integer socket option.
pub fn set_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads a c_int of the size given; `fd` is the caller's open descriptor.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Which kernel buffer of a socket.
#[derive(Debug, Clone, Copy)]
pub enum Buffer {
    Send,
    Receive,
}

/// Asks for a `bytes`-sized kernel buffer. The FORCE option passes the `net.core.*mem_max`
/// caps (root, or CAP_NET_ADMIN); without that privilege the plain option gets as much as the
/// cap allows. Best effort: on failure the kernel's default stays, which still works, only
/// with less room for bursts.
pub fn grow_buffer(fd: RawFd, buffer: Buffer, bytes: usize) {
    let (force, plain) = match buffer {
        Buffer::Send => (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        Buffer::Receive => (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    };
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // Only one of the two: the plain option after a successful FORCE would cap it again.
    if set_int(fd, libc::SOL_SOCKET, force, bytes).is_err() {
        let _ = set_int(fd, libc::SOL_SOCKET, plain, bytes);
    }
}

/// The receive buffer the kernel actually granted (it reports twice the requested size, the
/// doubling covering its bookkeeping).
pub fn receive_buffer(fd: RawFd) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn grows_the_receive_buffer() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = receive_buffer(s.as_raw_fd()).unwrap();
        grow_buffer(s.as_raw_fd(), Buffer::Receive, 4 << 20);
        let after = receive_buffer(s.as_raw_fd()).unwrap();
        // Unprivileged, the kernel caps the request at net.core.rmem_max, which may be the
        // default itself; it never shrinks the buffer.
        assert!(after >= before, "{after} < {before}");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(after >= 4 << 20, "root asked for 4 MiB, got {after}");
        } else {
            eprintln!(
                "not root: SO_RCVBUFFORCE not tried for real; checked only that {after} >= {before}"
            );
        }
    }

    #[test]
    fn set_int_reports_errors() {
        let err = set_int(-1, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }
}
