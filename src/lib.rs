//! The etcd charm: a Juju charm for etcd whose `snapshot` and `restore`
//! actions an operator can trust. The binary in `main.rs` only routes; all
//! behaviour lives in these modules.

pub mod actions;
pub mod archive;
pub mod dispatch;
pub mod error;
pub mod etcd;
pub mod fsutil;
pub mod hooks;
pub mod install;
pub mod juju;
pub mod lock;
pub mod nagios;
pub mod paths;
pub mod relations;
pub mod roll;
pub mod schedule;
pub mod service;
pub mod store;
pub mod timefmt;
pub mod upgrade;

pub use error::Error;
