//! The page's HTML, written with `maud`: checked at compile time and
//! escaped by default, so a hostile notebook name, owner or message is
//! text, never markup. Links are made only from `http(s)` URLs.

use maud::{html, Markup, DOCTYPE};

use super::assets;
use super::session::{Current, Flash};
use super::view::{minutes, ListView, Row};
use crate::notebook::{Status, Timestamp};

/// What the page may offer besides Stop and Start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Capabilities {
    /// Keep running (Alertmanager silences) is configured.
    pub(crate) keep_running: bool,
}

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · nbidle" }
                // No icon: without it every load asks for /favicon.ico, a 404.
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(assets::CSS_URL);
                script defer src=(assets::JS_URL) {}
            }
            body { (body) }
        }
    }
}

fn flash(f: &Option<Flash>) -> Markup {
    html! {
        @if let Some(f) = f {
            p.flash.ok[f.ok].err[!f.ok] role="status" { (f.text) }
        }
    }
}

/// The sign-in form; `refusal`: why the last attempt failed.
pub(crate) fn sign_in(refusal: Option<&str>, trusted_header: bool) -> Markup {
    layout(
        "Sign in",
        html! {
            main.narrow {
                h1 { "Sign in to nbidle" }
                p { "Enter an nbidle API token. A token for some namespaces shows and acts on those namespaces' notebooks only." }
                @if trusted_header {
                    p { "Or open this page through your organisation's sign-in proxy." }
                }
                @if let Some(r) = refusal {
                    p.flash.err role="alert" id="sign-in-error" { (r) }
                }
                form method="post" action="/sign-in" {
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="current-password"
                        required autofocus aria-describedby=[refusal.map(|_| "sign-in-error")];
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// An error page: 403s, 429s, a backend that is not ready.
pub(crate) fn error(title: &str, message: &str) -> Markup {
    layout(
        title,
        html! {
            main.narrow {
                h1 { (title) }
                p role="alert" { (message) }
                p { a href="/" { "Back to the notebooks" } }
            }
        },
    )
}

/// "08:00 UTC" today, "1 Jan 08:00 UTC" otherwise; the whole time in
/// `datetime` and `title`.
fn time(t: Timestamp) -> Markup {
    let s = t.to_string();
    let now = time::OffsetDateTime::now_utc();
    let u = t.0.to_offset(time::UtcOffset::UTC);
    let hm = format!("{:02}:{:02} UTC", u.hour(), u.minute());
    let short = if u.date() == now.date() {
        hm
    } else {
        format!("{} {hm}", crate::notebook::day_month(u.date(), now.year()))
    };
    html! { time datetime=(s) title=(s) { (short) } }
}

fn unix_time(secs: f64) -> Option<Markup> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64).ok()?;
    Some(time(Timestamp(t)))
}

/// The whole time from `now` to `due`, `None` once it is due.
fn until(due: f64, now: f64) -> Option<String> {
    let secs = due - now;
    (secs > 0.0).then(|| minutes(secs.ceil() as u64))
}

/// The banner's "Stops in 4 min" / "Stops now".
pub(crate) fn stops_in(due: f64, now: f64) -> String {
    until(due, now).map_or_else(|| "Stops now".into(), |t| format!("Stops in {t}"))
}

/// "4 min left" / "due now".
pub(crate) fn left(deadline: f64, now: f64) -> String {
    until(deadline, now).map_or_else(|| "due now".into(), |t| format!("{t} left"))
}

fn safe_url(url: &str) -> Option<&str> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")).then_some(url)
}

fn action(kind: &str, label: &str, row: &Row, cur: &Current, back: &str, hidden: bool) -> Markup {
    html! {
        form.action method="post" action={ "/notebooks/" (kind) } hidden[hidden] data-kind=(kind) {
            input type="hidden" name="csrf" value=(cur.csrf);
            input type="hidden" name="namespace" value=(row.id.namespace);
            input type="hidden" name="name" value=(row.id.name);
            input type="hidden" name="back" value=(back);
            button type="submit" aria-label={ (label) " " (row.id) } { (label) }
        }
    }
}

fn keep_running(row: &Row, cur: &Current, back: &str) -> Markup {
    html! {
        form.action.keep method="post" action="/notebooks/keep-running" {
            input type="hidden" name="csrf" value=(cur.csrf);
            input type="hidden" name="namespace" value=(row.id.namespace);
            input type="hidden" name="name" value=(row.id.name);
            input type="hidden" name="back" value=(back);
            label { "Keep running for "
                select name="for" {
                    option value="1h" { "1 h" }
                    option value="4h" { "4 h" }
                    option value="8h" { "8 h" }
                    option value="until" { "until…" }
                }
            }
            label { "until (UTC) " input type="datetime-local" name="until"; }
            button type="submit" { "Keep running" }
        }
        @if row.kept_running.is_some() {
            form.action method="post" action="/notebooks/keep-running/cancel" {
                input type="hidden" name="csrf" value=(cur.csrf);
                input type="hidden" name="namespace" value=(row.id.namespace);
                input type="hidden" name="name" value=(row.id.name);
                input type="hidden" name="back" value=(back);
                button type="submit" aria-label={ "Cancel keep running " (row.id) } { "Cancel keep running" }
            }
        }
    }
}

/// The warning's banner: when the notebook stops, counted down by the
/// script, and Keep running for an hour in one click. `page.js` builds the
/// same for a warning that begins after the page loaded.
fn warning(r: &Row, due: f64, cur: &Current, caps: Capabilities, back: &str, now: f64) -> Markup {
    html! {
        div.warning role="status" data-stops-at=(format!("{due:.0}")) {
            strong { span.countdown { (stops_in(due, now)) } " unless used" }
            @if caps.keep_running {
                " — "
                form.action method="post" action="/notebooks/keep-running" {
                    input type="hidden" name="csrf" value=(cur.csrf);
                    input type="hidden" name="namespace" value=(r.id.namespace);
                    input type="hidden" name="name" value=(r.id.name);
                    input type="hidden" name="back" value=(back);
                    input type="hidden" name="for" value="1h";
                    button type="submit" aria-label={ "Keep running " (r.id) " for 1 h" } { "Keep running" }
                }
            }
        }
    }
}

fn row(r: &Row, cur: &Current, caps: Capabilities, back: &str, now: f64) -> Markup {
    let open = r
        .url
        .as_deref()
        .and_then(safe_url)
        .filter(|_| matches!(r.status, Status::Running | Status::Starting));
    html! {
        tr data-id=(r.id) {
            td data-label="Notebook" {
                strong.name { (r.id.name) }
                " " span.ns { (r.id.namespace) }
            }
            td data-label="Owner" { (r.owner.as_deref().unwrap_or("—")) }
            td data-label="Status" {
                span.status class={ "s-" (r.status.as_str()) } { (r.status.as_str()) }
                @if let Some(t) = r.since { " since " (time(t)) }
                @if let Some(m) = &r.message { br; small.msg { (m) } }
                @if let Some(s) = &r.stopped {
                    br;
                    small.why { "Stopped " (s.by) @if let Some(t) = s.at { " at " (time(t)) } @if let Some(w) = &s.why { ": " (w) } ". Files are kept." }
                }
                @if let Some(due) = r.warning_due() { (warning(r, due, cur, caps, back, now)) }
                @if let Some(k) = &r.kept_running {
                    br; small.kept { "Kept running until " (time(k.until)) " by " (k.by) }
                }
            }
            td data-label="Activity" {
                @if let Some(t) = r.last_activity.and_then(unix_time) { "last " (t) br; }
                @if !r.autostop {
                    small { "auto-stop off" }
                } @else if let Some(d) = r.deadline {
                    span.left data-deadline=(format!("{d:.0}")) { (left(d, now)) }
                    " " small { "(idle stop after " (minutes(r.idle_after_seconds)) ")" }
                } @else if !r.status.is_down() {
                    small { "idle stop after " (minutes(r.idle_after_seconds)) }
                }
            }
            td data-label="Actions" {
                div.actions {
                    span.pending { (r.pending().unwrap_or("")) }
                    @if let Some(u) = open {
                        a.button href=(u) target="_blank" rel="noopener noreferrer" aria-label={ "Open " (r.id) } { "Open" }
                    }
                    (action("stop", "Stop", r, cur, back, !r.can_stop()))
                    (action("start", "Start", r, cur, back, !r.can_start()))
                    @if caps.keep_running && !r.status.is_down() { (keep_running(r, cur, back)) }
                }
            }
        }
    }
}

fn filters(v: &ListView) -> Markup {
    let q = &v.query;
    html! {
        form.filters method="get" action="/" role="search" {
            label { "Namespace "
                select name="namespace" {
                    option value="" { "all" }
                    @for ns in &v.namespaces {
                        option value=(ns) selected[q.namespace.as_ref() == Some(ns)] { (ns) }
                    }
                }
            }
            label { "Owner "
                input type="text" name="owner" value=(q.owner.as_deref().unwrap_or("")) autocomplete="off";
            }
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in Status::ALL {
                        option value=(s.as_str()) selected[q.status == Some(s)] { (s.as_str()) }
                    }
                }
            }
            button type="submit" { "Filter" }
            a href="/" { "Clear" }
        }
    }
}

fn pager(v: &ListView) -> Markup {
    let link = |p: usize| {
        let qs = v.query.encode_with_page(p);
        if qs.is_empty() {
            "/".to_string()
        } else {
            format!("/?{qs}")
        }
    };
    html! {
        @if v.pages > 1 {
            nav.pager aria-label="Pages" {
                @if v.query.page > 1 { a href=(link(v.query.page - 1)) rel="prev" { "← Previous" } }
                span { "Page " (v.query.page) " of " (v.pages) }
                @if v.query.page < v.pages { a href=(link(v.query.page + 1)) rel="next" { "Next →" } }
            }
        }
    }
}

/// The notebook list.
pub(crate) fn list(v: &ListView, cur: &Current, caps: Capabilities, now: f64) -> Markup {
    let back = v.query.encode();
    layout(
        "Notebooks",
        html! {
            header.top {
                h1 { "Notebooks" }
                div.who {
                    span { (cur.viewer.describe()) }
                    form method="post" action="/sign-out" {
                        input type="hidden" name="csrf" value=(cur.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
            }
            main data-query=(back) data-now=(format!("{now:.0}")) {
                (flash(&cur.flash))
                @if let Some(e) = &v.keep_running_error {
                    p.flash.err role="alert" { "Keep running is unavailable now (Alertmanager did not answer): " (e) ". Nothing else changes: Stop and Start work." }
                }
                (filters(v))
                p.summary aria-live="polite" { (v.summary()) }
                @if v.rows.is_empty() {
                    p { "No notebooks match." }
                } @else {
                    table.list {
                        thead { tr { th scope="col" { "Notebook" } th scope="col" { "Owner" } th scope="col" { "Status" } th scope="col" { "Activity" } th scope="col" { "Actions" } } }
                        tbody {
                            @for r in &v.rows { (row(r, cur, caps, &back, now)) }
                        }
                    }
                }
                (pager(v))
                noscript { p.hint { "Reload the page to see the latest states." } }
            }
        },
    )
}
