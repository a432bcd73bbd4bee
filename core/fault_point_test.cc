#include "core/fault_point.h"

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::Eq;

// Fails every point named `fail_name` and records every name it sees.
// Used from one thread at a time in these tests.
class RecordingHandler : public FaultPointHandler {
 public:
  explicit RecordingHandler(std::string fail_name)
      : fail_name_(std::move(fail_name)) {}

  absl::Status OnFaultPoint(absl::string_view name) override {
    seen_.emplace_back(name);
    if (name == fail_name_) {
      return absl::UnavailableError(absl::StrCat("injected at ", name));
    }
    return absl::OkStatus();
  }

  const std::vector<std::string>& seen() const { return seen_; }

 private:
  std::string fail_name_;
  std::vector<std::string> seen_;
};

TEST(FaultPointTest, WithoutHandlerEveryPointIsOk) {
  EXPECT_EQ(CurrentFaultPointHandler(), nullptr);
  EXPECT_THAT(FaultPoint("save.write"), IsOk());
}

TEST(FaultPointTest, ScopedHandlerInjectsAndIsRemovedAfterScope) {
  RecordingHandler handler("save.write");
  {
    ScopedFaultPointHandler scoped(&handler);
    EXPECT_EQ(CurrentFaultPointHandler(), &handler);
    EXPECT_THAT(FaultPoint("save.plan"), IsOk());
    EXPECT_THAT(FaultPoint("save.write"),
                StatusIs(absl::StatusCode::kUnavailable,
                         Eq("injected at save.write")));
  }
  EXPECT_EQ(CurrentFaultPointHandler(), nullptr);
  EXPECT_THAT(FaultPoint("save.write"), IsOk());
  EXPECT_THAT(handler.seen(), ElementsAre("save.plan", "save.write"));
}

TEST(FaultPointTest, NestedScopesRestoreThePreviousHandler) {
  RecordingHandler outer("a");
  RecordingHandler inner("b");
  ScopedFaultPointHandler outer_scope(&outer);
  {
    ScopedFaultPointHandler inner_scope(&inner);
    EXPECT_THAT(FaultPoint("a"), IsOk());
    EXPECT_THAT(FaultPoint("b"), StatusIs(absl::StatusCode::kUnavailable));
    {
      ScopedFaultPointHandler none(nullptr);
      EXPECT_THAT(FaultPoint("b"), IsOk());
    }
    EXPECT_EQ(CurrentFaultPointHandler(), &inner);
  }
  EXPECT_EQ(CurrentFaultPointHandler(), &outer);
  EXPECT_THAT(FaultPoint("a"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(inner.seen(), ElementsAre("a", "b"));
  EXPECT_THAT(outer.seen(), ElementsAre("a"));
}

TEST(FaultPointTest, HandlerIsPerThreadAndCanBeCarriedToAnotherThread) {
  RecordingHandler handler("save.write");
  ScopedFaultPointHandler scoped(&handler);
  absl::Status without_handler;
  absl::Status with_carried_handler;
  FaultPointHandler* carried = CurrentFaultPointHandler();
  std::thread worker([&] {
    without_handler = FaultPoint("save.write");
    ScopedFaultPointHandler worker_scope(carried);
    with_carried_handler = FaultPoint("save.write");
  });
  worker.join();
  EXPECT_THAT(without_handler, IsOk());
  EXPECT_THAT(with_carried_handler, StatusIs(absl::StatusCode::kUnavailable));
}

}  // namespace
}  // namespace dcp
