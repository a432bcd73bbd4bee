#include "testing/checkpoint_scenarios.h"

#include <cmath>
#include <string>
#include <utility>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "core/sharding.h"
#include "core/status.h"
#include "testing/tensor_matchers.h"

namespace dcp::test {
namespace {

enum class Sharding { kReplicated, kRows, kColumns, kGrid };

struct TensorSpec {
  const char* section;  // "model" or "optim.state.0"
  const char* name;
  Shape shape;
  c10::ScalarType dtype;
  Sharding save;
  Sharding load;
};

// Every tensor of the model. Seeds derive from the position in this list.
const std::vector<TensorSpec>& Tensors() {
  static const auto* specs = new std::vector<TensorSpec>{
      {"model", "embed", {10, 6}, c10::kFloat, Sharding::kRows, Sharding::kColumns},
      {"model", "proj", {5, 7}, c10::kDouble, Sharding::kColumns, Sharding::kRows},
      {"model", "grid", {6, 9}, c10::kBFloat16, Sharding::kGrid, Sharding::kRows},
      {"model", "mask", {3, 4}, c10::kBool, Sharding::kRows, Sharding::kColumns},
      {"model", "ids", {9}, c10::kLong, Sharding::kRows, Sharding::kReplicated},
      {"model", "bias", {7}, c10::kHalf, Sharding::kReplicated, Sharding::kRows},
      {"model", "codes", {2, 5}, c10::kChar, Sharding::kReplicated, Sharding::kReplicated},
      {"model", "pixels", {4, 3}, c10::kByte, Sharding::kGrid, Sharding::kColumns},
      {"model", "empty", {0, 3}, c10::kFloat, Sharding::kReplicated, Sharding::kReplicated},
      {"model", "empty_rows", {0, 4}, c10::kFloat, Sharding::kRows, Sharding::kColumns},
      {"optim.state.0", "exp_avg", {10, 6}, c10::kFloat, Sharding::kRows, Sharding::kGrid},
      {"optim.state.0", "exp_avg_sq", {10, 6}, c10::kDouble, Sharding::kRows, Sharding::kRows},
      {"optim.state.0", "step", {}, c10::kFloat, Sharding::kReplicated, Sharding::kReplicated},
  };
  return *specs;
}

absl::StatusOr<Value> Place(const at::Tensor& full, Sharding sharding,
                            int rank, int world_size) {
  switch (sharding) {
    case Sharding::kReplicated:
      return Value(full.clone());
    case Sharding::kRows: {
      DCP_ASSIGN_OR_RETURN(ShardedTensor t, ShardAlongDim(full, 0, rank, world_size));
      return Value(std::move(t));
    }
    case Sharding::kColumns: {
      DCP_ASSIGN_OR_RETURN(ShardedTensor t, ShardAlongDim(full, 1, rank, world_size));
      return Value(std::move(t));
    }
    case Sharding::kGrid: {
      int rows, cols;
      GridShape(world_size, &rows, &cols);
      DCP_ASSIGN_OR_RETURN(ShardedTensor t, ShardGrid2D(full, rank, rows, cols));
      return Value(std::move(t));
    }
  }
  return absl::InternalError("unknown sharding");
}

// Finds or creates the nested dict at a dotted section path.
StateDict& Section(StateDict& root, absl::string_view dotted) {
  StateDict* current = &root;
  size_t start = 0;
  while (start <= dotted.size()) {
    size_t dot = dotted.find('.', start);
    if (dot == absl::string_view::npos) dot = dotted.size();
    std::string part(dotted.substr(start, dot - start));
    Value* child = current->FindMutable(part);
    if (child == nullptr || !child->is<StateDict>()) {
      current->Set(part, StateDict());
      child = current->FindMutable(part);
    }
    current = &child->get<StateDict>();
    start = dot + 1;
  }
  return *current;
}

}  // namespace

void GridShape(int world_size, int* rows, int* cols) {
  int r = static_cast<int>(std::sqrt(static_cast<double>(world_size)));
  while (r > 1 && world_size % r != 0) --r;
  *rows = r < 1 ? 1 : r;
  *cols = world_size / *rows;
}

absl::StatusOr<StateDict> MakeModelStateDict(int rank, int world_size,
                                             ModelLayout layout,
                                             ModelValues values,
                                             int value_seed) {
  StateDict root;
  const auto& specs = Tensors();
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& spec = specs[i];
    at::Tensor full = values == ModelValues::kTrue
                          ? MakeTestTensor(spec.shape, spec.dtype,
                                           static_cast<int>(i) + 100 * value_seed)
                          : at::zeros(spec.shape, at::TensorOptions().dtype(spec.dtype));
    Sharding sharding = layout == ModelLayout::kSave ? spec.save : spec.load;
    absl::StatusOr<Value> placed = Place(full, sharding, rank, world_size);
    if (!placed.ok()) {
      return Annotate(placed.status(), absl::StrCat("placing ", spec.section, ".", spec.name));
    }
    Section(root, spec.section).Set(spec.name, *std::move(placed));
  }
  const bool real = values == ModelValues::kTrue;
  StateDict group;
  group.Set("lr", real ? 0.01 + value_seed : -1.0);
  group.Set("betas", real ? Value(Tuple{{0.9, 0.999}}) : Value(Tuple{}));
  group.Set("params", real ? Value(List{int64_t{0}, int64_t{1}}) : Value(None{}));
  Section(root, "optim").Set("param_groups", List{Value(std::move(group))});
  root.Set("step", real ? int64_t{42 + value_seed} : int64_t{0});
  root.Set("name", real ? "dcp-scenario" : "");
  root.Set("done", real);
  root.Set("blob", real ? Bytes{std::string("\x00\x01\xff", 3)} : Bytes{});
  root.Set("nothing", real ? Value(None{}) : Value(int64_t{-1}));
  StateDict extra;
  extra.Set("note", real ? "nested" : "");
  extra.Set("ratio", real ? 0.5 : 0.0);
  root.Set("extra", std::move(extra));
  return root;
}

absl::Status CheckModelStateDict(const StateDict& loaded, int rank,
                                 int world_size, ModelLayout layout,
                                 int value_seed) {
  DCP_ASSIGN_OR_RETURN(StateDict expected,
                       MakeModelStateDict(rank, world_size, layout,
                                          ModelValues::kTrue, value_seed));
  std::string mismatch =
      tensor_matchers_internal::DescribeStateDictMismatch(loaded, expected);
  if (mismatch.empty()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("rank ", rank, " of ", world_size,
                                          ": loaded state dict differs: ",
                                          mismatch));
}

}  // namespace dcp::test
