//! Logs on stderr, as text (default) or JSON lines; results go to stdout, never here.
//!
//! Owns: the `log` backend. Callers must never log keys, tax IDs, names or raw bodies.

use std::io::Write as _;

use log::{Level, LevelFilter, Log, Metadata, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

struct Logger {
    format: LogFormat,
    level: LevelFilter,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Dependencies (rustls, reqwest, hyper) are heard at warn and above unless tracing.
        let ours = metadata.target().starts_with("stark_sweep");
        metadata.level() <= self.level && (ours || metadata.level() <= Level::Warn || self.level == LevelFilter::Trace)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let line = match self.format {
            LogFormat::Text => format!("{ts} {:<5} {}\n", record.level(), record.args()),
            LogFormat::Json => {
                let v = serde_json::json!({
                    "ts": ts,
                    "level": record.level().as_str().to_ascii_lowercase(),
                    "target": record.target(),
                    "msg": record.args().to_string(),
                });
                format!("{v}\n")
            }
        };
        // A closed stderr is not worth failing a payment run for.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// `verbosity`: 0 = info, 1 = debug, 2+ = trace, negative = warn/error only.
pub fn init(format: LogFormat, verbosity: i8) {
    let level = match verbosity {
        i8::MIN..=-2 => LevelFilter::Error,
        -1 => LevelFilter::Warn,
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let logger = Logger { format, level };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
