// Writes the checkpoint directories of tools/inspect_hostile_test.sh
// (issue 9): `<out>/hostile/.metadata`, the reported 20,000-entry file whose
// fqns all name one memoized 1 MiB key, and `<out>/realistic/.metadata`,
// 20,000 ordinary keys written as CPython writes them, with the data file
// it names.
#include <fstream>
#include <iostream>
#include <string>

#include "storage/hostile_metadata_testutil.h"

namespace {

bool Write(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) std::cerr << "cannot write " << path << "\n";
  return static_cast<bool>(out);
}

// A file of `size` zero bytes without writing them (a hole).
bool WriteSparse(const std::string& path, std::size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (size > 0) {
    out.seekp(static_cast<std::streamoff>(size - 1));
    out.put('\0');
  }
  out.close();
  if (!out) std::cerr << "cannot write " << path << "\n";
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: hostile_metadata_gen OUT_DIR (with hostile/ and "
                 "realistic/ in it)\n";
    return 2;
  }
  const std::string out = argv[1];
  const bool ok =
      Write(out + "/hostile/.metadata",
            dcp::test::SharedKeyMetadataPickle(20000, std::size_t{1} << 20)) &&
      Write(out + "/realistic/.metadata",
            dcp::test::RealisticMetadataPickle(20000, 150, 1)) &&
      WriteSparse(out + "/realistic/__0_0.distcp",
                  std::size_t{20000} * 64 * 16 * 4);
  return ok ? 0 : 1;
}
