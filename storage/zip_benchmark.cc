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
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "storage/zip.h"

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

// Seconds of the fastest of kRuns calls of `fn`.
template <typename Fn>
double Best(Fn fn) {
  double best = 1e100;
  for (int run = 0; run < kRuns; ++run) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    const std::chrono::duration<double> took =
        std::chrono::steady_clock::now() - start;
    best = std::min(best, took.count());
  }
  return best;
}

void Fail(absl::string_view what) {
  std::fprintf(stderr, "%.*s\n", static_cast<int>(what.size()), what.data());
  std::exit(1);
}

void Row(const char* name, int64_t n, double seconds) {
  std::printf("%-8s %9lld %9.3f %12.0f\n", name, static_cast<long long>(n),
              seconds, static_cast<double>(n) / seconds);
}

void RunCase(int64_t n) {
  const std::string archive = BuildArchive(n);
  Row("memory", n, Best([&] {
        absl::StatusOr<ZipDirectory> dir = ReadZipDirectory(archive);
        if (!dir.ok() || dir->entries.size() != static_cast<size_t>(n)) {
          Fail(absl::StrCat("memory: ", dir.status().ToString()));
        }
      }));
  Row("blocks", n, Best([&] {
        ZipByteSource source(archive.size(), [&](uint64_t off, uint64_t len) {
          return absl::StatusOr<std::string>(
              std::string(archive.substr(off, len)));
        });
        absl::StatusOr<ZipDirectory> dir = ReadZipDirectory(source);
        if (!dir.ok() || dir->entries.size() != static_cast<size_t>(n)) {
          Fail(absl::StrCat("blocks: ", dir.status().ToString()));
        }
      }));
  absl::StatusOr<ZipDirectory> dir = ReadZipDirectory(archive);
  if (!dir.ok()) Fail(dir.status().ToString());
  std::vector<std::string> keys;
  keys.reserve(n);
  for (int64_t i = 0; i < n; ++i) keys.push_back(absl::StrCat("data/", i));
  Row("find", n, Best([&] {
        for (const std::string& key : keys) {
          if (dir->Find(key) == nullptr) Fail(absl::StrCat("no ", key));
        }
      }));
}

}  // namespace
}  // namespace dcp

int main(int argc, char** argv) {
  std::vector<int64_t> counts;
  for (int i = 1; i < argc; ++i) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(argv[i], &n) || n < 1) {
      std::fprintf(stderr, "usage: %s [entries...]\n", argv[0]);
      return 2;
    }
    counts.push_back(n);
  }
  if (counts.empty()) counts = {100000, 200000, 400000};
  std::printf("%-8s %9s %9s %12s\n", "case", "entries", "seconds",
              "entries/s");
  for (int64_t n : counts) dcp::RunCase(n);
  return 0;
}
