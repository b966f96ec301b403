//! Local addresses for Contact/Via/SDP: `node.public_address` when set, else the
//! local address of the interface the kernel would use towards the peer
//! (ARCHITECTURE.md: "auto = the interface towards the trunk").

use std::net::{IpAddr, SocketAddr, UdpSocket};

use crate::config::PublicAddress;

/// The local IP the kernel routes towards `peer` (no packet is sent: a connected
/// UDP socket only selects the route). Falls back to the unspecified address.
pub fn local_ip_towards(peer: IpAddr) -> IpAddr {
    let bind: SocketAddr = if peer.is_ipv6() { "[::]:0".parse() } else { "0.0.0.0:0".parse() }
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    UdpSocket::bind(bind)
        .and_then(|s| s.connect(SocketAddr::new(peer, 9)).and_then(|_| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(bind.ip())
}

/// The host to advertise to `peer`, given the address a listener is bound to.
pub fn advertised_host(public: &PublicAddress, bound: IpAddr, peer: IpAddr) -> String {
    let ip = match public {
        PublicAddress::Host(h) => return h.clone(),
        PublicAddress::Ip(ip) => *ip,
        PublicAddress::Auto if bound.is_unspecified() => local_ip_towards(peer),
        PublicAddress::Auto => bound,
    };
    host_literal(ip)
}

/// An IP as a URI host (`[v6]`).
pub fn host_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_peers_get_loopback_addresses() {
        assert_eq!(local_ip_towards("127.0.0.3".parse().unwrap()).to_string(), "127.0.0.1");
        let public = PublicAddress::Ip("203.0.113.5".parse().unwrap());
        assert_eq!(advertised_host(&public, "0.0.0.0".parse().unwrap(), "127.0.0.1".parse().unwrap()), "203.0.113.5");
        assert_eq!(advertised_host(&PublicAddress::Auto, "::1".parse().unwrap(), "::1".parse().unwrap()), "[::1]");
    }
}
