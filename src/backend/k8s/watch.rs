//! One list-then-watch loop per watched namespace, feeding a reflector store,
//! with its health visible: whether the cache is current (readiness, and
//! whether an unknown notebook may simply not be seen yet), when it last
//! heard from the API server, and how often it relisted.
//!
//! kube-runtime's watcher does the same protocol but hides the state between
//! its events (a watch re-established after an error yields nothing), and
//! its backoff keeps growing while the API server is down and is not cut
//! short when it returns. Here:
//! - retries back off from 200 ms to at most [`Backoff::MAX`], reset by any
//!   success, so a change made right after an outage is seen within about
//!   that delay;
//! - a watch whose resourceVersion is too old (410 Gone, what the first watch
//!   after an API server restart usually gets) relists at once;
//! - every API call has a deadline (the clients' read timeouts, and
//!   [`WATCH_SECONDS`] on each watch), so a frozen API server is noticed.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::metrics::WatchMetrics;

/// How long the API server keeps one watch open. The watch client's read
/// timeout is a little longer: with no byte for that long (bookmarks
/// included) the API server is taken to be hung and the watch is renewed.
pub(crate) const WATCH_SECONDS: u32 = 60;

/// Objects per list page: bounds one response's size for big namespaces.
const PAGE: u32 = 500;

/// Exponential retry delay with jitter, reset by any success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) const MIN: Duration = Duration::from_millis(200);
    /// Small on purpose: while the API server is down this is one cheap
    /// request per watch every few seconds, and once it is back the cache
    /// is current again within about this delay.
    pub(crate) const MAX: Duration = Duration::from_secs(2);

    pub(crate) fn new() -> Self {
        Backoff { next: Self::MIN }
    }

    /// The delay before the next attempt: the current step with ±20 %
    /// jitter (so replicas do not retry in lockstep), never above `MAX`.
    pub(crate) fn delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let jittered = step.mul_f64(0.8 + 0.4 * fastrand::f64());
        jittered.min(Self::MAX)
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a watch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Listing, before the first list completed or after a 410.
    Listing = 0,
    /// Listed, and the watch since then is open: the cache is current.
    Current = 1,
    /// The last call to the API server failed; the cache may be stale.
    Failing = 2,
}

/// The phase of one watch, shared with readers of its cache.
#[derive(Debug)]
pub(crate) struct Health {
    phase: AtomicU8,
    /// Becomes true at the first complete list. (The store's own
    /// `wait_until_ready` wakes only the last of several waiters.)
    listed: tokio::sync::watch::Sender<bool>,
}

impl Health {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Health {
            phase: AtomicU8::new(Phase::Listing as u8),
            listed: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Resolves once the watch has listed, for any number of waiters.
    pub(crate) async fn listed(&self) {
        let mut rx = self.listed.subscribe();
        let _ = rx.wait_for(|listed| *listed).await;
    }

    pub(crate) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            1 => Phase::Current,
            2 => Phase::Failing,
            _ => Phase::Listing,
        }
    }

    pub(crate) fn is_current(&self) -> bool {
        self.phase() == Phase::Current
    }

    fn set(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
    }
}

/// What one watch needs besides its API.
pub(crate) struct Watch<K: Resource<DynamicType = ()> + Clone + 'static> {
    pub lists: Api<K>,
    pub watches: Api<K>,
    pub label_selector: Option<String>,
    pub strip: fn(&mut K),
    pub writer: Writer<K>,
    pub health: Arc<Health>,
    pub metrics: WatchMetrics,
    /// `resource` and `watch_namespace` labels; also for log lines.
    pub labels: [String; 2],
}

/// Why a watch ended: relist, or just watch again from where it was.
enum Renew {
    Relist,
    Rewatch(String),
}

impl<K> Watch<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Runs until its future is dropped ([`super::cache::Cache::shutdown`]).
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::new();
        let mut resume: Option<String> = None;
        loop {
            let rv = match resume.take() {
                Some(rv) => rv,
                None => match self.list().await {
                    Ok(rv) => rv,
                    Err(e) => {
                        self.failed("list", &e);
                        tokio::time::sleep(backoff.delay()).await;
                        continue;
                    }
                },
            };
            match self.watch(&rv, &mut backoff).await {
                Ok(Renew::Rewatch(rv)) => resume = Some(rv),
                Ok(Renew::Relist) => {
                    // 410: the API server no longer has our resourceVersion.
                    // Relisting at once is the only way to be current again.
                    self.enter(Phase::Listing);
                }
                Err((e, rv)) => {
                    self.failed("watch", &e);
                    resume = Some(rv);
                    tokio::time::sleep(backoff.delay()).await;
                }
            }
        }
    }

    /// Lists every page into the store; returns the list's resourceVersion.
    async fn list(&mut self) -> Result<String, kube::Error> {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(sel) = &self.label_selector {
            lp = lp.labels(sel);
        }
        // Into the store's buffer page by page (stripped first), so neither
        // a whole list nor its managed fields are ever held at once; a list
        // that fails halfway is discarded by the next one's Init.
        self.writer.apply_watcher_event(&Event::Init);
        let rv = loop {
            let page = self.lists.list(&lp).await?;
            for mut o in page.items {
                (self.strip)(&mut o);
                self.writer.apply_watcher_event(&Event::InitApply(o));
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => break page.metadata.resource_version.unwrap_or_default(),
            }
        };
        self.writer.apply_watcher_event(&Event::InitDone);
        self.metrics.relisted(&self.labels);
        self.enter(Phase::Current);
        self.health.listed.send_replace(true);
        Ok(rv)
    }

    /// One watch from `rv` until it ends. Errors carry the resourceVersion
    /// reached, to resume from.
    async fn watch(
        &mut self,
        rv: &str,
        backoff: &mut Backoff,
    ) -> Result<Renew, (kube::Error, String)> {
        let mut wp = WatchParams::default().timeout(WATCH_SECONDS);
        if let Some(sel) = &self.label_selector {
            wp = wp.labels(sel);
        }
        let mut rv = rv.to_string();
        let stream = match self.watches.watch(&wp, &rv).await {
            Ok(s) => s,
            Err(kube::Error::Api(s)) if s.code == 410 => return Ok(Renew::Relist),
            Err(e) => return Err((e, rv)),
        };
        // Open again: whatever failed before works now.
        self.enter(Phase::Current);
        self.metrics.heard(&self.labels);
        backoff.reset();
        futures_util::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => return Err((e, rv)),
            };
            match ev {
                WatchEvent::Added(mut o) | WatchEvent::Modified(mut o) => {
                    rv = o.resource_version().unwrap_or(rv);
                    (self.strip)(&mut o);
                    self.writer.apply_watcher_event(&Event::Apply(o));
                }
                WatchEvent::Deleted(o) => {
                    rv = o.resource_version().unwrap_or(rv);
                    self.writer.apply_watcher_event(&Event::Delete(o));
                }
                WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                WatchEvent::Error(s) if s.code == 410 => return Ok(Renew::Relist),
                WatchEvent::Error(s) => return Err((kube::Error::Api(s), rv)),
            }
            self.metrics.heard(&self.labels);
        }
        // The API server ended the watch after WATCH_SECONDS, or the read
        // timeout ended a silent one: watch again from here.
        Ok(Renew::Rewatch(rv))
    }

    fn enter(&self, p: Phase) {
        self.health.set(p);
        self.metrics.set_up(&self.labels, p == Phase::Current);
    }

    fn failed(&self, call: &str, e: &kube::Error) {
        let was = self.health.phase();
        self.enter(Phase::Failing);
        self.metrics.failed(&self.labels);
        // One line when a watch breaks, not one per retry.
        if was != Phase::Failing {
            let [resource, namespace] = &self.labels;
            tracing::warn!(%resource, %namespace, call, error = %e,
                "Kubernetes watch failed; serving the last known state until the API server answers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_bound_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<_> = (0..10).map(|_| b.delay()).collect();
        assert!(delays[0] <= Backoff::MIN.mul_f64(1.2));
        assert!(delays.iter().all(|d| *d <= Backoff::MAX));
        // After a few doublings it sits near the bound.
        assert!(delays[9] >= Backoff::MAX.mul_f64(0.8));
        b.reset();
        assert!(b.delay() <= Backoff::MIN.mul_f64(1.2));
    }

    #[test]
    fn health_starts_listing() {
        let h = Health::new();
        assert_eq!(h.phase(), Phase::Listing);
        assert!(!h.is_current());
        h.set(Phase::Current);
        assert!(h.is_current());
        h.set(Phase::Failing);
        assert!(!h.is_current());
    }
}
