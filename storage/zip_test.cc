#include "storage/zip.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"
#include "testing/test_seed.h"

namespace dcp {
namespace {

using ::dcp::test::IsOk;
using ::dcp::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

void PutU16At(std::string& s, size_t at, uint16_t v) {
  s[at] = static_cast<char>(v & 0xff);
  s[at + 1] = static_cast<char>(v >> 8);
}
void PutU32At(std::string& s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[at + i] = static_cast<char>(v >> (8 * i));
}
uint32_t GetU32At(absl::string_view s, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    v |= uint32_t{static_cast<unsigned char>(s[at + i])} << (8 * i);
  }
  return v;
}
void AppendU16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v & 0xff));
  s.push_back(static_cast<char>(v >> 8));
}
void AppendU32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}

// The five entries of a torch.save record, with a payload of `n` bytes.
std::vector<std::pair<std::string, std::string>> RecordLikeEntries(size_t n) {
  std::string payload(n, '\0');
  for (size_t i = 0; i < n; ++i) payload[i] = static_cast<char>(i * 7 + 1);
  return {{"archive/data.pkl", std::string("\x80\x02K\x07.", 5)},
          {"archive/byteorder", "little"},
          {"archive/data/0", payload},
          {"archive/version", "3\n"},
          {"archive/.data/serialization_id", std::string(40, '0')}};
}

std::string Build(const std::vector<std::pair<std::string, std::string>>& e) {
  std::vector<std::pair<std::string, absl::string_view>> views;
  for (const auto& [name, data] : e) views.emplace_back(name, data);
  absl::StatusOr<std::string> archive = BuildZipArchive(views);
  EXPECT_THAT(archive.status(), IsOk());
  return archive.ok() ? *archive : std::string();
}

// Offset of the central directory of an archive written by ZipLayout.
size_t CentralDirectoryOffset(absl::string_view archive) {
  // Classic end record: last 22 bytes; the CD offset is at +16.
  return GetU32At(archive, archive.size() - 22 + 16);
}

TEST(Crc32Test, KnownValues) {
  EXPECT_EQ(Crc32(""), 0u);
  EXPECT_EQ(Crc32("123456789"), 0xcbf43926u);
  EXPECT_EQ(Crc32("56789", Crc32("1234")), 0xcbf43926u);
}

TEST(ZipLayoutTest, AlignsDataAndPutsHeadersInOrder) {
  DCP_ASSERT_OK_AND_ASSIGN(ZipLayout layout,
                           ZipLayout::Create({{"archive/data.pkl", 100, 1},
                                              {"archive/byteorder", 6, 2},
                                              {"archive/data/0", 24, 3}}));
  ASSERT_EQ(layout.num_entries(), 3u);
  uint64_t expected_header = 0;
  for (size_t i = 0; i < layout.num_entries(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(layout.header_offset(i), expected_header);
    EXPECT_EQ(layout.data_offset(i) % kZipDataAlignment, 0u);
    EXPECT_EQ(layout.header(i).substr(0, 4), "PK\x03\x04");
    // Name, then an "FB" padding field.
    EXPECT_EQ(layout.header(i).substr(30, layout.entry(i).name.size()),
              layout.entry(i).name);
    EXPECT_EQ(layout.header(i).substr(30 + layout.entry(i).name.size(), 2),
              "FB");
    expected_header = layout.data_offset(i) + layout.entry(i).size;
  }
  EXPECT_EQ(layout.trailer_offset(), expected_header);
  EXPECT_EQ(layout.total_size(), expected_header + layout.trailer().size());
  // Central directory, ZIP64 end record (56), locator (20), end record (22).
  absl::string_view trailer = layout.trailer();
  EXPECT_EQ(trailer.substr(0, 4), "PK\x01\x02");
  EXPECT_EQ(trailer.substr(trailer.size() - 98, 4), "PK\x06\x06");
  EXPECT_EQ(trailer.substr(trailer.size() - 42, 4), "PK\x06\x07");
  EXPECT_EQ(trailer.substr(trailer.size() - 22, 4), "PK\x05\x06");
}

TEST(ZipLayoutTest, RejectsBadEntryLists) {
  EXPECT_THAT(ZipLayout::Create({}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ZipLayout::Create({{"", 1, 0}}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ZipLayout::Create({{std::string(70000, 'a'), 1, 0}}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      ZipLayout::Create({{"a/x", 1, 0}, {"a/y", 1, 0}, {"a/x", 2, 0}}).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("duplicate entry name \"a/x\"")));
}

TEST(ZipReadTest, RoundTripsEntries) {
  const auto entries = RecordLikeEntries(1000);
  const std::string archive = Build(entries);
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(archive));
  EXPECT_EQ(dir.archive_size, archive.size());
  EXPECT_EQ(dir.prefix, "archive/");
  ASSERT_THAT(dir.entries, SizeIs(entries.size()));
  for (size_t i = 0; i < entries.size(); ++i) {
    SCOPED_TRACE(entries[i].first);
    const ZipEntry& entry = dir.entries[i];
    EXPECT_EQ(entry.name, entries[i].first);
    EXPECT_EQ(entry.size, entries[i].second.size());
    EXPECT_EQ(entry.crc32, Crc32(entries[i].second));
    EXPECT_EQ(entry.data_offset % 64, 0u);
    DCP_ASSERT_OK_AND_ASSIGN(absl::string_view data,
                             ZipEntryData(archive, entry));
    EXPECT_EQ(data, entries[i].second);
    DCP_EXPECT_OK(VerifyZipEntryCrc(entry, data));
  }
  ASSERT_NE(dir.Find("data/0"), nullptr);
  EXPECT_EQ(dir.Find("data/0")->name, "archive/data/0");
  EXPECT_EQ(dir.Find("version")->size, 2u);
  EXPECT_EQ(dir.Find("data/1"), nullptr);
  EXPECT_EQ(dir.Find("archive/version"), nullptr);
}

TEST(ZipReadTest, EmptyEntriesAndOtherPrefixes) {
  const std::string archive =
      Build({{"foo/empty", ""}, {"foo/version", "3\n"}});
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(archive));
  EXPECT_EQ(dir.prefix, "foo/");
  EXPECT_EQ(dir.Find("empty")->size, 0u);
}

TEST(ZipReadTest, DetectsCrcMismatchOnlyWhenVerifying) {
  std::string archive = Build(RecordLikeEntries(64));
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(archive));
  const ZipEntry entry = *dir.Find("data/0");
  archive[entry.data_offset + 5] ^= 0x10;
  // The directory is still fine: the data is not checked by default.
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory again, ReadZipDirectory(archive));
  DCP_ASSERT_OK_AND_ASSIGN(absl::string_view data,
                           ZipEntryData(archive, *again.Find("data/0")));
  EXPECT_THAT(
      VerifyZipEntryCrc(*again.Find("data/0"), data),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("CRC-32 mismatch")));
  EXPECT_THAT(VerifyZipEntryCrc(entry, data.substr(1)),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ZipReadTest, AcceptsAComment) {
  std::string archive = Build(RecordLikeEntries(10));
  PutU16At(archive, archive.size() - 2, 5);
  archive += "hello";
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(archive));
  EXPECT_THAT(dir.entries, SizeIs(5));
}

// A record the way torch 2.6 writes it: flags 0x0808, zero CRC and sizes in
// the local headers, a data descriptor after each entry's data.
std::string TorchStyleArchive(
    const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, cd;
  for (const auto& [name, data] : entries) {
    const uint32_t header_offset = out.size();
    const size_t unpadded = out.size() + 30 + name.size() + 4;
    const size_t padding = (64 - unpadded % 64) % 64;
    AppendU32(out, 0x04034b50);
    AppendU16(out, 0);
    AppendU16(out, 0x0808);
    AppendU16(out, 0);
    AppendU16(out, 0);
    AppendU16(out, 0);
    AppendU32(out, 0);
    AppendU32(out, 0);
    AppendU32(out, 0);
    AppendU16(out, name.size());
    AppendU16(out, 4 + padding);
    out += name;
    out += "FB";
    AppendU16(out, padding);
    out.append(padding, 'Z');
    out += data;
    AppendU32(out, 0x08074b50);
    AppendU32(out, Crc32(data));
    AppendU32(out, data.size());
    AppendU32(out, data.size());

    AppendU32(cd, 0x02014b50);
    AppendU16(cd, 0);
    AppendU16(cd, 0);
    AppendU16(cd, 0x0808);
    AppendU16(cd, 0);
    AppendU16(cd, 0);
    AppendU16(cd, 0);
    AppendU32(cd, Crc32(data));
    AppendU32(cd, data.size());
    AppendU32(cd, data.size());
    AppendU16(cd, name.size());
    AppendU16(cd, 0);
    AppendU16(cd, 0);
    AppendU16(cd, 0);
    AppendU16(cd, 0);
    AppendU32(cd, 0);
    AppendU32(cd, header_offset);
    cd += name;
  }
  const uint32_t cd_offset = out.size();
  out += cd;
  const uint32_t z64 = out.size();
  AppendU32(out, 0x06064b50);
  AppendU32(out, 44);
  AppendU32(out, 0);
  AppendU16(out, 0x031e);
  AppendU16(out, 45);
  AppendU32(out, 0);
  AppendU32(out, 0);
  for (uint64_t v : {uint64_t{entries.size()}, uint64_t{entries.size()},
                     uint64_t{cd.size()}, uint64_t{cd_offset}}) {
    AppendU32(out, static_cast<uint32_t>(v));
    AppendU32(out, 0);
  }
  AppendU32(out, 0x07064b50);
  AppendU32(out, 0);
  AppendU32(out, z64);
  AppendU32(out, 0);
  AppendU32(out, 1);
  AppendU32(out, 0x06054b50);
  AppendU16(out, 0);
  AppendU16(out, 0);
  AppendU16(out, entries.size());
  AppendU16(out, entries.size());
  AppendU32(out, cd.size());
  AppendU32(out, cd_offset);
  AppendU16(out, 0);
  return out;
}

TEST(ZipReadTest, ReadsTorchStyleDataDescriptorArchives) {
  const auto entries = RecordLikeEntries(24);
  const std::string archive = TorchStyleArchive(entries);
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(archive));
  ASSERT_THAT(dir.entries, SizeIs(5));
  for (size_t i = 0; i < entries.size(); ++i) {
    DCP_ASSERT_OK_AND_ASSIGN(absl::string_view data,
                             ZipEntryData(archive, dir.entries[i]));
    EXPECT_EQ(data, entries[i].second);
    DCP_EXPECT_OK(VerifyZipEntryCrc(dir.entries[i], data));
  }
}

// Serves reads of a virtual archive: layout bytes plus zero data.
std::string VirtualRead(const ZipLayout& layout, uint64_t offset,
                        uint64_t length) {
  std::string out(length, '\0');
  auto overlay = [&](uint64_t at, absl::string_view bytes) {
    const uint64_t begin = std::max(at, offset);
    const uint64_t end = std::min(at + bytes.size(), offset + length);
    if (begin < end) {
      std::memcpy(&out[begin - offset], bytes.data() + (begin - at),
                  end - begin);
    }
  };
  for (size_t i = 0; i < layout.num_entries(); ++i) {
    overlay(layout.header_offset(i), layout.header(i));
  }
  overlay(layout.trailer_offset(), layout.trailer());
  return out;
}

TEST(ZipReadTest, Zip64EntriesAndOffsetsBeyond4GiB) {
  const uint64_t big = (uint64_t{5} << 30) + 3;
  DCP_ASSERT_OK_AND_ASSIGN(ZipLayout layout,
                           ZipLayout::Create({{"archive/data.pkl", 10, 1},
                                              {"archive/data/0", big, 2},
                                              {"archive/version", 2, 3}}));
  // The big entry needs a ZIP64 extra field in its local header; the entry
  // after it has a header offset beyond 4 GiB.
  EXPECT_EQ(layout.data_offset(1) % 64, 0u);
  EXPECT_GT(layout.header_offset(2), uint64_t{1} << 32);
  ZipByteSource source(layout.total_size(), [&](uint64_t o, uint64_t n) {
    return absl::StatusOr<std::string>(VirtualRead(layout, o, n));
  });
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(source));
  ASSERT_THAT(dir.entries, SizeIs(3));
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(dir.entries[i].name, layout.entry(i).name);
    EXPECT_EQ(dir.entries[i].size, layout.entry(i).size);
    EXPECT_EQ(dir.entries[i].crc32, layout.entry(i).crc32);
    EXPECT_EQ(dir.entries[i].header_offset, layout.header_offset(i));
    EXPECT_EQ(dir.entries[i].data_offset, layout.data_offset(i));
  }
}

TEST(ZipByteSourceTest, ARecordCostsTwoReadsHeadAndTail) {
  const std::string archive = Build(RecordLikeEntries(100000));
  std::vector<std::pair<uint64_t, uint64_t>> reads;
  ZipByteSource source(archive.size(), [&](uint64_t o, uint64_t n) {
    reads.emplace_back(o, n);
    return absl::StatusOr<std::string>(std::string(archive.substr(o, n)));
  });
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(source));
  EXPECT_EQ(dir, *ReadZipDirectory(archive));
  EXPECT_THAT(reads, ElementsAre(std::make_pair(archive.size() - 4096, 4096),
                                 std::make_pair(0, 4096)));
  // Cached: reading data.pkl again costs nothing.
  const ZipEntry& pkl = *dir.Find("data.pkl");
  DCP_ASSERT_OK_AND_ASSIGN(absl::string_view data,
                           source.Read(pkl.data_offset, pkl.size));
  EXPECT_EQ(data, std::string("\x80\x02K\x07.", 5));
  EXPECT_EQ(source.num_fetches(), 2);
}

TEST(ZipByteSourceTest, ReportsShortReadsAndReaderErrors) {
  const std::string archive = Build(RecordLikeEntries(10));
  ZipByteSource short_reads(archive.size(), [&](uint64_t o, uint64_t n) {
    return absl::StatusOr<std::string>(std::string(n - 1, 'x'));
  });
  EXPECT_THAT(ReadZipDirectory(short_reads).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("returned")));
  ZipByteSource failing(archive.size(), [&](uint64_t, uint64_t) {
    return absl::StatusOr<std::string>(absl::UnavailableError("disk gone"));
  });
  EXPECT_THAT(ReadZipDirectory(failing).status(),
              StatusIs(absl::StatusCode::kUnavailable, "disk gone"));
  ZipByteSource in_memory(archive);
  EXPECT_THAT(in_memory.Read(archive.size() - 1, 2).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("outside")));
}

// A read function over `archive` that adds up the bytes it returns.
ZipReadFn CountingReader(absl::string_view archive, uint64_t* fetched) {
  return [archive, fetched](uint64_t o, uint64_t n) {
    *fetched += n;
    return absl::StatusOr<std::string>(std::string(archive.substr(o, n)));
  };
}

TEST(ZipByteSourceTest, ScatteredReadsFetchEachByteAboutOnce) {
  std::string archive(1 << 20, '\0');
  for (size_t i = 0; i < archive.size(); ++i) {
    archive[i] = static_cast<char>(i * 131 + 7);
  }
  uint64_t fetched = 0;
  ZipByteSource source(archive.size(), CountingReader(archive, &fetched));
  // Backwards, 100-byte reads every 1000 bytes: each miss must widen only
  // over bytes not cached yet, not refetch the next block.
  uint64_t requested = 0;
  for (uint64_t at = archive.size() - 100;; at -= 1000) {
    DCP_ASSERT_OK_AND_ASSIGN(absl::string_view got, source.Read(at, 100));
    EXPECT_EQ(got, absl::string_view(archive).substr(at, 100));
    requested += 100;
    if (at < 1000) break;
  }
  // Reads straddling block boundaries, and reads of what is cached.
  for (uint64_t at = 4000; at + 300 < archive.size(); at += 70001) {
    DCP_ASSERT_OK_AND_ASSIGN(absl::string_view got, source.Read(at, 300));
    EXPECT_EQ(got, absl::string_view(archive).substr(at, 300));
    requested += 300;
  }
  EXPECT_LE(fetched, archive.size() + requested);
  const uint64_t before = fetched;
  DCP_ASSERT_OK_AND_ASSIGN(absl::string_view all,
                           source.Read(0, archive.size()));
  EXPECT_EQ(all, archive);
  DCP_ASSERT_OK_AND_ASSIGN(absl::string_view again, source.Read(12345, 54321));
  EXPECT_EQ(again, absl::string_view(archive).substr(12345, 54321));
  EXPECT_EQ(fetched, before + archive.size());
}

// Built in a test, not a benchmark: the point is correctness at the size
// where the old quadratic lookups took minutes (zip_benchmark shows speed).
TEST(ZipReadTest, ParsesFourHundredThousandEntries) {
  constexpr int kEntries = 400000;
  std::vector<std::string> names;
  std::vector<std::string> contents;
  names.reserve(kEntries);
  contents.reserve(kEntries);
  for (int i = 0; i < kEntries; ++i) {
    names.push_back(absl::StrCat("archive/data/", i));
    contents.push_back(std::string(i % 5, static_cast<char>('a' + i % 26)));
  }
  std::vector<std::pair<std::string, absl::string_view>> entries;
  entries.reserve(kEntries);
  for (int i = 0; i < kEntries; ++i) entries.emplace_back(names[i], contents[i]);
  DCP_ASSERT_OK_AND_ASSIGN(std::string archive, BuildZipArchive(entries));

  uint64_t fetched = 0;
  ZipByteSource source(archive.size(), CountingReader(archive, &fetched));
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory dir, ReadZipDirectory(source));
  EXPECT_EQ(dir, *ReadZipDirectory(archive));
  ASSERT_THAT(dir.entries, SizeIs(kEntries));
  // Every byte fetched about once: a miss refetches at most the bytes it
  // asks for (here the central directory's last block, and header reads
  // straddling a block's end), never whole blocks.
  const uint64_t bound = archive.size() + archive.size() / 50 + 4096;
  EXPECT_LE(fetched, bound);
  for (int i = 0; i < kEntries; ++i) {
    const ZipEntry* entry = dir.Find(absl::StrCat("data/", i));
    ASSERT_NE(entry, nullptr) << i;
    ASSERT_EQ(entry, &dir.entries[i]);
    DCP_ASSERT_OK_AND_ASSIGN(absl::string_view data,
                             source.Read(entry->data_offset, entry->size));
    ASSERT_EQ(data, contents[i]) << i;
  }
  EXPECT_EQ(dir.Find("data/400000"), nullptr);
  EXPECT_EQ(dir.Find("data/"), nullptr);
  EXPECT_EQ(dir.Find(""), nullptr);
  EXPECT_EQ(dir.Find("data/39999"), &dir.entries[39999]);
  EXPECT_LE(fetched, bound);
}

TEST(ZipReadTest, FindWorksOnCopiedAndHandBuiltDirectories) {
  const std::string archive = Build(RecordLikeEntries(10));
  DCP_ASSERT_OK_AND_ASSIGN(ZipDirectory read, ReadZipDirectory(archive));
  const ZipDirectory copy = read;
  ASSERT_NE(copy.Find("version"), nullptr);
  EXPECT_EQ(copy.Find("version")->name, "archive/version");
  EXPECT_EQ(copy.Find("versio"), nullptr);
  EXPECT_EQ(copy.Find("version2"), nullptr);
  // Changed by hand: searched linearly.
  ZipDirectory changed = read;
  changed.entries.push_back({"archive/extra", 0, 0, 0, 0});
  ASSERT_NE(changed.Find("extra"), nullptr);
  EXPECT_EQ(changed.Find("data.pkl")->name, "archive/data.pkl");
  ZipDirectory by_hand;
  by_hand.prefix = "x/";
  by_hand.entries.push_back({"x/a", 0, 0, 0, 0});
  EXPECT_EQ(by_hand.Find("a"), &by_hand.entries[0]);
  EXPECT_EQ(by_hand.Find("b"), nullptr);
  // Another prefix finds nothing, indexed or not.
  ZipDirectory other_prefix = read;
  other_prefix.prefix = "arch/";
  EXPECT_EQ(other_prefix.Find("version"), nullptr);
}

// An archive whose local headers overlap: each claims an extra field of
// `extra_len` bytes that spans the following headers. The central
// directory lists `n` empty entries whose headers are 64 bytes apart.
std::string OverlappingHeadersArchive(int n, uint16_t extra_len) {
  std::string out;
  std::vector<uint32_t> offsets;
  auto name_of = [](int i) { return absl::StrCat("a/", 100000 + i); };
  for (int i = 0; i < n; ++i) {
    offsets.push_back(out.size());
    const std::string name = name_of(i);
    AppendU32(out, 0x04034b50);
    AppendU16(out, 0);
    AppendU16(out, 0);
    AppendU16(out, 0);
    AppendU32(out, 0);
    AppendU32(out, Crc32(""));
    AppendU32(out, 0);
    AppendU32(out, 0);
    AppendU16(out, name.size());
    AppendU16(out, extra_len);
    out += name;
    out.resize(offsets.back() + 64, 'Z');
  }
  out.resize(out.size() + extra_len, 'Z');  // Room for the last extra field.
  const uint32_t cd_offset = out.size();
  for (int i = 0; i < n; ++i) {
    const std::string name = name_of(i);
    AppendU32(out, 0x02014b50);
    AppendU16(out, 0);
    AppendU16(out, 0);
    AppendU16(out, 0);
    AppendU16(out, 0);
    AppendU32(out, 0);
    AppendU32(out, Crc32(""));
    AppendU32(out, 0);
    AppendU32(out, 0);
    AppendU16(out, name.size());
    AppendU16(out, 0);
    AppendU16(out, 0);
    AppendU16(out, 0);
    AppendU16(out, 0);
    AppendU32(out, 0);
    AppendU32(out, offsets[i]);
    out += name;
  }
  const uint32_t cd_size = out.size() - cd_offset;
  AppendU32(out, 0x06054b50);
  AppendU16(out, 0);
  AppendU16(out, 0);
  AppendU16(out, n);
  AppendU16(out, n);
  AppendU32(out, cd_size);
  AppendU32(out, cd_offset);
  AppendU16(out, 0);
  return out;
}

TEST(ZipReadTest, OverlappingHeadersCannotMultiplyTheBytesRead) {
  // Reading every header's name and extra field would fetch 2000 x 60000
  // bytes (120 MB) from a 250 KB archive.
  const std::string archive = OverlappingHeadersArchive(2000, 60000);
  uint64_t fetched = 0;
  ZipByteSource source(archive.size(), CountingReader(archive, &fetched));
  EXPECT_THAT(ReadZipDirectory(source).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("\"a/100000\" (header at 0, data [")));
  EXPECT_LE(fetched, archive.size() + 2 * 4096);
  EXPECT_THAT(ReadZipDirectory(archive).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("overlaps")));
  // The same layout without the overlap (no extra fields) is valid.
  DCP_EXPECT_OK(ReadZipDirectory(OverlappingHeadersArchive(2000, 0)).status());
}

// ---- Malformed archives -----------------------------------------------------

struct Corruption {
  std::string name;
  std::function<void(std::string&)> corrupt;
  std::string message;
};

class ZipCorruptionTest : public ::testing::TestWithParam<Corruption> {};

TEST_P(ZipCorruptionTest, IsDataLossWithAClearMessage) {
  std::string archive = Build(RecordLikeEntries(100));
  GetParam().corrupt(archive);
  EXPECT_THAT(
      ReadZipDirectory(archive).status(),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr(GetParam().message)));
}

// Offset of field `field` of central directory entry `i` of an archive
// built from RecordLikeEntries().
size_t CdField(const std::string& archive, int i, size_t field) {
  size_t at = CentralDirectoryOffset(archive);
  for (int k = 0; k < i; ++k) {
    const size_t name_len = static_cast<unsigned char>(archive[at + 28]) |
                            static_cast<unsigned char>(archive[at + 29]) << 8;
    const size_t extra_len = static_cast<unsigned char>(archive[at + 30]) |
                             static_cast<unsigned char>(archive[at + 31]) << 8;
    at += 46 + name_len + extra_len;
  }
  return at + field;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ZipCorruptionTest,
    ::testing::Values(
        Corruption{"TooSmall", [](std::string& a) { a.resize(10); },
                   "too small"},
        Corruption{"NoEndRecord",
                   [](std::string& a) { a.resize(a.size() - 1); },
                   "no end of central directory record"},
        Corruption{"BadCentralSignature",
                   [](std::string& a) { a[CdField(a, 1, 0)] = 'X'; },
                   "central directory entry 1 (offset"},
        Corruption{"Compressed",
                   [](std::string& a) { PutU16At(a, CdField(a, 2, 10), 8); },
                   "compression method 8 is not supported"},
        Corruption{"Encrypted",
                   [](std::string& a) { PutU16At(a, CdField(a, 0, 8), 1); },
                   "encrypted"},
        Corruption{"CompressedSizeDiffers",
                   [](std::string& a) { PutU32At(a, CdField(a, 2, 20), 99); },
                   "compressed size 99 != size 100"},
        Corruption{"HeaderOffsetPastCentralDirectory",
                   [](std::string& a) {
                     PutU32At(a, CdField(a, 3, 42), a.size() - 100);
                   },
                   "is not before the central directory"},
        Corruption{"HeaderOffsetIntoOtherData",
                   [](std::string& a) { PutU32At(a, CdField(a, 3, 42), 0); },
                   "local header names \"archive/data.pkl\""},
        Corruption{"SizeRunsPastCentralDirectory",
                   [](std::string& a) {
                     PutU32At(a, CdField(a, 2, 20), 100000);
                     PutU32At(a, CdField(a, 2, 24), 100000);
                   },
                   "contradict the central directory"},
        Corruption{
            "LocalSignature",
            [](std::string& a) { a[GetU32At(a, CdField(a, 1, 42))] = 'Q'; },
            "bad local header signature"},
        Corruption{"DataRunsPastCentralDirectory",
                   [](std::string& a) {
                     const size_t header = GetU32At(a, CdField(a, 4, 42));
                     for (size_t at : {CdField(a, 4, 20), CdField(a, 4, 24),
                                       header + 18, header + 22}) {
                       PutU32At(a, at, 1000);
                     }
                   },
                   "runs past the central directory"},
        Corruption{"NamePrefixDiffers",
                   [](std::string& a) {
                     const size_t at = CdField(a, 1, 46);
                     a[at] = 'b';
                   },
                   "is not inside the archive's top-level directory"},
        Corruption{"EntryCountTooLarge",
                   [](std::string& a) {
                     PutU16At(a, a.size() - 22 + 8, 6);
                     PutU16At(a, a.size() - 22 + 10, 6);
                   },
                   "contradicts the ZIP64 end record"},
        Corruption{
            "CentralDirectoryOffsetWrong",
            [](std::string& a) {
              PutU32At(a, a.size() - 22 + 16, CentralDirectoryOffset(a) + 1);
              // Keep the ZIP64 record consistent with it.
              PutU32At(a, a.size() - 42 - 56 + 48, CentralDirectoryOffset(a));
            },
            "does not end where the end records start"},
        Corruption{"Zip64RecordSignature",
                   [](std::string& a) { a[a.size() - 98] = 'X'; },
                   "bad ZIP64 end record signature"},
        Corruption{
            "Zip64LocatorOffset",
            [](std::string& a) { PutU32At(a, a.size() - 42 + 8, a.size()); },
            "does not leave room"}),
    [](const ::testing::TestParamInfo<Corruption>& info) {
      return info.param.name;
    });

TEST(ZipReadTest, RejectsOverlappingEntries) {
  // Entry 0's data is [64, 68) and entry 1's header starts at 68; make
  // entry 0 (central directory and local header alike) claim 10 bytes.
  std::string archive = Build({{"a/x", "1234"}, {"a/y", "5678"}});
  ASSERT_EQ(GetU32At(archive, CdField(archive, 1, 42)), 68u);
  for (size_t at : {CdField(archive, 0, 20), CdField(archive, 0, 24),
                    size_t{18}, size_t{22}}) {
    PutU32At(archive, at, 10);
  }
  EXPECT_THAT(ReadZipDirectory(archive).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("overlaps")));
}

TEST(ZipReadTest, RejectsDuplicateNames) {
  std::string archive = Build({{"a/x", "1234"}, {"a/y", "5678"}});
  archive[CdField(archive, 1, 46 + 2)] = 'x';
  EXPECT_THAT(ReadZipDirectory(archive).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("duplicate entry \"a/x\"")));
}

TEST(ZipReadTest, EveryTruncationFails) {
  const std::string archive = Build(RecordLikeEntries(50));
  for (size_t n = 0; n < archive.size(); ++n) {
    SCOPED_TRACE(n);
    EXPECT_THAT(
        ReadZipDirectory(absl::string_view(archive).substr(0, n)).status(),
        StatusIs(absl::StatusCode::kDataLoss));
    // Dropping leading bytes breaks every offset too.
    EXPECT_THAT(
        ReadZipDirectory(absl::string_view(archive).substr(archive.size() - n))
            .status(),
        StatusIs(absl::StatusCode::kDataLoss));
  }
}

TEST(ZipReadTest, RandomMutationsNeverCrash) {
  const std::string original = Build(RecordLikeEntries(300));
  const uint32_t seed = dcp::test::TestSeed();
  SCOPED_TRACE(absl::StrCat("DCP_TEST_SEED=", seed));
  std::mt19937 rng(seed);
  int ok = 0;
  for (int iteration = 0; iteration < 3000; ++iteration) {
    std::string archive = original;
    const int flips = 1 + rng() % 4;
    for (int f = 0; f < flips; ++f) {
      // Bias towards the structures: the first and last few hundred bytes.
      size_t at = rng() % archive.size();
      if (rng() % 2)
        at = archive.size() - 1 - rng() % std::min<size_t>(400, archive.size());
      archive[at] = static_cast<char>(rng());
    }
    absl::StatusOr<ZipDirectory> dir = ReadZipDirectory(archive);
    if (!dir.ok()) {
      EXPECT_THAT(dir.status(), StatusIs(absl::StatusCode::kDataLoss));
      continue;
    }
    ++ok;
    for (const ZipEntry& entry : dir->entries) {
      EXPECT_LE(entry.data_offset + entry.size, archive.size());
      DCP_EXPECT_OK(ZipEntryData(archive, entry).status());
    }
  }
  // Mutations inside the data or padding leave the directory valid; the
  // others are rejected.
  EXPECT_GT(ok, 0);
  EXPECT_LT(ok, 3000);
}

}  // namespace
}  // namespace dcp
