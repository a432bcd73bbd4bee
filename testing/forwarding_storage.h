// -----------------------------------------------------------------------------
// File: testing/forwarding_storage.h
// -----------------------------------------------------------------------------
//
// `ForwardingStorageWriter` and `ForwardingStorageReader`: decorators for
// tests. Every call goes to the target; a test derives one and overrides
// the calls it wants to observe, hold or fail:
//
//   class FailingReset : public ForwardingStorageWriter {
//    public:
//     using ForwardingStorageWriter::ForwardingStorageWriter;
//     absl::Status Reset(std::optional<std::string>) override {
//       return absl::PermissionDeniedError("no");
//     }
//   };
//
// Ownership: constructed from a shared_ptr, the decorator shares the
// target; from a reference, the target must outlive it.
// Thread safety: as the target's.
#ifndef DCP_TESTING_FORWARDING_STORAGE_H_
#define DCP_TESTING_FORWARDING_STORAGE_H_

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/metadata.h"
#include "storage/storage.h"

namespace dcp::test {

class ForwardingStorageWriter : public StorageWriter {
 public:
  explicit ForwardingStorageWriter(std::shared_ptr<StorageWriter> target)
      : owned_(std::move(target)), target_(*owned_) {}
  explicit ForwardingStorageWriter(StorageWriter& target) : target_(target) {}

  absl::Status Reset(std::optional<std::string> checkpoint_id) override {
    return target_.Reset(std::move(checkpoint_id));
  }
  std::optional<StorageMeta> StorageMetaForSave() const override {
    return target_.StorageMetaForSave();
  }
  absl::Status SetUp(bool is_coordinator) override {
    return target_.SetUp(is_coordinator);
  }
  absl::StatusOr<SavePlan> PrepareLocalPlan(SavePlan plan) override {
    return target_.PrepareLocalPlan(std::move(plan));
  }
  absl::StatusOr<std::vector<SavePlan>> PrepareGlobalPlan(
      std::vector<SavePlan> plans) override {
    return target_.PrepareGlobalPlan(std::move(plans));
  }
  absl::StatusOr<std::vector<WriteResult>> WriteData(
      const SavePlan& plan, SavePlanner& planner) override {
    return target_.WriteData(plan, planner);
  }
  absl::Status Finish(
      Metadata& metadata,
      const std::vector<std::vector<WriteResult>>& results) override {
    return target_.Finish(metadata, results);
  }
  void AbortSave() override { target_.AbortSave(); }

 protected:
  StorageWriter& target() const { return target_; }

 private:
  std::shared_ptr<StorageWriter> owned_;
  StorageWriter& target_;
};

class ForwardingStorageReader : public StorageReader {
 public:
  explicit ForwardingStorageReader(std::shared_ptr<StorageReader> target)
      : owned_(std::move(target)), target_(*owned_) {}
  explicit ForwardingStorageReader(StorageReader& target) : target_(target) {}

  absl::Status Reset(std::optional<std::string> checkpoint_id) override {
    return target_.Reset(std::move(checkpoint_id));
  }
  absl::StatusOr<Metadata> ReadMetadata() override {
    return target_.ReadMetadata();
  }
  absl::StatusOr<EncodedMetadata> ReadEncodedMetadata() override {
    return target_.ReadEncodedMetadata();
  }
  absl::Status SetUp(const Metadata& metadata, bool is_coordinator) override {
    return target_.SetUp(metadata, is_coordinator);
  }
  absl::Status SetUpShared(std::shared_ptr<const Metadata> metadata,
                           bool is_coordinator) override {
    return target_.SetUpShared(std::move(metadata), is_coordinator);
  }
  absl::StatusOr<LoadPlan> PrepareLocalPlan(LoadPlan plan) override {
    return target_.PrepareLocalPlan(std::move(plan));
  }
  absl::StatusOr<std::vector<LoadPlan>> PrepareGlobalPlan(
      std::vector<LoadPlan> plans) override {
    return target_.PrepareGlobalPlan(std::move(plans));
  }
  absl::Status ReadData(const LoadPlan& plan, LoadPlanner& planner) override {
    return target_.ReadData(plan, planner);
  }

 protected:
  StorageReader& target() const { return target_; }

 private:
  std::shared_ptr<StorageReader> owned_;
  StorageReader& target_;
};

}  // namespace dcp::test

#endif  // DCP_TESTING_FORWARDING_STORAGE_H_
