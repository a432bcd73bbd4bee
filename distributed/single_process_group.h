// -----------------------------------------------------------------------------
// File: distributed/single_process_group.h
// -----------------------------------------------------------------------------
//
// `SingleProcessGroup`: a world of one (rank 0 of 1), the `no_dist` case of
// PyTorch DCP. Every collective completes immediately on the calling thread:
//
//   Barrier     OK
//   Broadcast   returns `payload`
//   Gather      returns {payload}
//   AllGather   returns {payload}
//   Scatter     returns payloads[0]
//   Fork        returns a new, independent `SingleProcessGroup`
//
// Deadlines are accepted and ignored: there is never anyone to wait for.
//
// Errors: `InvalidArgument` if `root` is not 0, or if Scatter is given a
// number of payloads other than 1. The message names the tag.
//
// Thread safety: stateless; every method may be called from any thread.
#ifndef DCP_DISTRIBUTED_SINGLE_PROCESS_GROUP_H_
#define DCP_DISTRIBUTED_SINGLE_PROCESS_GROUP_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "distributed/process_group.h"

namespace dcp {

class SingleProcessGroup : public ProcessGroup {
 public:
  SingleProcessGroup() = default;

  int rank() const override { return 0; }
  int size() const override { return 1; }

  absl::Status Barrier(absl::string_view tag, absl::Time deadline) override;
  absl::StatusOr<std::string> Broadcast(absl::string_view tag, int root,
                                        std::string payload,
                                        absl::Time deadline) override;
  absl::StatusOr<std::vector<std::string>> Gather(absl::string_view tag,
                                                  int root, std::string payload,
                                                  absl::Time deadline) override;
  absl::StatusOr<std::string> Scatter(absl::string_view tag, int root,
                                      std::vector<std::string> payloads,
                                      absl::Time deadline) override;
  absl::StatusOr<std::vector<std::string>> AllGather(
      absl::string_view tag, std::string payload, absl::Time deadline) override;
  absl::StatusOr<std::shared_ptr<ProcessGroup>> Fork(
      absl::string_view tag, absl::Time deadline) override;
};

}  // namespace dcp

#endif  // DCP_DISTRIBUTED_SINGLE_PROCESS_GROUP_H_
