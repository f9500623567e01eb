//! The one [`Backend`] for notebooks that are Kubernetes objects,
//! [`Driver<K>`], generic over the kind `K` ([`NotebookKind`]).
//!
//! The driver does what every kind does alike: reads from `K`'s watched
//! cache (an unknown notebook is `Unavailable` while a watch is not current),
//! writes through the API server within the clients' deadline, reads the
//! object fresh for every write and retries a conflicting one, checks an
//! idle alert's stop against the fresh object (opt-out, not running, the
//! stale-start guard), records each stop and start as an Event, and serves
//! the running notebooks as scrape targets and Jupyter endpoints. A kind
//! answers only questions about its own objects.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::Resource;
use serde::de::DeserializeOwned;

use super::cache::Cache;
use super::{annotate, describe_stop, start_annotations, stop_annotations};
use super::{Annotations, Clients, Events};
use crate::backend::{started_since, Backend, JupyterEndpoint, ScrapeTarget};
use crate::backend::{StopOutcome, StopRequest};
use crate::error::{Error, Result};
use crate::metrics::WatchMetrics;
use crate::notebook::{IdleBounds, NotebookId, NotebookState, Status, StopCause, Timestamp};

/// A Kubernetes kind whose objects are notebooks: what the [`Driver`] needs
/// to know about it, and nothing it does alike for every kind.
pub(crate) trait NotebookKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Drops what nbidle never reads before the object enters the cache.
    fn strip(&mut self);

    /// The notebook's state as nbidle reports it.
    fn state(&self, bounds: IdleBounds, url_template: &str) -> NotebookState;

    /// Its pods while it runs, published as `nbidle_notebook_pod_info`.
    fn pods(&self) -> Vec<String>;

    /// A stop was asked for (by nbidle or anyone else) and not undone: a
    /// stop has nothing left to do, a start has.
    fn stop_requested(&self) -> bool;

    /// Why nobody may stop it (naming the field), if so.
    fn stop_refused(&self) -> Option<String> {
        None
    }

    /// What this kind's stop writes besides nbidle's record of it, in the
    /// same preconditioned patch.
    fn mark_stop(&self, at: Timestamp, record: &mut Annotations);

    /// The rest of a stop, after that patch: `annotated` is what it returned,
    /// whose `resourceVersion` is the precondition of any further write.
    /// Returns the object as the stop leaves it.
    fn after_stop(
        api: &Api<Self>,
        annotated: Self,
    ) -> impl Future<Output = kube::Result<Self>> + Send {
        let _ = api;
        std::future::ready(Ok(annotated))
    }

    /// What this kind's start writes besides nbidle's record of it.
    fn mark_start(&self, record: &mut Annotations);

    /// The rest of a start, as [`NotebookKind::after_stop`] is of a stop.
    fn after_start(
        api: &Api<Self>,
        annotated: Self,
    ) -> impl Future<Output = kube::Result<Self>> + Send {
        let _ = api;
        std::future::ready(Ok(annotated))
    }

    /// The note of the Event a start records on the object it left.
    fn start_note(&self) -> String;
}

/// The backend for notebooks of kind `K`.
pub(crate) struct Driver<K: NotebookKind> {
    clients: Clients,
    cache: Cache<K>,
    events: Events,
    bounds: IdleBounds,
    url_template: String,
}

impl<K: NotebookKind> Driver<K> {
    /// Starts watching `K` in `namespaces` (all when empty), selected by
    /// `label_selector`.
    pub(crate) fn new(
        clients: Clients,
        namespaces: &[String],
        label_selector: Option<&str>,
        url_template: String,
        bounds: IdleBounds,
        metrics: &WatchMetrics,
    ) -> Arc<Self> {
        Arc::new(Driver {
            cache: Cache::watch(&clients, namespaces, label_selector, K::strip, metrics),
            events: Events::new(clients.requests.clone()),
            clients,
            bounds,
            url_template,
        })
    }

    fn state(&self, obj: &K) -> NotebookState {
        obj.state(self.bounds, &self.url_template)
    }

    fn running(&self) -> Vec<(NotebookState, Arc<K>)> {
        self.cache
            .all()
            .into_iter()
            .map(|obj| (self.state(&obj), obj))
            .filter(|(s, _)| s.status == Status::Running)
            .collect()
    }
}

/// The checks a stop makes on the object it has just read (not the cache,
/// which may lag): an idle alert's stop respects the notebook's opt-out and
/// needs it running (its start time is known only then); any stop respects
/// the stale-start guard. `Some` ends the stop with that outcome.
fn refusal<T>(st: &NotebookState, req: &StopRequest) -> Option<fn(T) -> StopOutcome<T>> {
    if matches!(req.cause, StopCause::IdleAlert { .. }) {
        if !st.autostop {
            return Some(StopOutcome::OptedOut);
        }
        if st.status != Status::Running {
            return Some(StopOutcome::NotRunning);
        }
    }
    if started_since(st.started_at, req.unless_started_after) {
        return Some(StopOutcome::StartedSince);
    }
    None
}

#[async_trait]
impl<K: NotebookKind> Backend for Driver<K> {
    async fn list(&self) -> Result<Vec<NotebookState>> {
        Ok(self.cache.states(|obj| self.state(obj)))
    }

    async fn get(&self, id: &NotebookId) -> Result<NotebookState> {
        self.cache.state(id, |obj| self.state(obj))
    }

    async fn stop(&self, id: &NotebookId, req: StopRequest) -> Result<StopOutcome> {
        let api = &self.cache.api(&self.clients.requests, id)?;
        let req = &req;
        // `Err(why)`: refused whoever asks.
        let decided: Result<StopOutcome<K>, String> = self
            .clients
            .write(id, || async move {
                let obj = api.get(&id.name).await?;
                if obj.stop_requested() {
                    return Ok(Ok(StopOutcome::AlreadyStopped(obj)));
                }
                if let Some(why) = obj.stop_refused() {
                    return Ok(Err(why));
                }
                if let Some(outcome) = refusal(&self.state(&obj), req) {
                    return Ok(Ok(outcome(obj)));
                }
                let at = Timestamp::now();
                let mut record = stop_annotations(&req.cause, at);
                obj.mark_stop(at, &mut record);
                let annotated = annotate(api, Some(&obj), &id.name, record).await?;
                Ok(Ok(StopOutcome::Stopped(
                    K::after_stop(api, annotated).await?,
                )))
            })
            .await?;
        let outcome = decided.map_err(|why| Error::invalid("notebook", format!("{id}: {why}")))?;
        if let StopOutcome::Stopped(obj) = &outcome {
            tracing::info!(notebook = %id, trigger = req.cause.trigger(), "notebook stopping");
            self.events
                .publish(obj, "Stopped", describe_stop(&req.cause))
                .await;
        }
        Ok(outcome.map(|obj| self.state(&obj)))
    }

    async fn start(&self, id: &NotebookId) -> Result<NotebookState> {
        let api = &self.cache.api(&self.clients.requests, id)?;
        let (started, obj) = self
            .clients
            .write(id, || async move {
                let obj = api.get(&id.name).await?;
                if !obj.stop_requested() {
                    return Ok((false, obj));
                }
                // First the record of the start (which an old alert's stop
                // then finds: started since), then the kind's own writes.
                let mut record = start_annotations(Timestamp::now());
                obj.mark_start(&mut record);
                let annotated = annotate(api, Some(&obj), &id.name, record).await?;
                Ok((true, K::after_start(api, annotated).await?))
            })
            .await?;
        if started {
            tracing::info!(notebook = %id, "notebook starting");
            self.events.publish(&obj, "Started", obj.start_note()).await;
        }
        Ok(self.state(&obj))
    }

    async fn scrape_targets(&self) -> Result<Vec<ScrapeTarget>> {
        Ok(self
            .running()
            .iter()
            .filter_map(|(s, _)| ScrapeTarget::from_url(&s.id, s.url.as_deref()?))
            .collect())
    }

    async fn jupyter_endpoints(&self) -> Result<Vec<JupyterEndpoint>> {
        Ok(self
            .running()
            .into_iter()
            .map(|(s, obj)| JupyterEndpoint {
                pods: obj.pods(),
                base_url: s.url.unwrap_or_default(),
                token: None,
                id: s.id,
            })
            .collect())
    }

    async fn synced(&self) {
        self.cache.synced().await
    }

    fn current(&self) -> bool {
        self.cache.current()
    }

    async fn shutdown(&self) {
        self.cache.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse::<Timestamp>().unwrap()
    }

    fn state(status: Status, autostop: bool, started_at: &str) -> NotebookState {
        NotebookState {
            id: NotebookId::new("ns", "nb"),
            status,
            message: None,
            autostop,
            idle_after_seconds: 1800,
            owner: None,
            url: None,
            started_at: Some(t(started_at)),
            stopped_at: None,
            stopped_by: None,
        }
    }

    fn idle_alert(unless_started_after: &str) -> StopRequest {
        StopRequest {
            cause: StopCause::IdleAlert {
                alertname: "NotebookIdle".into(),
                alert_starts_at: t(unless_started_after),
            },
            unless_started_after: Some(t(unless_started_after)),
        }
    }

    /// Which outcome `refusal` ends a stop with, by name.
    fn refused(st: &NotebookState, req: &StopRequest) -> Option<&'static str> {
        refusal::<()>(st, req).map(|outcome| match outcome(()) {
            StopOutcome::OptedOut(()) => "opted_out",
            StopOutcome::NotRunning(()) => "not_running",
            StopOutcome::StartedSince(()) => "started_since",
            StopOutcome::Stopped(()) | StopOutcome::AlreadyStopped(()) => "unexpected",
        })
    }

    #[test]
    fn a_fresh_read_refuses_what_an_idle_alert_must_not_stop() {
        let alert = idle_alert("2026-01-01T10:00:00Z");
        let old = "2026-01-01T09:00:00Z";
        assert_eq!(refused(&state(Status::Running, true, old), &alert), None);
        assert_eq!(
            refused(&state(Status::Running, false, old), &alert),
            Some("opted_out")
        );
        assert_eq!(
            refused(&state(Status::Starting, true, old), &alert),
            Some("not_running")
        );
        assert_eq!(
            refused(
                &state(Status::Running, true, "2026-01-01T10:30:00Z"),
                &alert
            ),
            Some("started_since")
        );
    }

    #[test]
    fn a_users_stop_is_refused_by_nothing_but_its_own_guard() {
        let user = StopRequest {
            cause: StopCause::User { by: None },
            unless_started_after: None,
        };
        for st in [
            state(Status::Starting, false, "2026-01-01T10:30:00Z"),
            state(Status::Failed, true, "2026-01-01T09:00:00Z"),
        ] {
            assert_eq!(refused(&st, &user), None);
        }
    }
}
