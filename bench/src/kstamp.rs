//! The kernel's receive stamps (`SO_TIMESTAMPNS`, socket(7)): when a datagram or
//! TCP segment reached a socket, so a benchmark can leave out how late its own busy
//! process read it. The stamps are CLOCK_REALTIME; compare them with
//! [`realtime_ns`] taken at the read, never with `Instant`.

use std::io;
use std::os::fd::RawFd;

/// Asks the kernel to stamp what `fd` receives (`SO_TIMESTAMPNS`).
pub fn enable(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a c_int option value of the given size; a bad fd is an error return.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CLOCK_REALTIME now, ns (the clock of the stamps).
pub fn realtime_ns() -> i128 {
    // SAFETY: clock_gettime fills the timespec it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// The `SCM_TIMESTAMPNS` stamp in a message `recvmsg`/`recvmmsg` filled, ns of
/// CLOCK_REALTIME (for TCP: the last segment the read took); `None` without one.
///
/// # Safety
///
/// `m.msg_control` and `m.msg_controllen` must describe the control buffer the
/// kernel filled for this message.
pub unsafe fn arrival_ns(m: &libc::msghdr) -> Option<i128> {
    // SAFETY: the caller vouches for the control buffer; the CMSG_* walk stays
    // inside msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return Some(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec));
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
    None
}

/// One `recvmsg(2)` on `fd` with `flags` into `buf`: the bytes read and their
/// arrival stamp ([`arrival_ns`]; `None` when the socket does not stamp).
pub fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<(usize, Option<i128>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain old data; the pointers set below outlive the call.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    m.msg_control = control.as_mut_ptr().cast();
    m.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: a msghdr pointing into live buffers; a bad fd is an error return.
    let n = unsafe { libc::recvmsg(fd, &mut m, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: m's control buffer is the one recvmsg filled.
    Ok((n as usize, unsafe { arrival_ns(&m) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A datagram sent to a stamping socket comes with a stamp between the
    /// clock before the send and after the receive.
    #[test]
    fn a_received_datagram_carries_its_arrival_stamp() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(rx.as_raw_fd()).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = realtime_ns();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let (n, at) = recv(rx.as_raw_fd(), &mut buf, 0).unwrap();
        let after = realtime_ns();
        assert_eq!(n, 1);
        let at = at.expect("a stamp");
        assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
        // A socket that was not asked to stamp gives none.
        tx.send_to(b"y", tx.local_addr().unwrap()).unwrap();
        assert_eq!(recv(tx.as_raw_fd(), &mut buf, 0).unwrap(), (1, None));
    }
}
