//! Telling notebooks themselves: after each exporter round, nbidle pushes
//! each interesting running notebook's state to its JupyterLab extension
//! (`nbidle-jupyterlab`, `PUT {base_url}nbidle/state?no_track_activity=1`
//! with the notebook's own Jupyter token), and the browser reads it on its
//! own origin. A person's Keep running comes back as a request in the
//! answer; nbidle makes the silence and pushes the result right away.
//!
//! - Interesting ([`state::interest`]): a firing warning, an idle deadline
//!   within `warn_before` + 2 × `exporter.interval`, results to deliver, or
//!   something shown at the last push (one more push, `stops_at: null`,
//!   clears it). A deadline passed by more than `warn_before` without a
//!   firing warning (a guard holds the stop back) is over: cleared once,
//!   not "Stops in 0:00" for ever. Others get nothing, so a round costs nothing for the many
//!   notebooks far from a stop.
//! - Nothing at all while nbidle does not stop (`autostop.enabled: false`
//!   or `autostop.dry_run`): no countdown to a stop that will not come.
//! - Bounded: `exporter.concurrency` pushes at once, each within
//!   `notify.jupyterlab.timeout`, answers read within 16 KiB
//!   ([`client`]). An answer outside the contract is a counted error,
//!   never more memory or a panic.
//! - 404 (no extension): remembered for the notebook's life and tried
//!   again at most every [`ABSENT_RETRY`]; nbidle works as without it.
//! - Requests ([`state::validate`]): kind `keep_running`, `for` equal to
//!   the offer (4 h, at most `alertmanager.keep_running_max`; none without
//!   Alertmanager), at most 4 per answer, ids of at most 64 characters,
//!   each carried out once a life. They go through the same keep-running
//!   path as the REST API (`silences::keep_until`, then
//!   `Silences::keep_running`), made by "<owner> via JupyterLab".
//! - Before an idle alert's stop, `decide` calls [`Notifier::stopping`]:
//!   phase `stopping` with the reason, only to notebooks whose extension
//!   answered before, within the timeout; it never prevents the stop.
//!
//! Uses the backend (endpoints), the exporter (the round's facts and its
//! end), `warnings` and `silences`; `decide`, `server` and `run` use it.
//!
//! Files: `mod.rs` (rounds, the per-life memory, the push before a stop),
//! `state.rs` (the body, interest, request validation), `client.rs` (one
//! push and its answer within limits), `tests.rs`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};

use crate::backend::{Backend, JupyterEndpoint};
use crate::exporter::Exporter;
use crate::metrics::{KeepRequest as KeepCount, Metrics, Notified};
use crate::notebook::{NotebookId, NotebookState, Status, Timestamp};
use crate::silences::{KeptRunning, Silences};
use crate::warnings::Warnings;

pub(crate) mod client;
pub(crate) mod state;

use client::Pushed;
use state::{interest, worth_a_push, KeepResult, Phase, RawRequest, Refused, Shown, StateBody};

/// How long a notebook whose Jupyter answered 404 is left alone.
pub(crate) const ABSENT_RETRY: Duration = Duration::from_secs(600);
/// Request ids remembered per life, so one is carried out once.
const SEEN_IDS: usize = 32;

/// What pushes need from the config.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `notify.jupyterlab.timeout`.
    pub(crate) timeout: Duration,
    /// `exporter.concurrency`.
    pub(crate) concurrency: usize,
    /// `autostop.warn_before`.
    pub(crate) warn_before: Duration,
    /// How near a deadline makes a notebook interesting.
    pub(crate) window: Duration,
    /// `server.external_url` (or a loopback `listen`'s).
    pub(crate) page_url: Option<String>,
    /// Keep running's offer; `None` without Alertmanager.
    pub(crate) keep_for: Option<String>,
    /// nbidle stops idle notebooks (`autostop.enabled` and not
    /// `autostop.dry_run`); else there is no stop to count down to and
    /// nothing is pushed.
    pub(crate) stops: bool,
}

impl Settings {
    pub(crate) fn from_config(cfg: &crate::config::Config) -> Self {
        let am = !cfg.alertmanager.api_urls().is_empty();
        Settings {
            timeout: cfg.notify.jupyterlab.timeout.0,
            concurrency: cfg.exporter.concurrency,
            warn_before: cfg.autostop.warn_before.0,
            window: cfg.autostop.warn_before.0 + cfg.exporter.interval.0 * 2,
            page_url: cfg.page_url(),
            keep_for: am.then(|| state::offered_duration(cfg.alertmanager.keep_running_max.0)),
            stops: cfg.autostop.enabled && !cfg.autostop.dry_run,
        }
    }
}

/// What is remembered of one notebook's life.
#[derive(Debug, Default)]
struct Memo {
    started_at: Option<Timestamp>,
    /// 404 at the last try: nothing before this.
    absent_until: Option<Instant>,
    /// Where the extension last took a push (the push before a stop goes
    /// there, without asking the backend).
    answered: Option<JupyterEndpoint>,
    /// The last push that was taken showed a deadline or a warning.
    showed: bool,
    /// Results not yet delivered.
    results: Vec<KeepResult>,
    seen: VecDeque<String>,
}

impl Memo {
    fn new(started_at: Option<Timestamp>) -> Self {
        Memo {
            started_at,
            ..Default::default()
        }
    }
}

/// One push planned in a round.
struct Plan {
    state: NotebookState,
    shown: Option<Shown>,
    results: Vec<KeepResult>,
}

/// Pushes state to notebooks' JupyterLab extension after each exporter
/// round ([`Notifier::run`]) and before a stop ([`Notifier::stopping`]).
/// Public for the benchmark only ([`Notifier::standalone`], [`Notifier::round`]).
pub struct Notifier {
    http: reqwest::Client,
    exporter: Arc<Exporter>,
    backend: Arc<dyn Backend>,
    warnings: Arc<Warnings>,
    silences: Option<Arc<Silences>>,
    metrics: Arc<Metrics>,
    settings: Settings,
    memory: Mutex<HashMap<NotebookId, Memo>>,
}

impl Notifier {
    pub(crate) fn new(
        settings: Settings,
        exporter: Arc<Exporter>,
        backend: Arc<dyn Backend>,
        warnings: Arc<Warnings>,
        silences: Option<Arc<Silences>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Notifier {
            http: client::http_client(settings.timeout),
            exporter,
            backend,
            warnings,
            silences,
            metrics,
            settings,
            memory: Mutex::new(HashMap::new()),
        })
    }

    /// A notifier over `exporter`'s rounds and `backend`'s endpoints with
    /// no warnings and no Alertmanager (Keep running not offered):
    /// `timeout` per push, `concurrency` at once, notebooks interesting
    /// within `warn_before` + 2 × `interval` of their deadline.
    pub fn standalone(
        exporter: Arc<Exporter>,
        backend: Arc<dyn Backend>,
        timeout: Duration,
        concurrency: usize,
        warn_before: Duration,
        interval: Duration,
    ) -> Arc<Self> {
        let settings = Settings {
            timeout,
            concurrency,
            warn_before,
            window: warn_before + interval * 2,
            page_url: None,
            keep_for: None,
            stops: true,
        };
        let warnings = Arc::new(Warnings::new(warn_before, Duration::from_secs(60)));
        let metrics = Arc::new(Metrics::new());
        Notifier::new(settings, exporter, backend, warnings, None, metrics)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NotebookId, Memo>> {
        // A panic mid-update leaves a map that is still a map.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A round after each exporter round, until `shutdown` resolves.
    pub(crate) async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut rounds = self.exporter.rounds();
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                changed = rounds.changed() => if changed.is_err() { return },
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.round() => {}
            }
        }
    }

    /// Pushes to every interesting notebook of the exporter's last round,
    /// then once more to those whose requests have results.
    pub async fn round(&self) {
        let fresh = self.pass(None).await;
        if !fresh.is_empty() {
            self.pass(Some(&fresh)).await;
        }
    }

    /// One push to each interesting notebook (of `only`, if given);
    /// returns those with new results.
    async fn pass(&self, only: Option<&HashSet<NotebookId>>) -> HashSet<NotebookId> {
        if !self.settings.stops {
            return HashSet::new();
        }
        let facts = self.exporter.last_round();
        // A failed listing publishes nothing: forget nothing either.
        if facts.is_empty() {
            return HashSet::new();
        }
        let now = Timestamp::now().unix_seconds();
        let window = self.settings.window.as_secs_f64();
        let warn_before = self.settings.warn_before.as_secs_f64();
        let plans: Vec<Plan> = {
            let mut memory = self.lock();
            if only.is_none() {
                // Facts are sorted by id; another life is another memo.
                memory.retain(|id, m| {
                    facts
                        .binary_search_by(|f| f.state.id.cmp(id))
                        .ok()
                        .map(|i| &facts[i].state)
                        .is_some_and(|s| {
                            s.status == Status::Running && s.started_at == m.started_at
                        })
                });
            }
            let at = Instant::now();
            facts
                .iter()
                .filter(|f| f.state.status == Status::Running)
                .filter(|f| only.is_none_or(|o| o.contains(&f.state.id)))
                .filter_map(|f| {
                    let memo = memory.get(&f.state.id);
                    if memo.is_some_and(|m| m.absent_until.is_some_and(|t| t > at)) {
                        return None;
                    }
                    let warning = self
                        .warnings
                        .get(&f.state)
                        .map(|w| (w.since.unix_seconds(), w.stops_at.unix_seconds()));
                    let shown = interest(f.idle_deadline(), warning, now, window, warn_before);
                    let results = memo.map(|m| m.results.clone()).unwrap_or_default();
                    let showed = memo.is_some_and(|m| m.showed);
                    worth_a_push(shown, !results.is_empty(), showed).then(|| Plan {
                        state: f.state.clone(),
                        shown,
                        results,
                    })
                })
                .collect()
        };
        if plans.is_empty() {
            return HashSet::new();
        }
        let kept = self.kept(&plans).await;
        let wanted: HashSet<&NotebookId> = plans.iter().map(|p| &p.state.id).collect();
        let mut endpoints: HashMap<NotebookId, JupyterEndpoint> = self
            .backend
            .jupyter_endpoints()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|e| wanted.contains(&e.id))
            .map(|e| (e.id.clone(), e))
            .collect();
        drop(wanted);
        let kept = &kept;
        let outcomes: Vec<(Plan, JupyterEndpoint, Pushed)> = stream::iter(
            plans
                .into_iter()
                .filter_map(|p| endpoints.remove(&p.state.id).map(|ep| (p, ep))),
        )
        .map(|(p, ep)| async move {
            let body = self.body(&p.state, p.shown, kept.get(&p.state.id), p.results.clone());
            let r = client::push(&self.http, &ep, &body, self.settings.timeout).await;
            (p, ep, r)
        })
        .buffer_unordered(self.settings.concurrency)
        .collect()
        .await;
        let mut fresh = HashSet::new();
        for (p, ep, r) in outcomes {
            let raws = self.note(&p, ep, r);
            if self.answer(&p.state, &raws).await.is_some() {
                fresh.insert(p.state.id.clone());
            }
        }
        fresh
    }

    /// Carries out the requests of one answer and keeps their results for
    /// the next push; `None` when there are no results, else whether a
    /// Keep running succeeded. One Keep running is made per answer: the
    /// others of the same answer get its result.
    async fn answer(&self, state: &NotebookState, raws: &[RawRequest]) -> Option<bool> {
        let mut results = Vec::new();
        let mut made: Option<KeepResult> = None;
        for raw in raws {
            let result = match (
                &made,
                state::validate(raw, self.settings.keep_for.as_deref()),
            ) {
                (Some(first), Ok(k)) => {
                    self.metrics.jupyterlab_keep_request(if first.ok {
                        KeepCount::Ok
                    } else {
                        KeepCount::Error
                    });
                    Some(KeepResult {
                        id: k.id,
                        ..first.clone()
                    })
                }
                (None, Ok(k)) => {
                    let r = self.carry_out(state, k).await;
                    made = Some(r.clone());
                    Some(r)
                }
                (_, Err(Refused(result))) => {
                    self.metrics.jupyterlab_keep_request(KeepCount::Refused);
                    result
                }
            };
            results.extend(result);
        }
        if results.is_empty() {
            return None;
        }
        let mut memory = self.lock();
        if let Some(m) = memory.get_mut(&state.id) {
            for r in results {
                if m.results.len() < state::MAX_RESULTS {
                    m.results.push(r);
                }
            }
        }
        Some(made.is_some_and(|r| r.ok))
    }

    /// The silences keeping these notebooks running; none when
    /// Alertmanager does not answer (the push goes on without).
    async fn kept(&self, plans: &[Plan]) -> HashMap<NotebookId, KeptRunning> {
        let Some(s) = &self.silences else {
            return HashMap::new();
        };
        let states: Vec<NotebookState> = plans.iter().map(|p| p.state.clone()).collect();
        s.for_notebooks(&states).await.unwrap_or_default()
    }

    fn body(
        &self,
        state: &NotebookState,
        shown: Option<Shown>,
        kept: Option<&KeptRunning>,
        results: Vec<KeepResult>,
    ) -> StateBody {
        StateBody {
            version: 1,
            notebook: (&state.id).into(),
            phase: shown.map_or(Phase::Running, |s| s.phase),
            sent_at: Timestamp::now().unix_seconds(),
            stops_at: shown.and_then(|s| s.stops_at),
            warn_before_seconds: self.settings.warn_before.as_secs(),
            idle_after_seconds: state.idle_after_seconds,
            warning_since: shown.and_then(|s| s.warning_since),
            kept_running: kept.map(|k| state::Kept {
                until: k.until.unix_seconds(),
                by: k.by.clone(),
            }),
            keep_running_for: self.settings.keep_for.clone(),
            page_url: self.settings.page_url.clone(),
            reason: None,
            results,
        }
    }

    /// Records what a push came to; returns the requests not seen before.
    fn note(&self, p: &Plan, ep: JupyterEndpoint, r: Pushed) -> Vec<RawRequest> {
        let mut memory = self.lock();
        let m = memory
            .entry(p.state.id.clone())
            .or_insert_with(|| Memo::new(p.state.started_at));
        if m.started_at != p.state.started_at {
            *m = Memo::new(p.state.started_at);
        }
        match r {
            Pushed::Taken(requests) => {
                self.metrics.jupyterlab_notified(Notified::Ok);
                m.answered = Some(ep);
                m.absent_until = None;
                m.showed = p.shown.is_some();
                m.results.retain(|r| !p.results.contains(r));
                let mut new = Vec::new();
                for raw in requests {
                    if m.seen.contains(&raw.id) {
                        continue;
                    }
                    if m.seen.len() == SEEN_IDS {
                        m.seen.pop_front();
                    }
                    m.seen.push_back(raw.id.clone());
                    new.push(raw);
                }
                new
            }
            Pushed::Absent => {
                self.metrics.jupyterlab_notified(Notified::Absent);
                if m.answered.take().is_some() || m.absent_until.is_none() {
                    tracing::debug!(notebook = %p.state.id, "no JupyterLab extension (404); asking again in 10 min");
                }
                m.absent_until = Some(Instant::now() + ABSENT_RETRY);
                m.showed = false;
                Vec::new()
            }
            Pushed::Failed(why) => {
                self.metrics.jupyterlab_notified(Notified::Error);
                tracing::debug!(notebook = %p.state.id, error = %why, "push to JupyterLab failed");
                // A clear that fails is not tried forever.
                if p.shown.is_none() {
                    m.showed = false;
                }
                Vec::new()
            }
        }
    }

    /// Carries out one valid request: the silence, or the one by
    /// JupyterLab that already keeps the notebook running until then.
    async fn carry_out(&self, state: &NotebookState, k: state::KeepRequest) -> KeepResult {
        let refused = |message: String| {
            self.metrics.jupyterlab_keep_request(KeepCount::Refused);
            KeepResult {
                id: k.id.clone(),
                ok: false,
                message,
            }
        };
        let Some(silences) = &self.silences else {
            return refused("Keep running needs Alertmanager".into());
        };
        let now = Timestamp::now();
        let until = match crate::silences::keep_until(Some(&k.for_), None, now, silences.max()) {
            Ok(u) => u,
            Err(e) => return refused(e.to_string()),
        };
        let by = match state
            .owner
            .as_deref()
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            Some(o) => format!("{o} via JupyterLab"),
            None => "JupyterLab".to_string(),
        };
        // A second click, or a request handed out again, finds the silence
        // the first made: no second one.
        if let Ok(Some(kept)) = silences.for_notebook(state).await {
            if kept.by.ends_with("JupyterLab") && kept.until.0 >= until.0 - time::Duration::MINUTE {
                self.metrics.jupyterlab_keep_request(KeepCount::Ok);
                let at = crate::notebook::clock(kept.until, now.0);
                return KeepResult {
                    id: k.id,
                    ok: true,
                    message: format!("Kept running until {at}"),
                };
            }
        }
        let comment = format!("Keep running {} (from JupyterLab)", state.id);
        let made = silences.keep_running(state, until, &by, &comment).await;
        let (ok, message) = match made {
            Ok(kept) => {
                self.metrics.jupyterlab_keep_request(KeepCount::Ok);
                let at = crate::notebook::clock(kept.until, now.0);
                (true, format!("Kept running until {at}"))
            }
            Err(e) => {
                self.metrics.jupyterlab_keep_request(KeepCount::Error);
                tracing::warn!(notebook = %state.id, error = %crate::logsafe::Escaped(&e), "Keep running from JupyterLab failed");
                (
                    false,
                    "nbidle could not make the silence: Alertmanager did not answer; try nbidle's page"
                        .to_string(),
                )
            }
        };
        KeepResult {
            id: k.id,
            ok,
            message,
        }
    }

    /// Tells `state`'s JupyterLab it is being stopped now, and why; only if
    /// its extension took a push in this life, and within the timeout.
    /// The answer may hand out a Keep running made since the last round:
    /// carried out like a round's, its result pushed right away; `true`
    /// when it made (or found) the silence, and then the stop is not made.
    pub(crate) async fn stopping(&self, state: &NotebookState) -> bool {
        let (ep, results) = {
            let memory = self.lock();
            let Some(m) = memory
                .get(&state.id)
                .filter(|m| m.started_at == state.started_at)
            else {
                return false;
            };
            let Some(ep) = m.answered.clone() else {
                return false;
            };
            (ep, m.results.clone())
        };
        let now = Timestamp::now().unix_seconds();
        let deadline = self
            .exporter
            .facts(&state.id)
            .and_then(|f| f.idle_deadline());
        let shown = Shown {
            phase: Phase::Stopping,
            stops_at: Some(deadline.map_or(now, |d| d.min(now))),
            warning_since: self.warnings.get(state).map(|w| w.since.unix_seconds()),
        };
        let mut body = self.body(state, Some(shown), None, results);
        body.reason = Some(crate::notebook::idle_reason(state.idle_after_seconds));
        let plan = Plan {
            state: state.clone(),
            shown: Some(shown),
            results: body.results.clone(),
        };
        let r = client::push(&self.http, &ep, &body, self.settings.timeout).await;
        // Noted like a round's push: the tab now shows "stopping", so the
        // next round pushes what it shows if the stop is not made.
        let raws = self.note(&plan, ep.clone(), r);
        let kept = self.answer(state, &raws).await;
        if kept.is_some() {
            self.deliver(state, ep).await;
        }
        kept == Some(true)
    }

    /// Pushes `state`'s results now, with what it shows and its silence.
    async fn deliver(&self, state: &NotebookState, ep: JupyterEndpoint) {
        let now = Timestamp::now().unix_seconds();
        let deadline = self
            .exporter
            .facts(&state.id)
            .and_then(|f| f.idle_deadline());
        let warning = self
            .warnings
            .get(state)
            .map(|w| (w.since.unix_seconds(), w.stops_at.unix_seconds()));
        let plan = Plan {
            state: state.clone(),
            shown: interest(
                deadline,
                warning,
                now,
                self.settings.window.as_secs_f64(),
                self.settings.warn_before.as_secs_f64(),
            ),
            results: self
                .lock()
                .get(&state.id)
                .map(|m| m.results.clone())
                .unwrap_or_default(),
        };
        let kept = self.kept(std::slice::from_ref(&plan)).await;
        let body = self.body(state, plan.shown, kept.get(&state.id), plan.results.clone());
        let r = client::push(&self.http, &ep, &body, self.settings.timeout).await;
        // Requests handed out here are answered in the next round's push.
        let raws = self.note(&plan, ep, r);
        let _ = self.answer(state, &raws).await;
    }
}

#[cfg(test)]
mod tests;
