"""Writes `.metadata` pickles as CPython's pickler writes them for PyTorch
2.6 DCP, without PyTorch: stand-in classes with the module paths, field order,
__getstate__ and __reduce__ behaviour of torch 2.6 (docs/format.md §1.3,
§4) are pickled with pickle.DEFAULT_PROTOCOL (4). Python 3.13's pathlib is
imitated by a `pathlib._local.PosixPath` that reduces to its raw string.

Run: python3 make_fake_torch_metadata.py   (any CPython >= 3.8)
Outputs:
  fake_torch26_py313_small.metadata  {"w": float32 [2,3], "step": bytes}
  fake_torch26_py313_large.metadata  120 tensors x 4 chunks: several FRAMEs
                                     and LONG_BINGET memo references
"""
import dataclasses
import enum
import pickle
import sys
import types
from typing import Any, Dict, List, Optional


def module(name):
    m = types.ModuleType(name)
    sys.modules[name] = m
    return m


torch = module("torch")
serialization = module("torch.serialization")
md = module("torch.distributed.checkpoint.metadata")
fs = module("torch.distributed.checkpoint.filesystem")
pathlib_local = module("pathlib._local")


def place(obj, mod, name):
    obj.__module__ = mod.__name__
    obj.__qualname__ = name
    obj.__name__ = name
    setattr(mod, name, obj)
    return obj


class dtype:
    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return self.name  # Pickled as the global torch.<name>.


dtype.__module__ = "torch"
for name in ("float32", "bfloat16", "int64"):
    setattr(torch, name, dtype(name))


class Size(tuple):
    def __reduce__(self):
        return (Size, (tuple(self),))


place(Size, torch, "Size")


def _get_layout(name):
    return strided


place(_get_layout, serialization, "_get_layout")


class layout:
    def __reduce__(self):
        return (_get_layout, ("torch.strided",))


strided = layout()


class _MEM_FORMAT_ENCODING(enum.Enum):
    TORCH_CONTIGUOUS_FORMAT = 0
    TORCH_CHANNELS_LAST = 1
    TORCH_PRESERVE_FORMAT = 2


place(_MEM_FORMAT_ENCODING, md, "_MEM_FORMAT_ENCODING")


@dataclasses.dataclass
class ChunkStorageMetadata:
    offsets: Size
    sizes: Size


@dataclasses.dataclass
class TensorProperties:
    dtype: Any = None
    layout: Any = strided
    requires_grad: bool = False
    memory_format: Any = 0
    pin_memory: bool = False

    def __getstate__(self):
        return (self.dtype, self.layout, self.requires_grad,
                _MEM_FORMAT_ENCODING(self.memory_format), self.pin_memory)

    def __setstate__(self, state):
        (self.dtype, self.layout, self.requires_grad, memory_format,
         self.pin_memory) = state
        self.memory_format = memory_format.value


@dataclasses.dataclass
class TensorStorageMetadata:
    properties: TensorProperties
    size: Size
    chunks: List[ChunkStorageMetadata]


@dataclasses.dataclass
class BytesStorageMetadata:
    pass


@dataclasses.dataclass
class StorageMeta:
    checkpoint_id: Any = None
    save_id: Optional[str] = None
    load_id: Optional[str] = None


@dataclasses.dataclass
class Metadata:
    state_dict_metadata: Dict[str, Any]
    planner_data: Any = None
    storage_data: Any = None
    storage_meta: Optional[StorageMeta] = None


@dataclasses.dataclass(frozen=True)
class MetadataIndex:
    fqn: str
    offset: Optional[Size] = None
    index: Optional[int] = dataclasses.field(hash=False, compare=False,
                                             default=None)

    def __init__(self, fqn, offset=None, index=None):
        object.__setattr__(self, "fqn", fqn)
        object.__setattr__(self, "index", index)
        if offset is not None:
            object.__setattr__(self, "offset", Size(offset))


for cls in (ChunkStorageMetadata, TensorProperties, TensorStorageMetadata,
            BytesStorageMetadata, StorageMeta, Metadata, MetadataIndex):
    place(cls, md, cls.__name__)


@dataclasses.dataclass
class _StorageInfo:
    relative_path: str
    offset: int
    length: int


place(_StorageInfo, fs, "_StorageInfo")


class PosixPath:
    def __init__(self, raw):
        self.raw = raw

    def __reduce__(self):
        return (PosixPath, (self.raw,))


place(PosixPath, pathlib_local, "PosixPath")

SAVE_ID = "2f5b6b1e-8c47-4c41-9d8e-3e4f3b6f0a11"


def small():
    w = TensorStorageMetadata(
        TensorProperties(torch.float32), Size((2, 3)),
        [ChunkStorageMetadata(Size((0, 0)), Size((2, 3)))])
    return Metadata(
        state_dict_metadata={"w": w, "step": BytesStorageMetadata()},
        planner_data={"w": ("w",), "step": ("step",)},
        storage_data={
            MetadataIndex("step"): _StorageInfo("__0_0.distcp", 0, 864),
            MetadataIndex("w", (0, 0), 0): _StorageInfo("__0_0.distcp", 864,
                                                        1180),
        },
        storage_meta=StorageMeta(PosixPath("/root/exp/ck1"), SAVE_ID, None))


def large():
    sdm, planner, storage = {}, {}, {}
    offset = 0
    for t in range(120):
        fqn = f"model.layers.{t}.weight"
        chunks = [ChunkStorageMetadata(Size((r * 4, 0)), Size((4, 16)))
                  for r in range(4)]
        sdm[fqn] = TensorStorageMetadata(
            TensorProperties(torch.bfloat16 if t % 2 else torch.float32,
                             requires_grad=True),
            Size((16, 16)), chunks)
        planner[fqn] = ("model", "layers", t, "weight")
        for r, chunk in enumerate(chunks):
            storage[MetadataIndex(fqn, chunk.offsets, r)] = _StorageInfo(
                f"__{r}_0.distcp", offset + (1 << 31), 1180)
        offset += 1180
    return Metadata(sdm, planner, storage,
                    StorageMeta(PosixPath("ck4"), SAVE_ID, None))


for name, value in (("small", small()), ("large", large())):
    path = f"fake_torch26_py313_{name}.metadata"
    with open(path, "wb") as f:
        pickle.dump(value, f, protocol=4)
    print(path)
