"""semiseg.collectives: identities in one process, gathers and sums over 2 gloo processes.

One process (no process group): rank 0 of 1, `all_gather_rows` returns its input detached,
`all_reduce_sum` returns the tensor itself. Two processes (`torch.multiprocessing.spawn`, gloo,
file rendezvous): rank and world size; `all_gather_rows` with uneven row counts (3 + 1, and 0 + 2)
gives every row once, in rank order, on both ranks, without gradients; `all_reduce_sum` sums in place.
"""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from semiseg import collectives

WORLD = 2


def test_one_process_is_rank_zero_of_one():
    assert not dist.is_initialized()
    assert not collectives.is_distributed()
    assert collectives.rank() == 0
    assert collectives.world_size() == 1


def test_one_process_gather_is_the_input_detached():
    x = torch.randn(3, 4, requires_grad=True)
    y = x * 2
    out = collectives.all_gather_rows(y)
    assert torch.equal(out, y)
    assert not out.requires_grad and out.grad_fn is None
    assert out.data_ptr() == y.data_ptr()  # the tensor itself, no copy
    empty = torch.zeros(0, 4)
    assert collectives.all_gather_rows(empty).shape == (0, 4)


def test_one_process_sum_is_the_same_tensor():
    x = torch.tensor([1.0, 2.0, 3.0])
    out = collectives.all_reduce_sum(x)
    assert out is x
    assert torch.equal(out, torch.tensor([1.0, 2.0, 3.0]))


# -- two processes ----------------------------------------------------------------------------------

def rows(rank: int, case: str) -> torch.Tensor:
    """The rows rank `rank` contributes: values 100·rank + row index, 2 columns (3 + 1 or 0 + 2 rows)."""
    counts = {"uneven": (3, 1), "empty": (0, 2)}[case]
    n = counts[rank]
    base = 100.0 * rank + torch.arange(n, dtype=torch.float32)
    return torch.stack([base, base + 0.5], dim=1)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        result = {"rank": collectives.rank(), "world_size": collectives.world_size(),
                  "distributed": collectives.is_distributed()}
        for case in ("uneven", "empty"):
            x = rows(rank, case).requires_grad_(True)
            gathered = collectives.all_gather_rows(x * 1.0)
            result[case] = gathered
            result[f"{case}_requires_grad"] = gathered.requires_grad
        ints = torch.full((rank + 1, 2, 3), rank, dtype=torch.long)  # integer rows with extra dimensions
        result["ints"] = collectives.all_gather_rows(ints)
        s = torch.tensor([rank + 1.0, 10.0 * (rank + 1)])
        summed = collectives.all_reduce_sum(s)
        result["sum"], result["sum_in_place"] = summed.clone(), summed is s and torch.equal(s, summed)
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collectives")
    mp.spawn(_worker, args=(str(tmp / "rendezvous"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.slow
def test_two_processes_rank_and_world_size(two_ranks):
    assert [r["rank"] for r in two_ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["distributed"] for r in two_ranks)


@pytest.mark.slow
@pytest.mark.parametrize("case, total", [("uneven", 4), ("empty", 2)])
def test_two_processes_gather_every_row_in_rank_order(two_ranks, case, total):
    expected = torch.cat([rows(0, case), rows(1, case)])
    assert expected.shape == (total, 2)
    for result in two_ranks:
        assert torch.equal(result[case], expected)
        assert not result[f"{case}_requires_grad"]


@pytest.mark.slow
def test_two_processes_gather_integer_rows_with_extra_dims(two_ranks):
    expected = torch.cat([torch.zeros(1, 2, 3, dtype=torch.long), torch.ones(2, 2, 3, dtype=torch.long)])
    for result in two_ranks:
        assert result["ints"].dtype == torch.long and torch.equal(result["ints"], expected)


@pytest.mark.slow
def test_two_processes_sum(two_ranks):
    for result in two_ranks:
        assert torch.equal(result["sum"], torch.tensor([3.0, 30.0]))
        assert result["sum_in_place"]
