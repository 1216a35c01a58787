//! Logs on stderr, as text (default) or JSON lines; results go to stdout, never here.
//!
//! Owns: the `log` backend. A line's key-value fields (`log::info!(invoice_id = id; "...")`)
//! become keys of the JSON line, so `journalctl -o json` can follow one invoice, slot, externalId
//! or event; the text format shows the message only (it names the same ids in words). Callers
//! must never log keys, tax IDs, names or raw bodies.

use std::io::Write as _;

use log::{Level, LevelFilter, Log, Metadata, Record};
use serde_json::{Map, Value};

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
        let line = render(self.format, &ts, record);
        // A closed stderr is not worth failing a payment run for.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// One line, newline included.
fn render(format: LogFormat, ts: &str, record: &Record) -> String {
    match format {
        LogFormat::Text => format!("{ts} {:<5} {}\n", record.level(), record.args()),
        LogFormat::Json => {
            let mut line = Map::new();
            line.insert("ts".into(), Value::from(ts));
            line.insert("level".into(), Value::from(record.level().as_str().to_ascii_lowercase()));
            line.insert("target".into(), Value::from(record.target()));
            line.insert("msg".into(), Value::from(record.args().to_string()));
            // A field never replaces one of the four above.
            let _ = record.key_values().visit(&mut Fields(&mut line));
            format!("{}\n", Value::Object(line))
        }
    }
}

/// Collects a record's key-value fields into the JSON line: numbers and booleans as such,
/// everything else as text; a missing value (`None`) is left out.
struct Fields<'a>(&'a mut Map<String, Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: log::kv::Key<'kvs>, value: log::kv::Value<'kvs>) -> Result<(), log::kv::Error> {
        let mut json = JsonValue(None);
        value.visit(&mut json)?;
        if let Some(v) = json.0 {
            self.0.entry(key.as_str().to_string()).or_insert(v);
        }
        Ok(())
    }
}

struct JsonValue(Option<Value>);

impl<'v> log::kv::VisitValue<'v> for JsonValue {
    fn visit_any(&mut self, value: log::kv::Value) -> Result<(), log::kv::Error> {
        self.0 = Some(Value::from(value.to_string()));
        Ok(())
    }

    fn visit_null(&mut self) -> Result<(), log::kv::Error> {
        self.0 = None;
        Ok(())
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), log::kv::Error> {
        self.0 = Some(Value::from(value));
        Ok(())
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), log::kv::Error> {
        self.0 = Some(Value::from(value));
        Ok(())
    }

    fn visit_f64(&mut self, value: f64) -> Result<(), log::kv::Error> {
        self.0 = Some(Value::from(value));
        Ok(())
    }

    fn visit_bool(&mut self, value: bool) -> Result<(), log::kv::Error> {
        self.0 = Some(Value::from(value));
        Ok(())
    }

    fn visit_str(&mut self, value: &str) -> Result<(), log::kv::Error> {
        self.0 = Some(Value::from(value));
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is the failed assertion")]
    use super::*;

    fn line(format: LogFormat, kvs: &[(&str, log::kv::Value<'_>)]) -> String {
        let args = format_args!("sent transfer x for invoice i1");
        let record =
            Record::builder().level(Level::Info).target("stark_sweep::sweep").args(args).key_values(&kvs).build();
        render(format, "2026-01-01T00:00:00.000Z", &record)
    }

    #[test]
    fn fields_become_keys_of_the_json_line() {
        let none: Option<&str> = None;
        let text = line(
            LogFormat::Json,
            &[
                ("invoice_id", log::kv::Value::from("i1")),
                ("attempt", log::kv::Value::from(2u32)),
                ("amount_cents", log::kv::Value::from(-5i64)),
                ("event_id", log::kv::ToValue::to_value(&none)),
                ("msg", log::kv::Value::from("not the message")),
            ],
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["invoice_id"], "i1");
        assert_eq!(v["attempt"], 2);
        assert_eq!(v["amount_cents"], -5);
        assert!(v.get("event_id").is_none(), "a missing value is left out: {text}");
        assert_eq!(v["msg"], "sent transfer x for invoice i1", "a field never replaces the message");
        assert_eq!(v["level"], "info");
    }

    #[test]
    fn the_text_format_shows_the_message_only() {
        let text = line(LogFormat::Text, &[("invoice_id", log::kv::Value::from("i1"))]);
        assert_eq!(text, "2026-01-01T00:00:00.000Z INFO  sent transfer x for invoice i1\n");
    }
}
