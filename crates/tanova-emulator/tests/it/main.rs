//! The integration tests of tanova-emulator: one test binary, one module per concern.
//!
//! Run one module with `cargo test -p tanova-emulator --test it knobs::`.

mod common;

mod batch;
mod contract;
mod knobs;
mod lifecycle;
mod unattended;
