pub mod backend;
pub mod config;
pub mod error;
pub mod notebook;
pub mod rules;
