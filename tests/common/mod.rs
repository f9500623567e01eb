//! Test support: real Prometheus, Alertmanager, Jupyter, JupyterHub and nbidle processes
//! on loopback, each killed when its guard drops; one file per fixture,
//! re-exported here for `use common::*;`.
//!
//! A missing component fails the test with the command that installs it;
//! nothing is skipped. `make test` runs `scripts/test-deps.sh` first.
//!
//! The benchmarks include this module too (`#[path = "../tests/common/mod.rs"]`).

mod alertmanager;
mod browser;
mod hub;
mod jupyter;
mod payload;
mod proc;
mod prometheus;
mod receivers;
mod serve;

#[allow(
    dead_code,
    reason = "used by the Kubernetes tests and benchmark only; each binary compiles tests/common whole"
)]
pub mod envtest;
#[allow(
    dead_code,
    reason = "used by the deploy and guide tests only; each binary compiles tests/common whole"
)]
pub mod kubectl;

#[allow(
    unused_imports,
    reason = "each binary uses some of these; a glob none of whose items it uses is reported"
)]
pub use {
    alertmanager::*, browser::*, hub::*, jupyter::*, payload::*, proc::*, prometheus::*,
    receivers::*, serve::*,
};
