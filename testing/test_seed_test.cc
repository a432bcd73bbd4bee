#include "testing/test_seed.h"

#include <cstdint>
#include <cstdlib>
#include <string>

#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"

namespace dcp::test {
namespace {

// Restores DCP_TEST_SEED (set or not) when it goes out of scope.
class ScopedSeedEnv {
 public:
  explicit ScopedSeedEnv(const char* value) {
    if (const char* old = std::getenv("DCP_TEST_SEED")) {
      had_ = true;
      old_ = old;
    }
    if (value == nullptr) {
      unsetenv("DCP_TEST_SEED");
    } else {
      setenv("DCP_TEST_SEED", value, /*overwrite=*/1);
    }
  }
  ~ScopedSeedEnv() {
    if (had_) {
      setenv("DCP_TEST_SEED", old_.c_str(), 1);
    } else {
      unsetenv("DCP_TEST_SEED");
    }
  }

 private:
  bool had_ = false;
  std::string old_;
};

TEST(TestSeedTest, DefaultsToTheFixedSeed) {
  ScopedSeedEnv env(nullptr);
  EXPECT_EQ(TestSeed(), kDefaultTestSeed);
  EXPECT_EQ(TestSeed(), TestSeed());
}

TEST(TestSeedTest, TheEnvironmentOverridesIt) {
  ScopedSeedEnv env("4000000000");
  EXPECT_EQ(TestSeed(), 4000000000u);
}

TEST(TestSeedTest, AMalformedSeedFailsTheTest) {
  ScopedSeedEnv env("12x");
  uint32_t seed = 0;
  EXPECT_NONFATAL_FAILURE(seed = TestSeed(), "is not a uint32");
  EXPECT_EQ(seed, kDefaultTestSeed);
}

}  // namespace
}  // namespace dcp::test
