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
//!
//! Only what is particular to Notebooks is here, as their [`NotebookKind`];
//! the [`Driver`] does the rest.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::ContainerState;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use super::driver::{Driver, NotebookKind};
use super::{self as k, Annotations};
use crate::notebook::{IdleBounds, NotebookId, NotebookState, Status, Timestamp};

/// Set by nbidle (and Kubeflow's UI) to stop a Kubeflow notebook; its value is
/// the RFC 3339 time of the stop. Kubeflow's controller scales to 0.
pub(crate) const KUBEFLOW_STOPPED: &str = "kubeflow-resource-stopped";

/// The backend for Kubeflow Notebooks.
pub(crate) type KubeflowBackend = Driver<Notebook>;

/// The parts of a Notebook nbidle reads. Everything else (the pod template
/// above all) is skipped when the object is decoded, so the cache holds
/// only this.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct Notebook {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NotebookStatus>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NotebookStatus {
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

/// The notebook's state as nbidle reports it.
fn state(nb: &Notebook, bounds: IdleBounds, url_template: &str) -> NotebookState {
    let id = NotebookId::new(nb.namespace().unwrap_or_default(), nb.name_any());
    let a = nb.annotations();
    let policy = k::policy(a, bounds);
    let ready = nb.status.as_ref().map_or(0, |s| s.ready_replicas);
    let cs = nb.status.as_ref().and_then(|s| s.container_state.as_ref());
    let stopped_mark = a.get(KUBEFLOW_STOPPED);
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
        Some(mark) => (mark.parse::<Timestamp>().ok(), None),
        None => (None, None),
    };
    let running_since = cs
        .and_then(|c| c.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .and_then(k::k8s_time);
    let started_at = k::latest([
        a.get(k::STARTED_AT)
            .and_then(|v| v.parse::<Timestamp>().ok()),
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

impl NotebookKind for Notebook {
    fn strip(&mut self) {
        k::strip_metadata(&mut self.metadata);
    }

    fn state(&self, bounds: IdleBounds, url_template: &str) -> NotebookState {
        state(self, bounds, url_template)
    }

    fn pods(&self) -> Vec<String> {
        // Kubeflow's StatefulSet runs one pod, `<name>-0`.
        vec![format!("{}-0", self.name_any())]
    }

    fn stop_requested(&self) -> bool {
        self.annotations().contains_key(KUBEFLOW_STOPPED)
    }

    fn mark_stop(&self, at: Timestamp, record: &mut Annotations) {
        // The instant of nbidle's own record: `state` tells nbidle's stop
        // from a later one in Kubeflow's UI by the two being equal.
        record.insert(KUBEFLOW_STOPPED.into(), at.to_string().into());
    }

    fn mark_start(&self, record: &mut Annotations) {
        record.insert(KUBEFLOW_STOPPED.into(), serde_json::Value::Null);
    }

    fn start_note(&self) -> String {
        "started through nbidle's API on its existing volumes".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nb(v: serde_json::Value) -> Notebook {
        serde_json::from_value(v).unwrap()
    }

    use crate::backend::k8s::tests::half_an_hour as bounds;

    const URL: &str = "http://{name}.{namespace}.svc/notebook/{namespace}/{name}/";

    #[test]
    fn status_from_kubeflow_status_and_annotations() {
        let base = json!({"metadata": {"name": "nb", "namespace": "ns",
            "creationTimestamp": "2026-01-01T00:00:00Z"}});
        let mut v = base.clone();
        v["status"] = json!({"readyReplicas": 1});
        assert_eq!(state(&nb(v.clone()), bounds(), URL).status, Status::Running);
        v["metadata"]["annotations"] = json!({KUBEFLOW_STOPPED: "2026-01-02T00:00:00Z"});
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
            "annotations": {KUBEFLOW_STOPPED: "2026-01-02T00:00:00Z",
                k::STOPPED_AT: "2026-01-02T00:00:00Z", k::STOPPED_BY: "user",
                k::STOP_REASON: "api"}}});
        let s = state(&nb(v.clone()), bounds(), URL);
        assert_eq!(
            s.stopped_by,
            Some(crate::notebook::StopCause::User { by: None })
        );
        // ...then Kubeflow's UI started it (nbidle's record stays): started
        // since the stop, so alerts from before it are stale.
        v["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(KUBEFLOW_STOPPED);
        v["status"] = json!({"readyReplicas": 1});
        let s = state(&nb(v.clone()), bounds(), URL);
        assert_eq!(s.started_at.unwrap().to_string(), "2026-01-02T00:00:00Z");
        // ...and stopped it again at 01-03: not nbidle's stop.
        v["metadata"]["annotations"][KUBEFLOW_STOPPED] = json!("2026-01-03T00:00:00Z");
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

    #[test]
    fn a_stop_marks_kubeflows_annotation_with_the_instant_of_nbidles_record() {
        let n = nb(json!({"metadata": {"name": "nb", "namespace": "ns"},
            "status": {"readyReplicas": 1}}));
        assert!(!n.stop_requested());
        let at = "2026-01-02T00:00:00Z".parse::<Timestamp>().unwrap();
        let mut record = k::stop_annotations(&crate::notebook::StopCause::User { by: None }, at);
        n.mark_stop(at, &mut record);
        assert_eq!(record[KUBEFLOW_STOPPED], record[k::STOPPED_AT]);
        // As the API server would merge it (a null removes): nbidle's stop,
        // reported as such.
        let mut v = serde_json::to_value(&n).unwrap();
        let merged: Annotations = record.into_iter().filter(|(_, v)| !v.is_null()).collect();
        v["metadata"]["annotations"] = serde_json::Value::Object(merged);
        let stopped = nb(v);
        assert!(stopped.stop_requested());
        let s = state(&stopped, bounds(), URL);
        assert_eq!(
            s.stopped_by,
            Some(crate::notebook::StopCause::User { by: None })
        );
        assert_eq!(s.stopped_at, Some(at));
        // A start removes Kubeflow's annotation with nbidle's record.
        let mut record = k::start_annotations(at);
        stopped.mark_start(&mut record);
        assert_eq!(record[KUBEFLOW_STOPPED], serde_json::Value::Null);
        assert_eq!(record[k::STOPPED_AT], serde_json::Value::Null);
    }

    #[test]
    fn one_pod_per_notebook() {
        let n = nb(json!({"metadata": {"name": "nb", "namespace": "ns"}}));
        assert_eq!(n.pods(), vec!["nb-0".to_string()]);
    }
}
