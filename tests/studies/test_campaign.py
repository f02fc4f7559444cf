"""Campaign runner: identical numbers on every executor, resume, corrupt shards, bad input."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastsim.rng import derive_seed, uniform_array
from studies.campaign import (Campaign, CampaignError, SchedulerUnreachable, ShardWarning,
                              uniform_histogram_task)

CONFIG = {"events_per_shard": 5000, "bins": 8, "chunk_events": 2000}
SEED = 20240917
N_SHARDS = 4
KEYS = ("counts", "sum_w", "sum_w2", "n_events")


def make(tmp_path, task=uniform_histogram_task, config=CONFIG, n_shards=N_SHARDS, **options):
    options.setdefault("n_workers", 0)
    return Campaign(task, config, SEED, n_shards, tmp_path, progress=False, **options)


def shard_results(campaign):
    return [{key: np.asarray(shard[key]) for key in KEYS} for shard in campaign.results()]


def assert_identical(results, reference):
    assert len(results) == len(reference)
    for shard, expected in zip(results, reference):
        for key in KEYS:
            assert shard[key].dtype == expected[key].dtype
            np.testing.assert_array_equal(shard[key], expected[key])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The serial run: per-shard results and totals."""
    campaign = make(tmp_path_factory.mktemp("serial"))
    summary = campaign.run()
    assert (summary.computed, summary.skipped, summary.recomputed) == (N_SHARDS, 0, 0)
    return shard_results(campaign), campaign.sum()


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=logging.WARNING) as cluster:
        yield cluster


def test_shard_is_an_independent_function_of_the_shard_seed(reference):
    """Shard k histograms the uniforms of derive_seed(seed, k), computed here directly."""
    results, totals = reference
    edges = np.linspace(0.0, 1.0, CONFIG["bins"] + 1)
    for index, shard in enumerate(results):
        u = uniform_array(derive_seed(SEED, index), 0, CONFIG["events_per_shard"], 999, 1)[:, 0]
        np.testing.assert_array_equal(shard["counts"], np.histogram(u, edges)[0])
        np.testing.assert_allclose(shard["sum_w"], np.histogram(u, edges, weights=u)[0], rtol=1e-12)
    assert totals["counts"].sum() == N_SHARDS * CONFIG["events_per_shard"] == totals["n_events"]
    assert not np.array_equal(results[0]["counts"], results[1]["counts"])  # shards draw different numbers


@pytest.mark.parametrize("n_workers", [1, 2])
def test_process_pool_gives_identical_numbers(tmp_path, reference, n_workers):
    campaign = make(tmp_path, n_workers=n_workers)
    summary = campaign.run()
    assert summary.computed == N_SHARDS and summary.executor.startswith("process pool")
    assert_identical(shard_results(campaign), reference[0])
    for key in KEYS:
        np.testing.assert_array_equal(campaign.sum()[key], reference[1][key])


def test_dask_cluster_gives_identical_numbers(tmp_path, reference, dask_cluster):
    campaign = make(tmp_path, n_workers=None, scheduler=dask_cluster.scheduler_address)
    summary = campaign.run()
    assert summary.computed == N_SHARDS and summary.executor.startswith("dask")
    assert_identical(shard_results(campaign), reference[0])
    for key in KEYS:
        np.testing.assert_array_equal(campaign.sum()[key], reference[1][key])


def test_dask_local_cluster_started_and_closed(tmp_path, reference):
    pytest.importorskip("distributed")
    campaign = make(tmp_path, n_workers=None, dask_local=1)
    assert campaign.run().computed == N_SHARDS
    assert_identical(shard_results(campaign), reference[0])


def test_results_do_not_depend_on_the_number_of_shards(tmp_path, reference):
    """Shards 0, 1 of a 2-shard campaign are shards 0, 1 of the 4-shard one, and are reused."""
    assert make(tmp_path, n_shards=2).run().computed == 2
    summary = make(tmp_path).run()
    assert (summary.computed, summary.skipped) == (2, 2)
    assert_identical(shard_results(make(tmp_path)), reference[0])


def test_resume_after_deleting_shards_recomputes_only_those(tmp_path, reference):
    """A serial run killed after shards 0 and 2, resumed by a process pool."""
    make(tmp_path).run()
    campaign = make(tmp_path, n_workers=1)
    campaign.shard_path(1).unlink()
    campaign.shard_path(3).unlink()
    kept = {i: campaign.shard_path(i).stat().st_mtime_ns for i in (0, 2)}
    summary = campaign.run()
    assert (summary.computed, summary.skipped, summary.recomputed) == (2, 2, 0)
    assert {i: campaign.shard_path(i).stat().st_mtime_ns for i in (0, 2)} == kept
    assert_identical(shard_results(campaign), reference[0])
    assert campaign.run().skipped == N_SHARDS


def flaky_task(config, shard_seed, shard_index):
    """uniform_histogram_task that logs each call and fails once on shard config['fail_on']."""
    with open(config["log"], "a") as log:
        log.write(f"{shard_index}\n")
    marker = Path(config["log"] + ".failed")
    if shard_index == config["fail_on"] and not marker.exists():
        marker.touch()
        raise RuntimeError("worker lost its disk")
    return uniform_histogram_task(config, shard_seed, shard_index)


def calls(log):
    return [int(line) for line in Path(log).read_text().split()]


def test_failed_shard_is_reported_and_the_campaign_resumes(tmp_path, reference):
    log = str(tmp_path / "calls.txt")
    config = {**CONFIG, "log": log, "fail_on": 2}
    campaign = make(tmp_path / "out", task=flaky_task, config=config)
    message = r"shard\(s\) \[2\] failed; shard 2: RuntimeError: worker lost its disk"
    with pytest.raises(CampaignError, match=message) as error:
        campaign.run()
    assert set(error.value.failures) == {2}
    assert campaign.missing() == [2, 3]
    mtimes = {i: campaign.shard_path(i).stat().st_mtime_ns for i in (0, 1)}
    assert calls(log) == [0, 1, 2]

    summary = campaign.run()
    assert (summary.computed, summary.skipped) == (2, 2)
    assert calls(log) == [0, 1, 2, 2, 3]  # 0 and 1 were not recomputed
    assert {i: campaign.shard_path(i).stat().st_mtime_ns for i in (0, 1)} == mtimes
    assert_identical(shard_results(campaign), reference[0])


def test_task_error_in_a_worker_process_names_the_shard(tmp_path):
    campaign = make(tmp_path, config={**CONFIG, "events_per_shard": -1}, n_workers=1, n_shards=2)
    with pytest.raises(CampaignError, match=r"shard \d: ValueError: events_per_shard = -1"):
        campaign.run()
    assert campaign.missing() == [0, 1]


def bad_result_task(config, shard_seed, shard_index):
    return {"counts": np.zeros(3), "label": "not an array"}


def test_task_returning_a_non_array_is_refused(tmp_path):
    with pytest.raises(CampaignError, match="result 'label' is a str"):
        make(tmp_path, task=bad_result_task).run()


def rewrite_with_values(path, key, values):
    """Replace one column's values but keep the schema metadata (a silent corruption)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    column = pa.LargeListArray.from_arrays(pa.array([0, len(values)], pa.int64()), pa.array(values))
    pq.write_table(table.set_column(table.schema.get_field_index(key), key, column), path)


@pytest.mark.parametrize("damage", ["truncate", "flip", "checksum", "other_campaign"])
def test_corrupt_shard_is_detected_and_recomputed(tmp_path, reference, damage):
    campaign = make(tmp_path)
    campaign.run()
    path = campaign.shard_path(2)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "flip":
        data = bytearray(path.read_bytes())
        for offset in range(8, len(data) // 2):  # the data pages, behind the leading magic bytes
            data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "checksum":
        counts = reference[0][2]["counts"].copy()
        counts[0] += 1
        rewrite_with_values(path, "counts", counts)
        with pytest.raises(ValueError, match="fails its checksum"):
            campaign.read_shard(2)
    else:
        other = make(tmp_path / "other", config={**CONFIG, "bins": 4})
        other.run()
        shutil.copy(other.shard_path(2), path)
    kept = campaign.shard_path(1).stat().st_mtime_ns
    with pytest.warns(ShardWarning, match=re.escape(str(path))) as record:
        summary = campaign.run()
    assert len(record) == 1
    assert (summary.computed, summary.recomputed, summary.skipped) == (0, 1, N_SHARDS - 1)
    assert campaign.shard_path(1).stat().st_mtime_ns == kept
    assert_identical(shard_results(campaign), reference[0])


def test_changing_the_configuration_never_reuses_shards(tmp_path, reference):
    first = make(tmp_path)
    first.run()
    mtimes = [first.shard_path(i).stat().st_mtime_ns for i in range(N_SHARDS)]
    changed = make(tmp_path, config={**CONFIG, "events_per_shard": 3000})
    assert changed.directory != first.directory
    assert changed.run().computed == N_SHARDS
    assert changed.sum()["n_events"] == N_SHARDS * 3000
    reseeded = Campaign(uniform_histogram_task, CONFIG, SEED + 1, N_SHARDS, tmp_path, n_workers=0, progress=False)
    assert reseeded.run().computed == N_SHARDS
    assert not np.array_equal(reseeded.sum()["counts"], reference[1]["counts"])
    assert [first.shard_path(i).stat().st_mtime_ns for i in range(N_SHARDS)] == mtimes
    assert_identical(shard_results(first), reference[0])


def test_unreachable_scheduler_fails_fast_and_keeps_finished_shards(tmp_path):
    pytest.importorskip("distributed")
    finished = make(tmp_path, n_shards=2)
    finished.run()
    mtimes = [finished.shard_path(i).stat().st_mtime_ns for i in range(2)]
    address = "tcp://127.0.0.1:1"
    campaign = make(tmp_path, n_workers=None, scheduler=address, connect_timeout_s=2.0)
    start = time.perf_counter()
    with pytest.raises(SchedulerUnreachable, match="tcp://127.0.0.1:1") as error:
        campaign.run()
    assert time.perf_counter() - start < 5.0
    assert isinstance(error.value, ConnectionError) and isinstance(error.value, ValueError)
    assert [finished.shard_path(i).stat().st_mtime_ns for i in range(2)] == mtimes
    assert campaign.missing() == [2, 3]


def test_incomplete_campaign_cannot_be_summed(tmp_path):
    campaign = make(tmp_path)
    with pytest.raises(ValueError, match="incomplete: 4 shard"):
        campaign.sum()
    campaign.run(shards=[0])
    assert campaign.missing() == [1, 2, 3]
    with pytest.raises(ValueError, match="has no result 'nope'"):
        campaign.read_shard(0, ["nope"])


def local_task(config, shard_seed, shard_index):
    return {"x": np.zeros(1)}


@pytest.mark.parametrize(("options", "message"), [
    ({"n_shards": 0}, "n_shards = 0 is outside the allowed range"),
    ({"seed": -1}, "seed must be an integer"),
    ({"config": {"a": np.int64(1)}}, "config must be plain JSON data"),
    ({"scheduler": "tcp://h:1", "dask_local": 2, "n_workers": None}, "give at most one of them"),
    ({"scheduler": "tcp://h:1", "n_workers": 2}, "n_workers = 2 applies to the local process pool"),
    ({"dask_local": 0, "n_workers": None}, "dask_local = 0 is outside the allowed range"),
    ({"task": lambda c, s, i: {}, "n_workers": 2}, "cannot be sent to worker processes"),
])
def test_bad_input_is_refused(tmp_path, options, message):
    arguments = {"task": local_task, "config": CONFIG, "seed": SEED, "n_shards": 2, "n_workers": 0, **options}
    with pytest.raises(ValueError, match=message):
        Campaign(output_dir=tmp_path, progress=False, **arguments)


def test_dask_is_imported_only_when_used(tmp_path):
    code = (
        "import sys\n"
        "from studies.campaign import Campaign\n"
        "def task(config, shard_seed, shard_index):\n"
        "    return {'x': shard_index}\n"
        f"c = Campaign(task, {{}}, 1, 2, {str(tmp_path)!r}, n_workers=0, progress=False)\n"
        "c.run()\n"
        "assert c.sum()['x'] == 1\n"
        "assert not {'dask', 'distributed'} & set(sys.modules), sorted({'dask', 'distributed'} & set(sys.modules))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2],
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
