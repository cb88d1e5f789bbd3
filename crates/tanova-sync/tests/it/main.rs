//! The integration tests of tanova-sync: one test binary, one module per concern.
//!
//! Run one module with `cargo test -p tanova-sync --test it watch::`.

mod common;

mod agent;
mod api_client;
mod bad_files;
mod batch;
mod config;
mod console;
mod crash;
mod deb;
mod docker;
mod faults;
mod gdpr;
mod healthcheck;
mod install;
mod ledger;
mod legacy;
mod listen;
mod logging;
mod rate;
mod redirects;
mod redis_tls;
mod secrets;
mod setup;
mod shared;
mod state_commands;
mod state_schema;
mod sync;
mod syslog;
mod transport;
mod unattended;
mod watch;
