//! Notebooks as StatefulSets selected by label (Apache Submarine, plain
//! Jupyter StatefulSets, anything without Kubeflow's controller).
//!
//! A stop records the replica count in `nbidle.io/replicas` and scales to 0
//! through the `/scale` subresource; a start scales back to that count.
//! PersistentVolumeClaims from `volumeClaimTemplates` outlive a scale to 0
//! (Kubernetes deletes them only with the StatefulSet, and only under a
//! `whenScaled: Delete` retention policy, which nbidle refuses to stop).

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use super::{self as k, Cache, Clients, Events, StopStep};
use crate::backend::{Backend, JupyterEndpoint, ScrapeTarget, StopOutcome, StopRequest};
use crate::error::Result;
use crate::metrics::WatchMetrics;
use crate::notebook::{IdleBounds, NotebookId, NotebookState, Status, Timestamp};

fn strip(s: &mut StatefulSet) {
    k::strip_metadata(&mut s.metadata);
    if let Some(spec) = s.spec.as_mut() {
        // The pod template and claim templates are most of the object;
        // nbidle reads only replicas and the PVC retention policy.
        spec.template = Default::default();
        spec.volume_claim_templates = None;
    }
}

/// Scales through `/scale`, with `current`'s version as the precondition.
async fn scale(api: &Api<StatefulSet>, current: &StatefulSet, replicas: i32) -> kube::Result<()> {
    api.patch_scale(
        &current.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "spec": {"replicas": replicas},
        })),
    )
    .await
    .map(|_| ())
}

fn replicas(s: &StatefulSet) -> i32 {
    // The API defaults a missing `replicas` to 1.
    s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// A scale to 0 under this policy would delete the notebook's volumes.
fn deletes_claims_when_scaled(s: &StatefulSet) -> bool {
    s.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .and_then(|p| p.when_scaled.as_deref())
        == Some("Delete")
}

pub fn state(s: &StatefulSet, bounds: IdleBounds, url_template: &str) -> NotebookState {
    let id = NotebookId::new(s.namespace().unwrap_or_default(), s.name_any());
    let a = s.annotations();
    let policy = k::policy(a, bounds);
    let st = s.status.as_ref();
    let current = st.map_or(0, |st| st.replicas);
    let ready = st.and_then(|st| st.ready_replicas).unwrap_or(0);
    let mut message = policy.problem.clone();
    let mut autostop = policy.autostop;
    if deletes_claims_when_scaled(s) {
        autostop = false;
        message = Some(
            "persistentVolumeClaimRetentionPolicy.whenScaled is Delete: a stop would delete its volumes, so nbidle never stops it".into(),
        );
    }
    let want = replicas(s);
    let status = match (want, current, ready) {
        (0, 0, _) => Status::Stopped,
        (0, _, _) => Status::Stopping,
        (_, _, r) if r > 0 => Status::Running,
        _ => Status::Starting,
    };
    let (stopped_at, stopped_by) = if want == 0 {
        k::recorded_stop(a)
    } else {
        (None, None)
    };
    NotebookState {
        url: Some(k::jupyter_url(url_template, &id)),
        id,
        status,
        message,
        autostop,
        idle_after_seconds: policy.idle_after.as_secs(),
        owner: policy.owner,
        started_at: k::latest([
            a.get(k::STARTED_AT).and_then(|v| Timestamp::parse(v).ok()),
            s.metadata.creation_timestamp.as_ref().and_then(k::k8s_time),
            // Scaled up by someone else after nbidle's stop (whose record a
            // start through nbidle would have removed): started since.
            (want > 0).then(|| k::recorded_stop(a).0).flatten(),
        ]),
        stopped_at,
        stopped_by,
    }
}

pub struct StatefulSetBackend {
    clients: Clients,
    cache: Cache<StatefulSet>,
    events: Events,
    bounds: IdleBounds,
    url_template: String,
}

impl StatefulSetBackend {
    pub fn new(
        clients: Clients,
        namespaces: &[String],
        label_selector: &str,
        url_template: String,
        bounds: IdleBounds,
        metrics: &WatchMetrics,
    ) -> Arc<Self> {
        Arc::new(StatefulSetBackend {
            cache: Cache::watch(&clients, namespaces, Some(label_selector), strip, metrics),
            events: Events::new(clients.requests.clone()),
            clients,
            bounds,
            url_template,
        })
    }

    fn state(&self, s: &StatefulSet) -> NotebookState {
        state(s, self.bounds, &self.url_template)
    }

    fn running(&self) -> Vec<(NotebookState, i32)> {
        self.cache
            .all()
            .iter()
            .map(|s| (self.state(s), replicas(s)))
            .filter(|(s, _)| s.status == Status::Running)
            .collect()
    }
}

#[async_trait]
impl Backend for StatefulSetBackend {
    async fn list(&self) -> Result<Vec<NotebookState>> {
        Ok(self.cache.states(|s| self.state(s)))
    }

    async fn get(&self, id: &NotebookId) -> Result<NotebookState> {
        self.cache.state(id, |s| self.state(s))
    }

    async fn stop(&self, id: &NotebookId, req: StopRequest) -> Result<StopOutcome> {
        let api = &self.cache.api(&self.clients.requests, id)?;
        let req = &req;
        let step = self.clients.write(id, || async move {
            let s = api.get(&id.name).await?;
            let n = replicas(&s);
            if n == 0 {
                return Ok(StopStep::Already(s));
            }
            if deletes_claims_when_scaled(&s) {
                return Ok(StopStep::Refused(
                    "its persistentVolumeClaimRetentionPolicy.whenScaled is Delete; scaling it to 0 would delete its volumes".into(),
                ));
            }
            let st = self.state(&s);
            let s = match k::check_stop(s, &st, req) {
                Ok(s) => s,
                Err(refused) => return Ok(refused),
            };
            let mut ann = k::stop_annotations(&req.cause, Timestamp::now());
            ann.insert(k::REPLICAS.into(), n.to_string().into());
            let annotated = k::annotate(api, Some(&s), &id.name, ann).await?;
            // The scale carries the annotated version as its precondition: a
            // change in between (another replica's stop, a user's edit)
            // conflicts, and the step starts over on the new object.
            scale(api, &annotated, 0).await?;
            Ok(StopStep::Done(api.get(&id.name).await?))
        })
        .await?;
        k::finish_stop(&self.events, id, req, step, |s| self.state(s)).await
    }

    async fn start(&self, id: &NotebookId) -> Result<NotebookState> {
        let api = &self.cache.api(&self.clients.requests, id)?;
        let step = self
            .clients
            .write(id, || async move {
                let s = api.get(&id.name).await?;
                if replicas(&s) > 0 {
                    return Ok((false, s));
                }
                let n = s
                    .annotations()
                    .get(k::REPLICAS)
                    .and_then(|v| v.parse::<i32>().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or(1);
                // First the record of the start (which an old alert's stop then
                // finds: started since), then the scale with the recorded
                // version as its precondition, as for a stop.
                let start = k::start_annotations(Timestamp::now());
                let annotated = k::annotate(api, Some(&s), &id.name, start).await?;
                scale(api, &annotated, n).await?;
                // The remembered count has served; should this fail, the next
                // stop overwrites it.
                let mut served = serde_json::Map::new();
                served.insert(k::REPLICAS.into(), serde_json::Value::Null);
                let s = k::annotate(api, None, &id.name, served).await?;
                Ok((true, s))
            })
            .await?;
        match step {
            (true, s) => {
                tracing::info!(notebook = %id, "notebook starting");
                self.events
                    .publish(
                        &s,
                        "Started",
                        format!(
                            "scaled to {} by nbidle's API on its existing volumes",
                            replicas(&s)
                        ),
                    )
                    .await;
                Ok(self.state(&s))
            }
            (false, s) => Ok(self.state(&s)),
        }
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
            .map(|(s, n)| JupyterEndpoint {
                pods: (0..n).map(|i| format!("{}-{i}", s.id.name)).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sts(v: serde_json::Value) -> StatefulSet {
        serde_json::from_value(v).unwrap()
    }

    fn bounds() -> IdleBounds {
        IdleBounds {
            default: Duration::from_secs(1800),
            min: None,
            max: None,
        }
    }

    #[test]
    fn status_from_replicas() {
        let mk = |want: i32, current: i32, ready: i32| {
            sts(json!({"metadata": {"name": "s", "namespace": "ns"},
                "spec": {"replicas": want, "selector": {}, "serviceName": "s",
                         "template": {}},
                "status": {"replicas": current, "readyReplicas": ready}}))
        };
        let st = |s: StatefulSet| state(&s, bounds(), "http://{name}.{namespace}.svc/").status;
        assert_eq!(st(mk(1, 1, 1)), Status::Running);
        assert_eq!(st(mk(1, 1, 0)), Status::Starting);
        assert_eq!(st(mk(0, 1, 1)), Status::Stopping);
        assert_eq!(st(mk(0, 0, 0)), Status::Stopped);
    }

    #[test]
    fn a_set_that_would_lose_its_volumes_is_never_auto_stopped() {
        let s = sts(json!({"metadata": {"name": "s", "namespace": "ns"},
            "spec": {"replicas": 1, "selector": {}, "serviceName": "s", "template": {},
                     "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}}}));
        let st = state(&s, bounds(), "http://x/");
        assert!(!st.autostop);
        assert!(st.message.unwrap().contains("whenScaled"));
    }

    #[test]
    fn strip_keeps_replicas_and_retention_only() {
        let mut s = sts(json!({"metadata": {"name": "s", "namespace": "ns",
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"replicas": 2, "selector": {}, "serviceName": "s",
                     "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                     "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Retain"}}}));
        strip(&mut s);
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("containers") && !text.contains("managedFields"));
        assert_eq!(replicas(&s), 2);
        assert!(!deletes_claims_when_scaled(&s));
    }
}
