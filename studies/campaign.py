"""Campaigns: a large computation split into shards, run on local cores or a Dask cluster.

A campaign runs `task(config, shard_seed, shard_index) -> dict` for shard_index = 0 .. n_shards-1
and keeps each shard's result (numpy arrays and scalars: histogram counts, sums of squared
weights, per-toy fit results) in its own Parquet file. Use it whenever a study needs more events
or toys than fit in memory or in one process:

    campaign = Campaign(my_task, {"events_per_shard": 10**7, ...}, seed=1, n_shards=100,
                        output_dir="out")
    summary = campaign.run()             # computes what is missing, skips what is done
    totals = campaign.sum(["counts", "sumw2"])   # arrays added over shards, in shard order
    for shard in campaign.results():     # or one shard dict at a time, read back from disk
        ...

What to use when:

- `n_workers=0`: everything in this process, one shard after the other (debugging, profiling).
- default: a local process pool (`n_workers`, default `os.cpu_count()`), started with the
  'forkserver' method ('spawn' where that is missing).
- `dask_local=N`: a Dask `LocalCluster` of N single-threaded worker processes, closed after the
  run. `scheduler="tcp://HOST:PORT"`: an existing Dask cluster; its workers must be able to
  import the task's module (install the toolkit on them). Dask is an optional extra
  (`pip install muone-toolkit[dask]`) and is imported only by these two options.

Guarantees:

- Reproducible: shard k gets the seed `fastsim.rng.derive_seed(seed, k)`, so its result depends
  on (task, config, seed, k) only, never on the executor, the number of workers or n_shards;
  `sum` adds shards in shard order, so every executor gives bit-identical totals (as long as the
  task itself is deterministic, which the counter-based RNG makes easy).
- Resumable: each shard file is written by the driver as soon as the shard finishes, to a
  temporary name then renamed (`os.replace`), so a file is complete or absent. A rerun with the
  same (task, config, seed) skips the finished shards; a killed campaign resumes where it
  stopped. Only one run at a time may use a given output directory.
- Checked: a shard file carries the campaign hash, seed, shard index and seed, package version
  and a SHA-256 checksum of every array. A file that cannot be read, fails its checksum, or
  belongs to another campaign, version or shard is reported (`ShardWarning` naming the file)
  and recomputed.
- Never mixed: the shards live in `output_dir/campaign-<hash>/`, where <hash> is the content hash
  of (task name, config, seed); another configuration or seed gets another subdirectory, so old
  results are neither reused nor overwritten. `campaign.json` there records the configuration.
- Bounded memory: the driver holds at most about 2 results per worker in flight; `results` and
  `sum` read one shard at a time (and only the requested arrays).
- Errors: an exception in a shard stops new submissions, lets the running shards finish and be
  written, then raises `CampaignError` naming the failing shard indices (the original exception
  is chained). An unreachable Dask scheduler raises `SchedulerUnreachable` (a ConnectionError
  and a ValueError) naming the address within `connect_timeout_s`, before anything is computed.
- numba threads: each shard runs with `numba.set_num_threads(threads_per_worker)` (default: the
  cores divided among the local workers; 1 on an external Dask cluster; untouched when serial).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import pickle
import sys
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

import fastsim
from fastsim.config import check_integer, check_range, content_hash, to_plain
from fastsim.io.files import temporary_beside
from fastsim.rng import STREAM_CAMPAIGN_SELF_TEST, derive_seed, uniform_array, validate_seed

FORMAT_VERSION = 1
_METADATA_KEY = b"muone_campaign"
_ALLOWED_DTYPES = frozenset(np.dtype(t) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
                                                   np.uint16, np.uint32, np.uint64, np.float32, np.float64))


class CampaignError(RuntimeError):
    """One or more shards failed; `failures` maps shard index -> exception, finished shards are kept."""

    def __init__(self, message, failures):
        super().__init__(message)
        self.failures = failures


class SchedulerUnreachable(ConnectionError, ValueError):
    """The Dask scheduler address cannot be reached or does not answer as a Dask scheduler."""


class ShardWarning(UserWarning):
    """A shard file on disk was unusable (corrupt, stale, of another campaign) and is recomputed."""


@dataclass(frozen=True)
class CampaignSummary:
    """What `Campaign.run` did: shards newly computed, recomputed (an unusable file was replaced),
    skipped (a valid file was found), the wall time, the executor and the shard directory."""

    n_shards: int
    computed: int
    recomputed: int
    skipped: int
    wall_time_s: float
    executor: str
    directory: str

    def to_dict(self) -> dict:
        return asdict(self)


class Campaign:
    """A sharded, resumable computation (see the module docstring).

    Parameters
    ----------
    task : callable
        ``task(config, shard_seed, shard_index) -> dict[str, ndarray | float | int]``, a top-level
        function of an importable module (it is pickled by reference to reach worker processes).
        Arrays may be bool, (unsigned) integer or float32/float64 of any shape; Python and numpy
        scalars are stored as 0-d arrays and read back as numpy scalars.
    config : dict
        Plain JSON data (dicts, lists, str, int, float, bool, None), passed to `task` unchanged.
    seed : int
        Campaign seed, 0 <= seed < 2**64; shard k uses ``fastsim.rng.derive_seed(seed, k)``.
    n_shards : int
        Number of shards, >= 1.
    output_dir : path
        Parent directory; the shards go to ``output_dir/campaign-<hash>/shard-NNNNNN.parquet``.
    n_workers : int, optional
        Local process-pool size (default ``os.cpu_count()``); 0 runs the shards in this process.
    threads_per_worker : int, optional
        numba threads per shard (see the module docstring for the defaults).
    scheduler : str, optional
        Address of an existing Dask scheduler, e.g. ``"tcp://10.0.0.1:8786"``.
    dask_local : int, optional
        Start a Dask LocalCluster with this many single-threaded worker processes.
    progress : bool, optional
        Progress bar on stderr: True always, False never, None (default) when stderr is a terminal.
    connect_timeout_s : float
        How long to try to reach `scheduler` (default 5 s).
    """

    def __init__(self, task, config, seed, n_shards, output_dir, *, n_workers=None, threads_per_worker=None,
                 scheduler=None, dask_local=None, progress=None, connect_timeout_s=5.0):
        if not callable(task):
            raise ValueError(f"task = {task!r} must be callable as task(config, shard_seed, shard_index)")
        plain = to_plain(config)
        if not isinstance(plain, dict):
            raise ValueError(f"config = {config!r} must be a dict of plain JSON data")
        try:
            json.dumps(plain, allow_nan=True)
        except (TypeError, ValueError) as error:
            raise ValueError(f"config must be plain JSON data (dict, list, str, int, float, bool, None): "
                             f"{error}") from None
        self.task = task
        self.config = config
        self.seed = validate_seed(seed)
        self.n_shards = check_integer("n_shards", n_shards, 1, 10**9)
        self.output_dir = Path(output_dir)
        if scheduler is not None and dask_local is not None:
            raise ValueError(f"scheduler = {scheduler!r} and dask_local = {dask_local!r}: give at most one of them")
        if n_workers is not None and (scheduler is not None or dask_local is not None):
            raise ValueError(f"n_workers = {n_workers!r} applies to the local process pool, not to a Dask cluster")
        if scheduler is not None and not isinstance(scheduler, str):
            raise ValueError(f"scheduler = {scheduler!r} must be an address string such as 'tcp://HOST:PORT'")
        cores = os.cpu_count() or 1
        self.scheduler = scheduler
        self.dask_local = None if dask_local is None else check_integer("dask_local", dask_local, 1, 10**5)
        self.n_workers = cores if n_workers is None else check_integer("n_workers", n_workers, 0, 10**5)
        if threads_per_worker is not None:
            threads_per_worker = check_integer("threads_per_worker", threads_per_worker, 1, 10**4)
        elif self.dask_local is not None:
            threads_per_worker = max(1, cores // self.dask_local)
        elif scheduler is not None:
            threads_per_worker = 1
        elif self.n_workers > 0:
            threads_per_worker = max(1, cores // self.n_workers)
        self.threads_per_worker = threads_per_worker
        self.progress = progress
        self.connect_timeout_s = check_range("connect_timeout_s", connect_timeout_s, 0.0, 3600.0, low_open=True)
        self.task_name = f"{getattr(task, '__module__', '?')}.{getattr(task, '__qualname__', repr(task))}"
        if self.executor_name != "serial":
            _check_picklable(task, self.task_name)
        self.config_hash = content_hash(plain)
        self.campaign_hash = content_hash({"task": self.task_name, "config": plain, "seed": self.seed})
        self.directory = self.output_dir / f"campaign-{self.campaign_hash}"

    @property
    def executor_name(self) -> str:
        if self.scheduler is not None:
            return f"dask {self.scheduler}"
        if self.dask_local is not None:
            return f"dask local cluster ({self.dask_local} workers)"
        return "serial" if self.n_workers == 0 else f"process pool ({self.n_workers} workers)"

    def shard_seed(self, index) -> int:
        """Seed of shard `index`: ``fastsim.rng.derive_seed(seed, index)``."""
        return derive_seed(self.seed, index)

    def shard_path(self, index) -> Path:
        return self.directory / f"shard-{index:06d}.parquet"

    # ---------------------------------------------------------------- running

    def run(self, shards=None) -> CampaignSummary:
        """Compute the shards that have no valid file (all, or those listed in `shards`).

        Returns
        -------
        CampaignSummary

        Raises
        ------
        CampaignError
            A shard's task raised or returned something that is not a dict of arrays; the
            shards that finished are on disk, so the next run computes only the rest.
        SchedulerUnreachable
            The Dask scheduler did not answer within `connect_timeout_s`.
        """
        start = time.perf_counter()
        if shards is None:
            indices = range(self.n_shards)
        else:
            indices = sorted({check_integer("shard", s, 0, self.n_shards - 1) for s in shards})
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_manifest()
        for stale in self.directory.glob(".*.part"):
            stale.unlink(missing_ok=True)  # left by a killed run
        todo, replaced = [], set()
        for index in indices:
            path = self.shard_path(index)
            if not path.exists():
                todo.append(index)
                continue
            problem = self._shard_problem(path, index)
            if problem is not None:
                warnings.warn(f"campaign shard file {str(path)!r} {problem}; recomputing it", ShardWarning,
                              stacklevel=2)
                todo.append(index)
                replaced.add(index)
        skipped = len(indices) - len(todo)
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        with tqdm(total=len(indices), initial=skipped, desc="shards", unit="shard", file=sys.stderr,
                  disable=not show, dynamic_ncols=True) as bar:
            if todo:
                with self._executor(len(todo)) as executor:
                    self._execute(executor, todo, bar)
        return CampaignSummary(n_shards=len(indices), computed=len(todo) - len(replaced), recomputed=len(replaced),
                               skipped=skipped, wall_time_s=time.perf_counter() - start,
                               executor=self.executor_name, directory=str(self.directory))

    def _execute(self, executor, todo, bar):
        """Keep about two shards per worker in flight; write each result as it arrives."""
        queue = iter(todo)
        pending, failures, written = {}, {}, 0

        def submit_next():
            for index in queue:
                pending[executor.submit(_run_shard, self.task, self.config, self.shard_seed(index), index,
                                        self.threads_per_worker)] = index
                return

        for _ in range(executor.window):
            submit_next()
        while pending:
            for future in executor.wait_first(list(pending)):
                index = pending.pop(future)
                try:
                    arrays = executor.result(future)
                except Exception as error:  # the task's own error, reported with its shard below
                    failures[index] = error
                else:
                    self._write_shard(index, arrays)
                    written += 1
                    bar.update(1)
                if not failures:
                    submit_next()
        if failures:
            first = min(failures)
            error = failures[first]
            raise CampaignError(
                f"campaign {str(self.directory)!r}: shard(s) {sorted(failures)} failed; shard {first}: "
                f"{type(error).__name__}: {error}. The {written} shard(s) finished in this run are kept; "
                f"run again to compute the rest", failures) from error

    def _executor(self, n_todo):
        if self.scheduler is not None:
            return _DaskExecutor(self.scheduler, None, self.connect_timeout_s)
        if self.dask_local is not None:
            return _DaskExecutor(None, self.dask_local, self.connect_timeout_s)
        if self.n_workers == 0:
            return _SerialExecutor()
        return _PoolExecutor(min(self.n_workers, n_todo))

    # ---------------------------------------------------------------- files

    def _metadata(self, index) -> dict:
        return {"format": FORMAT_VERSION, "campaign_hash": self.campaign_hash, "config_hash": self.config_hash,
                "task": self.task_name, "seed": self.seed, "shard_index": index,
                "shard_seed": self.shard_seed(index), "version": fastsim.__version__}

    def _write_manifest(self):
        manifest = {"task": self.task_name, "config": to_plain(self.config), "config_hash": self.config_hash,
                    "seed": self.seed, "campaign_hash": self.campaign_hash, "n_shards": self.n_shards,
                    "version": fastsim.__version__, "shard_seed": "fastsim.rng.derive_seed(seed, shard_index)"}
        text = json.dumps(manifest, indent=2) + "\n"
        _atomic_write(self.directory / "campaign.json", lambda temporary: Path(temporary).write_text(text))

    def _write_shard(self, index, arrays):
        metadata = self._metadata(index)
        metadata["arrays"] = {key: {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _digest(key, a)}
                              for key, a in arrays.items()}
        metadata["checksum"] = _payload_checksum(metadata["arrays"])
        columns = {key: pa.LargeListArray.from_arrays(pa.array([0, a.size], type=pa.int64()), pa.array(a.reshape(-1)))
                   for key, a in arrays.items()}
        table = pa.table(columns).replace_schema_metadata({_METADATA_KEY: json.dumps(metadata).encode()})
        _atomic_write(self.shard_path(index),
                      lambda temporary: pq.write_table(table, temporary, write_page_checksum=True))

    def _shard_problem(self, path, index):
        """None if `path` is a valid shard `index` of this campaign, else the reason it is not."""
        try:
            metadata, _ = _read_shard_file(path, None)
        except _CorruptShard as error:
            return str(error)
        if metadata.get("campaign_hash") != self.campaign_hash:
            return f"belongs to another campaign (hash {metadata.get('campaign_hash')}, expected {self.campaign_hash})"
        expected = self._metadata(index)
        for key in ("shard_index", "shard_seed", "seed", "version"):
            if metadata.get(key) != expected[key]:
                return f"has {key} = {metadata.get(key)!r}, expected {expected[key]!r}"
        return None

    # ---------------------------------------------------------------- reading

    def missing(self) -> list[int]:
        """Shard indices without a shard file (not checked further: `run` does that)."""
        return [index for index in range(self.n_shards) if not self.shard_path(index).exists()]

    def read_shard(self, index, keys=None) -> dict:
        """The result of shard `index` (only `keys` if given), read from disk and checksummed.

        Raises
        ------
        ValueError
            The shard is missing, corrupt or not of this campaign (run the campaign again).
        """
        index = check_integer("shard", index, 0, self.n_shards - 1)
        path = self.shard_path(index)
        if not path.exists():
            raise ValueError(f"campaign shard {index} is missing ({str(path)!r}); run the campaign first")
        keys = None if keys is None else list(keys)
        try:
            metadata, arrays = _read_shard_file(path, keys)
        except _CorruptShard as error:
            raise ValueError(f"campaign shard file {str(path)!r} {error}; "
                             f"run the campaign again to recompute it") from None
        if metadata.get("campaign_hash") != self.campaign_hash or metadata.get("shard_index") != index:
            raise ValueError(f"campaign shard file {str(path)!r} is not shard {index} of this campaign; "
                             f"run the campaign again")
        return {key: (a[()] if a.ndim == 0 else a) for key, a in arrays.items()}

    def _require_complete(self):
        missing = self.missing()
        if missing:
            raise ValueError(f"campaign {str(self.directory)!r} is incomplete: {len(missing)} shard(s) missing "
                             f"(first: {missing[0]}); run the campaign first")

    def results(self, keys=None):
        """Yield the shard results in shard order, one at a time (only `keys` if given)."""
        self._require_complete()
        for index in range(self.n_shards):
            yield self.read_shard(index, keys)

    def reduce(self, function, initial, keys=None):
        """``function(accumulated, shard_result)`` folded over the shards in shard order."""
        accumulated = initial
        for result in self.results(keys):
            accumulated = function(accumulated, result)
        return accumulated

    def sum(self, keys=None) -> dict:
        """Arrays (and scalars) of `keys` (default: all keys of shard 0) added over the shards, in
        shard order (so the floating-point totals do not depend on the executor)."""
        self._require_complete()
        if keys is None:
            keys = list(self.read_shard(0).keys())
        keys = list(keys)

        def add(totals, result):
            if totals is None:
                return {key: np.array(result[key], copy=True) for key in keys}
            for key in keys:
                if np.shape(result[key]) != totals[key].shape:
                    raise ValueError(f"campaign result {key!r} changes shape between shards: "
                                     f"{totals[key].shape} and {np.shape(result[key])}")
                totals[key] += result[key]
            return totals

        totals = self.reduce(add, None, keys)
        return {key: (a[()] if a.ndim == 0 else a) for key, a in totals.items()}


# -------------------------------------------------------------------- shard files

class _CorruptShard(Exception):
    """A shard file that cannot be used; the message says why."""


def _digest(key, array) -> str:
    h = hashlib.sha256(f"{key}|{array.dtype.str}|{array.shape}|".encode())
    h.update(np.ascontiguousarray(array).view(np.uint8).reshape(-1).data)
    return h.hexdigest()


def _payload_checksum(entries) -> str:
    return hashlib.sha256("".join(f"{key}:{entries[key]['sha256']};" for key in sorted(entries)).encode()).hexdigest()


def _read_shard_file(path, keys):
    """(metadata, arrays) of a shard file (only `keys` if given), checksummed.

    Raises _CorruptShard with the reason for a file that cannot be used, ValueError for a key
    that the (valid) file does not hold.
    """
    try:
        schema = pq.read_schema(path)
        raw = (schema.metadata or {}).get(_METADATA_KEY)
        if raw is None:
            raise _CorruptShard("has no campaign metadata")
        metadata = json.loads(raw)
        if metadata.get("format") != FORMAT_VERSION:
            raise _CorruptShard(f"has format {metadata.get('format')!r}, expected {FORMAT_VERSION}")
        entries = metadata["arrays"]
        if sorted(entries) != sorted(schema.names) or _payload_checksum(entries) != metadata["checksum"]:
            raise _CorruptShard("has inconsistent metadata")
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise _CorruptShard(f"cannot be read ({type(error).__name__}: {error})") from None
    wanted = list(entries) if keys is None else keys
    unknown = [key for key in wanted if key not in entries]
    if unknown:
        raise ValueError(f"campaign shard file {str(path)!r} has no result {unknown[0]!r}; it holds {sorted(entries)}")
    try:
        table = pq.read_table(path, columns=wanted, page_checksum_verification=True)
        if table.num_rows != 1:
            raise _CorruptShard(f"has {table.num_rows} rows, expected 1")
        arrays = {}
        for key in wanted:
            entry = entries[key]
            flat = table.column(key).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            array = np.ascontiguousarray(flat.astype(np.dtype(entry["dtype"]), copy=False).reshape(entry["shape"]))
            if _digest(key, array) != entry["sha256"]:
                raise _CorruptShard(f"fails its checksum (array {key!r})")
            arrays[key] = array
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError) as error:
        raise _CorruptShard(f"cannot be read ({type(error).__name__}: {error})") from None
    return metadata, arrays


def _atomic_write(path, write):
    """Call write(temporary_path) then rename the temporary file to `path` (same directory)."""
    temporary = temporary_beside(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -------------------------------------------------------------------- worker side

def _run_shard(task, config, shard_seed, shard_index, threads):
    """Run one shard in a worker with `threads` numba threads; its result as contiguous arrays."""
    previous = None
    if threads is not None:
        import numba

        previous = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        result = task(config, shard_seed, shard_index)
    finally:
        if previous is not None:
            numba.set_num_threads(previous)
    return _as_arrays(result, shard_index)


def _as_arrays(result, shard_index) -> dict:
    if not isinstance(result, dict) or not result:
        raise TypeError(f"shard {shard_index}: the task must return a non-empty dict of arrays, "
                        f"got {type(result).__name__}")
    arrays = {}
    for key, value in result.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"shard {shard_index}: result keys must be non-empty strings, got {key!r}")
        if isinstance(value, (bool, int, float, np.generic, np.ndarray)):
            array = np.asarray(value)
            if isinstance(value, int) and not isinstance(value, bool):
                array = np.asarray(value, dtype=np.int64)
        else:
            raise TypeError(f"shard {shard_index}: result {key!r} is a {type(value).__name__}; "
                            f"expected a numpy array or a number")
        if array.dtype not in _ALLOWED_DTYPES:
            raise TypeError(f"shard {shard_index}: result {key!r} has dtype {array.dtype}; "
                            f"allowed: bool, integers, float32, float64")
        arrays[key] = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
    return arrays


def _watch_driver(driver_pid, interval_s=1.0):
    """Pool-worker initializer: exit when the driver process is gone (killed with SIGKILL, a
    pool worker would otherwise wait for work forever)."""
    import threading

    def watch():
        while True:
            time.sleep(interval_s)
            try:
                os.kill(driver_pid, 0)
            except ProcessLookupError:
                os._exit(1)

    threading.Thread(target=watch, name="muone-driver-watch", daemon=True).start()


def _check_picklable(task, name):
    try:
        pickle.loads(pickle.dumps(task))
    except (pickle.PicklingError, AttributeError, TypeError, ImportError) as error:
        raise ValueError(f"task = {name} cannot be sent to worker processes ({error}); use a top-level "
                         f"function of an importable module, or n_workers=0") from None


# -------------------------------------------------------------------- executors

class _SerialExecutor:
    """Runs each shard at submission, in this process."""

    window = 1

    def submit(self, function, *args):
        future = concurrent.futures.Future()
        try:
            future.set_result(function(*args))
        except Exception as error:
            future.set_exception(error)
        return future

    @staticmethod
    def wait_first(futures):
        return futures

    @staticmethod
    def result(future):
        return future.result()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _PoolExecutor:
    """concurrent.futures.ProcessPoolExecutor with a fork-free start method."""

    def __init__(self, n_workers):
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        self.pool = concurrent.futures.ProcessPoolExecutor(max_workers=n_workers, mp_context=context,
                                                           initializer=_watch_driver, initargs=(os.getpid(),))
        self.window = 2 * n_workers

    def submit(self, function, *args):
        return self.pool.submit(function, *args)

    @staticmethod
    def wait_first(futures):
        return concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED).done

    @staticmethod
    def result(future):
        try:
            return future.result()
        except concurrent.futures.process.BrokenProcessPool as error:
            raise RuntimeError(f"a worker process died ({error}); if this happens at once, the task's module "
                               f"may not be importable in a fresh process") from error

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        self.pool.shutdown(wait=kind is None, cancel_futures=True)
        return False


def _probe_scheduler(address, timeout_s):
    """Ask `address` for its identity with distributed's own protocol, in a private event loop (a
    failed `distributed.Client` would block in its destructor for several seconds)."""
    import asyncio

    from distributed.comm import connect

    async def identity():
        comm = await connect(address, timeout=timeout_s)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await asyncio.wait_for(comm.read(), timeout_s)
        finally:
            comm.abort()

    with concurrent.futures.ThreadPoolExecutor(1) as thread:  # works even inside a running loop (Jupyter)
        try:
            reply = thread.submit(asyncio.run, identity()).result()
        except Exception as error:  # any failure means "not reachable as a Dask scheduler": re-raised with the address
            raise SchedulerUnreachable(f"Dask scheduler {address!r} cannot be reached within {timeout_s:g} s "
                                       f"({type(error).__name__}: {error})") from error
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        raise SchedulerUnreachable(f"{address!r} answers, but not as a Dask scheduler")


class _DaskExecutor:
    """A distributed.Client on an existing scheduler, or on a LocalCluster started (and closed) here."""

    def __init__(self, address, n_local, timeout_s):
        try:
            import distributed
        except ImportError:
            raise ValueError("Dask is not installed: pip install 'muone-toolkit[dask]'") from None
        self.distributed = distributed
        self.cluster = None
        if address is None:
            import logging

            self.cluster = distributed.LocalCluster(n_workers=n_local, threads_per_worker=1, processes=True,
                                                    dashboard_address=":0", silence_logs=logging.WARNING)
            address = self.cluster.scheduler_address
        else:
            _probe_scheduler(address, timeout_s)
        try:
            self.client = distributed.Client(address, timeout=timeout_s, set_as_default=False)
        except BaseException:
            if self.cluster is not None:
                self.cluster.close()
            raise
        self.window = 2 * max(1, sum(self.client.nthreads().values()))
        self.token = uuid.uuid4().hex[:8]

    def submit(self, function, *args):
        return self.client.submit(function, *args, pure=False, key=f"muone-shard-{args[3]}-{self.token}")

    def wait_first(self, futures):
        with self.client.as_current():
            return self.distributed.wait(futures, return_when="FIRST_COMPLETED").done

    @staticmethod
    def result(future):
        try:
            return future.result()
        finally:
            future.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        return False


# -------------------------------------------------------------------- self-test task

def uniform_histogram_task(config, shard_seed, shard_index):
    """A cheap task to check an executor or a cluster: histograms of counter-based uniforms.

    Parameters
    ----------
    config : dict
        ``events_per_shard`` (int >= 0), ``bins`` (int >= 1), optional ``chunk_events`` (memory
        per step, default 10**6).
    shard_seed, shard_index : int
        From the campaign.

    Returns
    -------
    dict
        ``counts`` (int64, events per bin of u in [0, 1)), ``sum_w`` and ``sum_w2`` (float64,
        sums of w = u and w^2 per bin) and ``n_events``; u is `fastsim.rng.uniform_array` of
        (shard_seed, event, STREAM_CAMPAIGN_SELF_TEST), so any executor gives identical numbers.
    """
    n_events = check_integer("events_per_shard", config["events_per_shard"])
    bins = check_integer("bins", config["bins"], 1, 10**7)
    chunk = check_integer("chunk_events", config.get("chunk_events", 10**6), 1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, sum_w, sum_w2 = np.zeros(bins, np.int64), np.zeros(bins), np.zeros(bins)
    for first in range(0, n_events, chunk):
        u = uniform_array(shard_seed, first, min(chunk, n_events - first), STREAM_CAMPAIGN_SELF_TEST, 1)[:, 0]
        counts += np.histogram(u, edges)[0]
        sum_w += np.histogram(u, edges, weights=u)[0]
        sum_w2 += np.histogram(u, edges, weights=u * u)[0]
    return {"counts": counts, "sum_w": sum_w, "sum_w2": sum_w2, "n_events": n_events}
