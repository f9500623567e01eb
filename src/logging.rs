//! The log: which lines (`NBIDLE_LOG`), in which format (`NBIDLE_LOG_FORMAT`
//! or `--log-format`), coloured or not (a terminal, `NO_COLOR`).
//!
//! The HTTP stack logs per request and per connection: warp two lines for
//! every answer at info, hyper-util and reqwest a few for every probe at
//! debug. With Prometheus scraping, the kubelet probing and the exporter
//! probing every notebook, those lines drown nbidle's own. So they stay at
//! warn unless `NBIDLE_LOG` names their crate: `info` or `debug` means
//! nbidle's info or debug, and the stack's warnings.

use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::EnvFilter;

use crate::{Error, Result};

/// The filter's variable, in `EnvFilter` syntax.
pub(crate) const LEVEL_VAR: &str = "NBIDLE_LOG";
/// The format's variable; `--log-format` wins over it.
pub(crate) const FORMAT_VAR: &str = "NBIDLE_LOG_FORMAT";
/// The filter when `NBIDLE_LOG` is unset or empty.
pub(crate) const DEFAULT_LEVEL: &str = "info";
/// Crates whose lines come per request, connection or probe: at warn unless
/// `NBIDLE_LOG` names them (or a module in them).
pub(crate) const QUIET_CRATES: &[&str] = &[
    "warp",
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "tower",
    "rustls",
];

/// Targets that log every failed request at error, which nbidle reports
/// itself where it matters (one line when a watch breaks, one per failed
/// operation): in an API server outage they would write a line every
/// retry. Off unless `NBIDLE_LOG` names their crate.
pub(crate) const REPORTED_BY_NBIDLE: &[&str] = &["kube_client::client::builder"];

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people; coloured on a terminal.
    Text,
    /// One JSON object per line: `timestamp` (RFC 3339, UTC), `level`,
    /// `target`, `fields` (with `message`), and `span` when in one.
    Json,
}

impl LogFormat {
    fn parse(var: &str, value: &str) -> Result<LogFormat> {
        match value {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(Error::config(
                var,
                format!("{value:?} is not a log format: expected json or text"),
            )),
        }
    }
}

/// Everything the log needs, read once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `EnvFilter` directives: the operator's, then the quiet crates'.
    pub(crate) filter: String,
    pub(crate) format: LogFormat,
    /// Colours in the text format.
    pub(crate) colour: bool,
}

impl Settings {
    /// From the environment, the `--log-format` flag and stderr.
    pub fn from_env(flag: Option<LogFormat>) -> Result<Settings> {
        let colour = std::io::stderr().is_terminal() && !no_color(std::env::var_os("NO_COLOR"));
        Settings::new(
            env_var(LEVEL_VAR)?.as_deref(),
            env_var(FORMAT_VAR)?.as_deref(),
            flag,
            colour,
        )
    }

    /// From the variables' values (None: unset or empty); `colour`: stderr
    /// is a terminal and `NO_COLOR` is not set.
    pub(crate) fn new(
        level: Option<&str>,
        format: Option<&str>,
        flag: Option<LogFormat>,
        colour: bool,
    ) -> Result<Settings> {
        let format = match (flag, format) {
            (Some(f), _) => f,
            (None, Some(v)) => LogFormat::parse(FORMAT_VAR, v)?,
            (None, None) => LogFormat::Text,
        };
        Ok(Settings {
            filter: filter_directives(level)?,
            format,
            colour: colour && format == LogFormat::Text,
        })
    }
}

/// `NO_COLOR` set to anything but the empty string (no-color.org).
fn no_color(value: Option<std::ffi::OsString>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

/// A variable's value; unset and empty (or blank) are the same.
fn env_var(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::config(name, "the value is not valid UTF-8"))
        }
    }
}

/// The operator's filter (or the default), checked, with `crate=warn` for
/// each quiet crate it does not name, when its level for everything else
/// is more verbose than warn.
pub(crate) fn filter_directives(level: Option<&str>) -> Result<String> {
    let given = level.unwrap_or(DEFAULT_LEVEL).trim();
    EnvFilter::builder()
        .parse(given)
        .map_err(|e| Error::config(LEVEL_VAR, format!("{given:?}: {e}")))?;
    let directives: Vec<&str> = given
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let global = directives
        .iter()
        .filter_map(|d| d.parse::<LevelFilter>().ok())
        .max();
    let mut filter = given.to_string();
    if global.is_some_and(|l| l > LevelFilter::WARN) {
        for krate in QUIET_CRATES {
            if !directives.iter().any(|d| names(d, krate)) {
                filter.push_str(&format!(",{krate}=warn"));
            }
        }
    }
    for target in REPORTED_BY_NBIDLE {
        let krate = target.split("::").next().unwrap_or(target);
        if !directives.iter().any(|d| names(d, krate)) {
            filter.push_str(&format!(",{target}=off"));
        }
    }
    Ok(filter)
}

/// Whether a directive (`target[span]=level`) is about `krate` or a module
/// in it.
fn names(directive: &str, krate: &str) -> bool {
    let target = directive
        .split(['[', '='])
        .next()
        .unwrap_or_default()
        .trim();
    target == krate
        || target
            .strip_prefix(krate)
            .is_some_and(|rest| rest.starts_with("::"))
}

/// The subscriber for `settings`, writing to `writer`, with nbidle's limit
/// on lines a client can repeat at will.
pub(crate) fn subscriber<W>(settings: &Settings, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // Checked when the settings were made.
    let filter = EnvFilter::builder().parse_lossy(&settings.filter);
    let limit = crate::logsafe::LimitRepeats::default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match settings.format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .finish()
                .with(limit),
        ),
        LogFormat::Text => Box::new(builder.with_ansi(settings.colour).finish().with(limit)),
    }
}

/// Installs the log on stderr for the whole process (once).
pub fn init(settings: &Settings) -> Result<(), tracing::subscriber::SetGlobalDefaultError> {
    tracing::subscriber::set_global_default(subscriber(settings, std::io::stderr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `settings` write for one line of each kind the server makes.
    fn lines(settings: &Settings) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = subscriber(settings, move || out.clone());
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!(target: "warp::filters::trace", "request", method = "GET", path = "/metrics");
            let _in = span.enter();
            tracing::info!(target: "warp::filters::trace", "processing request");
            // (warp's own warnings are rate-limited process-wide.)
            tracing::warn!(target: "hyper_util::client::legacy", "connection refused");
            tracing::debug!(target: "hyper_util::client::legacy::pool", "pooling idle connection");
            tracing::debug!(target: "nbidle::exporter", notebooks = 3, "exporter round");
            tracing::info!(target: "nbidle::backend::local", notebook = "local/demo", "notebook stopping");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text
    }

    fn settings(level: Option<&str>, format: Option<&str>) -> Settings {
        Settings::new(level, format, None, false).unwrap()
    }

    #[test]
    fn levels_more_verbose_compare_greater() {
        assert!(LevelFilter::DEBUG > LevelFilter::WARN);
        assert!(LevelFilter::ERROR < LevelFilter::WARN);
    }

    #[test]
    fn info_keeps_the_http_stack_at_warn() {
        for level in [None, Some("info"), Some("INFO"), Some(" info ")] {
            let log = lines(&settings(level, None));
            assert!(log.contains("notebook stopping"), "{level:?}: {log}");
            assert!(log.contains("connection refused"), "{level:?}: {log}");
            assert!(!log.contains("processing request"), "{level:?}: {log}");
            assert!(!log.contains("exporter round"), "{level:?}: {log}");
        }
        assert_eq!(
            filter_directives(Some("info")).unwrap(),
            "info,warp=warn,hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,tower=warn,rustls=warn,kube_client::client::builder=off"
        );
        // Named, the crate's lines are the operator's to choose.
        assert_eq!(
            filter_directives(Some("warn,kube_client=debug")).unwrap(),
            "warn,kube_client=debug"
        );
    }

    #[test]
    fn debug_for_one_module_or_all_of_nbidle_leaves_the_stack_quiet() {
        for level in ["info,nbidle::exporter=debug", "debug"] {
            let log = lines(&settings(Some(level), None));
            assert!(log.contains("exporter round"), "{level}: {log}");
            assert!(!log.contains("pooling idle"), "{level}: {log}");
            assert!(!log.contains("processing request"), "{level}: {log}");
        }
    }

    #[test]
    fn a_crate_named_by_the_operator_gets_the_operators_level() {
        let log = lines(&settings(Some("info,warp=info"), None));
        assert!(log.contains("processing request"), "{log}");
        assert!(!log.contains("pooling idle"), "{log}");
        let log = lines(&settings(Some("debug,hyper_util::client=debug"), None));
        assert!(log.contains("pooling idle"), "{log}");
        assert!(!log.contains("processing request"), "{log}");
        // Named without a level: everything from it.
        let log = lines(&settings(Some("info,warp"), None));
        assert!(log.contains("processing request"), "{log}");
        // Not a module of warp.
        assert!(!names("warpish=info", "warp"));
        assert!(names("warp::filters::trace[request]=info", "warp"));
    }

    #[test]
    fn a_level_no_more_verbose_than_warn_adds_only_the_silenced_targets() {
        for level in ["warn", "error", "off", "nbidle=debug"] {
            assert_eq!(
                filter_directives(Some(level)).unwrap(),
                format!("{level},kube_client::client::builder=off")
            );
        }
        let log = lines(&settings(Some("error"), None));
        assert!(log.is_empty(), "{log}");
    }

    #[test]
    fn json_lines_are_one_object_each_with_timestamp_level_target_fields() {
        let log = lines(&settings(None, Some("json")));
        let objects: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(objects.len(), 2, "{log}");
        let stop = &objects[1];
        assert_eq!(objects[0]["level"], "WARN");
        assert_eq!(stop["level"], "INFO");
        assert_eq!(stop["target"], "nbidle::backend::local");
        assert_eq!(stop["fields"]["message"], "notebook stopping");
        assert_eq!(stop["fields"]["notebook"], "local/demo");
        let ts = stop["timestamp"].as_str().unwrap();
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{ts}: {e}"));
        // The request's span, once warp is named: the innermost only.
        let log = lines(&settings(Some("info,warp=info"), Some("json")));
        let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        assert_eq!(first["fields"]["message"], "processing request", "{log}");
        assert_eq!(first["span"]["path"], "/metrics", "{log}");
        assert_eq!(first["span"]["name"], "request", "{log}");
        assert!(first.get("spans").is_none(), "{log}");
    }

    #[test]
    fn colour_only_in_text_on_a_terminal() {
        assert!(lines(&Settings::new(None, None, None, true).unwrap()).contains('\x1b'));
        assert!(!lines(&settings(None, None)).contains('\x1b'));
        let json = Settings::new(None, Some("json"), None, true).unwrap();
        assert!(!json.colour);
        assert!(!lines(&json).contains('\x1b'));
        assert!(no_color(Some("1".into())));
        assert!(!no_color(Some("".into())));
        assert!(!no_color(None));
    }

    #[test]
    fn the_flag_wins_over_the_variable() {
        let s = Settings::new(None, Some("json"), Some(LogFormat::Text), false).unwrap();
        assert_eq!(s.format, LogFormat::Text);
        let s = Settings::new(None, Some("bogus"), Some(LogFormat::Json), false).unwrap();
        assert_eq!(s.format, LogFormat::Json);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (level, format, var) in [
            (None, Some("yaml"), FORMAT_VAR),
            (None, Some("JSON"), FORMAT_VAR),
            (Some("info,warp=loud"), None, LEVEL_VAR),
            (Some("nbidle=verbose"), None, LEVEL_VAR),
        ] {
            let e = Settings::new(level, format, None, false).unwrap_err();
            assert!(e.to_string().contains(var), "{level:?} {format:?}: {e}");
        }
    }
}
