"""cpu_threads: the one CPU count for training and serving honours OMP_NUM_THREADS, the CPU
affinity and the cgroup's CPU quota (v2 cpu.max, v1 cfs quota), read from a real folder tree."""

from __future__ import annotations

import os

import pytest

from skindx.inference.resources import cgroup_cpu_limit, cpu_threads

AFFINITY = len(os.sched_getaffinity(0))


@pytest.fixture(autouse=True)
def no_omp(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_cgroup_v2_quota_is_read_and_rounded_up(tmp_path):
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 0.5
    assert cpu_threads(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_threads(tmp_path) == min(AFFINITY, 2)


def test_no_quota_means_the_affinity_count(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert cpu_threads(tmp_path) == AFFINITY
    assert cpu_threads(tmp_path / "absent") == AFFINITY


def test_cgroup_v1_cfs_quota(tmp_path):
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.0
    assert cpu_threads(tmp_path) == 1
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert cgroup_cpu_limit(tmp_path) is None


def test_omp_num_threads_wins(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads(tmp_path) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "zero")
    assert cpu_threads(tmp_path) == 1


def test_serving_and_training_use_the_same_count():
    from skindx import runtime
    from skindx.inference import model

    assert runtime.cpu_threads is cpu_threads and model.cpu_threads is cpu_threads
