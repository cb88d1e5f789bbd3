//! tanova-sync: gets every CV in a folder into a Tanova account, exactly once, and keeps doing so.
//!
//! The public surface is what the binary, the tests and the benchmarks use:
//! [`agent::Agent`] runs the agent for one folder from a [`config::Config`] and
//! reports through a [`report::Reporter`]; [`api`] is the client of the sync
//! API; [`state`] the local store and the shared ledger; [`metrics`] and
//! [`serve`] the status server; [`cli::main`] the command line. The pipeline's
//! steps (scan, watch, hash, plan, deliver internals) are crate-private: see
//! ARCHITECTURE.md for the map.

pub mod access;
pub mod agent;
pub mod api;
pub(crate) mod cache_index;
pub mod cli;
pub mod config;
pub(crate) mod debounce;
pub(crate) mod deliver;
pub(crate) mod engine;
pub mod error;
pub(crate) mod fence;
pub(crate) mod filter;
pub(crate) mod fs_threads;
pub(crate) mod gdpr;
pub mod hash;
pub(crate) mod logging;
pub(crate) mod meta;
pub mod metrics;
pub(crate) mod plan;
pub mod privacy;
pub mod report;
pub(crate) mod retry;
pub(crate) mod scan;
pub mod serve;
pub(crate) mod service;
pub mod settings;
pub mod state;
pub(crate) mod watch;
