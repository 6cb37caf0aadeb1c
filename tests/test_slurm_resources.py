"""SLURM requests that follow the trainer and the node (`prresq.slurm`), checked before submission."""

from __future__ import annotations

import math

import pytest

from prresq.slurm import Node, Partition, SlurmRequestError, parse_gpus, parse_minutes, resolve_resources

CPU_NODE = Partition("debug", (Node("vm", cpus=2, mem_mb=24105, gpus=0),), max_time_min=math.inf, max_nodes=math.inf)
GPU_NODES = (Node("g1", cpus=64, mem_mb=512000, gpus=8), Node("g2", cpus=64, mem_mb=512000, gpus=8))
GPU_NODE = Partition("gpu", GPU_NODES, max_time_min=2880, max_nodes=4)
AUTO = dict(gpus_per_node="auto", cpus_per_task="auto", mem_gb="auto", timeout_min=60, setup=[])


def test_a_cpu_trainer_asks_for_no_gpu_and_the_node_shared_per_task():
    got = resolve_resources({**AUTO, "tasks_per_node": 2, "nodes": 1}, "cpu", CPU_NODE)
    assert got["gpus_per_node"] is None  # no --gpus-per-node: a CPU node would refuse the gres
    assert got["cpus_per_task"] == 1 and got["mem_gb"] == 23  # 2 CPUs / 2 tasks; all of 24105 MB = 23.5 GB
    assert got["setup"][0] == "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}"
    assert got["partition"] == "debug"


def test_accelerator_auto_on_a_cpu_partition_asks_for_no_gpu():
    got = resolve_resources({**AUTO, "tasks_per_node": 1, "nodes": 1}, "auto", CPU_NODE)
    assert got["gpus_per_node"] is None and got["cpus_per_task"] == 2 and got["mem_gb"] == 23


def test_a_gpu_trainer_gets_one_gpu_per_task_and_its_share_of_cpus_and_memory():
    got = resolve_resources({**AUTO, "tasks_per_node": 2, "nodes": 2}, "gpu", GPU_NODE)
    assert got["gpus_per_node"] == 2
    assert got["cpus_per_task"] == 8  # 64 CPUs / 8 GPUs, one GPU per task
    assert got["mem_gb"] == 125  # 16 of 64 CPUs: a quarter of 512000 MB = 125 GB
    assert got["setup"][0].endswith(":-8}")


def test_explicit_values_win_over_auto():
    params = {**AUTO, "tasks_per_node": 1, "nodes": 1, "cpus_per_task": "1", "mem_gb": "2", "gpus_per_node": "0"}
    got = resolve_resources(params, "gpu", GPU_NODE)
    assert (got["cpus_per_task"], got["mem_gb"], got["gpus_per_node"]) == (1, 2, None)


@pytest.mark.parametrize(
    ("change", "accelerator", "message"),
    [
        ({"cpus_per_task": 8}, "cpu", r"cpus_per_task=8 x tasks_per_node=1: the largest node has 2 CPUs"),
        ({"mem_gb": 256}, "cpu", r"mem_gb=256: the largest node has 24105 MB"),
        ({}, "gpu", r"gpus_per_node=1 \(trainer.accelerator=gpu\): the most GPUs on a node is 0"),
        ({"nodes": 2}, "cpu", r"nodes=2: the partition has 1"),
        ({"tasks_per_node": "auto"}, "cpu", r"set trainer.devices \(train\) or devices \(eval\) to a number"),
        ({"cpus_per_task": "many"}, "cpu", r"cpus_per_task='many' \(SLURM_CPUS_PER_TASK\)"),
    ],
)
def test_a_request_no_node_can_hold_is_an_error_before_submission(change, accelerator, message):
    params = {**AUTO, "tasks_per_node": 1, "nodes": 1, **change}
    with pytest.raises(SlurmRequestError, match=message):
        resolve_resources(params, accelerator, CPU_NODE)


def test_a_time_limit_past_the_partition_maximum_is_an_error():
    with pytest.raises(SlurmRequestError, match=r"timeout_min=3000: the partition's MaxTime is 2880 min"):
        resolve_resources({**AUTO, "tasks_per_node": 1, "nodes": 1, "timeout_min": 3000}, "gpu", GPU_NODE)


def test_slurm_field_formats():
    assert parse_gpus("gpu:a100:8(S:0-1)") == 8 and parse_gpus("gpu:4,gpu:t4:2") == 6 and parse_gpus("(null)") == 0
    assert parse_minutes("UNLIMITED") == math.inf and parse_minutes("30") == 30
    assert parse_minutes("1:00:00") == 60 and parse_minutes("2-00:00:00") == 2880 and parse_minutes("1-2") == 1560
    assert parse_minutes("10:30") == 10.5
