#include "core/torch_status.h"

#include <new>
#include <stdexcept>

#include "ATen/ATen.h"
#include "c10/util/Exception.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::IsOkAndHolds;
using ::dcp::test::StatusIs;
using ::testing::AllOf;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

TEST(TorchCallTest, ReturnsValueWhenNothingThrows) {
  EXPECT_THAT(TorchCall("sum", [] { return at::ones({3}).sum().item<float>(); }),
              IsOkAndHolds(Eq(3.0f)));
  EXPECT_THAT(TorchCall("noop", [] {}), IsOk());
}

TEST(TorchCallTest, RealLibtorchErrorBecomesStatusWithContext) {
  at::Tensor small = at::ones({4});
  absl::Status status =
      TorchCall("narrow", [&] { (void)small.narrow(0, 0, 9); });
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInternal,
                               StartsWith("narrow: ")));
  // what_without_backtrace(): no C++ stack dump in the message.
  EXPECT_THAT(std::string(status.message()),
              Not(HasSubstr("Exception raised from")));
}

TEST(TorchCallTest, MapsC10ExceptionTypesToCodes) {
  auto code_of = [](auto thrower) { return TorchCall("", thrower).code(); };
  EXPECT_EQ(code_of([] { TORCH_CHECK_INDEX(false, "index"); }),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(code_of([] { TORCH_CHECK_VALUE(false, "value"); }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code_of([] { TORCH_CHECK_TYPE(false, "type"); }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code_of([] { TORCH_CHECK_NOT_IMPLEMENTED(false, "nyi"); }),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(code_of([] { throw std::bad_alloc(); }),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(code_of([] { throw std::runtime_error("boom"); }),
            absl::StatusCode::kInternal);
  EXPECT_EQ(code_of([] { throw 42; }), absl::StatusCode::kInternal);
}

TEST(TorchCallTest, MessageCarriesLibtorchText) {
  EXPECT_THAT(TorchCall("load", [] { TORCH_CHECK_VALUE(false, "bad dtype 99"); }),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(StartsWith("load: "), HasSubstr("bad dtype 99"))));
}

}  // namespace
}  // namespace dcp
