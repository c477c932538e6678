//! Helpers shared by the cluster tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;

/// A free loopback address from a range below the kernel's ephemeral ports, so that
/// outgoing connections of concurrent tests cannot take it before the node binds it; never
/// handed out twice by this process.
pub fn free_addr() -> std::net::SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = (std::process::id() % 100) as u16 * 100;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
        let port = 10_000 + (base + offset) % 10_000;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
}
