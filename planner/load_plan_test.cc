#include "planner/load_plan.h"

#include <sstream>
#include <string>

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

ReadItem TensorRead() {
  ReadItem item;
  item.type = LoadItemType::kTensor;
  item.dest_index = MetadataIndex("w", Shape{0, 0}, 0);
  item.dest_offsets = {0, 2};
  item.storage_index = MetadataIndex("w", Shape{4, 0}, 1);
  item.storage_offsets = {1, 0};
  item.lengths = {2, 2};
  return item;
}

TEST(ReadItemTest, EqualityComparesFieldsButNotHints) {
  ReadItem a = TensorRead();
  ReadItem b = a;
  b.dest_index.index = 9;
  b.storage_index.index.reset();
  EXPECT_EQ(a, b);
  b.lengths = {2, 3};
  EXPECT_NE(a, b);
  b = a;
  b.storage_offsets = {0, 0};
  EXPECT_NE(a, b);
  b = a;
  b.type = LoadItemType::kByteIo;
  EXPECT_NE(a, b);
}

TEST(LoadPlanTest, EqualityComparesBlobs) {
  LoadPlan a;
  a.items.push_back(TensorRead());
  LoadPlan b = a;
  EXPECT_EQ(a, b);
  b.storage_data = "s";
  EXPECT_NE(a, b);
  b = a;
  b.planner_data = "p";
  EXPECT_NE(a, b);
}

TEST(LoadPlanPrintTest, ItemAndPlan) {
  EXPECT_EQ(Print(LoadItemType::kByteIo), "BYTE_IO");
  EXPECT_EQ(Print(static_cast<LoadItemType>(0)), "LoadItemType(0)");
  EXPECT_EQ(Print(TensorRead()),
            "ReadItem(type=TENSOR, dest_index=MetadataIndex(fqn=\"w\", "
            "offset=[0, 0], index=0), dest_offsets=[0, 2], "
            "storage_index=MetadataIndex(fqn=\"w\", offset=[4, 0], index=1), "
            "storage_offsets=[1, 0], lengths=[2, 2])");
  LoadPlan plan;
  plan.planner_data = "\xff";
  EXPECT_EQ(Print(plan),
            "LoadPlan(items=[], storage_data=\"\", planner_data=\"\\xff\")");
}

}  // namespace
}  // namespace dcp
