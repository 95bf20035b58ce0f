#!/bin/bash
# tests/cluster/two.sh - a two-node Pacemaker + Corosync cluster on this host (each node a
# network + mount + UTS namespace, joined by a veth pair carrying 127.0.1.1 and 127.0.1.2), a
# clinit daemon in each node, and two clinit groups as resources: "db", and "web" ordered
# after db and colocated with it (the README's layout). Usage: two.sh [BASE]
# (env: CLINIT_ROOT, PYTHON, TOKEN_MS, KEEP=1)
#  1. both groups start on node1, and only there
#  2. crm_resource --move db to node2: node1's services get SIGINT and exit, node2 starts
#     them (web follows db); --clear; then the same back to node1
#  3. node1 crashes (SIGKILL of its corosync, pacemakerd, clinit and everything else in it):
#     the groups come up on node2; measured from the kill to web DONE on node2
#  4. node1 rejoins (after a "reboot": empty /run and /dev/shm, its clinit daemon first);
#     the groups stay on node2
B=${1:-/tmp/clinit-cluster/two}
NS=clci-t NODES="1 2"
CLINIT_ROOT=${CLINIT_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
PYTHON=${PYTHON:-python3}
. "$(dirname "$0")/lib.sh"

runs_on() { # node [viewer]: both groups DONE at run there, their services run, Pacemaker agrees
  local i=$1 v=${2:-1 2} g j
  for g in db web; do
    [ "$(gstate $i $g)" = "run DONE" ] && [ -n "$(srv_pids $i $g)" ] || return 1
    for j in $v; do [ "$(where $j $g)" = node$i ] || return 1; done
  done; }
on_only() { # node: runs_on, and the other node's clinit runs neither group
  local i=$1 o=$(( 3 - $1 )) g
  runs_on $i || return 1
  for g in db web; do case "$(gstate $o $g)" in ""|*CONFIGURED) ;; *) return 1;; esac; done; }

preflight
phase "setup namespaces, clinit, cluster"
setup_nodes
write_service
cat > $B/cltab <<EOF
:::socket:/run/clinit/clinit.sock
:::clstat:/run/clinit/clstat
:::term_delay:2
:::kill_delay:2
db:db-srv:run:respawn:exec $B/srv.sh $B db
web:web-check:run:test:test -f $B/srv.sh
web:web-srv:run:respawn:exec $B/srv.sh $B web
EOF
start_clinit 1; start_clinit 2
cluster_up
el "DC: $(inn 1 crmadmin -D -q 2>&1)"
endphase

phase "groups db and web start on node1"
add_group_resource 1 db db Stopped
add_group_resource 1 web web Stopped
inn 1 cibadmin --create -o constraints --xml-text '<rsc_location id="db-prefers-node1" rsc="db" node="node1" score="50"/>' || fail "location"
inn 1 cibadmin --create -o constraints --xml-text '<rsc_order id="db-then-web" first="db" then="web" kind="Mandatory"/>' || fail "order"
inn 1 cibadmin --create -o constraints --xml-text '<rsc_colocation id="web-with-db" rsc="web" with-rsc="db" score="INFINITY"/>' || fail "colocation"
t=$(now)
inn 2 crm_resource -r db --meta -d target-role >/dev/null && inn 2 crm_resource -r web --meta -d target-role >/dev/null || fail "start"
waitfor 60 "db and web run on node1 only" on_only 1
metric "target-role Started -> both groups DONE on node1" "$(fmt "$(now) - t")"
inn 1 crm_resource --wait --timeout 60s || fail "crm_resource --wait"
endphase

move() { # from to
  local f=$1 t=$2 tm pw pd
  phase "crm_resource --move db: node$f -> node$t"
  pw=$(srv_pids $f web); pd=$(srv_pids $f db)
  tm=$(now)
  inn $f crm_resource --move -r db -N node$t >/dev/null 2>&1 || fail "crm_resource --move"
  waitfor 60 "db and web run on node$t only" on_only $t
  metric "planned move node$f -> node$t (both groups DONE)" "$(fmt "$(now) - tm")"
  got_sigint $f web $pw && got_sigint $f db $pd || fail "node$f's services got no SIGINT"
  waitgone 5 $pw $pd || fail "node$f's services still run"
  local g p first; for g in web db; do    # the old node's service ended before the new one began
    [ $g = web ] && p=$pw || p=$pd
    first=$(grep -E "^node$f $g $p SIGINT|^node$t $g [0-9]+ start" $B/events | tail -n 2 | head -n 1)
    [ "${first%% *}" = node$f ] || fail "node$t started $g before node$f's $g had stopped: $(tail -n 6 $B/events | tr '\n' ';')"
  done
  [ "$(gstate $f web | cut -d" " -f2)" = CONFIGURED ] || fail "web on node$f is $(gstate $f web), not halted"
  inn $f crm_resource --clear -r db >/dev/null || fail "--clear"
  inn $f crm_resource --wait --timeout 60s || fail "wait after --clear"
  on_only $t || fail "the groups left node$t after --clear (stickiness 100 > preference 50)"
  endphase
}
move 1 2
move 2 1

phase "node1 crashes -> failover to node2"
C=$(cat $R/n1/corosync.pid); P=$(cat $R/n1/pacemakerd.pid); DC=$(inn 2 crmadmin -D -q 2>&1)
ours "$C" 1 && ours "$P" 1 || fail "corosync/pacemakerd of node1 not found in its netns"
el "before the crash: groups on node1, DC is $DC"
T_KILL=$(now)
kill -KILL "$C" "$P"
killnode 1 || fail "node1's processes survive SIGKILL"
rm -f $R/n1/corosync.pid $R/n1/pacemakerd.pid
el "SIGKILL node1: corosync $C, pacemakerd $P, clinit and every other pid in netns $NS-n1"
T_OFF= T_UP=; end=$(( T_KILL + 90000000 ))
while [ -z "$T_UP" ] || [ -z "$T_OFF" ]; do
  [ "$(now)" -ge $end ] && fail "no failover within 90 s (node2: $(clstat 2 | tr '\n' ';'))"
  [ -z "$T_OFF" ] && offline_seen 2 node1 && { T_OFF=$(now); el "node2 sees node1 OFFLINE"; }
  [ -z "$T_UP" ] && [ "$(gstate 2 web)" = "run DONE" ] && { T_UP=$(now); el "web DONE on node2"; }
  sleep 0.05
done
metric "crash node1 (DC was $DC) -> node1 seen offline" "$(fmt "T_OFF - T_KILL")"
metric "crash node1 -> web DONE on node2" "$(fmt "T_UP - T_KILL")"
waitfor 30 "both groups run on node2, as Pacemaker on node2 sees it" runs_on 2 2
endphase

phase "node1 rejoins"
find $R/n1/run -mindepth 1 -delete                  # a rebooted node: empty /run and /dev/shm
install -d -m 1755 $R/n1/run/resource-agents; install -d -m 1777 $R/n1/run/lock; ln -s /dev/shm $R/n1/run/shm
inn 1 umount /dev/shm && inn 1 mount -t tmpfs -o mode=1777,size=64m $NS-shm1 /dev/shm || fail "fresh /dev/shm node1"
start_clinit 1                                      # the node's init comes first
start_corosync 1
waitfor 30 "corosync quorate with 2 nodes, node1 view" cs_ok 1
start_pacemaker 1
waitfor 90 "both nodes online + DC, seen from node1" pcmk_ok 1
waitfor 90 "both nodes online + DC, seen from node2" pcmk_ok 2
inn 2 crm_resource --wait --timeout 60s || fail "wait after rejoin"
on_only 2 || fail "after the rejoin the groups should stay on node2 only"
el "groups still on node2 only (stickiness); node1 rejoined, its clinit runs no group"
endphase
exit 0
