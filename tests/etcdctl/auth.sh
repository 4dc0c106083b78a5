#!/usr/bin/env bash
# Authentication and authorization through real etcdctl, compared between etcd 3.4 and kybern by
# crates/cli/tests/etcdctl_diff.rs (test `auth`): users and roles, a reader of one prefix,
# enabling auth, what each user may do, wrong passwords and tokens, admin-only calls, disabling.
# By hand: tests/etcdctl/auth.sh http://127.0.0.1:2379 [WORKDIR] (on an empty store).
. "$(dirname "$0")/lib.sh"

e put pub/a 1
e put priv/b 2
# ---- users and roles while auth is off
e user add root --new-user-password=secret
e role add root
e user grant-role root root
e role add reader
e role add reader
e role grant-permission reader read pub/ --prefix
e role grant-permission reader readwrite scratch
e role grant-permission reader write w1 w3
e role get reader
e role grant-permission nobody read x
e user add alice --new-user-password=alicepw
e user add alice --new-user-password=again
e user add nopw --no-password
e user grant-role alice reader
e user grant-role alice reader
e user grant-role alice missing
e user grant-role ghost reader
e user get alice
e user get alice --detail
e user get ghost
e user list
e role list
e role revoke-permission reader w1 w3
e role revoke-permission reader w1 w3
e user revoke-role alice nothing
e user delete ghost
e role delete ghost
e user add nouser:pw
e user delete nouser
# ---- enable: needs root with the root role
e auth enable
e auth enable
# without credentials
e get pub/a
e put pub/x 1
e user list
e endpoint status -w json
# ---- alice: reads under pub/, writes scratch only
e --user alice:alicepw get pub/ --prefix
e --user alice:alicepw get pub/a
e --user alice:alicepw get priv/b
e --user alice:alicepw get "" --prefix
e --user alice:alicepw put pub/a 2
e --user alice:alicepw put scratch s1
e --user alice:alicepw get scratch
e --user alice:alicepw del scratch --prev-kv
e --user alice:alicepw del pub/a
ein '\n\nput pub/t 1\n\n\n' --user alice:alicepw txn
ein 'value("pub/a") = "1"\n\nget pub/a\n\nget priv/b\n\n' --user alice:alicepw txn
ein 'value("priv/b") = "2"\n\nget pub/a\n\n\n' --user alice:alicepw txn
step timeout 2 etcdctl --user alice:alicepw watch priv/b
e --user alice:alicepw user list
e --user alice:alicepw role list
e --user alice:alicepw user get alice
e --user alice:alicepw user get root
e --user alice:alicepw role get reader
e --user alice:alicepw role get root
e --user alice:alicepw user add mallory --new-user-password=x
e --user alice:alicepw auth disable
e --user alice:alicepw endpoint hashkv
e --user alice:alicepw defrag
e --user alice:alicepw compaction 1
# ---- bad credentials
e --user alice:wrong get pub/a
e --user nobody:x get pub/a
e --user nopw:x get pub/a
# ---- root may do everything; some changes stay refused while auth is on
e --user root:secret get "" --prefix
e --user root:secret put priv/c 3
e --user root:secret user list
e --user root:secret role list
e --user root:secret user delete root
e --user root:secret user revoke-role root root
e --user root:secret role delete root
e --user root:secret role revoke-permission reader pub/ --prefix
e --user alice:alicepw get pub/a
ein 'newpw\n' --user root:secret user passwd alice --interactive=false
e --user alice:alicepw get scratch
e --user alice:newpw get scratch
e --user root:secret auth disable
# ---- auth off again: everything open, users kept
e get priv/b
e user list
e user delete alice
e role delete reader
e role list
e user get root
e auth enable
e --user root:secret auth disable
e auth disable
