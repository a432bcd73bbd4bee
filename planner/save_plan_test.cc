#include "planner/save_plan.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <sstream>
#include <string>

#include "c10/core/ScalarType.h"
#include "core/metadata.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcp {
namespace {

template <typename T>
std::string Print(const T& value) {
  std::ostringstream os;
  os << value;
  return os.str();
}

WriteItem ShardItem(c10::ScalarType dtype, Shape sizes) {
  WriteItem item;
  item.index = MetadataIndex("w", Shape(sizes.size(), 0), 0);
  item.type = WriteItemType::kShard;
  TensorWriteData data;
  data.chunk.offsets = Shape(sizes.size(), 0);
  data.chunk.sizes = sizes;
  data.properties.dtype = dtype;
  data.size = {100, 100};  // The global size must not matter.
  item.tensor_data = data;
  return item;
}

TEST(WriteItemTest, TensorStorageSizeUsesChunkAndElementSize) {
  EXPECT_EQ(ShardItem(c10::kFloat, {2, 3}).TensorStorageSize(), 24);
  EXPECT_EQ(ShardItem(c10::kBFloat16, {5}).TensorStorageSize(), 10);
  EXPECT_EQ(ShardItem(c10::kComplexDouble, {}).TensorStorageSize(), 16);
  EXPECT_EQ(ShardItem(c10::kBool, {0, 7}).TensorStorageSize(), 0);
}

TEST(WriteItemTest, TensorStorageSizeIsNulloptForBytesAndInvalidDtype) {
  WriteItem bytes_item;
  bytes_item.index = MetadataIndex("step");
  EXPECT_EQ(bytes_item.TensorStorageSize(), std::nullopt);
  EXPECT_EQ(ShardItem(c10::ScalarType::Undefined, {2}).TensorStorageSize(),
            std::nullopt);
}

TEST(WriteItemTest, TensorStorageSizeSaturates) {
  const int64_t big = int64_t{1} << 62;
  EXPECT_EQ(ShardItem(c10::kDouble, {big}).TensorStorageSize(),
            std::numeric_limits<int64_t>::max());
}

TEST(WriteItemTest, EqualityIgnoresIndexHint) {
  WriteItem a = ShardItem(c10::kFloat, {2});
  WriteItem b = a;
  b.index.index = 5;
  EXPECT_EQ(a, b);
  b.type = WriteItemType::kTensor;
  EXPECT_NE(a, b);
  b = a;
  b.tensor_data->properties.requires_grad = true;
  EXPECT_NE(a, b);
}

TEST(SavePlanTest, EqualityComparesEveryField) {
  SavePlan a;
  a.items.push_back(ShardItem(c10::kFloat, {2}));
  SavePlan b = a;
  EXPECT_EQ(a, b);
  b.usable = false;
  EXPECT_NE(a, b);
  b = a;
  b.storage_data = "x";
  EXPECT_NE(a, b);
  b = a;
  b.planner_data = "y";
  EXPECT_NE(a, b);
}

TEST(SavePlanPrintTest, ItemsAndPlan) {
  EXPECT_EQ(Print(WriteItemType::kShard), "SHARD");
  EXPECT_EQ(Print(static_cast<WriteItemType>(9)), "WriteItemType(9)");
  WriteItem bytes_item;
  bytes_item.index = MetadataIndex("step");
  EXPECT_EQ(Print(bytes_item),
            "WriteItem(index=MetadataIndex(fqn=\"step\", offset=None, "
            "index=None), type=BYTE_IO, tensor_data=None)");
  SavePlan plan;
  plan.items.push_back(bytes_item);
  plan.storage_data = std::string("__0_\x01", 5);
  plan.usable = false;
  EXPECT_EQ(Print(plan),
            "SavePlan(items=[WriteItem(index=MetadataIndex(fqn=\"step\", "
            "offset=None, index=None), type=BYTE_IO, tensor_data=None)], "
            "storage_data=\"__0_\\x01\", planner_data=\"\", usable=False)");
  EXPECT_EQ(Print(*ShardItem(c10::kHalf, {2}).tensor_data),
            "TensorWriteData(chunk=ChunkStorageMetadata(offsets=[0], "
            "sizes=[2]), properties=TensorProperties(dtype=torch.float16, "
            "layout=torch.strided, requires_grad=False, "
            "memory_format=torch.contiguous_format, pin_memory=False), "
            "size=[100, 100])");
}

}  // namespace
}  // namespace dcp
