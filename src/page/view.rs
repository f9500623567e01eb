//! What the page shows, computed from the backend's list and the
//! exporter's last round: the rows of one page of the filtered list, and
//! the counts and choices of its filters.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::session::Viewer;
use crate::exporter::NotebookFacts;
use crate::notebook::{NotebookId, NotebookState, Status, StopCause, StoppedBy, Timestamp};
use crate::silences::KeptRunning;
use crate::warnings::Warning;

/// Rows per page.
pub(crate) const PER_PAGE: usize = 100;

/// The list's filters and page, as the query string carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Query {
    pub(crate) namespace: Option<String>,
    pub(crate) owner: Option<String>,
    pub(crate) status: Option<Status>,
    /// 1-based.
    pub(crate) page: usize,
}

impl Query {
    /// Parses a query string; unknown keys, empty values and a bad page
    /// number are ignored, so an old bookmark still shows something.
    pub(crate) fn parse(raw: &str) -> Query {
        let mut q = Query {
            page: 1,
            ..Query::default()
        };
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            match &*k {
                "namespace" => q.namespace = Some(v.to_string()),
                "owner" => q.owner = Some(v.to_string()),
                "status" => q.status = Status::ALL.into_iter().find(|s| s.as_str() == v),
                "page" => q.page = v.parse().ok().filter(|&p| p >= 1).unwrap_or(1),
                _ => {}
            }
        }
        q
    }

    /// The query string for this query with another page (`""` when all
    /// is default).
    pub(crate) fn encode_with_page(&self, page: usize) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(ns) = &self.namespace {
            s.append_pair("namespace", ns);
        }
        if let Some(o) = &self.owner {
            s.append_pair("owner", o);
        }
        if let Some(st) = self.status {
            s.append_pair("status", st.as_str());
        }
        if page > 1 {
            s.append_pair("page", &page.to_string());
        }
        s.finish()
    }

    pub(crate) fn encode(&self) -> String {
        self.encode_with_page(self.page)
    }

    fn matches(&self, n: &NotebookState) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| &n.id.namespace == ns)
            && self
                .owner
                .as_ref()
                .is_none_or(|o| n.owner.as_deref() == Some(o.as_str()))
            && self.status.is_none_or(|s| n.status == s)
    }
}

/// Who stopped a notebook, why and when.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stopped {
    /// "by ada on nbidle's page", "by nbidle (NotebookIdle)".
    pub(crate) by: String,
    pub(crate) why: Option<String>,
    pub(crate) at: Option<Timestamp>,
}

/// One notebook as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) id: NotebookId,
    pub(crate) status: Status,
    /// When it entered this status, when known.
    pub(crate) since: Option<Timestamp>,
    pub(crate) owner: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) autostop: bool,
    pub(crate) idle_after_seconds: u64,
    /// Unix seconds.
    pub(crate) last_activity: Option<f64>,
    /// When the idle stop is due (Unix seconds): the exporter's deadline.
    pub(crate) deadline: Option<f64>,
    pub(crate) stopped: Option<Stopped>,
    pub(crate) kept_running: Option<KeptRunning>,
    pub(crate) warning: Option<Warning>,
}

impl Row {
    pub(crate) fn can_stop(&self) -> bool {
        !self.status.is_down()
    }

    /// When a warned notebook stops unless it is used (Unix seconds): the
    /// exporter's deadline, which the stop rule compares with, else the
    /// warning's own estimate (its start plus `warn_before`).
    pub(crate) fn warning_due(&self) -> Option<f64> {
        let w = self.warning?;
        Some(
            self.deadline
                .unwrap_or_else(|| w.stops_at.0.unix_timestamp_nanos() as f64 / 1e9),
        )
    }

    /// What the Actions cell says while the notebook is on its way up or
    /// down, when it offers neither Stop nor Start.
    pub(crate) fn pending(&self) -> Option<&'static str> {
        match self.status {
            Status::Stopping => Some("Stopping…"),
            Status::Starting => Some("Starting…"),
            _ => None,
        }
    }

    pub(crate) fn can_start(&self) -> bool {
        matches!(
            self.status,
            Status::Stopped | Status::Failed | Status::Unknown
        )
    }

    fn new(
        state: NotebookState,
        facts: Option<&NotebookFacts>,
        kept_running: Option<KeptRunning>,
        warning: Option<Warning>,
    ) -> Row {
        let up = matches!(state.status, Status::Running | Status::Starting);
        let since = if state.status.is_down() {
            state.stopped_at
        } else {
            state.started_at
        };
        let last_activity = facts.filter(|_| up).and_then(|f| f.last_activity);
        let deadline = facts.filter(|_| up).and_then(NotebookFacts::idle_deadline);
        let stopped = state.status.is_down().then(|| stopped(&state)).flatten();
        Row {
            since,
            last_activity,
            deadline,
            stopped,
            status: state.status,
            owner: state.owner,
            url: state.url,
            message: state.message,
            autostop: state.autostop,
            idle_after_seconds: state.idle_after_seconds,
            id: state.id,
            kept_running,
            warning,
        }
    }
}

fn stopped(state: &NotebookState) -> Option<Stopped> {
    let cause = state.stopped_by.as_ref()?;
    let (by, why) = match cause {
        StopCause::User { by } => (
            by.as_ref()
                .map_or_else(|| "by a person".into(), StoppedBy::phrase),
            None,
        ),
        StopCause::IdleAlert {
            alertname,
            alert_starts_at,
        } => (
            format!("by nbidle ({alertname})"),
            Some(format!(
                "idle: no activity for {}; the alert fired at {alert_starts_at}",
                minutes(state.idle_after_seconds)
            )),
        ),
    };
    Some(Stopped {
        by,
        why,
        at: state.stopped_at,
    })
}

/// `90` → "1 min 30 s"; whole minutes and hours read as such.
pub(crate) fn minutes(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h} h"));
    }
    if m > 0 {
        parts.push(format!("{m} min"));
    }
    if s > 0 || parts.is_empty() {
        parts.push(format!("{s} s"));
    }
    parts.join(" ")
}

/// One page of the list, with what its filters offer.
#[derive(Debug, Clone)]
pub(crate) struct ListView {
    pub(crate) query: Query,
    pub(crate) rows: Vec<Row>,
    /// Matching the filters, over all pages.
    pub(crate) matching: usize,
    /// The viewer's notebooks, whatever the filters.
    pub(crate) visible: usize,
    /// Matching the filters, by status: `Status::ALL`'s order.
    pub(crate) counts: [usize; Status::ALL.len()],
    pub(crate) pages: usize,
    pub(crate) namespaces: Vec<String>,
    /// Why Keep running cannot be shown now (Alertmanager down).
    pub(crate) keep_running_error: Option<String>,
}

/// The notebooks of the page `query` asks for, before their rows are made.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    pub(crate) page: Vec<NotebookState>,
    view: ListView,
}

/// The page `query` asks for, of the notebooks `viewer` may see.
pub(crate) fn select(all: Vec<NotebookState>, viewer: &Viewer, mut query: Query) -> Selection {
    let mut namespaces = BTreeSet::new();
    let mut visible = 0;
    let mut counts = [0; Status::ALL.len()];
    let mut matching = Vec::new();
    for n in all.into_iter().filter(|n| viewer.may_use(n)) {
        visible += 1;
        namespaces.insert(n.id.namespace.clone());
        if query.matches(&n) {
            counts[status_index(n.status)] += 1;
            matching.push(n);
        }
    }
    let count = matching.len();
    let pages = count.div_ceil(PER_PAGE).max(1);
    query.page = query.page.min(pages);
    let page = matching
        .into_iter()
        .skip((query.page - 1) * PER_PAGE)
        .take(PER_PAGE)
        .collect();
    Selection {
        page,
        view: ListView {
            query,
            rows: Vec::new(),
            matching: count,
            visible,
            counts,
            pages,
            namespaces: namespaces.into_iter().collect(),
            keep_running_error: None,
        },
    }
}

fn status_index(s: Status) -> usize {
    Status::ALL.iter().position(|&a| a == s).unwrap_or(0)
}

impl ListView {
    /// "3 of 4 notebooks · 1 running · 1 stopping · 1 stopped": every
    /// status some matching notebook has, running and stopped always.
    pub(crate) fn summary(&self) -> String {
        let mut s = format!("{} of {} notebooks", self.matching, self.visible);
        for (status, &n) in Status::ALL.iter().zip(&self.counts) {
            if n > 0 || matches!(status, Status::Running | Status::Stopped) {
                s.push_str(&format!(" · {n} {}", status.as_str()));
            }
        }
        s
    }
}

/// What the page shows of each notebook besides its state.
#[derive(Debug, Default)]
pub(crate) struct Extras<'a> {
    /// The exporter's last round, sorted by notebook.
    pub(crate) facts: &'a [NotebookFacts],
    pub(crate) kept: HashMap<NotebookId, KeptRunning>,
    pub(crate) warnings: HashMap<NotebookId, Warning>,
    pub(crate) keep_running_error: Option<String>,
}

impl Selection {
    /// The page's rows.
    pub(crate) fn rows(self, mut x: Extras<'_>) -> ListView {
        let facts = x.facts;
        let rows = self
            .page
            .into_iter()
            .map(|n| {
                let f = facts
                    .binary_search_by(|f| f.state.id.cmp(&n.id))
                    .ok()
                    .map(|i| &facts[i]);
                let kept = x.kept.remove(&n.id);
                let warning = x.warnings.remove(&n.id);
                Row::new(n, f, kept, warning)
            })
            .collect();
        ListView {
            rows,
            keep_running_error: x.keep_running_error,
            ..self.view
        }
    }
}

/// One row's live state, for the page's script.
#[derive(Debug, Serialize)]
pub(crate) struct RowState {
    pub(crate) id: String,
    pub(crate) status: &'static str,
    pub(crate) deadline: Option<f64>,
    pub(crate) since: Option<Timestamp>,
    pub(crate) can_stop: bool,
    pub(crate) can_start: bool,
    pub(crate) pending: Option<&'static str>,
    pub(crate) kept_until: Option<Timestamp>,
    pub(crate) stops_at: Option<Timestamp>,
    /// What the banner counts down to, while a warning fires.
    pub(crate) warning_due: Option<f64>,
}

impl From<&Row> for RowState {
    fn from(r: &Row) -> Self {
        RowState {
            id: r.id.to_string(),
            status: r.status.as_str(),
            deadline: r.deadline,
            since: r.since,
            can_stop: r.can_stop(),
            can_start: r.can_start(),
            pending: r.pending(),
            kept_until: r.kept_running.as_ref().map(|k| k.until),
            stops_at: r.warning.map(|w| w.stops_at),
            warning_due: r.warning_due(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::auth::Scope;

    #[test]
    fn a_query_round_trips_and_ignores_junk() {
        let q = Query::parse("namespace=team%20a&owner=ada%40x&status=stopped&page=3&x=1");
        assert_eq!(q.namespace.as_deref(), Some("team a"));
        assert_eq!(q.owner.as_deref(), Some("ada@x"));
        assert_eq!(q.status, Some(Status::Stopped));
        assert_eq!(Query::parse(&q.encode()), q);
        let junk = Query::parse("status=sleeping&page=-1&namespace=");
        assert_eq!(junk, Query::parse(""));
        assert_eq!(junk.page, 1);
    }

    #[test]
    fn the_summary_counts_every_status_shown() {
        let all: Vec<NotebookState> = Status::ALL
            .into_iter()
            .chain([Status::Running])
            .enumerate()
            .map(|(i, status)| NotebookState {
                status,
                ..crate::backend::memory::MemoryBackend::running("ns", &format!("nb{i}"))
            })
            .collect();
        let v = select(all, &Viewer::Token(Scope::All), Query::parse("")).rows(Extras::default());
        assert_eq!(
            v.summary(),
            "7 of 7 notebooks · 2 running · 1 starting · 1 stopping · 1 stopped · 1 failed · 1 unknown"
        );
        let q = Query::parse("status=stopping");
        let all = vec![NotebookState {
            status: Status::Stopping,
            ..crate::backend::memory::MemoryBackend::running("ns", "a")
        }];
        let v = select(all, &Viewer::Token(Scope::All), q).rows(Extras::default());
        assert_eq!(
            v.summary(),
            "1 of 1 notebooks · 0 running · 1 stopping · 0 stopped"
        );
        assert_eq!(RowState::from(&v.rows[0]).pending, Some("Stopping…"));
    }

    #[test]
    fn minutes_read_naturally() {
        assert_eq!(minutes(0), "0 s");
        assert_eq!(minutes(90), "1 min 30 s");
        assert_eq!(minutes(1800), "30 min");
        assert_eq!(minutes(3600 * 2 + 60), "2 h 1 min");
    }

    #[test]
    fn the_last_page_is_the_furthest_and_counts_cover_all_pages() {
        let all: Vec<NotebookState> = (0..250)
            .map(|i| crate::backend::memory::MemoryBackend::running("ns", &format!("nb{i:03}")))
            .collect();
        let q = Query {
            page: 9,
            ..Query::parse("")
        };
        let v = select(all, &Viewer::Token(Scope::All), q).rows(Extras::default());
        assert_eq!((v.pages, v.query.page, v.rows.len()), (3, 3, 50));
        assert_eq!((v.matching, v.visible, v.counts[0]), (250, 250, 250));
        assert_eq!(v.rows[0].id.name, "nb200");
    }
}
