"""A first end-to-end pass: a daemon starts, runs a level, stops cleanly."""

from conftest import wait_for


def test_a_group_told_a_level_runs_it_and_the_daemon_shuts_down_cleanly(make_daemon):
    d = make_daemon("""
        web:w1:run:wait:true
        web:w2:run:respawn:exec sleep 1000
    """)
    assert d.tell("web", "run").startswith("level transition started: ")
    d.wait_state("web", "run", "DONE")
    wait_for(lambda: len(d.children()) == 1)
    assert d.client().shutdown() == "all groups halting"
    assert d.proc.wait(timeout=10) == 0
    assert not d.socket.exists() and not d.clstat.exists()
