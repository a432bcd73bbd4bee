#!/usr/bin/env python3
"""PyTorch 2.6 side of dcp's side-by-side benchmark (bench_side_by_side.sh).

Runs inside the peer (tools/peer/run_in_peer.sh) with Debian's torch 2.6.0
and mirrors `dcp bench --distributed` (tools/dist_bench.h): the same state
dict, the same values, the same timing rule, the same kind of output line.

Subcommands:
  save  --dir D --world-size N [--async] TENSORS  N ranks dcp.save (or
                                dcp.async_save) with FileSystemWriter
  load  --dir D --world-size M TENSORS  M ranks dcp.load with
                                FileSystemReader into zero-filled
                                destinations, then check every element
  plan  --save-ranks S --load-ranks L --tensors T
                                one process: the default planners for S
                                simulated saving ranks and L loading ranks
  dict  --keys N                build a Python dict of N keys, look each up
TENSORS: --tensors T --rows R --cols C --layout row|round_robin

The state dict is {"model": {"t<i>": tensor i}}, float32 [R, C], element
(r, c) of tensor i = float((i * 7919 + r * C + c) mod 65521). Layouts over W
ranks: `row` = DTensor Shard(0) on the 1-D mesh arange(W) (every rank holds
a row shard of every tensor); `round_robin` = plain whole tensors, rank r
holds tensor i iff i % W == r.

Timing: the ranks meet in dist.barrier(); each times its part from there;
the figure is the slowest rank's (all_gather_object, max). Output, from
every rank then rank 0 (the launcher prefixes each with "[rank r] "):

  peer_bench_rank workload=save rank=1 world=4 seconds=1.234567 bytes=268435456 max_rss_kb=...
  peer_bench workload=save world=4 seconds=1.300000 bytes=1073741824 max_rss_kb=...

async save adds complete_seconds= (until future.result() returned); for it,
`seconds` is the time until dcp.async_save returned. Note that 2.6's
async_save does not copy CPU tensors when staging (docs/design.md
§2.5): it returns without copying the data.

`plan` prints `w4_save_plan_seconds X` and `w4_load_plan_seconds Y` (the
format of dcp's `planner_benchmark w4`), `dict` prints `w5_build_seconds X`
and `w5_lookup_seconds Y` (best of 3 each).
"""

import argparse
import json
import os
import resource
import sys
import time
import traceback
import warnings
from datetime import timedelta
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dcp_peer  # noqa: E402  (the launcher's helpers; imports no torch)

DEFAULT_TIMEOUT_S = 1800.0
CHECK_ROWS = 64


def _fmt_seconds(s: float) -> str:
    return f"{s:.6f}"


def _max_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def expected_rows(index: int, row0: int, nrows: int, cols: int):
    import torch
    r = torch.arange(row0, row0 + nrows, dtype=torch.int64).mul_(cols).unsqueeze(1)
    c = torch.arange(cols, dtype=torch.int64).unsqueeze(0)
    return (r + c).add_(index * 7919).remainder_(65521).to(torch.float32)


def rank_state_dict(job: Dict[str, Any], rank: int, world: int, zeros: bool):
    """({"model": {...}}, [(index, row0, local tensor)])."""
    import torch
    tensors, rows, cols = job["tensors"], job["rows"], job["cols"]
    model: Dict[str, Any] = {}
    locals_ = []
    mesh = None
    if job["layout"] == "row":
        from torch.distributed.device_mesh import DeviceMesh
        from torch.distributed.tensor import DTensor, Shard
        mesh = DeviceMesh("cpu", torch.arange(world))
        row0, nrows = dcp_peer.shard_range(rows, world, rank)
    for i in range(tensors):
        if mesh is None:
            if i % world != rank:
                continue
            row0, nrows = 0, rows
        local = (torch.zeros(nrows, cols, dtype=torch.float32) if zeros
                 else expected_rows(i, row0, nrows, cols))
        locals_.append((i, row0, local))
        if mesh is not None:
            model[f"t{i}"] = DTensor.from_local(
                local, mesh, [Shard(0)], run_check=False,
                shape=torch.Size([rows, cols]), stride=(cols, 1))
        else:
            model[f"t{i}"] = local
    return {"model": model}, locals_


def check_values(locals_, rank: int, cols: int) -> List[str]:
    import torch
    problems = []
    for index, row0, t in locals_:
        for b in range(0, t.shape[0], CHECK_ROWS):
            n = min(CHECK_ROWS, t.shape[0] - b)
            if not torch.equal(t[b:b + n], expected_rows(index, row0 + b, n, cols)):
                problems.append(f"rank {rank}: tensor model.t{index} rows "
                                f"[{row0 + b}, {row0 + b + n}) differ from what was saved")
                break
    return problems


def worker_main(job: Dict[str, Any]) -> int:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter

    warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
    dcp_peer._patch_error_propagation()
    rank, world = job["rank"], job["world_size"]
    dist.init_process_group("gloo", init_method=job["init_method"], rank=rank,
                            world_size=world,
                            timeout=timedelta(seconds=job["timeout"]))
    start_rss_kb = _max_rss_kb()
    action = job["action"]
    load = action == "load"
    sd, locals_ = rank_state_dict(job, rank, world, zeros=load)
    nbytes = sum(t.numel() * t.element_size() for _, _, t in locals_)
    extra: Dict[str, float] = {}
    max_rss_kb = 0
    if action == "save":
        dist.barrier()
        t0 = time.perf_counter()
        writer = FileSystemWriter(job["dir"], sync_files=job["sync_files"],
                                  thread_count=job["thread_count"])
        dcp.save(sd, storage_writer=writer)
        seconds = time.perf_counter() - t0
    elif action == "async_save":
        writer = FileSystemWriter(job["dir"], sync_files=job["sync_files"],
                                  thread_count=job["thread_count"])
        # The first call sets up what later calls reuse; a training loop
        # lives in the steady state, so the second call is the one timed.
        dist.barrier()
        t0 = time.perf_counter()
        future = dcp.async_save(sd, storage_writer=writer)
        extra["first_return_seconds"] = time.perf_counter() - t0
        future.result()
        dist.barrier()
        t0 = time.perf_counter()
        future = dcp.async_save(sd, storage_writer=writer)
        seconds = time.perf_counter() - t0
        future.result()
        extra["complete_seconds"] = time.perf_counter() - t0
    elif action == "load":
        dist.barrier()
        t0 = time.perf_counter()
        reader = FileSystemReader(job["dir"])
        dcp.load(sd, storage_reader=reader)
        seconds = time.perf_counter() - t0
        max_rss_kb = _max_rss_kb()
        problems = check_values(locals_, rank, job["cols"])
        for line in problems:
            print(f"rank {rank}: DIFF {line}", flush=True)
        if problems:
            # Still take part in the gather below, so no rank hangs.
            seconds = float("nan")
    else:
        raise ValueError(f"unknown action {action}")
    if not max_rss_kb:
        max_rss_kb = _max_rss_kb()
    mine = {"seconds": seconds, "bytes": nbytes, "max_rss_kb": max_rss_kb,
            "start_rss_kb": start_rss_kb, **extra}
    fields = _fields(mine)
    print(f"peer_bench_rank workload={action} rank={rank} world={world} {fields}",
          flush=True)
    everyone: List[Any] = [None] * world
    dist.all_gather_object(everyone, mine)
    dist.barrier()
    if any(e["seconds"] != e["seconds"] for e in everyone):  # NaN: a DIFF
        return 1
    if rank == 0:
        total = {"seconds": max(e["seconds"] for e in everyone),
                 "bytes": sum(e["bytes"] for e in everyone),
                 "max_rss_kb": max(e["max_rss_kb"] for e in everyone),
                 "start_rss_kb": max(e["start_rss_kb"] for e in everyone)}
        for key in extra:
            total[key] = max(e[key] for e in everyone)
        print(f"peer_bench workload={action} world={world} {_fields(total)}",
              flush=True)
    # No destroy_process_group (see dcp_peer.py: it can hang with gloo).
    return 0


def _fields(d: Dict[str, Any]) -> str:
    parts = [f"seconds={_fmt_seconds(d['seconds'])}", f"bytes={d['bytes']}"]
    for key, value in d.items():
        if key.endswith("_seconds"):
            parts.append(f"{key}={_fmt_seconds(value)}")
    parts.append(f"max_rss_kb={d['max_rss_kb']}")
    parts.append(f"start_rss_kb={d['start_rss_kb']}")
    return " ".join(parts)


def worker_entry(job_json: str) -> None:
    import faulthandler
    import signal
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    job = json.loads(job_json)
    try:
        status = worker_main(job)
    except BaseException:  # noqa: B902 - report anything, never hang
        print(f"rank {job.get('rank')}: FAILED\n" + traceback.format_exc(), flush=True)
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(status)


def launch(action: str, args) -> int:
    """`world_size` worker processes, as dcp_peer.launch; 0 iff all exit 0."""
    world = args.world_size

    def make_job(rank, rendezvous):
        return {
            "action": action, "dir": args.dir, "rank": rank,
            "world_size": world, "timeout": args.timeout,
            "init_method": "file://" + os.path.join(rendezvous, "init"),
            "tensors": args.tensors, "rows": args.rows, "cols": args.cols,
            "layout": args.layout, "sync_files": not args.no_sync,
            "thread_count": args.threads,
        }

    codes = dcp_peer.run_ranks(__file__, world, make_job, args.timeout,
                               prefix="dcp_peer_bench_")
    failed = {r: c for r, c in enumerate(codes) if c != 0}
    if failed or len(codes) != world:
        print(f"dcp_peer_bench: {action} with {world} ranks FAILED: "
              + ", ".join(f"rank {r} {dcp_peer._describe_code(c)}"
                          for r, c in failed.items()))
        return 1
    return 0


# --------------------------------------------------------------------------
# W4: planning only, one process
# --------------------------------------------------------------------------

def plan_main(save_ranks: int, load_ranks: int, tensors: int) -> int:
    """PyTorch's default planners for simulated ranks (see the module doc).

    Every tensor is float32 [8 * save_ranks, 256], row-sharded over the
    saving ranks (8 rows each) and over the loading ranks. A rank's tensor is
    a `_RowShard`, a stand-in for a DTensor without a process group: it
    answers `__create_write_items__` with exactly the WriteItem that
    DTensor's (`_create_write_items_for_dtensor`) gives, and
    `__create_chunk_list__` with DTensor's chunk; everything else is the
    planners' own code, except that DefaultLoadPlanner.set_up_planner's
    `_init_state_dict` (which materializes tensors on the meta device and
    returns every real CPU tensor or DTensor unchanged, but turns any other
    object into None) is replaced by a no-op. Timed:
      save: for each saving rank DefaultSavePlanner.set_up_planner +
            create_local_plan; then create_global_plan (dedup, metadata,
            validation) once; then finish_plan for each rank;
      load: for each loading rank DefaultLoadPlanner.set_up_planner +
            create_local_plan (create_read_items_for_chunk_list against the
            save's metadata); then create_global_plan once.
    """
    import torch
    import torch.distributed.checkpoint.default_planner as default_planner
    from torch.distributed.checkpoint.default_planner import (
        DefaultLoadPlanner, DefaultSavePlanner)
    from torch.distributed.checkpoint.metadata import (
        ChunkStorageMetadata, MetadataIndex, TensorProperties)
    from torch.distributed.checkpoint.planner import (
        TensorWriteData, WriteItem, WriteItemType)

    warnings.filterwarnings("ignore")
    default_planner._init_state_dict = lambda state_dict: None
    rows, cols = 8 * save_ranks, 256
    global_size = torch.Size([rows, cols])
    props = TensorProperties.create_from_tensor(torch.zeros(1, dtype=torch.float32))

    class _RowShard:
        __slots__ = ("offsets", "sizes")

        def __init__(self, rank: int, world: int):
            row0, nrows = dcp_peer.shard_range(rows, world, rank)
            self.offsets = torch.Size([row0, 0])
            self.sizes = torch.Size([nrows, cols])

        def size(self):
            return global_size

        def __create_write_items__(self, fqn, obj):
            return [WriteItem(
                index=MetadataIndex(fqn, self.offsets),
                type=WriteItemType.SHARD,
                tensor_data=TensorWriteData(
                    chunk=ChunkStorageMetadata(offsets=self.offsets, sizes=self.sizes),
                    properties=props, size=global_size))]

        def __create_chunk_list__(self):
            return [ChunkStorageMetadata(offsets=self.offsets, sizes=self.sizes)]

    def state_dict(rank, world):
        return {"model": {f"t{i}": _RowShard(rank, world) for i in range(tensors)}}

    save_sds = [state_dict(r, save_ranks) for r in range(save_ranks)]
    load_sds = [state_dict(r, load_ranks) for r in range(load_ranks)]

    t0 = time.perf_counter()
    planners = [DefaultSavePlanner() for _ in range(save_ranks)]
    local_plans = []
    for r, planner in enumerate(planners):
        planner.set_up_planner(save_sds[r], is_coordinator=(r == 0))
        local_plans.append(planner.create_local_plan())
    # The per-rank part alone: create_global_plan's validation compares every
    # pair of a tensor's chunks, which dominates at 1,024 ranks.
    save_local_seconds = time.perf_counter() - t0
    global_plans, metadata = planners[0].create_global_plan(local_plans)
    for r, planner in enumerate(planners):
        planner.finish_plan(global_plans[r])
    save_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    loaders = [DefaultLoadPlanner() for _ in range(load_ranks)]
    load_plans = []
    for r, loader in enumerate(loaders):
        loader.set_up_planner(load_sds[r], metadata, is_coordinator=(r == 0))
        load_plans.append(loader.create_local_plan())
    loaders[0].create_global_plan(load_plans)
    load_seconds = time.perf_counter() - t0

    items = sum(len(p.items) for p in load_plans)
    print(f"w4 save_ranks={save_ranks} load_ranks={load_ranks} tensors={tensors} "
          f"chunks={sum(len(md.chunks) for md in metadata.state_dict_metadata.values())} "
          f"read_items={items}")
    print(f"w4_save_plan_seconds {_fmt_seconds(save_seconds)}")
    print(f"w4_save_local_plan_seconds {_fmt_seconds(save_local_seconds)}")
    print(f"w4_load_plan_seconds {_fmt_seconds(load_seconds)}")
    return 0


# --------------------------------------------------------------------------
# W5: a dict of many keys
# --------------------------------------------------------------------------

def dict_main(n: int) -> int:
    """The Python twin of //core:state_dict_benchmark: the same key
    names, build then look up every key, best of 3 each."""
    leaves = ["attention.wq.weight", "attention.wk.weight", "attention.wv.weight",
              "attention.wo.weight", "feed_forward.w1.weight",
              "feed_forward.w2.weight", "attention_norm.weight", "ffn_norm.weight"]
    keys = [f"layers.{i // 8}.{leaves[i % 8]}" for i in range(n)]
    build = lookup = float("inf")
    d: Dict[str, int] = {}
    for _ in range(3):
        t0 = time.perf_counter()
        d = {}
        for i, k in enumerate(keys):
            d[k] = i
        build = min(build, time.perf_counter() - t0)
        if len(d) != n:
            raise SystemExit("dict: duplicate keys")
    for _ in range(3):
        t0 = time.perf_counter()
        for i, k in enumerate(keys):
            if d[k] != i:
                raise SystemExit(f"dict: wrong value for {k}")
        lookup = min(lookup, time.perf_counter() - t0)
    print(f"w5_build_seconds {_fmt_seconds(build)}")
    print(f"w5_lookup_seconds {_fmt_seconds(lookup)}")
    return 0


def main(argv) -> int:
    if len(argv) >= 2 and argv[0] == "_worker":
        worker_entry(argv[1])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("save", "load"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True)
        p.add_argument("--world-size", type=int, required=True)
        p.add_argument("--tensors", type=int, default=16)
        p.add_argument("--rows", type=int, default=4096)
        p.add_argument("--cols", type=int, default=4096)
        p.add_argument("--layout", choices=["row", "round_robin"], default="row")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--timeout", type=float,
                       default=float(os.environ.get("DCP_PEER_TIMEOUT", DEFAULT_TIMEOUT_S)))
        p.add_argument("--no-sync", action="store_true",
                       help="save: FileSystemWriter(sync_files=False)")
        if name == "save":
            p.add_argument("--async", dest="use_async", action="store_true",
                           help="dcp.async_save; time until it returns")
    p = sub.add_parser("plan")
    p.add_argument("--save-ranks", type=int, default=1024)
    p.add_argument("--load-ranks", type=int, default=512)
    p.add_argument("--tensors", type=int, default=200)
    p = sub.add_parser("dict")
    p.add_argument("--keys", type=int, default=100000)
    args = parser.parse_args(argv)
    if args.cmd == "plan":
        return plan_main(args.save_ranks, args.load_ranks, args.tensors)
    if args.cmd == "dict":
        return dict_main(args.keys)
    if args.world_size < 1 or min(args.tensors, args.rows, args.cols) < 1:
        raise SystemExit("--world-size, --tensors, --rows and --cols must be >= 1")
    action = "async_save" if getattr(args, "use_async", False) else args.cmd
    return launch(action, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
