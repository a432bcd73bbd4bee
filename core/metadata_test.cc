#include "core/metadata.h"

#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"
#include "c10/core/ScalarType.h"
#include "c10/util/ArrayRef.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::IsOkAndHolds;
using ::dcp::test::StatusIs;
using ::testing::Eq;
using ::testing::HasSubstr;

template <typename T>
std::string Print(const T& value) {
  std::ostringstream os;
  os << value;
  return os.str();
}

TEST(NumElementsTest, ProductOfSizes) {
  EXPECT_EQ(NumElements({}), 1);
  EXPECT_EQ(NumElements({5}), 5);
  EXPECT_EQ(NumElements({2, 3, 4}), 24);
  EXPECT_EQ(NumElements({2, 0, 4}), 0);
}

TEST(NumElementsTest, SaturatesInsteadOfOverflowing) {
  const int64_t big = int64_t{1} << 40;
  EXPECT_EQ(NumElements({big, big}), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(NumElements({big, -big}), std::numeric_limits<int64_t>::min());
  // A zero extent wins even after an overflowing prefix.
  EXPECT_EQ(NumElements({big, big, 0}), 0);
}

TEST(FormatShapeTest, ShapesAndTensorSizesPrintAlike) {
  EXPECT_EQ(FormatShape(Shape{}), "[]");
  EXPECT_EQ(FormatShape(Shape{2, 3}), "[2, 3]");
  EXPECT_EQ(FormatShape(Shape{-1}), "[-1]");
  const std::vector<int64_t> sizes = {4, 0, 1};
  EXPECT_EQ(FormatShape(c10::IntArrayRef(sizes)), "[4, 0, 1]");
}

TEST(MetadataIndexTest, EqualityAndOrderingIgnoreIndexHint) {
  MetadataIndex a("w", Shape{0, 4}, 0);
  MetadataIndex b("w", Shape{0, 4}, 7);
  MetadataIndex no_hint("w", Shape{0, 4});
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, no_hint);
  EXPECT_FALSE(a < b);
  EXPECT_FALSE(b < a);
  EXPECT_EQ(absl::Hash<MetadataIndex>()(a), absl::Hash<MetadataIndex>()(b));
}

TEST(MetadataIndexTest, WorksAsHashSetKey) {
  absl::flat_hash_set<MetadataIndex> set;
  set.insert(MetadataIndex("w"));
  set.insert(MetadataIndex("w", Shape{}));
  set.insert(MetadataIndex("w", Shape{0}, 0));
  set.insert(MetadataIndex("w", Shape{0}, 3));  // Same key: hint ignored.
  set.insert(MetadataIndex("w", Shape{4}));
  EXPECT_EQ(set.size(), 4u);
  EXPECT_TRUE(set.contains(MetadataIndex("w", Shape{0})));
  EXPECT_FALSE(set.contains(MetadataIndex("x", Shape{0})));
}

TEST(MetadataIndexTest, FqnAndOffsetDistinguish) {
  MetadataIndex bytes_item("w");
  MetadataIndex scalar("w", Shape{});
  MetadataIndex chunk0("w", Shape{0});
  MetadataIndex chunk4("w", Shape{4});
  MetadataIndex other("x", Shape{0});
  EXPECT_NE(bytes_item, scalar);  // None offset differs from torch.Size([]).
  EXPECT_NE(chunk0, chunk4);
  EXPECT_NE(chunk0, other);
  EXPECT_TRUE(bytes_item < scalar);
  EXPECT_TRUE(scalar < chunk0);
  EXPECT_TRUE(chunk0 < chunk4);
  EXPECT_TRUE(chunk4 < other);
}

TEST(MetadataTest, EqualityComparesEveryField) {
  Metadata a;
  a.state_dict_metadata["b"] = BytesStorageMetadata{};
  Metadata b = a;
  EXPECT_EQ(a, b);
  b.version = "1.0.0";
  EXPECT_NE(a, b);
  b = a;
  b.storage_meta = StorageMeta{};
  EXPECT_NE(a, b);
  b = a;
  b.planner_data["b"] = ObjectPath{std::string("b")};
  EXPECT_NE(a, b);
  b = a;
  b.storage_data[MetadataIndex("b")] = StorageInfo{"__0_0.distcp", 0, 3};
  EXPECT_NE(a, b);

  TensorProperties p;
  TensorProperties q = p;
  q.pin_memory = true;
  EXPECT_NE(p, q);
}

TEST(MetadataPrintTest, ChunkStorageMetadata) {
  EXPECT_EQ(Print(ChunkStorageMetadata{{0, 4}, {2, 4}}),
            "ChunkStorageMetadata(offsets=[0, 4], sizes=[2, 4])");
  EXPECT_EQ(Print(ChunkStorageMetadata{}),
            "ChunkStorageMetadata(offsets=[], sizes=[])");
}

TEST(MetadataPrintTest, TensorPropertiesUsesPythonNames) {
  TensorProperties p;
  p.dtype = c10::ScalarType::BFloat16;
  p.requires_grad = true;
  EXPECT_EQ(Print(p),
            "TensorProperties(dtype=torch.bfloat16, layout=torch.strided, "
            "requires_grad=True, memory_format=torch.contiguous_format, "
            "pin_memory=False)");
  p.dtype = static_cast<c10::ScalarType>(99);
  p.layout = static_cast<c10::Layout>(42);
  p.memory_format = static_cast<MemoryFormat>(9);
  EXPECT_EQ(Print(p),
            "TensorProperties(dtype=ScalarType(99), layout=Layout(42), "
            "requires_grad=True, memory_format=MemoryFormat(9), "
            "pin_memory=False)");
}

TEST(MetadataPrintTest, MemoryFormat) {
  EXPECT_EQ(Print(MemoryFormat::kChannelsLast), "torch.channels_last");
  EXPECT_EQ(Print(MemoryFormat::kPreserve), "torch.preserve_format");
}

TEST(MetadataPrintTest, StorageMetadataVariants) {
  TensorStorageMetadata tensor;
  tensor.size = {4};
  tensor.chunks = {ChunkStorageMetadata{{0}, {4}}};
  EXPECT_EQ(Print(StorageMetadata(tensor)),
            "TensorStorageMetadata(properties=TensorProperties(dtype="
            "torch.float32, layout=torch.strided, requires_grad=False, "
            "memory_format=torch.contiguous_format, pin_memory=False), "
            "size=[4], chunks=[ChunkStorageMetadata(offsets=[0], sizes=[4])])");
  EXPECT_EQ(Print(StorageMetadata(BytesStorageMetadata{})),
            "BytesStorageMetadata()");
}

TEST(MetadataPrintTest, MetadataIndexQuotesAndShowsNone) {
  EXPECT_EQ(Print(MetadataIndex("a.\"b\"", Shape{0, 2}, 1)),
            "MetadataIndex(fqn=\"a.\\\"b\\\"\", offset=[0, 2], index=1)");
  EXPECT_EQ(Print(MetadataIndex("x")),
            "MetadataIndex(fqn=\"x\", offset=None, index=None)");
}

TEST(MetadataPrintTest, StorageMetaStorageInfoAndObjectPath) {
  StorageMeta meta;
  meta.checkpoint_id = "/ckpt";
  meta.modules = {"a", "b"};
  EXPECT_EQ(Print(meta),
            "StorageMeta(checkpoint_id=\"/ckpt\", save_id=None, load_id=None, "
            "modules=[\"a\", \"b\"])");
  EXPECT_EQ(Print(StorageInfo{"__0_0.distcp", 16, 32}),
            "StorageInfo(relative_path=\"__0_0.distcp\", offset=16, "
            "length=32)");
  EXPECT_EQ(Print(ObjectPath{std::string("optim"), std::string("state"),
                             int64_t{0}, std::string("exp_avg")}),
            "(\"optim\", \"state\", 0, \"exp_avg\")");
  EXPECT_EQ(Print(ObjectPath{std::string("w")}), "(\"w\",)");
  EXPECT_EQ(Print(ObjectPath{}), "()");
}

TEST(MetadataPrintTest, WholeMetadata) {
  Metadata md;
  md.state_dict_metadata["step"] = BytesStorageMetadata{};
  md.planner_data["step"] = ObjectPath{std::string("step")};
  md.storage_data[MetadataIndex("step")] = StorageInfo{"__0_0.distcp", 0, 8};
  md.version = "1.0.0";
  EXPECT_EQ(Print(md),
            "Metadata(state_dict_metadata={\"step\": BytesStorageMetadata()}, "
            "planner_data={\"step\": (\"step\",)}, "
            "storage_data={MetadataIndex(fqn=\"step\", offset=None, "
            "index=None): StorageInfo(relative_path=\"__0_0.distcp\", "
            "offset=0, length=8)}, storage_meta=None, version=\"1.0.0\")");
}

struct DtypeCase {
  c10::ScalarType dtype;
  absl::string_view name;
  int64_t size;
};

// Every c10::ScalarType of libtorch 1.13 with its Python name and size.
constexpr DtypeCase kAllDtypes[] = {
    {c10::ScalarType::Byte, "uint8", 1},
    {c10::ScalarType::Char, "int8", 1},
    {c10::ScalarType::Short, "int16", 2},
    {c10::ScalarType::Int, "int32", 4},
    {c10::ScalarType::Long, "int64", 8},
    {c10::ScalarType::Half, "float16", 2},
    {c10::ScalarType::Float, "float32", 4},
    {c10::ScalarType::Double, "float64", 8},
    {c10::ScalarType::ComplexHalf, "complex32", 4},
    {c10::ScalarType::ComplexFloat, "complex64", 8},
    {c10::ScalarType::ComplexDouble, "complex128", 16},
    {c10::ScalarType::Bool, "bool", 1},
    {c10::ScalarType::QInt8, "qint8", 1},
    {c10::ScalarType::QUInt8, "quint8", 1},
    {c10::ScalarType::QInt32, "qint32", 4},
    {c10::ScalarType::BFloat16, "bfloat16", 2},
    {c10::ScalarType::QUInt4x2, "quint4x2", 1},
    {c10::ScalarType::QUInt2x4, "quint2x4", 1},
};

TEST(DtypeTest, CoversEveryScalarType) {
  EXPECT_EQ(sizeof(kAllDtypes) / sizeof(kAllDtypes[0]),
            static_cast<size_t>(c10::ScalarType::Undefined));
}

TEST(DtypeTest, ElementSizeMatchesC10) {
  for (const DtypeCase& c : kAllDtypes) {
    SCOPED_TRACE(c.name);
    EXPECT_THAT(ElementSize(c.dtype), IsOkAndHolds(Eq(c.size)));
    EXPECT_EQ(c.size, static_cast<int64_t>(c10::elementSize(c.dtype)));
  }
}

TEST(DtypeTest, ElementSizeRejectsInvalidDtypes) {
  EXPECT_THAT(ElementSize(c10::ScalarType::Undefined),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unsupported dtype")));
  EXPECT_THAT(ElementSize(c10::ScalarType::NumOptions),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ElementSize(static_cast<c10::ScalarType>(-3)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("-3")));
  EXPECT_THAT(ElementSize(static_cast<c10::ScalarType>(100)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DtypeTest, NameRoundTripsForEveryDtype) {
  for (const DtypeCase& c : kAllDtypes) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(DtypeName(c.dtype), c.name);
    EXPECT_THAT(DtypeFromName(c.name), IsOkAndHolds(Eq(c.dtype)));
  }
}

TEST(DtypeTest, NameOfInvalidDtypeIsUnknown) {
  EXPECT_EQ(DtypeName(c10::ScalarType::Undefined), "unknown");
  EXPECT_EQ(DtypeName(static_cast<c10::ScalarType>(77)), "unknown");
}

TEST(DtypeTest, AcceptsTorchAliases) {
  EXPECT_THAT(DtypeFromName("float"), IsOkAndHolds(Eq(c10::kFloat)));
  EXPECT_THAT(DtypeFromName("double"), IsOkAndHolds(Eq(c10::kDouble)));
  EXPECT_THAT(DtypeFromName("half"), IsOkAndHolds(Eq(c10::kHalf)));
  EXPECT_THAT(DtypeFromName("long"), IsOkAndHolds(Eq(c10::kLong)));
  EXPECT_THAT(DtypeFromName("int"), IsOkAndHolds(Eq(c10::kInt)));
  EXPECT_THAT(DtypeFromName("short"), IsOkAndHolds(Eq(c10::kShort)));
  EXPECT_THAT(DtypeFromName("cfloat"), IsOkAndHolds(Eq(c10::kComplexFloat)));
  EXPECT_THAT(DtypeFromName("cdouble"), IsOkAndHolds(Eq(c10::kComplexDouble)));
  EXPECT_THAT(DtypeFromName("chalf"), IsOkAndHolds(Eq(c10::kComplexHalf)));
}

TEST(DtypeTest, UnknownNameIsInvalidArgumentNamingIt) {
  EXPECT_THAT(
      DtypeFromName("float128"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"float128\"")));
  EXPECT_THAT(DtypeFromName(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DtypeFromName("torch.float32"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DtypeFromName("unknown"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dcp
