// -----------------------------------------------------------------------------
// File: tools/model_state.h
// -----------------------------------------------------------------------------
//
// The model-like state dict of `dcp demo` and `dcp bench`, and the helpers
// that shard any state dict over simulated ranks and check a loaded one.
//
// The model is a small decoder-only transformer as a training job would
// checkpoint it:
//
//   {"model": {"embed_tokens.weight": [vocab, hidden],
//              "layers.<i>.input_norm.weight": [hidden],
//              "layers.<i>.attn.qkv.weight": [3 hidden, hidden],
//              "layers.<i>.attn.qkv.bias": [3 hidden],
//              "layers.<i>.attn.out.weight": [hidden, hidden],
//              "layers.<i>.post_norm.weight": [hidden],
//              "layers.<i>.mlp.up.weight": [4 hidden, hidden],
//              "layers.<i>.mlp.down.weight": [hidden, 4 hidden],
//              "final_norm.weight": [hidden],
//              "lm_head.weight": [vocab, hidden]},
//    "optim": {"state": {"<p>": {"step": 0-d, "exp_avg": like param p,
//                                "exp_avg_sq": like param p}},
//              "param_groups": [{"lr", "betas", "eps", "weight_decay",
//                                "params": [0, 1, ...]}]},
//    "step": 1000, "epoch": 3, "run": {"name": "dcp-demo", "seed": 1234}}
//
// All tensors are float32 and their values a deterministic function of
// their key, so every run builds the same state dict.
//
// Layouts: a tensor with at least one dimension is sharded over the ranks;
// 0-d tensors and non-tensor values are replicated (the same on every
// rank):
//   kRows     dimension 0 chunked over all ranks
//   kColumns  dimension 1 for tensors of 2+ dimensions, else dimension 0
//   kGrid     2+ dimensions: a rows x cols mesh (core/sharding.h,
//             rows = the largest divisor of the world size <= its square
//             root); 1-D tensors: dimension 0
//
// Thread safety: free functions over values. State dicts built for
// different ranks share the replicated tensors of `full` only when saving
// (read-only); load destinations are always fresh tensors.
#ifndef DCP_TOOLS_MODEL_STATE_H_
#define DCP_TOOLS_MODEL_STATE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/state_dict.h"

namespace dcp::tools {

struct ModelShape {
  int64_t vocab = 5000;
  int64_t hidden = 192;
  int layers = 2;
};

// Bytes of tensor data in MakeModelStateDict(shape) (parameters plus the two
// Adam moments plus the step tensors).
int64_t ModelTensorBytes(const ModelShape& shape);

// A shape with 4 layers and vocab 5000 whose tensor bytes are as close to
// `target_bytes` as a hidden size that is a multiple of 8 (at least 8)
// allows.
ModelShape ModelShapeForBytes(int64_t target_bytes);

// The full (unsharded) model state dict.
absl::StatusOr<StateDict> MakeModelStateDict(const ModelShape& shape);

enum class Layout { kRows, kColumns, kGrid };
absl::string_view LayoutName(Layout layout);  // "row", "column", "grid"
// Accepts "row"/"rows", "col"/"column"/"columns", "grid".
absl::StatusOr<Layout> ParseLayout(absl::string_view name);

// `rank`'s part of `full` in `layout`: sharded tensors are contiguous
// clones of their boxes; replicated tensors are the handles of `full`.
absl::StatusOr<StateDict> ShardStateDict(const StateDict& full, Layout layout,
                                         int rank, int world_size);

// A load destination with the same structure: zero-filled shards (or
// zero-filled fresh replicated tensors) of the saved dtypes, and every
// non-tensor value replaced by None.
absl::StatusOr<StateDict> EmptyShardedLike(const StateDict& full,
                                           Layout layout, int rank,
                                           int world_size);

struct VerifyStats {
  int64_t tensors = 0;   // Tensor leaves checked (sharded or not).
  int64_t elements = 0;  // Tensor elements compared.
  int64_t values = 0;    // Non-tensor leaves compared.
};

// Checks that `loaded` (one rank's state dict after a load) holds exactly
// the corresponding parts of `full`: the same keys, each local shard equal
// (dtype and every element) to its box of the full tensor, each replicated
// tensor and non-tensor value equal. Adds to `stats` (may be null).
// DataLoss naming the rank, key and shard on the first mismatch.
absl::Status VerifyAgainstFull(const StateDict& loaded, const StateDict& full,
                               int rank, VerifyStats* stats);

}  // namespace dcp::tools

#endif  // DCP_TOOLS_MODEL_STATE_H_
