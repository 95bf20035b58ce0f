# tests/cluster/lib.sh - a real Pacemaker + Corosync cluster of 1 or 2 nodes on this host,
# each node a network + mount + UTS namespace with its own clinit daemon. Sourced by
# single.sh and two.sh (after the example in shared/pacemaker/two-node-cluster.example.sh).
#
# The caller sets:
#   NS        name prefix of everything it creates (namespaces clci-XN, veths clci-XvN)
#   NODES     "1" or "1 2"
#   B         base folder (wiped at the start; removed after a clean run unless KEEP=1)
#   CLINIT_ROOT  the clinit checkout;  PYTHON  an interpreter with clinit's dependencies
# Each node i: netns $NS-n$i; mount + UTS namespaces bound to files in $B/ns; private
# /etc/corosync /var/lib/corosync /var/lib/pacemaker /var/log/{corosync,pacemaker} /etc/hosts
# /run /dev/shm, and /usr/lib/ocf/resource.d (holding only the clinit agent). Two nodes are
# joined by a veth pair carrying 127.0.1.1/24 and 127.0.1.2/24 only (route_localnet); one
# node uses 127.0.0.1 on its own loopback. Teardown is by pid and by these names only.
set -uo pipefail
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
R=$B/run; NSD=$B/ns; RC=0; SUMMARY=(); METRICS=()
TOKEN_MS=${TOKEN_MS:-}

now() { echo "${EPOCHREALTIME/./}"; }                              # microseconds
T0=$(now)
fmt() { local d=$(( $1 )); printf '%d.%02d' $(( d / 1000000 )) $(( d % 1000000 / 10000 )); }
el() { printf '%7ss %s\n' "$(fmt "$(now) - T0")" "$*"; }
fail() { el "FAIL: $*"; RC=1; exit 1; }                              # the EXIT trap tears down
phase() { PH=$1; PT=$(now); el "=== $PH"; }
endphase() { local d; d=$(fmt "$(now) - PT"); SUMMARY+=("$(printf '%-44s %6ss' "$PH" "$d")"); el "=== $PH done in ${d}s"; }
metric() { METRICS+=("$(printf '%-52s %6ss' "$1" "$2")"); el "METRIC $1: $2 s"; }
waitfor() { # timeout_s description cmd...: poll every 0.1 s until cmd succeeds
  local t=$1 d=$2; shift 2; local end=$(( $(now) + t * 1000000 ))
  until "$@" >/dev/null 2>&1; do [ "$(now)" -ge $end ] && fail "timeout (${t}s) waiting: $d"; sleep 0.1; done
  el "ok: $d"; }
nsargs() { echo "--net=/run/netns/$NS-n$1 --mount=$NSD/n$1.mnt --uts=$NSD/n$1.uts"; }
inn() { local i=$1; shift; nsenter $(nsargs "$i") -- "$@"; }       # run a command inside node i
eq() { [ "$(eval "$1")" = "$2" ]; }                                # eq 'command' value
nonempty() { [ -n "$(eval "$1")" ]; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
ours() { # pid node: alive AND inside the node's netns (guards against pid reuse)
  local a b; a=$(stat -L -c %i /proc/$1/ns/net 2>/dev/null) && b=$(stat -L -c %i /run/netns/$NS-n$2 2>/dev/null) && [ "$a" = "$b" ]; }
killnode() { # node: SIGKILL, by pid, every process in the node's netns, until none is left
  local k p pids; for k in 1 2 3 4 5 6 7 8 9 10; do pids=$(ip netns pids $NS-n$1 2>/dev/null); [ -z "$pids" ] && return 0
    for p in $pids; do kill -KILL "$p" 2>/dev/null; done; sleep 0.1; done; [ -z "$(ip netns pids $NS-n$1 2>/dev/null)" ]; }
waitgone() { local t=$1 p; shift; local end=$(( $(now) + t * 1000000 ))
  for p in "$@"; do while alive "$p"; do [ "$(now)" -ge $end ] && return 1; sleep 0.1; done; done; }

# ---------------------------------------------------------------- clinit inside a node
clinit_cli() { local i=$1; shift; inn $i "$PYTHON" "$CLINIT_ROOT/bin/clinit" -c $B/cltab "$@"; }
clinit_up() { clinit_cli $1 >/dev/null 2>&1; }                       # the daemon answers (a re-read)
start_clinit() { local i=$1
  nsenter $(nsargs $i) -- setsid "$PYTHON" "$CLINIT_ROOT/bin/clinit" -d -c $B/cltab \
    </dev/null >>$R/n$i/clinit.log 2>&1 &
  echo $! > $R/n$i/clinit.pid; disown $!
  waitfor 30 "clinit daemon answers in node$i" clinit_up $i; }
clstat() { cat $R/n$1/run/clinit/clstat 2>/dev/null; }                  # node i's status file
gstate() { clstat $1 | awk -v g="$2" '$2 == g { print $3, $4 }'; }      # "LEVEL STATE" of group $2
daemon_pid() { ip netns pids $NS-n$1 2>/dev/null | while read -r p; do
  tr "\0" " " </proc/$p/cmdline 2>/dev/null | grep -q -- " -d -c $B/cltab" && echo $p; done; }
agent() { local i=$1 a=$2 g=$3; inn $i env OCF_ROOT=/usr/lib/ocf OCF_RESOURCE_INSTANCE=$g \
  OCF_RESKEY_group=$g OCF_RESKEY_cltab=$B/cltab /usr/lib/ocf/resource.d/clinit/clinit $a; }
srv_pids() { # node group: pids of the group's test service in node i (from the events log)
  local p; for p in $(awk -v n="node$1" -v g="$2" '$1 == n && $2 == g && $4 == "start" {print $3}' $B/events 2>/dev/null); do
    ours "$p" $1 && echo $p; done; }
got_sigint() { grep -q "^node$1 $2 $3 SIGINT" $B/events; }               # node group pid

write_service() { # the test service: logs its start and its SIGINT; crashes while crash-GROUP > 0
  cat > $B/srv.sh <<'EOF'
#!/bin/sh
# srv.sh BASE GROUP: a service for the cluster tests
B=$1 G=$2
n=$(cat "$B/crash-$G" 2>/dev/null || echo 0)
if [ "$n" -gt 0 ] 2>/dev/null; then echo $((n - 1)) > "$B/crash-$G"; echo "$(uname -n) $G $$ crash" >> "$B/events"; exit 1; fi
trap 'kill $! 2>/dev/null; echo "$(uname -n) $G $$ SIGINT" >> "$B/events"; exit 0' INT
echo "$(uname -n) $G $$ start" >> "$B/events"
while :; do sleep 5 & wait $!; done   # (a background sleep ignores SIGINT: the trap ends it)
EOF
  chmod 755 $B/srv.sh; : > $B/events; }

# ---------------------------------------------------------------- teardown (idempotent)
teardown() {
  trap - EXIT INT TERM
  local i p pids left=0 t=$(now)
  el "--- teardown"
  for i in $NODES; do p=$(cat $R/n$i/pacemakerd.pid 2>/dev/null); ours "$p" $i && kill -TERM "$p"; done
  for i in $NODES; do p=$(cat $R/n$i/pacemakerd.pid 2>/dev/null)
    ours "$p" $i && { waitgone 60 "$p" || el "WARN: pacemakerd node$i (pid $p) still up after 60s"; }; done
  for i in $NODES; do p=$(cat $R/n$i/corosync.pid 2>/dev/null); ours "$p" $i && kill -TERM "$p"; done
  for i in $NODES; do p=$(cat $R/n$i/corosync.pid 2>/dev/null)
    ours "$p" $i && { waitgone 30 "$p" || el "WARN: corosync node$i (pid $p) still up after 30s"; }; done
  for i in $NODES; do for p in $(daemon_pid $i); do kill -TERM "$p"; waitgone 20 "$p" || el "WARN: clinit node$i (pid $p) still up"; done; done
  for i in $NODES; do           # anything still in a node's netns was started by us: SIGKILL by pid
    [ -e /run/netns/$NS-n$i ] || continue
    pids=$(ip netns pids $NS-n$i 2>/dev/null)
    [ -n "$pids" ] && { el "note: SIGKILL leftover pids in node$i: $(for p in $pids; do printf '%s(%s) ' $p "$(cat /proc/$p/comm 2>/dev/null)"; done)"
                        killnode $i || el "WARN: node$i processes survive SIGKILL"; }
  done
  for i in $NODES; do
    for f in $NSD/n$i.mnt $NSD/n$i.uts; do mountpoint -q "$f" 2>/dev/null && umount "$f"; done
    [ -e /run/netns/$NS-n$i ] && ip netns del $NS-n$i
  done
  mountpoint -q $NSD 2>/dev/null && umount $NSD
  if [ -f $B/.created-run-netns ] && [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
    mountpoint -q /run/netns && umount /run/netns; rmdir /run/netns 2>/dev/null; rm -f $B/.created-run-netns
  fi
  # ---- verify nothing is left
  for p in $(cat $R/all.pids 2>/dev/null); do alive "$p" && grep -qE '^(corosync|pacemakerd)$' /proc/$p/comm 2>/dev/null &&
    { el "LEFT: process $p"; left=1; }; done
  ip netns list 2>/dev/null | grep -q "^$NS-" && { el "LEFT: netns $(ip netns list | grep "^$NS-")"; left=1; }
  grep -q " $B" /proc/self/mountinfo && { el "LEFT: mounts under $B"; left=1; }
  ip -o link show 2>/dev/null | grep -q "$NS-" && { el "LEFT: host link $NS-*"; left=1; }
  for p in $(cat $R/ns.inodes 2>/dev/null); do
    ls -l /proc/[0-9]*/ns/ 2>/dev/null | grep -q "\[$p\]" && { el "LEFT: namespace inode $p in use"; left=1; }
  done
  SUMMARY+=("$(printf '%-44s %6ss' teardown "$(fmt "$(now) - t")")")
  if [ $left = 0 ]; then el "teardown clean: no processes, mounts, namespaces or links left"; else RC=1; fi
  [ -n "${PRECLEAN:-}" ] && exit $RC
  el "--- summary (phases)"; printf '    %s\n' "${SUMMARY[@]}"
  [ ${#METRICS[@]} -gt 0 ] && { el "--- measurements"; printf '    %s\n' "${METRICS[@]}"; }
  if [ $RC = 0 ]; then
    el "ALL OK (total $(fmt "$(now) - T0")s)"
    [ "${KEEP:-0}" = 1 ] || rm -rf $B
  else
    el "FAILED (total $(fmt "$(now) - T0")s); logs kept in $R"
    for i in $NODES; do echo "----- node$i clinit.log (tail)"; tail -n 15 $R/n$i/clinit.log 2>/dev/null
      echo "----- node$i pacemaker.log (clinit lines, tail)"; grep -E 'clinit|error' $R/n$i/log-pacemaker/pacemaker.log 2>/dev/null | tail -n 25; done
  fi
  exit $RC
}

# ---------------------------------------------------------------- preflight + setup
preflight() {
  [ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 2; }
  for c in corosync pacemakerd crm_mon cibadmin crm_resource crm_failcount unshare nsenter ip; do
    command -v $c >/dev/null || { echo "missing $c (apt-get install -y pacemaker corosync resource-agents)" >&2; exit 2; }; done
  mkdir -p $B
  local i; for i in $NODES; do
    if [ -e /run/netns/$NS-n$i ] || mountpoint -q $NSD 2>/dev/null; then
      el "leftovers of an earlier run found: tearing them down first"
      ( PRECLEAN=1; teardown ) || { echo "could not remove leftovers" >&2; exit 2; }; break; fi; done
  trap teardown EXIT; trap 'fail "interrupted"' INT TERM
  grep -q " $B" /proc/self/mountinfo && { echo "mounts left under $B" >&2; exit 2; }
  rm -rf $B; mkdir -p $R $NSD; : > $R/all.pids
  # the agent, as an operator installs it (clinit-ocf --install), into a private OCF root
  "$PYTHON" -c "import sys; sys.path.insert(0, '$CLINIT_ROOT'); from clinit.ocfinstall import install; install('$B/ocf')" >/dev/null \
    || fail "installing the agent"
}

setup_nodes() { # network, private dirs, mount + UTS namespaces for each node in $NODES
  local i N addr
  mountpoint -q $NSD || { mount --bind $NSD $NSD && mount --make-private $NSD; } || fail "private bind of $NSD"
  [ -d /run/netns ] || touch $B/.created-run-netns
  for i in $NODES; do
    ip netns add $NS-n$i || fail "ip netns add $NS-n$i"
    nsenter --net=/run/netns/$NS-n$i sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    ip -n $NS-n$i link set lo up
  done
  if [ "$NODES" = "1 2" ]; then
    ip link add $NS-v1 netns $NS-n1 type veth peer name $NS-v2 netns $NS-n2 || fail "veth"
    for i in 1 2; do   # lo's 127.0.0.1/8 makes all of 127/8 local, the peer too: shrink it to /32
      ip -n $NS-n$i addr del 127.0.0.1/8 dev lo && ip -n $NS-n$i addr add 127.0.0.1/32 dev lo || fail "lo /32"
      nsenter --net=/run/netns/$NS-n$i sysctl -qw net.ipv4.conf.all.route_localnet=1 \
        net.ipv4.conf.$NS-v$i.route_localnet=1 || fail "route_localnet"
      ip -n $NS-n$i addr add 127.0.1.$i/24 dev $NS-v$i && ip -n $NS-n$i link set $NS-v$i up || fail "veth addr"
    done
    ip -n $NS-n1 route get 127.0.1.2 | grep -q "dev $NS-v1" || fail "127.0.1.2 not routed over the veth in node1"
  fi
  for i in $NODES; do N=$R/n$i
    [ "$NODES" = "1 2" ] && addr=127.0.1.$i || addr=127.0.0.1
    install -d -m 0755 $N/etc-corosync/uidgid.d $N/lib-corosync $N/log-corosync $N/run $N/lib-pacemaker
    install -d -m 1755 $N/run/resource-agents; install -d -m 1777 $N/run/lock; ln -s /dev/shm $N/run/shm
    install -d -o hacluster -g haclient -m 0750 $N/lib-pacemaker/cib $N/lib-pacemaker/pengine \
      $N/lib-pacemaker/blackbox $N/lib-pacemaker/cores
    install -d -o hacluster -g haclient -m 0770 $N/log-pacemaker $N/log-pacemaker/bundles
    { printf 'totem {\n    version: 2\n    cluster_name: %s\n    transport: knet\n' "$NS"
      printf '    crypto_cipher: none\n    crypto_hash: none\n'; [ -n "$TOKEN_MS" ] && printf '    token: %s\n' "$TOKEN_MS"
      printf '}\nlogging {\n    to_stderr: no\n    to_logfile: yes\n    logfile: /var/log/corosync/corosync.log\n'
      printf '    to_syslog: no\n    timestamp: on\n}\nquorum {\n    provider: corosync_votequorum\n'
      [ "$NODES" = "1 2" ] && printf '    two_node: 1\n'
      printf '}\nnodelist {\n'
      local j; for j in $NODES; do
        [ "$NODES" = "1 2" ] && a=127.0.1.$j || a=127.0.0.1
        printf '    node {\n        name: node%s\n        nodeid: %s\n        ring0_addr: %s\n    }\n' $j $j $a; done
      printf '}\n'; } > $N/etc-corosync/corosync.conf
    cat > $N/lib-pacemaker/cib/cib.xml <<'EOF'
<cib validate-with="pacemaker-3.9" epoch="1" num_updates="0" admin_epoch="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="opt-stonith" name="stonith-enabled" value="false"/>
        <nvpair id="opt-quorum" name="no-quorum-policy" value="ignore"/>
        <nvpair id="opt-dcdead" name="dc-deadtime" value="2s"/>
      </cluster_property_set>
    </crm_config>
    <nodes/><resources/><constraints/>
    <rsc_defaults>
      <meta_attributes id="rsc-options">
        <nvpair id="rsc-stickiness" name="resource-stickiness" value="100"/>
      </meta_attributes>
    </rsc_defaults>
  </configuration>
  <status/>
</cib>
EOF
    chown hacluster:haclient $N/lib-pacemaker/cib/cib.xml; chmod 600 $N/lib-pacemaker/cib/cib.xml
    printf '127.0.0.1 localhost\n127.0.1.1 node1\n127.0.1.2 node2\n' > $N/hosts
    touch $NSD/n$i.mnt $NSD/n$i.uts
    nsenter --net=/run/netns/$NS-n$i unshare --mount=$NSD/n$i.mnt --uts=$NSD/n$i.uts --propagation private \
      /bin/sh -ec "
        hostname node$i
        umount -l /run/netns 2>/dev/null || true
        umount -l $NSD 2>/dev/null || true
        mount --bind $N/etc-corosync  /etc/corosync
        mount --bind $N/lib-corosync  /var/lib/corosync
        mount --bind $N/lib-pacemaker /var/lib/pacemaker
        mount --bind $N/log-corosync  /var/log/corosync
        mount --bind $N/log-pacemaker /var/log/pacemaker
        mount --bind $N/hosts         /etc/hosts
        mount --bind $N/run           /run
        mount --bind $B/ocf/resource.d /usr/lib/ocf/resource.d
        mount -t tmpfs -o mode=1777,size=64m $NS-shm$i /dev/shm
      " || fail "mount namespace for node$i"
    for f in /run/netns/$NS-n$i $NSD/n$i.mnt $NSD/n$i.uts; do stat -L -c %i $f; done >> $R/ns.inodes
  done
  for i in $NODES; do
    [ "$(inn $i uname -n)" = node$i ] || fail "uname -n in node$i"
    inn $i test -x /usr/lib/ocf/resource.d/clinit/clinit || fail "agent not visible in node$i"
  done
}

start_corosync() { local i=$1
  nsenter $(nsargs $i) -- setsid /usr/sbin/corosync -f </dev/null >>$R/n$i/corosync.out 2>&1 &
  echo $! > $R/n$i/corosync.pid; echo $! >> $R/all.pids; disown $!; }
start_pacemaker() { local i=$1
  nsenter $(nsargs $i) -- env PATH=/usr/sbin:/usr/bin:/sbin:/bin setsid /usr/sbin/pacemakerd \
    </dev/null >>$R/n$i/pacemakerd.out 2>&1 &
  echo $! > $R/n$i/pacemakerd.pid; echo $! >> $R/all.pids; disown $!; }
cs_ok() { local x n; n=$(echo $NODES | wc -w); x=$(inn $1 corosync-quorumtool -s 2>/dev/null) || return 1
  grep -q 'Quorate: *Yes' <<<"$x" && grep -qE "^Nodes: +$n\$" <<<"$x"; }
pcmk_ok() { local i=$1 x n; n=$(echo $NODES | wc -w); x=$(inn $i crm_mon -1 --output-as=xml 2>/dev/null) || return 1
  [ "$(grep -cE '<node name="node[12]" .*online="true"' <<<"$x")" = $n ] && inn $i crmadmin -D -q >/dev/null 2>&1; }
offline_seen() { inn $1 crm_mon -1 --output-as=xml 2>/dev/null | grep -qE "<node name=\"$2\" .*online=\"false\""; }
where() { inn $1 crm_resource -r $2 --locate -Q 2>/dev/null | sort | xargs; }   # node list of rsc $2, seen from node $1
failcount() { inn $1 crm_failcount -G -r $2 -N node$1 -Q 2>/dev/null; }
cluster_up() { # start corosync and pacemaker on every node; wait for all online + a DC
  local i
  for i in $NODES; do start_corosync $i; done
  for i in $NODES; do waitfor 30 "corosync quorate, node$i view" cs_ok $i; done
  for i in $NODES; do start_pacemaker $i; done
  for i in $NODES; do waitfor 90 "all nodes online + DC, seen from node$i" pcmk_ok $i; done
}
add_group_resource() { # node rsc-id group [target-role]: the README's primitive, monitor every 2 s
  local i=$1 id=$2 g=$3 role=${4:-Started}
  inn $i cibadmin --create -o resources --xml-text "<primitive id=\"$id\" class=\"ocf\" provider=\"clinit\" type=\"clinit\">
  <instance_attributes id=\"$id-params\">
    <nvpair id=\"$id-group\" name=\"group\" value=\"$g\"/>
    <nvpair id=\"$id-cltab\" name=\"cltab\" value=\"$B/cltab\"/>
  </instance_attributes>
  <meta_attributes id=\"$id-meta\"><nvpair id=\"$id-role\" name=\"target-role\" value=\"$role\"/></meta_attributes>
  <operations>
    <op id=\"$id-start\" name=\"start\" interval=\"0s\" timeout=\"30s\"/>
    <op id=\"$id-stop\" name=\"stop\" interval=\"0s\" timeout=\"30s\"/>
    <op id=\"$id-monitor\" name=\"monitor\" interval=\"2s\" timeout=\"10s\"/>
  </operations>
</primitive>" || fail "cibadmin create $id"; }
