// -----------------------------------------------------------------------------
// File: testing/runfiles.h
// -----------------------------------------------------------------------------
//
// Where a test finds the data files it declares in `data = [...]`:
//
//   std::string path = dcp::test::RunfilePath("storage/testdata/x.pt");
//
// `path_in_dcp` is the file's path in dcp's repository. The result is under
// Bazel's runfiles tree ($TEST_SRCDIR): `<TEST_SRCDIR>/<TEST_WORKSPACE>/path`
// when dcp is the main workspace, else `<TEST_SRCDIR>/dcp/path` (dcp as an
// external repository of a user's workspace). Outside `bazel test` (no
// TEST_SRCDIR) it is `path_in_dcp` itself, relative to the working
// directory. The file is not opened: a missing file is the caller's error
// to report.
//
// Thread safety: safe to call from any thread (reads the environment only).
#ifndef DCP_TESTING_RUNFILES_H_
#define DCP_TESTING_RUNFILES_H_

#include <string>

#include "absl/strings/string_view.h"

namespace dcp::test {

// See the file comment.
std::string RunfilePath(absl::string_view path_in_dcp);

// RunfilePath("testdata/pytorch_golden/<name>"): a checkpoint written by
// real PyTorch 2.6 (data dependency //testdata:pytorch_golden). Its files
// in the runfiles tree are symbolic links, which FileSystemReader refuses
// unless `allow_symlinks` is set.
std::string PytorchGoldenPath(absl::string_view name);

}  // namespace dcp::test

#endif  // DCP_TESTING_RUNFILES_H_
