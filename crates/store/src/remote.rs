//! RemoteKv: the Kv trait over a remote etcd v3 endpoint (raw tonic calls).
