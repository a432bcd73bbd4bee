#include "testing/runfiles.h"

#include <sys/stat.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace dcp::test {

std::string RunfilePath(absl::string_view path_in_dcp) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  if (srcdir == nullptr || *srcdir == '\0') return std::string(path_in_dcp);
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (workspace != nullptr && *workspace != '\0') {
    std::string in_main = absl::StrCat(srcdir, "/", workspace, "/", path_in_dcp);
    struct stat info;
    if (::stat(in_main.c_str(), &info) == 0) return in_main;
  }
  return absl::StrCat(srcdir, "/dcp/", path_in_dcp);
}

std::string PytorchGoldenPath(absl::string_view name) {
  return RunfilePath(absl::StrCat("testdata/pytorch_golden/", name));
}

}  // namespace dcp::test
