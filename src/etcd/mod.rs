//! etcd: the config file the charm writes and reads, a client for the local
//! member, and the snapshot stream.

pub mod client;
pub mod config;
pub mod health;
pub mod render;
pub mod snapshot;
pub mod tool;

pub use client::{LocalMember, MemberInfo, MemberStatus};
pub use config::EtcdConfig;

/// etcd prints cluster and member IDs as lower-case hex; so does the charm.
pub fn id_hex(id: u64) -> String {
    format!("{id:x}")
}
