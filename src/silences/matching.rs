//! Which silences cover a notebook's stop alert: Alertmanager's matcher
//! semantics, applied to the labels the stop alert carries.
//!
//! As in Alertmanager: a silence covers an alert when every one of its
//! matchers matches; a label the alert does not carry has the value `""`
//! (so `owner=""`, `owner!="bob"` and `owner=~".*"` match a notebook without
//! an owner); regular expressions are anchored at both ends. nbidle knows
//! the labels its rule sets (`alertname`, `namespace`, `notebook`, `owner`,
//! `nbidle_action`, `severity`); a matcher on any other label (an external
//! label of Prometheus, say) is evaluated as on an absent label, which is
//! the answer for a Prometheus without external labels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::notebook::NotebookState;
use crate::rules::{ACTION_LABEL, ACTION_STOP, IDLE_ALERT};

/// One matcher of a silence, as Alertmanager's API v2 has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Matcher {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) is_regex: bool,
    /// `false`: `!=` or `!~`. Older Alertmanagers leave it out (equal).
    #[serde(default = "yes")]
    pub(crate) is_equal: bool,
}

fn yes() -> bool {
    true
}

impl Matcher {
    /// `name="value"`.
    pub(crate) fn equal(name: &str, value: &str) -> Self {
        Matcher {
            name: name.into(),
            value: value.into(),
            is_regex: false,
            is_equal: true,
        }
    }
}

/// A matcher ready to test labels: a regular expression compiled once per
/// list of silences, not once per notebook.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    name: String,
    test: Test,
    is_equal: bool,
}

#[derive(Debug, Clone)]
enum Test {
    Value(String),
    Regex(regex::Regex),
}

impl Compiled {
    /// `None` for a regular expression this crate cannot compile (RE2
    /// syntax that Rust's `regex` lacks): such a silence is not shown as
    /// covering anything, rather than guessed at.
    pub(crate) fn new(m: &Matcher) -> Option<Self> {
        let test = if m.is_regex {
            Test::Regex(regex::Regex::new(&format!("^(?:{})$", m.value)).ok()?)
        } else {
            Test::Value(m.value.clone())
        };
        Some(Compiled {
            name: m.name.clone(),
            test,
            is_equal: m.is_equal,
        })
    }

    fn matches(&self, labels: &Labels<'_>) -> bool {
        let v = labels.get(self.name.as_str()).copied().unwrap_or("");
        let hit = match &self.test {
            Test::Value(want) => v == want,
            Test::Regex(re) => re.is_match(v),
        };
        hit == self.is_equal
    }
}

/// An alert's labels; absent ones read as `""`.
pub(crate) type Labels<'a> = BTreeMap<&'static str, &'a str>;

/// The labels of `state`'s stop alert, as the generated rule sets them.
pub(crate) fn stop_alert_labels(state: &NotebookState) -> Labels<'_> {
    let mut l = BTreeMap::from([
        ("alertname", IDLE_ALERT),
        ("namespace", state.id.namespace.as_str()),
        ("notebook", state.id.name.as_str()),
        (ACTION_LABEL, ACTION_STOP),
        ("severity", "info"),
    ]);
    if let Some(owner) = state.owner.as_deref().filter(|o| !o.is_empty()) {
        l.insert("owner", owner);
    }
    l
}

/// Every matcher matches `labels`. A silence without matchers covers
/// nothing (Alertmanager refuses to create one).
pub(crate) fn all_match(matchers: &[Compiled], labels: &Labels<'_>) -> bool {
    !matchers.is_empty() && matchers.iter().all(|m| m.matches(labels))
}

/// The matchers of the silence nbidle creates for `state`: the stop alert
/// of that notebook only.
pub(crate) fn keep_running_matchers(state: &NotebookState) -> Vec<Matcher> {
    vec![
        Matcher::equal("alertname", IDLE_ALERT),
        Matcher::equal("namespace", &state.id.namespace),
        Matcher::equal("notebook", &state.id.name),
    ]
}

/// The silence names this notebook and no other: equality matchers on
/// both `namespace` and `notebook` with its values. Only such silences are
/// expired on a notebook's behalf; a broader one (all notebooks of a
/// namespace, or of every namespace) is left to Alertmanager's UI or
/// `amtool`, where whoever expires it sees what else it covers.
pub(crate) fn names_only(matchers: &[Matcher], state: &NotebookState) -> bool {
    let pinned = |name: &str, value: &str| {
        matchers
            .iter()
            .any(|m| m.name == name && m.value == value && m.is_equal && !m.is_regex)
    };
    pinned("namespace", &state.id.namespace) && pinned("notebook", &state.id.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notebook::{NotebookId, Status};

    fn state(ns: &str, name: &str, owner: Option<&str>) -> NotebookState {
        NotebookState {
            id: NotebookId::new(ns, name),
            status: Status::Running,
            message: None,
            autostop: true,
            idle_after_seconds: 600,
            owner: owner.map(Into::into),
            started_at: None,
            stopped_at: None,
            stopped_by: None,
            url: None,
        }
    }

    /// `amtool`'s matcher syntax, enough for the tests: `a=b`, `a!=b`,
    /// `a=~b`, `a!~b`.
    fn m(s: &str) -> Matcher {
        for (op, is_regex, is_equal) in [
            ("=~", true, true),
            ("!~", true, false),
            ("!=", false, false),
            ("=", false, true),
        ] {
            if let Some((name, value)) = s.split_once(op) {
                return Matcher {
                    name: name.into(),
                    value: value.into(),
                    is_regex,
                    is_equal,
                };
            }
        }
        panic!("{s}")
    }

    fn covers(matchers: &[&str], st: &NotebookState) -> bool {
        let c: Option<Vec<Compiled>> = matchers.iter().map(|s| Compiled::new(&m(s))).collect();
        all_match(&c.expect("compiles"), &stop_alert_labels(st))
    }

    #[test]
    fn equality_and_negation_on_the_stop_alerts_labels() {
        let lab = state("team-a", "lab", Some("ada"));
        for yes in [
            vec!["alertname=NotebookIdle", "namespace=team-a", "notebook=lab"],
            vec!["alertname=NotebookIdle", "notebook=lab"],
            vec!["notebook=lab"],
            vec!["alertname=NotebookIdle"],
            vec!["owner=ada"],
            vec!["nbidle_action=stop", "severity=info"],
            vec!["notebook!=other", "namespace=team-a"],
            // A label the alert does not carry is "".
            vec!["notebook=lab", "cluster="],
            vec!["notebook=lab", "cluster!=prod"],
        ] {
            assert!(covers(&yes, &lab), "{yes:?}");
        }
        for no in [
            vec!["alertname=NotebookIdleSoon", "notebook=lab"],
            vec!["alertname=NotebookIdle", "namespace=team-b", "notebook=lab"],
            vec!["notebook=la"],
            vec!["notebook=lab", "owner=bob"],
            vec!["notebook=lab", "nbidle_action=warn"],
            vec!["notebook!=lab"],
            vec!["notebook=lab", "cluster=prod"],
        ] {
            assert!(!covers(&no, &lab), "{no:?}");
        }
        assert!(!covers(&[], &lab), "no matchers cover nothing");
    }

    #[test]
    fn regexes_are_anchored_and_absent_labels_are_empty() {
        let lab = state("team-a", "lab", None);
        for yes in [
            vec!["notebook=~la.*"],
            vec!["notebook=~lab|other"],
            vec!["namespace=~team-.+", "alertname=~Notebook(Idle)?"],
            vec!["notebook=~lab", "owner=~.*"],
            vec!["notebook=~lab", "owner="],
            vec!["notebook!~other.*"],
            vec!["alertname=~.*", "owner!~.+"],
        ] {
            assert!(covers(&yes, &lab), "{yes:?}");
        }
        for no in [
            // Anchored: a substring is not a match.
            vec!["notebook=~la"],
            vec!["notebook=~ab"],
            vec!["alertname=~Idle"],
            vec!["notebook=~lab", "owner=~.+"],
            vec!["notebook!~l.*"],
            // `|` inside the group: not `^la` or `b$`.
            vec!["notebook=~xla|bx"],
        ] {
            assert!(!covers(&no, &lab), "{no:?}");
        }
        let owned = state("team-a", "lab", Some("ada@example.com"));
        assert!(covers(&["owner=~.*@example\\.com"], &owned));
        assert!(!covers(&["owner=~.*@example\\.com"], &lab));
    }

    #[test]
    fn an_expression_rust_cannot_compile_covers_nothing() {
        assert!(Compiled::new(&m("notebook=~(unclosed")).is_none());
    }

    #[test]
    fn only_silences_naming_the_notebook_alone_are_its_to_expire() {
        let lab = state("team-a", "lab", None);
        let ms = |v: &[&str]| v.iter().map(|s| m(s)).collect::<Vec<_>>();
        assert!(names_only(&keep_running_matchers(&lab), &lab));
        assert!(names_only(
            &ms(&["namespace=team-a", "notebook=lab", "owner=~.*"]),
            &lab
        ));
        for broad in [
            vec!["alertname=NotebookIdle", "notebook=lab"],
            vec!["namespace=team-a", "notebook=~lab"],
            vec!["namespace=team-a", "notebook=~.*"],
            vec!["namespace=team-a", "notebook!=lab"],
            vec!["alertname=NotebookIdle"],
        ] {
            assert!(!names_only(&ms(&broad), &lab), "{broad:?}");
        }
    }

    #[test]
    fn api_v2_matchers_read_with_is_equal_defaulting_to_true() {
        let v: Vec<Matcher> = serde_json::from_str(
            r#"[{"name":"notebook","value":"lab","isRegex":false},
                {"name":"owner","value":"bob","isRegex":false,"isEqual":false}]"#,
        )
        .unwrap();
        assert!(v[0].is_equal);
        assert!(!v[1].is_equal);
    }
}
