// `.metadata` speed for checkpoints of many small tensors (issue 10's W2:
// 20,000 keys), to show where a load's metadata step spends its time and
// that it stays linear as the key count doubles.
//
//   bazel run -c opt //storage:metadata_pickle_benchmark -- 20000 40000
//
// For each count n it builds the Metadata a 4-rank save of n 32x32 float
// tensors produces (one chunk per key, a quarter of the keys per file) and
// prints one row per case, keys per second in the last column:
//
//   encode       EncodeMetadataPickle (what the coordinator writes)
//   read_pickle  ReadPickle of that file alone (the generic pickle VM)
//   decode       DecodeMetadataPickle (what the coordinator reads on load)
//   codec_enc    EncodeMetadata, the binary form broadcast to the ranks
//   codec_dec    DecodeMetadata, what every rank decodes
//   sidecar      DecodeMetadataSidecar: what a load of a checkpoint dcp
//                wrote reads instead of the pickle (storage/metadata_sidecar.h)
//
// and the sizes of the pickle and of the binary form. Timing uses the best
// of three runs. This is a benchmark, not a test: it checks only that each
// decoding gives back the metadata it started from.

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/metadata.h"
#include "core/metadata_codec.h"
#include "storage/metadata_pickle.h"
#include "storage/metadata_sidecar.h"
#include "storage/pickle.h"
#include "testing/microbench.h"

namespace dcp {
namespace {

constexpr int kRuns = 3;
constexpr int kFiles = 4;

Metadata BuildMetadata(int64_t n) {
  Metadata md;
  for (int64_t i = 0; i < n; ++i) {
    const std::string fqn = absl::StrCat("model.layer", i, ".weight");
    TensorStorageMetadata tensor;
    tensor.size = {32, 32};
    tensor.chunks.push_back(ChunkStorageMetadata{{0, 0}, {32, 32}});
    md.state_dict_metadata.emplace(fqn, std::move(tensor));
    md.planner_data.emplace(
        fqn,
        ObjectPath{std::string("model"), absl::StrCat("layer", i, ".weight")});
    StorageInfo info;
    info.relative_path = absl::StrCat("__", i % kFiles, "_0_33a75ced.distcp");
    info.offset = (i / kFiles) * 5067;
    info.length = 5067;
    md.storage_data.emplace(MetadataIndex(fqn, Shape{0, 0}, 0), info);
  }
  StorageMeta meta;
  meta.checkpoint_id = "/tmp/ckpt";
  meta.save_id = "33a75ced13aeac48";
  md.storage_meta = meta;
  return md;
}

void RunCase(int64_t n) {
  const Metadata md = BuildMetadata(n);
  absl::StatusOr<std::string> pickle = EncodeMetadataPickle(md);
  if (!pickle.ok()) microbench::Fail(pickle.status().ToString());
  microbench::PrintRow("encode", n, microbench::BestSeconds(kRuns, [&] {
                         if (!EncodeMetadataPickle(md).ok())
                           microbench::Fail("encode");
                       }));
  microbench::PrintRow(
      "read_pickle", n, microbench::BestSeconds(kRuns, [&] {
        PickleReadOptions options =
            DecodeLimits().PickleOptions(pickle->size());
        // Every global is allowed here: this times the VM, not the filter.
        options.allow_global = [](absl::string_view, absl::string_view) {
          return true;
        };
        absl::StatusOr<PickleValue> value = ReadPickle(*pickle, options);
        if (!value.ok()) microbench::Fail(value.status().ToString());
      }));
  microbench::PrintRow("decode", n, microbench::BestSeconds(kRuns, [&] {
                         absl::StatusOr<Metadata> decoded =
                             DecodeMetadataPickle(*pickle);
                         if (!decoded.ok() || *decoded != md) {
                           microbench::Fail(absl::StrCat(
                               "decode: ", decoded.status().ToString()));
                         }
                       }));
  const std::string binary = EncodeMetadata(md);
  microbench::PrintRow("codec_enc", n, microbench::BestSeconds(kRuns, [&] {
                         if (EncodeMetadata(md).size() != binary.size())
                           microbench::Fail("enc");
                       }));
  microbench::PrintRow("codec_dec", n, microbench::BestSeconds(kRuns, [&] {
                         absl::StatusOr<Metadata> decoded =
                             DecodeMetadata(binary);
                         if (!decoded.ok() || *decoded != md)
                           microbench::Fail("codec_dec");
                       }));
  const std::string sidecar = EncodeMetadataSidecar(md, *pickle);
  microbench::PrintRow("sidecar", n, microbench::BestSeconds(kRuns, [&] {
                         if (!DecodeMetadataSidecar(sidecar, *pickle).ok()) {
                           microbench::Fail("sidecar");
                         }
                       }));
  std::printf("# %lld keys: .metadata %zu bytes, binary form %zu bytes\n",
              static_cast<long long>(n), pickle->size(), binary.size());
}

}  // namespace
}  // namespace dcp

int main(int argc, char** argv) {
  for (int64_t n :
       dcp::microbench::CountsFromArgs(argc, argv, "keys", {20000, 40000})) {
    dcp::RunCase(n);
  }
  return 0;
}
