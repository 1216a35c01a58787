//! A recording HTTP/1.1 pass-through proxy: it forwards each request and its answer unchanged
//! (keep-alive, Content-Length or chunked answers) and notes its kind, when its first line
//! arrived and when the last byte of the answer left. stark-sweep sends one request at a time,
//! so the gaps between those spans are the time spent inside stark-sweep itself.
//!
//! With `fresh_upstream`, each request goes to the server on a new connection. That is how the
//! official Python SDK talks (`requests.patch(...)`, a new connection each time). (It also kept
//! the emulator's answers from stalling when it ran on tiny_http, which wrote a head and a body
//! as two segments without TCP_NODELAY; the emulator now runs on hyper with TCP_NODELAY.) The
//! proxy itself answers its client with one write on a TCP_NODELAY socket, as a production front
//! end would.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One request seen by the proxy.
#[derive(Debug, Clone)]
pub struct Span {
    pub kind: String,
    pub start: Instant,
    pub end: Instant,
}

#[derive(Debug)]
pub struct Proxy {
    pub url: String,
    pub spans: Arc<Mutex<Vec<Span>>>,
}

impl Proxy {
    /// Listens on loopback port 0 and forwards to `upstream` (`host:port`), on one upstream
    /// connection per client connection, or per request with `fresh_upstream`.
    pub fn start(upstream: &str, fresh_upstream: bool) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (up, rec) = (upstream.to_string(), Arc::clone(&spans));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (up, rec) = (up.clone(), Arc::clone(&rec));
                std::thread::spawn(move || {
                    if let Err(e) = connection(client, &up, fresh_upstream, &rec) {
                        eprintln!("proxy: a connection ended: {e}");
                    }
                });
            }
        });
        Ok(Proxy { url, spans })
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A message head: its raw bytes, its headers (names lowercased) and its first line.
type Head = (Vec<u8>, Vec<(String, String)>, String);

/// Reads header lines up to the blank line.
fn head(r: &mut impl BufRead) -> anyhow::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    raw.extend_from_slice(first.as_bytes());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            anyhow::bail!("connection closed inside a header");
        }
        raw.extend_from_slice(line.as_bytes());
        if line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok(Some((raw, headers, first.trim_end().to_string())))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Copies the body the headers announce from `r` to `w`.
fn body(r: &mut impl BufRead, w: &mut impl Write, headers: &[(String, String)]) -> anyhow::Result<()> {
    if header(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line)?;
            w.write_all(size_line.as_bytes())?;
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line)?;
                    w.write_all(line.as_bytes())?;
                    if line == "\r\n" || line.is_empty() {
                        return Ok(());
                    }
                }
            }
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk)?;
            w.write_all(&chunk)?;
        }
    }
    let len: usize = header(headers, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    w.write_all(&buf)?;
    Ok(())
}

fn connect(upstream: &str) -> anyhow::Result<(BufReader<TcpStream>, TcpStream)> {
    let server = TcpStream::connect(upstream)?;
    server.set_nodelay(true)?;
    Ok((BufReader::new(server.try_clone()?), server))
}

fn connection(client: TcpStream, upstream: &str, fresh: bool, spans: &Mutex<Vec<Span>>) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let mut kept = None;
    loop {
        let Some((raw, headers, first)) = head(&mut from_client)? else { return Ok(()) };
        let start = Instant::now();
        let mut parts = first.split_whitespace();
        let kind = super::request_kind(parts.next().unwrap_or("?"), parts.next().unwrap_or("?"));
        let mut out = raw;
        body(&mut from_client, &mut out, &headers)?;
        if fresh || kept.is_none() {
            kept = Some(connect(upstream)?);
        }
        let Some((from_server, to_server)) = kept.as_mut() else { anyhow::bail!("no upstream connection") };
        to_server.write_all(&out)?;
        let Some((raw, headers, _)) = head(from_server)? else { anyhow::bail!("the server closed the connection") };
        let mut answer = raw;
        body(from_server, &mut answer, &headers)?;
        to_client.write_all(&answer)?;
        let end = Instant::now();
        if let Ok(mut s) = spans.lock() {
            s.push(Span { kind, start, end });
        }
        if header(&headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return Ok(());
        }
    }
}
