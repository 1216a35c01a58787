//! Load benchmark for `stark-sweep serve-webhook` (not a test: nothing here asserts a time).
//!
//! Starts the release binary on port 0 with a pinned key, pre-signs every event before the
//! clock starts, then measures over keep-alive connections:
//!   1. throughput: `--concurrency` clients sending as fast as they can for `--seconds`;
//!   2. latency at a fixed rate (`--rate` events/s, open loop: latency counts from each event's
//!      scheduled send time, so a stalled server cannot hide its queueing).
//!
//! It reports events/s, p50/p99/max latency, the listener's peak resident memory (VmHWM),
//! and checks that every 200 is a row in the SQLite file after a graceful SIGTERM.
//!
//! `--scrape-every SECS`: meanwhile, a stand-in for Prometheus scrapes the listener's
//! `GET /metrics` at that interval through both phases (each scrape reads the store), and the
//! scrapes' count and latency are reported; run once with and once without to see what
//! scraping costs intake.
//!
//! `BENCH_KEEP_LOG=path` keeps the listener's log (one line per request, slow commits).
//!
//! `--db FILE` runs the listener on an existing database (in place; it gains the events sent)
//! instead of a fresh one, e.g. one of `bench/history.rs`'s long histories; `--workspace ID`
//! names that database's pinned workspace in every event (or the listener refuses them), and
//! `--random-ids` spreads the event ids over the whole key space, as Stark Bank's are, instead
//! of one run of consecutive ids (which would only ever touch the end of the index).
//!
//! External mode (`--target-url http://127.0.0.1:PORT/webhook`): no stark-sweep is started;
//! the same load goes to an already-running receiver (e.g. `bench/python/webhook_app.py`),
//! signed with `--signing-key` (a private PEM whose public half the receiver was given).
//! `--pids` (comma list) names the receiver's processes for the memory figure (summed VmHWM),
//! and `--count-db` a SQLite file whose `events` table must hold a row per 200.
//!
//! Run: `cargo build --release && cargo run --release --example webhook_load -- [--concurrency 32]
//!       [--seconds 10] [--rate 500] [--rate-seconds 10] [--new-connections] [--bin target/release/stark-sweep]
//!       [--target-url URL --signing-key PEM [--pids P1,P2] [--count-db FILE]] [--presign-rate 20000]
//!       [--scrape-every 1] [--db FILE --workspace ID] [--random-ids] [--id-offset N] [--json out.json]`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stark_sweep::starkbank::{keys, sign};

struct Args {
    bin: PathBuf,
    concurrency: usize,
    seconds: f64,
    rate: f64,
    rate_seconds: f64,
    /// One connection per request (`Connection: close`), as behind the shipped nginx config.
    new_connections: bool,
    /// An already-running receiver to load instead of starting stark-sweep.
    target_url: Option<String>,
    /// Private key PEM to sign with (default: a fresh key).
    signing_key: Option<PathBuf>,
    /// The external receiver's processes, for the memory figure.
    pids: Vec<u32>,
    /// The external receiver's SQLite file (table `events`), for the durability check.
    count_db: Option<PathBuf>,
    /// Events pre-signed per second of `--seconds` (an upper bound on throughput).
    presign_rate: f64,
    /// Scrape `GET /metrics` this often during the load (seconds); `None`: never.
    scrape_every: Option<f64>,
    /// An existing database for the listener (used in place).
    db: Option<PathBuf>,
    /// The workspace every event names.
    workspace: String,
    /// Event ids spread over the key space.
    random_ids: bool,
    /// Added to every event's index, so runs on one database send distinct events.
    id_offset: usize,
    json: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/release/examples/webhook_load -> target/release/stark-sweep
    let default_bin = exe.parent().and_then(|p| p.parent()).map(|p| p.join("stark-sweep")).unwrap_or_default();
    let mut a = Args {
        bin: default_bin,
        concurrency: 32,
        seconds: 10.0,
        rate: 500.0,
        rate_seconds: 10.0,
        new_connections: false,
        target_url: None,
        signing_key: None,
        pids: Vec::new(),
        count_db: None,
        presign_rate: 20_000.0,
        scrape_every: None,
        db: None,
        workspace: "5078376503050240".into(),
        random_ids: false,
        id_offset: 0,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--new-connections" {
            a.new_connections = true;
            continue;
        }
        if flag == "--random-ids" {
            a.random_ids = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || value.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--bin" => a.bin = PathBuf::from(&value),
            "--concurrency" => a.concurrency = num()? as usize,
            "--seconds" => a.seconds = num()?,
            "--rate" => a.rate = num()?,
            "--rate-seconds" => a.rate_seconds = num()?,
            "--target-url" => a.target_url = Some(value.clone()),
            "--signing-key" => a.signing_key = Some(PathBuf::from(&value)),
            "--pids" => {
                a.pids = value
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.trim().parse::<u32>().map_err(|e| format!("--pids {p}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--count-db" => a.count_db = Some(PathBuf::from(&value)),
            "--presign-rate" => a.presign_rate = num()?,
            "--scrape-every" => a.scrape_every = Some(num()?).filter(|s| *s > 0.0),
            "--db" => a.db = Some(PathBuf::from(&value)),
            "--workspace" => a.workspace = value.clone(),
            "--id-offset" => a.id_offset = num()? as usize,
            "--json" => a.json = Some(PathBuf::from(&value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// The id of the `i`th event (19 digits): consecutive, or (`random`) with 12 leading digits from a
/// mix of `i`, so ids land all over the index as Stark Bank's do; the last 7 digits are `i`, so
/// no two collide.
fn event_id(i: usize, random: bool) -> u64 {
    if !random {
        return 9_000_000_000_000_000 + i as u64;
    }
    1_000_000_000_000_000_000 + mix(i as u64) % 900_000_000_000 * 10_000_000 + i as u64 % 10_000_000
}

/// splitmix64's finalizer.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A body shaped like a real `invoice`/`credited` delivery (Python `json.dumps(sort_keys=True)`), ~1.4 KiB.
fn event_body(id: u64, workspace: &str) -> String {
    format!(
        concat!(
            "{{\"event\": {{\"created\": \"2026-11-29T12:00:00.000000+00:00\", \"id\": \"{id}\", \"log\": {{",
            "\"created\": \"2026-11-29T12:00:00.000000+00:00\", \"errors\": [], \"id\": \"l{id}\", \"invoice\": {{",
            "\"amount\": 4100, \"brcode\": \"00020101021226890014br.gov.bcb.pix2567invoice-h.sandbox.starkbank.com/v2/",
            "afdf94b770b0458a8440a335daf77c4c5204000053039865802BR5915Stark Bank S.A.6009Sao Paulo62070503***6304CC32\", ",
            "\"created\": \"2026-11-29T11:00:00.000000+00:00\", \"descriptions\": [], \"discountAmount\": 0, ",
            "\"discounts\": [], \"due\": \"2026-12-01T11:00:00+00:00\", \"expiration\": 432000, \"fee\": 50, ",
            "\"fine\": 2.0, \"fineAmount\": 0, \"id\": \"i{id}\", \"interest\": 1.0, \"interestAmount\": 0, ",
            "\"link\": \"https://example.sandbox.starkbank.com/invoicelink/afdf94b770b0458a8440a335daf77c4c\", ",
            "\"name\": \"Benchmark Payer\", \"nominalAmount\": 4100, ",
            "\"pdf\": \"https://sandbox.api.starkbank.com/v2/invoice/afdf94b770b0458a8440a335daf77c4c.pdf\", ",
            "\"rules\": [], \"splits\": [], \"status\": \"paid\", \"tags\": [\"c20261129t1200\", \"bench\"], ",
            "\"taxId\": \"337.451.076-08\", \"transactionIds\": [\"t{id}\"], \"updated\": \"2026-11-29T12:00:00.000000+00:00\"}}, ",
            "\"type\": \"credited\"}}, \"subscription\": \"invoice\", \"workspaceId\": \"{workspace}\"}}}}"
        ),
        id = id,
        workspace = workspace,
    )
}

fn request(path: &str, body: &str, sig: &str, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nDigital-Signature: {sig}\r\n{connection}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

struct Conn {
    addr: SocketAddr,
    reader: Option<BufReader<TcpStream>>,
}

impl Conn {
    /// Sends one request on the keep-alive connection (reconnecting if needed); returns the status.
    fn send(&mut self, bytes: &[u8]) -> Result<u16, String> {
        if self.reader.is_none() {
            let s = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
            self.reader = Some(BufReader::new(s));
        }
        let r = self.reader.as_mut().ok_or("no connection")?;
        let result = (|| {
            r.get_mut().write_all(bytes).map_err(|e| e.to_string())?;
            let mut line = String::new();
            r.read_line(&mut line).map_err(|e| e.to_string())?;
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or(format!("bad status line {line:?}"))?;
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).map_err(|e| e.to_string())?;
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).map_err(|e| e.to_string())?;
            Ok(status)
        })();
        if result.is_err() || bytes.windows(17).any(|w| w == b"Connection: close") {
            self.reader = None;
        }
        result
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `clients` closed-loop threads pulling events from `next` until `end_index` or
/// `deadline`. Returns (200 count, other count, sorted latencies).
fn run_phase(
    addr: SocketAddr,
    clients: usize,
    requests: Arc<Vec<Vec<u8>>>,
    next: Arc<AtomicUsize>,
    end_index: usize,
    deadline: Instant,
) -> (usize, usize, Vec<Duration>) {
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (requests, next) = (requests.clone(), next.clone());
            std::thread::spawn(move || {
                let mut conn = Conn { addr, reader: None };
                let (mut ok, mut other, mut lat) = (0usize, 0usize, Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= end_index || Instant::now() >= deadline {
                        break;
                    }
                    let start = Instant::now();
                    match conn.send(&requests[i]) {
                        Ok(200) => ok += 1,
                        Ok(_) | Err(_) => other += 1,
                    }
                    lat.push(start.elapsed());
                }
                (ok, other, lat)
            })
        })
        .collect();
    gather(handles)
}

/// Sums the clients' counts (200s, other answers) and pools their latencies, sorted.
fn gather(handles: Vec<std::thread::JoinHandle<(usize, usize, Vec<Duration>)>>) -> (usize, usize, Vec<Duration>) {
    let (mut ok, mut other, mut lat) = (0, 0, Vec::new());
    for h in handles {
        if let Ok((o, x, l)) = h.join() {
            ok += o;
            other += x;
            lat.extend(l);
        }
    }
    lat.sort();
    (ok, other, lat)
}

/// What the scraper saw: scrapes answered 200, other outcomes, sorted latencies, the last body's size.
type Scrapes = (usize, usize, Vec<Duration>, usize);

/// A stand-in for Prometheus: `GET /metrics` every `every` (one connection per scrape) until `stop`.
fn scraper(addr: SocketAddr, every: Duration, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Scrapes> {
    std::thread::spawn(move || {
        let (mut ok, mut other, mut lat, mut bytes) = (0usize, 0usize, Vec::new(), 0usize);
        let mut next = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now < next {
                std::thread::sleep((next - now).min(Duration::from_millis(50)));
                continue;
            }
            next += every;
            let start = Instant::now();
            let got = (|| -> Result<(u16, usize), String> {
                let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    .map_err(|e| e.to_string())?;
                let mut answer = Vec::new();
                s.read_to_end(&mut answer).map_err(|e| e.to_string())?;
                let text = String::from_utf8_lossy(&answer);
                let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or("no status line")?;
                let body = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
                Ok((status, body))
            })();
            lat.push(start.elapsed());
            match got {
                Ok((200, body)) => {
                    ok += 1;
                    bytes = body;
                }
                _ => other += 1,
            }
        }
        lat.sort();
        (ok, other, lat, bytes)
    })
}

/// CPU time (user + system) a process has used, from /proc/PID/stat (clock ticks of 10 ms).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Scrapes back to back, once the load is over: the listener's CPU time per scrape, at the
/// store's size then (what one scrape costs, whatever else the machine is doing).
fn cpu_per_scrape(addr: SocketAddr, pid: u32, scrapes: usize) -> Option<f64> {
    let before = cpu_seconds(pid)?;
    for _ in 0..scrapes {
        let mut s = TcpStream::connect(addr).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").ok()?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).ok()?;
    }
    Some((cpu_seconds(pid)? - before) / scrapes as f64)
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn start_listener(
    bin: &PathBuf,
    dir: &std::path::Path,
    db: &std::path::Path,
    workspace: &str,
) -> Result<(Child, SocketAddr), String> {
    // The listener stores only events of its own workspace; with no API credentials here, it
    // must be pinned already (as process-events or issue-invoices would have done).
    // `--db` may also be a postgres:// URL (the Postgres backend's intake).
    let at = stark_sweep::store::Location::parse(&db.to_string_lossy(), None).map_err(|e| format!("{e:#}"))?;
    let mut store = stark_sweep::store::Store::open(&at).map_err(|e| format!("{e:#}"))?;
    stark_sweep::workspace::pin(&mut store, workspace, "bench", None, chrono::Utc::now())
        .map_err(|e| format!("{e:#}"))?;
    drop(store);
    let log = dir.join("listener.log");
    let child = Command::new(bin)
        .current_dir(dir)
        .env_clear()
        .args(["serve-webhook", "--listen", "127.0.0.1:0", "--public-key-file", "key.pem"])
        .arg("--db")
        .arg(db)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text.split("listening on http://").nth(1).and_then(|r| r.split_whitespace().next()) {
            return Ok((child, addr.parse().map_err(|e| format!("{e}"))?));
        }
        if Instant::now() > deadline {
            return Err(format!("the listener did not start:\n{text}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `http://host:port/path` -> (address, path).
fn target(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url.strip_prefix("http://").ok_or(format!("--target-url {url}: only http:// is supported"))?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("--target-url {url}: {e}"))?
        .next()
        .ok_or(format!("--target-url {url}: no address"))?;
    Ok((addr, path))
}

fn main() -> Result<(), String> {
    let a = args()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let key = match &a.signing_key {
        Some(p) => {
            let pem = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            keys::parse_private_key(&pem).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => keys::generate(),
    };
    let external = match &a.target_url {
        Some(url) => Some(target(url)?),
        None => None,
    };
    let path = external.as_ref().map(|(_, p)| p.clone()).unwrap_or_else(|| "/webhook".into());
    std::fs::write(dir.path().join("key.pem"), keys::public_key_pem(key.verifying_key()).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;

    // Enough pre-signed events for `presign_rate` events/s in phase 1, plus phase 2.
    let n_fast = (a.seconds * a.presign_rate) as usize;
    let n_rate = (a.rate * a.rate_seconds) as usize;
    eprintln!("pre-signing {} events ...", n_fast + n_rate);
    let requests: Vec<Vec<u8>> = (0..n_fast + n_rate)
        .map(|i| {
            let body = event_body(event_id(a.id_offset + i, a.random_ids), &a.workspace);
            let sig = sign::sign(&key, body.as_bytes());
            request(&path, &body, &sig, a.new_connections)
        })
        .collect();
    let body_len = event_body(event_id(0, a.random_ids), &a.workspace).len();
    let requests = Arc::new(requests);

    let listener_db = a.db.clone().unwrap_or_else(|| dir.path().join("bench.db"));
    let count_rows = |db: &std::path::Path| -> Result<i64, String> {
        let at = stark_sweep::store::Location::parse(&db.to_string_lossy(), None).map_err(|e| format!("{e:#}"))?;
        stark_sweep::store::Store::open(&at)
            .and_then(|s| s.count_events())
            .map_err(|e| format!("{}: {e:#}", db.display()))
    };
    // Rows the database held before (an existing one, `--db`): the check counts only new ones.
    let rows_before = if a.db.is_some() { count_rows(&listener_db)? } else { 0 };
    let (mut child, addr) = match &external {
        Some((addr, _)) => (None, *addr),
        None => {
            let (child, addr) = start_listener(&a.bin, dir.path(), &listener_db, &a.workspace)?;
            (Some(child), addr)
        }
    };
    match &child {
        Some(c) => eprintln!("listener pid {} on {addr}; events of {body_len} bytes", c.id()),
        None => eprintln!("external receiver on {addr}{path}; events of {body_len} bytes"),
    }
    if a.scrape_every.is_some() && external.is_some() {
        return Err("--scrape-every scrapes stark-sweep's /metrics; it does not apply to --target-url".into());
    }
    let stop_scraping = Arc::new(AtomicBool::new(false));
    let scraping = a.scrape_every.map(|s| scraper(addr, Duration::from_secs_f64(s), stop_scraping.clone()));

    // Phase 1: throughput.
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let (ok1, other1, lat1) =
        run_phase(addr, a.concurrency, requests.clone(), next.clone(), n_fast, t0 + Duration::from_secs_f64(a.seconds));
    let secs = t0.elapsed().as_secs_f64();

    // Phase 2: fixed rate, open loop.
    let start_i = n_fast;
    let next2 = Arc::new(AtomicUsize::new(start_i));
    let t1 = Instant::now() + Duration::from_millis(100);
    // Event i is due at t1 + (i - start_i) / rate.
    let handles_clients = a.concurrency.max((a.rate / 50.0) as usize);
    let (ok2, other2, lat2) = {
        let requests = requests.clone();
        let rate = a.rate;
        let end = n_fast + n_rate;
        let deadline = t1 + Duration::from_secs_f64(a.rate_seconds + 30.0);
        let handles: Vec<_> = (0..handles_clients)
            .map(|_| {
                let (requests, next2) = (requests.clone(), next2.clone());
                std::thread::spawn(move || {
                    let mut conn = Conn { addr, reader: None };
                    let (mut ok, mut other, mut lat) = (0usize, 0usize, Vec::new());
                    loop {
                        let i = next2.fetch_add(1, Ordering::SeqCst);
                        if i >= end || Instant::now() >= deadline {
                            break;
                        }
                        let at = t1 + Duration::from_secs_f64((i - start_i) as f64 / rate);
                        let now = Instant::now();
                        if at > now {
                            std::thread::sleep(at - now);
                        }
                        match conn.send(&requests[i]) {
                            Ok(200) => ok += 1,
                            Ok(_) | Err(_) => other += 1,
                        }
                        lat.push(at.elapsed());
                    }
                    (ok, other, lat)
                })
            })
            .collect();
        gather(handles)
    };

    stop_scraping.store(true, Ordering::SeqCst);
    let scrapes: Option<Scrapes> = scraping.and_then(|h| h.join().ok());
    let scrape_cpu = match (&child, a.scrape_every) {
        (Some(c), Some(_)) => cpu_per_scrape(addr, c.id(), 200),
        _ => None,
    };

    let pids: Vec<u32> = match &child {
        Some(c) => vec![c.id()],
        None => a.pids.clone(),
    };
    let hwm: Option<u64> = if pids.is_empty() { None } else { pids.iter().map(|p| vm_hwm_kib(*p)).sum() };
    let (exit, db) = match child.as_mut() {
        Some(c) => {
            if let Some(keep) = std::env::var_os("BENCH_KEEP_LOG") {
                let _ = std::fs::copy(dir.path().join("listener.log"), keep);
            }
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let exit = c.wait().map_err(|e| e.to_string())?;
            (exit.to_string(), Some(listener_db.clone()))
        }
        None => ("(external, left running)".to_string(), a.count_db.clone()),
    };
    let rows: Option<i64> = match &db {
        Some(db) => Some(count_rows(db)? - rows_before),
        None => None,
    };

    println!(
        "{} benchmark (release load generator, {} CPUs)",
        a.target_url.as_deref().unwrap_or("stark-sweep serve-webhook"),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "throughput  : {:.0} events/s verified+stored ({ok1} x 200, {other1} other) in {secs:.1} s at concurrency {}, {}",
        ok1 as f64 / secs,
        a.concurrency,
        if a.new_connections { "one connection per request" } else { "keep-alive connections" }
    );
    println!(
        "  latency   : p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(percentile(&lat1, 0.5)),
        ms(percentile(&lat1, 0.99)),
        ms(lat1.last().copied().unwrap_or_default())
    );
    println!(
        "fixed rate  : {} events/s for {} s, {ok2} x 200, {other2} other; latency from schedule p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        a.rate,
        a.rate_seconds,
        ms(percentile(&lat2, 0.5)),
        ms(percentile(&lat2, 0.99)),
        ms(lat2.last().copied().unwrap_or_default())
    );
    match hwm {
        Some(k) => println!(
            "memory      : VmHWM {:.1} MiB (peak resident set, summed over {} process(es))",
            k as f64 / 1024.0,
            pids.len()
        ),
        None => println!("memory      : VmHWM unavailable"),
    }
    match rows {
        Some(rows) => println!(
            "durability  : {rows} new rows for {} answers of 200 (the table held {rows_before} before); listener exit {exit}",
            ok1 + ok2
        ),
        None => println!("durability  : not checked (no --count-db)"),
    }
    match (&scrapes, a.scrape_every) {
        (Some((ok, other, lat, bytes)), Some(every)) => println!(
            "/metrics    : scraped every {every} s through both phases: {ok} x 200, {other} other; p50 {:.2} ms  max {:.2} ms; {:.1} KiB each",
            ms(percentile(lat, 0.5)),
            ms(lat.last().copied().unwrap_or_default()),
            *bytes as f64 / 1024.0
        ),
        _ => println!("/metrics    : not scraped"),
    }
    if let Some(cpu) = scrape_cpu {
        println!("  cpu       : {:.2} ms of listener CPU per scrape (200 back to back after the load)", cpu * 1e3);
    }
    if let Some(path) = &a.json {
        let v = serde_json::json!({
            "target": a.target_url.clone().unwrap_or_else(|| "stark-sweep serve-webhook".into()),
            "concurrency": a.concurrency,
            "new_connections": a.new_connections,
            "throughput_eps": ok1 as f64 / secs,
            "throughput_ok": ok1,
            "throughput_other": other1,
            "throughput_p50_ms": ms(percentile(&lat1, 0.5)),
            "throughput_p99_ms": ms(percentile(&lat1, 0.99)),
            "rate": a.rate,
            "rate_seconds": a.rate_seconds,
            "rate_ok": ok2,
            "rate_other": other2,
            "rate_p50_ms": ms(percentile(&lat2, 0.5)),
            "rate_p99_ms": ms(percentile(&lat2, 0.99)),
            "rate_max_ms": ms(lat2.last().copied().unwrap_or_default()),
            "vm_hwm_kib": hwm,
            "processes": pids.len(),
            "rows": rows,
            "scrape_every": a.scrape_every,
            "scrapes": scrapes.as_ref().map(|s| s.0),
            "scrapes_other": scrapes.as_ref().map(|s| s.1),
            "scrape_p50_ms": scrapes.as_ref().map(|s| ms(percentile(&s.2, 0.5))),
            "scrape_max_ms": scrapes.as_ref().map(|s| ms(s.2.last().copied().unwrap_or_default())),
            "scrape_bytes": scrapes.as_ref().map(|s| s.3),
            "scrape_cpu_ms": scrape_cpu.map(|c| c * 1e3),
            "rows_before": rows_before,
            "random_ids": a.random_ids,
        });
        std::fs::write(path, v.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if rows.is_some_and(|rows| rows as usize != ok1 + ok2) {
        return Err("row count differs from the number of 200 answers".into());
    }
    // A receiver that refuses everything is not fast: say so instead of printing figures.
    if ok1 + ok2 == 0 || other1 + other2 > (ok1 + ok2) / 100 {
        return Err(format!(
            "{} of {} answers were not 200: not a valid run",
            other1 + other2,
            ok1 + ok2 + other1 + other2
        ));
    }
    Ok(())
}
