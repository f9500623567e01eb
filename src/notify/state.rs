//! What one push says ([`StateBody`], the contract's `PUT nbidle/state`
//! body), when a notebook is worth a push ([`interest`]), and which
//! requests in an answer are taken ([`validate`]).

use serde::{Deserialize, Serialize};

use crate::notebook::NotebookId;

/// The most requests one answer may carry; more is not the contract.
pub(crate) const MAX_REQUESTS: usize = 4;
/// The longest request id taken.
pub(crate) const MAX_ID_CHARS: usize = 64;
/// Results kept for a notebook until a push delivers them.
pub(crate) const MAX_RESULTS: usize = 8;
/// The only kind of request.
pub(crate) const KEEP_RUNNING: &str = "keep_running";

/// Where the notebook is in the run-up to a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    Running,
    Warning,
    Stopping,
}

/// `{"namespace", "name"}`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NotebookRef {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl From<&NotebookId> for NotebookRef {
    fn from(id: &NotebookId) -> Self {
        NotebookRef {
            namespace: id.namespace.clone(),
            name: id.name.clone(),
        }
    }
}

/// The silence that keeps the notebook running.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Kept {
    pub(crate) until: f64,
    pub(crate) by: String,
}

/// What became of one request, delivered in the next push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct KeepResult {
    pub(crate) id: String,
    pub(crate) ok: bool,
    pub(crate) message: String,
}

/// The body of `PUT nbidle/state`; times are Unix seconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StateBody {
    pub(crate) version: u8,
    pub(crate) notebook: NotebookRef,
    pub(crate) phase: Phase,
    pub(crate) sent_at: f64,
    /// The idle deadline while it is near (or a warning fires); `null`
    /// otherwise, which clears what the extension shows.
    pub(crate) stops_at: Option<f64>,
    pub(crate) warn_before_seconds: u64,
    pub(crate) idle_after_seconds: u64,
    pub(crate) warning_since: Option<f64>,
    pub(crate) kept_running: Option<Kept>,
    /// What the dialog's Keep running asks for; `null` without Alertmanager.
    pub(crate) keep_running_for: Option<String>,
    pub(crate) page_url: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) results: Vec<KeepResult>,
}

/// What a notebook shows, from the exporter's deadline and the warning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Shown {
    pub(crate) phase: Phase,
    pub(crate) stops_at: Option<f64>,
    pub(crate) warning_since: Option<f64>,
}

/// What a notebook shows now, if anything: a firing warning, or an idle
/// deadline within `window` (`warn_before` + 2 × `exporter.interval`) and
/// passed by at most `warn_before` (later, with no warning firing, a guard
/// or the rule holds the stop back and there is nothing to count down).
pub(crate) fn interest(
    deadline: Option<f64>,
    warning: Option<(f64, f64)>,
    now: f64,
    window: f64,
    warn_before: f64,
) -> Option<Shown> {
    if let Some((since, warned_stop)) = warning {
        return Some(Shown {
            phase: Phase::Warning,
            stops_at: Some(deadline.unwrap_or(warned_stop)),
            warning_since: Some(since),
        });
    }
    let d = deadline.filter(|d| d - now <= window && now - d <= warn_before)?;
    Some(Shown {
        phase: Phase::Running,
        stops_at: Some(d),
        warning_since: None,
    })
}

/// Whether to push: something shows, results wait, or the last push
/// showed something that is over (one push with `stops_at: null`).
pub(crate) fn worth_a_push(shown: Option<Shown>, has_results: bool, showed_last: bool) -> bool {
    shown.is_some() || has_results || showed_last
}

/// The answer of `PUT nbidle/state`. Unknown fields are ignored; wrong
/// types make the whole answer invalid.
#[derive(Debug, Deserialize)]
pub(crate) struct Answer {
    #[serde(default)]
    pub(crate) requests: Vec<RawRequest>,
}

/// One request as the extension hands it out.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawRequest {
    pub(crate) id: String,
    pub(crate) kind: String,
    #[serde(rename = "for")]
    pub(crate) for_: Option<String>,
}

/// A request refused, with the result to push back (`None` when its id
/// cannot be echoed).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) Option<KeepResult>);

/// A request nbidle carries out: keep running for the offered duration.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct KeepRequest {
    pub(crate) id: String,
    pub(crate) for_: String,
}

fn refuse(id: &str, message: impl Into<String>) -> Refused {
    Refused(Some(KeepResult {
        id: id.to_string(),
        ok: false,
        message: message.into(),
    }))
}

/// Whether `id` is one nbidle echoes: 1 to 64 characters, none of them a
/// control character.
fn id_ok(id: &str) -> bool {
    let n = id.chars().count();
    (1..=MAX_ID_CHARS).contains(&n) && !id.chars().any(char::is_control)
}

/// Takes a request if it is the one offered: kind `keep_running`, `for`
/// equal to `offered` (`None`: Keep running is not offered).
pub(crate) fn validate(r: &RawRequest, offered: Option<&str>) -> Result<KeepRequest, Refused> {
    if !id_ok(&r.id) {
        return Err(Refused(None));
    }
    if r.kind != KEEP_RUNNING {
        return Err(refuse(&r.id, "unknown request kind"));
    }
    let Some(offered) = offered else {
        return Err(refuse(
            &r.id,
            "Keep running needs Alertmanager, which nbidle is not set up with",
        ));
    };
    match r.for_.as_deref() {
        Some(f) if f == offered => Ok(KeepRequest {
            id: r.id.clone(),
            for_: offered.to_string(),
        }),
        _ => Err(refuse(
            &r.id,
            format!("only Keep running for {offered} is offered"),
        )),
    }
}

/// Keep running's offer: 4 h, at most `alertmanager.keep_running_max`,
/// in the words `keep_until` reads back (`"4h"`, `"2h 30m"`).
pub(crate) fn offered_duration(keep_running_max: std::time::Duration) -> String {
    let d = keep_running_max.min(std::time::Duration::from_secs(4 * 3600));
    humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
}
