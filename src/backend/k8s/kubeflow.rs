//! Kubeflow `Notebook` resources (kubeflow.org/v1).
//!
//! A stop sets `kubeflow-resource-stopped`, the annotation Kubeflow's own UI
//! sets: Kubeflow's controller scales the notebook's StatefulSet to 0 and
//! keeps the Notebook, its PVCs and its Service, so Kubeflow's UI shows the
//! notebook as stopped and its Start button works. A start removes it.
//!
//! Status comes from the Notebook's `status`, which Kubeflow's controller
//! fills from its StatefulSet (`readyReplicas`) and pod (`containerState`),
//! so nbidle watches one resource, not three.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ContainerState;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use super::{self as k, Cache, Clients, Events, StopStep};
use crate::backend::{Backend, JupyterEndpoint, ScrapeTarget, StopOutcome, StopRequest};
use crate::error::Result;
use crate::metrics::WatchMetrics;
use crate::notebook::{IdleBounds, NotebookId, NotebookState, Status, Timestamp};

/// The parts of a Notebook nbidle reads. Everything else (the pod template
/// above all) is skipped when the object is decoded, so the cache holds
/// only this.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Notebook {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NotebookStatus>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotebookStatus {
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_state: Option<ContainerState>,
}

impl Resource for Notebook {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Notebook".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "kubeflow.org".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "notebooks".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Waiting reasons that will not fix themselves: the notebook is `failed`.
const FAILING: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

fn strip(nb: &mut Notebook) {
    k::strip_metadata(&mut nb.metadata);
}

/// The notebook's state as nbidle reports it.
pub fn state(nb: &Notebook, bounds: IdleBounds, url_template: &str) -> NotebookState {
    let id = NotebookId::new(nb.namespace().unwrap_or_default(), nb.name_any());
    let a = nb.annotations();
    let policy = k::policy(a, bounds);
    let ready = nb.status.as_ref().map_or(0, |s| s.ready_replicas);
    let cs = nb.status.as_ref().and_then(|s| s.container_state.as_ref());
    let stopped_mark = a.get(k::KUBEFLOW_STOPPED);
    let mut message = policy.problem.clone();
    let status = if stopped_mark.is_some() {
        if ready > 0 {
            Status::Stopping
        } else {
            Status::Stopped
        }
    } else if ready > 0 {
        Status::Running
    } else if let Some(w) = cs
        .and_then(|c| c.waiting.as_ref())
        .filter(|w| w.reason.as_deref().is_some_and(|r| FAILING.contains(&r)))
    {
        message = Some(format!(
            "{}: {}",
            w.reason.as_deref().unwrap_or_default(),
            w.message.as_deref().unwrap_or_default()
        ));
        Status::Failed
    } else {
        Status::Starting
    };
    let (recorded_at, cause) = k::recorded_stop(a);
    let (stopped_at, stopped_by) = match stopped_mark {
        // nbidle writes one instant into both annotations; a different one
        // means Kubeflow's UI stopped it, and nbidle's record is of an
        // earlier stop.
        Some(mark) if a.get(k::STOPPED_AT) == Some(mark) => (recorded_at, cause),
        Some(mark) => (Timestamp::parse(mark).ok(), None),
        None => (None, None),
    };
    let running_since = cs
        .and_then(|c| c.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .and_then(k::k8s_time);
    let started_at = k::latest([
        a.get(k::STARTED_AT).and_then(|v| Timestamp::parse(v).ok()),
        running_since,
        nb.metadata
            .creation_timestamp
            .as_ref()
            .and_then(k::k8s_time),
        // Not stopped now but stopped then (by nbidle, or in Kubeflow's UI,
        // which leaves nbidle's annotations): started since, whoever did it.
        stopped_mark.is_none().then_some(recorded_at).flatten(),
    ]);
    NotebookState {
        url: Some(k::jupyter_url(url_template, &id)),
        id,
        status,
        message,
        autostop: policy.autostop,
        idle_after_seconds: policy.idle_after.as_secs(),
        owner: policy.owner,
        started_at,
        stopped_at,
        stopped_by,
    }
}

pub struct KubeflowBackend {
    clients: Clients,
    cache: Cache<Notebook>,
    events: Events,
    bounds: IdleBounds,
    url_template: String,
}

impl KubeflowBackend {
    pub fn new(
        clients: Clients,
        namespaces: &[String],
        label_selector: Option<&str>,
        url_template: String,
        bounds: IdleBounds,
        metrics: &WatchMetrics,
    ) -> Arc<Self> {
        Arc::new(KubeflowBackend {
            cache: Cache::watch(&clients, namespaces, label_selector, strip, metrics),
            events: Events::new(clients.requests.clone()),
            clients,
            bounds,
            url_template,
        })
    }

    fn state(&self, nb: &Notebook) -> NotebookState {
        state(nb, self.bounds, &self.url_template)
    }
}

#[async_trait]
impl Backend for KubeflowBackend {
    async fn list(&self) -> Result<Vec<NotebookState>> {
        Ok(self.cache.states(|nb| self.state(nb)))
    }

    async fn get(&self, id: &NotebookId) -> Result<NotebookState> {
        self.cache.state(id, |nb| self.state(nb))
    }

    async fn stop(&self, id: &NotebookId, req: StopRequest) -> Result<StopOutcome> {
        let api = &self.cache.api(&self.clients.requests, id)?;
        let req = &req;
        let step = self
            .clients
            .write(id, || async move {
                let nb = api.get(&id.name).await?;
                if nb.annotations().contains_key(k::KUBEFLOW_STOPPED) {
                    return Ok(StopStep::Already(nb));
                }
                let st = self.state(&nb);
                let nb = match k::check_stop(nb, &st, req) {
                    Ok(nb) => nb,
                    Err(refused) => return Ok(refused),
                };
                let now = Timestamp::now();
                let mut ann = k::stop_annotations(&req.cause, now);
                ann.insert(k::KUBEFLOW_STOPPED.into(), now.to_string().into());
                let nb = k::annotate(api, Some(&nb), &id.name, ann).await?;
                Ok(StopStep::Done(nb))
            })
            .await?;
        k::finish_stop(&self.events, id, req, step, |nb| self.state(nb)).await
    }

    async fn start(&self, id: &NotebookId) -> Result<NotebookState> {
        let api = &self.cache.api(&self.clients.requests, id)?;
        let step = self
            .clients
            .write(id, || async move {
                let nb = api.get(&id.name).await?;
                if !nb.annotations().contains_key(k::KUBEFLOW_STOPPED) {
                    return Ok((false, nb));
                }
                let mut ann = k::start_annotations(Timestamp::now());
                ann.insert(k::KUBEFLOW_STOPPED.into(), serde_json::Value::Null);
                let nb = k::annotate(api, Some(&nb), &id.name, ann).await?;
                Ok((true, nb))
            })
            .await?;
        match step {
            (true, nb) => {
                tracing::info!(notebook = %id, "notebook starting");
                self.events
                    .publish(
                        &nb,
                        "Started",
                        "started through nbidle's API on its existing volumes".into(),
                    )
                    .await;
                Ok(self.state(&nb))
            }
            (false, nb) => Ok(self.state(&nb)),
        }
    }

    async fn scrape_targets(&self) -> Result<Vec<ScrapeTarget>> {
        Ok(self
            .running()
            .iter()
            .filter_map(|s| ScrapeTarget::from_url(&s.id, s.url.as_deref()?))
            .collect())
    }

    async fn jupyter_endpoints(&self) -> Result<Vec<JupyterEndpoint>> {
        Ok(self
            .running()
            .into_iter()
            .map(|s| JupyterEndpoint {
                // Kubeflow's StatefulSet runs one pod, `<name>-0`.
                pods: vec![format!("{}-0", s.id.name)],
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
        self.cache.stop();
    }
}

impl KubeflowBackend {
    fn running(&self) -> Vec<NotebookState> {
        self.cache
            .all()
            .iter()
            .map(|nb| self.state(nb))
            .filter(|s| s.status == Status::Running)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn nb(v: serde_json::Value) -> Notebook {
        serde_json::from_value(v).unwrap()
    }

    fn bounds() -> IdleBounds {
        IdleBounds {
            default: Duration::from_secs(1800),
            min: None,
            max: None,
        }
    }

    const URL: &str = "http://{name}.{namespace}.svc/notebook/{namespace}/{name}/";

    #[test]
    fn status_from_kubeflow_status_and_annotations() {
        let base = json!({"metadata": {"name": "nb", "namespace": "ns",
            "creationTimestamp": "2026-01-01T00:00:00Z"}});
        let mut v = base.clone();
        v["status"] = json!({"readyReplicas": 1});
        assert_eq!(state(&nb(v.clone()), bounds(), URL).status, Status::Running);
        v["metadata"]["annotations"] = json!({k::KUBEFLOW_STOPPED: "2026-01-02T00:00:00Z"});
        let s = state(&nb(v.clone()), bounds(), URL);
        assert_eq!(s.status, Status::Stopping);
        // Stopped in Kubeflow's UI: the time comes from Kubeflow's annotation.
        assert_eq!(s.stopped_at.unwrap().to_string(), "2026-01-02T00:00:00Z");
        assert_eq!(s.stopped_by, None);
        v["status"] = json!({"readyReplicas": 0});
        assert_eq!(state(&nb(v), bounds(), URL).status, Status::Stopped);

        let mut v = base.clone();
        v["status"] = json!({"readyReplicas": 0, "containerState":
            {"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}}});
        let s = state(&nb(v), bounds(), URL);
        assert_eq!(s.status, Status::Failed);
        assert!(s.message.unwrap().contains("ImagePullBackOff"));
        let mut v = base.clone();
        v["status"] = json!({"containerState": {"waiting": {"reason": "ContainerCreating"}}});
        assert_eq!(state(&nb(v), bounds(), URL).status, Status::Starting);
        assert_eq!(
            state(&nb(base), bounds(), URL).url.as_deref(),
            Some("http://nb.ns.svc/notebook/ns/nb/")
        );
    }

    #[test]
    fn a_stop_in_kubeflows_ui_is_not_reported_as_nbidles_earlier_one() {
        // nbidle stopped it at 01-02 (same instant in both annotations)...
        let mut v = json!({"metadata": {"name": "nb", "namespace": "ns",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {k::KUBEFLOW_STOPPED: "2026-01-02T00:00:00Z",
                k::STOPPED_AT: "2026-01-02T00:00:00Z", k::STOPPED_BY: "user",
                k::STOP_REASON: "api"}}});
        let s = state(&nb(v.clone()), bounds(), URL);
        assert_eq!(s.stopped_by, Some(crate::notebook::StopCause::User));
        // ...then Kubeflow's UI started it (nbidle's record stays): started
        // since the stop, so alerts from before it are stale.
        v["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(k::KUBEFLOW_STOPPED);
        v["status"] = json!({"readyReplicas": 1});
        let s = state(&nb(v.clone()), bounds(), URL);
        assert_eq!(s.started_at.unwrap().to_string(), "2026-01-02T00:00:00Z");
        // ...and stopped it again at 01-03: not nbidle's stop.
        v["metadata"]["annotations"][k::KUBEFLOW_STOPPED] = json!("2026-01-03T00:00:00Z");
        v["status"] = json!({"readyReplicas": 0});
        let s = state(&nb(v), bounds(), URL);
        assert_eq!(s.stopped_by, None);
        assert_eq!(s.stopped_at.unwrap().to_string(), "2026-01-03T00:00:00Z");
    }

    #[test]
    fn started_at_is_the_latest_start_known() {
        let v = json!({"metadata": {"name": "nb", "namespace": "ns",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {k::STARTED_AT: "2026-01-03T00:00:00Z"}},
            "status": {"readyReplicas": 1, "containerState":
                {"running": {"startedAt": "2026-01-02T00:00:00Z"}}}});
        let s = state(&nb(v), bounds(), URL);
        assert_eq!(s.started_at.unwrap().to_string(), "2026-01-03T00:00:00Z");
    }

    #[test]
    fn the_pod_template_is_not_kept() {
        let v = json!({"metadata": {"name": "nb", "namespace": "ns"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let n = nb(v);
        assert!(!serde_json::to_string(&n).unwrap().contains("containers"));
    }
}
