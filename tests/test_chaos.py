"""A seeded chaos run against one real daemon (issue 7).

Several threads drive one `clinit -d` at once for CLINIT_CHAOS_SECONDS
(default 30): tells through the CLI, the Python client and raw JSON
(levels no entry names and `0` included, unknown groups too), atomic
cltab rewrites (entries added, removed and changed, a group deleted and
brought back, an invalid table that a later rewrite fixes), re-reads and
SIGHUP, SIGKILL / SIGTERM / SIGINT / SIGSTOP+SIGCONT of children and
grandchildren, and garbage on the socket.  Entries of every mode run
commands that leave grandchildren, ignore SIGINT, exit at once with 0 or
not, or run for ever.

Then the last table is written with every command changed (so every
process of the final levels is a fresh start: nothing the chaos killed
or stopped lingers in a kept member), every group is told its final
level, and the invariants of the issue are checked:

1. the daemon answered throughout (a pinger thread, and every request);
2. no zombies;
3. each group runs exactly its final level's entries, with the expected
   number of processes each (grandchildren included), and nothing else
   runs under the daemon (it is a child subreaper: /proc tells all);
4. the status file, `clinit -v` and the expected levels and states agree;
5. `clinit -k` exits 0 and the daemon exits 0 leaving nothing behind;
6. the daemon's log has no actor fault.

The seed is printed (CLINIT_CHAOS_SEED sets it); CLINIT_CHAOS_KEEP_LOG=FILE
keeps a copy of the daemon's log.  The daemon's RSS is
sampled every CLINIT_CHAOS_RSS_EVERY seconds (default 5) and printed
with a verdict on whether it levels off; run with `-s` to see it, e.g.
`CLINIT_CHAOS_SECONDS=600 python3 -m pytest -s tests/test_chaos.py`.

The random pacing between actions is load, not synchronisation: every
check after the chaos polls its condition with a deadline.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time

import pytest

from clinit.clstat import read
from clinit.control import Client, NoDaemon
from clinit.pgroups import proc_table
from conftest import cmdline, processes_with_token, raw_request, wait_for

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("CLINIT_CHAOS_SEED") or random.SystemRandom().randrange(1 << 31))
SECONDS = float(os.environ.get("CLINIT_CHAOS_SECONDS") or 30)
RSS_EVERY = float(os.environ.get("CLINIT_CHAOS_RSS_EVERY") or 5)
WORKERS = 4

SETTINGS = {"term_delay": 0.3, "kill_delay": 0.3, "respawn_limit": 3, "respawn_window": 1,
            "respawn_pause": 0.5, "heartbeat": 2}

GROUPS = ("g0", "g1", "g2", "g3", "g4")
LEVELS = ("1", "2", "3", "ab", "0")  # levels entries may name
TOLD = LEVELS + ("zz", "9", "a")  # levels tells use: some no entry names

FAULT = re.compile(r"failed in state|died in state|Traceback|ActorDeadError|actor failed"
                   r"|internal error|did not finish in time|actor is dead")

# command kinds: (shell command, processes it leaves running for ever, finite?)
KINDS = {
    "sleep": ("exec sleep 1000", 1, False),
    "noint": ('trap "" INT; exec sleep 1000', 1, False),
    "grand": ("sleep 1000 & exec sleep 1000", 2, False),
    "grandnoint": ('(trap "" INT; exec sleep 1000) & exec sleep 1000', 2, False),
    "leave": ("sleep 1000 & exit 0", 1, True),  # the leader exits, a grandchild stays
    "true": ("true", 0, True),
    "fail": ("exit 3", 0, True),
    "short": ("sleep 0.2", 0, True),
}
FINITE = [k for k, (_, _, finite) in KINDS.items() if finite]
# how often each kind is picked (failing tests rarer, so that final levels often run something)
FINITE_WEIGHTS = {"leave": 2, "true": 3, "fail": 1, "short": 2}
ANY_WEIGHTS = {"sleep": 3, "noint": 3, "grand": 3, "grandnoint": 3, "leave": 1, "true": 1,
               "fail": 1, "short": 1}


def pick_kind(rng: random.Random, mode: str) -> str:
    weights = FINITE_WEIGHTS if mode in ("wait", "test") else ANY_WEIGHTS
    return rng.choices(list(weights), list(weights.values()))[0]
MODES = ("wait", "once", "respawn", "test", "off")


def in_level(field: str, level: str) -> bool:
    """SPEC §2's level rule, written again here as the oracle."""
    if field == level:
        return True
    if "," in field:
        return level in [name for name in field.split(",") if name]
    return len(level) == 1 and level in field


class Table:
    """The test's model of cltab: entries, groups deleted, validity."""

    def __init__(self, rng: random.Random):
        self.entries: list[list[str]] = []  # [group, tag, levels, mode, kind]
        self.deleted: set[str] = set()
        self.invalid = False
        self.next_tag = 0
        self.final = {g: rng.choice(("1", "2", "3", "ab", "zz")) for g in GROUPS}
        for i in range(40):
            self.entries.append(self.new_entry(rng, GROUPS[i % len(GROUPS)]))

    def new_entry(self, rng: random.Random, group: str) -> list[str]:
        self.next_tag += 1
        mode = rng.choice(MODES)
        kind = pick_kind(rng, mode)
        return [group, f"t{self.next_tag}", self.levels_field(rng), mode, kind]

    @staticmethod
    def levels_field(rng: random.Random) -> str:
        names = rng.sample(LEVELS, rng.randint(1, 3))
        if "ab" in names or rng.random() < 0.3:
            return ",".join(names) + rng.choice(("", ","))
        return "".join(names)

    def mutate(self, rng: random.Random) -> str:
        what = rng.choice(("add", "remove", "change", "change", "delete_group", "restore",
                           "invalid"))
        if what == "add":
            self.entries.append(self.new_entry(rng, rng.choice(GROUPS)))
        elif what == "remove" and len(self.entries) > 30:
            index = rng.randrange(len(self.entries))
            if sum(e[0] == self.entries[index][0] for e in self.entries) > 3:
                self.entries.pop(index)  # no group is ever left empty
        elif what == "change":
            entry = rng.choice(self.entries)
            field = rng.choice(("levels", "mode", "kind"))
            if field == "levels":
                entry[2] = self.levels_field(rng)
            else:
                mode = rng.choice(MODES) if field == "mode" else entry[3]
                kind = pick_kind(rng, mode) if field == "kind" else entry[4]
                if mode in ("wait", "test") and kind not in FINITE:
                    kind = pick_kind(rng, mode)
                entry[3], entry[4] = mode, kind
        elif what == "delete_group" and not self.deleted:
            self.deleted.add(rng.choice(GROUPS))
        elif what == "restore":
            self.deleted.clear()
        elif what == "invalid":
            self.invalid = True
            return what
        self.invalid = False
        return what

    def text(self, final: bool = False) -> str:
        lines = []
        for group, tag, levels, mode, kind in self.entries:
            if group in self.deleted and not final:
                continue
            command = KINDS[kind][0]
            if final:
                command += " # final"  # changed: a fresh start for every kept entry
                if in_level(levels, self.final[group]) and mode == "respawn" and KINDS[kind][2]:
                    mode = "off"  # a throttled respawn has no well-defined process count
            lines.append(f"{group}:{tag}:{levels}:{mode}:{command}")
        if self.invalid and not final:
            lines.append("g0:t1:1:bogus:true")  # duplicate tag and unknown mode
            lines.append("only:three:fields")
        return "\n".join(lines) + "\n"

    def final_entries(self, group: str) -> list[list[str]]:
        """The entries of `group` at its final level, as the final table has them."""
        out = []
        for entry in self.entries:
            if entry[0] == group and in_level(entry[2], self.final[group]):
                mode = entry[3]
                if mode == "respawn" and KINDS[entry[4]][2]:
                    mode = "off"
                out.append([entry[0], entry[1], entry[2], mode, entry[4]])
        return out

    def expected(self) -> tuple[dict, dict]:
        """({group: state}, {tag: processes}) once every group settled at its final level."""
        states, counts = {}, {}
        for group in GROUPS:
            entries = self.final_entries(group)
            tests = [e for e in entries if e[3] == "test"]
            if any(e[4] == "fail" for e in tests):
                states[group] = "FAILED"
            elif entries and len(tests) == len(entries):
                states[group] = "PASSED"
            else:
                states[group] = "DONE"
            for _, tag, _, mode, kind in entries:
                if mode != "off" and KINDS[kind][1]:
                    counts[tag] = KINDS[kind][1]
        return states, counts


# -- /proc -------------------------------------------------------------------------------

def descendants(root: int) -> dict[int, bytes]:
    """pid -> state of every descendant of root (zombies included)."""
    table = proc_table()
    out = {}
    for pid in table:
        p, seen = pid, 0
        while p in table and p != root and p > 1 and seen < 64:
            p, seen = table[p][1], seen + 1
        if p == root and pid != root:
            out[pid] = table[pid][0]
    return out


def env_tag(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"CLINIT_TAG="):
            return item[len(b"CLINIT_TAG="):].decode()
    return "?"


def census(root: int) -> tuple[dict[str, int], list[int]]:
    """({tag: live processes}, zombies) under the daemon."""
    counts: dict[str, int] = {}
    zombies = []
    for pid, state in descendants(root).items():
        if state == b"Z":
            zombies.append(pid)
            continue
        tag = env_tag(pid)
        if tag is not None:
            counts[tag] = counts.get(tag, 0) + 1
    return counts, zombies


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def signal_pid(pid: int, sig: int, root: int) -> bool:
    """Signal pid only if it is (still) a descendant of root: race-free with a pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if pid not in descendants(root):  # checked after the pidfd pins the process
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def levels_off(series: list[int]) -> str:
    """A verdict on an RSS series: growth over its second half."""
    if len(series) < 6:
        return "too short to tell"
    half = series[len(series) // 2:]
    quarter = max(1, len(half) // 2)
    early, late = sum(half[:quarter]) / quarter, sum(half[-quarter:]) / quarter
    growth = late - early
    verdict = "levels off" if growth <= 256 else "still grows"
    return f"{verdict} (second half: {early:.0f} -> {late:.0f} KiB, {growth:+.0f} KiB)"


# -- the run --------------------------------------------------------------------------------

class Chaos:
    def __init__(self, d, seed: int):
        self.d = d
        self.rng = random.Random(seed)
        self.table = Table(self.rng)
        self.lock = threading.Lock()  # the table and the cltab file
        self.stop = threading.Event()
        self.stopped: dict[int, float] = {}  # SIGSTOPped pid -> when to continue it
        self.counts: dict[str, int] = {}
        self.problems: list[str] = []
        self.pings = 0
        self.slowest_ping = 0.0
        self.rss: list[int] = []
        self.began = time.monotonic()

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(f"{time.monotonic() - self.began:.1f} s: {text}")

    def write(self, final=False) -> None:
        self.d.write(self.table.text(final))

    # -- threads -------------------------------------------------------

    def pinger(self) -> None:
        client = Client(cltab=str(self.d.cltab), timeout=30)
        while not self.stop.wait(0.2):
            began = time.monotonic()
            try:
                ok, text = client.request("ping")
                if not ok:
                    self.problem(f"ping answered {text!r}")
            except (NoDaemon, OSError) as err:
                self.problem(f"ping: {err}")
            self.slowest_ping = max(self.slowest_ping, time.monotonic() - began)
            self.pings += 1

    def continuer(self) -> None:
        # SIGCONT comes from a thread that never waits on the daemon: a child
        # SIGSTOPped between its clone and its exec holds up the spawning
        # thread, and os.posix_spawn keeps the GIL meanwhile, so the whole
        # daemon waits for this SIGCONT (seen with seed 2: a 30 s stall when
        # the workers, all waiting on answers, were the ones to send it)
        while not self.stop.wait(0.05):
            self.continue_due()

    def sampler(self) -> None:
        while True:
            value = rss_kib(self.d.proc.pid)
            if value is not None:
                self.rss.append(value)
            if self.stop.wait(RSS_EVERY):
                return

    def worker(self, index: int, seed: int) -> None:
        rng = random.Random(seed)
        actions = [(self.tell_client, 6), (self.tell_cli, 2), (self.tell_raw, 3),
                   (self.rewrite, 3), (self.reread, 1), (self.sighup, 1), (self.signal_child, 5),
                   (self.garbage, 2)]
        funcs, weights = zip(*actions)
        while not self.stop.is_set():
            action = rng.choices(funcs, weights)[0]
            try:
                action(rng)
            except Exception as err:  # noqa: BLE001 - any surprise is a problem to report
                self.problem(f"worker {index}: {action.__name__}: {type(err).__name__}: {err}")
            self.stop.wait(rng.random() * 0.15)  # pacing: load, not synchronisation

    # -- actions ----------------------------------------------------------

    def told_target(self, rng: random.Random) -> tuple[str, str]:
        group = rng.choice(GROUPS) if rng.random() < 0.95 else "nosuchgroup"
        return group, rng.choice(TOLD)

    def check_answer(self, how: str, ok: bool, text: str) -> None:
        if "internal error" in text or "shutting down" in text:
            self.problem(f"{how}: {text}")
        elif ok and not text.startswith("level transition started"):
            self.problem(f"{how}: unexpected answer {text!r}")

    def tell_client(self, rng):
        group, level = self.told_target(rng)
        ok, text = Client(cltab=str(self.d.cltab), timeout=30).request("tell", group=group,
                                                                        level=level)
        self.check_answer("tell", ok, text)
        self.count("tell (client)")

    def tell_cli(self, rng):
        group, level = self.told_target(rng)
        result = self.d.cli(*(["-v"] if rng.random() < 0.5 else []), group, level)
        if result.returncode not in (0, 1):
            self.problem(f"clinit {group} {level}: exit {result.returncode}: {result.stderr}")
        said = (result.stdout + result.stderr).strip().splitlines()
        self.check_answer("clinit", result.returncode == 0, said[0] if said else "")
        self.count("tell (CLI)")

    def tell_raw(self, rng):
        group, level = self.told_target(rng)
        line = json.dumps({"cmd": "tell", "group": group, "level": level}).encode() + b"\n"
        answer = raw_request(self.d.socket, line, timeout=30)
        reply = json.loads(answer)
        self.check_answer("raw tell", reply["ok"], reply["answer"])
        self.count("tell (raw JSON)")

    def rewrite(self, rng):
        with self.lock:
            what = self.table.mutate(rng)
            self.d.write(self.table.text())
            self.counts[f"cltab {what}"] = self.counts.get(f"cltab {what}", 0) + 1

    def reread(self, rng):
        ok, text = Client(cltab=str(self.d.cltab), timeout=30).request("reread")
        if "internal error" in text:
            self.problem(f"reread: {text}")
        self.count("reread")

    def sighup(self, rng):
        self.d.proc.send_signal(signal.SIGHUP)
        self.count("SIGHUP")

    def signal_child(self, rng):
        pids = [pid for pid, state in descendants(self.d.proc.pid).items() if state != b"Z"]
        if not pids:
            return
        pid = rng.choice(pids)
        sig = rng.choice((signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGINT,
                          signal.SIGSTOP))
        if sig == signal.SIGSTOP:
            with self.lock:
                if pid in self.stopped:
                    return
                self.stopped[pid] = time.monotonic() + rng.random() * 1.5
        if signal_pid(pid, sig, self.d.proc.pid):
            self.count(f"child {sig.name}")

    def continue_due(self, everything=False):
        with self.lock:
            due = [pid for pid, when in self.stopped.items()
                   if everything or when <= time.monotonic()]
            for pid in due:
                del self.stopped[pid]
        for pid in due:
            signal_pid(pid, signal.SIGCONT, self.d.proc.pid)

    def garbage(self, rng):
        choices = (
            lambda: rng.randbytes(rng.randint(1, 300)),
            lambda: rng.randbytes(rng.randint(1, 100)) + b"\n",
            lambda: b'{"cmd":"tell","group":"g0"}\n',
            lambda: b'{"cmd":"tell","group":"g0","level":"a;b"}\n',
            lambda: b'{"cmd":"' + rng.choice((b"halt", b"", b"\xff", b"tell\x00")) + b'"}\n',
            lambda: b"[" * rng.randint(1, 5000) + b"\n",
            lambda: b'{"cmd":"tell","group":"g1","level":' + str(rng.random()).encode() + b"}\n",
        )
        data = rng.choice(choices)()
        answer = raw_request(self.d.socket, data, timeout=30)
        try:
            reply = json.loads(answer)
        except ValueError:
            self.problem(f"garbage {data[:40]!r}: answer {answer[:80]!r}")
            return
        if reply.get("ok") is not False or "internal error" in reply.get("answer", ""):
            self.problem(f"garbage {data[:40]!r}: answer {reply!r}")
        self.count("garbage")


def test_chaos(make_daemon, no_leftover_processes):
    print(f"\nchaos: seed {SEED} (CLINIT_CHAOS_SEED), {SECONDS:g} s (CLINIT_CHAOS_SECONDS)")
    d = make_daemon("", start=False, **SETTINGS)
    try:
        chaos_run(d, no_leftover_processes)
    finally:
        if os.environ.get("CLINIT_CHAOS_KEEP_LOG"):  # a copy of the daemon's log, for long runs
            with open(os.environ["CLINIT_CHAOS_KEEP_LOG"], "w") as f:
                f.write(d.log_text())


def chaos_run(d, token: str) -> None:
    rng = random.Random(SEED)
    chaos = Chaos(d, rng.randrange(1 << 31))
    chaos.write()
    d.start()
    for group in GROUPS:  # every group starts somewhere
        d.tell(group, rng.choice(LEVELS))

    threads = [threading.Thread(target=f) for f in (chaos.pinger, chaos.sampler, chaos.continuer)]
    threads += [threading.Thread(target=chaos.worker, args=(i, rng.randrange(1 << 31)))
                for i in range(WORKERS)]
    began = chaos.began = time.monotonic()
    for t in threads:
        t.start()
    try:
        chaos.stop.wait(SECONDS)
    finally:
        chaos.stop.set()
        for t in threads:
            t.join()
    chaos.continue_due(everything=True)
    print(f"chaos: {time.monotonic() - began:.1f} s of chaos; actions: "
          + ", ".join(f"{k} {v}" for k, v in sorted(chaos.counts.items())))
    print(f"chaos: RSS KiB every {RSS_EVERY:g} s: {' '.join(map(str, chaos.rss))}")
    print(f"chaos: RSS {levels_off(chaos.rss)}")
    print(f"chaos: {len(re.findall('failed in state', d.log_text()))} actor faults "
          "('failed in state') in the log during the chaos")

    # the final levels
    table = chaos.table
    table.deleted.clear()
    table.invalid = False
    d.write(table.text(final=True))
    for group in GROUPS:
        result = d.cli(group, table.final[group])
        assert result.returncode == 0, (group, result.stdout, result.stderr)
        assert result.stdout.startswith("level transition started")
    states, counts = table.expected()
    want_status = {(g, table.final[g], states[g]) for g in GROUPS}
    print("chaos: final levels " + ", ".join(f"{g} {table.final[g]} {states[g]}" for g in GROUPS)
          + f"; {sum(counts.values())} processes expected")

    def settled():
        got, zombies = census(d.proc.pid)
        return set(read(str(d.clstat))) == want_status and got == counts and not zombies

    try:
        wait_for(settled, timeout=60, interval=0.05)
    except AssertionError:
        got, zombies = census(d.proc.pid)
        table_now = proc_table()
        extra = [(pid, table_now.get(pid), env_tag(pid), cmdline(pid))
                 for pid in descendants(d.proc.pid)
                 if got.get(env_tag(pid), 0) != counts.get(env_tag(pid), 0)]
        pytest.fail(f"never settled (seed {SEED}):\n status {sorted(read(str(d.clstat)))}\n"
                    f" want   {sorted(want_status)}\n processes {sorted(got.items())}\n"
                    f" want      {sorted(counts.items())}\n zombies {zombies}\n"
                    f" processes of the tags that differ (pid, (state, ppid, pgid, sid), tag, "
                    f"command):\n  " + "\n  ".join(map(str, extra)) +
                    f"\n table:\n{table.text(final=True)}")

    # 4. -v agrees with the status file and the expected levels
    verbose = d.cli("-v", check=0).stdout
    lines = {tuple(line.split()) for line in verbose.splitlines() if len(line.split()) == 3}
    assert lines == want_status, verbose

    # 5. -k exits 0, the daemon too, and nothing is left
    rss_end = rss_kib(d.proc.pid)
    began = time.monotonic()
    d.cli("-k", check=0)
    assert d.proc.wait(timeout=60) == 0, d.log_text()[-3000:]
    print(f"chaos: shutdown took {time.monotonic() - began:.2f} s")
    wait_for(lambda: not processes_with_token(token), timeout=10)
    assert not d.socket.exists() and not d.clstat.exists()

    # the figures, then 1. and 6.
    log = d.log_text()
    faults = [line for line in log.splitlines() if FAULT.search(line)]
    print(f"chaos: {chaos.pings} pings, slowest {chaos.slowest_ping:.3f} s; "
          f"{len(faults)} actor-fault lines in the log; problems {len(chaos.problems)}; "
          f"RSS at the end {rss_end} KiB")
    assert not chaos.problems, chaos.problems[:20]
    assert chaos.pings > 0
    assert not faults, "\n".join(faults[:20])
