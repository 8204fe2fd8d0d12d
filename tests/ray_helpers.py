"""Helpers for the tests that run on a real local Ray cluster (fixture ``ray_cluster``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def kill_first_task(name: str, killed: list[int], stop: threading.Event) -> None:
    """Kill -9 the first Ray worker seen running ``name`` (its title is ``ray::name``)."""
    while not stop.is_set() and not killed:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(f"ray::{name}".encode()):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
                return
        time.sleep(0.05)


def run_killing_first_task(
    name: str, args: list[str]
) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """Run ``python -m kerasaudit ARGS`` while killing the first Ray worker running ``name``;
    (the finished process, the pids killed)."""
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_first_task, args=(name, killed, stop))
    killer.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "kerasaudit", *args], capture_output=True, text=True, timeout=600
        )
    finally:
        stop.set()
        killer.join()
    return result, killed
