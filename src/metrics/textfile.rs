//! The timer jobs' node_exporter textfile (`--metrics-file`): when the last run ended, how long
//! it took, its exit code, and when a run last succeeded (0: never, so `time() - ...` alerts). Written to a temporary file in the same
//! directory and renamed over the old one, so node_exporter never reads half a file; samples
//! carry no timestamps (node_exporter refuses them in textfiles).
//!
//! Owns: the file's names and contents, the check made before a run, and carrying the last
//! success over a failed run (read back from the previous file: the file is the job's memory).
//! Does not own: when a run succeeded (the caller says) or what the job did.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// A timer job that writes a textfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    IssueInvoices,
    ProcessEvents,
}

impl Job {
    /// The command, as typed.
    pub fn command(self) -> &'static str {
        match self {
            Job::IssueInvoices => "issue-invoices",
            Job::ProcessEvents => "process-events",
        }
    }

    /// The prefix of the job's metric names: `stark_sweep_process_events_...`. Each job has its
    /// own names (not a `job` label: Prometheus gives that label to the scrape job).
    pub fn prefix(self) -> String {
        format!("stark_sweep_{}", self.command().replace('-', "_"))
    }
}

/// One finished run.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub job: Job,
    /// When it ended (wall clock: Prometheus compares it with `time()`).
    pub ended: SystemTime,
    pub duration: Duration,
    pub exit_code: u8,
    /// It did its part: exit 0, or 3 (a human must look at something; that has its own alert).
    pub succeeded: bool,
}

/// node_exporter's textfile collector reads only files named `*.prom`.
const EXTENSION: &str = ".prom";

/// Checked before the run starts, so that a wrong path stops it before it does anything (exit
/// 78): the name ends in `.prom`, the directory exists, and the file is not another job's (the
/// two jobs share the environment file: one value there would make them overwrite each other).
pub fn check(path: &Path, job: Job) -> anyhow::Result<()> {
    let what = || format!("STARK_SWEEP_METRICS_FILE / --metrics-file {}", path.display());
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if !name.ends_with(EXTENSION) || name.len() == EXTENSION.len() {
        return Err(crate::error::config(format!(
            "{}: node_exporter's textfile collector reads only files named *.prom; to fix: name it e.g. stark-sweep-{}.prom",
            what(),
            job.command()
        )));
    }
    let dir = directory(path);
    if !dir.is_dir() {
        return Err(crate::error::config(format!(
            "{}: the directory {} does not exist; to fix: create it (node_exporter's --collector.textfile.directory) or point the file elsewhere",
            what(),
            dir.display()
        )));
    }
    for other in [Job::IssueInvoices, Job::ProcessEvents].into_iter().filter(|j| *j != job) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l.starts_with(&format!("{}_", other.prefix()))) {
            return Err(crate::error::config(format!(
                "{}: the file holds {}'s metrics; each job needs a file of its own; to fix: set it per job (a systemd drop-in per unit, or per crontab line), e.g. stark-sweep-{}.prom",
                what(),
                other.command(),
                job.command()
            )));
        }
    }
    Ok(())
}

fn directory(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The file's text for `run`; `last_success` is the previous file's, kept when this run failed.
pub fn render(run: &Run, last_success: Option<f64>) -> anyhow::Result<String> {
    let p = run.job.prefix();
    let cmd = run.job.command();
    let mut registry = Registry::default();
    registry.register_with_unit(
        format!("{p}_last_run_timestamp"),
        format!("When the last {cmd} run ended, successful or not (Unix time)"),
        Unit::Seconds,
        ConstGauge::new(seconds(run.ended)),
    );
    registry.register_with_unit(
        format!("{p}_last_run_duration"),
        format!("How long the last {cmd} run took"),
        Unit::Seconds,
        ConstGauge::new(run.duration.as_secs_f64()),
    );
    registry.register(
        format!("{p}_last_exit_code"),
        format!("Exit code of the last {cmd} run (0 done, 3 needs a human, 75 temporary, 78 configuration, 1 other)"),
        ConstGauge::new(i64::from(run.exit_code)),
    );
    // Never (as far as this file remembers): 0, so that `time() - ...` says "too long ago".
    let success = if run.succeeded { seconds(run.ended) } else { last_success.unwrap_or(0.0) };
    registry.register_with_unit(
        format!("{p}_last_success_timestamp"),
        format!("When a {cmd} run last did its part: exit 0, or 3 (Unix time; 0: never)"),
        Unit::Seconds,
        ConstGauge::new(success),
    );
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry).context("encoding the textfile")?;
    Ok(text)
}

/// `..._last_success_timestamp_seconds` of a file this job wrote, if it has one.
fn previous_success(path: &Path, job: Job) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let name = format!("{}_last_success_timestamp_seconds ", job.prefix());
    text.lines().find_map(|l| l.strip_prefix(&name)).and_then(|v| v.trim().parse().ok()).filter(|v: &f64| v.is_finite())
}

/// Writes the textfile for `run`: a temporary file beside it (hidden, not `*.prom`, so never
/// read), flushed to disk, made readable by node_exporter (0644, whatever the umask), then
/// renamed over `path`.
pub fn write(path: &Path, run: &Run) -> anyhow::Result<()> {
    let text = render(run, previous_success(path, run.job))?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = directory(path).join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing the metrics file {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is the failed assertion")]
    use super::*;

    fn run(succeeded: bool, exit_code: u8, at: u64) -> Run {
        Run {
            job: Job::ProcessEvents,
            ended: UNIX_EPOCH + Duration::from_secs(at),
            duration: Duration::from_millis(1500),
            exit_code,
            succeeded,
        }
    }

    #[test]
    fn a_failed_run_keeps_the_last_success() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stark-sweep-process-events.prom");
        write(&path, &run(true, 0, 1_800_000_000)).unwrap();
        write(&path, &run(false, 75, 1_800_000_060)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\nstark_sweep_process_events_last_success_timestamp_seconds 1800000000"), "{text}");
        assert!(text.contains("\nstark_sweep_process_events_last_run_timestamp_seconds 1800000060"), "{text}");
        assert!(text.contains("\nstark_sweep_process_events_last_exit_code 75\n"), "{text}");
        assert!(text.contains("# TYPE stark_sweep_process_events_last_run_duration_seconds gauge\n"), "{text}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind: {left:?}");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
    }

    #[test]
    fn never_succeeded_is_a_success_at_zero() {
        let text = render(&run(false, 78, 1_800_000_000), None).unwrap();
        assert!(text.contains("\nstark_sweep_process_events_last_success_timestamp_seconds 0.0\n"), "{text}");
    }

    #[test]
    fn the_path_is_checked_before_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let bad_name = check(&dir.path().join("metrics.txt"), Job::ProcessEvents).unwrap_err();
        assert!(bad_name.to_string().contains("*.prom"), "{bad_name}");
        let no_dir = check(&dir.path().join("missing/x.prom"), Job::ProcessEvents).unwrap_err();
        assert!(no_dir.to_string().contains("does not exist"), "{no_dir}");
        let shared = dir.path().join("stark-sweep.prom");
        write(&shared, &Run { job: Job::IssueInvoices, ..run(true, 0, 1) }).unwrap();
        let clash = check(&shared, Job::ProcessEvents).unwrap_err();
        assert!(clash.to_string().contains("issue-invoices's metrics"), "{clash}");
        assert_eq!(crate::error::classify(&clash), crate::error::ExitKind::Config);
        check(&shared, Job::IssueInvoices).unwrap();
    }
}
