#include "testing/test_seed.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "gtest/gtest.h"

namespace dcp::test {

uint32_t TestSeed() {
  uint32_t seed = kDefaultTestSeed;
  const char* env = std::getenv("DCP_TEST_SEED");
  if (env != nullptr && !absl::SimpleAtoi(env, &seed)) {
    ADD_FAILURE() << "DCP_TEST_SEED=\"" << env << "\" is not a uint32";
    seed = kDefaultTestSeed;
  }
  const ::testing::TestInfo* test =
      ::testing::UnitTest::GetInstance()->current_test_info();
  std::fprintf(stderr, "%s%s%s: DCP_TEST_SEED=%u (%s)\n",
               test != nullptr ? test->test_suite_name() : "",
               test != nullptr ? "." : "", test != nullptr ? test->name() : "",
               static_cast<unsigned>(seed),
               env != nullptr ? "from the environment"
                              : "the default; set DCP_TEST_SEED to vary it");
  if (test != nullptr) {
    ::testing::Test::RecordProperty("dcp_test_seed", std::to_string(seed));
  }
  return seed;
}

}  // namespace dcp::test
