"""The data-parallel pieces: the world from torchrun's environment, epoch sharding, per-rank generators,
and the collectives (run for real in a 2-process gloo group started by torchrun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from forgetmi_trainer import distributed
from forgetmi_trainer.distributed import World
from forgetmi_trainer.errors import ConfigError


def test_the_world_is_read_from_torchruns_environment() -> None:
    assert distributed.from_env({}) == World(rank=0, size=1, local_rank=0)
    world = distributed.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (world.rank, world.size, world.local_rank, world.main, world.distributed) == (3, 4, 1, False, True)


@pytest.mark.parametrize("env", [{"RANK": "2", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "0"},
                                 {"RANK": "x", "WORLD_SIZE": "2"}])
def test_a_world_that_cannot_be_is_a_config_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"RANK|WORLD_SIZE"):
        distributed.from_env(env)


def test_one_process_draws_exactly_as_before() -> None:
    """With W = 1 the epoch order is the run generator's randperm and the draws come from it too."""
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(distributed.epoch_order(10, distributed.SINGLE, 0, 1, a), torch.randperm(10, generator=b))
    assert distributed.epoch_generator(distributed.SINGLE, 0, 1, a) is a
    assert distributed.local_batch(16, distributed.SINGLE) == 16


def test_epoch_shards_are_disjoint_cover_the_set_and_change_per_epoch() -> None:
    gen = torch.Generator().manual_seed(0)
    for epoch in (1, 2):
        shards = [distributed.epoch_order(11, World(rank=r, size=3), 7, epoch, gen).tolist() for r in range(3)]
        assert {len(s) for s in shards} == {4}  # padded to equal length: every rank takes the same steps
        assert set().union(*shards) == set(range(11))
        assert len({i for s in shards for i in s}) == 11
    first = distributed.epoch_order(11, World(rank=0, size=3), 7, 1, gen)
    assert not torch.equal(first, distributed.epoch_order(11, World(rank=0, size=3), 7, 2, gen))


def test_each_rank_and_epoch_has_its_own_generator() -> None:
    gen = torch.Generator().manual_seed(0)
    draws = {(r, e): torch.rand(4, generator=distributed.epoch_generator(World(rank=r, size=2), 3, e, gen))
             for r in range(2) for e in (1, 2)}
    assert len({tuple(d.tolist()) for d in draws.values()}) == 4
    again = torch.rand(4, generator=distributed.epoch_generator(World(rank=1, size=2), 3, 2, gen))
    assert torch.equal(again, draws[(1, 2)])


def test_the_global_batch_must_split_evenly() -> None:
    assert distributed.local_batch(16, World(rank=0, size=4)) == 4
    with pytest.raises(ConfigError, match=r"method.batchSize \(10\).*world size \(4\)"):
        distributed.local_batch(10, World(rank=0, size=4))


def test_shards_of_a_shared_pass_interleave() -> None:
    assert distributed.shard(7, World(rank=1, size=3)).tolist() == [1, 4]
    assert distributed.shard(7, distributed.SINGLE).tolist() == list(range(7))


SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import torch
    from forgetmi_trainer import distributed

    world = distributed.from_env()
    distributed.start(world, torch.device("cpu"))
    n = 7
    rows = distributed.shard(n, world)
    local = np.stack([rows * 10.0, rows + 0.5], axis=1)
    gathered = distributed.gather_rows(world, local, n)
    out = {
        "sum": distributed.all_sum(world, [float(world.rank + 1), 2.0]),
        "agree": distributed.all_agree(world, True),
        "disagree": distributed.all_agree(world, world.rank == 0),
        "gathered": gathered.tolist(),
    }
    model = torch.nn.Linear(2, 1)
    torch.manual_seed(world.rank)  # different data per rank: the averaged gradient is the mean of both
    replica = distributed.data_parallel(model, world)
    x = torch.full((4, 2), float(world.rank + 1))
    replica(x).sum().backward()
    out["grad"] = model.weight.grad.tolist()
    out["reads_through"] = replica.in_features
    del replica  # a DDP reducer outliving its process group aborts the interpreter at exit
    distributed.stop(world)
    with open(os.path.join(sys.argv[1], f"rank-{world.rank}.json"), "w") as f:
        json.dump(out, f)
""")


def test_collectives_in_a_two_process_gloo_group(tmp_path: Path) -> None:
    script = tmp_path / "collectives.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
         str(script), str(tmp_path)],
        env={**os.environ, "PYTHONSAFEPATH": "1"}, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)]
    expected = [[r * 10.0, r + 0.5] for r in range(7)]
    for out in ranks:
        assert out["sum"] == [3.0, 4.0]
        assert out["agree"] is True and out["disagree"] is False
        assert out["gathered"] == expected
        # d/dw of sum(w·x + b) over 4 rows of x = (k, k): 4k per weight; averaged over k = 1, 2: 6
        assert out["grad"] == [[6.0, 6.0]]
        assert out["reads_through"] == 2
