//! The Ferry mobility agent: registers with an appliance, tracks every 64 KiB block of its disks
//! with a persistent hash tracker, and streams changed blocks over mutual TLS (see `wire`).
//!
//! Modules: `tracker` (per-block hash records), `scan` (disk pass), `flight` (window and
//! unacknowledged extents), `session` (one connection), `agent` (reconnecting run loop),
//! `register` (with `bios_uuid`), `tls`, `state` (state dir layout), `status`, `cli`.

pub mod agent;
pub mod bios_uuid;
pub mod cli;
pub mod flight;
pub mod register;
pub mod scan;
pub mod session;
pub mod state;
pub mod status;
pub mod tls;
pub mod tracker;
