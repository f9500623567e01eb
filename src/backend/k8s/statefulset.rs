//! Notebooks as StatefulSets selected by label (Apache Submarine, plain
//! Jupyter StatefulSets, anything without Kubeflow's controller).
//!
//! A stop records the replica count in `nbidle.io/replicas` and scales to 0
//! through the `/scale` subresource; a start scales back to that count.
//! PersistentVolumeClaims from `volumeClaimTemplates` outlive a scale to 0
//! (Kubernetes deletes them only with the StatefulSet, and only under a
//! `whenScaled: Delete` retention policy, which nbidle refuses to stop).
//!
//! Only what is particular to StatefulSets is here, as their
//! [`NotebookKind`]; the [`Driver`] does the rest.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use super::driver::{Driver, NotebookKind};
use super::{self as k, Annotations};
use crate::notebook::{IdleBounds, NotebookId, NotebookState, Status, Timestamp};

/// A StatefulSet's replica count before nbidle scaled it to 0.
pub(crate) const REPLICAS: &str = "nbidle.io/replicas";

/// The backend for StatefulSets selected by label.
pub(crate) type StatefulSetBackend = Driver<StatefulSet>;

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

fn state(s: &StatefulSet, bounds: IdleBounds, url_template: &str) -> NotebookState {
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
            a.get(k::STARTED_AT)
                .and_then(|v| v.parse::<Timestamp>().ok()),
            s.metadata.creation_timestamp.as_ref().and_then(k::k8s_time),
            // Scaled up by someone else after nbidle's stop (whose record a
            // start through nbidle would have removed): started since.
            (want > 0).then(|| k::recorded_stop(a).0).flatten(),
        ]),
        stopped_at,
        stopped_by,
    }
}

impl NotebookKind for StatefulSet {
    fn strip(&mut self) {
        k::strip_metadata(&mut self.metadata);
        if let Some(spec) = self.spec.as_mut() {
            // The pod template and claim templates are most of the object;
            // nbidle reads only replicas and the PVC retention policy.
            spec.template = Default::default();
            spec.volume_claim_templates = None;
        }
    }

    fn state(&self, bounds: IdleBounds, url_template: &str) -> NotebookState {
        state(self, bounds, url_template)
    }

    fn pods(&self) -> Vec<String> {
        let name = self.name_any();
        (0..replicas(self)).map(|i| format!("{name}-{i}")).collect()
    }

    fn stop_requested(&self) -> bool {
        replicas(self) == 0
    }

    fn stop_refused(&self) -> Option<String> {
        deletes_claims_when_scaled(self).then(|| {
            "its persistentVolumeClaimRetentionPolicy.whenScaled is Delete; scaling it to 0 would delete its volumes".into()
        })
    }

    fn mark_stop(&self, _: Timestamp, record: &mut Annotations) {
        // What a start scales back to.
        record.insert(REPLICAS.into(), replicas(self).to_string().into());
    }

    async fn after_stop(api: &Api<Self>, annotated: Self) -> kube::Result<Self> {
        // The scale carries the annotated version as its precondition: a
        // change in between (another replica's stop, a user's edit)
        // conflicts, and the stop starts over on the new object.
        scale(api, &annotated, 0).await?;
        api.get(&annotated.name_any()).await
    }

    fn mark_start(&self, _: &mut Annotations) {}

    async fn after_start(api: &Api<Self>, annotated: Self) -> kube::Result<Self> {
        let n = annotated
            .annotations()
            .get(REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(1);
        // With the recorded version as its precondition, as for a stop.
        scale(api, &annotated, n).await?;
        // The remembered count has served; should this fail, the next stop
        // overwrites it.
        let mut served = Annotations::new();
        served.insert(REPLICAS.into(), serde_json::Value::Null);
        k::annotate(api, None, &annotated.name_any(), served).await
    }

    fn start_note(&self) -> String {
        format!(
            "scaled to {} by nbidle's API on its existing volumes",
            replicas(self)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(v: serde_json::Value) -> StatefulSet {
        serde_json::from_value(v).unwrap()
    }

    use crate::backend::k8s::tests::half_an_hour as bounds;

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
        s.strip();
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("containers") && !text.contains("managedFields"));
        assert_eq!(replicas(&s), 2);
        assert!(!deletes_claims_when_scaled(&s));
    }

    #[test]
    fn a_stop_remembers_the_replicas_a_start_scales_back_to() {
        let s = sts(json!({"metadata": {"name": "s", "namespace": "ns"},
            "spec": {"replicas": 3, "selector": {}, "serviceName": "s", "template": {}}}));
        assert!(!s.stop_requested() && s.stop_refused().is_none());
        assert_eq!(s.pods(), ["s-0", "s-1", "s-2"]);
        let at = "2026-01-02T00:00:00Z".parse::<Timestamp>().unwrap();
        let mut record = k::stop_annotations(&crate::notebook::StopCause::User { by: None }, at);
        s.mark_stop(at, &mut record);
        assert_eq!(record[REPLICAS], json!("3"));
        let zero = sts(json!({"metadata": {"name": "s", "namespace": "ns"},
            "spec": {"replicas": 0, "selector": {}, "serviceName": "s", "template": {}}}));
        assert!(zero.stop_requested());
        assert!(zero.pods().is_empty());
    }

    #[test]
    fn a_set_that_would_lose_its_volumes_refuses_any_stop() {
        let s = sts(json!({"metadata": {"name": "s", "namespace": "ns"},
            "spec": {"replicas": 1, "selector": {}, "serviceName": "s", "template": {},
                     "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}}}));
        assert!(s.stop_refused().unwrap().contains("whenScaled"));
    }
}
