"""Fault rules: scripted misbehaviour, scoped to the view that added them."""

from __future__ import annotations

import threading


class Faults:
    """The rules in force on one server. Filled in by the fault API."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
