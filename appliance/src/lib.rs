//! The Ferry appliance: the daemon (`appliance run`) and its admin commands, as a library so
//! the binary stays a thin shell and tests can drive every part.

pub mod agents_cmd;
pub mod api_client;
pub mod api_cmd;
pub mod api_cmd_push;
pub mod cli;
pub mod config;
pub mod console_banner;
pub mod daemon;
pub mod dispatch;
pub mod files;
pub mod firstboot;
pub mod logging;
pub mod mgmt;
pub mod points_cmd;
pub mod registry;
pub mod secrets;
pub mod state;
pub mod tls;
pub mod vault_access;
pub mod web;
