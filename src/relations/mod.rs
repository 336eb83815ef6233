//! Relations to other applications, one file per interface: each turns the
//! relation data into typed values and back; hook tools are reached only
//! through `juju.rs`.

pub mod certificates;
pub mod grafana;
pub mod nrpe;
pub mod prometheus;
pub mod proxy;
