//! Processes on loopback: kybern store members and real etcd.
