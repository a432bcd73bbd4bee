// Uses dcp from another workspace through its public targets.
#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "checkpoint/metadata.h"
#include "checkpoint/status.h"
#include "gtest/gtest.h"

namespace {

absl::StatusOr<int64_t> BytesOf(const dcp::TensorStorageMetadata& md) {
  DCP_ASSIGN_OR_RETURN(int64_t element_size,
                       dcp::ElementSize(md.properties.dtype));
  return dcp::NumElements(md.size) * element_size;
}

TEST(ConsumerTest, UsesDcpMetadataAndStatusMacros) {
  dcp::TensorStorageMetadata md;
  md.properties.dtype = c10::ScalarType::BFloat16;
  md.size = {3, 5};
  md.chunks.push_back({{0, 0}, {3, 5}});
  absl::StatusOr<int64_t> bytes = BytesOf(md);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, 30);

  std::ostringstream printed;
  printed << md.chunks[0];
  EXPECT_NE(printed.str().find("[3, 5]"), std::string::npos) << printed.str();
}

}  // namespace
