// dcp_interop: the dcp side of the PyTorch 2.6 interop tests.
//
//   dcp_interop save --dir=D --world_size=N --case=CASE [--thread_count=T]
//                    [--nosingle_file_per_rank]
//   dcp_interop load --dir=D --world_size=M --case=CASE
//
// `save` writes CASE (tools/peer/README.md) from N simulated ranks; `load`
// reads D with M simulated ranks into CASE's layout for M ranks and compares
// every element and value with the formula values. Exit status: 0 when
// everything is equal, 1 on any difference or error, 2 on usage errors.
#include <iostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "tools/interop/interop.h"

DEFINE_string(dir, "", "Checkpoint directory.");
DEFINE_int32(world_size, 1, "Number of simulated ranks.");
DEFINE_string(case, "",
              "Case name: dtensor_row, dtensor_col, mesh2d, replicated, mixed "
              "(or golden_simple, golden_sharded4, golden_nonstrided).");
DEFINE_int32(thread_count, 1,
             "save: writer threads (and data files) per rank.");
DEFINE_bool(single_file_per_rank, true,
            "save: false writes one data file per item.");
DEFINE_bool(check_metadata, true,
            "load: also check .metadata keys, dtypes, sizes, chunks and "
            "planner_data.");
DEFINE_int32(timeout_s, 120, "Deadline of each collective, in seconds.");

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "dcp_interop save|load --dir=D --world_size=N --case=CASE");
  gflags::ParseCommandLineFlags(&argc, &argv, /*remove_flags=*/true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  if (argc != 2 || (std::string(argv[1]) != "save" &&
                    std::string(argv[1]) != "load")) {
    std::cerr << "usage: " << gflags::ProgramUsage() << "\n";
    return 2;
  }
  const std::string action = argv[1];
  dcp::tools::InteropOptions options;
  options.dir = FLAGS_dir;
  options.world_size = FLAGS_world_size;
  options.case_name = FLAGS_case;
  options.thread_count = FLAGS_thread_count;
  options.single_file_per_rank = FLAGS_single_file_per_rank;
  options.check_metadata = FLAGS_check_metadata;
  options.collective_timeout = absl::Seconds(FLAGS_timeout_s);
  const std::string what = action + " " + FLAGS_case + " with " +
                           std::to_string(FLAGS_world_size) + " ranks";

  if (action == "save") {
    absl::Status status = dcp::tools::SaveCase(options);
    if (!status.ok()) {
      LOG(ERROR) << status;
      std::cout << "dcp_interop: " << what << " FAILED: " << status << "\n";
      return 1;
    }
    std::cout << "dcp_interop: " << what << " OK\n";
    return 0;
  }
  absl::StatusOr<dcp::tools::LoadReport> report =
      dcp::tools::LoadCase(options);
  if (!report.ok()) {
    LOG(ERROR) << report.status();
    std::cout << "dcp_interop: " << what << " FAILED: " << report.status()
              << "\n";
    return 1;
  }
  for (const std::string& line : report->diffs) {
    std::cout << "DIFF " << line << "\n";
  }
  if (!report->diffs.empty()) {
    std::cout << "dcp_interop: " << what << " FAILED: "
              << report->diffs.size() << " differences\n";
    return 1;
  }
  std::cout << "dcp_interop: " << what << " OK: all " << report->leaves
            << " leaves equal\n";
  return 0;
}
