#!/bin/bash
# tests/cluster/single.sh - a one-node Pacemaker + Corosync cluster (in its own namespaces, on
# loopback) runs clinit group "web" through the clinit agent, and recovers it from each failure
# the agent's monitor reports. Usage: single.sh [BASE]   (env: CLINIT_ROOT, PYTHON, KEEP=1)
#  1. start: the group's processes run
#  2. a test entry fails (a changed check, re-told by hand): FAILED -> monitor -> restart
#  3. a respawn entry is throttled (it crashes 5 times in a row): monitor -> restart
#  4. the clinit daemon is SIGKILLed: monitor sees its processes unmanaged -> stop ends them,
#     start starts a new daemon (:::agent_starts_daemon:yes) and the group
#  5. target-role=Stopped halts the group gracefully (its service gets SIGINT and exits)
B=${1:-/tmp/clinit-cluster/single}
NS=clci-s NODES=1
CLINIT_ROOT=${CLINIT_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
PYTHON=${PYTHON:-python3}
. "$(dirname "$0")/lib.sh"

preflight
phase "setup namespace + cluster"
setup_nodes
write_service
cat > $B/cltab <<EOF
:::socket:/run/clinit/clinit.sock
:::clstat:/run/clinit/clstat
:::log:$R/n1/children.log
:::term_delay:2
:::kill_delay:2
:::respawn_limit:3
:::respawn_window:1
:::respawn_pause:30
:::agent_starts_daemon:yes
web:web-check:run:test:test -f $B/srv.sh
web:web-srv:run:respawn:exec $B/srv.sh $B web
EOF
start_clinit 1
cluster_up
endphase

phase "start group web through the agent"
t=$(now)
add_group_resource 1 web web
waitfor 30 "web runs on node1" eq 'where 1 web' node1
waitfor 30 "group web DONE at run" eq 'gstate 1 web' "run DONE"
waitfor 10 "web's service runs" nonempty 'srv_pids 1 web'
metric "cibadmin --create to group DONE" "$(fmt "$(now) - t")"
P1=$(srv_pids 1 web)
grep -qx "CLINIT_GROUP=web" <(tr '\0' '\n' </proc/$P1/environ) || fail "service $P1 is not clinit's"
agent 1 monitor web || fail "the agent's monitor says $? for a running group"
endphase

phase "a test entry fails -> monitor -> recovery"
# the check changes to one that fails on its first run only; the operator re-tells the group
sed -i "s|^web:web-check:.*|web:web-check:run:test:test -e $B/checked \|\| { touch $B/checked; exit 1; }|" $B/cltab
t=$(now)
clinit_cli 1 web run >/dev/null 2>&1
waitfor 10 "group web FAILED" eq 'gstate 1 web' "run FAILED"
waitfor 20 "fail-count 1" eq 'failcount 1 web' 1
waitfor 30 "group web DONE again" eq 'gstate 1 web' "run DONE"
waitfor 20 "Pacemaker sees web started" eq 'where 1 web' node1
metric "test entry FAILED -> group DONE again" "$(fmt "$(now) - t")"
got_sigint 1 web $P1 || fail "the restart did not stop service $P1 gracefully"
new_srv() { local p; p=$(srv_pids 1 web); [ -n "$p" ] && [ "$p" != "$P1" ]; }
waitfor 10 "a new service after the restart" new_srv
P2=$(srv_pids 1 web)
endphase

phase "a respawn entry is throttled -> monitor -> recovery"
echo 5 > $B/crash-web                    # the service crashes on its next 5 starts
t=$(now)
kill -KILL $P2
waitfor 20 "fail-count 2" eq 'failcount 1 web' 2
waitfor 30 "the service's crashes used up" eq "cat $B/crash-web" 0
waitfor 30 "web's service runs again" nonempty 'srv_pids 1 web'
waitfor 20 "the agent's monitor says running" agent 1 monitor web
metric "respawn entry throttled -> service up again" "$(fmt "$(now) - t")"
[ "$(failcount 1 web)" = 2 ] || fail "fail-count $(failcount 1 web), not 2"
grep -q "too rapidly" $R/n1/clinit.log $R/n1/children.log 2>/dev/null || el "note: no 'too rapidly' line found in the logs"
endphase

phase "the clinit daemon is SIGKILLed -> monitor -> recovery"
P3=$(srv_pids 1 web); D1=$(daemon_pid 1)
[ -n "$D1" ] || fail "no clinit daemon found in node1"
t=$(now)
kill -KILL $D1
FC=$(failcount 1 web)
waitfor 20 "fail-count $((FC + 1))" eq 'failcount 1 web' $((FC + 1))
new_daemon() { local d; d=$(daemon_pid 1); [ -n "$d" ] && [ "$d" != "$D1" ]; }
waitfor 30 "a new daemon" new_daemon
waitfor 30 "group web DONE under the new daemon" eq 'gstate 1 web' "run DONE"
waitfor 20 "Pacemaker sees web started" eq 'where 1 web' node1
metric "daemon SIGKILLed -> group DONE under a new daemon" "$(fmt "$(now) - t")"
got_sigint 1 web $P3 || fail "the old daemon's service $P3 was not stopped gracefully by the agent's stop"
waitgone 5 $P3 || fail "the old daemon's service $P3 still runs"
waitfor 10 "a service under the new daemon" nonempty 'srv_pids 1 web'
endphase

phase "target-role=Stopped halts the group gracefully"
P4=$(srv_pids 1 web)
t=$(now)
inn 1 crm_resource -r web --meta --set-parameter target-role --parameter-value Stopped >/dev/null || fail "set target-role"
waitfor 30 "group web CONFIGURED (halted)" eq "gstate 1 web | cut -d' ' -f2" CONFIGURED
metric "target-role=Stopped -> group halted" "$(fmt "$(now) - t")"
inn 1 crm_resource --wait --timeout 30s || fail "crm_resource --wait"
got_sigint 1 web $P4 || fail "service $P4 got no SIGINT"
waitgone 5 $P4 || fail "service $P4 still runs"
agent 1 monitor web; rc=$?; [ $rc = 7 ] || fail "monitor of the halted group says $rc, not 7"
endphase
exit 0
