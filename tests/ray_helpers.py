"""Helpers for the tests that run on a real local Ray cluster (fixture ``ray_cluster``)."""

from __future__ import annotations

import os
import signal
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
