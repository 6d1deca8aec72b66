"""What the store's objects answer: named, typed replies (no positional tuples).

They are ``NamedTuple``s: as cheap to pickle between processes as the plain
tuples they replace, and a caller reads ``reply.version`` instead of
``reply[1]``.
"""

from dataclasses import dataclass
from typing import NamedTuple


class Pulled(NamedTuple):
    """A read of some coordinates of a block (or replica).

    ``values`` is ``None`` when the block wrote them straight into the
    caller's array (a caller in the block's process).  ``drift``, ``counts``
    and ``precond`` are the variance-reduced solver's snapshot terms, present
    when asked for.
    """

    values: object
    version: int
    samples: int = 0
    drift: object = None
    counts: object = None
    precond: object = None


class Pushed(NamedTuple):
    """An applied push: the block's version and samples after it, and its staleness
    (versions applied between the pusher's read and this push; for a push of
    several gradient steps, the staleness of its last)."""

    version: int
    samples: int
    staleness: int


class CheckedOut(NamedTuple):
    """A factor block handed to a worker loop: a copy of its rows and its version."""

    rows: object
    version: int


class CheckedIn(NamedTuple):
    """A factor block handed back: its new version and the visit's staleness."""

    version: int
    staleness: int


class Averaged(NamedTuple):
    """A replica's side of a pairwise average: the change it applied (``delta``) and
    the merged progress of every loop as far as it knows (``known``)."""

    delta: object
    known: object


@dataclass
class StoreStats:
    """Counters of one store object since its last :meth:`stats` reset.

    ``pushes``: applied pushes (block updates, check-ins or replica steps);
    ``samples``: samples whose updates were applied (blocks and replicas:
    cumulative over the fit; factor blocks: ratings since the last reset).
    Replicas also count the exchanges they took part in and started (``sent``),
    and carry their loop's loss and kernel time (a barrier-free fit reads its
    history rows from them).
    """

    block: int
    version: int
    samples: int = 0
    pushes: int = 0
    staleness_sum: int = 0
    staleness_max: int = 0
    penalty: float = 0.0
    exchanges: int = 0
    sent: int = 0
    loss_sum: float = 0.0
    kernel_time: float = 0.0
