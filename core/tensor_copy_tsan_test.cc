// Proves that ThreadSanitizer sees the tensor copies of checkpoint/
// tensor_copy.h: a copy that races with another thread's plain access to
// the same elements must be reported. Copied by libtorch alone (the old
// `clone()` and `copy_()`), the same races go unreported, because libtorch
// is not instrumented.
//
// Each case runs in a child process (testing/multiprocess.h), so that the
// expected report ends the child, not this test. Without TSan the tests
// skip.
#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

#include "ATen/ATen.h"
#include "absl/functional/function_ref.h"
#include "core/tensor_copy.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/multiprocess.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::ExitedWithCode;
using ::dcp::test::MultiprocessOptions;
using ::dcp::test::RunWorkers;
using ::dcp::test::WorkerContext;
using ::dcp::test::WorkerResult;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int kTsanExitCode = 66;

#if defined(__SANITIZE_THREAD__)
constexpr bool kTsan = true;
#else
constexpr bool kTsan = false;
#endif

// Runs `body` in a child process under TSan options that end it with
// kTsanExitCode at the first report.
WorkerResult RunInChild(absl::FunctionRef<void()> body) {
  if (!dcp::test::IsWorker()) {
    setenv("TSAN_OPTIONS", "halt_on_error=1:exitcode=66", /*overwrite=*/1);
  }
  MultiprocessOptions options;
  options.world_size = 1;
  absl::StatusOr<std::vector<WorkerResult>> workers =
      RunWorkers(options, [&](const WorkerContext&) { body(); });
  CHECK(workers.ok()) << workers.status();
  return (*workers)[0];
}

// Writes every element of a float tensor on another thread and waits until
// it is done, with no happens-before edge to the caller: the relaxed flag
// does not synchronise (TSan models relaxed atomics faithfully). A copy the
// caller makes of the tensor then races with those writes. Joins the
// writer on destruction, after the racing copy.
class RacingWriter {
 public:
  explicit RacingWriter(const at::Tensor& t)
      : writer_([this, data = t.data_ptr<float>(), n = t.numel()] {
          for (int64_t i = 0; i < n; ++i) data[i] = static_cast<float>(i);
          done_.store(true, std::memory_order_relaxed);
        }) {
    while (!done_.load(std::memory_order_relaxed)) std::this_thread::yield();
  }
  ~RacingWriter() { writer_.join(); }
  RacingWriter(const RacingWriter&) = delete;
  RacingWriter& operator=(const RacingWriter&) = delete;

 private:
  std::atomic<bool> done_{false};
  std::thread writer_;
};

TEST(TensorCopyTsanTest, StagingCopyOfContiguousTensorIsSeen) {
  if (!kTsan) GTEST_SKIP() << "needs ThreadSanitizer (--config=tsan)";
  WorkerResult child = RunInChild([] {
    at::Tensor t = at::zeros({64});
    RacingWriter writer(t);
    CHECK(CloneToCpu(t).ok());  // std::memcpy in tensor_copy.cc
  });
  EXPECT_THAT(child, ExitedWithCode(kTsanExitCode));
  EXPECT_THAT(child.output, HasSubstr("ThreadSanitizer: data race"));
  EXPECT_THAT(child.output, HasSubstr("dcp::CloneToCpu"));
}

TEST(TensorCopyTsanTest, StagingCopyOfStridedTensorIsSeen) {
  if (!kTsan) GTEST_SKIP() << "needs ThreadSanitizer (--config=tsan)";
  WorkerResult child = RunInChild([] {
    at::Tensor t = at::zeros({8, 8});
    RacingWriter writer(t);
    CHECK(CloneToCpu(t.t()).ok());  // libtorch copies, then annotates
  });
  EXPECT_THAT(child, ExitedWithCode(kTsanExitCode));
  EXPECT_THAT(child.output, HasSubstr("ThreadSanitizer: data race"));
  EXPECT_THAT(child.output, HasSubstr("dcp::AnnotateTensorRead"));
}

TEST(TensorCopyTsanTest, CopyIntoAViewIsSeen) {
  if (!kTsan) GTEST_SKIP() << "needs ThreadSanitizer (--config=tsan)";
  WorkerResult child = RunInChild([] {
    at::Tensor dest = at::zeros({8, 8});
    RacingWriter writer(dest);
    // Converts the dtype: libtorch copies, then annotates the writes.
    CHECK(CopyTensorInto(at::ones({8, 4}, at::kDouble), dest.narrow(1, 2, 4))
              .ok());
  });
  EXPECT_THAT(child, ExitedWithCode(kTsanExitCode));
  EXPECT_THAT(child.output, HasSubstr("ThreadSanitizer: data race"));
  EXPECT_THAT(child.output, HasSubstr("dcp::AnnotateTensorWrite"));
}

// The control: two threads writing disjoint column shards of one tensor,
// as parallel loads do, are not a race, though each shard's bytes are
// interleaved with the other's. Annotating whole extents would report it.
TEST(TensorCopyTsanTest, DisjointColumnShardsAreNotARace) {
  if (!kTsan) GTEST_SKIP() << "needs ThreadSanitizer (--config=tsan)";
  WorkerResult child = RunInChild([] {
    at::Tensor dest = at::zeros({16, 8});
    std::vector<std::thread> loaders;
    for (int shard = 0; shard < 2; ++shard) {
      loaders.emplace_back([&dest, shard] {
        CHECK(CopyTensorInto(at::full({16, 4}, shard + 1, at::kDouble),
                             dest.narrow(1, 4 * shard, 4))
                  .ok());
      });
    }
    for (std::thread& loader : loaders) loader.join();
    CHECK(dest.narrow(1, 4, 4).eq(2).all().item<bool>());
  });
  EXPECT_THAT(child, ExitedWithCode(0));
  EXPECT_THAT(child.output, Not(HasSubstr("ThreadSanitizer")));
}

}  // namespace
}  // namespace dcp
