"""Writes N items slowly through ArtifactWriter, printing each key once it is persisted.
Used by the kill -9 tests: python slow_writer.py OUT N DELAY"""
import sys
import time

import numpy as np

from zodicli.store import ArtifactWriter


def item(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {"images": [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)],
            "latents": [rng.standard_normal((4, 2, 3)).astype(np.float16)],
            "features/up1": [rng.standard_normal(7).astype(np.float16)]}


def main():
    out, n, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    keys = [f"item{i:03d}" for i in range(n)]
    with ArtifactWriter(out, "test", {"seed": 3}, {"src": "synthetic"}, keys) as w:
        for k in w.todo:
            w.write([k], item(int(k[4:])))
            print(k, flush=True)
            time.sleep(delay)


if __name__ == "__main__":
    main()
