//! tanova-sync: gets every CV in a folder into a Tanova account, exactly once, and keeps doing so.

pub mod access;
pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
pub mod debounce;
pub mod deliver;
pub mod engine;
pub mod error;
pub mod fence;
pub mod filter;
pub mod hash;
pub mod logging;
pub mod meta;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod retry;
pub mod scan;
pub mod serve;
pub mod service;
pub mod settings;
pub mod state;
pub mod watch;
