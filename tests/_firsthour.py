"""
What the first-hour tests serve: a root returning a typed copy, and the
registry a client needs to receive it (C{--registry
tests._firsthour.registry} on both sides).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.spread import pb

from pbext.copyable import CopyableRegistry

registry = CopyableRegistry()


@registry.register(name="tests.firsthour.Job")
@dataclass
class Job:
    name: str
    priority: int = 0


class JobRoot(pb.Root):
    """
    A root handing out typed copies.
    """

    def remote_job(self, name: str) -> Job:
        return Job(name, 3)
