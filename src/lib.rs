//! nbidle stops idle Jupyter notebooks and starts them again with their
//! workspace intact. It is Prometheus-native: it generates the idle alert
//! rules and the Alertmanager route, Prometheus decides what is idle,
//! Alertmanager delivers the alert to nbidle's webhook, and nbidle stops the
//! notebook through a backend.
//!
//! # Layout
//!
//! Data flows one way — notebook → exporter → Prometheus → Alertmanager →
//! webhook → decision → backend:
//!
//! - [`run`]: `nbidle serve` wiring: backend, metrics, server, shutdown.
//! - `server`: warp HTTP server: webhook, REST API, `/metrics`,
//!   `/sd/notebooks` (Prometheus HTTP service discovery), `/livez`, `/readyz`.
//! - `page`: the notebook page at `/` for people: the list with Open,
//!   Stop, Start and Keep running, sign-in with an API token (or a trusted proxy's
//!   header), server-side sessions, CSRF tokens; maud HTML.
//! - [`decide`]: firing alert → stop or not (routing label, opt-out, stale
//!   alert guard, re-check, dry run); duplicates are harmless because stops
//!   are idempotent.
//! - [`exporter`]: probes Jupyter and publishes per-notebook activity and idle
//!   deadlines on `/metrics/notebooks`, for the generated rules.
//! - [`alerts`]: Alertmanager's webhook payload (version 4), validated whole.
//! - [`backend`]: the `Backend` trait; `backend::local` supervises notebooks
//!   as process groups and persists who stopped them; `backend::k8s`
//!   stops Kubeflow Notebooks and StatefulSets through the API server: one
//!   generic backend (`backend::k8s::driver`) over a small trait that
//!   each kind's file implements, reading from watch-fed caches
//!   (`backend::k8s::watch` says whether they are current);
//!   `backend::jupyterhub` stops and starts a JupyterHub's servers through
//!   the Hub's REST API.
//! - [`rules`]: idle signals as PromQL building blocks → rule files and
//!   `PrometheusRule` objects.
//! - [`manifests`]: the Prometheus scrape job and Alertmanager config, and
//!   prometheus-operator's PodMonitor, ServiceMonitor, AlertmanagerConfig.
//! - `apply`: keeps those objects applied in the cluster (server-side apply).
//! - [`config`]: the YAML config, one type per section, each validating
//!   itself and naming the key at fault; parsed once into what `serve`
//!   needs (`listen` a `SocketAddr`, the backend an enum with its section).
//! - [`notebook`]: notebook identity and state shared by every layer.
//! - [`metrics`]: nbidle's own metrics, one struct.
//! - [`notify`]: after each exporter round, the state of notebooks near a
//!   stop pushed to their JupyterLab extension (`PUT nbidle/state` with
//!   the notebook's token), Keep running requests collected from its
//!   answers, and a last push before an idle stop; uses `backend`,
//!   `exporter`, `warnings` and `silences`, and `decide` and `run` use it.
//! - `silences`: Keep running as Alertmanager silences (API v2), and which
//!   silences cover a notebook's stop alert; `warnings`: the warning
//!   alerts the webhook records for people.
//! - [`logging`]: the log's filter (`NBIDLE_LOG`, the HTTP stack kept at
//!   warn), format (`NBIDLE_LOG_FORMAT`, `--log-format`: text or JSON) and
//!   colours (a terminal, `NO_COLOR`).
//! - [`logsafe`]: values from outside escaped and capped for the log;
//!   repeated rejection lines rate-limited.
//! - `limit`: wrong tokens slowed per client (IPv6 per /64), for the page's
//!   sign-in and a stopped notebook's Start; below both.
//! - `error`: the crate's error type, [`Error`], and [`Result`].

// Unsafe code only where a syscall has no safe wrapper, each allowed
// where it is used, with a SAFETY note.
#![deny(unsafe_code)]
// Items of private modules are `pub(crate)`: what is not used is then
// reported as dead code.
#![warn(unreachable_pub)]
// What tests, benchmarks and `main.rs` reach is documented.
#![warn(missing_docs)]

pub mod alerts;
mod apply;
pub mod backend;
pub mod config;
pub mod decide;
mod error;
pub mod exporter;
mod limit;
pub mod logging;
pub mod logsafe;
pub mod manifests;
pub mod metrics;
pub mod notebook;
pub mod notify;
mod page;
pub mod rules;
pub mod run;
mod server;
mod silences;
mod warnings;

pub use error::{Error, Result};
