"""One-line progress reports of stages, steps and shards, printed whatever the progress-bar setting.

A multi-day pod run logs to files where tqdm bars are off; these lines (UTC time, what, how many, elapsed, ETA) are
what tells how far it is. Only process 0 prints.
"""

from __future__ import annotations

import os
import sys
import time


def duration(seconds: float) -> str:
    """Seconds as "12.3 s", "4m05s" or "2h03m"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def label(directory: str) -> str:
    """A stage or step directory as shown in progress lines: its last two path components (``iter_1/mine``)."""
    parts = os.path.normpath(directory).split(os.sep)
    return "/".join(parts[-2:])


def line(message: str) -> None:
    """Print ``[HH:MM:SS] message`` to stderr (process 0 only)."""
    import jax

    if jax.process_index() != 0:
        return
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {message}", file=sys.stderr, flush=True)


class ShardClock:
    """Elapsed time and ETA over ``total`` shards, of which ``skipped`` were already on disk.

    The ETA is the mean time of the shards run in this process so far times the shards left (none known before the
    first one finishes).
    """

    def __init__(self, total: int, skipped: int = 0):
        self.total, self.skipped, self.run = total, skipped, 0
        self.start = time.time()

    def done(self) -> str:
        """Count one finished shard; returns "elapsed E, ETA T"."""
        self.run += 1
        elapsed = time.time() - self.start
        left = self.total - self.skipped - self.run
        return f"elapsed {duration(elapsed)}, ETA {duration(elapsed / self.run * left)}"
