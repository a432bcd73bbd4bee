// Planning speed for state dicts of many keys, to show that a save or load
// plan costs O(1) or O(log n) per key: keys/s should stay about flat as the
// count grows tenfold (W5).
//
//   bazel run -c opt //planner:planner_benchmark -- 10000 100000 1000000
//
// For each count n it builds a nested state dict of n one-element tensors
// ({"layers": {"<i>": {"attention": {"wq": {"weight": t}}}}} and friends,
// eight leaves per layer) and prints one row per step, timing each once:
//
//   flatten      FlattenStateDict
//   save_plan    DefaultSavePlanner SetUp, CreateLocalPlan, CreateGlobalPlan
//                and FinishPlan for one rank
//   resolve      ResolveData for every write item
//   load_plan    DefaultLoadPlanner SetUp and CreateLocalPlan
//   load_tensor  ResolveTensor for every read item
//   unflatten    UnflattenStateDict
//
// This is a benchmark, not a test: it checks only that each step succeeds.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "checkpoint/state_dict.h"
#include "planner/default_load_planner.h"
#include "planner/default_save_planner.h"
#include "planner/flatten.h"
#include "testing/microbench.h"

namespace dcp {
namespace {

constexpr absl::string_view kLeaves[][2] = {
    {"attention", "wq"},       {"attention", "wk"},
    {"attention", "wv"},       {"attention", "wo"},
    {"feed_forward", "w1"},    {"feed_forward", "w2"},
    {"attention_norm", ""},    {"ffn_norm", ""},
};
constexpr int64_t kPerLayer = sizeof(kLeaves) / sizeof(kLeaves[0]);

// Inserts `value` under `path` (nested dicts), as a model's state_dict()
// would hold it.
void Insert(StateDict& root, const std::vector<std::string>& path,
            Value value) {
  StateDict* dict = &root;
  for (size_t i = 0; i + 1 < path.size(); ++i) {
    Value* next = dict->FindMutable(path[i]);
    if (next == nullptr) {
      dict->Set(path[i], StateDict());
      next = dict->FindMutable(path[i]);
    }
    dict = &next->get<StateDict>();
  }
  dict->Set(path.back(), std::move(value));
}

StateDict MakeStateDict(int64_t n) {
  StateDict root;
  for (int64_t i = 0; i < n; ++i) {
    const auto& leaf = kLeaves[i % kPerLayer];
    std::vector<std::string> path = {"layers", absl::StrCat(i / kPerLayer),
                                     std::string(leaf[0])};
    if (!leaf[1].empty()) path.emplace_back(leaf[1]);
    path.emplace_back("weight");
    Insert(root, path, Value(at::zeros({1})));
  }
  return root;
}

void Check(const absl::Status& status, absl::string_view step) {
  if (status.ok()) return;
  std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(step.size()),
               step.data(), status.ToString().c_str());
  std::exit(1);
}

// Runs `fn` once and prints its row.
template <typename Fn>
void Row(const char* name, int64_t n, Fn fn) {
  microbench::PrintRow(name, n, microbench::BestSeconds(1, fn));
}

void RunCase(int64_t n) {
  StateDict state_dict = MakeStateDict(n);

  FlatStateDict flat;
  Row("flatten", n, [&] {
    absl::StatusOr<FlatStateDict> result = FlattenStateDict(state_dict);
    Check(result.status(), "flatten");
    flat = *std::move(result);
  });

  DefaultSavePlanner saver;
  SavePlan final_plan;
  Metadata metadata;
  Row("save_plan", n, [&] {
    Check(saver.SetUp(state_dict, nullptr, true), "save SetUp");
    absl::StatusOr<SavePlan> local = saver.CreateLocalPlan();
    Check(local.status(), "save CreateLocalPlan");
    std::vector<SavePlan> plans;
    plans.push_back(*std::move(local));
    absl::StatusOr<GlobalSavePlan> global =
        saver.CreateGlobalPlan(std::move(plans));
    Check(global.status(), "save CreateGlobalPlan");
    absl::StatusOr<SavePlan> finished =
        saver.FinishPlan(std::move(global->plans[0]));
    Check(finished.status(), "save FinishPlan");
    final_plan = *std::move(finished);
    metadata = std::move(global->metadata);
  });
  Row("resolve", n, [&] {
    for (const WriteItem& item : final_plan.items) {
      Check(saver.ResolveData(item).status(), "ResolveData");
    }
  });

  StateDict destination = state_dict;
  DefaultLoadPlanner loader;
  LoadPlan load_plan;
  Row("load_plan", n, [&] {
    Check(loader.SetUp(&destination, metadata, true), "load SetUp");
    absl::StatusOr<LoadPlan> local = loader.CreateLocalPlan();
    Check(local.status(), "load CreateLocalPlan");
    load_plan = *std::move(local);
  });
  Row("load_tensor", n, [&] {
    for (const ReadItem& item : load_plan.items) {
      Check(loader.ResolveTensor(item).status(), "ResolveTensor");
    }
  });

  Row("unflatten", n, [&] {
    Check(UnflattenStateDict(flat).status(), "unflatten");
  });
}

}  // namespace
}  // namespace dcp

int main(int argc, char** argv) {
  for (int64_t n : dcp::microbench::CountsFromArgs(argc, argv, "keys",
                                                   {10000, 100000, 1000000})) {
    dcp::RunCase(n);
  }
  return 0;
}
