//! `api_load`: the management API under load (see the binary and bench/README.md).

pub mod conn;
pub mod daemon;
pub mod demo;
pub mod load;
pub mod procfs;
pub mod report;
pub mod seed;
