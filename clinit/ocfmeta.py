"""The OCF 1.1 meta-data of the clinit resource agent (see clinit/ocf.py)."""

from __future__ import annotations

__all__ = ["metadata", "VERSION", "DEFAULT_LEVEL", "DEFAULT_CLTAB", "START_DAEMON_SETTING"]

VERSION = "1.0"
DEFAULT_LEVEL = "run"
DEFAULT_CLTAB = "/etc/cltab"
START_DAEMON_SETTING = "agent_starts_daemon"   # `:::agent_starts_daemon:yes` in cltab


def metadata() -> str:
    return f"""<?xml version="1.0"?>
<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">
<resource-agent name="clinit" version="{VERSION}">
<version>1.1</version>
<longdesc lang="en">
Runs one clinit resource group on this node. clinit is a per-node init for
resource groups: its daemon reads the node's cltab and switches each group to
a level of its own. start tells the group its level and waits until it
settles (DONE or PASSED); stop halts the group and waits until every process
is reaped (clinit escalates SIGINT, SIGTERM, SIGKILL by itself); monitor asks
the daemon, read-only: running when the group is settled at its level, failed
when it is FAILED or one of its respawn entries is throttled.
The clinit daemon normally runs on every node, outside the cluster; with
":::{START_DAEMON_SETTING}:yes" in the cltab, start also starts a daemon when
none answers.
</longdesc>
<shortdesc lang="en">A clinit resource group</shortdesc>
<parameters>
<parameter name="group" unique="1" required="1">
<longdesc lang="en">The clinit group this resource is (a group of the cltab).</longdesc>
<shortdesc lang="en">clinit group</shortdesc>
<content type="string"/>
</parameter>
<parameter name="level" unique="0" required="0">
<longdesc lang="en">The level the group is told on start; the resource runs while the
group is settled at this level.</longdesc>
<shortdesc lang="en">level</shortdesc>
<content type="string" default="{DEFAULT_LEVEL}"/>
</parameter>
<parameter name="cltab" unique="0" required="0">
<longdesc lang="en">The node's cltab; its settings name the daemon's socket.</longdesc>
<shortdesc lang="en">cltab path</shortdesc>
<content type="string" default="{DEFAULT_CLTAB}"/>
</parameter>
<parameter name="socket" unique="0" required="0">
<longdesc lang="en">The daemon's socket, when the cltab sets none (a ":::socket:" setting
in the cltab wins). Default: /run/clinit/clinit.sock.</longdesc>
<shortdesc lang="en">daemon socket</shortdesc>
<content type="string"/>
</parameter>
<parameter name="timeout" unique="0" required="0">
<longdesc lang="en">Seconds start and stop wait for the group to settle. Default: the
operation's timeout less 2 seconds. Never more than that.</longdesc>
<shortdesc lang="en">settle timeout (s)</shortdesc>
<content type="integer"/>
</parameter>
</parameters>
<actions>
<action name="start" timeout="60s"/>
<action name="stop" timeout="60s"/>
<action name="monitor" timeout="20s" interval="10s" depth="0"/>
<action name="validate-all" timeout="20s"/>
<action name="meta-data" timeout="5s"/>
</actions>
</resource-agent>
"""
