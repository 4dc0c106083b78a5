#!/usr/bin/env bash
# The core etcdctl scenario, run by crates/cli/tests/etcdctl_diff.rs against a fresh real etcd 3.4
# and a fresh kybern store, whose outputs must match after masking ids, sizes, hashes, times and
# versions. By hand: tests/etcdctl/core.sh http://127.0.0.1:2379 [WORKDIR] (on an empty store: the
# revisions are part of the output).
. "$(dirname "$0")/lib.sh"

# ---- put / get and every range option (revisions 2..11)
e put a 1
e put b 2
e put c 3
e put foo bar
e put foo/1 x
e put foo/2 y
e put foo/3 z
e put zz last
e put a 11 --prev-kv
e put b 22 -w json
e get a
e get a -w json
e get a -w fields
e get a --hex
e get foo --prefix
e get foo --prefix --keys-only
e get foo --prefix --print-value-only
e get a c
e get a c -w json
e get foo --from-key
e get foo --from-key --keys-only --limit 2
e get "" --prefix --keys-only
e get foo --prefix --limit 2
e get foo --prefix --limit 2 -w json
e get a --rev 1
e get a --rev 2
e get a --rev 2 -w json
e get foo --prefix --rev 5
e get foo --prefix --sort-by=MODIFY --order=DESCEND
e get "" --prefix --sort-by=VALUE --order=ASCEND
e get "" --prefix --sort-by=CREATE --order=DESCEND --keys-only
e get "" --prefix --sort-by=VERSION --order=DESCEND --limit 3
e get "" --prefix --sort-by=KEY --order=DESCEND --limit 2
e get "" --prefix --order=DESCEND --keys-only
e get foo --prefix --consistency s
e get a --consistency s -w json
e get missing
e get missing -w json

# ---- put options
e put a --ignore-value
e get a -w json
e put missing --ignore-value
e put b newval --ignore-lease
e put missing2 v --ignore-lease
e put zz again --prev-kv -w json

# ---- txn (compares on value/version/create/mod, success and failure branches)
ein 'value("c") = "3"\n\nput c 33\nget c\n\nput c fail\n\n' txn
ein 'value("c") = "3"\n\nput c never\n\nput c33 failure-branch\nget c\n\n' txn
ein 'version("c") = "2"\ncreate("c") = "4"\nmod("c") > "3"\n\nget c\nget foo --prefix --keys-only\n\n\n' txn
ein 'version("a") > "10"\n\nput a never\n\nget a --print-value-only\n\n' txn
ein 'value("nokey") = "x"\n\n\nput nokey created\n\n' txn -w json
ein 'mod("nokey") = "0"\n\ndel nokey\n\n\n' txn
ein 'create("nokey") = "0"\nvalue("c") != "3"\n\nput t1 1\nput t2 2\ndel zz\n\n\n' txn
ein 'value("c") < "4"\n\nget c\n\n\n' txn -w json
ein '\n\nput d 1\nput d 2\n\n\n' txn
ein '\n\nput d 1\ndel d\n\n\n' txn
ein 'value("c") = "33"\n\nput c 333 --prev-kv\n\n\n' txn
ein '\n\ndel foo --prefix --prev-kv\n\n\n' txn
ein 'bogus("c") = "1"\n\n\n\n' txn
e get "" --prefix

# ---- watch: history replay (bounded by timeout; exit 124)
watch_for 2 --rev 1 --prefix foo
watch_for 2 --rev 1 c --prev-kv
watch_for 2 --rev 1 a c
watch_for 2 --rev 14 --prefix ""
watch_for 2 --rev 1 -w json c
# live events after the current revision, replayed from rev+1 so that none can be missed
REV=$(etcdctl get c -w json | sed -n 's/.*"revision":\([0-9]*\).*/\1/p')
echo "# (current revision is $REV)"
timeout 3 etcdctl watch --rev $((REV + 1)) --prefix w --prev-kv >"$WORK/watch.live" 2>&1 &
WPID=$!
quiet_put w/1 one
quiet_put w/2 two
quiet_put w/1 uno
etcdctl del w/2 >/dev/null
wait $WPID
WEXIT=$?
echo "### etcdctl watch --rev $((REV + 1)) --prefix w --prev-kv (live, in the background)"
cat "$WORK/watch.live"
echo "--- exit $WEXIT"

# ---- del
e del missing
e del a --prev-kv
e del t1 t3
e del w --prefix --prev-kv -w json
e del b --from-key
e get "" --prefix --keys-only
e put a 1
e put b 2

# ---- compaction
REV=$(etcdctl get a -w json | sed -n 's/.*"revision":\([0-9]*\).*/\1/p')
e compaction 5
e compaction 5
e compaction 3
e compaction 100000
e get c --rev 4
e get c --rev 5
e get c --rev 6 -w json
e get c --rev 100000
watch_for 2 --rev 2 c
watch_for 2 --rev 5 c
e compaction --physical $((REV - 2))
e get a --rev $((REV - 3))

# ---- leases
L1=$(lease_id 100)
echo "# (lease L1 granted: $L1)"
e lease grant 200
L2=$(etcdctl lease list | tail -n +2 | grep -v "^$L1\$" | head -1)
e put l1 v1 --lease="$L1"
e put l2 v2 --lease="$L1"
e put l3 v3 --lease="$L2"
e get l1 -w json
e lease timetolive "$L1"
e lease timetolive "$L1" --keys
e lease timetolive "$L1" --keys -w json
e lease keep-alive --once "$L1"
e lease list
e put l2 moved --lease="$L2"
e put l2 kept --ignore-lease --prev-kv
e lease timetolive "$L1" --keys
e lease timetolive "$L2" --keys
e lease revoke "$L1"
e get l --prefix
e lease timetolive "$L1"
e lease timetolive "$L1" --keys -w json
e lease revoke "$L1"
e lease keep-alive --once "$L1"
e lease revoke 1234abcd
e lease timetolive 1234abcd
e lease keep-alive --once 1234abcd
e put x y --lease=1234abcd
e lease list

# ---- bad input
e get ""
e get
e put
e put onlykey extra arg
e get a --rev 100000
e get a --sort-by=BOGUS
e get a --order=SIDEWAYS
e del ""
e compaction notanumber
e lease revoke notahexid
e lease grant abc
step bash -c 'head -c 1700000 /dev/zero | tr "\0" x | etcdctl put big'
step bash -c '{ echo; for i in $(seq 1 129); do echo "put m$i v"; done; echo; echo; } | etcdctl txn'
step bash -c '{ echo; for i in $(seq 1 128); do echo "put m$i v"; done; echo; echo; } | etcdctl txn | sort | uniq -c'
e lease timetolive

# ---- maintenance and cluster
e defrag
e alarm list
e alarm disarm
e snapshot save snap.db
step test -s snap.db
e snapshot status snap.db -w json
e endpoint status
e endpoint status -w table
e endpoint status -w json
e endpoint health
e endpoint health -w json
e member list
e member list -w table
e member list -w json
# the same with the endpoint given as a URL (http://host:port), as etcd's docs write it
eurl endpoint status
eurl defrag
eurl endpoint health
eurl get a
e get "" --prefix --keys-only
