//! The pieces of `discovery_bench`: the vcsim it measures against, one round of each client, the
//! comparison of what they found, and the report.

pub mod compare;
pub mod ferry;
pub mod pyvmomi;
pub mod report;
pub mod vcsim;
