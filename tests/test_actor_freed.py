"""An ended actor is freed at once, not at the cyclic collector's next full pass
(issue 7: under the chaos run the daemon's RSS kept growing while ended
Process actors, each in a cycle with its state machine, waited for one)."""

from __future__ import annotations

import gc

from clinit import Entry, Group, Process
from conftest import wait_for


def test_an_ended_process_or_group_actor_is_freed_without_the_cyclic_collector(tmp_path):
    cltab = tmp_path / "cltab"
    cltab.write_text("g:t:1:once:true\n")
    gc.collect()
    gc.disable()
    try:
        refs = [Process.start(Entry("g", "t", "1", "once", "true", 1)), Group.start("g", str(cltab))]
        actors = [ref._actor_weakref for ref in refs]  # noqa: SLF001 - what we watch go
        refs[0].proxy().up().get()
        refs[1].proxy().tell("1").get()
        for ref in refs:
            ref.stop()
        wait_for(lambda: all(actor() is None for actor in actors),
                 message="an ended actor is still alive (a reference cycle keeps it)")
    finally:
        gc.enable()
