//! The notebook identity and state that every layer shares.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `namespace/name`. The local backend puts all its notebooks in the
/// namespace `local`; Kubernetes backends use the real one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NotebookId {
    /// The Kubernetes namespace, or `local`.
    pub namespace: String,
    /// The notebook's name in its namespace.
    pub name: String,
}

pub(crate) const LOCAL_NAMESPACE: &str = "local";

impl NotebookId {
    /// The notebook `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        NotebookId {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for NotebookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a notebook is in its life, as the REST API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Up and serving.
    Running,
    /// Started, not yet serving.
    Starting,
    /// Stopped, not yet down.
    Stopping,
    /// Down; its workspace kept.
    Stopped,
    /// Down though meant to run (`message` says why).
    Failed,
    /// Its state could not be read.
    Unknown,
}

impl Status {
    pub(crate) const ALL: [Status; 6] = [
        Status::Running,
        Status::Starting,
        Status::Stopping,
        Status::Stopped,
        Status::Failed,
        Status::Unknown,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Starting => "starting",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
            Status::Unknown => "unknown",
        }
    }

    /// Stopped or on its way there: another stop has nothing to do.
    pub fn is_down(self) -> bool {
        matches!(self, Status::Stopping | Status::Stopped)
    }
}

/// Who asked for a stop. Kept with the notebook so users can see why
/// their notebook is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "trigger", rename_all = "kebab-case")]
pub enum StopCause {
    /// Someone asked: on nbidle's page or through its REST API.
    User {
        /// How and by whom; `None` in records written before nbidle kept it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<StoppedBy>,
    },
    /// An Alertmanager notification for `alertname`, active since `alert_starts_at`.
    IdleAlert {
        /// The alert's name (`NotebookIdle`).
        alertname: String,
        /// When the alert began firing.
        alert_starts_at: Timestamp,
    },
}

/// How a person's stop was asked for, and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "kebab-case")]
pub enum StoppedBy {
    /// Stop on nbidle's page.
    Page {
        /// The signed-in person or token, as the page names them.
        who: String,
    },
    /// `POST …/stop` on nbidle's REST API.
    Api {
        /// Which kind of token: "a token for every namespace".
        token: String,
    },
}

impl StoppedBy {
    /// "by ada on nbidle's page", "through nbidle's API".
    pub(crate) fn phrase(&self) -> String {
        match self {
            StoppedBy::Page { who } => format!("by {who} on nbidle's page"),
            StoppedBy::Api { .. } => "through nbidle's API".into(),
        }
    }
}

impl StopCause {
    /// A person's stop, with who asked when known.
    pub(crate) fn user(by: Option<StoppedBy>) -> Self {
        StopCause::User { by }
    }

    /// The bounded label value used in metrics.
    pub(crate) fn trigger(&self) -> &'static str {
        match self {
            StopCause::User { .. } => "user",
            StopCause::IdleAlert { .. } => "idle-alert",
        }
    }
}

/// The default idle time and the admin's bounds for per-notebook overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdleBounds {
    pub(crate) default: std::time::Duration,
    pub(crate) min: Option<std::time::Duration>,
    pub(crate) max: Option<std::time::Duration>,
}

impl IdleBounds {
    /// A notebook's idle time: its override clamped to the bounds, or the default.
    pub(crate) fn effective(&self, requested: Option<std::time::Duration>) -> std::time::Duration {
        let mut d = requested.unwrap_or(self.default);
        if let Some(lo) = self.min {
            d = d.max(lo);
        }
        if let Some(hi) = self.max {
            d = d.min(hi);
        }
        d
    }
}

/// What a backend knows about one notebook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotebookState {
    #[serde(flatten)]
    /// Which notebook.
    pub id: NotebookId,
    /// Where it is in its life.
    pub status: Status,
    /// Human-readable detail for `failed` (exit code, reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `false` when the notebook opted out of auto-stop.
    pub autostop: bool,
    /// Its idle time in seconds, after the admin's bounds.
    pub idle_after_seconds: u64,
    /// Who is warned before the stop, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Its last start, when known: what the stale-alert guard compares
    /// an alert with.
    pub started_at: Option<Timestamp>,
    /// Its last stop, when known.
    pub stopped_at: Option<Timestamp>,
    /// Who asked for its last stop.
    pub stopped_by: Option<StopCause>,
    /// Where the notebook is served, for users and for Prometheus discovery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A duration as the stopped pages and JupyterLab say it: `30 min`, `1 h`, `1 h 30 min`, `45 s`.
pub(crate) fn span(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s} s"),
        (0, m, _) => format!("{m} min"),
        (h, 0, _) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

/// `14:02 UTC`, with the date ("on 30 Nov") when it is not today's.
pub(crate) fn clock(t: Timestamp, now: OffsetDateTime) -> String {
    let t = t.0.to_offset(time::UtcOffset::UTC);
    let hm = format!("{:02}:{:02} UTC", t.hour(), t.minute());
    if t.date() == now.to_offset(time::UtcOffset::UTC).date() {
        hm
    } else {
        format!("{hm} on {}", day_month(t.date(), now.year()))
    }
}

/// Why an idle alert stops a notebook, in words: "after 30 min without
/// activity" (the stopped pages' sentence and JupyterLab's dialog).
pub(crate) fn idle_reason(idle_after_seconds: u64) -> String {
    format!("after {} without activity", span(idle_after_seconds))
}

/// "30 Nov", with the year when it is not `this_year`.
pub(crate) fn day_month(d: time::Date, this_year: i32) -> String {
    let month = &format!("{}", d.month())[..3];
    if d.year() == this_year {
        format!("{} {month}", d.day())
    } else {
        format!("{} {month} {}", d.day(), d.year())
    }
}

/// A point in time, serialized as RFC 3339 (the format Alertmanager uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub OffsetDateTime);

impl Timestamp {
    /// The current time, in UTC.
    pub fn now() -> Self {
        Timestamp(OffsetDateTime::now_utc())
    }

    pub(crate) fn unix_seconds(self) -> f64 {
        self.0.unix_timestamp_nanos() as f64 / 1e9
    }
}

/// RFC 3339, with any offset.
impl FromStr for Timestamp {
    type Err = time::error::Parse;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OffsetDateTime::parse(s, &Rfc3339).map(Timestamp)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RFC 3339 has years 0..=9999 only; a time parsed from outside
        // (0000-01-01T00:00:00+01:00 is year -1 in UTC) is shown in Unix
        // seconds instead: Display must not fail, or format! panics.
        match self.0.to_offset(time::UtcOffset::UTC).format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "@{}", self.0.unix_timestamp()),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_before_year_0_in_utc_is_shown_not_a_panic() {
        let t = "0000-01-01T00:00:00+01:00".parse::<Timestamp>().unwrap();
        assert_eq!(t.to_string(), format!("@{}", t.0.unix_timestamp()));
    }

    #[test]
    fn timestamps_with_offsets_compare_by_instant() {
        let a = "2026-01-01T10:00:00+02:00".parse::<Timestamp>().unwrap();
        let b = "2026-01-01T08:00:00.5Z".parse::<Timestamp>().unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "2026-01-01T08:00:00Z");
    }

    #[test]
    fn only_rfc_3339_parses() {
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01T08:00:00",
            "1767254400",
            "2026-13-01T00:00:00Z",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?}");
        }
        let t: Timestamp = "2026-01-01T08:00:00.25Z".parse().unwrap();
        assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
    }

    #[test]
    fn overrides_are_clamped_to_the_admin_bounds() {
        use std::time::Duration;
        let m = |n: u64| Duration::from_secs(60 * n);
        let b = IdleBounds {
            default: m(30),
            min: Some(m(10)),
            max: Some(m(120)),
        };
        assert_eq!(b.effective(None), m(30));
        assert_eq!(b.effective(Some(m(1))), m(10));
        assert_eq!(b.effective(Some(m(600))), m(120));
        assert_eq!(b.effective(Some(m(45))), m(45));
    }

    #[test]
    fn stop_cause_serializes_with_trigger_tag() {
        let old: StopCause = serde_json::from_str(r#"{"trigger":"user"}"#).unwrap();
        assert_eq!(
            old,
            StopCause::User { by: None },
            "a record written before `by`"
        );
        let page = StopCause::user(Some(StoppedBy::Page { who: "ada".into() }));
        let v = serde_json::to_value(&page).unwrap();
        assert_eq!(v["by"]["via"], "page");
        assert_eq!(serde_json::from_value::<StopCause>(v).unwrap(), page);
        let c = StopCause::IdleAlert {
            alertname: "NotebookIdle".into(),
            alert_starts_at: "2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap(),
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["trigger"], "idle-alert");
        assert_eq!(v["alertname"], "NotebookIdle");
    }
}
