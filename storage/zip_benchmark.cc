// Zip directory parsing speed for archives of many entries, to show that
// ReadZipDirectory and ZipDirectory::Find are (near) linear in the number of
// entries: entries/s should stay about flat as the count doubles.
//
//   bazel run -c opt //storage:zip_benchmark -- 100000 200000 400000
//
// For each count n it builds an archive of n 4-byte entries
// ("archive/data/<i>") in memory and prints one row per case:
//
//   memory   ReadZipDirectory on the in-memory archive
//   blocks   ReadZipDirectory through a read function (ZipByteSource's
//            block cache, 4 KiB blocks), as records in files are read
//   find     n lookups by name with ZipDirectory::Find
//
// Timing uses the best of three runs. This is a benchmark, not a test: it
// checks only that parsing succeeds and finds every entry.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "storage/zip.h"
#include "testing/microbench.h"

namespace dcp {
namespace {

constexpr int kRuns = 3;

std::string BuildArchive(int64_t n) {
  std::vector<std::string> names;
  names.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    names.push_back(absl::StrCat("archive/data/", i));
  }
  std::vector<std::pair<std::string, absl::string_view>> entries;
  entries.reserve(n);
  for (int64_t i = 0; i < n; ++i) entries.emplace_back(names[i], "abcd");
  absl::StatusOr<std::string> archive = BuildZipArchive(entries);
  if (!archive.ok()) {
    std::fprintf(stderr, "building: %s\n", archive.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(archive);
}

void RunCase(int64_t n) {
  const std::string archive = BuildArchive(n);
  microbench::PrintRow("memory", n, microbench::BestSeconds(kRuns, [&] {
        absl::StatusOr<ZipDirectory> dir = ReadZipDirectory(archive);
        if (!dir.ok() || dir->entries.size() != static_cast<size_t>(n)) {
          microbench::Fail(absl::StrCat("memory: ", dir.status().ToString()));
        }
      }));
  microbench::PrintRow("blocks", n, microbench::BestSeconds(kRuns, [&] {
        ZipByteSource source(archive.size(), [&](uint64_t off, uint64_t len) {
          return absl::StatusOr<std::string>(
              std::string(archive.substr(off, len)));
        });
        absl::StatusOr<ZipDirectory> dir = ReadZipDirectory(source);
        if (!dir.ok() || dir->entries.size() != static_cast<size_t>(n)) {
          microbench::Fail(absl::StrCat("blocks: ", dir.status().ToString()));
        }
      }));
  absl::StatusOr<ZipDirectory> dir = ReadZipDirectory(archive);
  if (!dir.ok()) microbench::Fail(dir.status().ToString());
  std::vector<std::string> keys;
  keys.reserve(n);
  for (int64_t i = 0; i < n; ++i) keys.push_back(absl::StrCat("data/", i));
  microbench::PrintRow("find", n, microbench::BestSeconds(kRuns, [&] {
        for (const std::string& key : keys) {
          if (dir->Find(key) == nullptr) microbench::Fail(absl::StrCat("no ", key));
        }
      }));
}

}  // namespace
}  // namespace dcp

int main(int argc, char** argv) {
  for (int64_t n : dcp::microbench::CountsFromArgs(argc, argv, "entries",
                                                   {100000, 200000, 400000})) {
    dcp::RunCase(n);
  }
  return 0;
}
