"""Real services from Debian under a real daemon: nginx (and redis where a test needs it).

They are the counterparts the README's promises are about: a SIGKILLed
nginx master leaves its workers holding the port, and a service that
sets its process title overwrites its environment.  Skipped when the
binaries are missing (`.ci/run` installs them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import textwrap
from pathlib import Path

import pytest

from conftest import alive, children_of, gone, wait_for

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
STOP_DELAYS = {"term_delay": 0.5, "kill_delay": 0.5}  # for nginx: longer than conftest.FAST

needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int) -> bytes | None:
    """The body nginx answers on 127.0.0.1:port, or None if nobody does."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else None
    except OSError:
        return None


def nginx_conf(folder, port: int) -> str:
    conf = folder / "nginx.conf"
    temp = folder / "nginx-tmp"
    temp.mkdir()
    conf.write_text(textwrap.dedent(f"""
        daemon off;
        master_process on;
        worker_processes 2;
        pid {folder}/nginx.pid;
        error_log {folder}/nginx-error.log;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {temp}/body;
            proxy_temp_path {temp}/proxy;
            fastcgi_temp_path {temp}/fastcgi;
            uwsgi_temp_path {temp}/uwsgi;
            scgi_temp_path {temp}/scgi;
            server {{
                listen 127.0.0.1:{port};
                location / {{ return 200 "pid $pid\\n"; }}
            }}
        }}
    """))
    return f"exec {NGINX} -p {folder} -c {conf} -e {folder}/nginx-error.log"


@needs_nginx
def test_a_sigkilled_nginx_master_comes_back_once_its_workers_released_the_port(make_daemon, tmp_path):
    port = free_port()
    d = make_daemon("web:nginx:run:respawn:" + nginx_conf(tmp_path, port) + "\n", **STOP_DELAYS)
    d.tell("web", "run")
    d.wait_state("web", "run", "DONE")
    first = wait_for(lambda: http_get(port), timeout=20)
    master, = d.children()
    workers = wait_for(lambda: children_of(master))
    os.kill(master, signal.SIGKILL)
    # the workers were stopped first, then a new master bound the port
    wait_for(lambda: all(gone(pid) for pid in workers), timeout=20)
    second = wait_for(lambda: (body := http_get(port)) and body != first and body, timeout=20)
    assert second.startswith(b"pid ")
    new_master, = wait_for(lambda: d.children())
    assert new_master != master and alive(new_master)
    log = d.logged("web/nginx: the last instance left processes in its group")
    assert "keeps failing" not in log and "respawning too rapidly" not in log
    d.tell("web", "stop")
    d.wait_state("web", "stop", "DONE")
    wait_for(lambda: http_get(port) is None)


REDIS = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@needs_redis
def test_a_restarted_daemon_adopts_a_real_redis_that_rewrote_its_title(make_daemon, tmp_path):
    # redis sets its process title over its argv and environment, so the
    # CLINIT_SOCKET a survivor carries is gone: only the journal names it
    port = free_port()
    d = make_daemon(f"cache:redis:1:respawn:exec {REDIS} --port {port} --bind 127.0.0.1 "
                    f"--save '' --appendonly no --dir {tmp_path}\n", **STOP_DELAYS)
    d.tell("cache", "1")
    d.wait_state("cache", "1", "DONE")
    wait_for(lambda: redis_ping(port), timeout=20)
    pid, = d.children()
    # its title is written over its environment: CLINIT_SOCKET no longer shows
    wait_for(lambda: b"CLINIT_SOCKET" not in Path(f"/proc/{pid}/environ").read_bytes())
    d.journaled([pid])
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=10)
    d._log.close()
    d.start()
    # the same redis, still serving, adopted: the group is as it was, before any tell
    d.wait_state("cache", "1", "DONE")
    assert redis_ping(port) and not gone(pid)
    restart_log = d.logged("still run").split("ended without a shutdown")[-1]
    assert "1 of its 1 running processes still run" in restart_log and str(pid) in restart_log
    # a re-tell starts no second redis (the adopted one is not the new daemon's child)
    d.cli("cache", "1", "--wait", check=0)
    assert d.children() == []
    assert redis_ping(port) and not gone(pid)
    # a stop reaches it with the ladder
    d.cli("cache", "0", "--wait", check=0)
    wait_for(lambda: gone(pid) and not redis_ping(port))
