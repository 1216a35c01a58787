//! Helpers shared by the benchmark harnesses (not tests: nothing here asserts a time).
//!
//! Owns: finding the release binary, running a child under GNU time for its wall time and peak
//! resident set, an emulator world with N credited invoices, and the JSON results file that
//! `bench/run` turns into `bench/REPORT.md`.

#![allow(dead_code, reason = "each harness uses a different subset")]

pub mod proxy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use stark_sweep::sandbox::{PayOptions, Sandbox, SandboxConfig, Snapshot};
use stark_sweep::starkbank::resources::NewInvoice;
use stark_sweep::starkbank::{Client, ClientConfig, keys};

/// `target/release/examples/<harness>` -> `target/release/stark-sweep`.
pub fn default_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(|p| p.join("stark-sweep")))
        .unwrap_or_else(|| PathBuf::from("target/release/stark-sweep"))
}

/// `--flag value` pairs and bare `--switch`es, nothing more.
#[derive(Debug, Default)]
pub struct Flags(HashMap<String, String>);

impl Flags {
    pub fn parse(switches: &[&str]) -> anyhow::Result<Flags> {
        let mut out = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let Some(name) = flag.strip_prefix("--") else { bail!("unexpected argument {flag}") };
            if switches.contains(&name) {
                out.insert(name.to_string(), "true".into());
            } else {
                let value = it.next().with_context(|| format!("{flag} needs a value"))?;
                out.insert(name.to_string(), value);
            }
        }
        Ok(Flags(out))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn on(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| anyhow::anyhow!("--{name} {v}: {e}")),
        }
    }
}

/// What one child run cost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measured {
    pub wall_s: f64,
    /// Peak resident set of the child, KiB (GNU time `%M`, from wait4's rusage).
    pub max_rss_kib: u64,
    pub user_s: f64,
    pub sys_s: f64,
    pub exit_code: i32,
    #[serde(skip)]
    pub stdout: String,
    #[serde(skip)]
    pub stderr: String,
    /// Real clock when the child was started (to place its log lines on the run's timeline).
    #[serde(skip)]
    pub started: Option<chrono::DateTime<chrono::Utc>>,
    /// Monotonic start and end, to line the child up with the proxy's spans.
    #[serde(skip)]
    pub t0: Option<Instant>,
    #[serde(skip)]
    pub t1: Option<Instant>,
}

/// A command with stark-sweep's and Stark Bank's variables removed from the inherited
/// environment, so nothing but what the harness sets configures the child.
pub fn clean(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("STARK") || k == "STATE_DIRECTORY" || k == "CREDENTIALS_DIRECTORY" {
            c.env_remove(k);
        }
    }
    c
}

/// Runs `program args` with `envs` in `dir` under `/usr/bin/time`, capturing its output.
pub fn run_timed(dir: &Path, program: &Path, args: &[&str], envs: &[(&str, String)]) -> anyhow::Result<Measured> {
    let time_file = dir.join(format!("time-{}.txt", std::process::id()));
    let mut c = clean("/usr/bin/time");
    c.current_dir(dir).arg("-f").arg("%e %M %U %S").arg("-o").arg(&time_file).arg(program).args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let started = chrono::Utc::now();
    let t0 = Instant::now();
    let out = c.output().with_context(|| format!("running {} under /usr/bin/time", program.display()))?;
    let t1 = Instant::now();
    let wall = t1 - t0;
    let text = std::fs::read_to_string(&time_file).with_context(|| format!("reading {}", time_file.display()))?;
    // GNU time writes "Command exited with non-zero status N" before the format line.
    let line = text.lines().last().unwrap_or_default();
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 4 {
        bail!("unexpected /usr/bin/time output {text:?}");
    }
    Ok(Measured {
        wall_s: wall.as_secs_f64(),
        max_rss_kib: f[1].parse()?,
        user_s: f[2].parse()?,
        sys_s: f[3].parse()?,
        exit_code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        started: Some(started),
        t0: Some(t0),
        t1: Some(t1),
    })
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// CPU seconds (user + system) this process has used so far: the in-process emulator's cost.
pub fn self_cpu_s() -> f64 {
    let ticks = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / ticks
}

/// The emulator, in-process, with its project key written into a temp dir.
pub struct World {
    pub dir: tempfile::TempDir,
    pub sandbox: Sandbox,
}

impl World {
    pub fn start(time_scale: f64) -> anyhow::Result<World> {
        let dir = tempfile::Builder::new().prefix("stark-sweep-bench-").tempdir()?;
        let sandbox = Sandbox::start(SandboxConfig {
            time_scale,
            pay_rate: 0.0,
            seed: 7,
            key_dir: Some(dir.path().to_path_buf()),
            ..SandboxConfig::default()
        })?;
        Ok(World { dir, sandbox })
    }

    /// The environment of any client of this world (stark-sweep or the SDK scripts).
    pub fn env(&self, db: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
        let key = self.sandbox.private_key_path().context("the emulator wrote no key file")?;
        Ok(vec![
            ("STARKBANK_PROJECT_ID", self.sandbox.project_id()),
            ("STARKBANK_PRIVATE_KEY_PATH", key.display().to_string()),
            ("STARKBANK_API_URL", self.sandbox.url()),
            ("STARK_SWEEP_DB", db.display().to_string()),
            ("STARK_SWEEP_HTTP_TIMEOUT", "60".into()),
        ])
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        let pem = self.sandbox.private_key_pem().context("the emulator created no project key")?;
        let key = keys::parse_private_key(&pem)?;
        Client::new(ClientConfig::new(self.sandbox.url(), self.sandbox.project_id(), key))
    }

    /// Issues `n` invoices tagged `stark-sweep` (100 per request), pays each at once and waits
    /// until every one is credited. Returns the seconds it took.
    pub fn credited_invoices(&self, n: usize) -> anyhow::Result<f64> {
        let t0 = Instant::now();
        let client = self.client()?;
        let due = stark_sweep::starkbank::time::format_secs(self.sandbox.now() + chrono::Duration::days(2));
        let mut ids = Vec::with_capacity(n);
        let mut i = 0usize;
        while i < n {
            let batch: Vec<NewInvoice> = (i..n.min(i + 100))
                .map(|k| NewInvoice {
                    amount: 1_000 + (k as i64 * 7_919) % 49_000,
                    tax_id: "337.451.076-08".into(),
                    name: "Benchmark Payer".into(),
                    due: due.clone(),
                    expiration: 5 * 86_400,
                    tags: vec!["stark-sweep".into(), "bench".into()],
                })
                .collect();
            i += batch.len();
            ids.extend(client.create_invoices(&batch)?.into_iter().map(|inv| inv.id));
        }
        for id in &ids {
            self.sandbox.pay_invoice(id, PayOptions { credit_delay_seconds: Some(0), ..PayOptions::default() })?;
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while credited(&self.sandbox.snapshot()) < n {
            if Instant::now() > deadline {
                bail!("the emulator did not credit {n} invoices within 300 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(t0.elapsed().as_secs_f64())
    }
}

pub fn credited(s: &Snapshot) -> usize {
    s.invoices.iter().filter(|i| i.logs.iter().any(|l| l.log_type == "credited")).count()
}

/// `PATCH /v2/event/{id}` -> `PATCH /v2/event/{id}`: a request's kind, ids folded.
pub fn request_kind(method: &str, path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    let folded: Vec<&str> = path
        .split('/')
        .map(|seg| if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) { "{id}" } else { seg })
        .collect();
    format!("{} {}", method.to_uppercase(), folded.join("/"))
}

/// Requests the emulator logged from index `from` on, counted by kind.
pub fn requests_by_kind(s: &Snapshot, from: usize) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for r in s.requests.iter().skip(from) {
        *out.entry(request_kind(&r.method, &r.path)).or_insert(0) += 1;
    }
    out
}

/// Exactly-once check at the emulator: per credited invoice with a positive net, the transfers
/// tagged `invoice-<id>`. Returns (credits, credits with exactly one transfer of amount - fee,
/// transfers in total, failed transfers).
pub fn exactly_once(s: &Snapshot) -> (usize, usize, usize, usize) {
    let mut by_invoice: HashMap<&str, Vec<i64>> = HashMap::new();
    for t in &s.transfers {
        if let Some(inv) = t.tags.iter().find_map(|tag| tag.strip_prefix("invoice-")) {
            by_invoice.entry(inv).or_default().push(t.amount);
        }
    }
    let mut credits = 0;
    let mut good = 0;
    for inv in s.invoices.iter().filter(|i| i.logs.iter().any(|l| l.log_type == "credited")) {
        let net = inv.amount - inv.fee;
        if net <= 0 {
            continue;
        }
        credits += 1;
        if by_invoice.get(inv.id.as_str()).is_some_and(|a| a == &vec![net]) {
            good += 1;
        }
    }
    let failed = s.transfers.iter().filter(|t| t.status == "failed").count();
    (credits, good, s.transfers.len(), failed)
}

/// Writes `value` to `--json PATH` when given.
pub fn write_json(flags: &Flags, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(path) = flags.get("json") {
        std::fs::write(path, serde_json::to_string_pretty(value)?).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}
