"""Progress on stderr: a tqdm bar on a terminal; in a batch log (stderr not a terminal: Slurm,
nohup, CI) a plain line every ``$ZODI_PROGRESS_SECONDS`` (default 60) and one at the end, with items
done of total, rate and time left, so a job's log shows where it is before it ends."""
from __future__ import annotations

import os
import sys
import time


class LogLines:
    def __init__(self, total: int, desc: str, unit: str, initial: int, every: float):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n = self.start_n = initial
        self.t0 = self.last = time.monotonic()

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        rate = (self.n - self.start_n) / max(now - self.t0, 1e-9)
        left = (self.total - self.n) / rate if rate > 0 else float("inf")
        eta = time.strftime("%H:%M:%S", time.gmtime(left)) if left != float("inf") else "?"
        share = f" ({100 * self.n / self.total:.1f} %)" if self.total else ""
        print(f"zodi {self.desc}: {self.n}/{self.total} {self.unit}s{share}, {rate:.3g} {self.unit}/s, {eta} left",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.n > self.start_n and time.monotonic() - self.t0 >= self.every:     # long runs end with a line
            self._line(time.monotonic())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(total: int, desc: str, unit: str = "item", initial: int = 0):
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, leave=False)
    return LogLines(total, desc, unit, initial, float(os.environ.get("ZODI_PROGRESS_SECONDS", "60")))
