// -----------------------------------------------------------------------------
// File: testing/test_seed.h
// -----------------------------------------------------------------------------
//
// The seed of every randomised test (fuzz, mutation, crash and property
// tests), so that each run is reproducible:
//
//   const uint32_t seed = dcp::test::TestSeed();
//   std::mt19937 rng(seed);
//
// `TestSeed()` returns the environment variable DCP_TEST_SEED if it is set
// (a decimal uint32), else the fixed `kDefaultTestSeed`. It prints the seed
// on stderr with the current test's name and, when called inside a test,
// records it as the test property "dcp_test_seed" (in Bazel's test.xml);
// tests also put it in a SCOPED_TRACE so that every failure names it.
// Another seed is one flag away:
//
//   bazel test //storage:pickle_test --test_env=DCP_TEST_SEED=12345
//
// A DCP_TEST_SEED that is not a uint32 fails the test (ADD_FAILURE) and the
// default seed is used.
//
// Thread safety: call from the test's main thread.
#ifndef DCP_TESTING_TEST_SEED_H_
#define DCP_TESTING_TEST_SEED_H_

#include <cstdint>

namespace dcp::test {

// The seed used when DCP_TEST_SEED is not set.
inline constexpr uint32_t kDefaultTestSeed = 20240611;

// See the file comment.
uint32_t TestSeed();

}  // namespace dcp::test

#endif  // DCP_TESTING_TEST_SEED_H_
