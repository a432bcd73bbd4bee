// -----------------------------------------------------------------------------
// File: testing/status_matchers.h
// -----------------------------------------------------------------------------
//
// gMock matchers and assertion macros for `absl::Status` and
// `absl::StatusOr<T>` (Abseil 20220623 ships none):
//
//   EXPECT_THAT(status, IsOk());
//   EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound));
//   EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound, HasSubstr("x")));
//   EXPECT_THAT(statusor, IsOkAndHolds(Eq(3)));
//   DCP_ASSERT_OK(status);  DCP_EXPECT_OK(status);
//   DCP_ASSERT_OK_AND_ASSIGN(auto value, MakeValue());
//
// All matchers accept both `absl::Status` and `absl::StatusOr<T>`.
#ifndef DCP_TESTING_STATUS_MATCHERS_H_
#define DCP_TESTING_STATUS_MATCHERS_H_

#include <ostream>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcp::test {
namespace status_matchers_internal {

inline const absl::Status& GetStatus(const absl::Status& status) {
  return status;
}

template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

class IsOkMatcher {
 public:
  template <typename StatusType>
  bool MatchAndExplain(const StatusType& value,
                       ::testing::MatchResultListener* listener) const {
    const absl::Status& status = GetStatus(value);
    if (!status.ok()) *listener << "which is " << status;
    return status.ok();
  }
  void DescribeTo(std::ostream* os) const { *os << "is OK"; }
  void DescribeNegationTo(std::ostream* os) const { *os << "is not OK"; }
};

class StatusIsMatcher {
 public:
  StatusIsMatcher(absl::StatusCode code,
                  ::testing::Matcher<const std::string&> message)
      : code_(code), message_(std::move(message)) {}

  template <typename StatusType>
  bool MatchAndExplain(const StatusType& value,
                       ::testing::MatchResultListener* listener) const {
    const absl::Status& status = GetStatus(value);
    *listener << "which is " << status;
    if (status.code() != code_) return false;
    return message_.Matches(std::string(status.message()));
  }
  void DescribeTo(std::ostream* os) const {
    *os << "has code " << absl::StatusCodeToString(code_)
        << " and a message that ";
    message_.DescribeTo(os);
  }
  void DescribeNegationTo(std::ostream* os) const {
    *os << "does not have code " << absl::StatusCodeToString(code_)
        << " or has a message that ";
    message_.DescribeNegationTo(os);
  }

 private:
  absl::StatusCode code_;
  ::testing::Matcher<const std::string&> message_;
};

template <typename InnerMatcher>
class IsOkAndHoldsMatcher {
 public:
  explicit IsOkAndHoldsMatcher(InnerMatcher inner) : inner_(std::move(inner)) {}

  template <typename T>
  bool MatchAndExplain(const absl::StatusOr<T>& value,
                       ::testing::MatchResultListener* listener) const {
    if (!value.ok()) {
      *listener << "which is " << value.status();
      return false;
    }
    ::testing::Matcher<const T&> matcher =
        ::testing::SafeMatcherCast<const T&>(inner_);
    return matcher.MatchAndExplain(*value, listener);
  }
  void DescribeTo(std::ostream* os) const {
    *os << "is OK and holds a matching value";
  }
  void DescribeNegationTo(std::ostream* os) const {
    *os << "is not OK or holds a value that does not match";
  }

 private:
  InnerMatcher inner_;
};

}  // namespace status_matchers_internal

// Matches an OK `absl::Status` or `absl::StatusOr<T>`; explains a mismatch
// with the status.
inline ::testing::PolymorphicMatcher<status_matchers_internal::IsOkMatcher>
IsOk() {
  return ::testing::MakePolymorphicMatcher(
      status_matchers_internal::IsOkMatcher());
}

// Matches a status (or a StatusOr's status) with code `code` whose message
// matches `message` (any message by default). With kOk it matches OK.
inline ::testing::PolymorphicMatcher<status_matchers_internal::StatusIsMatcher>
StatusIs(absl::StatusCode code,
         ::testing::Matcher<const std::string&> message = ::testing::_) {
  return ::testing::MakePolymorphicMatcher(
      status_matchers_internal::StatusIsMatcher(code, std::move(message)));
}

// Matches an OK `absl::StatusOr<T>` whose value matches `inner` (a matcher
// of `const T&`, or a value to compare with ==). Only for StatusOr.
template <typename InnerMatcher>
::testing::PolymorphicMatcher<
    status_matchers_internal::IsOkAndHoldsMatcher<InnerMatcher>>
IsOkAndHolds(InnerMatcher inner) {
  return ::testing::MakePolymorphicMatcher(
      status_matchers_internal::IsOkAndHoldsMatcher<InnerMatcher>(
          std::move(inner)));
}

}  // namespace dcp::test

// EXPECT_THAT / ASSERT_THAT `expr` (a Status or StatusOr) IsOk().
#define DCP_EXPECT_OK(expr) EXPECT_THAT((expr), ::dcp::test::IsOk())
#define DCP_ASSERT_OK(expr) ASSERT_THAT((expr), ::dcp::test::IsOk())

// Evaluates `rexpr` (a StatusOr) once; if it is not OK, fails the test with
// the status and returns from the enclosing function (so, like ASSERT_*,
// only in functions returning void); else moves the value into `lhs`,
// which may declare a variable. At most one per line.
#define DCP_ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  DCP_TESTING_ASSERT_OK_AND_ASSIGN_IMPL_(    \
      DCP_TESTING_CONCAT_(dcp_testing_statusor_, __LINE__), lhs, rexpr)
#define DCP_TESTING_ASSERT_OK_AND_ASSIGN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                           \
  ASSERT_TRUE(statusor.ok()) << statusor.status();                   \
  lhs = *std::move(statusor)
#define DCP_TESTING_CONCAT_(a, b) DCP_TESTING_CONCAT_IMPL_(a, b)
#define DCP_TESTING_CONCAT_IMPL_(a, b) a##b

#endif  // DCP_TESTING_STATUS_MATCHERS_H_
