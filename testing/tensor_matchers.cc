#include "testing/tensor_matchers.h"

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/torch_status.h"
#include "glog/logging.h"

namespace dcp::test {
namespace tensor_matchers_internal {
namespace {

std::string ShapeString(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string ScalarString(const at::Tensor& flat, int64_t index) {
  std::ostringstream os;
  os << flat[index].item();
  return os.str();
}

// Row-major multi-index of flat position `index` in `shape`.
std::vector<int64_t> Unravel(int64_t index, c10::IntArrayRef shape) {
  std::vector<int64_t> multi(shape.size(), 0);
  for (size_t d = shape.size(); d-- > 0;) {
    multi[d] = index % shape[d];
    index /= shape[d];
  }
  return multi;
}

struct FirstDifference {
  int64_t index;      // Flat position of the first differing element.
  int64_t count;      // Number of differing elements.
  at::Tensor actual;  // Flattened contiguous CPU copies.
  at::Tensor expected;
};

// Precondition: same dtype and shape, at least one element.
absl::StatusOr<FirstDifference> FindFirstDifference(const at::Tensor& actual,
                                                    const at::Tensor& expected) {
  return TorchCall("comparing tensors", [&] {
    at::Tensor a = actual.cpu().resolve_conj().resolve_neg().contiguous()
                       .reshape({-1});
    at::Tensor e = expected.cpu().resolve_conj().resolve_neg().contiguous()
                       .reshape({-1});
    at::Tensor x = a.is_quantized() ? a.int_repr() : a;
    at::Tensor y = e.is_quantized() ? e.int_repr() : e;
    at::Tensor differs;
    if (x.is_complex()) {
      x = at::view_as_real(x);
      y = at::view_as_real(y);
    }
    differs = x.ne(y);
    if (x.is_floating_point()) differs &= ~(x.isnan() & y.isnan());
    if (differs.dim() == 2) differs = differs.any(1);  // complex: re or im.
    FirstDifference diff;
    diff.count = differs.sum().item<int64_t>();
    diff.index = diff.count == 0 ? -1 : differs.nonzero()[0][0].item<int64_t>();
    diff.actual = a;
    diff.expected = e;
    return diff;
  });
}

std::string PathString(const std::string& path) {
  return path.empty() ? "at the top level" : absl::StrCat("at \"", path, "\"");
}

std::string Child(const std::string& path, const std::string& element) {
  return path.empty() ? element : absl::StrCat(path, ".", element);
}

std::string ValueString(const Value& value) {
  std::ostringstream os;
  os << value;
  return os.str();
}

std::string DescribeValueMismatch(const std::string& path, const Value& actual,
                                  const Value& expected);

std::string DescribeDictMismatch(const std::string& path,
                                 const StateDict& actual,
                                 const StateDict& expected) {
  if (actual.Keys() != expected.Keys()) {
    auto quoted = [](const std::vector<std::string>& keys) {
      return absl::StrCat(
          "[",
          absl::StrJoin(keys, ", ",
                        [](std::string* out, const std::string& key) {
                          absl::StrAppend(out, "\"", absl::CHexEscape(key),
                                          "\"");
                        }),
          "]");
    };
    return absl::StrCat(PathString(path), ": keys ", quoted(actual.Keys()),
                        ", expected ", quoted(expected.Keys()));
  }
  for (size_t i = 0; i < actual.size(); ++i) {
    std::string mismatch = DescribeValueMismatch(
        Child(path, actual.entries()[i].first), actual.entries()[i].second,
        expected.entries()[i].second);
    if (!mismatch.empty()) return mismatch;
  }
  return "";
}

std::string DescribeValueMismatch(const std::string& path, const Value& actual,
                                  const Value& expected) {
  if (ValuesEqual(actual, expected)) return "";
  if (actual.variant().index() != expected.variant().index()) {
    return absl::StrCat(PathString(path), ": a ", actual.TypeName(), " ",
                        ValueString(actual), ", expected a ",
                        expected.TypeName(), " ", ValueString(expected));
  }
  if (const auto* dict = actual.get_if<StateDict>()) {
    return DescribeDictMismatch(path, *dict, expected.get<StateDict>());
  }
  const List* list = actual.get_if<List>();
  const List* other_items = expected.get_if<List>();
  if (const auto* tuple = actual.get_if<Tuple>()) {
    list = &tuple->items;
    other_items = &expected.get<Tuple>().items;
  }
  if (list != nullptr) {
    const List& other = *other_items;
    if (list->size() != other.size()) {
      return absl::StrCat(PathString(path), ": a ", actual.TypeName(), " of ",
                          list->size(), " elements, expected ", other.size());
    }
    for (size_t i = 0; i < list->size(); ++i) {
      std::string mismatch = DescribeValueMismatch(
          Child(path, absl::StrCat(i)), (*list)[i], other[i]);
      if (!mismatch.empty()) return mismatch;
    }
  }
  if (const auto* tensor = actual.get_if<at::Tensor>()) {
    return absl::StrCat(
        PathString(path), ": ",
        DescribeTensorMismatch(*tensor, expected.get<at::Tensor>()));
  }
  if (const auto* sharded = actual.get_if<ShardedTensor>()) {
    const ShardedTensor& other = expected.get<ShardedTensor>();
    if (sharded->global_size != other.global_size) {
      return absl::StrCat(PathString(path), ": global size ",
                          ShapeString(sharded->global_size), ", expected ",
                          ShapeString(other.global_size));
    }
    if (sharded->local_shards.size() != other.local_shards.size()) {
      return absl::StrCat(PathString(path), ": ",
                          sharded->local_shards.size(),
                          " local shards, expected ",
                          other.local_shards.size());
    }
    for (size_t i = 0; i < other.local_shards.size(); ++i) {
      const Shard& a = sharded->local_shards[i];
      const Shard& e = other.local_shards[i];
      if (a.offsets != e.offsets) {
        return absl::StrCat(PathString(path), ": shard ", i, " at offsets ",
                            ShapeString(a.offsets), ", expected ",
                            ShapeString(e.offsets));
      }
      std::string mismatch = DescribeTensorMismatch(a.tensor, e.tensor);
      if (!mismatch.empty()) {
        return absl::StrCat(PathString(path), ": shard ", i, " ", mismatch);
      }
    }
  }
  return absl::StrCat(PathString(path), ": ", ValueString(actual),
                      ", expected ", ValueString(expected));
}

}  // namespace

std::string TensorSummary(const at::Tensor& tensor) {
  if (!tensor.defined()) return "an undefined tensor";
  std::string out = absl::StrCat("a ", DtypeName(tensor.scalar_type()),
                                 " tensor of shape ",
                                 ShapeString(tensor.sizes()));
  constexpr int64_t kShown = 8;
  const int64_t n = tensor.numel();
  if (n == 0) return out;
  absl::StatusOr<std::string> values = TorchCall("summary", [&] {
    at::Tensor flat = tensor.cpu().contiguous().reshape({-1});
    std::vector<std::string> parts;
    for (int64_t i = 0; i < std::min(n, kShown); ++i) {
      parts.push_back(ScalarString(flat, i));
    }
    if (n > kShown) parts.push_back("...");
    return absl::StrJoin(parts, ", ");
  });
  if (values.ok()) absl::StrAppend(&out, " {", *values, "}");
  return out;
}

std::string DescribeTensorMismatch(const at::Tensor& actual,
                                   const at::Tensor& expected) {
  if (ValuesEqual(Value(actual), Value(expected))) return "";
  if (!actual.defined() || !expected.defined()) {
    return absl::StrCat("which is ", TensorSummary(actual), ", expected ",
                        TensorSummary(expected));
  }
  if (actual.scalar_type() != expected.scalar_type()) {
    return absl::StrCat("which has dtype ", DtypeName(actual.scalar_type()),
                        ", expected ", DtypeName(expected.scalar_type()));
  }
  if (actual.sizes() != expected.sizes()) {
    return absl::StrCat("which has shape ", ShapeString(actual.sizes()),
                        ", expected ", ShapeString(expected.sizes()));
  }
  absl::StatusOr<FirstDifference> diff =
      FindFirstDifference(actual, expected);
  if (!diff.ok()) {
    return absl::StrCat("which could not be compared: ",
                        diff.status().ToString());
  }
  if (diff->index < 0) {
    return "which differs in a way element comparison does not show";
  }
  absl::StatusOr<std::string> values = TorchCall("formatting", [&] {
    return absl::StrCat(ScalarString(diff->actual, diff->index), ", expected ",
                        ScalarString(diff->expected, diff->index));
  });
  return absl::StrCat(
      "which differs at index ",
      ShapeString(Unravel(diff->index, actual.sizes())), " (", diff->count,
      " of ", actual.numel(), " elements differ): ",
      values.ok() ? *values : values.status().ToString());
}

std::string DescribeStateDictMismatch(const StateDict& actual,
                                      const StateDict& expected) {
  if (StateDictsEqual(actual, expected)) return "";
  std::string mismatch = DescribeDictMismatch("", actual, expected);
  return mismatch.empty() ? "which differs" : absl::StrCat("which differs ",
                                                           mismatch);
}

}  // namespace tensor_matchers_internal

at::Tensor MakeTestTensor(const Shape& shape, c10::ScalarType dtype,
                          int seed) {
  absl::StatusOr<at::Tensor> result = TorchCall("MakeTestTensor", [&] {
    const int64_t n = NumElements(shape);
    at::Tensor base = at::arange(n, at::kLong) + int64_t{37} * seed;
    at::Tensor values;
    switch (dtype) {
      case at::kBool:
        values = at::remainder(base, 2).to(at::kBool);
        break;
      case at::kByte:
        values = at::remainder(base, 256);
        break;
      case at::kChar:
        values = at::remainder(base, 256) - 128;
        break;
      case at::kShort:
        values = at::remainder(base, 65536) - 32768;
        break;
      case at::kInt:
      case at::kLong:
        values = base * 7 - 1000;
        break;
      case at::kHalf:
      case at::kBFloat16:
        // Small integers: exact in both 16-bit float formats.
        values = at::remainder(base, 256) - 100;
        break;
      case at::kFloat:
      case at::kDouble:
        values = base.to(at::kDouble) * 0.5 - 100.25;
        break;
      case at::kComplexFloat:
      case at::kComplexDouble: {
        at::Tensor real = base.to(at::kDouble) * 0.5 - 100.25;
        at::Tensor imag = 3.5 - base.to(at::kDouble) * 0.25;
        values = at::view_as_complex(at::stack({real, imag}, -1));
        break;
      }
      default:
        LOG(FATAL) << "MakeTestTensor: unsupported dtype "
                   << c10::toString(dtype);
    }
    return values.to(dtype).reshape(shape).contiguous();
  });
  CHECK(result.ok()) << result.status();
  return *std::move(result);
}

}  // namespace dcp::test
