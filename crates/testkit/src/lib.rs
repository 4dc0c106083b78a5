//! Dev-only test support: members as processes on loopback (kybern and real etcd), and the `Kv`
//! conformance suite shared by every `Kv` implementation.

pub mod cluster;
pub mod conformance;
pub mod hollow;
pub mod kubeproc;
pub mod linearizability;
pub mod netlab;
pub mod procs;
pub mod workload;
