// Limits for untrusted checkpoints (issue 9 items 1, 2 and 8): a hostile
// `.metadata` or value record fails with ResourceExhausted naming the file,
// in bounded memory, through ReadCheckpointMetadata and through a load with
// FileSystemReader; an oversized `.metadata` is refused from its size.
//
// Memory is measured by replacing the global operator new/delete (all
// unaligned forms): heap
// bytes live (malloc_usable_size) and their peak, and, while a
// `HeapCap` is in scope, a std::bad_alloc for any allocation beyond its
// cap, so a decoder that materialises 20 GiB fails the test at once
// instead of exhausting the machine. (libtorch's tensor memory does not go
// through operator new and is not counted.)
#include <malloc.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "checkpoint/save_load.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/hostile_metadata_testutil.h"
#include "storage/metadata_pickle.h"
#include "storage/zip.h"
#include "testing/fault_injecting_file_system.h"
#include "testing/mem_file_system.h"
#include "testing/status_matchers.h"

namespace {

std::atomic<int64_t> g_live_bytes{0};
std::atomic<int64_t> g_peak_bytes{0};
// Allocations that would take the live bytes above this fail; 0: no cap.
std::atomic<int64_t> g_cap_bytes{0};

void* CountedAlloc(size_t n) {
  const int64_t cap = g_cap_bytes.load(std::memory_order_relaxed);
  if (cap != 0 && g_live_bytes.load(std::memory_order_relaxed) +
                          static_cast<int64_t>(n) >
                      cap) {
    throw std::bad_alloc();
  }
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  const int64_t live =
      g_live_bytes.fetch_add(malloc_usable_size(p)) + malloc_usable_size(p);
  int64_t peak = g_peak_bytes.load(std::memory_order_relaxed);
  while (live > peak && !g_peak_bytes.compare_exchange_weak(peak, live)) {
  }
  return p;
}

void CountedFree(void* p) {
  if (p == nullptr) return;
  g_live_bytes.fetch_sub(malloc_usable_size(p));
  std::free(p);
}

}  // namespace

void* operator new(size_t n) { return CountedAlloc(n); }
void* operator new[](size_t n) { return CountedAlloc(n); }
void operator delete(void* p) noexcept { CountedFree(p); }
void operator delete[](void* p) noexcept { CountedFree(p); }
void operator delete(void* p, size_t) noexcept { CountedFree(p); }
void operator delete[](void* p, size_t) noexcept { CountedFree(p); }
// The nothrow forms too, or a sanitizer's would pair with ours (std::
// stable_sort's buffer uses them). Aligned forms keep their own pairs.
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  try {
    return CountedAlloc(n);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](size_t n, const std::nothrow_t& tag) noexcept {
  return operator new(n, tag);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  CountedFree(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  CountedFree(p);
}

namespace dcp {
namespace {

using ::dcp::test::FaultInjectingFileSystem;
using ::dcp::test::FaultRule;
using ::dcp::test::FileOp;
using ::dcp::test::IsOk;
using ::dcp::test::MemFileSystem;
using ::dcp::test::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr absl::string_view kDir = "/ckpt";
constexpr int64_t kMiB = int64_t{1} << 20;

// While in scope, the heap may grow by at most `cap_bytes` over what is
// live at construction; `peak_growth()` is the largest growth seen.
class HeapCap {
 public:
  explicit HeapCap(int64_t cap_bytes) : base_(g_live_bytes.load()) {
    g_peak_bytes.store(base_);
    g_cap_bytes.store(base_ + cap_bytes);
  }
  ~HeapCap() { g_cap_bytes.store(0); }
  int64_t peak_growth() const { return g_peak_bytes.load() - base_; }

 private:
  const int64_t base_;
};

void WriteFile(FileSystem& fs, absl::string_view path, absl::string_view data) {
  ASSERT_THAT(WriteStringToFile(fs, path, data, /*sync=*/false), IsOk());
}

absl::Status LoadFrom(std::shared_ptr<FileSystem> fs, StateDict& sd,
                      FileSystemReaderOptions options = {}) {
  options.file_system = std::move(fs);
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                       FileSystemReader::Create(std::string(kDir), options));
  LoadOptions load;
  load.no_dist = true;
  return Load(sd, *reader, load);
}

class FsStorageLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_THAT(fs_->CreateDir(kDir), IsOk()); }

  std::shared_ptr<MemFileSystem> fs_ = std::make_shared<MemFileSystem>();
};

// The reported file: 20,000 storage entries whose fqn is one memoized
// 1 MiB key (20 GiB once copied per entry; it used to end in bad_alloc).
TEST_F(FsStorageLimitsTest, SharedHugeKeyMetadataFailsCleanlyInBoundedMemory) {
  WriteFile(*fs_, "/ckpt/.metadata",
            dcp::test::SharedKeyMetadataPickle(20000, 1 << 20));
  const auto expected = StatusIs(
      absl::StatusCode::kResourceExhausted,
      AllOf(HasSubstr("decoding /ckpt/.metadata"),
            HasSubstr("expands to more than")));
  {
    HeapCap cap(512 * kMiB);
    EXPECT_THAT(ReadCheckpointMetadata(std::string(kDir), fs_), expected);
    EXPECT_LT(cap.peak_growth(), 64 * kMiB);
  }
  {
    HeapCap cap(512 * kMiB);
    StateDict dest{{std::string(1 << 20, 'k'), Value(None{})}};
    EXPECT_THAT(LoadFrom(fs_, dest), expected);
    EXPECT_LT(cap.peak_growth(), 64 * kMiB);
  }  {
    // What the limits prevent: without them the fqn copies exceed any cap
    // (the cap makes that a bad_alloc rather than 20 GiB).
    HeapCap cap(512 * kMiB);
    FileSystemReaderOptions unlimited;
    unlimited.file_system = fs_;
    unlimited.decode_limits.budget_per_input_byte = uint64_t{1} << 40;
    EXPECT_THROW(
        ReadCheckpointMetadata(std::string(kDir), unlimited).IgnoreError(),
        std::bad_alloc);
  }
}

TEST_F(FsStorageLimitsTest, LimitsAreOptions) {
  const std::string pickle = dcp::test::RealisticMetadataPickle(100, 150, 2);
  WriteFile(*fs_, "/ckpt/.metadata", pickle);
  ASSERT_THAT(ReadCheckpointMetadata(std::string(kDir), fs_), IsOk());
  FileSystemReaderOptions options;
  options.file_system = fs_;
  options.decode_limits.budget_per_input_byte = 1;
  options.decode_limits.budget_base_bytes = 0;
  EXPECT_THAT(ReadCheckpointMetadata(std::string(kDir), options),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("/ckpt/.metadata")));
  options.decode_limits = DecodeLimits();
  options.decode_limits.max_depth = 3;
  EXPECT_THAT(ReadCheckpointMetadata(std::string(kDir), options),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("deeper than 3 levels")));
  options.decode_limits = DecodeLimits();
  options.max_metadata_bytes = pickle.size();
  EXPECT_THAT(ReadCheckpointMetadata(std::string(kDir), options), IsOk());
}

// max_metadata_bytes is checked from the file's size: the file is never
// read (a read would fail with Unavailable here).
TEST_F(FsStorageLimitsTest, OversizedMetadataIsRefusedBeforeReading) {
  auto faulty = std::make_shared<FaultInjectingFileSystem>(fs_);
  WriteFile(*fs_, "/ckpt/.metadata", std::string(4096, 'x'));
  faulty->AddRule(FaultRule{FileOp::kRead, ".metadata", 1, -1,
                            absl::UnavailableError("read .metadata")});
  const auto expected = StatusIs(
      absl::StatusCode::kResourceExhausted,
      HasSubstr("/ckpt/.metadata is 4096 bytes, more than the 4095 bytes a "
                ".metadata may have (max_metadata_bytes); not reading it"));
  FileSystemReaderOptions options;
  options.file_system = faulty;
  options.max_metadata_bytes = 4095;
  EXPECT_THAT(ReadCheckpointMetadata(std::string(kDir), options), expected);
  FileSystemReaderOptions reader_options;
  reader_options.max_metadata_bytes = 4095;
  StateDict dest{{"x", Value(None{})}};
  EXPECT_THAT(LoadFrom(faulty, dest, reader_options), expected);
  // At the limit it is read (and is not a pickle).
  options.max_metadata_bytes = 4096;
  EXPECT_THAT(ReadCheckpointMetadata(std::string(kDir), options),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(FileSystemReaderOptions().max_metadata_bytes, uint64_t{1} << 30);
  EXPECT_EQ(FileSystemReaderOptions().max_metadata_bytes, uint64_t{1} << 30);
}

// A value record whose data.pkl references one memoized 1 MiB str 20,000
// times, loaded through FileSystemReader: ResourceExhausted naming the
// record's file and key.
TEST_F(FsStorageLimitsTest, HostileValueRecordFailsCleanlyInBoundedMemory) {
  std::string pkl = "\x80\x02X";
  const uint32_t n = 1 << 20;
  for (int i = 0; i < 4; ++i) pkl.push_back(static_cast<char>(n >> (8 * i)));
  pkl += std::string(n, 's');
  pkl += std::string("q\0" "0](", 5);  // BINPUT 0, POP, EMPTY_LIST, MARK
  for (int i = 0; i < 20000; ++i) pkl += std::string("h\0", 2);  // BINGET 0
  pkl += "e.";
  absl::StatusOr<std::string> record = BuildZipArchive(
      {{"archive/data.pkl", pkl}, {"archive/version", "3\n"}});
  ASSERT_THAT(record.status(), IsOk());
  WriteFile(*fs_, "/ckpt/__0_0.distcp", *record);
  Metadata md;
  md.state_dict_metadata["v"] = BytesStorageMetadata{};
  md.storage_data[MetadataIndex("v")] =
      StorageInfo{"__0_0.distcp", 0, static_cast<int64_t>(record->size())};
  absl::StatusOr<std::string> metadata = EncodeMetadataPickle(md);
  ASSERT_THAT(metadata.status(), IsOk());
  WriteFile(*fs_, "/ckpt/.metadata", *metadata);

  HeapCap cap(512 * kMiB);
  StateDict dest{{"v", Value(None{})}};
  EXPECT_THAT(LoadFrom(fs_, dest),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("__0_0.distcp"),
                             HasSubstr("record of \"v\""),
                             HasSubstr("expands to more than"))));
  EXPECT_LT(cap.peak_growth(), 64 * kMiB);
}

// Legitimate checkpoints load with the default limits, through the same
// paths.
TEST_F(FsStorageLimitsTest, OrdinaryCheckpointLoads) {
  StateDict sd{{"w", at::arange(12, at::kFloat).reshape({3, 4})},
               {"step", int64_t{7}},
               {"name", std::string(100000, 'n')}};
  FileSystemWriterOptions writer_options;
  writer_options.file_system = fs_;
  absl::StatusOr<std::unique_ptr<FileSystemWriter>> writer =
      FileSystemWriter::Create(std::string(kDir), writer_options);
  ASSERT_THAT(writer.status(), IsOk());
  SaveOptions save;
  save.no_dist = true;
  ASSERT_THAT(Save(sd, **writer, save).status(), IsOk());
  StateDict dest{{"w", at::zeros({3, 4})},
                 {"step", int64_t{0}},
                 {"name", std::string()}};
  ASSERT_THAT(LoadFrom(fs_, dest), IsOk());
  EXPECT_TRUE(at::equal(dest.Find("w")->get<at::Tensor>(),
                        sd.Find("w")->get<at::Tensor>()));
  EXPECT_EQ(dest.Find("step")->get<int64_t>(), 7);
  EXPECT_EQ(dest.Find("name")->get<std::string>().size(), 100000u);
}

}  // namespace
}  // namespace dcp
