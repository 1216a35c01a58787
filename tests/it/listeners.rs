//! Both HTTP listeners (the emulator and `serve-webhook`) answer every new connection at once,
//! however many idle keep-alive connections are open.
//!
//! Regression: tiny_http 0.12's pool counted a worker that was notified but had not yet taken
//! its task as idle, so when two connections arrived together the second was queued behind a
//! keep-alive connection and waited until some connection closed (seen in the demo as 15 s
//! stalls of a child `process-events`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use stark_sweep::listener;
use stark_sweep::sandbox::{Sandbox, SandboxConfig};
use stark_sweep::starkbank::keys;
use stark_sweep::starkbank::verify::KeyCache;

/// Iterations per listener: enough to have caught the race on the old listener in most runs.
const ROUNDS: usize = 40;
/// Idle keep-alive connections held open while the two new ones arrive.
const IDLE: usize = 6;
/// A liveness bound, not a speed assertion: a parked connection waits forever.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Sends one keep-alive GET and reads its answer (head and `Content-Length` body); the
/// connection stays open. `Err` when no answer came within `ANSWER_WITHIN`.
fn get_keep_alive(addr: SocketAddr, path: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(ANSWER_WITHIN)).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return Err("closed before answering".into()),
            Err(e) => return Err(format!("no answer within {ANSWER_WITHIN:?} ({e})")),
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("answered {}", head.lines().next().unwrap_or_default()));
    }
    Ok(s)
}

/// One round: `IDLE` idle keep-alive connections, one more opened and closed (so that exactly
/// one worker of a connection-per-thread pool is idle), then two new keep-alive connections at
/// the same instant. Both must be answered.
fn round(addr: SocketAddr, path: &'static str) -> Result<(), String> {
    let idle: Vec<TcpStream> = (0..IDLE).map(|_| get_keep_alive(addr, path)).collect::<Result<_, _>>()?;
    drop(get_keep_alive(addr, path)?);
    std::thread::sleep(Duration::from_millis(30));
    let barrier = Arc::new(Barrier::new(2));
    let both: Vec<_> = (0..2)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                get_keep_alive(addr, path)
            })
        })
        .collect();
    let answers: Vec<Result<TcpStream, String>> = both.into_iter().map(|t| t.join().unwrap()).collect();
    drop(idle);
    for a in answers {
        a?;
    }
    Ok(())
}

fn every_round(name: &str, mut start: impl FnMut() -> (SocketAddr, Box<dyn FnOnce()>), path: &'static str) {
    let mut parked = Vec::new();
    for i in 0..ROUNDS {
        let (addr, stop) = start();
        if let Err(e) = round(addr, path) {
            parked.push(format!("round {i}: {e}"));
        }
        stop();
    }
    assert!(
        parked.is_empty(),
        "{name}: {} of {ROUNDS} rounds left a new connection waiting:\n{}",
        parked.len(),
        parked.join("\n")
    );
}

#[test]
fn the_emulator_answers_new_connections_beside_idle_keep_alive_ones() {
    every_round(
        "emulator",
        || {
            let sandbox = Sandbox::start(SandboxConfig { pay_rate: 0.0, seed: 3, ..SandboxConfig::default() }).unwrap();
            let addr = sandbox.url().trim_start_matches("http://").parse().unwrap();
            (addr, Box::new(move || sandbox.shutdown()))
        },
        "/_sandbox/clock",
    );
}

#[test]
fn the_webhook_listener_answers_new_connections_beside_idle_keep_alive_ones() {
    every_round(
        "serve-webhook",
        || {
            let dir = tempfile::tempdir().unwrap();
            let cfg = listener::Config::new(dir.path().join("l.db"));
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let shutdown = listener::Shutdown::new();
            let keys = Arc::new(KeyCache::fixed(*keys::generate().verifying_key()));
            let s = shutdown.clone();
            let server = std::thread::spawn(move || listener::serve(listener, cfg, keys, s));
            let stop = move || {
                shutdown.trigger();
                server.join().unwrap().unwrap();
                drop(dir);
            };
            (addr, Box::new(stop))
        },
        "/health",
    );
}
