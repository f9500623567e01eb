//! Values from outside (alert labels, payload errors, request paths) made
//! safe to log, and a limit on lines a client can repeat at will.
//!
//! tracing-subscriber's formatter writes `%value` fields as they are: a line
//! break in an alert label starts a line of the sender's choosing, terminal
//! escapes reach whoever reads the log, and a megabyte label is a megabyte
//! line. (It escapes some terminal controls in the message only, never line
//! breaks; `?value` quotes and escapes a string but keeps all of it.) So
//! every value from outside is logged through [`Escaped`], and every line a
//! request can trigger by itself goes through a `RateLimit`.

use std::fmt::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Characters of escaped text kept from one value; the rest is cut and its
/// size shown.
pub const MAX_CHARS: usize = 256;

/// A value from outside as it is logged: in double quotes, with `"`, `\`
/// and every character that can break a line or drive a terminal escaped,
/// cut after [`MAX_CHARS`] characters, then `…(N bytes)` with the size of
/// the whole value. The same for `%` (Display) and `?` (Debug) fields.
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        let mut w = Capped {
            out: f,
            room: MAX_CHARS,
            bytes: 0,
            cut: false,
        };
        write!(w, "{}", self.0)?;
        let (bytes, cut) = (w.bytes, w.cut);
        f.write_char('"')?;
        if cut {
            write!(f, "…({bytes} bytes)")?;
        }
        Ok(())
    }
}

impl<T: fmt::Display> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Escapes what it is given into `out` until `room` runs out, then only
/// counts bytes: a 3 MB value costs a pass over it, not a 3 MB line.
struct Capped<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    room: usize,
    bytes: usize,
    cut: bool,
}

impl Write for Capped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes += s.len();
        if self.cut {
            return Ok(());
        }
        // Runs of plain characters go out as one slice.
        let mut plain_from = 0;
        for (i, c) in s.char_indices() {
            let escape = Escape::of(c);
            let width = escape.as_ref().map_or(1, Escape::width);
            if width > self.room {
                self.out.write_str(&s[plain_from..i])?;
                self.cut = true;
                return Ok(());
            }
            self.room -= width;
            if let Some(e) = escape {
                self.out.write_str(&s[plain_from..i])?;
                e.write(self.out)?;
                plain_from = i + c.len_utf8();
            }
        }
        self.out.write_str(&s[plain_from..])
    }
}

enum Escape {
    Short(&'static str),
    Hex(u32),
}

impl Escape {
    /// How `c` is written, when not as itself.
    fn of(c: char) -> Option<Escape> {
        Some(match c {
            '\\' => Escape::Short(r"\\"),
            '"' => Escape::Short("\\\""),
            '\n' => Escape::Short(r"\n"),
            '\r' => Escape::Short(r"\r"),
            '\t' => Escape::Short(r"\t"),
            c if is_hazard(c) => Escape::Hex(c as u32),
            _ => return None,
        })
    }

    fn width(&self) -> usize {
        match self {
            Escape::Short(s) => s.len(),
            // \u{…}
            Escape::Hex(n) => 4 + hex_digits(*n),
        }
    }

    fn write(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Escape::Short(s) => out.write_str(s),
            Escape::Hex(n) => write!(out, "\\u{{{n:x}}}"),
        }
    }
}

fn hex_digits(n: u32) -> usize {
    (32 - n.max(1).leading_zeros()).div_ceil(4) as usize
}

/// Characters that end a line, drive a terminal or reorder the text shown.
fn is_hazard(c: char) -> bool {
    matches!(c,
        // C0 controls, DEL, C1 controls (CSI U+009B and NEL U+0085 among them)
        '\0'..='\x1f' | '\x7f'..='\u{9f}'
        // line and paragraph separators
        | '\u{2028}' | '\u{2029}'
        // bidirectional embeddings, overrides and isolates
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Lines of one kind that may be logged per [`WINDOW`].
pub(crate) const LINES_PER_WINDOW: u32 = 10;
pub(crate) const WINDOW: Duration = Duration::from_secs(5);

/// A rejected webhook payload.
pub(crate) static REJECTED_PAYLOAD: RateLimit = RateLimit::new("webhook_payload");
/// An alert naming a notebook the backend does not know.
pub(crate) static UNKNOWN_NOTEBOOK: RateLimit = RateLimit::new("unknown_notebook");
/// A request warp could not read (a body cut off by its client).
pub(crate) static UNHANDLED_REJECTION: RateLimit = RateLimit::new("unhandled_rejection");
/// warp's line for each 4xx answer (refused credentials, bodies, routes).
pub(crate) static HTTP_CLIENT_ERROR: RateLimit = RateLimit::new("http_client_error");
/// warp's line for each 5xx answer (a webhook retry asked for, too busy).
pub(crate) static HTTP_SERVER_ERROR: RateLimit = RateLimit::new("http_server_error");
/// An alert not acted on now because the backend cannot answer (its API
/// server is down): one line per alert would flood the log in an outage.
pub(crate) static BACKEND_UNAVAILABLE: RateLimit = RateLimit::new("backend_unavailable");
/// Every limited kind: the label values of `nbidle_log_lines_suppressed_total`.
pub(crate) static LIMITS: [&RateLimit; 6] = [
    &REJECTED_PAYLOAD,
    &UNKNOWN_NOTEBOOK,
    &BACKEND_UNAVAILABLE,
    &UNHANDLED_REJECTION,
    &HTTP_CLIENT_ERROR,
    &HTTP_SERVER_ERROR,
];

/// At most [`LINES_PER_WINDOW`] lines of one kind per [`WINDOW`]. The lines
/// left out are counted (`nbidle_log_lines_suppressed_total{kind}`), and the
/// next line nbidle logs of that kind says how many there were.
///
/// One per kind for the whole process: the log is the process's.
pub(crate) struct RateLimit {
    kind: &'static str,
    window: Mutex<Window>,
    suppressed_total: AtomicU64,
}

struct Window {
    started: Option<Instant>,
    logged: u32,
    /// Left out since the last line logged.
    suppressed: u64,
}

/// A line that may be logged.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// Lines of this kind left out since the previous one, when any: log it
    /// as a field (tracing leaves out a `None` field).
    pub(crate) suppressed: Option<u64>,
}

impl RateLimit {
    pub(crate) const fn new(kind: &'static str) -> Self {
        RateLimit {
            kind,
            window: Mutex::new(Window {
                started: None,
                logged: 0,
                suppressed: 0,
            }),
            suppressed_total: AtomicU64::new(0),
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        self.kind
    }

    /// Lines left out since the process started.
    pub(crate) fn suppressed_total(&self) -> u64 {
        self.suppressed_total.load(Ordering::Relaxed)
    }

    /// `Some` when this line may be logged; `None` when it is left out (and
    /// counted).
    pub(crate) fn admit(&self) -> Option<Admitted> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<Admitted> {
        // A panic elsewhere cannot leave the counts inconsistent.
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.started.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            w.started = Some(now);
            w.logged = 0;
        }
        if w.logged < LINES_PER_WINDOW {
            w.logged += 1;
            let n = std::mem::take(&mut w.suppressed);
            Some(Admitted {
                suppressed: (n > 0).then_some(n),
            })
        } else {
            w.suppressed += 1;
            self.suppressed_total.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// warp logs a line for every answer of 4xx or 5xx, and a client can make
/// any number of them (wrong token, oversized body, unknown route): this
/// layer lets through [`LINES_PER_WINDOW`] of each per [`WINDOW`]. nbidle's
/// own lines for these requests carry the detail and report what they
/// left out; warp's left-out lines are only counted.
pub(crate) struct LimitRepeats {
    client_errors: &'static RateLimit,
    server_errors: &'static RateLimit,
}

impl Default for LimitRepeats {
    fn default() -> Self {
        LimitRepeats {
            client_errors: &HTTP_CLIENT_ERROR,
            server_errors: &HTTP_SERVER_ERROR,
        }
    }
}

/// The target of warp's per-request lines (`warp::trace::request()`).
const WARP_TRACE: &str = "warp::filters::trace";

impl<S: Subscriber> Layer<S> for LimitRepeats {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if meta.target() != WARP_TRACE {
            return true;
        }
        let limit = match *meta.level() {
            Level::WARN => self.client_errors,
            Level::ERROR => self.server_errors,
            _ => return true,
        };
        limit.admit().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::io;
    use std::sync::Arc;
    use tracing_subscriber::layer::SubscriberExt;

    fn esc(s: &str) -> String {
        Escaped(s).to_string()
    }

    #[test]
    fn control_characters_are_escaped_and_the_value_quoted() {
        assert_eq!(esc("local/demo"), r#""local/demo""#);
        assert_eq!(esc("a\r\nINFO b"), r#""a\r\nINFO b""#);
        assert_eq!(esc("\x1b[31mred\x1b[0m"), r#""\u{1b}[31mred\u{1b}[0m""#);
        assert_eq!(esc("q\"uote\\"), r#""q\"uote\\""#);
        assert_eq!(
            esc("\0\t\x7f\u{85}\u{9b}"),
            r#""\u{0}\t\u{7f}\u{85}\u{9b}""#
        );
        assert_eq!(
            esc("\u{2028}\u{2029}\u{202e}\u{2066}"),
            r#""\u{2028}\u{2029}\u{202e}\u{2066}""#
        );
        // Printable text outside ASCII is kept.
        assert_eq!(esc("büro-ノート"), r#""büro-ノート""#);
        assert_eq!(format!("{:?}", Escaped("a\nb")), r#""a\nb""#);
    }

    #[test]
    fn long_values_are_cut_with_their_size() {
        let big = "x".repeat(3 * 1024 * 1024);
        let s = esc(&big);
        assert_eq!(
            s,
            format!("\"{}\"…({} bytes)", "x".repeat(MAX_CHARS), big.len())
        );
        // The cut counts escaped characters, and never splits an escape.
        let s = esc(&"\n".repeat(1000));
        assert_eq!(
            s,
            format!("\"{}\"…(1000 bytes)", r"\n".repeat(MAX_CHARS / 2))
        );
        let s = esc(&format!("{}\x1b", "y".repeat(MAX_CHARS - 2)));
        assert_eq!(
            s,
            format!(
                "\"{}\"…({} bytes)",
                "y".repeat(MAX_CHARS - 2),
                MAX_CHARS - 1
            )
        );
        // Exactly the cap is not cut.
        let s = esc(&"z".repeat(MAX_CHARS));
        assert_eq!(s, format!("\"{}\"", "z".repeat(MAX_CHARS)));
    }

    #[test]
    fn any_display_value_is_escaped_across_its_pieces() {
        let id = crate::notebook::NotebookId::new("ns\n", "nb\x1b");
        assert_eq!(Escaped(&id).to_string(), r#""ns\n/nb\u{1b}""#);
    }

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

    /// What nbidle's log formatter (as main.rs sets it up) writes for `f`.
    fn logged(ansi: bool, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_formatter_alone_passes_line_breaks_and_escapes_through() {
        let raw = "a\r\nINFO forged \x1b[31m";
        for ansi in [false, true] {
            let plain = logged(ansi, || tracing::warn!(v = %raw, "m"));
            assert!(plain.contains(raw), "ansi={ansi}: {plain:?}");
            let safe = logged(ansi, || tracing::warn!(v = %Escaped(raw), "m"));
            assert_eq!(safe.lines().count(), 1, "{safe:?}");
            assert!(
                !safe.contains('\r') && !safe.contains("\x1b[31m"),
                "{safe:?}"
            );
            assert!(
                safe.contains(r#""a\r\nINFO forged \u{1b}[31m""#),
                "{safe:?}"
            );
        }
    }

    #[test]
    fn the_rate_limit_counts_what_it_leaves_out_and_reports_it_next() {
        let limit = RateLimit::new("test");
        let t0 = Instant::now();
        for i in 0..LINES_PER_WINDOW {
            assert_eq!(
                limit.admit_at(t0),
                Some(Admitted { suppressed: None }),
                "line {i}"
            );
        }
        for _ in 0..25 {
            assert_eq!(limit.admit_at(t0 + WINDOW / 2), None);
        }
        assert_eq!(limit.suppressed_total(), 25);
        // The next window's first line reports them, once.
        assert_eq!(
            limit.admit_at(t0 + WINDOW),
            Some(Admitted {
                suppressed: Some(25)
            })
        );
        assert_eq!(
            limit.admit_at(t0 + WINDOW),
            Some(Admitted { suppressed: None })
        );
        assert_eq!(limit.suppressed_total(), 25);
    }

    #[test]
    fn warps_lines_for_each_refused_request_are_limited() {
        let limits = LimitRepeats {
            client_errors: Box::leak(Box::new(RateLimit::new("client"))),
            server_errors: Box::leak(Box::new(RateLimit::new("server"))),
        };
        let (client, server) = (limits.client_errors, limits.server_errors);
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || out.clone())
            .finish()
            .with(limits);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..100 {
                tracing::warn!(target: "warp::filters::trace", status = 401, "unable to serve request (client error)");
                tracing::error!(target: "warp::filters::trace", status = 503, "unable to process request (internal error)");
                tracing::info!(target: "warp::filters::trace", status = 200, "finished processing with success");
                tracing::warn!("an nbidle line");
            }
        });
        let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let n = LINES_PER_WINDOW as usize;
        assert_eq!(log.matches("client error").count(), n);
        assert_eq!(log.matches("internal error").count(), n);
        assert_eq!(log.matches("with success").count(), 100);
        assert_eq!(log.matches("an nbidle line").count(), 100);
        assert_eq!(client.suppressed_total(), 100 - n as u64);
        assert_eq!(server.suppressed_total(), 100 - n as u64);
    }

    #[test]
    fn every_limited_kind_is_a_metric_series_that_follows_its_count() {
        let metrics = Metrics::new();
        for l in LIMITS {
            let series = format!(
                "nbidle_log_lines_suppressed_total{{kind=\"{}\"}} {}",
                l.kind(),
                l.suppressed_total()
            );
            assert!(metrics.render().contains(&series), "{series} missing");
        }
        // The process-wide count goes up; every Metrics shows it.
        let before = REJECTED_PAYLOAD.suppressed_total();
        while REJECTED_PAYLOAD.admit().is_some() {}
        let after = REJECTED_PAYLOAD.suppressed_total();
        assert!(after > before);
        let series =
            format!("nbidle_log_lines_suppressed_total{{kind=\"webhook_payload\"}} {after}");
        assert!(metrics.render().contains(&series), "{series} missing");
        assert!(Metrics::new().render().contains(&series));
    }
}
