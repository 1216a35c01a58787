//! Dispatch: one `run()` per subcommand, and the one place that turns a result into an exit
//! code and a one-line error on stderr.

pub mod config;
pub mod demo;
pub mod issue_invoices;
pub mod keygen;
pub mod kill_switch;
pub mod migrate_store;
pub mod process_events;
pub mod sandbox;
pub mod serve_webhook;
pub mod status;
pub mod subscription;
pub mod trace;

use std::io::Write as _;
use std::process::ExitCode;

use crate::cli::{ApiArgs, Cli, Command};
use crate::clock::Clock;
use crate::error::{self, ExitKind};
use crate::logging::{self, LogFormat};
use crate::metrics::textfile;

/// What a command that did not fail ended as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    /// Finished, but a human must look at something (exit 3).
    Attention,
}

/// What a command gets besides its own options: the API access, the database and the
/// business clock, from its flags when it takes them (defaults otherwise: it does not use them).
#[derive(Debug)]
pub struct Ctx {
    pub api: ApiArgs,
    pub clock: Clock,
    pub db: crate::store::Location,
}

impl Ctx {
    fn of(command: &Command) -> anyhow::Result<Self> {
        let (store, api) = command.shared_args();
        let store = store.cloned().unwrap_or_default();
        Ok(Self {
            api: api.cloned().unwrap_or_default(),
            clock: Clock::from_arg(store.now.as_deref())?,
            db: config::db_location(&store)?,
        })
    }
}

pub fn run(cli: Cli, dotenv_error: Option<anyhow::Error>) -> ExitCode {
    let verbosity = cli.global.verbose as i8 - cli.global.quiet as i8;
    logging::init(cli.global.log_format.unwrap_or(LogFormat::Text), verbosity);
    let started = std::time::Instant::now();
    let metrics_file = job_metrics_file(&cli.command);
    let mut metrics_file_ok = false;
    let result = dotenv_error.map_or(Ok(()), Err).and_then(|()| {
        if let Some((job, path)) = &metrics_file {
            textfile::check(path, *job)?;
            metrics_file_ok = true;
        }
        let ctx = Ctx::of(&cli.command)?;
        dispatch(&ctx, cli.command)
    });
    let code = match result {
        Ok(Status::Success) => ExitKind::Success.code(),
        Ok(Status::Attention) => ExitKind::Attention.code(),
        Err(err) => {
            let kind = error::classify(&err);
            let mut line = format!("stark-sweep: {}", error::one_line(&err));
            if let Some(hint) = error::hint(&err) {
                line.push_str("; ");
                line.push_str(hint);
            }
            let _ = writeln!(std::io::stderr(), "{line}");
            kind.code()
        }
    };
    if let Some((job, path)) = metrics_file.filter(|_| metrics_file_ok) {
        let run = textfile::Run {
            job,
            ended: std::time::SystemTime::now(),
            duration: started.elapsed(),
            exit_code: code,
            succeeded: code == ExitKind::Success.code() || code == ExitKind::Attention.code(),
        };
        // The run's own outcome stands: a metrics file that cannot be written is said, not
        // made into a failed payment run (its staleness is what the alert sees).
        if let Err(e) = textfile::write(&path, &run) {
            log::error!("{}; to fix: make the directory writable by this job", error::one_line(&e));
        }
    }
    ExitCode::from(code)
}

/// The timer jobs that write a textfile when asked (`--metrics-file`); a dry run is not a run
/// of the job and writes none.
fn job_metrics_file(command: &Command) -> Option<(textfile::Job, std::path::PathBuf)> {
    match command {
        Command::IssueInvoices(a) if !a.dry_run => a.metrics_file.clone().map(|p| (textfile::Job::IssueInvoices, p)),
        Command::ProcessEvents(a) if !a.dry_run => a.metrics_file.clone().map(|p| (textfile::Job::ProcessEvents, p)),
        _ => None,
    }
}

/// A configuration value clap refused: the env file's own error first when there is one (it
/// is the likelier cause), else `line`; one line on stderr, exit 78.
pub fn config_error(dotenv_error: Option<anyhow::Error>, line: &str) -> ExitCode {
    let line = dotenv_error.map_or_else(|| line.to_string(), |e| error::one_line(&e));
    let _ = writeln!(std::io::stderr(), "stark-sweep: {line}");
    ExitCode::from(ExitKind::Config.code())
}

fn dispatch(ctx: &Ctx, command: Command) -> anyhow::Result<Status> {
    match command {
        Command::Keygen(args) => keygen::run(ctx, &args),
        Command::IssueInvoices(args) => issue_invoices::run(ctx, &args),
        Command::ProcessEvents(args) => process_events::run(ctx, &args),
        Command::Status(args) => status::run(ctx, &args),
        Command::Trace(args) => trace::run(ctx, &args),
        Command::Sandbox(args) => sandbox::run(ctx, &args),
        Command::KillSwitch(command) => kill_switch::run(ctx, &command),
        Command::Webhook(command) => subscription::run(ctx, &command),
        Command::Demo(args) => demo::run(ctx, &args),
        Command::MigrateStore(args) => migrate_store::run(&args),
        Command::ServeWebhook(args) => serve_webhook::run(ctx, &args),
    }
}

/// Writes a result to stdout. A closed pipe (`| head`) is not a failure.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Writes a JSON value (pretty) and a newline to stdout.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    print(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// `n` and the noun that agrees with it: `1 request`, `2 requests`, `0 requests`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(super::count(1u64, "request", "requests"), "1 request");
        assert_eq!(super::count(0u64, "request", "requests"), "0 requests");
        assert_eq!(super::count(2u64, "discrepancy", "discrepancies"), "2 discrepancies");
    }
}
