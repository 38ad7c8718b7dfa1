"""Object storage as the storage root: the trimmed demo on an S3 API server vs on a local folder.

    python -m benchmarks.storage [--quick]

Equivalent work: the trimmed demo recipe of lm_platform_tests/test_reproducible_runs.py (every asset but
the evaluations, in one process: the in-process executor on an ephemeral instance) materialized into a
local folder (the peer: the platform as it was) and into `s3://bucket/prefix` on moto's S3 server on
127.0.0.1 (ours), rounds interleaved, each round into fresh storage. The object-store run works on a local
cache bounded by `--cache-bound` (default: half of what the local run leaves on disk, so outputs must be
evicted; a bound must hold the largest step's working set, which the cache never evicts: here a trainer
step, which keeps its dataset, tokenizer and one step checkpoint while it writes the next, or the
model-versions step, which reads the two stage exports) with no grace period; a thread samples the cache's
size every 0.2 s for its peak (in-flight writes included) and prints what the cache held then. Agreement: the
tokenizer, token shards, deduplicated shards, blends, packed datasets and stage exports read back from the
store must be byte-identical to the local folder's (`identical=true`).

Reported: median wall seconds of each (ratio = object store over local folder, lower is better), the
peak local cache size against its bound, the requests the server served.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tree_bytes(root: Path) -> int:
    """Bytes on disk under `root`, each hard-linked file once (the cache's own markers left out)."""
    total, seen = 0, set()
    for dirpath, dirnames, names in os.walk(root):
        if ".lm-cache" in dirnames:
            dirnames.remove(".lm-cache")
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


def _by_output(root: Path) -> dict[str, int]:
    """Bytes under `root` per output folder (`<recipe>/<kind>/<name>`), for what the cache held at its peak."""
    out: dict[str, int] = {}
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, names in os.walk(root):
        if ".lm-cache" in dirnames:
            dirnames.remove(".lm-cache")
        rel = Path(dirpath).relative_to(root).parts
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    key = "/".join((*rel, name)[:4])
                    out[key] = out.get(key, 0) + st.st_size
    return out


class Sampler(threading.Thread):
    """The largest size of a folder seen while it runs, and what it held then."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root, self.peak, self.held, self.done = root, 0, {}, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if self.root.exists():
                held = _by_output(self.root)
                if sum(held.values()) > self.peak:
                    self.peak, self.held = sum(held.values()), held
            self.done.wait(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one round each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-bound", type=int, default=0, help="bytes (0: half the local run's size)")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    sys.path.insert(0, str(REPO))
    from moto.server import ThreadedMotoServer

    from lm_platform.storage import LocalCache
    from lm_platform.storage.fsspec_store import FsspecStore, S3Options
    from lm_platform_tests.conftest import isolated_env, write_demo_variant
    from lm_platform_tests.s3_fixtures import S3_TEST_ENV, S3Server, free_port
    from lm_platform_tests.test_reproducible_runs import _materialize, _variant
    from lm_platform_tests.test_storage_demo import _artifacts

    os.environ.update(S3_TEST_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3Server(f"http://{host}:{port}")
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    recipe = write_demo_variant(work, _variant("extend", "trimmed"), "trimmed.yaml")
    base_env = {
        "LM_PLATFORM_RECIPE": str(recipe),
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    times: dict[str, list[float]] = {"local": [], "s3": []}
    peaks, identical, bound = [], True, args.cache_bound
    print(f"{'round':>5} {'root':>6} {'seconds':>8} {'peak cache MB':>14} {'bound MB':>9}")
    for r in range(rounds):
        # The peer: a local folder.
        storage = work / f"local{r}" / "data"
        env = {**isolated_env(work / f"local{r}" / "home", storage), **base_env}
        t = time.perf_counter()
        _materialize(env)
        times["local"].append(time.perf_counter() - t)
        local_size = _tree_bytes(storage)
        expected = _artifacts(storage / "demo")
        if not bound:
            bound = local_size // 2
        print(f"{r:>5} {'local':>6} {times['local'][-1]:>8.1f} {local_size / 1e6:>14.2f} {'-':>9}")
        # Ours: s3:// on the local server, a bounded cache.
        bucket = s3.new_bucket()
        url = f"s3://{bucket}/lm"
        cache_dir = work / f"s3{r}" / "cache"
        env = {
            **isolated_env(work / f"s3{r}" / "home", work / f"s3{r}" / "unused"),
            **base_env,
            **s3.env(url),
        }
        env.update(
            LM_PLATFORM_CACHE=str(cache_dir),
            LM_PLATFORM_CACHE_MAX_BYTES=str(bound),
            LM_PLATFORM_CACHE_GRACE_S="0",
        )
        sampler = Sampler(cache_dir)
        sampler.start()
        t = time.perf_counter()
        _materialize(env)
        times["s3"].append(time.perf_counter() - t)
        sampler.done.set()
        sampler.join()
        peaks.append(sampler.peak)
        top = sorted(sampler.held.items(), key=lambda kv: -kv[1])[:8]
        print("      at the peak: " + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in top))
        print(f"{r:>5} {'s3':>6} {times['s3'][-1]:>8.1f} {sampler.peak / 1e6:>14.2f} {bound / 1e6:>9.2f}")
        store = FsspecStore(url, S3Options(endpoint_url=s3.endpoint_url, addressing_style="path"))
        back = LocalCache(store, work / f"s3{r}" / "readback")
        back.fill(back.root / "demo")
        identical &= _artifacts(back.root / "demo") == expected
    server.stop()
    ours, peer = statistics.median(times["s3"]), statistics.median(times["local"])
    print(
        f"RESULT name=storage ours={ours:.2f} peer={peer:.2f} ratio={ours / peer:.3f} unit=s "
        f"higher_is_better=false identical={str(identical).lower()} peak_cache_mb={max(peaks) / 1e6:.2f} "
        f"cache_bound_mb={bound / 1e6:.2f} under_bound={str(max(peaks) <= bound).lower()} local_root_mb={local_size / 1e6:.2f} rounds={rounds}"
    )
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
