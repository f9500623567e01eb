//! Watch-fed caches of one resource type, read by every call that does not
//! write: one reflector store per watched namespace (or one cluster-wide),
//! each fed by its own [`watch`] loop and knowing whether it is current.

use std::fmt::Debug;
use std::sync::Arc;

use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{watch, Clients};
use crate::error::{Error, Result};
use crate::metrics::WatchMetrics;
use crate::notebook::{NotebookId, NotebookState};

/// Watch-fed caches of one resource type: one per namespace watched, or one
/// cluster-wide when no namespaces are configured.
pub(crate) struct Cache<K: Resource<DynamicType = ()> + 'static> {
    watches: Vec<Watched<K>>,
    /// The watch loops, ended by `stop` and awaited by `shutdown`.
    tasks: TaskTracker,
    stop: CancellationToken,
}

struct Watched<K: Resource<DynamicType = ()> + 'static> {
    namespace: Option<String>,
    store: Store<K>,
    health: Arc<watch::Health>,
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    /// Starts the watches. `strip` drops what nbidle never reads before an
    /// object enters the cache.
    pub(crate) fn watch(
        clients: &Clients,
        namespaces: &[String],
        label_selector: Option<&str>,
        strip: fn(&mut K),
        metrics: &WatchMetrics,
    ) -> Self {
        let scopes: Vec<Option<String>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().cloned().map(Some).collect()
        };
        let api = |client: &Client, ns: &Option<String>| match ns {
            None => Api::<K>::all(client.clone()),
            Some(ns) => Api::namespaced(client.clone(), ns),
        };
        let mut watches = Vec::new();
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        for ns in scopes {
            let (store, writer) = reflector::store();
            let health = watch::Health::new();
            let labels = [
                K::plural(&()).to_string(),
                ns.clone().unwrap_or_else(|| "*".into()),
            ];
            metrics.register(&labels);
            let w = watch::Watch {
                lists: api(&clients.requests, &ns),
                watches: api(&clients.watches, &ns),
                label_selector: label_selector.map(str::to_string),
                strip,
                writer,
                health: health.clone(),
                metrics: metrics.clone(),
                labels,
            };
            // A watch loop holds no state worth finishing: dropping it at
            // any await point is clean (its connection closes).
            tasks.spawn(stop.clone().run_until_cancelled_owned(w.run()));
            watches.push(Watched {
                namespace: ns,
                store,
                health,
            });
        }
        tasks.close();
        Cache {
            watches,
            tasks,
            stop,
        }
    }

    /// Resolves once every watch has listed its objects.
    pub(crate) async fn synced(&self) {
        for w in &self.watches {
            w.health.listed().await;
        }
    }

    /// Every watch is listed and open: the cache shows the API server's
    /// state, give or take the events in flight.
    pub(crate) fn current(&self) -> bool {
        self.watches.iter().all(|w| w.health.is_current())
    }

    pub(crate) fn all(&self) -> Vec<Arc<K>> {
        self.watches.iter().flat_map(|w| w.store.state()).collect()
    }

    /// Every cached object's state, sorted by id.
    pub(crate) fn states(&self, state: impl Fn(&K) -> NotebookState) -> Vec<NotebookState> {
        let mut out: Vec<_> = self.all().iter().map(|o| state(o)).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// One cached object's state; see [`Cache::lookup`] for a miss.
    pub(crate) fn state(
        &self,
        id: &NotebookId,
        state: impl Fn(&K) -> NotebookState,
    ) -> Result<NotebookState> {
        self.lookup(id).map(|o| state(&o))
    }

    /// The API for writing one notebook's object. Only what the watch
    /// selects (namespaces, label selector) is a notebook: anything else (a
    /// database's StatefulSet, say) is `NotFound`, never written.
    pub(crate) fn api(&self, client: &Client, id: &NotebookId) -> Result<Api<K>> {
        self.lookup(id)?;
        Ok(Api::namespaced(client.clone(), &id.namespace))
    }

    pub(crate) fn get(&self, id: &NotebookId) -> Option<Arc<K>> {
        let key = ObjectRef::new(&id.name).within(&id.namespace);
        self.covering(id).find_map(|w| w.store.get(&key))
    }

    /// The cached object, or why there is none: `NotFound` when the watch
    /// covering its namespace is current (or none covers it), `Unavailable`
    /// when that watch is not, since the object may exist unseen: an alert
    /// for it is then retried rather than dropped.
    pub(crate) fn lookup(&self, id: &NotebookId) -> Result<Arc<K>> {
        if let Some(o) = self.get(id) {
            return Ok(o);
        }
        match self.covering(id).find(|w| !w.health.is_current()) {
            Some(_) => Err(Error::Unavailable(format!(
                "{id} is not in nbidle's cache, and the watch of {} is not current (the Kubernetes API server did not answer); try again",
                K::plural(&())
            ))),
            None => Err(Error::NotFound(id.clone())),
        }
    }

    fn covering<'a>(&'a self, id: &'a NotebookId) -> impl Iterator<Item = &'a Watched<K>> + 'a {
        self.watches
            .iter()
            .filter(|w| w.namespace.as_deref().is_none_or(|n| n == id.namespace))
    }

    /// Ends every watch loop and waits until they have ended.
    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::apps::v1::StatefulSet;

    use super::*;
    use crate::metrics::Metrics;

    /// An API server that accepts connections and never answers: every
    /// watch loop is then parked inside a request.
    async fn silent_api_server() -> (tokio::net::TcpListener, kube::Config) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (listener, kube::Config::new(url.parse().unwrap()))
    }

    #[tokio::test]
    async fn shutdown_ends_every_watch_loop_and_waits_for_them() {
        let (listener, config) = silent_api_server().await;
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let clients = Clients::new(config, Duration::from_secs(30)).unwrap();
        let metrics = Metrics::new();
        let namespaces = ["a".to_string(), "b".to_string()];
        let cache: Cache<StatefulSet> =
            Cache::watch(&clients, &namespaces, None, |_| {}, &metrics.watch);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(cache.tasks.len(), 2);
        assert!(!cache.current());

        tokio::time::timeout(Duration::from_secs(2), cache.shutdown())
            .await
            .expect("the watch loops ended within 2 s");
        assert!(
            cache.tasks.is_empty(),
            "{} still running",
            cache.tasks.len()
        );
        held.abort();
    }
}
