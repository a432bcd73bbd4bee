#include "tools/model_state.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/metadata.h"
#include "core/sharding.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "core/torch_status.h"

namespace dcp::tools {
namespace {

struct Param {
  std::string name;
  Shape shape;
};

std::vector<Param> ModelParams(const ModelShape& s) {
  const int64_t h = s.hidden;
  std::vector<Param> params;
  params.push_back({"embed_tokens.weight", {s.vocab, h}});
  for (int i = 0; i < s.layers; ++i) {
    const std::string p = absl::StrCat("layers.", i, ".");
    params.push_back({p + "input_norm.weight", {h}});
    params.push_back({p + "attn.qkv.weight", {3 * h, h}});
    params.push_back({p + "attn.qkv.bias", {3 * h}});
    params.push_back({p + "attn.out.weight", {h, h}});
    params.push_back({p + "post_norm.weight", {h}});
    params.push_back({p + "mlp.up.weight", {4 * h, h}});
    params.push_back({p + "mlp.down.weight", {h, 4 * h}});
  }
  params.push_back({"final_norm.weight", {h}});
  params.push_back({"lm_head.weight", {s.vocab, h}});
  return params;
}

// A deterministic float32 tensor: element i is ((i + seed) % 1000) / 100 - 5
// with the seed taken from `key`.
absl::StatusOr<at::Tensor> PatternTensor(absl::string_view key,
                                         const Shape& shape) {
  int64_t seed = 0;
  for (size_t j = 0; j < key.size(); ++j) {
    seed = (seed + static_cast<int64_t>(j + 1) *
                       static_cast<unsigned char>(key[j])) %
           1000;
  }
  return TorchCall(absl::StrCat("building ", key), [&] {
    return at::arange(NumElements(shape), at::kLong)
        .add_(seed)
        .remainder_(1000)
        .to(at::kFloat)
        .div_(100)
        .sub_(5)
        .reshape(shape);
  });
}

void GridShape(int world_size, int* rows, int* cols) {
  int r = 1;
  for (int d = 1; static_cast<int64_t>(d) * d <= world_size; ++d) {
    if (world_size % d == 0) r = d;
  }
  *rows = r;
  *cols = world_size / r;
}

// The box `rank` holds of a tensor of shape `global` in `layout`; nullopt
// for replicated (0-d) tensors.
absl::StatusOr<std::optional<ChunkStorageMetadata>> BoxFor(const Shape& global,
                                                           Layout layout,
                                                           int rank,
                                                           int world_size) {
  if (global.empty()) return std::optional<ChunkStorageMetadata>();
  if (global.size() >= 2 && layout == Layout::kColumns) {
    return ShardBoxAlongDim(global, 1, rank, world_size);
  }
  if (global.size() >= 2 && layout == Layout::kGrid) {
    int rows, cols;
    GridShape(world_size, &rows, &cols);
    return ShardBoxGrid2D(global, rank, rows, cols);
  }
  return ShardBoxAlongDim(global, 0, rank, world_size);
}

absl::StatusOr<at::Tensor> Slice(const at::Tensor& full,
                                 const ChunkStorageMetadata& box) {
  return TorchCall("slicing a box", [&] {
    at::Tensor view = full;
    for (size_t d = 0; d < box.offsets.size(); ++d) {
      view = view.narrow(static_cast<int64_t>(d), box.offsets[d], box.sizes[d]);
    }
    return view;
  });
}

enum class Mode { kShard, kEmpty };

absl::StatusOr<Value> Transform(const Value& value, Mode mode, Layout layout,
                                int rank, int world_size,
                                const std::string& path) {
  if (const auto* tensor = value.get_if<at::Tensor>()) {
    const Shape global = tensor->sizes().vec();
    absl::StatusOr<std::optional<ChunkStorageMetadata>> box =
        BoxFor(global, layout, rank, world_size);
    if (!box.ok()) return Annotate(box.status(), path);
    if (!box->has_value()) {
      if (mode == Mode::kShard) return value;
      return TorchCall(absl::StrCat("allocating ", path), [&] {
        at::Tensor t = at::zeros(global, tensor->options());
        if (t.is_floating_point()) t.fill_(NAN);
        return Value(std::move(t));
      });
    }
    ShardedTensor sharded;
    sharded.global_size = global;
    DCP_ASSIGN_OR_RETURN(
        at::Tensor local,
        TorchCall(absl::StrCat("sharding ", path), [&]() -> at::Tensor {
          if (mode == Mode::kEmpty) {
            at::Tensor t = at::zeros((*box)->sizes, tensor->options());
            if (t.is_floating_point()) t.fill_(NAN);
            return t;
          }
          at::Tensor view = *tensor;
          for (size_t d = 0; d < global.size(); ++d) {
            view = view.narrow(static_cast<int64_t>(d), (*box)->offsets[d],
                               (*box)->sizes[d]);
          }
          return view.clone(at::MemoryFormat::Contiguous);
        }));
    sharded.local_shards.push_back({std::move(local), (*box)->offsets});
    return Value(std::move(sharded));
  }
  if (value.is<ShardedTensor>()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is already sharded"));
  }
  if (const auto* list = value.get_if<List>()) {
    List out;
    for (size_t i = 0; i < list->size(); ++i) {
      DCP_ASSIGN_OR_RETURN(Value item,
                           Transform((*list)[i], mode, layout, rank,
                                     world_size, absl::StrCat(path, ".", i)));
      out.push_back(std::move(item));
    }
    return Value(std::move(out));
  }
  if (const auto* dict = value.get_if<StateDict>()) {
    StateDict out;
    for (const auto& [key, item] : dict->entries()) {
      DCP_ASSIGN_OR_RETURN(
          Value v, Transform(item, mode, layout, rank, world_size,
                             path.empty() ? key : absl::StrCat(path, ".", key)));
      out.Set(key, std::move(v));
    }
    return Value(std::move(out));
  }
  return mode == Mode::kShard ? value : Value(None{});
}

absl::StatusOr<StateDict> TransformRoot(const StateDict& full, Mode mode,
                                        Layout layout, int rank,
                                        int world_size) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " of a world of size ", world_size));
  }
  DCP_ASSIGN_OR_RETURN(
      Value v, Transform(Value(full), mode, layout, rank, world_size, ""));
  return std::move(v.get<StateDict>());
}

absl::Status Mismatch(int rank, const std::string& path,
                      absl::string_view what) {
  return absl::DataLossError(
      absl::StrCat("rank ", rank, ": ", path, ": ", what));
}

bool SameTensor(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() &&
         at::equal(a, b);
}

absl::Status Verify(const Value& loaded, const Value& full, int rank,
                    const std::string& path, VerifyStats& stats) {
  if (const auto* expected = full.get_if<at::Tensor>()) {
    if (const auto* t = loaded.get_if<at::Tensor>()) {
      DCP_ASSIGN_OR_RETURN(bool same, TorchCall("comparing", [&] {
                             return SameTensor(*t, *expected);
                           }));
      if (!same) return Mismatch(rank, path, "tensor differs");
      ++stats.tensors;
      stats.elements += t->numel();
      return absl::OkStatus();
    }
    const auto* sharded = loaded.get_if<ShardedTensor>();
    if (sharded == nullptr) {
      return Mismatch(rank, path,
                      absl::StrCat("expected a tensor, got a ",
                                   loaded.TypeName()));
    }
    if (sharded->global_size != expected->sizes().vec()) {
      return Mismatch(rank, path, "global size differs");
    }
    for (size_t i = 0; i < sharded->local_shards.size(); ++i) {
      const Shard& shard = sharded->local_shards[i];
      ChunkStorageMetadata box{shard.offsets, shard.tensor.sizes().vec()};
      if (box.offsets.size() != box.sizes.size()) {
        return Mismatch(rank, path, "shard has the wrong number of offsets");
      }
      DCP_ASSIGN_OR_RETURN(at::Tensor want, Slice(*expected, box));
      DCP_ASSIGN_OR_RETURN(bool same, TorchCall("comparing", [&] {
                             return SameTensor(shard.tensor, want);
                           }));
      if (!same) {
        return Mismatch(rank, path,
                        absl::StrCat("shard at offsets [",
                                     absl::StrJoin(shard.offsets, ", "),
                                     "] differs from the saved data"));
      }
      stats.elements += shard.tensor.numel();
    }
    ++stats.tensors;
    return absl::OkStatus();
  }
  if (const auto* list = full.get_if<List>()) {
    const auto* got = loaded.get_if<List>();
    if (got == nullptr || got->size() != list->size()) {
      return Mismatch(rank, path, "list differs");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      DCP_RETURN_IF_ERROR(Verify((*got)[i], (*list)[i], rank,
                                 absl::StrCat(path, ".", i), stats));
    }
    return absl::OkStatus();
  }
  if (const auto* dict = full.get_if<StateDict>()) {
    const auto* got = loaded.get_if<StateDict>();
    if (got == nullptr || got->Keys() != dict->Keys()) {
      return Mismatch(rank, path.empty() ? "state dict" : path,
                      "keys differ");
    }
    for (const auto& [key, item] : dict->entries()) {
      DCP_RETURN_IF_ERROR(
          Verify(*got->Find(key), item, rank,
                 path.empty() ? key : absl::StrCat(path, ".", key), stats));
    }
    return absl::OkStatus();
  }
  if (!ValuesEqual(loaded, full)) {
    return Mismatch(rank, path, "value differs");
  }
  ++stats.values;
  return absl::OkStatus();
}

}  // namespace

int64_t ModelTensorBytes(const ModelShape& shape) {
  int64_t elements = 0;
  std::vector<Param> params = ModelParams(shape);
  for (const Param& p : params) elements += NumElements(p.shape);
  // Parameter + exp_avg + exp_avg_sq, plus one 0-d step per parameter.
  return (3 * elements + static_cast<int64_t>(params.size())) *
         static_cast<int64_t>(sizeof(float));
}

ModelShape ModelShapeForBytes(int64_t target_bytes) {
  ModelShape best;
  best.layers = 4;
  best.hidden = 8;
  int64_t best_error = -1;
  for (int64_t h = 8; h <= 65536; h += 8) {
    ModelShape s = best;
    s.hidden = h;
    const int64_t bytes = ModelTensorBytes(s);
    const int64_t error =
        bytes > target_bytes ? bytes - target_bytes : target_bytes - bytes;
    if (best_error < 0 || error < best_error) {
      best = s;
      best_error = error;
    }
    if (bytes > target_bytes) break;
  }
  return best;
}

absl::StatusOr<StateDict> MakeModelStateDict(const ModelShape& shape) {
  if (shape.vocab < 1 || shape.hidden < 1 || shape.layers < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad model shape: vocab ", shape.vocab, ", hidden ", shape.hidden,
        ", layers ", shape.layers));
  }
  const std::vector<Param> params = ModelParams(shape);
  StateDict model;
  StateDict state;
  List param_ids;
  for (size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    DCP_ASSIGN_OR_RETURN(at::Tensor weight,
                         PatternTensor(absl::StrCat("model.", p.name), p.shape));
    model.Set(p.name, std::move(weight));
    const std::string prefix = absl::StrCat("optim.state.", i, ".");
    DCP_ASSIGN_OR_RETURN(at::Tensor avg,
                         PatternTensor(prefix + "exp_avg", p.shape));
    DCP_ASSIGN_OR_RETURN(at::Tensor avg_sq,
                         PatternTensor(prefix + "exp_avg_sq", p.shape));
    DCP_ASSIGN_OR_RETURN(at::Tensor step, TorchCall("step", [] {
                           return at::scalar_tensor(1000.0, at::kFloat);
                         }));
    state.Set(absl::StrCat(i), StateDict{{"step", std::move(step)},
                                         {"exp_avg", std::move(avg)},
                                         {"exp_avg_sq", std::move(avg_sq)}});
    param_ids.push_back(static_cast<int64_t>(i));
  }
  StateDict group{{"lr", 3e-4},       {"betas", Tuple{{0.9, 0.95}}},
                  {"eps", 1e-8},      {"weight_decay", 0.1},
                  {"amsgrad", false}, {"params", std::move(param_ids)}};
  StateDict optim{{"state", std::move(state)},
                  {"param_groups", List{Value(std::move(group))}}};
  return StateDict{{"model", std::move(model)},
                   {"optim", std::move(optim)},
                   {"step", int64_t{1000}},
                   {"epoch", int64_t{3}},
                   {"run", StateDict{{"name", "dcp-demo"},
                                     {"seed", int64_t{1234}}}}};
}

absl::string_view LayoutName(Layout layout) {
  switch (layout) {
    case Layout::kRows:
      return "row";
    case Layout::kColumns:
      return "column";
    case Layout::kGrid:
      return "grid";
  }
  return "?";
}

absl::StatusOr<Layout> ParseLayout(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "row" || n == "rows") return Layout::kRows;
  if (n == "col" || n == "column" || n == "columns") return Layout::kColumns;
  if (n == "grid") return Layout::kGrid;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown layout \"", name, "\" (expected row, column or grid)"));
}

absl::StatusOr<StateDict> ShardStateDict(const StateDict& full, Layout layout,
                                         int rank, int world_size) {
  return TransformRoot(full, Mode::kShard, layout, rank, world_size);
}

absl::StatusOr<StateDict> EmptyShardedLike(const StateDict& full,
                                           Layout layout, int rank,
                                           int world_size) {
  return TransformRoot(full, Mode::kEmpty, layout, rank, world_size);
}

absl::Status VerifyAgainstFull(const StateDict& loaded, const StateDict& full,
                               int rank, VerifyStats* stats) {
  VerifyStats local;
  absl::Status status = Verify(Value(loaded), Value(full), rank, "", local);
  if (stats != nullptr) {
    stats->tensors += local.tensors;
    stats->elements += local.elements;
    stats->values += local.values;
  }
  return status;
}

}  // namespace dcp::tools
