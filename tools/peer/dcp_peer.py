#!/usr/bin/env python3
"""PyTorch 2.6 side of dcp's interop tests.

Runs inside the peer (tools/peer/run_in_peer.sh) with Debian's torch 2.6.0.
Every tensor value is a pure function of (dtype, shape, flattened key), see
full_value() and tools/peer/README.md, so the C++ side can recompute it.

Subcommands:
  save   --dir D --world-size N --case CASE   N ranks save CASE with dcp.save.
  load   --dir D --world-size M --case CASE   M ranks load D into CASE's layout
                                              for M ranks and compare every
                                              element; exit 0 only if all equal.
  golden --out DIR                            small golden checkpoints + JSON.
  cases  [--out FILE]                         the cases as JSON (for C++).

Ranks are separate processes (one `python3 dcp_peer.py _worker JOB` each) that
meet through init_method="file://..." with the gloo backend on CPU. The
launcher waits with a deadline and kills every rank on timeout or shortly
after one rank fails, so nothing hangs.
"""

import argparse
import dataclasses
import io
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from datetime import timedelta
from typing import Any, Dict, List, Optional, Sequence, Tuple

# torch is imported lazily: the launcher itself never needs it.

DEFAULT_TIMEOUT_S = 300.0
# After one rank fails, the others get this long to finish before being killed
# (a rank that failed alone usually leaves the others blocked in a collective).
FAILURE_GRACE_S = 20.0
MAX_DIFFS_PER_KEY = 10

# Layouts of a tensor leaf.
PLAIN = "plain"    # an ordinary torch.Tensor, identical on every rank
ROW = "row"        # DTensor, 1-D mesh over all ranks, [Shard(0)]
COL = "col"        # DTensor, 1-D mesh over all ranks, [Shard(1)]
MESH2D = "mesh2d"  # DTensor, 2x2 mesh [Shard(0), Shard(1)] if world size 4,
                   # otherwise like ROW

DTYPE_NAMES = [
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16",
    "int8", "uint8", "bool", "complex64",
]


# --------------------------------------------------------------------------
# Leaves and cases
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorLeaf:
    dtype: str                 # a name from DTYPE_NAMES
    shape: Tuple[int, ...]
    layout: str = PLAIN


@dataclasses.dataclass(frozen=True)
class ValueLeaf:
    value: Any                 # any picklable non-tensor value


# A case is a list of (path, leaf). The path is what DCP's flattening produces:
# str for a dict key, int for a list index; the FQN is ".".join(map(str, path)).
Case = List[Tuple[Tuple[Any, ...], Any]]


def _t(dtype, shape, layout=PLAIN):
    return TensorLeaf(dtype, tuple(shape), layout)


def _case_dtensor_row() -> Case:
    return [
        (("even",), _t("float32", (8, 4), ROW)),
        (("uneven",), _t("float32", (7, 3), ROW)),
        (("tiny",), _t("float64", (3, 2), ROW)),     # empty shard at 4 ranks
        (("vector",), _t("int64", (10,), ROW)),
        (("bf16",), _t("bfloat16", (9, 2), ROW)),
    ]


def _case_dtensor_col() -> Case:
    return [
        (("even",), _t("float32", (4, 8), COL)),
        (("uneven",), _t("float32", (3, 7), COL)),
        (("tiny",), _t("float64", (2, 3), COL)),     # empty shard at 4 ranks
        (("int32",), _t("int32", (2, 10), COL)),
        (("bf16",), _t("bfloat16", (2, 9), COL)),
        (("cube",), _t("float32", (2, 5, 3), COL)),
    ]


def _case_mesh2d() -> Case:
    return [
        (("grid",), _t("float32", (6, 8), MESH2D)),
        (("uneven",), _t("float32", (5, 7), MESH2D)),
        (("half",), _t("float16", (4, 3), MESH2D)),
        (("thin",), _t("int64", (1, 3), MESH2D)),    # empty shards on 2x2
    ]


def _case_replicated() -> Case:
    return [
        (("weight",), _t("float32", (4, 5))),
        (("bias",), _t("float32", (5,))),
        (("running_mean",), _t("float64", (5,))),
        (("num_batches",), _t("int64", ())),
        (("mask",), _t("bool", (2, 3))),
        (("table",), _t("bfloat16", (3, 4))),
    ]


def _case_mixed() -> Case:
    leaves: Case = [
        (("model", "embed", "weight"), _t("float32", (10, 4), ROW)),
        (("model", "proj", "weight"), _t("bfloat16", (3, 6), COL)),
        (("model", "norm", "weight"), _t("float32", (4,))),
        (("model", "scalar"), _t("float64", ())),
        (("model", "empty"), _t("float32", (0, 3))),
    ]
    for name in DTYPE_NAMES:
        leaves.append((("model", "plain", name), _t(name, (2, 3))))
    for name in DTYPE_NAMES:
        leaves.append((("model", "sharded", name), _t(name, (5, 2), ROW)))
    leaves += [
        (("optim", "state", "0", "exp_avg"), _t("float32", (10, 4), ROW)),
        (("optim", "state", "0", "exp_avg_sq"), _t("float32", (10, 4), ROW)),
        (("optim", "state", "0", "step"), _t("float32", ())),
        (("optim", "state", "1", "exp_avg"), _t("bfloat16", (3, 6), COL)),
        (("optim", "state", "1", "exp_avg_sq"), _t("bfloat16", (3, 6), COL)),
        (("optim", "state", "1", "step"), ValueLeaf(12)),
        (("optim", "param_groups", 0, "lr"), ValueLeaf(0.1)),
        (("optim", "param_groups", 0, "betas"), ValueLeaf((0.9, 0.999))),
        (("optim", "param_groups", 0, "eps"), ValueLeaf(1e-08)),
        (("optim", "param_groups", 0, "weight_decay"), ValueLeaf(0.0)),
        (("optim", "param_groups", 0, "amsgrad"), ValueLeaf(False)),
        (("optim", "param_groups", 0, "params"), ValueLeaf([0, 1])),
        (("extra", "epoch"), ValueLeaf(3)),
        (("extra", "neg"), ValueLeaf(-5)),
        (("extra", "big"), ValueLeaf(2**40 + 7)),
        (("extra", "loss"), ValueLeaf(0.125)),
        (("extra", "done"), ValueLeaf(True)),
        (("extra", "name"), ValueLeaf("run-\u03b1")),
        (("extra", "nothing"), ValueLeaf(None)),
        (("extra", "blob"), ValueLeaf(b"\x00\x01dcp\xff")),
        (("extra", "sizes"), ValueLeaf([1, 2, 3])),
        (("extra", "cfg", "depth"), ValueLeaf(4)),
        (("extra", "cfg", "act"), ValueLeaf("gelu")),
        (("extra", "cfg", "tags"), ValueLeaf(["a", "b"])),
        (("extra", "pair"), ValueLeaf(("warmup", {"steps": 10, "on": True}))),
        (("extra", "mixed_list", 0), _t("float32", (3,))),
        (("extra", "mixed_list", 1), ValueLeaf(5)),
    ]
    return leaves


def _case_large() -> Case:
    # Chunks over 1 MiB: dcp saves them with block checksum files
    # (<data file>.dcpcrc), which PyTorch must ignore.
    return [
        (("weight",), _t("float32", (1536, 512), ROW)),
        (("bias",), _t("float32", (512,))),
    ]


def _case_golden_simple() -> Case:
    return [
        (("tensor_f32",), _t("float32", (2, 3))),
        (("vector_i64",), _t("int64", (4,))),
        (("bf16",), _t("bfloat16", (2, 2))),
        (("f16",), _t("float16", (3,))),
        (("c64",), _t("complex64", (2,))),
        (("scalar",), _t("float32", ())),
        (("empty",), _t("float32", (0,))),
        (("empty2d",), _t("int32", (2, 0))),
        (("mask",), _t("bool", (5,))),
        (("u8",), _t("uint8", (3,))),
        (("step",), ValueLeaf(7)),
        (("lr",), ValueLeaf(0.001)),
        (("name",), ValueLeaf("simple")),
        (("none",), ValueLeaf(None)),
        (("flag",), ValueLeaf(True)),
        (("raw",), ValueLeaf(b"\x00dcp\xff")),
        (("sizes",), ValueLeaf([1, 2, 3])),
        (("pair",), ValueLeaf((1, "two"))),
        (("nested", "inner", "w"), _t("float32", (3,))),
        (("nested", "inner", "count"), ValueLeaf(2)),
        (("nested", "list", 0), _t("int32", (2,))),
        (("nested", "list", 1), ValueLeaf("x")),
    ]


def _case_golden_sharded4() -> Case:
    return [
        (("row",), _t("float32", (6, 4), ROW)),
        (("col",), _t("float32", (4, 6), COL)),
        (("uneven",), _t("float32", (5, 3), ROW)),   # 2,2,1,0 rows at 4 ranks
        (("bias",), _t("float32", (3,))),            # replicated, deduped
        (("step",), ValueLeaf(11)),
    ]


# golden_nonstrided is special: its tensors are views (see _nonstrided_views).
def _case_golden_nonstrided() -> Case:
    return [
        (("transposed",), _t("float32", (4, 3))),
        (("permuted",), _t("int64", (3, 2, 2))),
        (("column",), _t("float32", (4,))),
        (("contiguous",), _t("float32", (2, 3))),
    ]


CASES = {
    "dtensor_row": _case_dtensor_row,
    "dtensor_col": _case_dtensor_col,
    "mesh2d": _case_mesh2d,
    "replicated": _case_replicated,
    "mixed": _case_mixed,
    "large": _case_large,
    # Used by `golden`; also loadable with `load` (nonstrided only values).
    "golden_simple": _case_golden_simple,
    "golden_sharded4": _case_golden_sharded4,
    "golden_nonstrided": _case_golden_nonstrided,
}
PUBLIC_CASES = ["dtensor_row", "dtensor_col", "mesh2d", "replicated", "mixed"]


def fqn_of(path: Sequence[Any]) -> str:
    return ".".join(str(p) for p in path)


# --------------------------------------------------------------------------
# Values: the documented generator (README "Value formulas")
# --------------------------------------------------------------------------

def key_seed(fqn: str) -> int:
    """s = (sum over the FQN's UTF-8 bytes b_j, j = 0.. of (j + 1) * b_j) mod 1000."""
    return sum((j + 1) * b for j, b in enumerate(fqn.encode("utf-8"))) % 1000


def _wrap_signed(x, bits):
    import torch
    half = 1 << (bits - 1)
    return torch.remainder(x + half, 1 << bits) - half


def full_value(fqn: str, dtype_name: str, shape: Sequence[int]):
    """The full (unsharded) tensor of leaf `fqn`; row-major flat index i."""
    import torch
    numel = math.prod(shape)
    g = key_seed(fqn) + torch.arange(numel, dtype=torch.int64)
    if dtype_name in ("float32", "float64"):
        v = (g.double() * 0.5 - 100.0).to(getattr(torch, dtype_name))
    elif dtype_name == "float16":
        v = (torch.remainder(g, 2048).double() * 0.5 - 512.0).to(torch.float16)
    elif dtype_name == "bfloat16":
        v = (torch.remainder(g, 256).double() * 0.5 - 64.0).to(torch.bfloat16)
    elif dtype_name == "complex64":
        v = torch.complex((g.double() * 0.5 - 100.0).float(),
                          (g.double() * -0.25).float())
    elif dtype_name == "int64":
        v = (g - 500) * 4294967311
    elif dtype_name == "int32":
        v = _wrap_signed((g - 500) * 65537, 32).to(torch.int32)
    elif dtype_name == "int16":
        v = _wrap_signed((g - 500) * 257, 16).to(torch.int16)
    elif dtype_name == "int8":
        v = _wrap_signed((g - 500) * 7, 8).to(torch.int8)
    elif dtype_name == "uint8":
        v = torch.remainder(g * 3, 256).to(torch.uint8)
    elif dtype_name == "bool":
        v = torch.remainder(g, 3) == 0
    else:
        raise ValueError(f"unsupported dtype {dtype_name}")
    return v.reshape(tuple(shape))


def perturbed(t):
    """A tensor that differs from `t` in every element (load destinations)."""
    import torch
    if t.dtype == torch.bool:
        return ~t
    return t + 1


# --------------------------------------------------------------------------
# Sharding layouts
# --------------------------------------------------------------------------

def shard_range(size: int, num_chunks: int, index: int) -> Tuple[int, int]:
    """(offset, length) of chunk `index` when torch.chunk splits `size` in
    `num_chunks`: chunk = ceil(size / num_chunks); empty chunks sit at offset
    `size` (DTensor's convention)."""
    if size == 0:
        return 0, 0
    chunk = -(-size // num_chunks)
    start = min(chunk * index, size)
    return start, min(size, start + chunk) - start


def mesh_shape(layout: str, world_size: int) -> Tuple[int, ...]:
    if layout == MESH2D and world_size == 4:
        return (2, 2)
    return (world_size,)


def placement_dims(layout: str, world_size: int) -> List[int]:
    """Tensor dim sharded by each mesh dim."""
    if layout == COL:
        return [1]
    if layout == MESH2D and world_size == 4:
        return [0, 1]
    return [0]


def local_box(layout: str, shape: Sequence[int], rank: int, world_size: int):
    """(offsets, sizes) of `rank`'s local shard of a tensor of `shape`."""
    offsets = [0] * len(shape)
    sizes = list(shape)
    if layout == PLAIN:
        return offsets, sizes
    mshape = mesh_shape(layout, world_size)
    # Row-major coordinate of `rank` in a mesh laid out as arange(world).
    coord = []
    rest = rank
    for extent in reversed(mshape):
        coord.append(rest % extent)
        rest //= extent
    coord.reverse()
    for mesh_dim, tensor_dim in enumerate(placement_dims(layout, world_size)):
        off, length = shard_range(shape[tensor_dim], mshape[mesh_dim], coord[mesh_dim])
        offsets[tensor_dim], sizes[tensor_dim] = off, length
    return offsets, sizes


def box_slices(offsets, sizes):
    return tuple(slice(o, o + s) for o, s in zip(offsets, sizes))


# --------------------------------------------------------------------------
# Building state dicts
# --------------------------------------------------------------------------

def set_path(root: Dict[str, Any], path: Sequence[Any], value: Any) -> None:
    """Like DCP's set_element: creates dicts for str items, lists for ints."""
    cur: Any = root
    for item, nxt in zip(path[:-1], path[1:]):
        empty = [] if isinstance(nxt, int) else {}
        if isinstance(item, int):
            while len(cur) <= item:
                cur.append(None)
            if cur[item] is None:
                cur[item] = empty
            cur = cur[item]
        else:
            cur = cur.setdefault(item, empty)
    last = path[-1]
    if isinstance(last, int):
        while len(cur) <= last:
            cur.append(None)
    cur[last] = value


def get_path(root: Any, path: Sequence[Any]) -> Any:
    cur = root
    for item in path:
        cur = cur[item]
    return cur


def full_state_dict(case: Case) -> Dict[str, Any]:
    """Every leaf as a plain tensor or value (what expected.pt holds)."""
    sd: Dict[str, Any] = {}
    for path, leaf in case:
        if isinstance(leaf, TensorLeaf):
            set_path(sd, path, full_value(fqn_of(path), leaf.dtype, leaf.shape))
        else:
            set_path(sd, path, leaf.value)
    return sd


class Meshes:
    """The device meshes a worker needs, created in the same order on all ranks."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self._meshes: Dict[Tuple[int, ...], Any] = {}

    def get(self, shape: Tuple[int, ...]):
        if shape not in self._meshes:
            import torch
            from torch.distributed.device_mesh import DeviceMesh
            self._meshes[shape] = DeviceMesh(
                "cpu", torch.arange(self.world_size).reshape(shape))
        return self._meshes[shape]


def make_tensor(fqn, leaf: TensorLeaf, rank, world_size, meshes: Optional[Meshes],
                for_load: bool):
    """This rank's object for `leaf`: a plain tensor or a DTensor."""
    import torch
    full = full_value(fqn, leaf.dtype, leaf.shape)
    if leaf.layout == PLAIN:
        return perturbed(full) if for_load else full
    from torch.distributed.tensor import DTensor, Shard
    offsets, sizes = local_box(leaf.layout, leaf.shape, rank, world_size)
    local = full[box_slices(offsets, sizes)].contiguous()
    if for_load:
        local = perturbed(local)
    mshape = mesh_shape(leaf.layout, world_size)
    placements = [Shard(d) for d in placement_dims(leaf.layout, world_size)]
    dt = DTensor.from_local(local, meshes.get(mshape), placements, run_check=False,
                            shape=torch.Size(leaf.shape), stride=full.stride())
    _check_layout_matches_dtensor(fqn, dt, offsets, sizes)
    return dt


def _check_layout_matches_dtensor(fqn, dt, offsets, sizes):
    """Our documented layout must be exactly DTensor's (what DCP writes)."""
    try:
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
    except ImportError:  # a private helper; only a cross-check
        return
    shape, offs = compute_local_shape_and_global_offset(
        dt.shape, dt.device_mesh, dt.placements)
    if list(shape) != list(sizes) or list(offs) != list(offsets):
        raise AssertionError(
            f"{fqn}: documented layout (offsets {offsets}, sizes {sizes}) differs "
            f"from DTensor's (offsets {list(offs)}, sizes {list(shape)})")


def rank_state_dict(case: Case, rank, world_size, meshes, for_load: bool):
    sd: Dict[str, Any] = {}
    for path, leaf in case:
        fqn = fqn_of(path)
        if isinstance(leaf, TensorLeaf):
            obj = make_tensor(fqn, leaf, rank, world_size, meshes, for_load)
        else:
            obj = "<placeholder>" if for_load else leaf.value
        set_path(sd, path, obj)
    return sd


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------

def _fmt(x) -> str:
    if isinstance(x, complex):
        return f"({x.real!r}{x.imag:+}j)"
    return repr(x)


def compare_tensor(fqn, leaf: TensorLeaf, got, rank, world_size) -> List[str]:
    import torch
    from torch.distributed.tensor import DTensor
    full = full_value(fqn, leaf.dtype, leaf.shape)
    if leaf.layout == PLAIN:
        if not isinstance(got, torch.Tensor) or isinstance(got, DTensor):
            return [f"{fqn}: expected a plain tensor, got {type(got).__name__}"]
        local, offsets, sizes = got, [0] * full.dim(), list(full.shape)
    else:
        if not isinstance(got, DTensor):
            return [f"{fqn}: expected a DTensor, got {type(got).__name__}"]
        local = got.to_local()
        offsets, sizes = local_box(leaf.layout, leaf.shape, rank, world_size)
    if local.dtype != full.dtype:
        return [f"{fqn}: dtype {local.dtype}, expected {full.dtype}"]
    if list(local.shape) != list(sizes):
        return [f"{fqn}: local shape {list(local.shape)}, expected {sizes}"]
    want = full[box_slices(offsets, sizes)]
    if torch.equal(local, want):
        return []
    bad = (local != want).nonzero().tolist()
    lines = [f"{fqn}: {len(bad)} of {want.numel()} elements differ on rank {rank}"]
    for idx in bad[:MAX_DIFFS_PER_KEY]:
        gidx = [i + o for i, o in zip(idx, offsets)]
        lines.append(f"  {fqn} index {gidx}: expected {_fmt(want[tuple(idx)].item())}, "
                     f"got {_fmt(local[tuple(idx)].item())}")
    return lines


def _same_value(a, b) -> bool:
    """Equality that also requires equal types (so (1,) != [1], 1 != 1.0, 1 != True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return (list(a.keys()) == list(b.keys())
                and all(_same_value(a[k], b[k]) for k in a))
    return a == b


def compare_state_dict(case: Case, sd, rank, world_size) -> List[str]:
    diffs: List[str] = []
    for path, leaf in case:
        fqn = fqn_of(path)
        try:
            got = get_path(sd, path)
        except (KeyError, IndexError, TypeError):
            diffs.append(f"{fqn}: missing from the loaded state dict")
            continue
        if isinstance(leaf, TensorLeaf):
            diffs += compare_tensor(fqn, leaf, got, rank, world_size)
        elif not _same_value(leaf.value, got):
            diffs.append(f"{fqn}: expected {leaf.value!r} ({type(leaf.value).__name__}), "
                         f"got {got!r} ({type(got).__name__})")
    return diffs


def check_metadata(case: Case, ckpt_dir: str, check_planner_data: bool) -> List[str]:
    """Checks the checkpoint's .metadata against the case: key set, dtypes,
    global sizes, chunk coverage and (optionally) planner_data paths. DCP's
    load itself does not check dtypes (copy_ casts silently)."""
    import torch
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import (BytesStorageMetadata,
                                                       TensorStorageMetadata)
    md = FileSystemReader(ckpt_dir).read_metadata()
    problems: List[str] = []
    expected = {fqn_of(p): (p, leaf) for p, leaf in case}
    for fqn in md.state_dict_metadata:
        if fqn not in expected:
            problems.append(f"metadata: unexpected key {fqn!r}")
    for fqn, (path, leaf) in expected.items():
        entry = md.state_dict_metadata.get(fqn)
        if entry is None:
            problems.append(f"metadata: key {fqn!r} is missing")
            continue
        if isinstance(leaf, TensorLeaf):
            if not isinstance(entry, TensorStorageMetadata):
                problems.append(f"metadata: {fqn} is {type(entry).__name__}, expected "
                                "TensorStorageMetadata")
                continue
            want_dtype = getattr(torch, leaf.dtype)
            if entry.properties.dtype != want_dtype:
                problems.append(f"metadata: {fqn} dtype {entry.properties.dtype}, "
                                f"expected {want_dtype}")
            if list(entry.size) != list(leaf.shape):
                problems.append(f"metadata: {fqn} size {list(entry.size)}, expected "
                                f"{list(leaf.shape)}")
            volume = sum(math.prod(c.sizes) for c in entry.chunks)
            if volume != math.prod(leaf.shape):
                problems.append(f"metadata: {fqn} chunks cover {volume} elements, "
                                f"expected {math.prod(leaf.shape)}")
            for c in entry.chunks:
                if any(o < 0 or s < 0 or o + s > d
                       for o, s, d in zip(c.offsets, c.sizes, leaf.shape)):
                    problems.append(f"metadata: {fqn} chunk offsets {list(c.offsets)} "
                                    f"sizes {list(c.sizes)} out of bounds")
        elif not isinstance(entry, BytesStorageMetadata):
            problems.append(f"metadata: {fqn} is {type(entry).__name__}, expected "
                            "BytesStorageMetadata")
        if check_planner_data:
            pd = md.planner_data if isinstance(md.planner_data, dict) else None
            if pd is None:
                problems.append("metadata: planner_data is not a dict")
                check_planner_data = False
            elif not isinstance(pd.get(fqn), tuple) or pd[fqn] != tuple(path):
                problems.append(f"metadata: planner_data[{fqn!r}] is {pd.get(fqn)!r}, "
                                f"expected {tuple(path)!r}")
    return problems


# --------------------------------------------------------------------------
# Worker (one rank)
# --------------------------------------------------------------------------

def _patch_error_propagation():
    """Works around torch 2.6 on Python 3.13 losing DCP errors.

    DCP sends a failing rank's (exception, StackSummary) to the coordinator
    with pickle, and on CPython 3.13 a FrameSummary holds its code object, which
    cannot be pickled: the real error becomes "TypeError: cannot pickle code
    objects" (and the job hangs if only some ranks failed). Upstream fixed this
    by clearing FrameSummary._code (pytorch#174669, PR #177754); this does the
    same. It changes error reporting only, nothing that reaches the disk.
    """
    import traceback as tb
    import torch.distributed.checkpoint.utils as dcp_utils

    def wrap_exception(exc):
        summary = tb.extract_tb(exc.__traceback__)
        for frame in summary:
            if hasattr(frame, "_code"):
                frame._code = None
        return (exc, summary)

    dcp_utils._wrap_exception = wrap_exception


def _log(rank, msg):
    print(f"rank {rank}: {msg}", flush=True)


def worker_main(job: Dict[str, Any]) -> int:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    # Noise from DCP 2.6's own filesystem.py (tensor.storage() is deprecated).
    warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
    _patch_error_propagation()
    rank, world = job["rank"], job["world_size"]
    if job.get("cwd"):
        os.chdir(job["cwd"])
    dist.init_process_group("gloo", init_method=job["init_method"], rank=rank,
                            world_size=world,
                            timeout=timedelta(seconds=job["timeout"]))
    case = CASES[job["case"]]()
    meshes = Meshes(world)
    ckpt = job["dir"]
    status = 0
    # Test hook for the launcher itself: this rank fails alone, the others
    # block in DCP's first collective, and the launcher must still end.
    if os.environ.get("DCP_PEER_TEST_FAIL_RANK") == str(rank):
        raise RuntimeError("failure injected by DCP_PEER_TEST_FAIL_RANK")
    if job["action"] == "save":
        sd = rank_state_dict(case, rank, world, meshes, for_load=False)
        dcp.save(sd, checkpoint_id=ckpt)
        dist.barrier()
        if rank == 0 and job.get("write_expected", True):
            torch.save(full_state_dict(case), os.path.join(ckpt, "expected.pt"))
        _log(rank, f"saved case {job['case']} to {ckpt}")
    elif job["action"] == "load":
        sd = rank_state_dict(case, rank, world, meshes, for_load=True)
        dcp.load(sd, checkpoint_id=ckpt)
        dist.barrier()
        diffs = compare_state_dict(case, sd, rank, world)
        if rank == 0:
            diffs += check_metadata(case, ckpt, job.get("check_planner_data", True))
        for line in diffs:
            _log(rank, "DIFF " + line)
        if diffs:
            status = 1
        else:
            _log(rank, f"loaded case {job['case']} from {ckpt}: all "
                       f"{len(case)} leaves equal")
    else:
        raise ValueError(f"unknown action {job['action']}")
    # No dist.destroy_process_group(): with gloo in torch 2.6 it hangs now and
    # then in the backend's shutdown (seen in about one run in three). Every
    # collective is over after the barrier above, and worker_entry ends the
    # process with os._exit.
    return status


def worker_entry(job_json: str) -> None:
    import faulthandler
    # The launcher sends SIGUSR1 before killing a rank that hangs: the rank's
    # Python stacks then show in its log.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    job = json.loads(job_json)
    try:
        status = worker_main(job)
    except BaseException:  # noqa: B902 - report anything, never hang
        _log(job.get("rank"), "FAILED\n" + traceback.format_exc())
        sys.stdout.flush()
        sys.stderr.flush()
        # No clean shutdown: the other ranks may be blocked in a collective.
        os._exit(1)
    sys.stdout.flush()
    os._exit(status)


# --------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------

_NOISE = ("UCX  ERROR failed to get boot id", "UCX ERROR failed to get boot id")


def run_ranks(script: str, world_size: int, make_job, timeout: float,
              prefix: str = "dcp_peer_", collect=None) -> List[Optional[int]]:
    """The launcher of dcp_peer.py, train_peer.py and dcp_peer_bench.py.

    Starts `python3 SCRIPT _worker JOB` for each rank, JOB being
    make_job(rank, rendezvous) as JSON (`rendezvous` is a fresh directory
    for the init file and anything the ranks leave there), each rank in its
    own session with its output in a log. Waits with `timeout` (_wait_all),
    kills what is left, prints every rank's log prefixed "[rank r]", calls
    collect(rendezvous) before removing that directory, and returns the
    ranks' exit codes (fewer than world_size if starting one failed)."""
    rendezvous = tempfile.mkdtemp(prefix=prefix)
    procs: List[subprocess.Popen] = []
    logs = []
    codes: List[Optional[int]] = []
    try:
        for rank in range(world_size):
            job = make_job(rank, rendezvous)
            log = open(os.path.join(rendezvous, f"rank{rank}.log"), "w+b")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(script), "_worker", json.dumps(job)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        codes = _wait_all(procs, timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                _kill(p)
        for rank, log in enumerate(logs):
            log.flush()
            log.seek(0)
            for line in log.read().decode("utf-8", "replace").splitlines():
                if line.strip() and not any(n in line for n in _NOISE):
                    print(f"[rank {rank}] {line}")
            log.close()
        sys.stdout.flush()
        if collect is not None:
            collect(rendezvous)
        shutil.rmtree(rendezvous, ignore_errors=True)
    return codes


def launch(action: str, ckpt_dir: str, world_size: int, case: str,
           timeout: float, extra: Optional[Dict[str, Any]] = None) -> int:
    """Runs `world_size` worker processes; returns 0 iff all ranks exit 0."""
    if world_size < 1:
        raise SystemExit("--world-size must be at least 1")
    if case not in CASES:
        raise SystemExit(f"unknown case {case!r}; known: {', '.join(CASES)}")

    def make_job(rank, rendezvous):
        job = {
            "action": action, "dir": ckpt_dir, "case": case, "rank": rank,
            "world_size": world_size, "timeout": timeout,
            "init_method": "file://" + os.path.join(rendezvous, "init"),
        }
        job.update(extra or {})
        return job

    codes = run_ranks(__file__, world_size, make_job, timeout)
    failed = {r: c for r, c in enumerate(codes) if c != 0}
    if failed or len(codes) != world_size:
        print(f"dcp_peer: {action} {case} with {world_size} ranks FAILED: "
              + ", ".join(f"rank {r} {_describe_code(c)}" for r, c in failed.items()))
        return 1
    print(f"dcp_peer: {action} {case} with {world_size} ranks OK")
    return 0


def _describe_code(code) -> str:
    if code is None:
        return "killed (timeout or another rank failed)"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exited with {code}"


def _kill(p: subprocess.Popen) -> None:
    """SIGUSR1 (stack dump, see worker_entry), then SIGKILL to the rank's group."""
    for sig in (signal.SIGUSR1, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            break
        if sig == signal.SIGUSR1:
            try:
                p.wait(timeout=2)
                break
            except subprocess.TimeoutExpired:
                pass
    p.wait()


def _wait_all(procs, timeout) -> List[Optional[int]]:
    """Waits for all; kills the rest at the deadline or FAILURE_GRACE_S after
    the first failure. A killed rank's code is None."""
    deadline = time.monotonic() + timeout
    killed = []
    while any(p.poll() is None for p in procs):
        now = time.monotonic()
        if any(p.poll() not in (None, 0) for p in procs):
            deadline = min(deadline, now + FAILURE_GRACE_S)
        if now >= deadline:
            killed = [i for i, p in enumerate(procs) if p.poll() is None]
            for i in killed:
                _kill(procs[i])
            print(f"dcp_peer: killed ranks {killed} that were still running at the deadline")
            break
        time.sleep(0.05)
    return [None if i in killed else p.returncode for i, p in enumerate(procs)]


# --------------------------------------------------------------------------
# Golden checkpoints
# --------------------------------------------------------------------------

def _nonstrided_views():
    """golden_nonstrided's tensors, built as views whose values equal
    full_value(): DCP 2.6 saves a view with its strides when its storage holds
    exactly its elements, and compacts (clones) it otherwise."""
    import torch
    case = dict((fqn_of(p), leaf) for p, leaf in _case_golden_nonstrided())
    out = {}
    # transposed: a (3,4) contiguous tensor, transposed to (4,3), strides (1,4).
    want = full_value("transposed", "float32", case["transposed"].shape)
    out["transposed"] = want.t().contiguous().t()
    # permuted: (2,2,3) contiguous permuted to (3,2,2), strides (1,6,3).
    want = full_value("permuted", "int64", case["permuted"].shape)
    out["permuted"] = want.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    # column: column 1 of a (4,3) tensor: a strided view of a larger storage.
    want = full_value("column", "float32", case["column"].shape)
    base = torch.zeros(4, 3, dtype=torch.float32)
    base[:, 1] = want
    out["column"] = base[:, 1]
    out["contiguous"] = full_value("contiguous", "float32", case["contiguous"].shape)
    for fqn, t in out.items():
        assert torch.equal(t, full_value(fqn, case[fqn].dtype, case[fqn].shape)), fqn
    return out


def _json_value(v):
    """JSON encoding of a non-tensor value (README "Golden JSON")."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, bytes):
        return {"$bytes": v.hex()}
    if isinstance(v, tuple):
        return {"$tuple": [_json_value(x) for x in v]}
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {"$dict": [[_json_value(k), _json_value(x)] for k, x in v.items()]}
    raise TypeError(f"no JSON encoding for {type(v).__name__}")


def _json_tensor_values(t):
    import torch
    flat = t.reshape(-1)
    if t.dtype.is_complex:
        return [[float(z.real), float(z.imag)] for z in flat.tolist()]
    if t.dtype in (torch.float16, torch.bfloat16):
        return flat.float().tolist()
    return flat.tolist()


def describe_checkpoint(name: str, ckpt_dir: str, case: Case, world_size: int,
                        command: str) -> Dict[str, Any]:
    """Everything a C++ test may check, read back from the checkpoint itself."""
    import torch
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    md = FileSystemReader(ckpt_dir).read_metadata()
    storage = {}
    for index, info in md.storage_data.items():
        storage[(index.fqn, None if index.offset is None else tuple(index.offset))] = info

    def record(fqn, offsets):
        info = storage[(fqn, offsets)]
        return {"file": info.relative_path, "offset": info.offset, "length": info.length}

    entries = []
    for path, leaf in case:
        fqn = fqn_of(path)
        entry = md.state_dict_metadata[fqn]
        e: Dict[str, Any] = {"fqn": fqn, "path": list(path)}
        if isinstance(leaf, TensorLeaf):
            assert isinstance(entry, TensorStorageMetadata), fqn
            full = full_value(fqn, leaf.dtype, leaf.shape)
            e.update(kind="tensor", dtype=leaf.dtype, shape=list(leaf.shape),
                     requires_grad=entry.properties.requires_grad,
                     values=_json_tensor_values(full), chunks=[])
            for chunk in entry.chunks:
                c = {"offsets": list(chunk.offsets), "sizes": list(chunk.sizes)}
                c.update(record(fqn, tuple(chunk.offsets)))
                with open(os.path.join(ckpt_dir, c["file"]), "rb") as f:
                    f.seek(c["offset"])
                    saved = torch.load(io.BytesIO(f.read(c["length"])),
                                       map_location="cpu", weights_only=True)
                c["saved_stride"] = list(saved.stride())
                c["saved_storage_offset"] = saved.storage_offset()
                c["saved_storage_numel"] = saved.untyped_storage().nbytes() // saved.element_size()
                e["chunks"].append(c)
        else:
            e.update(kind="bytes", python_type=type(leaf.value).__name__,
                     value=_json_value(leaf.value))
            e.update(record(fqn, None))
        entries.append(e)
    files = sorted(os.listdir(ckpt_dir))
    return {
        "name": name,
        "generator": command,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "world_size": world_size,
        "checkpoint_id": str(md.storage_meta.checkpoint_id),
        "checkpoint_id_type": type(md.storage_meta.checkpoint_id).__module__ + "."
                              + type(md.storage_meta.checkpoint_id).__name__,
        "files": {f: os.path.getsize(os.path.join(ckpt_dir, f)) for f in files},
        "planner_data": {k: list(v) for k, v in (md.planner_data or {}).items()},
        "entries": entries,
    }


def _json_text(obj, indent=0) -> str:
    """JSON with one key per line but every list of scalars on a single line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_json_text(v, indent + 1)}"
                 for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(x, (dict, list)) for x in obj):
        if all(isinstance(x, list) and not any(isinstance(y, (dict, list)) for y in x)
               for x in obj):  # e.g. complex [re, im] pairs
            return json.dumps(obj, ensure_ascii=False)
        return ("[\n" + ",\n".join(inner + _json_text(x, indent + 1) for x in obj)
                + "\n" + pad + "]")
    return json.dumps(obj, ensure_ascii=False)


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        f.write(_json_text(obj))
        f.write("\n")


def golden_main(out: str, timeout: float) -> int:
    import torch.distributed.checkpoint as dcp
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    command = "python3 tools/peer/dcp_peer.py golden --out testdata/pytorch_golden"
    for name in ("simple", "sharded4", "nonstrided"):
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    # checkpoint_id is relative to `out`, so no host path lands in .metadata.
    os.chdir(out)
    warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
    warnings.filterwarnings("ignore", message=".*assuming the intent is to save in a single process.*")
    warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")

    # simple: one process, no process group (DCP's no-dist mode).
    simple = _case_golden_simple()
    dcp.save(full_state_dict(simple), checkpoint_id="simple")
    _write_json("simple.json", describe_checkpoint("simple", "simple", simple, 1, command))

    # nonstrided: views saved as they are.
    ns = _case_golden_nonstrided()
    dcp.save(_nonstrided_views(), checkpoint_id="nonstrided")
    _write_json("nonstrided.json",
                describe_checkpoint("nonstrided", "nonstrided", ns, 1, command))

    # sharded4: four ranks.
    rc = launch("save", "sharded4", 4, "golden_sharded4", timeout,
                {"cwd": out, "write_expected": False})
    if rc != 0:
        return rc
    _write_json("sharded4.json", describe_checkpoint(
        "sharded4", "sharded4", _case_golden_sharded4(), 4, command))

    # Round trip in PyTorch itself, so a broken golden is caught here.
    for name, case in (("simple", simple), ("nonstrided", ns)):
        sd = rank_state_dict(case, 0, 1, None, for_load=True)
        dcp.load(sd, checkpoint_id=name)
        diffs = compare_state_dict(case, sd, 0, 1) + check_metadata(case, name, True)
        if diffs:
            print("\n".join(diffs))
            return 1
    _write_json("cases.json", cases_json())
    for name, size in sorted(_sizes(out).items()):
        print(f"golden: {name} {size} bytes")
    return launch("load", "sharded4", 3, "golden_sharded4", timeout, {"cwd": out})


def _sizes(root):
    sizes = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            sizes[os.path.relpath(p, root)] = os.path.getsize(p)
    return sizes


# --------------------------------------------------------------------------
# Case descriptions for C++
# --------------------------------------------------------------------------

def cases_json() -> Dict[str, Any]:
    out: Dict[str, Any] = {"layouts": {
        PLAIN: "plain tensor, identical on every rank",
        ROW: "DTensor on the 1-D mesh arange(world), placements [Shard(0)]",
        COL: "DTensor on the 1-D mesh arange(world), placements [Shard(1)]",
        MESH2D: "DTensor; world 4: mesh arange(4).reshape(2,2), [Shard(0), Shard(1)];"
                " other worlds: like row",
    }, "cases": {}}
    for name in PUBLIC_CASES:
        leaves = []
        for path, leaf in CASES[name]():
            fqn = fqn_of(path)
            d: Dict[str, Any] = {"fqn": fqn, "path": list(path)}
            if isinstance(leaf, TensorLeaf):
                d.update(kind="tensor", dtype=leaf.dtype, shape=list(leaf.shape),
                         layout=leaf.layout, seed=key_seed(fqn))
            else:
                d.update(kind="bytes", python_type=type(leaf.value).__name__,
                         value=_json_value(leaf.value))
            leaves.append(d)
        out["cases"][name] = leaves
    # A few generator outputs so a C++ generator can be unit-tested on its own.
    vectors = []
    for dtype in DTYPE_NAMES:
        fqn = f"model.sharded.{dtype}"
        vectors.append({"fqn": fqn, "dtype": dtype, "shape": [5, 2], "seed": key_seed(fqn),
                        "values": _json_tensor_values(full_value(fqn, dtype, (5, 2)))})
    out["generator_vectors"] = vectors
    return out


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def main(argv: Sequence[str]) -> int:
    if len(argv) >= 1 and argv[0] == "_worker":
        worker_entry(argv[1])
        return 0  # not reached
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for action in ("save", "load"):
        p = sub.add_parser(action)
        p.add_argument("--dir", required=True, help="checkpoint directory")
        p.add_argument("--world-size", type=int, required=True)
        p.add_argument("--case", required=True, choices=sorted(CASES))
        p.add_argument("--timeout", type=float, default=float(
            os.environ.get("DCP_PEER_TIMEOUT", DEFAULT_TIMEOUT_S)))
        if action == "load":
            p.add_argument("--skip-planner-data-check", action="store_true",
                           help="do not require planner_data[fqn] == path tuple")
    p = sub.add_parser("golden")
    p.add_argument("--out", required=True)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    p = sub.add_parser("cases")
    p.add_argument("--out", help="write here instead of stdout")
    args = parser.parse_args(argv)

    os.environ.setdefault("USE_LIBUV", "0")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if args.command in ("save", "load"):
        extra = {}
        if args.command == "load":
            extra["check_planner_data"] = not args.skip_planner_data_check
        return launch(args.command, os.path.abspath(args.dir), args.world_size,
                      args.case, args.timeout, extra)
    if args.command == "golden":
        return golden_main(args.out, args.timeout)
    if args.command == "cases":
        if args.out:
            _write_json(args.out, cases_json())
        else:
            print(_json_text(cases_json()))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
