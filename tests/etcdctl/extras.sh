#!/usr/bin/env bash
# Further etcdctl commands beyond the core scenario (concurrency recipes, hashkv, auth, cluster
# endpoints), compared the same way by crates/cli/tests/etcdctl_diff.rs (test `extras`).
# By hand: tests/etcdctl/extras.sh http://127.0.0.1:2379 [WORKDIR] (on an empty store).
. "$(dirname "$0")/lib.sh"

e put k1 v1
e put k2 v2
e endpoint hashkv
e endpoint hashkv -w json
e endpoint status --cluster -w json
e endpoint health --cluster
# lock: run a command while holding the lock (its key is <name>/<lease id>)
step etcdctl lock mylock -- echo locked
step bash -c 'etcdctl lock mylock -- sh -c "echo \$ETCD_LOCK_KEY | cut -d/ -f1; echo rev-set=\${ETCD_LOCK_REV:+yes}"'
e get mylock --prefix --keys-only
# elect: campaign (bounded), then observe nothing left
step timeout 2 etcdctl elect myelection proposal-1
e get myelection --prefix --keys-only
e lease list
# auth surface without enabling it
e user list
e role list
e auth enable
e user add root --new-user-password=secret
e user list
e role list
e user get root
e get k --prefix --rev 0
e get k --prefix -w table
e put k1 v1b --prev-kv -w table
e del k --prefix -w table
e compaction 1
