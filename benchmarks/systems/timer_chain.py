"""The naive baseline: per job, a daemon ``threading.Timer(interval)`` re-armed after each
run (so each period is interval + run time + thread start-up: it drifts)."""

from __future__ import annotations

import threading
import time
from typing import Dict, List, Optional

from .base import JobFunc, System


class _Chain:
    def __init__(self, seconds: float, func: JobFunc) -> None:
        self.seconds = seconds
        self.func = func
        self.stopped = False
        self.due = 0.0
        self.lock = threading.Lock()
        self.timer: Optional[threading.Timer] = None

    def arm(self) -> None:
        with self.lock:
            if self.stopped:
                return
            self.due = time.monotonic() + self.seconds
            self.timer = threading.Timer(self.seconds, self.fire)
            self.timer.daemon = True
            self.timer.start()

    def fire(self) -> None:
        if self.stopped:
            return
        try:
            self.func()
        finally:
            self.arm()

    def cancel(self) -> None:
        with self.lock:
            self.stopped = True
            if self.timer is not None:
                self.timer.cancel()


class TimerChainSystem(System):
    name = "timer-chain"
    overlap_protection = True  # by construction: re-armed only after the run
    reports_skips = False
    grid = "re-anchored after every run: time the Timer was armed + interval (drifts)"

    def __init__(self) -> None:
        self._chains: Dict[str, _Chain] = {}
        self._order: List[_Chain] = []

    def add_interval_job(self, job_id: str, seconds: float, func: JobFunc) -> None:
        chain = _Chain(seconds, func)
        self._chains[job_id] = chain
        self._order.append(chain)
        chain.arm()

    def stop(self) -> None:
        for chain in self._order:
            chain.cancel()

    def own_due(self, job_id: str) -> Optional[float]:
        return self._chains[job_id].due
