// FileSystemWriter / FileSystemReader in hostile or damaged directories, on
// the real file system (issue 9 items 2 and 3): FIFOs, sockets and
// directories named like checkpoint files fail a load at once (never a
// hang), symbolic links inside a checkpoint are refused unless allowed, and
// a save never follows, truncates or removes a file planted at the name of
// a file it creates.
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "checkpoint/save_load.h"
#include "core/metadata.h"
#include "core/state_dict.h"
#include "core/status.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/file_system.h"
#include "storage/fs_storage.h"
#include "storage/posix_file_system.h"
#include "testing/checkpoint_scenarios.h"
#include "testing/hostile_files.h"
#include "testing/status_matchers.h"

namespace dcp {
namespace {

using ::dcp::test::CheckModelStateDict;
using ::dcp::test::FifoWatchdog;
using ::dcp::test::IsOkAndHolds;
using ::dcp::test::MakeFifo;
using ::dcp::test::MakeModelStateDict;
using ::dcp::test::MakeSocketFile;
using ::dcp::test::MakeSymlink;
using ::dcp::test::ModelLayout;
using ::dcp::test::ModelValues;
using ::dcp::test::StatusIs;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

// A new, empty directory under $TEST_TMPDIR.
std::string NewTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ =
      absl::StrCat(base != nullptr ? base : "/tmp", "/hostile_XXXXXX");
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  const char* made = ::mkdtemp(buf.data());
  CHECK(made != nullptr) << "mkdtemp failed, errno " << errno;
  return made;
}

StateDict ModelVersion(int seed) {
  absl::StatusOr<StateDict> sd =
      MakeModelStateDict(0, 1, ModelLayout::kSave, ModelValues::kTrue, seed);
  CHECK(sd.ok()) << sd.status();
  return *std::move(sd);
}

absl::StatusOr<Metadata> SaveTo(std::shared_ptr<FileSystem> fs,
                                const std::string& dir, int seed,
                                FileSystemWriterOptions options = {}) {
  options.file_system = std::move(fs);
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemWriter> writer,
                       FileSystemWriter::Create(dir, options));
  SaveOptions save;
  save.no_dist = true;
  return Save(ModelVersion(seed), *writer, save);
}

// Loads the model from `dir` and checks it has `seed`'s values.
absl::Status LoadModelVersion(const std::string& dir, int seed,
                              FileSystemReaderOptions options = {}) {
  DCP_ASSIGN_OR_RETURN(
      StateDict dest,
      MakeModelStateDict(0, 1, ModelLayout::kLoad, ModelValues::kPlaceholder));
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                       FileSystemReader::Create(dir, options));
  LoadOptions load;
  load.no_dist = true;
  DCP_RETURN_IF_ERROR(Load(dest, *reader, load));
  return CheckModelStateDict(dest, 0, 1, ModelLayout::kLoad, seed);
}

// The data file names of the checkpoint `md` describes, sorted, unique.
std::vector<std::string> DataFilesOf(const Metadata& md) {
  std::vector<std::string> names;
  for (const auto& [index, info] : md.storage_data) {
    names.push_back(info.relative_path);
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

std::vector<std::string> Children(const std::string& dir) {
  absl::StatusOr<std::vector<std::string>> children =
      PosixFileSystem().GetChildren(dir);
  CHECK(children.ok()) << children.status();
  return *children;
}

std::string Contents(const std::string& path) {
  PosixFileSystem fs;
  absl::StatusOr<std::string> data = ReadFileToString(fs, path);
  CHECK(data.ok()) << data.status();
  return *data;
}

void WriteFile(const std::string& path, absl::string_view data) {
  PosixFileSystem fs;
  absl::Status status = WriteStringToFile(fs, path, data, /*sync=*/false);
  CHECK(status.ok()) << status;
}

// The token of the save that wrote `md` ("__<rank>_<n>_<token>.distcp").
std::string SaveTokenOf(const Metadata& md) {
  const std::vector<std::string> files = DataFilesOf(md);
  CHECK(!files.empty());
  absl::string_view name = files.front();
  CHECK(absl::ConsumeSuffix(&name, ".distcp")) << name;
  return std::string(name.substr(name.rfind('_') + 1));
}

class FsStorageHostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DCP_ASSERT_OK_AND_ASSIGN(md_, SaveTo(fs_, dir_, /*seed=*/1));
    DCP_ASSERT_OK(LoadModelVersion(dir_, 1));
    data_files_ = DataFilesOf(md_);
    ASSERT_FALSE(data_files_.empty());
  }

  std::string Path(absl::string_view name) const {
    return JoinPath(dir_, name);
  }

  // Replaces the file `name` of the checkpoint by what `make` puts at its
  // path.
  void Replace(absl::string_view name,
               absl::Status (*make)(const std::string&)) {
    DCP_ASSERT_OK(fs_->RemoveFile(Path(name)));
    DCP_ASSERT_OK(make(Path(name)));
  }

  std::shared_ptr<FileSystem> fs_ = NewPosixFileSystem();
  const std::string dir_ = NewTempDir();
  Metadata md_;
  std::vector<std::string> data_files_;
};

// ---- Only regular files -----------------------------------------------------

TEST_F(FsStorageHostileTest, FifoMetadataFailsReadAndLoadAtOnce) {
  const std::string metadata = Path(".metadata");
  Replace(".metadata", MakeFifo);
  // A regression blocks in open(2) until the watchdog gives it a writer.
  FifoWatchdog watchdog({metadata});
  const auto is_fifo = StatusIs(
      absl::StatusCode::kFailedPrecondition,
      AllOf(HasSubstr(metadata), HasSubstr("is a FIFO, not a regular file")));
  EXPECT_THAT(ReadCheckpointMetadata(dir_), is_fifo);
  EXPECT_THAT(LoadModelVersion(dir_, 1), is_fifo);
  EXPECT_FALSE(watchdog.fired()) << "opening the FIFO .metadata blocked";
}

TEST_F(FsStorageHostileTest, FifoDataFileFailsTheLoadNamingIt) {
  const std::string data = Path(data_files_.front());
  Replace(data_files_.front(), MakeFifo);
  FifoWatchdog watchdog({data});
  EXPECT_THAT(LoadModelVersion(dir_, 1),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(data), HasSubstr("is a FIFO"))));
  EXPECT_FALSE(watchdog.fired()) << "opening the FIFO data file blocked";
}

TEST_F(FsStorageHostileTest, SocketNamedLikeADataFileFailsTheLoadNamingIt) {
  const std::string data = Path(data_files_.front());
  Replace(data_files_.front(), MakeSocketFile);
  EXPECT_THAT(LoadModelVersion(dir_, 1),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(data), HasSubstr("is a socket"))));
}

TEST_F(FsStorageHostileTest, DirectoryNamedLikeADataFileFailsTheLoadNamingIt) {
  const std::string data = Path(data_files_.front());
  DCP_ASSERT_OK(fs_->RemoveFile(data));
  DCP_ASSERT_OK(fs_->CreateDir(data));
  EXPECT_THAT(LoadModelVersion(dir_, 1),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(data), HasSubstr("is a directory"))));
}

TEST_F(FsStorageHostileTest, DirectoryNamedMetadataFailsTheRead) {
  DCP_ASSERT_OK(fs_->RemoveFile(Path(".metadata")));
  DCP_ASSERT_OK(fs_->CreateDir(Path(".metadata")));
  EXPECT_THAT(ReadCheckpointMetadata(dir_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(Path(".metadata")),
                             HasSubstr("is a directory"))));
}

// ---- Symbolic links on load -------------------------------------------------

// A block checksum file is an aid: whatever is at its name that is not a
// usable one (a FIFO, a socket, a directory, a link to another data file's
// checksums) is skipped without blocking, and the load verifies whole
// records instead.
TEST(FsStorageHostileBlockChecksumsTest, OddFilesAtTheNameAreSkipped) {
  const std::string dir = NewTempDir();
  const at::Tensor big = at::arange(3 * 262144, at::kFloat);  // 3 MiB.
  FileSystemWriterOptions options;
  options.file_system = NewPosixFileSystem();
  DCP_ASSERT_OK_AND_ASSIGN(std::unique_ptr<FileSystemWriter> writer,
                           FileSystemWriter::Create(dir, options));
  SaveOptions save;
  save.no_dist = true;
  DCP_ASSERT_OK_AND_ASSIGN(Metadata md,
                           Save(StateDict{{"w", big}}, *writer, save));
  const std::string data = JoinPath(dir, DataFilesOf(md).front());
  const std::string checksums = absl::StrCat(data, ".dcpcrc");
  const std::string saved = Contents(checksums);
  auto load = [&]() -> absl::Status {
    StateDict dest{{"w", at::zeros_like(big)}};
    DCP_ASSIGN_OR_RETURN(std::unique_ptr<FileSystemReader> reader,
                         FileSystemReader::Create(dir));
    LoadOptions options;
    options.no_dist = true;
    DCP_RETURN_IF_ERROR(Load(dest, *reader, options));
    if (!dest.Find("w")->get<at::Tensor>().equal(big)) {
      return absl::InternalError("loaded values differ");
    }
    return absl::OkStatus();
  };
  DCP_ASSERT_OK(load());
  PosixFileSystem fs;
  const std::string elsewhere = JoinPath(NewTempDir(), "other.dcpcrc");
  WriteFile(elsewhere, saved);
  struct Case {
    const char* what;
    std::function<absl::Status()> make;
  };
  const std::vector<Case> cases = {
      {"FIFO", [&] { return MakeFifo(checksums); }},
      {"socket", [&] { return MakeSocketFile(checksums); }},
      {"directory", [&] { return fs.CreateDir(checksums); }},
      {"symbolic link", [&] { return MakeSymlink(elsewhere, checksums); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ASSERT_EQ(::remove(checksums.c_str()), 0) << errno;
    DCP_ASSERT_OK(c.make());
    FifoWatchdog watchdog({checksums});
    DCP_EXPECT_OK(load());
    EXPECT_FALSE(watchdog.fired()) << "opening the block checksums blocked";
  }
}

TEST_F(FsStorageHostileTest, SymlinkedDataFileIsRefusedUnlessAllowed) {
  // The data file lives elsewhere; the checkpoint holds a link to it.
  const std::string elsewhere = JoinPath(NewTempDir(), "moved.distcp");
  const std::string data = Path(data_files_.front());
  DCP_ASSERT_OK(fs_->Rename(data, elsewhere));
  DCP_ASSERT_OK(MakeSymlink(elsewhere, data));
  EXPECT_THAT(LoadModelVersion(dir_, 1),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(data), HasSubstr("symbolic link"))));
  FileSystemReaderOptions allow;
  allow.allow_symlinks = true;
  DCP_EXPECT_OK(LoadModelVersion(dir_, 1, allow));
}

TEST_F(FsStorageHostileTest, SymlinkedMetadataIsRefusedUnlessAllowed) {
  const std::string elsewhere = JoinPath(NewTempDir(), "moved.metadata");
  const std::string metadata = Path(".metadata");
  DCP_ASSERT_OK(fs_->Rename(metadata, elsewhere));
  DCP_ASSERT_OK(MakeSymlink(elsewhere, metadata));
  const auto is_link =
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr(metadata), HasSubstr("symbolic link")));
  EXPECT_THAT(ReadCheckpointMetadata(dir_), is_link);
  EXPECT_THAT(LoadModelVersion(dir_, 1), is_link);
  FileSystemReaderOptions allow;
  allow.allow_symlinks = true;
  DCP_EXPECT_OK(LoadModelVersion(dir_, 1, allow));
}

TEST_F(FsStorageHostileTest, LinkToADeviceIsRefusedEvenWhenLinksAreAllowed) {
  const std::string data = Path(data_files_.front());
  DCP_ASSERT_OK(fs_->RemoveFile(data));
  DCP_ASSERT_OK(MakeSymlink("/dev/zero", data));
  FileSystemReaderOptions allow;
  allow.allow_symlinks = true;
  EXPECT_THAT(LoadModelVersion(dir_, 1, allow),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(data), HasSubstr("character device"))));
}

TEST_F(FsStorageHostileTest, TheCheckpointDirectoryItselfMayBeASymlink) {
  const std::string link = JoinPath(NewTempDir(), "ckpt_link");
  DCP_ASSERT_OK(MakeSymlink(dir_, link));
  DCP_EXPECT_OK(ReadCheckpointMetadata(link).status());
  DCP_EXPECT_OK(LoadModelVersion(link, 1));
  // And a save through it works as well.
  DCP_ASSERT_OK(SaveTo(fs_, link, /*seed=*/2).status());
  DCP_EXPECT_OK(LoadModelVersion(dir_, 2));
}

// ---- Safe creation ----------------------------------------------------------

// Plants a symbolic link to `victim` at the first file the save creates
// whose name matches `matches`, just before creating it: an attacker who
// guessed (or raced) the name.
class PlantingFileSystem : public FileSystemWrapper {
 public:
  PlantingFileSystem(std::shared_ptr<FileSystem> target, std::string victim,
                     bool (*matches)(absl::string_view name))
      : FileSystemWrapper(std::move(target)),
        victim_(std::move(victim)),
        matches_(matches) {}

  using FileSystemWrapper::NewWritableFile;
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      absl::string_view path, const WritableFileOptions& options) override {
    if (planted_.empty() && matches_(Basename(path))) {
      planted_ = std::string(path);
      const absl::Status made = MakeSymlink(victim_, planted_);
      CHECK(made.ok()) << made;
    }
    return FileSystemWrapper::NewWritableFile(path, options);
  }

  // The path of the planted link; empty if none was planted.
  const std::string& planted() const { return planted_; }

 private:
  const std::string victim_;
  bool (*const matches_)(absl::string_view name);
  std::string planted_;
};

bool IsFirstDataFile(absl::string_view name) {
  return absl::StartsWith(name, "__0_0_") && absl::EndsWith(name, ".distcp");
}

bool IsTempMetadata(absl::string_view name) {
  return absl::StartsWith(name, ".metadata.tmp.");
}

class FsStoragePlantedLinkTest : public FsStorageHostileTest {
 protected:
  void SetUp() override {
    FsStorageHostileTest::SetUp();
    victim_ = JoinPath(NewTempDir(), "victim");
    WriteFile(victim_, "precious, not a checkpoint file");
  }

  // Saves version 2 through a file system that plants a link to the victim
  // at the first file matching `matches`, and checks that the save failed
  // naming it, that the victim and the link are untouched, and that the
  // checkpoint of version 1 is still the current one.
  void ExpectPlantedLinkIsNeverFollowed(bool (*matches)(absl::string_view)) {
    auto planting = std::make_shared<PlantingFileSystem>(fs_, victim_, matches);
    FileSystemWriterOptions options;
    options.thread_count = 2;  // Another data file is created and removed.
    absl::StatusOr<Metadata> saved = SaveTo(planting, dir_, 2, options);
    ASSERT_FALSE(planting->planted().empty()) << "no file matched";
    EXPECT_THAT(saved, StatusIs(absl::StatusCode::kAlreadyExists,
                                AllOf(HasSubstr(planting->planted()),
                                      HasSubstr("symbolic link"))));
    EXPECT_EQ(Contents(victim_), "precious, not a checkpoint file");
    // The link is not dcp's: it stays, still pointing at the victim.
    struct stat st;
    ASSERT_EQ(::lstat(planting->planted().c_str(), &st), 0);
    EXPECT_TRUE(S_ISLNK(st.st_mode));
    DCP_EXPECT_OK(LoadModelVersion(dir_, 1));
  }

  std::string victim_;
};

TEST_F(FsStoragePlantedLinkTest, LinkAtTheNextDataFileNameIsNeverFollowed) {
  ExpectPlantedLinkIsNeverFollowed(IsFirstDataFile);
  // The failed save removed the data files it created, and only those.
  for (const std::string& name : Children(dir_)) {
    if (!absl::EndsWith(name, ".distcp")) continue;
    const bool is_previous = std::find(data_files_.begin(), data_files_.end(),
                                       name) != data_files_.end();
    EXPECT_TRUE(is_previous || IsFirstDataFile(name)) << name;
  }
}

TEST_F(FsStoragePlantedLinkTest, LinkAtTheTempMetadataNameIsNeverFollowed) {
  ExpectPlantedLinkIsNeverFollowed(IsTempMetadata);
}

TEST_F(FsStorageHostileTest, TokensAreRandomNotDerivedFromTheMetadata) {
  DCP_ASSERT_OK_AND_ASSIGN(Metadata second, SaveTo(fs_, dir_, /*seed=*/2));
  const std::string first_token = SaveTokenOf(md_);
  const std::string second_token = SaveTokenOf(second);
  for (const std::string& token : {first_token, second_token}) {
    EXPECT_EQ(token.size(), 16u) << token;
    EXPECT_TRUE(std::all_of(token.begin(), token.end(), [](char c) {
      return absl::ascii_isdigit(static_cast<unsigned char>(c)) ||
             (c >= 'a' && c <= 'f');
    })) << token;
  }
  EXPECT_NE(first_token, second_token);
  // Nothing the previous .metadata says (its save id, its token) gives the
  // next save's names away.
  ASSERT_TRUE(md_.storage_meta.has_value());
  ASSERT_TRUE(second.storage_meta.has_value());
  for (const Metadata* md : {&md_, &second}) {
    std::string save_id_hex;
    for (char c : md->storage_meta->save_id.value_or("")) {
      if (c != '-') save_id_hex.push_back(c);
    }
    EXPECT_THAT(save_id_hex, Not(HasSubstr(second_token.substr(0, 8))));
    EXPECT_THAT(save_id_hex, Not(HasSubstr(first_token.substr(0, 8))));
  }
  // And the second save's files were all created new.
  EXPECT_THAT(Children(dir_), Contains(DataFilesOf(second).front()));
}

}  // namespace
}  // namespace dcp
