//! The HTTP/1.1 server under both of stark-sweep's listeners: the webhook listener and the
//! emulator.
//!
//! Owns: accepting connections, HTTP/1.1 parsing and keep-alive (hyper), the limits every
//! connection gets (request head size, head and body read timeouts, open connections, requests
//! in flight), running each handler call on a blocking thread, and graceful shutdown (stop
//! accepting, finish what is in flight, close idle connections). Does not own: routing, body
//! limits per route, or what an answer says; a `Handler` decides those.
//!
//! Why not tiny_http (which both listeners used before): its connection pool could queue a new
//! connection behind idle keep-alive ones until some connection closed (a worker that was
//! notified but had not yet taken its task still counted as idle), it has no read timeouts, it
//! buffers request heads of any size, and dropping a request with a huge declared body aborts
//! the process. It exposes no way to drive a connection ourselves, so none of this could be fixed
//! from outside. Here every connection is its own task from the moment it is accepted: a new
//! connection never waits for another one (tests/it/listeners.rs).

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, TRANSFER_ENCODING};
use hyper::{HeaderMap, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Semaphore;

/// A stop signal: cloned into a signal handler (or a test, or the emulator's owner), checked by
/// `serve`.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How often the accept loop looks at the stop signal while idle.
const POLL: Duration = Duration::from_millis(50);

/// Limits and sizes of one server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Names the server in logs and thread names.
    pub name: &'static str,
    /// Largest request head (request line and headers); larger gets 431.
    pub head_limit: usize,
    /// Time a client has to send a whole request head, also between requests on a keep-alive
    /// connection (then the connection is closed).
    pub head_timeout: Duration,
    /// Time a client has to send a whole body once its head arrived (then 408).
    pub body_timeout: Duration,
    /// Time an answer may wait for a client to read it (a client that pipelines requests and
    /// never reads would otherwise hold its connection for ever); then the connection is closed.
    pub write_timeout: Duration,
    /// Connections open at once (never more than the file-descriptor limit allows, less a
    /// reserve); one more is answered 503 and closed.
    pub max_connections: usize,
    /// Handlers running at once; one more request gets the handler's `busy()` answer. A handler
    /// keeps its place until it returns, even when its client has hung up.
    pub max_in_flight: usize,
    /// Threads polling sockets (handlers run on separate blocking threads).
    pub io_threads: usize,
    /// How long a shutdown waits for requests in flight before giving up on them.
    pub drain_timeout: Duration,
    /// The level of the "shutting down" line (the emulator, embedded in tests and the demo,
    /// keeps it at debug).
    pub lifecycle: log::Level,
}

impl Options {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            head_limit: 32 * 1024,
            head_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_in_flight: 512,
            io_threads: 2,
            drain_timeout: Duration::from_secs(10),
            lifecycle: log::Level::Info,
        }
    }
}

/// What a handler sees of a request before its body is read.
#[derive(Debug)]
pub struct Head<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// The declared `Content-Length`; `None` for a chunked body (or none at all).
    pub content_length: Option<u64>,
    pub peer: SocketAddr,
}

impl Head<'_> {
    /// A header's value, when it is present and valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A whole request, body included.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An answer: status, headers, body. `Content-Length` is set by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, headers: vec![("Content-Type", "application/json".into())], body: body.into() }
    }

    /// A plain-text answer (for `/metrics`, or when no JSON shape applies).
    pub fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self { status, headers: vec![("Content-Type", content_type.into())], body: body.into() }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What to do with a request once its head has arrived.
#[derive(Debug)]
pub enum Decision {
    /// Read the body (at most `limit` bytes), then call `handle`; a longer body (declared or
    /// actual) gets the handler's `too_large` answer instead, without being read further.
    Read { limit: u64 },
    /// Answer now; the body (if any) is never read and the connection is closed after the answer.
    Answer(Response),
}

/// Routing and answers. `head` runs on the I/O threads and must not block; `handle` runs on a
/// blocking thread of its own and may block (verification, a database commit, a sleep).
pub trait Handler: Send + Sync + 'static {
    fn head(&self, head: &Head<'_>) -> Decision;
    fn handle(&self, request: Request) -> Response;
    /// The answer for a body longer than the limit `head` chose.
    fn too_large(&self, head: &Head<'_>) -> Response {
        let _ = head;
        Response::json(413, r#"{"result":"body too large"}"#)
    }
    /// The answer when `max_in_flight` requests are already being read or handled.
    fn busy(&self, head: &Head<'_>) -> Response {
        let _ = head;
        Response::json(503, r#"{"result":"busy"}"#)
    }
    /// The answer when a client took longer than `body_timeout` to send its body.
    fn body_timeout(&self, head: &Head<'_>) -> Response {
        let _ = head;
        Response::json(408, r#"{"result":"body not received in time"}"#)
    }
    /// The answer when a client closed the connection in the middle of its body (rarely seen).
    fn incomplete_body(&self, head: &Head<'_>) -> Response {
        let _ = head;
        Response::json(400, r#"{"result":"incomplete body"}"#)
    }
}

/// Serves `handler` on `listener` until `shutdown` fires; then stops accepting, lets requests
/// in flight finish (up to `drain_timeout`), closes idle connections, and returns.
pub fn serve(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    opts: &Options,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("reading the listening address")?;
    listener.set_nonblocking(true).context("making the listening socket non-blocking")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.io_threads.max(1))
        .max_blocking_threads(opts.max_in_flight.max(1) + 16)
        .thread_name(opts.name)
        .enable_all()
        .build()
        .with_context(|| format!("starting the {} server threads", opts.name))?;
    let result = runtime.block_on(accept_loop(listener, handler, opts.clone(), shutdown.clone()));
    // Handlers still running after the drain timeout are abandoned, not waited for forever.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result.with_context(|| format!("serving on {addr}"))
}

async fn accept_loop(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    opts: Options,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let max_connections = connection_cap(opts.max_connections);
    if max_connections < opts.max_connections {
        log::warn!(
            "{}: at most {max_connections} connections (the open-file limit is low; raise LimitNOFILE / ulimit -n)",
            opts.name
        );
    }
    let connections = Arc::new(Semaphore::new(max_connections));
    let in_flight = Arc::new(Semaphore::new(opts.max_in_flight.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.head_timeout)
        .max_header_size(opts.head_limit)
        .half_close(true)
        .keep_alive(true);
    let mut accept_errors = 0u32;
    while !shutdown.is_triggered() {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = tokio::time::sleep(POLL) => continue,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                accept_errors = 0;
                pair
            }
            Err(e) => {
                // Out of file descriptors, or a connection reset before accept: not fatal. Back
                // off a little so a persistent condition does not spin.
                accept_errors += 1;
                if accept_errors == 1 || accept_errors.is_power_of_two() {
                    log::error!("{}: accepting a connection failed: {e} ({accept_errors} in a row)", opts.name);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // A response's head and body go out in one segment anyway, but a client waiting on a
        // small answer must never wait for a delayed ACK.
        let _ = stream.set_nodelay(true);
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse_connection(stream, opts.name));
            continue;
        };
        let service = {
            let (handler, in_flight, body_timeout) = (handler.clone(), in_flight.clone(), opts.body_timeout);
            hyper::service::service_fn(move |rq| respond(handler.clone(), in_flight.clone(), rq, peer, body_timeout))
        };
        let io = TokioIo::new(WriteDeadline::new(stream, opts.write_timeout));
        let conn = graceful.watch(builder.serve_connection(io, service));
        let name = opts.name;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                log::debug!("{name}: connection from {peer} ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    log::log!(opts.lifecycle, "{}: shutting down: finishing requests in flight", opts.name);
    // Connections finish their answers; handlers whose client hung up run on regardless and are
    // waited for too (all their permits back).
    let all = u32::try_from(opts.max_in_flight.max(1)).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(opts.drain_timeout, async {
        graceful.shutdown().await;
        let _ = in_flight.acquire_many(all).await;
    });
    if drained.await.is_err() {
        log::warn!("{}: requests still unfinished after {:?}; leaving them", opts.name, opts.drain_timeout);
    }
    Ok(())
}

/// File descriptors kept for everything but connections (the database, its journal, the
/// listening socket, outbound HTTP, logs).
const FD_RESERVE: usize = 64;

/// `wanted`, lowered so that open connections never exhaust the open-file limit: past it,
/// `accept` fails and nobody, not even `/health`, gets an answer.
fn connection_cap(wanted: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse::<usize>().ok()
    });
    match soft {
        Some(soft) => wanted.min(soft.saturating_sub(FD_RESERVE)).max(1),
        None => wanted.max(1),
    }
}

/// A connection whose writes give up after `timeout` without progress: an answer no client
/// reads must not hold a connection (and its place) for ever.
struct WriteDeadline {
    stream: tokio::net::TcpStream,
    timeout: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn new(stream: tokio::net::TcpStream, timeout: Duration) -> Self {
        Self { stream, timeout, stalled: None }
    }

    /// Called when a write could not progress: `Ready(Err)` once the deadline has passed.
    fn check(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let timeout = self.timeout;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing of the answer in time",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.stream).poll_write(cx, buf) {
            std::task::Poll::Pending => self.check(cx).map(|r| r.map(|()| 0)),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.stream).poll_flush(cx) {
            std::task::Poll::Pending => self.check(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Past `max_connections`: a minimal 503 and close, without reading anything.
async fn refuse_connection(mut stream: tokio::net::TcpStream, name: &str) {
    log::warn!("{name}: too many open connections; answered 503");
    let body = r#"{"result":"busy"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

async fn respond(
    handler: Arc<dyn Handler>,
    in_flight: Arc<Semaphore>,
    rq: hyper::Request<Incoming>,
    peer: SocketAddr,
    body_timeout: Duration,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = rq.into_parts();
    let content_length = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let head = Head {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        headers: &parts.headers,
        content_length,
        peer,
    };
    // An answer given before the whole body was read closes the connection: what is left of the
    // body is never read, so nothing else can follow on it.
    let unread = content_length.is_some_and(|n| n > 0) || parts.headers.contains_key(TRANSFER_ENCODING);
    let early = |r: Response| Ok(to_hyper(if unread { r.with_header("Connection", "close") } else { r }));
    let limit = match handler.head(&head) {
        Decision::Answer(r) => return early(r),
        Decision::Read { limit } => limit,
    };
    if content_length.is_some_and(|n| n > limit) {
        return early(handler.too_large(&head));
    }
    let bytes = match tokio::time::timeout(body_timeout, Limited::new(body, limit as usize).collect()).await {
        Err(_) => return early(handler.body_timeout(&head)),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return early(handler.too_large(&head));
        }
        Ok(Err(_)) => return early(handler.incomplete_body(&head)),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    // The place is taken for the handler's whole run and given back only when it returns, even
    // if the client hangs up meanwhile (this future is then dropped; the handler is not).
    let Ok(permit) = in_flight.try_acquire_owned() else {
        return Ok(to_hyper(handler.busy(&head)));
    };
    let request = Request {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts.headers,
        body: Vec::from(bytes),
        peer,
    };
    let answered = tokio::task::spawn_blocking(move || {
        let response = handler.handle(request);
        drop(permit);
        response
    })
    .await;
    Ok(to_hyper(answered.unwrap_or_else(|_| Response::json(500, r#"{"result":"internal error"}"#))))
}

fn to_hyper(r: Response) -> hyper::Response<Full<Bytes>> {
    let mut out = hyper::Response::new(Full::new(Bytes::from(r.body)));
    *out.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.headers_mut().append(name, v);
        }
    }
    if !out.headers().contains_key(CONTENT_TYPE) {
        out.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    struct Echo;

    impl Handler for Echo {
        fn head(&self, head: &Head<'_>) -> Decision {
            match head.path {
                "/small" => Decision::Read { limit: 4 },
                "/now" => Decision::Answer(Response::json(202, "{}")),
                _ => Decision::Read { limit: 1024 },
            }
        }

        fn handle(&self, request: Request) -> Response {
            Response::text(200, "text/plain", request.body)
        }
    }

    fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn bodies_limits_and_early_answers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let server = std::thread::spawn(move || serve(listener, Arc::new(Echo), &Options::new("t"), &stop));
        let echoed =
            exchange(addr, b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
        assert!(echoed.starts_with("HTTP/1.1 200") && echoed.ends_with("hello"), "{echoed}");
        let chunked = exchange(
            addr,
            b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        assert!(chunked.ends_with("abc"), "{chunked}");
        let declared = exchange(addr, b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\n\r\n");
        assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
        let actual = exchange(
            addr,
            b"POST /small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n123456789\r\n0\r\n\r\n",
        );
        assert!(actual.starts_with("HTTP/1.1 413"), "{actual}");
        let early = exchange(addr, b"GET /now HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert!(early.starts_with("HTTP/1.1 202"), "{early}");
        let huge_head = format!("GET /x HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n", "p".repeat(40_000));
        let refused = exchange(addr, huge_head.as_bytes());
        assert!(refused.starts_with("HTTP/1.1 431"), "{refused:?}");
        shutdown.trigger();
        server.join().unwrap().unwrap();
        assert!(std::net::TcpStream::connect(addr).is_err(), "still accepting after shutdown");
    }

    /// Sleeps, then answers; or answers 4 MiB (for a client that never reads).
    struct Slow(std::sync::atomic::AtomicUsize);

    impl Handler for Slow {
        fn head(&self, _head: &Head<'_>) -> Decision {
            Decision::Read { limit: 1024 }
        }

        fn handle(&self, request: Request) -> Response {
            if request.path == "/big" {
                return Response::text(200, "text/plain", vec![b'x'; 4 << 20]);
            }
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1500));
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            Response::json(200, "{}")
        }
    }

    fn start(opts: Options) -> (SocketAddr, Arc<Slow>, Shutdown, std::thread::JoinHandle<anyhow::Result<()>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let slow = Arc::new(Slow(std::sync::atomic::AtomicUsize::new(0)));
        let (shutdown, stop, handler) = (Shutdown::new(), Shutdown::new(), slow.clone());
        let _ = &shutdown;
        let s = stop.clone();
        let server = std::thread::spawn(move || serve(listener, handler, &opts, &s));
        (addr, slow, stop, server)
    }

    /// Review finding: a handler whose client hung up kept running but no longer counted, so
    /// the in-flight cap let any number run; and shutdown returned while they still ran.
    #[test]
    fn handlers_whose_clients_hung_up_still_count_and_are_drained() {
        let (addr, slow, stop, server) = start(Options { max_in_flight: 2, ..Options::new("t") });
        for _ in 0..2 {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(200));
            drop(s); // the client gives up; its handler is still sleeping
        }
        let busy = exchange(addr, b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert!(busy.starts_with("HTTP/1.1 503"), "a third handler was let in: {busy}");
        assert!(slow.0.load(std::sync::atomic::Ordering::SeqCst) <= 2);
        stop.trigger();
        server.join().unwrap().unwrap();
        assert_eq!(slow.0.load(std::sync::atomic::Ordering::SeqCst), 0, "serve returned while handlers ran");
    }

    /// Review finding: a client that pipelines requests and never reads the answers held its
    /// connection (and its place under the connection cap) for ever.
    #[test]
    fn a_client_that_never_reads_its_answers_is_cut_off() {
        let opts = Options { max_connections: 1, write_timeout: Duration::from_millis(500), ..Options::new("t") };
        let (addr, _slow, stop, server) = start(opts);
        let mut hog = std::net::TcpStream::connect(addr).unwrap();
        for _ in 0..8 {
            hog.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        }
        // Its place comes back once its answer has waited the write timeout.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let answer = exchange(addr, b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the connection that never reads was never closed");
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(hog);
        stop.trigger();
        server.join().unwrap().unwrap();
    }

    /// Review finding: with an open-file limit below the connection cap, `accept` failed first
    /// and nobody got an answer.
    #[test]
    fn the_connection_cap_stays_under_the_open_file_limit() {
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        let soft: usize = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(connection_cap(usize::MAX) <= soft.saturating_sub(FD_RESERVE).max(1));
        assert_eq!(connection_cap(1), 1);
    }
}
