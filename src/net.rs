//! TCP setup shared by the two tiny_http servers (the webhook listener and the emulator).
//!
//! tiny_http writes a response's head and body in separate writes. With Nagle's algorithm on,
//! the body waits for the head's ACK, which a keep-alive client delays by up to 40 ms: every
//! answer on a reused connection cost ~44 ms (measured by bench/process_events.rs). Setting
//! TCP_NODELAY on the listening socket fixes it for every connection, since Linux copies the
//! option to the sockets `accept` returns.

use std::net::TcpListener;

/// Turns Nagle's algorithm off for every connection this listener accepts.
pub fn no_delay(listener: &TcpListener) -> std::io::Result<()> {
    socket2::SockRef::from(listener).set_tcp_nodelay(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn accepted_connections_inherit_no_delay() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        super::no_delay(&listener).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
