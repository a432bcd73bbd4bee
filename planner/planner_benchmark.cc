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
//
// W4, planning for many ranks of one sharded model:
//
//   bazel run -c opt //planner:planner_benchmark -- w4 [save_ranks=1024]
//       [load_ranks=512] [tensors=200]
//
// builds `save_ranks` state dicts of `tensors` 4096x1024 float32 tensors,
// each rank holding its row chunk (ShardBoxAlongDim) as a ShardedTensor,
// and `load_ranks` destinations row-sharded the same way over fewer ranks.
// The local tensors are zero-stride views of one element: planning reads
// only shapes and dtypes, never data. It then times, with the inputs built
// beforehand,
//
//   save planning  PlanSaveForRanks (planner/lockstep.h): every rank's
//                  SetUp and local plan, the coordinator's global plan
//                  (dedup, Metadata, validation), every rank's FinishPlan;
//   load planning  PlanLoadForRanks against the Metadata just planned:
//                  every load rank's SetUp, local plan and FinishPlan;
//
// and prints machine-readable lines per step: wall-clock seconds of the
// fastest of up to 5 runs (repeated while the runs so far took under 2 s),
// and the least CPU time of those runs, which is the number to compare on
// a busy machine:
//
//   w4_save_plan_seconds 0.123
//   w4_save_plan_cpu_seconds 0.120
//   w4_load_plan_seconds 0.045
//   w4_load_plan_cpu_seconds 0.044
//
// It exits with status 1 if planning fails or gives a plan of the wrong
// size (one write item per shard; two read items per destination shard
// when the load world is half the save world).

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/sharding.h"
#include "core/state_dict.h"
#include "planner/default_load_planner.h"
#include "planner/default_save_planner.h"
#include "planner/flatten.h"
#include "planner/lockstep.h"
#include "testing/microbench.h"

namespace dcp {
namespace {

constexpr absl::string_view kLeaves[][2] = {
    {"attention", "wq"},    {"attention", "wk"},    {"attention", "wv"},
    {"attention", "wo"},    {"feed_forward", "w1"}, {"feed_forward", "w2"},
    {"attention_norm", ""}, {"ffn_norm", ""},
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
  std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(step.size()), step.data(),
               status.ToString().c_str());
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

  Row("unflatten", n,
      [&] { Check(UnflattenStateDict(flat).status(), "unflatten"); });
}

// Keeps the compiler from eliding ConsolidateFreed's allocation.
void* volatile benchmark_sink = nullptr;

// W4: see the file comment.
constexpr int64_t kW4Rows = 4096;
constexpr int64_t kW4Cols = 1024;

// The state dicts of `world` ranks, each holding its row chunk of
// `tensors` kW4Rows x kW4Cols float32 tensors as
// {"layers": {"<t>": {"weight": ShardedTensor}}}.
std::vector<StateDict> MakeRowShardedStateDicts(int world, int64_t tensors) {
  const Shape global = {kW4Rows, kW4Cols};
  // Local tensors by shape: zero-stride views of one element, shared by
  // every shard of that shape.
  std::map<Shape, at::Tensor> locals;
  std::vector<StateDict> per_rank(world);
  for (int rank = 0; rank < world; ++rank) {
    absl::StatusOr<ChunkStorageMetadata> box =
        ShardBoxAlongDim(global, 0, rank, world);
    Check(box.status(), "ShardBoxAlongDim");
    at::Tensor& local = locals[box->sizes];
    if (!local.defined()) local = at::zeros({1}).expand(box->sizes);
    StateDict layers;
    for (int64_t t = 0; t < tensors; ++t) {
      ShardedTensor sharded{global, {Shard{local, box->offsets}}};
      layers.Set(absl::StrCat(t), StateDict{{"weight", std::move(sharded)}});
    }
    per_rank[rank].Set("layers", std::move(layers));
  }
  return per_rank;
}

// Lets glibc consolidate what the previous run (or building the inputs)
// freed now, untimed, instead of in the next run's first large allocation:
// a large request does that (malloc_trim would also return the pages to
// the kernel, and the timed run would then fault them back in).
void ConsolidateFreed() {
  void* block = std::malloc(64 << 10);
  benchmark_sink = block;
  std::free(block);
}

struct Timing {
  double seconds;      // wall clock
  double cpu_seconds;  // this process's CPU time (the machine may be busy)
};

// Best of up to 5 runs of `fn`, running again while the total is under 2 s.
// `reset` runs untimed before each run (to free the previous run's result).
template <typename Reset, typename Fn>
Timing TimeRepeated(Reset reset, Fn fn) {
  Timing best{1e100, 1e100};
  double total = 0;
  for (int run = 0; run < 5 && (run == 0 || total < 2.0); ++run) {
    reset();
    const std::clock_t cpu_start = std::clock();
    const double seconds = microbench::BestSeconds(1, fn);
    const double cpu_seconds =
        static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
    best.seconds = std::min(best.seconds, seconds);
    best.cpu_seconds = std::min(best.cpu_seconds, cpu_seconds);
    total += seconds;
  }
  return best;
}

void RunW4(int save_ranks, int load_ranks, int64_t tensors) {
  std::printf("w4: save %d ranks, load %d ranks, %lld tensors of %lldx%lld\n",
              save_ranks, load_ranks, static_cast<long long>(tensors),
              static_cast<long long>(kW4Rows), static_cast<long long>(kW4Cols));
  std::vector<StateDict> saved = MakeRowShardedStateDicts(save_ranks, tensors);
  std::vector<const StateDict*> saved_ptrs;
  for (const StateDict& sd : saved) saved_ptrs.push_back(&sd);

  GlobalSavePlan global;
  const Timing save = TimeRepeated(
      [&] {
        global = {};
        ConsolidateFreed();
      },
      [&] {
        absl::StatusOr<GlobalSavePlan> result = PlanSaveForRanks(saved_ptrs);
        Check(result.status(), "PlanSaveForRanks");
        global = *std::move(result);
      });
  size_t write_items = 0;
  for (const SavePlan& plan : global.plans) write_items += plan.items.size();
  if (write_items != static_cast<size_t>(save_ranks * tensors)) {
    microbench::Fail(absl::StrCat("w4: ", write_items, " write items"));
  }
  std::printf("w4_save_plan_seconds %.6f\n", save.seconds);
  std::printf("w4_save_plan_cpu_seconds %.6f\n", save.cpu_seconds);
  std::fflush(stdout);

  std::vector<StateDict> dests = MakeRowShardedStateDicts(load_ranks, tensors);
  std::vector<StateDict*> dest_ptrs;
  for (StateDict& sd : dests) dest_ptrs.push_back(&sd);
  std::vector<LoadPlan> load_plans;
  const Timing load = TimeRepeated(
      [&] {
        load_plans.clear();
        ConsolidateFreed();
      },
      [&] {
        absl::StatusOr<std::vector<LoadPlan>> result =
            PlanLoadForRanks(global.metadata, dest_ptrs);
        Check(result.status(), "PlanLoadForRanks");
        load_plans = *std::move(result);
      });
  size_t read_items = 0;
  for (const LoadPlan& plan : load_plans) read_items += plan.items.size();
  if (save_ranks == 2 * load_ranks && kW4Rows % save_ranks == 0 &&
      read_items != static_cast<size_t>(2 * load_ranks * tensors)) {
    microbench::Fail(absl::StrCat("w4: ", read_items, " read items"));
  }
  std::printf("w4_load_plan_seconds %.6f\n", load.seconds);
  std::printf("w4_load_plan_cpu_seconds %.6f\n", load.cpu_seconds);
  std::printf("w4: %zu write items, %zu read items\n", write_items, read_items);
}

// `planner_benchmark w4 [save_ranks] [load_ranks] [tensors]`.
void RunW4FromArgs(int argc, char** argv) {
  int64_t values[3] = {1024, 512, 200};
  if (argc > 5) {
    std::fprintf(stderr, "usage: %s w4 [save_ranks] [load_ranks] [tensors]\n",
                 argv[0]);
    std::exit(2);
  }
  for (int i = 2; i < argc; ++i) {
    if (!absl::SimpleAtoi(argv[i], &values[i - 2]) || values[i - 2] < 1 ||
        values[i - 2] > (int64_t{1} << 20)) {
      std::fprintf(stderr, "usage: %s w4 [save_ranks] [load_ranks] [tensors]\n",
                   argv[0]);
      std::exit(2);
    }
  }
  RunW4(static_cast<int>(values[0]), static_cast<int>(values[1]), values[2]);
}

}  // namespace
}  // namespace dcp

int main(int argc, char** argv) {
  if (argc > 1 && absl::string_view(argv[1]) == "w4") {
    dcp::RunW4FromArgs(argc, argv);
    return 0;
  }
  for (int64_t n : dcp::microbench::CountsFromArgs(argc, argv, "keys",
                                                   {10000, 100000, 1000000})) {
    dcp::RunCase(n);
  }
  return 0;
}
