//! The stopped-notebook page's HTML (maud: compile-time, every value
//! escaped). It works without JavaScript: Start is a plain form; the page
//! that waits for Jupyter refreshes itself, and with JavaScript polls the
//! notebook's `<base>api` and loads JupyterLab once Jupyter itself answers
//! (200 with Jupyter's `{"version": …}`): not on nbidle's own page, nor
//! on another program that took the port, which would send the person
//! round in a loop.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use time::OffsetDateTime;

use super::standin::NbidlePage;
use crate::backend::Person;
pub(super) use crate::notebook::clock;
use crate::notebook::{NotebookState, Status, StopCause, StoppedBy};

const CSS: &str = include_str!("assets/standin.css");
const JS: &str = include_str!("assets/standin.js");
/// Without JavaScript, the waiting page opens the notebook after this long.
pub(super) const REFRESH_SECONDS: u32 = 5;

/// Why a start from the page was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A token was given, not this notebook's.
    WrongToken,
    /// No token was given.
    NoToken,
    /// The form's CSRF token is missing or not this page's.
    Expired,
    /// This client gave too many wrong tokens and must wait.
    TooManyWrong,
}

/// The Start form, as the page shows it.
#[derive(Debug)]
pub(super) struct Form<'a> {
    pub(super) action: String,
    /// `None`: no randomness for a CSRF token; the form is not offered.
    pub(super) csrf: Option<&'a str>,
    /// Where JupyterLab is opened once it answers.
    pub(super) next: String,
    /// The notebook's token, when the URL the page was opened with had it.
    pub(super) token: Option<String>,
    /// The notebook has a token in the config (otherwise no start here).
    pub(super) token_needed: bool,
    pub(super) nbidle_url: String,
    pub(super) refusal: Option<Refusal>,
    /// Signed in to nbidle's page and allowed to start it: the form is
    /// theirs (no token field, their session's CSRF token).
    pub(super) person: Option<Person>,
}

/// "<name> was stopped at 14:02 by NotebookIdle after 30 min without
/// activity; your files are kept."
pub(super) fn sentence(state: &NotebookState) -> String {
    sentence_at(state, OffsetDateTime::now_utc())
}

pub(super) fn sentence_at(state: &NotebookState, now: OffsetDateTime) -> String {
    let name = &state.id.name;
    let at = state
        .stopped_at
        .map(|t| format!(" at {}", clock(t, now)))
        .unwrap_or_default();
    match (state.status, &state.stopped_by) {
        (Status::Failed, _) => {
            let why = state.message.as_deref().unwrap_or("its server ended");
            format!("{name} is not running: {why}. Your files are kept.")
        }
        (Status::Starting, _) => format!("{name} is starting."),
        (_, Some(StopCause::IdleAlert { alertname, .. })) => format!(
            "{name} was stopped{at} by {alertname} {}; your files are kept.",
            crate::notebook::idle_reason(state.idle_after_seconds)
        ),
        (_, Some(StopCause::User { by })) => {
            let how = match by {
                Some(StoppedBy::Page { who }) => format!("from nbidle's page by {who}"),
                Some(StoppedBy::Api { .. }) => "through nbidle's API".into(),
                None => "from nbidle's page or API".into(),
            };
            format!("{name} was stopped{at} {how}; your files are kept.")
        }
        (_, None) => format!("{name} is stopped; your files are kept."),
    }
}

/// nbidle's own page: `server.external_url`, else its listen address, or,
/// when it listens on every address, the host the browser used for the
/// notebook.
pub(super) fn nbidle_url(nbidle: &NbidlePage, host: Option<&str>) -> String {
    if let Some(u) = &nbidle.external_url {
        return u.clone();
    }
    let scheme = if nbidle.https { "https" } else { "http" };
    let ip = nbidle.addr.ip();
    let host = if ip.is_unspecified() {
        host.map(strip_port)
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
            })
            .map(str::to_string)
            .unwrap_or_else(|| "127.0.0.1".into())
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    format!("{scheme}://{host}:{}/", nbidle.addr.port())
}

/// `host` of `host:port` or `[v6]:port`.
fn strip_port(host: &str) -> &str {
    match host.rfind(']') {
        Some(end) => &host[..=end],
        None => host.split(':').next().unwrap_or(host),
    }
}

fn head(title: &str, refresh_to: Option<&str>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="robots" content="noindex";
            title { (title) }
            link rel="icon" href="data:,";
            @if let Some(url) = refresh_to {
                // Only without JavaScript: the script waits as long as it takes.
                noscript { meta http-equiv="refresh" content=(format!("{REFRESH_SECONDS};url={url}")); }
            }
            style { (PreEscaped(CSS)) }
        }
    }
}

fn refusal_text(r: Refusal) -> &'static str {
    match r {
        Refusal::WrongToken => "That is not this notebook's token.",
        Refusal::NoToken => {
            "Starting it here needs this notebook's Jupyter token: the one in the link you \
             opened it with (…?token=…)."
        }
        Refusal::TooManyWrong => {
            "Too many wrong tokens from this address. Wait a little (Retry-After says how \
             long) and try again."
        }
        Refusal::Expired => {
            "The form was out of date (nbidle restarted since it was shown, or it came from \
             elsewhere). Try again."
        }
    }
}

/// The page a browser gets at a stopped notebook's URL.
pub(super) fn stopped(state: &NotebookState, form: &Form<'_>) -> String {
    let name = &state.id.name;
    let title = match state.status {
        Status::Failed => format!("{name} is not running"),
        _ => format!("{name} is stopped"),
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(&title, None))
            body {
                main {
                    h1 { (title) }
                    p.reason { (sentence(state)) }
                    @if let Some(r) = form.refusal {
                        p.refusal role="alert" { (refusal_text(r)) }
                    }
                    @match (&form.person, form.token_needed, form.csrf) {
                        (Some(person), _, _) => {
                            form method="post" action=(form.action) {
                                input type="hidden" name="csrf" value=(person.csrf);
                                input type="hidden" name="next" value=(form.next);
                                button type="submit" { "Start " (name) }
                            }
                            p.small { "You are signed in to nbidle (" (person.who) ")." }
                        }
                        (None, true, Some(csrf)) => {
                            form method="post" action=(form.action) {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="next" value=(form.next);
                                @if let Some(t) = &form.token {
                                    input type="hidden" name="token" value=(t);
                                } @else {
                                    label for="token" { "This notebook's Jupyter token" }
                                    input #token type="password" name="token" required autocomplete="current-password";
                                }
                                button type="submit" { "Start" }
                            }
                        }
                        _ => {
                            p { "It cannot be started from here: nbidle's configuration has no token for it." }
                        }
                    }
                    p.small {
                        "Or start it from "
                        a href=(form.nbidle_url) { "nbidle's page" }
                        ", where you sign in."
                    }
                }
            }
        }
    };
    markup.into_string()
}

/// The page that waits until Jupyter answers (`api`: a URL of the
/// notebook's origin), then opens `next`.
pub(super) fn starting(state: &NotebookState, api: &str, next: &str) -> String {
    let title = format!("Starting {}…", state.id.name);
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(&title, Some(next)))
            body {
                main #waiting data-api=(api) data-next=(next) {
                    h1 { (title) }
                    p { "JupyterLab opens as soon as the notebook answers; your files are as you left them." }
                    p #status role="status" aria-live="polite" {}
                    p.small { a href=(next) { "Open it now" } }
                }
                script { (PreEscaped(JS)) }
            }
        }
    };
    markup.into_string()
}
