#include "planner/write_result.h"

#include <ostream>

#include "core/metadata.h"

namespace dcp {

std::ostream& operator<<(std::ostream& os, const WriteResult& r) {
  return os << "WriteResult(index=" << r.index
            << ", size_in_bytes=" << r.size_in_bytes
            << ", storage_data=" << r.storage_data << ")";
}

}  // namespace dcp
