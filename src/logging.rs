//! Where log lines go and how they look: standard error at the verbosity asked (`-q`, the
//! default, `-v`, `-vv`, `-vvv`; the levels are stated in `--help`), the `--log-file` at debug
//! level whatever those say, each as text or as one JSON object per line (`--log-format`).

use crate::cli::{GlobalArgs, LogFormat};
use crate::state::file_log;
use serde_json::{Map, Value};
use std::fmt;
use std::io::IsTerminal;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// `--log-file` cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("--log-file {}: {source}", .path.display())]
pub struct LogFileError {
    path: std::path::PathBuf,
    #[source]
    source: std::io::Error,
}

/// Install the process's logging as `g` asks.
pub fn init(g: &GlobalArgs) -> Result<(), LogFileError> {
    let stderr = layer(
        g.log_format,
        || crate::pipeline::progress::TerminalWriter,
        std::io::stderr().is_terminal(),
        false,
    )
    .with_filter(terminal_levels(g.quiet, g.verbose))
    .boxed();
    let mut layers = vec![stderr];
    if let Some(path) = &g.log_file {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| LogFileError {
                path: path.clone(),
                source,
            })?;
        layers.push(
            layer(g.log_format, Mutex::new(f), false, true)
                .with_filter(file_levels())
                .boxed(),
        );
    }
    tracing_subscriber::registry().with(layers).init();
    Ok(())
}

/// What standard error shows: bookferry's lines at the verbosity asked, other crates' warnings.
/// By default a file's line only when it failed, and the first few warnings (see `file_log`).
pub fn terminal_levels(quiet: bool, verbose: u8) -> Targets {
    let others = Targets::new().with_default(LevelFilter::WARN);
    match (quiet, verbose) {
        (true, _) => Targets::new().with_default(LevelFilter::ERROR),
        (false, 0) => others
            .with_target("bookferry", LevelFilter::INFO)
            .with_target(file_log::FILE, LevelFilter::WARN)
            .with_target(file_log::MORE_WARNINGS, LevelFilter::OFF),
        (false, 1) => others.with_target("bookferry", LevelFilter::INFO),
        (false, 2) => others.with_target("bookferry", LevelFilter::DEBUG),
        _ => others.with_target("bookferry", LevelFilter::TRACE),
    }
}

/// What the `--log-file` takes: everything of bookferry's at debug level, other crates'
/// warnings.
pub fn file_levels() -> Targets {
    Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("bookferry", LevelFilter::DEBUG)
}

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

fn layer<W>(format: LogFormat, writer: W, ansi: bool, time: bool) -> Boxed
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    match (format, time) {
        (LogFormat::Json, _) => fmt.event_format(JsonLine).boxed(),
        (LogFormat::Text, true) => fmt.with_target(false).fmt_fields(text_fields()).boxed(),
        (LogFormat::Text, false) => fmt
            .with_target(false)
            .without_time()
            .fmt_fields(text_fields())
            .boxed(),
    }
}

/// A text line's fields: the message, and the other fields as `name=value`, but not a file's
/// structured fields (its message says the same in words).
fn text_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let name = field.name();
        if name == "message" {
            write!(w, "{value:?}")
        } else if file_log::FIELDS.contains(&name) {
            Ok(())
        } else {
            write!(w, " {name}={value:?}")
        }
    })
}

/// One JSON object per line: `time` (RFC 3339, UTC), `level`, `message`, then the event's
/// fields under their names (`file_id`, `source`, `state`, `reason`, `target` for a file).
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut obj = Map::new();
        obj.insert("time".into(), Value::String(time));
        obj.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().into()),
        );
        obj.insert("message".into(), Value::String(String::new()));
        event.record(&mut Fields(&mut obj));
        writeln!(w, "{}", Value::Object(obj))
    }
}

/// Gathers an event's fields into a JSON object.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}
