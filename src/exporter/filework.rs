//! File work: saving, creating, renaming, deleting and uploading files
//! through Jupyter's contents API, read from the server's own `/metrics`.
//!
//! jupyter_server (1.x and 2.x alike) counts every request it answers in
//! `http_request_duration_seconds_count{handler, method, status_code}`.
//! Contents writes are the requests to a handler of
//! `jupyter_server.services.contents.handlers` (`ContentsHandler`,
//! `CheckpointsHandler`, …) with any method but `GET`, `HEAD` or
//! `OPTIONS`: a save or an upload is a `PUT`, a new file a `POST`, a
//! rename a `PATCH`. Reads are `GET`s, and an open JupyterLab tab's polling
//! is only `GET`s and `PUT`s to other handlers (its workspace), so the
//! filter is on the handler and the method both. Only answers with a 2xx
//! `status_code` count: a 403 to a request without the token (anyone who
//! can reach the port) or a 404 changed nothing. The JupyterLab
//! extension's "Save and keep working" (`POST nbidle/activity`, handler
//! `nbidle_jupyterlab.handlers.ActivityHandler`) counts the same way, so
//! a person who answers the warning is seen at the next probe.
//!
//! The count is the server's since its start. The exporter remembers it per
//! notebook life ([`activity`]): a count that changed since the last probe
//! is file work at this probe. The body is hostile input like every other
//! answer: it is streamed line by line within `exporter.max_response_bytes`
//! and only the sum is kept; a line longer than any sample of that family
//! can be is skipped unread.
//!
//! When `/metrics` cannot be read (an HTTP error such as a proxy's 403 or
//! 404, a body over the limit, a timeout) or has no request histogram at all
//! (jupyter_server 2.x with `ServerApp.record_http_request_metrics=False`),
//! file work is unseen: the probe still succeeds with its kernels and
//! terminals, and [`FileWork::Unseen`] says why.

use std::fmt::Write as _;

use super::bounded::{Detail, ProbeFailure, Reason};
use super::exposition::escape;
use super::{Exporter, NotebookFacts};
use crate::backend::JupyterEndpoint;
use crate::notebook::NotebookId;

/// The server's Prometheus endpoint, under its base URL.
pub(crate) const PATH: &str = "metrics";

/// The samples that count requests, one per (handler, method, status).
const SAMPLE_PREFIX: &[u8] = b"http_request_duration_seconds_count{";
/// The module of jupyter_server's contents handlers, as in `handler`.
const CONTENTS_HANDLERS: &[u8] = b"jupyter_server.services.contents.handlers.";
/// The JupyterLab extension's "Save and keep working" (`POST nbidle/activity`).
const ACTIVITY_HANDLER: &[u8] = b"nbidle_jupyterlab.handlers.ActivityHandler";
/// Methods that only read.
const READS: [&[u8]; 3] = [b"GET", b"HEAD", b"OPTIONS"];
/// Longer lines are skipped: a sample of the family read here, with its
/// three labels, is about 150 bytes.
const MAX_LINE: usize = 4096;

/// What one probe read of a server's file work.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FileWork {
    /// Contents writes the server has answered since it started.
    Writes(f64),
    /// File work cannot be seen at this probe.
    Unseen(Unseen),
}

impl FileWork {
    pub(crate) fn writes(&self) -> Option<f64> {
        match self {
            FileWork::Writes(n) => Some(*n),
            FileWork::Unseen(_) => None,
        }
    }

    pub(crate) fn unseen(&self) -> Option<&Unseen> {
        match self {
            FileWork::Writes(_) => None,
            FileWork::Unseen(u) => Some(u),
        }
    }
}

/// Why file work is unseen: the `reason` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unseen {
    /// `/metrics` was not read: timeout, connect, http_status, request or
    /// too_large, as for the probe's other requests.
    Failed(ProbeFailure),
    /// `/metrics` answered without a single request sample, although the
    /// probe's own requests were answered before it: the server does not
    /// record them (or it is not Jupyter's `/metrics`).
    NotRecorded,
}

impl Unseen {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Unseen::Failed(f) => f.reason.as_str(),
            Unseen::NotRecorded => "not_recorded",
        }
    }
}

impl std::fmt::Display for Unseen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unseen::Failed(failure) => failure.fmt(f),
            Unseen::NotRecorded => write!(f, "{PATH}: no http_request_duration_seconds samples"),
        }
    }
}

/// File work at a probe taken at `at` (Unix seconds): the count read now
/// differs from the last one read in this life and is not zero. A count
/// seen for the first time in a life counts when it is not zero (nbidle
/// restarted and lost the last one: a stop would be the worse mistake);
/// one lower than before is a server restart, and any write since counts.
pub(crate) fn activity(last: Option<f64>, now: Option<f64>, at: f64) -> Option<f64> {
    let now = now?;
    (now > 0.0 && now != last.unwrap_or(0.0)).then_some(at)
}

/// What a notebook's life remembers of its file work being unseen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UnseenNote {
    /// The reason at the last probe that tried, if file work was unseen.
    pub(crate) reason: Option<&'static str>,
    /// Whether a line said so.
    pub(crate) logged: bool,
}

/// Logs a notebook's file work unseen for the same reason at two probes in
/// a row, and seen again after that: one line per change, not per round.
/// One probe is not enough: a server that exits while it is probed (its
/// stop) fails the `/metrics` read it was answering, and that is no news
/// for an operator. `last`: what the last probe that tried left; `now`:
/// this probe's, when it got as far. Returns what to remember.
pub(crate) fn note(id: &NotebookId, last: UnseenNote, now: Option<&FileWork>) -> UnseenNote {
    let Some(now) = now else {
        return last;
    };
    match now.unseen() {
        Some(u) => {
            let reason = u.as_str();
            let again = last.reason == Some(reason);
            if again && !last.logged {
                tracing::warn!(notebook = %id, reason, failure = %u, "exporter: file work unseen: saving files does not count as activity");
            }
            UnseenNote {
                reason: Some(reason),
                logged: again,
            }
        }
        None => {
            if last.logged {
                tracing::info!(notebook = %id, "exporter: file work seen again");
            }
            UnseenNote::default()
        }
    }
}

impl Exporter {
    /// The server's file work; read after the probe's other requests were
    /// answered, so a server that records requests has some to show.
    pub(crate) async fn file_work(&self, ep: &JupyterEndpoint) -> FileWork {
        let read = async {
            let resp = self.send(ep, PATH, "").await?;
            read(resp, self.cfg.max_response_bytes).await
        };
        match read.await {
            Ok(tally) => tally.finish(),
            Err(f) => FileWork::Unseen(Unseen::Failed(f)),
        }
    }
}

/// Streams `resp`'s body through a [`Tally`], at most `max_bytes`.
async fn read(mut resp: reqwest::Response, max_bytes: u64) -> Result<Tally, ProbeFailure> {
    let too_large = || ProbeFailure::new(Reason::TooLarge, PATH, Detail::Limit(max_bytes));
    if resp.content_length().is_some_and(|n| n > max_bytes) {
        return Err(too_large());
    }
    let mut tally = Tally::default();
    let mut read = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ProbeFailure::transport(PATH, &e))?
    {
        read += chunk.len() as u64;
        if read > max_bytes {
            return Err(too_large());
        }
        tally.feed(&chunk);
    }
    Ok(tally)
}

/// The sum of contents-write samples in a text exposition fed in pieces;
/// holds at most one line of it.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// The start of a line whose end has not come yet.
    line: Vec<u8>,
    /// The current line passed [`MAX_LINE`]: skipped to its end.
    overlong: bool,
    /// A request sample of any handler was read.
    requests: bool,
    writes: f64,
}

impl Tally {
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(i) = memchr::memchr(b'\n', chunk) {
            let (head, rest) = (&chunk[..i], &chunk[i + 1..]);
            if self.line.is_empty() && !self.overlong {
                // A whole line in this chunk: read in place.
                if head.len() <= MAX_LINE {
                    self.take(head);
                }
            } else {
                self.push(head);
                if !self.overlong {
                    let line = std::mem::take(&mut self.line);
                    self.take(&line);
                    self.line = line;
                }
                self.line.clear();
                self.overlong = false;
            }
            chunk = rest;
        }
        self.push(chunk);
    }

    fn push(&mut self, part: &[u8]) {
        if self.overlong || part.is_empty() {
            return;
        }
        if self.line.len() + part.len() > MAX_LINE {
            self.overlong = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn take(&mut self, line: &[u8]) {
        let Some((write, n)) = sample(line) else {
            return;
        };
        self.requests = true;
        if write {
            self.writes += n;
        }
    }

    /// The count, once the whole body was fed.
    pub(crate) fn finish(mut self) -> FileWork {
        if !self.overlong {
            let line = std::mem::take(&mut self.line);
            self.take(&line);
        }
        match self.requests {
            true => FileWork::Writes(self.writes),
            false => FileWork::Unseen(Unseen::NotRecorded),
        }
    }
}

/// One `http_request_duration_seconds_count` sample: whether it counts
/// contents writes the server carried out (2xx), and its value. Anything else, or a malformed line, is
/// `None`.
fn sample(line: &[u8]) -> Option<(bool, f64)> {
    let mut rest = line.strip_prefix(SAMPLE_PREFIX)?;
    let (mut handler, mut method, mut status) = (None, None, None);
    loop {
        rest = rest.trim_ascii_start();
        if let Some(r) = rest.strip_prefix(b"}") {
            rest = r;
            break;
        }
        let eq = rest.iter().position(|&b| b == b'=')?;
        let name = rest[..eq].trim_ascii();
        let (value, r) = quoted(rest[eq + 1..].trim_ascii_start())?;
        match name {
            b"handler" => handler = Some(value),
            b"method" => method = Some(value),
            b"status_code" => status = Some(value),
            _ => {}
        }
        rest = r.trim_ascii_start();
        rest = rest.strip_prefix(b",").unwrap_or(rest);
    }
    let value = rest
        .trim_ascii()
        .split(|b| b.is_ascii_whitespace())
        .next()?;
    let n: f64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    if !(n.is_finite() && n >= 0.0) {
        return None;
    }
    // Only requests the server carried out: a refused one (403 without
    // the token, 404) is anyone on the network, not work.
    let done =
        status.is_some_and(|s| s.len() == 3 && s[0] == b'2' && s.iter().all(u8::is_ascii_digit));
    let write = match (handler, method) {
        _ if !done => false,
        (Some(h), Some(m)) if h.starts_with(CONTENTS_HANDLERS) => !READS.contains(&m),
        (Some(h), Some(m)) => h == ACTIVITY_HANDLER && m == b"POST",
        _ => false,
    };
    Some((write, n))
}

/// A label value in quotes, as written (escapes kept), and what follows it.
fn quoted(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = s.strip_prefix(b"\"")?;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some((&s[..i], &s[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

/// `nbidle_notebook_file_writes_total` and `nbidle_notebook_file_work_unseen`
/// for the notebooks whose last probe succeeded.
pub(crate) fn render(out: &mut String, facts: &[NotebookFacts]) {
    let labels = |f: &NotebookFacts| {
        format!(
            "namespace=\"{}\",notebook=\"{}\"",
            escape(&f.state.id.namespace),
            escape(&f.state.id.name)
        )
    };
    let work = || {
        facts.iter().filter_map(|f| {
            let p = f.probe.as_ref().filter(|p| p.ok)?;
            Some((f, p.file_work.as_ref()?))
        })
    };
    let name = "nbidle_notebook_file_writes_total";
    let _ = writeln!(
        out,
        "# HELP {name} Contents API writes (saves, uploads, new files, renames, deletions, checkpoints) the notebook's Jupyter server answered since it started, from its /metrics; a rise is activity. Absent while file work is unseen.\n# TYPE {name} counter"
    );
    for (f, n) in work().filter_map(|(f, w)| Some((f, w.writes()?))) {
        let _ = writeln!(out, "{name}{{{}}} {n}", labels(f));
    }
    let name = "nbidle_notebook_file_work_unseen";
    let _ = writeln!(
        out,
        "# HELP {name} 1, with the reason, while the notebook's Jupyter /metrics cannot be read (timeout, connect, http_status, request, too_large) or records no requests (not_recorded): saving files then does not count as activity.\n# TYPE {name} gauge"
    );
    for (f, u) in work().filter_map(|(f, w)| Some((f, w.unseen()?))) {
        let _ = writeln!(out, "{name}{{{},reason=\"{}\"}} 1", labels(f), u.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What jupyter_server 2.x answers after a save, a listing, a status
    /// read and a kernels probe (trimmed to the samples that matter).
    const EXPOSITION: &str = r#"# HELP http_request_duration_seconds duration in seconds for all HTTP requests
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{handler="jupyter_server.services.contents.handlers.ContentsHandler",le="0.005",method="PUT",status_code="201"} 1.0
http_request_duration_seconds_count{handler="jupyter_server.services.api.handlers.APIStatusHandler",method="GET",status_code="200"} 7.0
http_request_duration_seconds_sum{handler="jupyter_server.services.contents.handlers.ContentsHandler",method="PUT",status_code="201"} 0.003
http_request_duration_seconds_count{handler="jupyter_server.services.contents.handlers.ContentsHandler",method="PUT",status_code="201"} 1.0
http_request_duration_seconds_count{handler="jupyter_server.services.contents.handlers.ContentsHandler",method="PUT",status_code="200"} 5.0
http_request_duration_seconds_count{handler="jupyter_server.services.contents.handlers.ContentsHandler",method="GET",status_code="200"} 40.0
http_request_duration_seconds_count{handler="jupyter_server.services.contents.handlers.CheckpointsHandler",method="POST",status_code="201"} 2.0
http_request_duration_seconds_count{handler="jupyter_server.services.contents.handlers.CheckpointsHandler",method="GET",status_code="200"} 9.0
http_request_duration_seconds_count{handler="jupyterlab_server.workspaces_handler.WorkspacesHandler",method="PUT",status_code="204"} 30.0
http_request_duration_seconds_count{handler="jupyter_server.services.kernels.handlers.MainKernelHandler",method="GET",status_code="200"} 12.0
"#;

    fn tally(pieces: &[&[u8]]) -> FileWork {
        let mut t = Tally::default();
        pieces.iter().for_each(|p| t.feed(p));
        t.finish()
    }

    #[test]
    fn contents_writes_are_summed_and_reads_and_other_handlers_left_out() {
        // PUT 201 + PUT 200 + checkpoint POST; not the GETs, not the
        // workspace PUTs an idle tab makes, not the bucket or sum lines.
        assert_eq!(tally(&[EXPOSITION.as_bytes()]), FileWork::Writes(8.0));
    }

    #[test]
    fn refused_requests_are_not_file_work() {
        let c = "http_request_duration_seconds_count{handler=\"jupyter_server.services.contents.handlers.ContentsHandler\"";
        let a = "http_request_duration_seconds_count{handler=\"nbidle_jupyterlab.handlers.ActivityHandler\"";
        let body = format!(
            "{EXPOSITION}{c},method=\"PUT\",status_code=\"403\"}} 50.0\n\
             {c},method=\"PUT\",status_code=\"404\"}} 7.0\n\
             {c},method=\"DELETE\",status_code=\"500\"}} 2.0\n\
             {c},method=\"PUT\"}} 9.0\n\
             {a},method=\"POST\",status_code=\"403\"}} 20.0\n\
             {a},method=\"POST\",status_code=\"404\"}} 3.0\n"
        );
        // Only EXPOSITION's 2xx writes: a stranger's 403s keep nothing alive.
        assert_eq!(tally(&[body.as_bytes()]), FileWork::Writes(8.0));
    }

    #[test]
    fn save_and_keep_working_in_jupyterlab_is_file_work() {
        let h = "http_request_duration_seconds_count{handler=\"nbidle_jupyterlab.handlers.";
        let body = format!(
            "{EXPOSITION}{h}ActivityHandler\",method=\"POST\",status_code=\"204\"}} 2.0\n\
             {h}ActivityHandler\",method=\"GET\",status_code=\"405\"}} 4.0\n\
             {h}StateHandler\",method=\"PUT\",status_code=\"200\"}} 30.0\n\
             {h}KeepHandler\",method=\"POST\",status_code=\"202\"}} 1.0\n"
        );
        // The two POSTs of "Save and keep working"; not nbidle's own PUTs
        // of the state, nor a Keep running request.
        assert_eq!(tally(&[body.as_bytes()]), FileWork::Writes(10.0));
    }

    #[test]
    fn the_sum_does_not_depend_on_how_the_body_is_cut() {
        let body = EXPOSITION.as_bytes();
        for size in [1, 2, 7, 64, 150, 151, 4096] {
            let pieces: Vec<&[u8]> = body.chunks(size).collect();
            assert_eq!(tally(&pieces), FileWork::Writes(8.0), "pieces of {size}");
        }
        // No newline at the end.
        let last = "http_request_duration_seconds_count{handler=\"jupyter_server.services.contents.handlers.ContentsHandler\",method=\"DELETE\",status_code=\"204\"} 3";
        assert_eq!(tally(&[last.as_bytes()]), FileWork::Writes(3.0));
    }

    #[test]
    fn no_request_samples_is_not_recorded_and_no_writes_is_zero() {
        let only_kernels = EXPOSITION
            .lines()
            .filter(|l| !l.contains("contents"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(tally(&[only_kernels.as_bytes()]), FileWork::Writes(0.0));
        // 2.x with record_http_request_metrics=False: the family is
        // declared, no sample of it.
        let declared = "# HELP http_request_duration_seconds duration\n# TYPE http_request_duration_seconds histogram\nprocess_open_fds 12.0\n";
        assert_eq!(
            tally(&[declared.as_bytes()]),
            FileWork::Unseen(Unseen::NotRecorded)
        );
        assert_eq!(
            tally(&[b"<html>login</html>"]),
            FileWork::Unseen(Unseen::NotRecorded)
        );
    }

    #[test]
    fn label_order_spacing_and_escapes_are_read_as_the_format_allows() {
        let lines = [
            // Labels in another order, spaces, a timestamp, a trailing comma.
            "http_request_duration_seconds_count{ method = \"PATCH\" , status_code=\"200\", handler=\"jupyter_server.services.contents.handlers.ContentsHandler\", } 2 1700000000000",
            // An escaped quote in a value: not a contents handler.
            "http_request_duration_seconds_count{handler=\"x\\\"jupyter_server.services.contents.handlers.ContentsHandler\",method=\"PUT\"} 100",
            // Malformed: counted as nothing.
            "http_request_duration_seconds_count{handler=\"jupyter_server.services.contents.handlers.ContentsHandler\",method=\"PUT\" 50",
            "http_request_duration_seconds_count{handler=\"jupyter_server.services.contents.handlers.ContentsHandler\",method=\"PUT\",status_code=\"201\"} NaN",
            "http_request_duration_seconds_count{handler=\"jupyter_server.services.contents.handlers.ContentsHandler\",method=\"PUT\"} -4",
            "http_request_duration_seconds_count{handler=\"jupyter_server.services.contents.handlers.ContentsHandler\",method=\"HEAD\"} 9",
        ];
        assert_eq!(tally(&[lines.join("\n").as_bytes()]), FileWork::Writes(2.0));
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_next_one_read() {
        let long = format!(
            "http_request_duration_seconds_count{{handler=\"jupyter_server.services.contents.handlers.ContentsHandler\",method=\"PUT\",x=\"{}\"}} 1000\n",
            "y".repeat(MAX_LINE)
        );
        let body = format!("{long}{EXPOSITION}");
        for size in [1000, 5000, body.len()] {
            let pieces: Vec<&[u8]> = body.as_bytes().chunks(size).collect();
            let mut t = Tally::default();
            for p in &pieces {
                t.feed(p);
                assert!(t.line.capacity() <= MAX_LINE * 2, "{}", t.line.capacity());
            }
            assert_eq!(t.finish(), FileWork::Writes(8.0), "pieces of {size}");
        }
    }

    #[test]
    fn unseen_is_logged_at_the_second_probe_in_a_row_and_seen_again_only_then() {
        let id = NotebookId {
            namespace: "local".into(),
            name: "nb".into(),
        };
        let unseen = FileWork::Unseen(Unseen::NotRecorded);
        let seen = FileWork::Writes(0.0);
        let first = note(&id, UnseenNote::default(), Some(&unseen));
        assert_eq!(
            first,
            UnseenNote {
                reason: Some("not_recorded"),
                logged: false
            },
            "one probe (a server stopped while probed) logs nothing"
        );
        assert_eq!(
            note(&id, first, Some(&seen)),
            UnseenNote::default(),
            "seen again: no line said it was unseen, none says it is back"
        );
        let second = note(&id, first, Some(&unseen));
        assert!(second.logged, "two probes in a row: one line");
        assert_eq!(note(&id, second, Some(&unseen)), second, "no more lines");
        assert_eq!(note(&id, second, None), second, "a probe that got nowhere");
        assert_eq!(note(&id, second, Some(&seen)), UnseenNote::default());
    }

    #[test]
    fn a_changed_count_is_activity_at_the_probe() {
        let at = 1000.0;
        for (last, now, active) in [
            (None, None, false),           // unseen
            (Some(3.0), None, false),      // unseen now
            (None, Some(0.0), false),      // no write yet
            (Some(0.0), Some(0.0), false), // still none
            (Some(0.0), Some(1.0), true),  // the first write
            (None, Some(1.0), true),       // first read in this life
            (Some(5.0), Some(5.0), false), // nothing new
            (Some(5.0), Some(6.0), true),  // a save
            (Some(5.0), Some(2.0), true),  // restarted, then two writes
            (Some(5.0), Some(0.0), false), // restarted, nothing since
        ] {
            assert_eq!(
                activity(last, now, at),
                active.then_some(at),
                "{last:?} -> {now:?}"
            );
        }
    }
}
