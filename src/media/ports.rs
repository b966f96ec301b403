//! The RTP port pool (`[rtp].port_range`): even ports for RTP, the next odd port
//! for RTCP (RFC 3550 §11). A pair is bound when taken (so a port another program
//! holds is skipped, not handed out) and returned to the pool when its
//! [`PortPair`] is dropped. Exhaustion is an error the SIP layer turns into 503.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use std::net::UdpSocket;

use crate::config::values::PortRange;

/// Errors taking a pair.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// Every pair is in use (or could not be bound).
    #[error("no free RTP port pair in {first}-{last}")]
    Exhausted {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
}

/// A shared pool of RTP/RTCP port pairs.
#[derive(Debug, Clone)]
pub struct PortPool {
    inner: Arc<Mutex<VecDeque<u16>>>,
    range: PortRange,
}

/// Two bound non-blocking sockets, RTP (even port) and RTCP (odd port), driven by
/// the media engine's epoll (`media::engine`); returns its port to the pool on
/// drop.
#[derive(Debug)]
pub struct PortPair {
    /// RTP socket.
    pub rtp: UdpSocket,
    /// RTCP socket.
    pub rtcp: UdpSocket,
    /// The RTP port (RTCP is `port + 1`).
    pub port: u16,
    pool: Arc<Mutex<VecDeque<u16>>>,
}

impl Drop for PortPair {
    fn drop(&mut self) {
        // Back of the queue: a port is reused as late as possible, so stray packets
        // of the previous call have long stopped.
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).push_back(self.port);
    }
}

impl PortPool {
    /// A pool over the even ports of `range` whose odd partner is also in range.
    pub fn new(range: PortRange) -> Self {
        let ports: VecDeque<u16> = (range.first..range.last)
            .step_by(2)
            .filter(|p| p.checked_add(1).is_some_and(|q| q <= range.last))
            .collect();
        Self { inner: Arc::new(Mutex::new(ports)), range }
    }

    /// Pairs not in use.
    pub fn available(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Takes and binds a pair on `ip` (use the unspecified address to receive on
    /// every interface). Ports that fail to bind (held by another program) go back
    /// to the end of the queue and the next pair is tried.
    pub fn take(&self, ip: IpAddr) -> Result<PortPair, PortError> {
        let tries = self.available();
        for _ in 0..tries {
            let Some(port) = self.inner.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else { break };
            match bind_pair(ip, port) {
                Ok((rtp, rtcp)) => return Ok(PortPair { rtp, rtcp, port, pool: Arc::clone(&self.inner) }),
                Err(e) => {
                    tracing::debug!(port, error = %e, "RTP port busy, skipped");
                    self.inner.lock().unwrap_or_else(|e| e.into_inner()).push_back(port);
                }
            }
        }
        Err(PortError::Exhausted { first: self.range.first, last: self.range.last })
    }
}

fn bind_pair(ip: IpAddr, port: u16) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let rtp = std_udp(SocketAddr::new(ip, port))?;
    let rtcp = std_udp(SocketAddr::new(ip, port + 1))?;
    Ok((rtp, rtcp))
}

fn std_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // Dual-stack: IPv4 peers on an IPv6 wildcard socket.
        let _ = s.set_only_v6(false);
    }
    // A few hundred packets of headroom: a burst after a scheduling hiccup is
    // queued, not dropped (RTP at 50 pps is tiny).
    let _ = s.set_recv_buffer_size(256 * 1024);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_odd_and_come_back() {
        let pool = PortPool::new(PortRange { first: 41000, last: 41005 });
        assert_eq!(pool.available(), 3);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = pool.take(ip).unwrap();
        assert_eq!(a.port % 2, 0);
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a.port + 1);
        let b = pool.take(ip).unwrap();
        let c = pool.take(ip).unwrap();
        assert!(matches!(pool.take(ip), Err(PortError::Exhausted { .. })));
        drop(b);
        assert_eq!(pool.available(), 1);
        let d = pool.take(ip).unwrap();
        drop((a, c, d));
        assert_eq!(pool.available(), 3);
    }

    #[test]
    fn a_port_held_elsewhere_is_skipped() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let _squatter = std::net::UdpSocket::bind("127.0.0.1:41100").unwrap();
        let pool = PortPool::new(PortRange { first: 41100, last: 41103 });
        let p = pool.take(ip).unwrap();
        assert_eq!(p.port, 41102);
        assert!(pool.take(ip).is_err(), "41100 is busy and 41102 is taken");
    }
}
