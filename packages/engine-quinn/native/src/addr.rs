//! Addresses and ALPN lists as they cross the ABI.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::abi::ADDR_LEN;

/// TLS-style ALPN list: (length byte, bytes)*. Stops at the first malformed entry.
pub fn parse_alpn(buf: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < buf.len() {
        let l = buf[i] as usize;
        i += 1;
        if l == 0 || i + l > buf.len() {
            break;
        }
        out.push(buf[i..i + l].to_vec());
        i += l;
    }
    out
}

/// `ip`: 16 bytes (IPv4 in the first 4); `family`: 4 or 6.
pub fn read_addr(ip: &[u8], port: u32, family: u32) -> Option<SocketAddr> {
    if port > 65535 {
        return None;
    }
    let addr = match family {
        4 if ip.len() >= 4 => IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
        6 if ip.len() >= 16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&ip[..16]);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(addr, port as u16))
}

/// `out`: 16 address bytes, 2 port bytes (big endian), 1 family byte (4 or 6). IPv4-mapped
/// IPv6 addresses are written as IPv4.
pub fn write_addr(out: &mut [u8], addr: SocketAddr) {
    if out.len() < ADDR_LEN {
        return;
    }
    let (ip, fam) = match addr.ip() {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (b, 4u8)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v4.octets());
                (b, 4u8)
            }
            None => (v6.octets(), 6u8),
        },
    };
    out[..16].copy_from_slice(&ip);
    out[16..18].copy_from_slice(&addr.port().to_be_bytes());
    out[18] = fam;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_list() {
        assert_eq!(parse_alpn(b"\x02h3\x06stoq/1"), vec![b"h3".to_vec(), b"stoq/1".to_vec()]);
        assert!(parse_alpn(b"\x05ab").is_empty());
    }

    #[test]
    fn addresses_round_trip() {
        let mut out = [0u8; ADDR_LEN];
        let a: SocketAddr = "[::1]:4433".parse().unwrap();
        write_addr(&mut out, a);
        assert_eq!(read_addr(&out[..16], 4433, 6), Some(a));
        let b: SocketAddr = "127.0.0.1:9".parse().unwrap();
        write_addr(&mut out, b);
        assert_eq!(out[18], 4);
        assert_eq!(read_addr(&out[..16], 9, 4), Some(b));
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
        write_addr(&mut out, mapped);
        assert_eq!(out[18], 4);
        assert_eq!(&out[..4], &[10, 1, 2, 3]);
    }
}
