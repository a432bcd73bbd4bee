// -----------------------------------------------------------------------------
// File: testing/peer_cases.h
// -----------------------------------------------------------------------------
//
// The C++ twin of the test cases of tools/peer/dcp_peer.py (the PyTorch 2.6
// interop peer; see tools/peer/README.md, "Cases" and "Value formulas"). The
// same case name, rank and world size give, leaf for leaf, the same nested
// structure, FQNs, dtypes, shapes, shard layouts and bit-identical values as
// the Python side, so a checkpoint written by either side can be checked
// element by element by the other.
//
//   DCP_ASSERT_OK_AND_ASSIGN(StateDict sd,
//                        MakePeerCase("mixed", rank, 4, PeerValues::kTrue));
//   ... save sd with dcp, or load a PyTorch checkpoint into
//   ... MakePeerCase("mixed", rank, 3, PeerValues::kPlaceholder) ...
//   std::vector<std::string> diffs = ComparePeerCase("mixed", loaded, rank, 3);
//
// Layouts (rank r of world size W): `kPlain` is an `at::Tensor`, identical on
// every rank; `kRow` / `kCol` are `ShardedTensor`s chunked along dimension 0
// / 1 (core/sharding.h, DTensor's chunking); `kMesh2D` is the 2 x 2 grid
// of ShardGrid2D (rank r at (r / 2, r % 2)) when W == 4 and `kRow` otherwise.
//
// Python tuples are `Tuple`s here: `mixed`'s `optim.param_groups.0.betas` =
// (0.9, 0.999) and `extra.pair` = ("warmup", {"steps": 10, "on": True}), and
// `golden_simple`'s `pair` = (1, "two"). Each is one leaf on both sides,
// even `extra.pair`, which holds a dict, and loads back as a tuple.
//
// Errors: InvalidArgument for unknown case names, ranks outside [0, W) and
// world sizes below 1.
//
// Thread safety: free functions; no shared state.
#ifndef DCP_TESTING_PEER_CASES_H_
#define DCP_TESTING_PEER_CASES_H_

#include <string>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "c10/core/ScalarType.h"
#include "core/metadata.h"
#include "core/state_dict.h"

namespace dcp::test {

// How a tensor leaf is laid out over the ranks (dcp_peer.py's layouts).
enum class PeerLayout { kPlain, kRow, kCol, kMesh2D };
absl::string_view PeerLayoutName(PeerLayout layout);  // "plain", "row", ...

// One leaf of a case, in the case's order.
struct PeerLeaf {
  // The path DCP's flattening records, e.g. ("optim", "param_groups", 0,
  // "lr"), and its FQN "optim.param_groups.0.lr".
  ObjectPath path;
  std::string fqn;
  bool is_tensor = false;
  // Tensor leaves.
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  Shape shape;
  PeerLayout layout = PeerLayout::kPlain;
  // Non-tensor leaves: the value.
  Value value;
};

// The public cases of dcp_peer.py: "dtensor_row", "dtensor_col", "mesh2d",
// "replicated", "mixed".
std::vector<std::string> PeerCaseNames();

// The leaves of `case_name`: a public case, "large" (chunks over 1 MiB, for
// the interop tests) or one of the golden cases "golden_simple",
// "golden_sharded4", "golden_nonstrided" (the latter's values only; its
// strides are a property of the saved files).
absl::StatusOr<std::vector<PeerLeaf>> PeerCaseLeaves(
    absl::string_view case_name);

// seed(fqn) = (sum_j (j + 1) * b_j) mod 1000 over the FQN's UTF-8 bytes.
int PeerKeySeed(absl::string_view fqn);

// The full (unsharded) value of a tensor leaf by the documented formulas,
// contiguous, of `dtype` and `shape`. InvalidArgument for dtypes outside
// the README's list or negative dimensions.
absl::StatusOr<at::Tensor> PeerFullValue(absl::string_view fqn,
                                         c10::ScalarType dtype,
                                         const Shape& shape);

// The global box `rank` of `world_size` holds of a tensor of `shape` laid
// out as `layout` (the whole tensor for kPlain).
absl::StatusOr<ChunkStorageMetadata> PeerLocalBox(PeerLayout layout,
                                                  const Shape& shape, int rank,
                                                  int world_size);

enum class PeerValues {
  // The formula values; non-tensor leaves with their values.
  kTrue,
  // A load destination shaped as PyTorch's: every tensor element differs
  // from its true value (x + 1, bool: !x, like dcp_peer.py's `perturbed`),
  // so an element that is not loaded shows up; every non-tensor leaf,
  // tuples included, is the string "<placeholder>".
  kPlaceholder,
};

// Rank `rank` of `world_size`'s state dict of `case_name`, built leaf by leaf
// with `SetElement` in the case's order (as dcp_peer.py's `set_path`).
absl::StatusOr<StateDict> MakePeerCase(absl::string_view case_name, int rank,
                                       int world_size, PeerValues values);

// Compares `loaded` (what rank `rank` of `world_size` loaded into
// MakePeerCase(case_name, rank, world_size, kPlaceholder...)) with the true
// values: every leaf of the case must be present; tensors must have the
// layout, dtype, local shape, offsets and every element of the formula;
// non-tensor values must be equal with equal types (int, float, bool, str,
// bytes, None, list, tuple, dict are all distinct).
// Returns one line per problem, empty if everything is equal, e.g.
//   "model.embed.weight: 1 of 20 elements differ on rank 0"
//   "  model.embed.weight index [3, 2]: expected -86, got -85"
// At most `max_diffs_per_key` element lines per leaf; indices are global.
// An unknown case name gives a single line saying so.
std::vector<std::string> ComparePeerCase(absl::string_view case_name,
                                         const StateDict& loaded, int rank,
                                         int world_size,
                                         int max_diffs_per_key = 10);

}  // namespace dcp::test

#endif  // DCP_TESTING_PEER_CASES_H_
