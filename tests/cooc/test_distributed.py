"""distributed_cooccurrence under torchrun (2 CPU processes, gloo) equals the one-process result."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastsae

from conftest import random_codes

WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch.distributed as dist
    import fastsae

    out, mode = sys.argv[1], sys.argv[2]
    i = np.load(out + "/i.npy", mmap_mode="r"); v = np.load(out + "/v.npy", mmap_mode="r")
    dense = mode != "sparse"
    if mode == "shard_rows":
        res = fastsae.distributed_cooccurrence(i, v, 53, shard_rows=True)
    else:
        # Each rank holds its own, unequal, shard of the rows.
        rank = int(__import__("os").environ["RANK"])
        lo, hi = (0, 700) if rank == 0 else (700, len(i))
        res = fastsae.distributed_cooccurrence(i[lo:hi], v[lo:hi], 53, dense=dense)
    r = dist.get_rank()
    c = res.counts if dense else res.counts.toarray()
    d = res.act_sim if dense else res.act_sim.toarray()
    np.savez(f"{out}/{mode}_{r}.npz", counts=c, act_sim=d, freq=res.freq, n_rows=res.n_rows)
    dist.destroy_process_group()
    """
)


@pytest.mark.parametrize("mode", ["dense", "sparse", "shard_rows"])
def test_two_processes_match_one(tmp_path, rng, mode):
    idx, val = random_codes(rng, 1500, 9, 53, value_dtype=np.float64)
    np.save(tmp_path / "i.npy", idx)
    np.save(tmp_path / "v.npy", val)
    (tmp_path / "worker.py").write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tmp_path / "worker.py"), str(tmp_path), mode]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-4000:]
    one = fastsae.cooccurrence(idx, val, 53)
    for rank in (0, 1):
        got = np.load(tmp_path / f"{mode}_{rank}.npz")
        np.testing.assert_array_equal(got["counts"], one.counts)
        np.testing.assert_allclose(got["act_sim"], one.act_sim, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(got["freq"], one.freq)
        assert int(got["n_rows"]) == 1500


def test_without_a_launch_it_is_plain_cooccurrence(rng):
    idx, val = random_codes(rng, 200, 5, 20)
    a = fastsae.distributed_cooccurrence(idx, val, 20)
    b = fastsae.cooccurrence(idx, val, 20)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.act_sim, b.act_sim)
