pub mod alerts;
pub mod backend;
pub mod config;
pub mod decide;
pub mod error;
pub mod manifests;
pub mod metrics;
pub mod notebook;
pub mod rules;
pub mod run;
pub mod server;

pub use error::{Error, Result};
