#include "testing/peer_cases.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "c10/util/BFloat16.h"
#include "c10/util/Half.h"
#include "c10/util/complex.h"
#include "core/sharding.h"
#include "core/status.h"
#include "core/torch_status.h"
#include "planner/flatten.h"

namespace dcp::test {
namespace {

using c10::ScalarType;

constexpr absl::string_view kPlaceholderString = "<placeholder>";

// ---- Case definitions (dcp_peer.py's _case_* functions) ---------------------

PeerLeaf TensorLeaf(ObjectPath path, ScalarType dtype, Shape shape,
                    PeerLayout layout = PeerLayout::kPlain) {
  PeerLeaf leaf;
  leaf.fqn = FqnOf(path);
  leaf.path = std::move(path);
  leaf.is_tensor = true;
  leaf.dtype = dtype;
  leaf.shape = std::move(shape);
  leaf.layout = layout;
  return leaf;
}

PeerLeaf ValueLeaf(ObjectPath path, Value value) {
  PeerLeaf leaf;
  leaf.fqn = FqnOf(path);
  leaf.path = std::move(path);
  leaf.value = std::move(value);
  return leaf;
}

// A path from string keys and int64 list indices.
PathElement K(const char* key) { return std::string(key); }
PathElement I(int64_t index) { return index; }

// dcp_peer.py's DTYPE_NAMES, in its order.
const std::vector<std::pair<const char*, ScalarType>>& PeerDtypes() {
  static const auto* const kDtypes =
      new std::vector<std::pair<const char*, ScalarType>>{
          {"float32", ScalarType::Float},     {"float64", ScalarType::Double},
          {"float16", ScalarType::Half},      {"bfloat16", ScalarType::BFloat16},
          {"int64", ScalarType::Long},        {"int32", ScalarType::Int},
          {"int16", ScalarType::Short},       {"int8", ScalarType::Char},
          {"uint8", ScalarType::Byte},        {"bool", ScalarType::Bool},
          {"complex64", ScalarType::ComplexFloat},
      };
  return *kDtypes;
}

std::vector<PeerLeaf> CaseDtensorRow() {
  const PeerLayout row = PeerLayout::kRow;
  return {
      TensorLeaf({K("even")}, ScalarType::Float, {8, 4}, row),
      TensorLeaf({K("uneven")}, ScalarType::Float, {7, 3}, row),
      TensorLeaf({K("tiny")}, ScalarType::Double, {3, 2}, row),
      TensorLeaf({K("vector")}, ScalarType::Long, {10}, row),
      TensorLeaf({K("bf16")}, ScalarType::BFloat16, {9, 2}, row),
  };
}

std::vector<PeerLeaf> CaseDtensorCol() {
  const PeerLayout col = PeerLayout::kCol;
  return {
      TensorLeaf({K("even")}, ScalarType::Float, {4, 8}, col),
      TensorLeaf({K("uneven")}, ScalarType::Float, {3, 7}, col),
      TensorLeaf({K("tiny")}, ScalarType::Double, {2, 3}, col),
      TensorLeaf({K("int32")}, ScalarType::Int, {2, 10}, col),
      TensorLeaf({K("bf16")}, ScalarType::BFloat16, {2, 9}, col),
      TensorLeaf({K("cube")}, ScalarType::Float, {2, 5, 3}, col),
  };
}

std::vector<PeerLeaf> CaseMesh2D() {
  const PeerLayout mesh = PeerLayout::kMesh2D;
  return {
      TensorLeaf({K("grid")}, ScalarType::Float, {6, 8}, mesh),
      TensorLeaf({K("uneven")}, ScalarType::Float, {5, 7}, mesh),
      TensorLeaf({K("half")}, ScalarType::Half, {4, 3}, mesh),
      TensorLeaf({K("thin")}, ScalarType::Long, {1, 3}, mesh),
  };
}

std::vector<PeerLeaf> CaseReplicated() {
  return {
      TensorLeaf({K("weight")}, ScalarType::Float, {4, 5}),
      TensorLeaf({K("bias")}, ScalarType::Float, {5}),
      TensorLeaf({K("running_mean")}, ScalarType::Double, {5}),
      TensorLeaf({K("num_batches")}, ScalarType::Long, {}),
      TensorLeaf({K("mask")}, ScalarType::Bool, {2, 3}),
      TensorLeaf({K("table")}, ScalarType::BFloat16, {3, 4}),
  };
}

std::vector<PeerLeaf> CaseMixed() {
  const PeerLayout row = PeerLayout::kRow;
  const PeerLayout col = PeerLayout::kCol;
  std::vector<PeerLeaf> leaves = {
      TensorLeaf({K("model"), K("embed"), K("weight")}, ScalarType::Float,
                 {10, 4}, row),
      TensorLeaf({K("model"), K("proj"), K("weight")}, ScalarType::BFloat16,
                 {3, 6}, col),
      TensorLeaf({K("model"), K("norm"), K("weight")}, ScalarType::Float, {4}),
      TensorLeaf({K("model"), K("scalar")}, ScalarType::Double, {}),
      TensorLeaf({K("model"), K("empty")}, ScalarType::Float, {0, 3}),
  };
  for (const auto& [name, dtype] : PeerDtypes()) {
    leaves.push_back(
        TensorLeaf({K("model"), K("plain"), K(name)}, dtype, {2, 3}));
  }
  for (const auto& [name, dtype] : PeerDtypes()) {
    leaves.push_back(
        TensorLeaf({K("model"), K("sharded"), K(name)}, dtype, {5, 2}, row));
  }
  StateDict pair_dict;
  pair_dict.Set("steps", 10);
  pair_dict.Set("on", true);
  const int64_t big = (int64_t{1} << 40) + 7;
  std::vector<PeerLeaf> rest = {
      TensorLeaf({K("optim"), K("state"), K("0"), K("exp_avg")},
                 ScalarType::Float, {10, 4}, row),
      TensorLeaf({K("optim"), K("state"), K("0"), K("exp_avg_sq")},
                 ScalarType::Float, {10, 4}, row),
      TensorLeaf({K("optim"), K("state"), K("0"), K("step")}, ScalarType::Float,
                 {}),
      TensorLeaf({K("optim"), K("state"), K("1"), K("exp_avg")},
                 ScalarType::BFloat16, {3, 6}, col),
      TensorLeaf({K("optim"), K("state"), K("1"), K("exp_avg_sq")},
                 ScalarType::BFloat16, {3, 6}, col),
      ValueLeaf({K("optim"), K("state"), K("1"), K("step")}, 12),
      ValueLeaf({K("optim"), K("param_groups"), I(0), K("lr")}, 0.1),
      ValueLeaf({K("optim"), K("param_groups"), I(0), K("betas")},
                Tuple{{0.9, 0.999}}),
      ValueLeaf({K("optim"), K("param_groups"), I(0), K("eps")}, 1e-08),
      ValueLeaf({K("optim"), K("param_groups"), I(0), K("weight_decay")}, 0.0),
      ValueLeaf({K("optim"), K("param_groups"), I(0), K("amsgrad")}, false),
      ValueLeaf({K("optim"), K("param_groups"), I(0), K("params")}, List{0, 1}),
      ValueLeaf({K("extra"), K("epoch")}, 3),
      ValueLeaf({K("extra"), K("neg")}, -5),
      ValueLeaf({K("extra"), K("big")}, big),
      ValueLeaf({K("extra"), K("loss")}, 0.125),
      ValueLeaf({K("extra"), K("done")}, true),
      ValueLeaf({K("extra"), K("name")}, "run-\xce\xb1"),  // "run-α"
      ValueLeaf({K("extra"), K("nothing")}, None{}),
      ValueLeaf({K("extra"), K("blob")}, Bytes{std::string("\x00\x01"
                                                           "dcp\xff",
                                                           6)}),
      ValueLeaf({K("extra"), K("sizes")}, List{1, 2, 3}),
      ValueLeaf({K("extra"), K("cfg"), K("depth")}, 4),
      ValueLeaf({K("extra"), K("cfg"), K("act")}, "gelu"),
      ValueLeaf({K("extra"), K("cfg"), K("tags")}, List{"a", "b"}),
      ValueLeaf({K("extra"), K("pair")}, Tuple{{"warmup", pair_dict}}),
      TensorLeaf({K("extra"), K("mixed_list"), I(0)}, ScalarType::Float, {3}),
      ValueLeaf({K("extra"), K("mixed_list"), I(1)}, 5),
  };
  for (PeerLeaf& leaf : rest) leaves.push_back(std::move(leaf));
  return leaves;
}

// Chunks over 1 MiB, which dcp saves with block checksum files
// (storage/block_checksums.h) that PyTorch must ignore.
std::vector<PeerLeaf> CaseLarge() {
  return {
      TensorLeaf({K("weight")}, ScalarType::Float, {1536, 512},
                 PeerLayout::kRow),
      TensorLeaf({K("bias")}, ScalarType::Float, {512}),
  };
}

std::vector<PeerLeaf> CaseGoldenSimple() {
  return {
      TensorLeaf({K("tensor_f32")}, ScalarType::Float, {2, 3}),
      TensorLeaf({K("vector_i64")}, ScalarType::Long, {4}),
      TensorLeaf({K("bf16")}, ScalarType::BFloat16, {2, 2}),
      TensorLeaf({K("f16")}, ScalarType::Half, {3}),
      TensorLeaf({K("c64")}, ScalarType::ComplexFloat, {2}),
      TensorLeaf({K("scalar")}, ScalarType::Float, {}),
      TensorLeaf({K("empty")}, ScalarType::Float, {0}),
      TensorLeaf({K("empty2d")}, ScalarType::Int, {2, 0}),
      TensorLeaf({K("mask")}, ScalarType::Bool, {5}),
      TensorLeaf({K("u8")}, ScalarType::Byte, {3}),
      ValueLeaf({K("step")}, 7),
      ValueLeaf({K("lr")}, 0.001),
      ValueLeaf({K("name")}, "simple"),
      ValueLeaf({K("none")}, None{}),
      ValueLeaf({K("flag")}, true),
      ValueLeaf({K("raw")}, Bytes{std::string("\x00"
                                              "dcp\xff",
                                              5)}),
      ValueLeaf({K("sizes")}, List{1, 2, 3}),
      ValueLeaf({K("pair")}, Tuple{{1, "two"}}),
      TensorLeaf({K("nested"), K("inner"), K("w")}, ScalarType::Float, {3}),
      ValueLeaf({K("nested"), K("inner"), K("count")}, 2),
      TensorLeaf({K("nested"), K("list"), I(0)}, ScalarType::Int, {2}),
      ValueLeaf({K("nested"), K("list"), I(1)}, "x"),
  };
}

std::vector<PeerLeaf> CaseGoldenSharded4() {
  return {
      TensorLeaf({K("row")}, ScalarType::Float, {6, 4}, PeerLayout::kRow),
      TensorLeaf({K("col")}, ScalarType::Float, {4, 6}, PeerLayout::kCol),
      TensorLeaf({K("uneven")}, ScalarType::Float, {5, 3}, PeerLayout::kRow),
      TensorLeaf({K("bias")}, ScalarType::Float, {3}),
      ValueLeaf({K("step")}, 11),
  };
}

std::vector<PeerLeaf> CaseGoldenNonstrided() {
  return {
      TensorLeaf({K("transposed")}, ScalarType::Float, {4, 3}),
      TensorLeaf({K("permuted")}, ScalarType::Long, {3, 2, 2}),
      TensorLeaf({K("column")}, ScalarType::Float, {4}),
      TensorLeaf({K("contiguous")}, ScalarType::Float, {2, 3}),
  };
}

// ---- Values -------------------------------------------------------------------

// ((x + 2^(bits-1)) mod 2^bits) - 2^(bits-1), with a non-negative mod.
int64_t WrapSigned(int64_t x, int bits) {
  const int64_t half = int64_t{1} << (bits - 1);
  const int64_t modulus = int64_t{1} << bits;
  int64_t m = (x + half) % modulus;
  if (m < 0) m += modulus;
  return m - half;
}

int64_t NonNegativeMod(int64_t x, int64_t m) {
  int64_t r = x % m;
  return r < 0 ? r + m : r;
}

template <typename T, typename F>
void FillFlat(at::Tensor& t, F element) {
  T* data = t.data_ptr<T>();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) data[i] = element(i);
}

// Fills the contiguous `t` with the formula values for seed `seed`; with
// `perturb`, every element is moved off its true value (x + 1, bool: !x;
// integers wrap like the dtype does).
absl::Status FillFormula(at::Tensor& t, int seed, bool perturb) {
  const double p = perturb ? 1.0 : 0.0;
  const int64_t q = perturb ? 1 : 0;
  switch (t.scalar_type()) {
    case ScalarType::Float:
      FillFlat<float>(t, [&](int64_t i) {
        return static_cast<float>((seed + i) * 0.5 - 100.0 + p);
      });
      return absl::OkStatus();
    case ScalarType::Double:
      FillFlat<double>(
          t, [&](int64_t i) { return (seed + i) * 0.5 - 100.0 + p; });
      return absl::OkStatus();
    case ScalarType::Half:
      FillFlat<c10::Half>(t, [&](int64_t i) {
        return c10::Half(static_cast<float>(
            NonNegativeMod(seed + i, 2048) * 0.5 - 512.0 + p));
      });
      return absl::OkStatus();
    case ScalarType::BFloat16:
      FillFlat<c10::BFloat16>(t, [&](int64_t i) {
        return c10::BFloat16(static_cast<float>(
            NonNegativeMod(seed + i, 256) * 0.5 - 64.0 + p));
      });
      return absl::OkStatus();
    case ScalarType::ComplexFloat:
      FillFlat<c10::complex<float>>(t, [&](int64_t i) {
        const int64_t g = seed + i;
        return c10::complex<float>(static_cast<float>(g * 0.5 - 100.0 + p),
                                   static_cast<float>(-(g * 0.25)));
      });
      return absl::OkStatus();
    case ScalarType::Long:
      FillFlat<int64_t>(t, [&](int64_t i) {
        return (seed + i - 500) * int64_t{4294967311} + q;
      });
      return absl::OkStatus();
    case ScalarType::Int:
      FillFlat<int32_t>(t, [&](int64_t i) {
        return static_cast<int32_t>(
            WrapSigned(WrapSigned((seed + i - 500) * 65537, 32) + q, 32));
      });
      return absl::OkStatus();
    case ScalarType::Short:
      FillFlat<int16_t>(t, [&](int64_t i) {
        return static_cast<int16_t>(
            WrapSigned(WrapSigned((seed + i - 500) * 257, 16) + q, 16));
      });
      return absl::OkStatus();
    case ScalarType::Char:
      FillFlat<int8_t>(t, [&](int64_t i) {
        return static_cast<int8_t>(
            WrapSigned(WrapSigned((seed + i - 500) * 7, 8) + q, 8));
      });
      return absl::OkStatus();
    case ScalarType::Byte:
      FillFlat<uint8_t>(t, [&](int64_t i) {
        return static_cast<uint8_t>(
            NonNegativeMod(NonNegativeMod((seed + i) * 3, 256) + q, 256));
      });
      return absl::OkStatus();
    case ScalarType::Bool:
      FillFlat<bool>(t, [&](int64_t i) {
        const bool v = NonNegativeMod(seed + i, 3) == 0;
        return perturb ? !v : v;
      });
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("peer cases: no value formula for dtype ",
                       DtypeName(t.scalar_type())));
  }
}

absl::StatusOr<at::Tensor> FormulaTensor(absl::string_view fqn,
                                         ScalarType dtype, const Shape& shape,
                                         bool perturb) {
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("peer cases: \"", fqn, "\" has a negative dimension"));
    }
  }
  DCP_ASSIGN_OR_RETURN(at::Tensor t, TorchCall("peer cases: allocating", [&] {
                         return at::empty(shape, at::TensorOptions(dtype));
                       }));
  DCP_RETURN_IF_ERROR(FillFormula(t, PeerKeySeed(fqn), perturb));
  return t;
}

absl::StatusOr<std::vector<PeerLeaf>> LeavesOf(absl::string_view name) {
  if (name == "dtensor_row") return CaseDtensorRow();
  if (name == "dtensor_col") return CaseDtensorCol();
  if (name == "mesh2d") return CaseMesh2D();
  if (name == "replicated") return CaseReplicated();
  if (name == "mixed") return CaseMixed();
  if (name == "large") return CaseLarge();
  if (name == "golden_simple") return CaseGoldenSimple();
  if (name == "golden_sharded4") return CaseGoldenSharded4();
  if (name == "golden_nonstrided") return CaseGoldenNonstrided();
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown peer case \"", name, "\"; known: ",
      absl::StrJoin(PeerCaseNames(), ", "),
      ", large, golden_simple, golden_sharded4, golden_nonstrided"));
}

absl::Status CheckRank(int rank, int world_size) {
  if (world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("peer cases: world size ", world_size, " is below 1"));
  }
  if (rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "peer cases: rank ", rank, " is outside [0, ", world_size, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> TensorValue(const PeerLeaf& leaf, int rank,
                                  int world_size, bool perturb) {
  DCP_ASSIGN_OR_RETURN(at::Tensor full, FormulaTensor(leaf.fqn, leaf.dtype,
                                                      leaf.shape, perturb));
  switch (leaf.layout) {
    case PeerLayout::kPlain:
      return Value(std::move(full));
    case PeerLayout::kRow:
      return ShardAlongDim(full, 0, rank, world_size);
    case PeerLayout::kCol:
      return ShardAlongDim(full, 1, rank, world_size);
    case PeerLayout::kMesh2D:
      if (world_size == 4) return ShardGrid2D(full, rank, 2, 2);
      return ShardAlongDim(full, 0, rank, world_size);
  }
  return absl::InternalError("unreachable layout");
}

// ---- Comparison ---------------------------------------------------------------

std::string ShapeString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string ElementString(const at::Tensor& flat, int64_t i) {
  absl::StatusOr<std::string> s =
      TorchCall("formatting an element", [&]() -> std::string {
        const c10::Scalar x = flat[i].item();
        if (x.isBoolean()) return x.toBool() ? "True" : "False";
        if (x.isIntegral(/*includeBool=*/false)) {
          return absl::StrCat(x.toLong());
        }
        if (x.isComplex()) {
          const c10::complex<double> z = x.toComplexDouble();
          return absl::StrFormat("(%.10g%+.10gj)", z.real(), z.imag());
        }
        return absl::StrFormat("%.10g", x.toDouble());
      });
  return s.ok() ? *s : std::string(s.status().message());
}

// Global index of the flat (row-major) position `i` of a box at `offsets`
// with extent `sizes`.
Shape GlobalIndex(int64_t i, const Shape& offsets, const Shape& sizes) {
  Shape index(sizes.size());
  for (size_t d = sizes.size(); d-- > 0;) {
    index[d] = offsets[d] + (sizes[d] == 0 ? 0 : i % sizes[d]);
    if (sizes[d] != 0) i /= sizes[d];
  }
  return index;
}

void CompareBox(const PeerLeaf& leaf, const at::Tensor& got,
                const ChunkStorageMetadata& box, int rank,
                int max_diffs_per_key, std::vector<std::string>& diffs) {
  if (got.scalar_type() != leaf.dtype) {
    diffs.push_back(absl::StrCat(leaf.fqn, ": dtype ",
                                 DtypeName(got.scalar_type()), ", expected ",
                                 DtypeName(leaf.dtype)));
    return;
  }
  const Shape got_sizes(got.sizes().begin(), got.sizes().end());
  if (got_sizes != box.sizes) {
    diffs.push_back(absl::StrCat(leaf.fqn, ": local shape ",
                                 ShapeString(got_sizes), ", expected ",
                                 ShapeString(box.sizes)));
    return;
  }
  absl::StatusOr<at::Tensor> full =
      FormulaTensor(leaf.fqn, leaf.dtype, leaf.shape, /*perturb=*/false);
  if (!full.ok()) {
    diffs.push_back(absl::StrCat(leaf.fqn, ": ", full.status().message()));
    return;
  }
  absl::StatusOr<std::pair<at::Tensor, at::Tensor>> flats =
      TorchCall("slicing", [&] {
        at::Tensor want = *full;
        for (size_t d = 0; d < box.sizes.size(); ++d) {
          want = want.slice(static_cast<int64_t>(d), box.offsets[d],
                            box.offsets[d] + box.sizes[d]);
        }
        return std::make_pair(want.contiguous().reshape(-1),
                              got.contiguous().reshape(-1));
      });
  if (!flats.ok()) {
    diffs.push_back(absl::StrCat(leaf.fqn, ": ", flats.status().message()));
    return;
  }
  const at::Tensor& want = flats->first;
  const at::Tensor& have = flats->second;
  // Bit-exact comparison, element by element (every formula value is exact).
  const int64_t n = want.numel();
  const size_t width = want.element_size();
  const char* w = static_cast<const char*>(want.data_ptr());
  const char* h = static_cast<const char*>(have.data_ptr());
  std::vector<int64_t> bad;
  for (int64_t i = 0; i < n; ++i) {
    if (std::memcmp(w + i * width, h + i * width, width) != 0) bad.push_back(i);
  }
  if (bad.empty()) return;
  diffs.push_back(absl::StrCat(leaf.fqn, ": ", bad.size(), " of ", n,
                               " elements differ on rank ", rank));
  for (size_t k = 0; k < bad.size() && static_cast<int>(k) < max_diffs_per_key;
       ++k) {
    diffs.push_back(absl::StrCat(
        "  ", leaf.fqn, " index ",
        ShapeString(GlobalIndex(bad[k], box.offsets, box.sizes)),
        ": expected ", ElementString(want, bad[k]), ", got ",
        ElementString(have, bad[k])));
  }
}

void CompareTensorLeaf(const PeerLeaf& leaf, const Value& got, int rank,
                       int world_size, int max_diffs_per_key,
                       std::vector<std::string>& diffs) {
  absl::StatusOr<ChunkStorageMetadata> box =
      PeerLocalBox(leaf.layout, leaf.shape, rank, world_size);
  if (!box.ok()) {
    diffs.push_back(absl::StrCat(leaf.fqn, ": ", box.status().message()));
    return;
  }
  if (leaf.layout == PeerLayout::kPlain) {
    const at::Tensor* t = got.get_if<at::Tensor>();
    if (t == nullptr) {
      diffs.push_back(absl::StrCat(leaf.fqn, ": expected a plain tensor, got ",
                                   got.TypeName()));
      return;
    }
    CompareBox(leaf, *t, *box, rank, max_diffs_per_key, diffs);
    return;
  }
  const ShardedTensor* st = got.get_if<ShardedTensor>();
  if (st == nullptr) {
    diffs.push_back(absl::StrCat(leaf.fqn, ": expected a sharded tensor, got ",
                                 got.TypeName()));
    return;
  }
  if (st->global_size != leaf.shape) {
    diffs.push_back(absl::StrCat(leaf.fqn, ": global size ",
                                 ShapeString(st->global_size), ", expected ",
                                 ShapeString(leaf.shape)));
    return;
  }
  if (st->local_shards.size() != 1) {
    diffs.push_back(absl::StrCat(leaf.fqn, ": ", st->local_shards.size(),
                                 " local shards, expected 1"));
    return;
  }
  const Shard& shard = st->local_shards[0];
  if (shard.offsets != box->offsets) {
    diffs.push_back(absl::StrCat(leaf.fqn, ": shard offsets ",
                                 ShapeString(shard.offsets), ", expected ",
                                 ShapeString(box->offsets)));
    return;
  }
  CompareBox(leaf, shard.tensor, *box, rank, max_diffs_per_key, diffs);
}

std::string ValueString(const Value& v) {
  std::ostringstream os;
  os << v << " (" << v.TypeName() << ")";
  return os.str();
}

}  // namespace

absl::string_view PeerLayoutName(PeerLayout layout) {
  switch (layout) {
    case PeerLayout::kPlain:
      return "plain";
    case PeerLayout::kRow:
      return "row";
    case PeerLayout::kCol:
      return "col";
    case PeerLayout::kMesh2D:
      return "mesh2d";
  }
  return "unknown";
}

std::vector<std::string> PeerCaseNames() {
  return {"dtensor_row", "dtensor_col", "mesh2d", "replicated", "mixed"};
}

absl::StatusOr<std::vector<PeerLeaf>> PeerCaseLeaves(
    absl::string_view case_name) {
  return LeavesOf(case_name);
}

int PeerKeySeed(absl::string_view fqn) {
  int64_t sum = 0;
  for (size_t j = 0; j < fqn.size(); ++j) {
    sum += static_cast<int64_t>(j + 1) * static_cast<uint8_t>(fqn[j]);
  }
  return static_cast<int>(sum % 1000);
}

absl::StatusOr<at::Tensor> PeerFullValue(absl::string_view fqn,
                                         c10::ScalarType dtype,
                                         const Shape& shape) {
  return FormulaTensor(fqn, dtype, shape, /*perturb=*/false);
}

absl::StatusOr<ChunkStorageMetadata> PeerLocalBox(PeerLayout layout,
                                                  const Shape& shape, int rank,
                                                  int world_size) {
  DCP_RETURN_IF_ERROR(CheckRank(rank, world_size));
  switch (layout) {
    case PeerLayout::kPlain:
      return ChunkStorageMetadata{Shape(shape.size(), 0), shape};
    case PeerLayout::kRow:
      return ShardBoxAlongDim(shape, 0, rank, world_size);
    case PeerLayout::kCol:
      return ShardBoxAlongDim(shape, 1, rank, world_size);
    case PeerLayout::kMesh2D:
      if (world_size == 4) return ShardBoxGrid2D(shape, rank, 2, 2);
      return ShardBoxAlongDim(shape, 0, rank, world_size);
  }
  return absl::InternalError("unreachable layout");
}

absl::StatusOr<StateDict> MakePeerCase(absl::string_view case_name, int rank,
                                       int world_size, PeerValues values) {
  DCP_RETURN_IF_ERROR(CheckRank(rank, world_size));
  DCP_ASSIGN_OR_RETURN(std::vector<PeerLeaf> leaves, LeavesOf(case_name));
  const bool placeholder = values != PeerValues::kTrue;
  StateDict sd;
  for (const PeerLeaf& leaf : leaves) {
    Value v;
    if (leaf.is_tensor) {
      DCP_ASSIGN_OR_RETURN(v, TensorValue(leaf, rank, world_size, placeholder));
    } else if (!placeholder) {
      v = leaf.value;
    } else {
      v = std::string(kPlaceholderString);
    }
    DCP_RETURN_IF_ERROR(Annotate(SetElement(sd, leaf.path, std::move(v)),
                                 absl::StrCat("peer case ", case_name)));
  }
  return sd;
}

std::vector<std::string> ComparePeerCase(absl::string_view case_name,
                                         const StateDict& loaded, int rank,
                                         int world_size,
                                         int max_diffs_per_key) {
  std::vector<std::string> diffs;
  absl::StatusOr<std::vector<PeerLeaf>> leaves = LeavesOf(case_name);
  if (!leaves.ok()) return {std::string(leaves.status().message())};
  for (const PeerLeaf& leaf : *leaves) {
    absl::StatusOr<const Value*> got = GetElement(loaded, leaf.path);
    if (!got.ok()) {
      diffs.push_back(
          absl::StrCat(leaf.fqn, ": missing from the loaded state dict"));
      continue;
    }
    if (leaf.is_tensor) {
      CompareTensorLeaf(leaf, **got, rank, world_size, max_diffs_per_key,
                        diffs);
    } else if (!ValuesEqual(leaf.value, **got)) {
      diffs.push_back(absl::StrCat(leaf.fqn, ": expected ",
                                   ValueString(leaf.value), ", got ",
                                   ValueString(**got)));
    }
  }
  return diffs;
}

}  // namespace dcp::test
