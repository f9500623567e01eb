//! Notebooks as Kubernetes objects. One [`driver::Driver`] is the backend
//! for every kind; a kind ([`driver::NotebookKind`]) says only what is its
//! own: how to read a notebook's state from the object, what a stop and a
//! start write, and what is stripped before caching.
//!
//! - [`kubeflow`]: Kubeflow `Notebook` resources, stopped with Kubeflow's
//!   own `kubeflow-resource-stopped` annotation.
//! - [`statefulset`]: StatefulSets selected by label, scaled to 0 and back.
//! - [`cache`] and [`watch`]: the watch-fed caches every read comes from.
//! - Here: what every kind shares: the clients with their deadlines, the
//!   annotations nbidle reads and writes, per-notebook policy, Events, and
//!   conflict-safe writes.
//!
//! How the kinds behave alike:
//! - Reads come from watch-fed caches (kube-runtime reflectors), stripped
//!   of managed fields and anything else nbidle never reads, so memory stays
//!   proportional to what is used.
//! - Writes read the object fresh from the API server and patch it with its
//!   `resourceVersion` as a precondition: a concurrent edit (another nbidle
//!   replica, a user, a controller) makes the patch fail with 409, and the
//!   decision is taken again on the new object. Two replicas handling the
//!   same alert therefore stop a notebook once.
//! - Per-notebook policy lives in annotations (`nbidle.io/autostop`,
//!   `nbidle.io/idle-after`, `nbidle.io/owner`), bounded by the admin's
//!   `autostop.min/max_idle_after`. A value nbidle cannot read opts the
//!   notebook out and says why in its `message`: a typo never makes a
//!   notebook stop sooner.
//!
//! # Adding a kind
//!
//! A Kubeflow Notebooks 2.0 `Workspace` (`kubeflow.org/v1beta1`) would be
//! one file beside [`kubeflow`]: a struct decoding its `metadata`,
//! `spec.paused` and `status` (`state`, `pauseTime`) and nothing else, with
//! `kube::Resource` for it, and [`driver::NotebookKind`]:
//! `stop_requested` is `spec.paused`; the state maps `status.state`
//! (`Running`, `Paused`, `Pending`, `Error` with its message, `Terminating`)
//! and takes the start time from nbidle's annotations as here; the stop's
//! and start's second write (`after_stop`, `after_start`) merge-patches
//! `spec.paused` with the annotated `resourceVersion` as its precondition,
//! as [`statefulset`] chains its `/scale`. The driver then gives it the
//! cache, the 503 while a watch is not current, the guards, the 409
//! retries, the deadlines and the Events. What remains outside this module
//! is the `backend.kind` value in the config, its arm in `run.rs`, and
//! RBAC for the resource in `deploy/`.

pub(crate) mod cache;
pub(crate) mod driver;
pub(crate) mod kubeflow;
pub(crate) mod statefulset;
pub(crate) mod watch;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::api::PostParams;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::config::HumanDuration;
use crate::error::{Error, Result};
use crate::notebook::{IdleBounds, NotebookId, StopCause, StoppedBy, Timestamp};

/// The user Kubeflow's UI records as the notebook's creator.
pub(crate) const KUBEFLOW_CREATOR: &str = "notebooks.kubeflow.org/creator";

/// `user` or `idle-alert`.
pub(crate) const STOPPED_BY: &str = "nbidle.io/stopped-by";
/// The alert that stopped it (`NotebookIdle`), or `api` for a user's stop.
pub(crate) const STOP_REASON: &str = "nbidle.io/stop-reason";
pub(crate) const STOPPED_AT: &str = "nbidle.io/stopped-at";
/// When the stopping alert started firing (the stale-alert guard's input).
pub(crate) const ALERT_STARTS_AT: &str = "nbidle.io/alert-starts-at";
/// When nbidle last started the notebook.
pub(crate) const STARTED_AT: &str = "nbidle.io/started-at";

/// `"false"`: never stopped by an idle alert.
pub(crate) const AUTOSTOP: &str = "nbidle.io/autostop";
/// This notebook's idle time (`2h`, `90m`), within the admin's bounds.
pub(crate) const IDLE_AFTER: &str = "nbidle.io/idle-after";
/// Who is warned before the stop; default: Kubeflow's creator annotation.
pub(crate) const OWNER: &str = "nbidle.io/owner";

/// Annotations to merge into an object's: a null value removes one.
pub(crate) type Annotations = serde_json::Map<String, serde_json::Value>;

/// Conflicting writes are retried this many times before giving up with a
/// retryable error (Alertmanager then delivers again).
const CONFLICT_RETRIES: usize = 5;

/// The API server's clients: one for requests, whose read timeout is the
/// per-request deadline, and one for watches, which may stay silent for
/// [`watch::WATCH_SECONDS`] and so read with a longer timeout. Both connect
/// within `CONNECT_TIMEOUT`.
#[derive(Clone)]
pub(crate) struct Clients {
    pub requests: Client,
    pub watches: Client,
    /// The most one operation (a stop, a start: reads, writes and retries)
    /// may take before it fails as unavailable.
    pub deadline: Duration,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Clients {
    /// From the environment: in a pod, its service account; elsewhere
    /// `$KUBECONFIG` or `~/.kube/config`.
    pub(crate) async fn from_env(request_timeout: Duration) -> Result<Clients> {
        let config = kube::Config::infer().await.map_err(Error::KubeConfig)?;
        Clients::new(config, request_timeout)
    }

    pub(crate) fn new(mut config: kube::Config, request_timeout: Duration) -> Result<Clients> {
        config.connect_timeout = Some(CONNECT_TIMEOUT.min(request_timeout));
        config.write_timeout = Some(request_timeout);
        let build =
            |c: kube::Config| Client::try_from(c).map_err(|e| Error::kube("kubernetes client", e));
        let mut watch_config = config.clone();
        watch_config.read_timeout = Some(Duration::from_secs(u64::from(watch::WATCH_SECONDS) + 15));
        config.read_timeout = Some(request_timeout);
        Ok(Clients {
            requests: build(config)?,
            watches: build(watch_config)?,
            deadline: request_timeout,
        })
    }

    /// A read-decide-write step (see [`retry_on_conflict`]) within
    /// `deadline`.
    pub(crate) async fn write<T, F, Fut>(&self, id: &NotebookId, step: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        self.within_deadline(id, retry_on_conflict(id, step)).await
    }

    /// Runs one operation against the API server within `deadline`; past
    /// it the operation is abandoned and reported unavailable, so the
    /// webhook answers 503 and Alertmanager delivers again.
    pub(crate) async fn within_deadline<T>(
        &self,
        id: &NotebookId,
        op: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.deadline, op).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unavailable(format!(
                "{id}: the Kubernetes API server did not answer within {}",
                HumanDuration(self.deadline)
            ))),
        }
    }
}

/// Maps an API error: `NotFound` for 404 so the HTTP layer answers 404;
/// `Unavailable` when the API server cannot be reached, does not answer in
/// time, or says it is overloaded or failing (429, 5xx), so callers retry.
pub(crate) fn api_error(id: &NotebookId, e: kube::Error) -> Error {
    match &e {
        kube::Error::Api(s) if s.code == 404 => Error::NotFound(id.clone()),
        kube::Error::Api(s) if s.code == 429 || s.code >= 500 => {
            Error::Unavailable(format!("{id}: the Kubernetes API server: {e}"))
        }
        kube::Error::Service(_) | kube::Error::HyperError(_) | kube::Error::ReadEvents(_) => {
            Error::Unavailable(format!("{id}: the Kubernetes API server: {e}"))
        }
        _ => Error::kube(id.to_string(), e),
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Runs a read-decide-write step again while its write conflicts with a
/// concurrent change. `step` must read the object afresh each time.
pub(crate) async fn retry_on_conflict<T, F, Fut>(id: &NotebookId, mut step: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match step().await {
            Err(e) if is_conflict(&e) && attempt < CONFLICT_RETRIES => {
                attempt += 1;
                tracing::debug!(notebook = %id, attempt, "write conflicted; deciding again");
                tokio::time::sleep(Duration::from_millis(20 * attempt as u64)).await;
            }
            r => return r.map_err(|e| api_error(id, e)),
        }
    }
}

/// Drops managed fields and the last-applied annotation, the bulk of most
/// objects' metadata, which nbidle never reads.
pub(crate) fn strip_metadata(
    meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    meta.owner_references = None;
    meta.finalizers = None;
}

/// Per-notebook policy read from annotations.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    pub autostop: bool,
    pub idle_after: Duration,
    pub owner: Option<String>,
    /// Why an annotation was ignored (and the notebook opted out).
    pub problem: Option<String>,
}

pub(crate) fn policy(annotations: &BTreeMap<String, String>, bounds: IdleBounds) -> Policy {
    let mut p = Policy {
        autostop: true,
        idle_after: bounds.default,
        owner: annotations
            .get(OWNER)
            .or_else(|| annotations.get(KUBEFLOW_CREATOR))
            .filter(|o| !o.is_empty())
            .cloned(),
        problem: None,
    };
    match annotations.get(AUTOSTOP).map(|v| v.trim()) {
        None | Some("true") => {}
        Some("false") => p.autostop = false,
        Some(other) => {
            p.autostop = false;
            p.problem = Some(format!(
                "annotation {AUTOSTOP}: {other:?} is not \"true\" or \"false\"; not stopped automatically until fixed"
            ));
        }
    }
    let requested = match annotations.get(IDLE_AFTER) {
        None => None,
        Some(v) => match HumanDuration::parse(v) {
            Ok(d) if d.0 >= Duration::from_secs(1) => Some(d.0),
            Ok(_) => {
                p.autostop = false;
                p.problem = Some(format!(
                    "annotation {IDLE_AFTER}: {v:?} is shorter than 1s; not stopped automatically until fixed"
                ));
                None
            }
            Err(e) => {
                p.autostop = false;
                p.problem = Some(format!(
                    "annotation {IDLE_AFTER}: {e}; not stopped automatically until fixed"
                ));
                None
            }
        },
    };
    p.idle_after = bounds.effective(requested);
    p
}

/// Merges `annotations` into an object's (a null removes one). With
/// `precondition`, the object read before: the patch fails with 409 if it
/// changed since, so a decision is never written over a newer state.
pub(crate) async fn annotate<K>(
    api: &Api<K>,
    precondition: Option<&K>,
    name: &str,
    annotations: Annotations,
) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut meta = serde_json::json!({ "annotations": annotations });
    if let Some(obj) = precondition {
        meta["resourceVersion"] = obj.meta().resource_version.clone().into();
    }
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({ "metadata": meta })),
    )
    .await
}

/// The stop recorded in nbidle's annotations, if any.
pub(crate) fn recorded_stop(
    a: &BTreeMap<String, String>,
) -> (Option<Timestamp>, Option<StopCause>) {
    let at = a.get(STOPPED_AT).and_then(|v| v.parse::<Timestamp>().ok());
    let cause = match a.get(STOPPED_BY).map(String::as_str) {
        // Before `by` was kept the reason was "api": no one is named.
        Some("user") => Some(StopCause::User {
            by: a
                .get(STOP_REASON)
                .and_then(|r| serde_json::from_str(r).ok()),
        }),
        Some("idle-alert") => Some(StopCause::IdleAlert {
            alertname: a.get(STOP_REASON).cloned().unwrap_or_default(),
            alert_starts_at: a
                .get(ALERT_STARTS_AT)
                .and_then(|v| v.parse::<Timestamp>().ok())
                .or(at)
                .unwrap_or_else(Timestamp::now),
        }),
        _ => None,
    };
    (at, cause)
}

/// The annotations that record a stop (merged into the object's own).
pub(crate) fn stop_annotations(cause: &StopCause, at: Timestamp) -> Annotations {
    let mut m = Annotations::new();
    m.insert(STOPPED_AT.into(), at.to_string().into());
    m.insert(STOPPED_BY.into(), cause.trigger().into());
    match cause {
        StopCause::User { by } => {
            let reason = by
                .as_ref()
                .and_then(|b| serde_json::to_string(b).ok())
                .unwrap_or_else(|| "api".into());
            m.insert(STOP_REASON.into(), reason.into());
            m.insert(ALERT_STARTS_AT.into(), serde_json::Value::Null);
        }
        StopCause::IdleAlert {
            alertname,
            alert_starts_at,
        } => {
            m.insert(STOP_REASON.into(), alertname.clone().into());
            m.insert(ALERT_STARTS_AT.into(), alert_starts_at.to_string().into());
        }
    }
    m
}

/// The annotations a start sets and removes.
pub(crate) fn start_annotations(at: Timestamp) -> Annotations {
    let mut m = Annotations::new();
    for k in [STOPPED_AT, STOPPED_BY, STOP_REASON, ALERT_STARTS_AT] {
        m.insert(k.into(), serde_json::Value::Null);
    }
    m.insert(STARTED_AT.into(), at.to_string().into());
    m
}

pub(crate) fn k8s_time(t: &Time) -> Option<Timestamp> {
    t.0.to_string().parse::<Timestamp>().ok()
}

/// The latest of the instants a notebook may have (re)started at: an
/// alert that began before it is about an earlier life.
pub(crate) fn latest(times: impl IntoIterator<Item = Option<Timestamp>>) -> Option<Timestamp> {
    times.into_iter().flatten().max()
}

/// Renders the exporter's URL template for one notebook.
pub(crate) fn jupyter_url(template: &str, id: &NotebookId) -> String {
    let url = template
        .replace("{namespace}", &id.namespace)
        .replace("{name}", &id.name);
    if url.ends_with('/') {
        url
    } else {
        url + "/"
    }
}

/// Records an Event (events.k8s.io/v1) on the object for every stop and
/// start. Each is its own Event, not a count on an earlier one, so the note
/// says what happened that time. Failures are logged, never fail the
/// operation the Event describes.
pub(crate) struct Events {
    client: Client,
    instance: String,
}

impl Events {
    pub(crate) fn new(client: Client) -> Self {
        let instance = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "nbidle".into());
        Events { client, instance }
    }

    pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        reason: &str,
        note: String,
    ) {
        let regarding = obj.object_ref(&());
        let name = regarding.name.clone().unwrap_or_default();
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let now = k8s_openapi::jiff::Timestamp::now();
        let ev = K8sEvent {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                // Unique per Event, like the names kubectl shows.
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some("Normal".into()),
            reason: Some(reason.into()),
            action: Some(reason.into()),
            note: Some(note),
            regarding: Some(regarding),
            reporting_controller: Some("nbidle.io/nbidle".into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            tracing::warn!(object = %name, reason, error = %e, "could not record Event");
        }
    }
}

/// Says what stopped a notebook, for Events and logs.
pub(crate) fn describe_stop(cause: &StopCause) -> String {
    match cause {
        StopCause::User { by } => format!(
            "stopped {}; its volumes are kept",
            by.as_ref()
                .map_or_else(|| "by a person through nbidle".into(), StoppedBy::phrase)
        ),
        StopCause::IdleAlert {
            alertname,
            alert_starts_at,
        } => format!(
            "stopped by nbidle: alert {alertname} firing since {alert_starts_at}; its volumes are kept"
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Half an hour, no per-notebook bounds.
    pub(crate) fn half_an_hour() -> IdleBounds {
        IdleBounds {
            default: Duration::from_secs(1800),
            min: None,
            max: None,
        }
    }

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn bounds() -> IdleBounds {
        IdleBounds {
            default: Duration::from_secs(1800),
            min: Some(Duration::from_secs(600)),
            max: Some(Duration::from_secs(4 * 3600)),
        }
    }

    #[test]
    fn policy_from_annotations_within_bounds() {
        let p = policy(&ann(&[]), bounds());
        assert_eq!((p.autostop, p.idle_after.as_secs()), (true, 1800));
        let p = policy(&ann(&[(IDLE_AFTER, "2h")]), bounds());
        assert_eq!(p.idle_after.as_secs(), 7200);
        // Bounded by the admin.
        let p = policy(&ann(&[(IDLE_AFTER, "1m")]), bounds());
        assert_eq!(p.idle_after.as_secs(), 600);
        let p = policy(&ann(&[(IDLE_AFTER, "3d")]), bounds());
        assert_eq!(p.idle_after.as_secs(), 4 * 3600);
        let p = policy(&ann(&[(AUTOSTOP, "false")]), bounds());
        assert!(!p.autostop && p.problem.is_none());
    }

    #[test]
    fn unreadable_annotations_opt_out_and_say_why() {
        let p = policy(&ann(&[(IDLE_AFTER, "soon")]), bounds());
        assert!(!p.autostop);
        assert!(p.problem.unwrap().contains(IDLE_AFTER));
        let p = policy(&ann(&[(AUTOSTOP, "nope")]), bounds());
        assert!(!p.autostop);
        assert!(p.problem.unwrap().contains(AUTOSTOP));
    }

    #[test]
    fn owner_from_annotation_or_kubeflow_creator() {
        let p = policy(&ann(&[(KUBEFLOW_CREATOR, "ada@example.com")]), bounds());
        assert_eq!(p.owner.as_deref(), Some("ada@example.com"));
        let p = policy(
            &ann(&[(KUBEFLOW_CREATOR, "ada@example.com"), (OWNER, "team-x")]),
            bounds(),
        );
        assert_eq!(p.owner.as_deref(), Some("team-x"));
    }

    #[test]
    fn stop_annotations_round_trip() {
        let at = "2026-01-02T03:04:05Z".parse::<Timestamp>().unwrap();
        let cause = StopCause::IdleAlert {
            alertname: "NotebookIdle".into(),
            alert_starts_at: "2026-01-02T03:00:00Z".parse::<Timestamp>().unwrap(),
        };
        let a: BTreeMap<String, String> = stop_annotations(&cause, at)
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
            .collect();
        assert_eq!(recorded_stop(&a), (Some(at), Some(cause)));
        let a: BTreeMap<String, String> = stop_annotations(&StopCause::User { by: None }, at)
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
            .collect();
        assert_eq!(
            recorded_stop(&a),
            (Some(at), Some(StopCause::User { by: None }))
        );
        let page = StopCause::user(Some(StoppedBy::Page { who: "ada".into() }));
        let a: BTreeMap<String, String> = stop_annotations(&page, at)
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
            .collect();
        assert_eq!(recorded_stop(&a), (Some(at), Some(page)));
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("test", "Test").with_code(code),
        ))
    }

    #[test]
    fn api_failures_keep_the_kube_error_as_their_source() {
        let id = NotebookId::new("ns", "nb");
        let e = super::api_error(&id, api_error(422));
        assert_eq!(
            e.to_string(),
            format!("backend: ns/nb: {}", api_error(422)),
            "the message clients see"
        );
        let source = std::error::Error::source(&e).expect("a source");
        assert!(
            matches!(source.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 422),
            "{source:?}"
        );
    }

    #[tokio::test]
    async fn conflicts_are_retried_then_given_up_retryably() {
        let id = NotebookId::new("ns", "nb");
        let calls = std::sync::atomic::AtomicUsize::new(0);
        // Two conflicts, then success: the step runs three times.
        let r = retry_on_conflict(&id, || async {
            match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 | 1 => Err(api_error(409)),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
        // Endless conflicts: a Kube error (the webhook answers 5xx and
        // Alertmanager delivers again), after CONFLICT_RETRIES retries.
        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let r: Result<()> = retry_on_conflict(&id, || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(api_error(409))
        })
        .await;
        assert!(matches!(r, Err(Error::Kube { .. })));
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            CONFLICT_RETRIES + 1
        );
        // Not found is not retried and maps to NotFound.
        let r: Result<()> = retry_on_conflict(&id, || async { Err(api_error(404)) }).await;
        assert!(matches!(r, Err(Error::NotFound(_))));
    }

    #[test]
    fn url_template() {
        let id = NotebookId::new("team-a", "nb1");
        assert_eq!(
            jupyter_url(
                "http://{name}.{namespace}.svc/notebook/{namespace}/{name}",
                &id
            ),
            "http://nb1.team-a.svc/notebook/team-a/nb1/"
        );
    }
}
