// -----------------------------------------------------------------------------
// File: core/codec_test_util.h
// -----------------------------------------------------------------------------
//
// Robustness checks shared by the tests of dcp's binary codecs
// (core/metadata_codec_test.cc, planner/plan_codec_test.cc). Each
// takes a decoder `absl::StatusOr<T>(absl::string_view)` and an encoder
// `std::string(const T&)` and asserts, with gtest, that hostile input never
// crashes, never over-allocates (run under ASan), and never decodes to a
// value that re-encodes differently (the encodings are canonical).
//
// Randomised checks take their seed from `CodecTestSeed()`, which is
// `dcp::test::TestSeed()` (testing/test_seed.h): the environment variable
// DCP_TEST_SEED if set, else a fixed default; the seed is printed and
// attached to failures.
#ifndef DCP_CORE_CODEC_TEST_UTIL_H_
#define DCP_CORE_CODEC_TEST_UTIL_H_

#include <cstdint>
#include <random>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "glog/logging.h"
#include "gtest/gtest.h"
#include "testing/test_seed.h"

namespace dcp::test {

inline uint32_t CodecTestSeed() { return TestSeed(); }

// A decode that succeeds must re-encode to exactly `bytes`; a decode that
// fails must fail with DataLoss. Returns whether the decode succeeded.
template <typename Decode, typename Encode>
bool ExpectDataLossOrCanonical(absl::string_view bytes, Decode decode,
                               Encode encode) {
  auto decoded = decode(bytes);
  if (decoded.ok()) {
    EXPECT_EQ(encode(*decoded), bytes)
        << "a successful decode must re-encode to the input";
    return true;
  }
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss)
      << decoded.status();
  return false;
}

// Every strict prefix of the valid encoding `valid` fails with DataLoss.
template <typename Decode>
void ExpectEveryTruncationFails(absl::string_view valid, Decode decode) {
  for (size_t n = 0; n < valid.size(); ++n) {
    auto decoded = decode(valid.substr(0, n));
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss)
        << "prefix of " << n << " of " << valid.size()
        << " bytes: " << decoded.status();
  }
}

// Decodes `iterations` random byte strings (half of them behind `header`, so
// that they get past the magic byte) and `iterations` random mutations of
// `valid` (1 to 4 flipped, replaced, inserted or removed bytes).
template <typename Decode, typename Encode>
void FuzzDecoder(absl::string_view valid, absl::string_view header,
                 Decode decode, Encode encode, uint32_t seed,
                 int iterations = 2000) {
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  int random_decoded = 0;
  int mutated_decoded = 0;
  for (int i = 0; i < iterations; ++i) {
    std::string input = (i % 2 == 0) ? std::string(header) : std::string();
    const int length = std::uniform_int_distribution<int>(0, 64)(rng);
    for (int j = 0; j < length; ++j)
      input.push_back(static_cast<char>(byte(rng)));
    random_decoded += ExpectDataLossOrCanonical(input, decode, encode);
    if (::testing::Test::HasFailure()) return;
  }
  for (int i = 0; i < iterations; ++i) {
    std::string input(valid);
    const int mutations = std::uniform_int_distribution<int>(1, 4)(rng);
    for (int m = 0; m < mutations; ++m) {
      const int kind = std::uniform_int_distribution<int>(0, 3)(rng);
      const size_t at = input.empty() ? 0
                                      : std::uniform_int_distribution<size_t>(
                                            0, input.size() - 1)(rng);
      if (input.empty() || kind == 2) {
        input.insert(input.begin() + at, static_cast<char>(byte(rng)));
      } else if (kind == 0) {
        input[at] = static_cast<char>(input[at] ^ (1 << (byte(rng) % 8)));
      } else if (kind == 1) {
        input[at] = static_cast<char>(byte(rng));
      } else {
        input.erase(at, 1);
      }
    }
    mutated_decoded += ExpectDataLossOrCanonical(input, decode, encode);
    if (::testing::Test::HasFailure()) return;
  }
  LOG(INFO) << "decoded " << random_decoded << " of " << iterations
            << " random inputs and " << mutated_decoded << " of " << iterations
            << " mutated encodings; the rest were DataLoss";
  // Random bytes are nearly always rejected; mutations are sometimes
  // harmless (a changed payload byte) and sometimes caught.
  EXPECT_LT(random_decoded, iterations);
  EXPECT_GT(mutated_decoded, 0);
  EXPECT_LT(mutated_decoded, iterations);
}

}  // namespace dcp::test

#endif  // DCP_CORE_CODEC_TEST_UTIL_H_
