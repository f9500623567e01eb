//! Keep running: an Alertmanager silence on a notebook's stop alert
//! (`alertname=NotebookIdle`, `namespace`, `notebook`), so Alertmanager
//! never delivers it and nothing stops the notebook until the silence ends.
//!
//! For the REST API and the notebook page, through `server::App::silences`
//! (present only when `alertmanager.url` or `alertmanager.urls` is set):
//!
//! - [`Silences::for_notebooks`]`(&[NotebookState]) -> Result<HashMap<NotebookId, KeptRunning>>`:
//!   the silence that keeps each notebook running, if any (one call to
//!   Alertmanager per [`CACHE_TTL`], however many notebooks are asked about);
//!   [`Silences::for_notebook`] for one.
//! - [`Silences::keep_running`]`(&NotebookState, until, by, comment) -> Result<KeptRunning>`:
//!   creates the silence; `by` is the person (`createdBy`).
//! - [`Silences::cancel`]`(&NotebookState) -> Result<Cancelled>`: expires the
//!   silences that name this notebook alone.
//! - [`keep_until`]`(for, until, now, silences.max()) -> Result<Timestamp>`:
//!   a request's `for` (`"4h"`) or `until` (RFC 3339) checked and turned
//!   into the end ([`Silences::max`]: `alertmanager.keep_running_max`).
//!
//! Every silence counts that covers the stop alert, those made with
//! `amtool` or Alertmanager's UI too, regular expressions included
//! ([`matching`]). Alertmanager down: every call fails with
//! [`Error::Unavailable`] naming the URLs tried; nothing else changes.

mod client;
pub(crate) mod matching;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::AlertmanagerConfig;
use crate::error::{Error, Result};
use crate::logsafe::Escaped;
use crate::metrics::{Metrics, SilenceOp};
use crate::notebook::{NotebookId, NotebookState, Timestamp};
use client::{ApiSilence, Client, NewSilence};
use matching::{all_match, stop_alert_labels, Compiled, Labels};

/// How long a list of silences is reused. A silence made through nbidle
/// shows at once (the list is read again after each change); one made with
/// `amtool` shows within this.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(5);

/// What keeps a notebook running: a silence on its stop alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct KeptRunning {
    /// The silence's id in Alertmanager.
    pub(crate) id: String,
    /// When the silence ends, and the notebook may be stopped again.
    pub(crate) until: Timestamp,
    /// Who made it (`createdBy`).
    pub(crate) by: String,
    pub(crate) comment: String,
}

/// What [`Silences::cancel`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Cancelled {
    /// Silences expired.
    pub(crate) expired: Vec<String>,
    /// Silences that keep it running but cover other notebooks too; left
    /// for Alertmanager's UI or `amtool`.
    pub(crate) left: Vec<KeptRunning>,
}

/// An active silence with its matchers compiled.
struct Active {
    api: ApiSilence,
    compiled: Vec<Compiled>,
}

impl Active {
    fn kept_running(&self) -> KeptRunning {
        KeptRunning {
            id: self.api.id.clone(),
            until: self.api.ends_at,
            by: self.api.created_by.clone(),
            comment: self.api.comment.clone(),
        }
    }

    fn covers(&self, labels: &Labels<'_>, now: Timestamp) -> bool {
        self.api.starts_at <= now && now < self.api.ends_at && all_match(&self.compiled, labels)
    }
}

/// The active silences, indexed by the notebook an equality matcher pins
/// (nbidle's own, and most made by hand), so a page of notebooks costs a
/// lookup each plus the few broader silences, not notebooks × silences.
struct ActiveList {
    all: Vec<Active>,
    by_notebook: HashMap<String, Vec<usize>>,
    /// Silences without `notebook="…"`: every notebook is tried on them.
    rest: Vec<usize>,
}

impl ActiveList {
    fn new(all: Vec<Active>) -> Self {
        let mut by_notebook: HashMap<String, Vec<usize>> = HashMap::new();
        let mut rest = Vec::new();
        for (i, a) in all.iter().enumerate() {
            let pinned = a
                .api
                .matchers
                .iter()
                .find(|m| m.name == "notebook" && m.is_equal && !m.is_regex);
            match pinned {
                Some(m) => by_notebook.entry(m.value.clone()).or_default().push(i),
                None => rest.push(i),
            }
        }
        ActiveList {
            all,
            by_notebook,
            rest,
        }
    }

    /// The silences that may cover notebook `name`.
    fn candidates<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Active> + 'a {
        let pinned = self.by_notebook.get(name).map_or(&[][..], Vec::as_slice);
        pinned.iter().chain(&self.rest).map(|&i| &self.all[i])
    }
}

struct Cached {
    at: Instant,
    /// A failure is kept as long as a list, so a page of 1,000 notebooks
    /// does not wait on an unreachable Alertmanager 1,000 times.
    list: Result<Arc<ActiveList>, String>,
}

/// Alertmanager's silences, read through a short cache.
pub(crate) struct Silences {
    client: Client,
    metrics: Arc<Metrics>,
    /// `alertmanager.keep_running_max`.
    max: Duration,
    /// One refresh at a time: callers meanwhile wait for its answer.
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl Silences {
    /// `None` without `alertmanager.url(s)`: Keep running is unavailable.
    pub(crate) fn from_config(
        cfg: &AlertmanagerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Self>> {
        let urls = cfg.api_urls();
        if urls.is_empty() {
            return Ok(None);
        }
        Ok(Some(Silences {
            client: Client::new(urls, cfg.api_timeout.0)?,
            metrics,
            max: cfg.keep_running_max.0,
            cache: tokio::sync::Mutex::new(None),
        }))
    }

    /// The longest one request may keep a notebook running
    /// (`alertmanager.keep_running_max`).
    pub(crate) fn max(&self) -> Duration {
        self.max
    }

    /// The active silences, from the cache when fresh.
    async fn active(&self) -> Result<Arc<ActiveList>> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref().filter(|c| c.at.elapsed() < CACHE_TTL) {
            return c.list.clone().map_err(Error::Unavailable);
        }
        let list = self.client.list().await.map(|all| {
            Arc::new(ActiveList::new(
                all.into_iter()
                    .filter(|s| s.status.state == "active")
                    .filter_map(|api| {
                        let compiled = api
                            .matchers
                            .iter()
                            .map(Compiled::new)
                            .collect::<Option<_>>()?;
                        Some(Active { api, compiled })
                    })
                    .collect(),
            ))
        });
        let list = list.map_err(|e| match e {
            Error::Unavailable(m) => m,
            other => other.to_string(),
        });
        *cache = Some(Cached {
            at: Instant::now(),
            list: list.clone(),
        });
        list.map_err(Error::Unavailable)
    }

    async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    /// For each notebook kept running, the silence that keeps it so the
    /// longest.
    pub(crate) async fn for_notebooks(
        &self,
        notebooks: &[NotebookState],
    ) -> Result<HashMap<NotebookId, KeptRunning>> {
        let active = self.active().await?;
        let now = Timestamp::now();
        Ok(notebooks
            .iter()
            .filter_map(|n| {
                let labels = stop_alert_labels(n);
                let best = active
                    .candidates(&n.id.name)
                    .filter(|s| s.covers(&labels, now))
                    .max_by_key(|s| s.api.ends_at)?;
                Some((n.id.clone(), best.kept_running()))
            })
            .collect())
    }

    /// The silence that keeps `state` running the longest, if any.
    pub(crate) async fn for_notebook(&self, state: &NotebookState) -> Result<Option<KeptRunning>> {
        let mut m = self.for_notebooks(std::slice::from_ref(state)).await?;
        Ok(m.remove(&state.id))
    }

    /// Silences `state`'s stop alert from now until `until`, made by `by`.
    pub(crate) async fn keep_running(
        &self,
        state: &NotebookState,
        until: Timestamp,
        by: &str,
        comment: &str,
    ) -> Result<KeptRunning> {
        let matchers = matching::keep_running_matchers(state);
        let comment = if comment.trim().is_empty() {
            format!("Keep running {} (nbidle)", state.id)
        } else {
            comment.to_string()
        };
        let new = NewSilence {
            matchers: &matchers,
            starts_at: Timestamp::now(),
            ends_at: until,
            created_by: by,
            comment: &comment,
        };
        let made = self.client.create(&new).await;
        self.counted(SilenceOp::Create, &made);
        let id = made?;
        self.invalidate().await;
        // `by` comes from the caller.
        tracing::info!(notebook = %state.id, silence = %Escaped(&id), %until, by = %Escaped(by), "kept running");
        Ok(KeptRunning {
            id,
            until,
            by: by.to_string(),
            comment,
        })
    }

    /// Expires every active silence on `state`'s stop alert that names
    /// this notebook alone (see [`matching::names_only`]).
    pub(crate) async fn cancel(&self, state: &NotebookState) -> Result<Cancelled> {
        self.invalidate().await;
        let active = self.active().await?;
        let now = Timestamp::now();
        let mut done = Cancelled::default();
        let labels = stop_alert_labels(state);
        for s in active
            .candidates(&state.id.name)
            .filter(|s| s.covers(&labels, now))
        {
            if !matching::names_only(&s.api.matchers, state) {
                done.left.push(s.kept_running());
                continue;
            }
            let r = self.client.expire(&s.api.id).await;
            self.counted(SilenceOp::Expire, &r);
            r?;
            tracing::info!(notebook = %state.id, silence = %Escaped(&s.api.id), "silence expired");
            done.expired.push(s.api.id.clone());
        }
        self.invalidate().await;
        Ok(done)
    }

    fn counted<T>(&self, op: SilenceOp, r: &Result<T>) {
        self.metrics.silence(op, r.is_ok());
    }
}

/// The end of a Keep running request: `now + for` or `until`, exactly one
/// of them, in the future and at most `max` away. Errors name the field.
pub(crate) fn keep_until(
    for_: Option<&str>,
    until: Option<&str>,
    now: Timestamp,
    max: Duration,
) -> Result<Timestamp> {
    let max_t = time::Duration::try_from(max).unwrap_or(time::Duration::MAX);
    let bound = |field: &str| {
        Error::invalid(
            field,
            format!(
                "at most {} from now (alertmanager.keep_running_max)",
                humantime::format_duration(max)
            ),
        )
    };
    match (for_, until) {
        (Some(_), Some(_)) => Err(Error::invalid("for", "give for or until, not both")),
        (None, None) => Err(Error::invalid(
            "for",
            "give for (\"4h\") or until (RFC 3339)",
        )),
        (Some(f), None) => {
            let d = humantime::parse_duration(f.trim())
                .map_err(|e| Error::invalid("for", format!("{f:?} is not a duration: {e}")))?;
            if d < Duration::from_secs(60) {
                return Err(Error::invalid("for", "at least 1m"));
            }
            if d > max {
                return Err(bound("for"));
            }
            let d = time::Duration::try_from(d).map_err(|_| bound("for"))?;
            Ok(Timestamp(now.0 + d))
        }
        (None, Some(u)) => {
            let t: Timestamp = u.trim().parse().map_err(|e| {
                Error::invalid("until", format!("{u:?} is not an RFC 3339 time: {e}"))
            })?;
            if t <= now {
                return Err(Error::invalid("until", format!("{u:?} is in the past")));
            }
            if t.0 - now.0 > max_t {
                return Err(bound("until"));
            }
            Ok(t)
        }
    }
}

#[cfg(test)]
mod tests;
