// -----------------------------------------------------------------------------
// File: testing/file_system_conformance.h
// -----------------------------------------------------------------------------
//
// A gtest suite every `FileSystem` implementation passes: the behaviour and
// error codes documented in storage/file_system.h. An implementation's test
// instantiates it:
//
//   INSTANTIATE_TEST_SUITE_P(
//       Mem, FileSystemConformanceTest,
//       ::testing::Values(FileSystemConformanceParams{
//           "Mem", [] { return MemFileSystemUnderTest(); }}),
//       [](const auto& info) { return info.param.name; });
//
// The test target must depend on //testing:file_system_conformance, which
// is `alwayslink` so the TEST_P bodies are linked.
#ifndef DCP_TESTING_FILE_SYSTEM_CONFORMANCE_H_
#define DCP_TESTING_FILE_SYSTEM_CONFORMANCE_H_

#include <functional>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "storage/file_system.h"

namespace dcp::test {

// A file system and an existing, empty directory in it for one test.
struct FileSystemUnderTest {
  std::shared_ptr<FileSystem> fs;
  std::string root;
};

struct FileSystemConformanceParams {
  std::string name;  // A valid gtest name: letters, digits, '_'.
  // Called once per test, in SetUp, for a fresh file system and root; a
  // null `fs` fails the test.
  std::function<FileSystemUnderTest()> make;
};

class FileSystemConformanceTest
    : public ::testing::TestWithParam<FileSystemConformanceParams> {
 protected:
  void SetUp() override;

  // `name` inside the test's root directory (JoinPath(root_, name)).
  std::string Path(const std::string& name) const;

  std::shared_ptr<FileSystem> fs_;
  std::string root_;
};

}  // namespace dcp::test

#endif  // DCP_TESTING_FILE_SYSTEM_CONFORMANCE_H_
