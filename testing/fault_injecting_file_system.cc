#include "testing/fault_injecting_file_system.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/status.h"
#include "glog/logging.h"
#include "storage/file_system.h"

namespace dcp::test {

absl::string_view FileOpName(FileOp op) {
  switch (op) {
    case FileOp::kCreate:
      return "create";
    case FileOp::kAppend:
      return "append";
    case FileOp::kWriteAt:
      return "writeat";
    case FileOp::kSync:
      return "sync";
    case FileOp::kClose:
      return "close";
    case FileOp::kOpen:
      return "open";
    case FileOp::kRead:
      return "read";
    case FileOp::kRename:
      return "rename";
    case FileOp::kSyncDir:
      return "syncdir";
    case FileOp::kRemove:
      return "remove";
    case FileOp::kRemoveDir:
      return "removedir";
    case FileOp::kCreateDir:
      return "createdir";
    case FileOp::kList:
      return "list";
    case FileOp::kExists:
      return "exists";
    case FileOp::kSize:
      return "size";
    case FileOp::kLock:
      return "lock";
    case FileOp::kUnlock:
      return "unlock";
  }
  return "unknown";
}

std::ostream& operator<<(std::ostream& os, FileOp op) {
  return os << FileOpName(op);
}

bool IsMutating(FileOp op) {
  switch (op) {
    case FileOp::kCreate:
    case FileOp::kAppend:
    case FileOp::kWriteAt:
    case FileOp::kSync:
    case FileOp::kClose:
    case FileOp::kRename:
    case FileOp::kSyncDir:
    case FileOp::kRemove:
    case FileOp::kRemoveDir:
    case FileOp::kCreateDir:
    case FileOp::kLock:
      return true;
    case FileOp::kOpen:
    case FileOp::kRead:
    case FileOp::kList:
    case FileOp::kExists:
    case FileOp::kSize:
    case FileOp::kUnlock:
      return false;
  }
  return false;
}

namespace fault_injecting_file_system_internal {
namespace {

// A file or directory of the crash model. Nodes are identities (inodes):
// a rename moves the node to another directory entry.
struct Node {
  explicit Node(bool is_dir) : is_dir(is_dir) {}

  const bool is_dir;

  // Files: how many leading bytes of the content are durable.
  uint64_t synced_size = 0;
  // Files: set when the file lost its last live name; `stash` then holds
  // its durable bytes (read before it was unlinked).
  bool unlinked = false;
  std::string stash;

  // Directories: the live entries known to the model. Entries of a
  // directory that existed before tracking started are added lazily, when
  // an operation touches them, unless `complete`.
  std::map<std::string, std::shared_ptr<Node>> children;
  // Directories: for every name changed since the last SyncDir, the entry
  // it had then (nullptr: no entry). Other names are durable as they are.
  std::map<std::string, std::shared_ptr<Node>> durable;
  // Directories: `children` holds every live entry.
  bool complete = false;
};

using NodePtr = std::shared_ptr<Node>;

std::string ChildPath(const std::string& dir, const std::string& name) {
  if (dir == ".") return name;
  if (dir == "/") return absl::StrCat("/", name);
  return absl::StrCat(dir, "/", name);
}

// The durable entries of `dir`: the live ones, with changes since the last
// SyncDir undone. Only entries the model knows about.
std::map<std::string, NodePtr> DurableChildren(const Node& dir) {
  std::map<std::string, NodePtr> out = dir.children;
  for (const auto& [name, node] : dir.durable) {
    if (node == nullptr) {
      out.erase(name);
    } else {
      out[name] = node;
    }
  }
  return out;
}

std::set<std::string> EntryNames(const Node& dir) {
  std::set<std::string> names;
  for (const auto& [name, node] : dir.children) names.insert(name);
  for (const auto& [name, node] : dir.durable) names.insert(name);
  return names;
}

NodePtr LiveChild(const Node& dir, const std::string& name) {
  auto it = dir.children.find(name);
  return it == dir.children.end() ? nullptr : it->second;
}

NodePtr DurableChild(const Node& dir, const std::string& name) {
  auto it = dir.durable.find(name);
  if (it != dir.durable.end()) return it->second;
  return LiveChild(dir, name);
}

// Records that entry `name` of `dir` now refers to `node` (nullptr: removed).
void SetEntry(Node& dir, const std::string& name, NodePtr node) {
  if (dir.durable.count(name) == 0) dir.durable[name] = LiveChild(dir, name);
  if (node == nullptr) {
    dir.children.erase(name);
  } else {
    dir.children[name] = std::move(node);
  }
}

}  // namespace

class FaultFileLock;

class State {
 public:
  explicit State(std::shared_ptr<FileSystem> base) : base_(std::move(base)) {
    ResetModel();
  }

  // --- Gate ---------------------------------------------------------------

  // Decides whether an operation may proceed: crash state, stale handles,
  // CrashAfterOps, logging and fault rules. `epoch` < 0: not a file handle.
  absl::Status Begin(FileOp op, std::string entry, absl::string_view path,
                     absl::string_view path2, int64_t epoch) {
    if (crashed_) {
      return absl::AbortedError(absl::StrCat("simulated crash: ", entry));
    }
    if (epoch >= 0 && epoch != epoch_) {
      return absl::AbortedError(
          absl::StrCat("simulated crash: ", entry,
                       ": the file was opened before the simulated crash"));
    }
    const bool mutating = IsMutating(op);
    if (mutating) {
      if (crash_countdown_ == 0) {
        crash_countdown_ = -1;
        Crash();
        return absl::AbortedError(absl::StrCat("simulated crash: ", entry));
      }
      if (crash_countdown_ > 0) --crash_countdown_;
      ++op_count_;
    }
    log_.push_back({mutating, entry});

    absl::Status injected;
    for (Rule& rule : rules_) {
      if (rule.rule.op != op) continue;
      const std::string& needle = rule.rule.path_substring;
      if (!absl::StrContains(path, needle) &&
          !(path2.data() != nullptr && absl::StrContains(path2, needle))) {
        continue;
      }
      ++rule.matched;
      const bool fires = rule.matched >= rule.rule.nth &&
                         (rule.rule.times < 0 ||
                          rule.matched < rule.rule.nth + rule.rule.times);
      if (fires && injected.ok()) injected = rule.rule.status;
    }
    if (random_.one_in > 0) {
      const bool eligible =
          random_.ops.empty()
              ? mutating
              : std::find(random_.ops.begin(), random_.ops.end(), op) !=
                    random_.ops.end();
      if (eligible && rng_() % static_cast<uint32_t>(random_.one_in) == 0 &&
          injected.ok()) {
        injected = random_.status;
      }
    }
    if (!injected.ok()) return Annotate(injected, entry);
    return absl::OkStatus();
  }

  // --- Configuration --------------------------------------------------------

  void AddRule(FaultRule rule) {
    std::lock_guard<std::mutex> lock(mu_);
    rules_.push_back({std::move(rule), 0});
  }

  void ClearRules() {
    std::lock_guard<std::mutex> lock(mu_);
    rules_.clear();
  }

  void SetRandomFaults(RandomFaultOptions options) {
    std::lock_guard<std::mutex> lock(mu_);
    LOG(INFO) << "FaultInjectingFileSystem: random faults one_in="
              << options.one_in << " seed=" << options.seed;
    rng_.seed(options.seed);
    random_ = std::move(options);
  }

  void SimulateCrash() {
    std::lock_guard<std::mutex> lock(mu_);
    Crash();
  }

  void CrashAfterOps(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    crash_countdown_ = std::max(n, 0);
  }

  bool crashed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return crashed_;
  }

  std::vector<std::string> Log(bool mutating_only) const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const auto& [mutating, entry] : log_) {
      if (mutating || !mutating_only) out.push_back(entry);
    }
    return out;
  }

  int op_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return op_count_;
  }

  void ClearOpLog() {
    std::lock_guard<std::mutex> lock(mu_);
    log_.clear();
  }

  absl::Status Restart() {
    std::lock_guard<std::mutex> lock(mu_);
    Crash();
    absl::Status status = RestoreDurableState();
    ResetModel();
    ++epoch_;
    crashed_ = false;
    crash_countdown_ = -1;
    return Annotate(status, "FaultInjectingFileSystem::Restart");
  }

  // --- File system operations ----------------------------------------------

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::shared_ptr<State>& self, absl::string_view path,
      const WritableFileOptions& options);
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::shared_ptr<State>& self, absl::string_view path,
      const RandomAccessFileOptions& options);

  absl::StatusOr<uint64_t> FileSize(absl::string_view path) {
    std::lock_guard<std::mutex> lock(mu_);
    DCP_RETURN_IF_ERROR(
        Begin(FileOp::kSize, absl::StrCat("size ", path), path, {}, -1));
    return base_->FileSize(path);
  }

  absl::Status FileExists(absl::string_view path) {
    std::lock_guard<std::mutex> lock(mu_);
    DCP_RETURN_IF_ERROR(
        Begin(FileOp::kExists, absl::StrCat("exists ", path), path, {}, -1));
    return base_->FileExists(path);
  }

  absl::StatusOr<bool> IsDirectory(absl::string_view path) {
    std::lock_guard<std::mutex> lock(mu_);
    DCP_RETURN_IF_ERROR(
        Begin(FileOp::kExists, absl::StrCat("isdir ", path), path, {}, -1));
    return base_->IsDirectory(path);
  }

  absl::StatusOr<std::vector<std::string>> GetChildren(absl::string_view dir) {
    std::lock_guard<std::mutex> lock(mu_);
    DCP_RETURN_IF_ERROR(
        Begin(FileOp::kList, absl::StrCat("list ", dir), dir, {}, -1));
    return base_->GetChildren(dir);
  }

  absl::StatusOr<std::unique_ptr<FileLock>> TryLockFile(
      const std::shared_ptr<State>& self, absl::string_view path,
      absl::string_view holder_info);
  absl::Status CreateDir(absl::string_view dir);
  absl::Status RemoveFile(absl::string_view path);
  absl::Status RemoveDir(absl::string_view dir);
  absl::Status Rename(absl::string_view from, absl::string_view to);
  absl::Status SyncDir(absl::string_view dir);

  // --- Used by open files (with mu_ held) -----------------------------------

  std::mutex& mu() { return mu_; }
  FileSystem& base() { return *base_; }
  // Logs the release of a lock (never fails, ignores rules).
  void LogUnlock(const std::string& path) {
    log_.push_back({false, absl::StrCat("unlock ", path)});
  }
  void ForgetLock(FaultFileLock* lock) { locks_.erase(lock); }

 private:
  struct Rule {
    FaultRule rule;
    int matched;
  };

  // Where a path leads in the model.
  struct Resolved {
    std::string path;  // Cleaned.
    NodePtr parent;    // Null if the parent is missing or not a
                       // directory, or `path` is a root.
    std::string name;  // The entry name in `parent`.
    NodePtr node;      // Null if the entry does not exist.
  };

  // The machine "dies": every later operation fails, and the locks its
  // processes held are released (the kernel would drop them).
  void Crash();

  void ResetModel() {
    roots_.clear();
    roots_["/"] = std::make_shared<Node>(/*is_dir=*/true);
    roots_["."] = std::make_shared<Node>(/*is_dir=*/true);
  }

  // The entry `name` of directory `dir` (at `dir_path`), discovering it in
  // the wrapped file system if the model does not know it yet.
  absl::StatusOr<NodePtr> Child(Node& dir, const std::string& dir_path,
                                const std::string& name) {
    if (NodePtr known = LiveChild(dir, name)) return known;
    if (dir.complete) return nullptr;
    const std::string path = ChildPath(dir_path, name);
    absl::StatusOr<bool> is_dir = base_->IsDirectory(path);
    if (absl::IsNotFound(is_dir.status()) ||
        absl::IsFailedPrecondition(is_dir.status())) {
      return nullptr;
    }
    DCP_RETURN_IF_ERROR(is_dir.status());
    auto node = std::make_shared<Node>(*is_dir);
    if (!*is_dir) {
      // Existing before tracking started, so durable in full.
      DCP_ASSIGN_OR_RETURN(node->synced_size, base_->FileSize(path));
    }
    dir.children[name] = node;
    return node;
  }

  absl::StatusOr<Resolved> Resolve(absl::string_view path) {
    Resolved r;
    r.path = CleanPath(path);
    const bool absolute = r.path.front() == '/';
    std::string cur_path = absolute ? "/" : ".";
    NodePtr cur = roots_.at(cur_path);
    if (r.path == "/" || r.path == ".") {
      r.node = cur;
      return r;
    }
    std::vector<std::string> parts =
        absl::StrSplit(r.path, '/', absl::SkipEmpty());
    for (size_t i = 0; i < parts.size(); ++i) {
      if (cur == nullptr || !cur->is_dir) return r;  // Parent unusable.
      if (i + 1 == parts.size()) {
        r.parent = cur;
        r.name = parts[i];
      }
      DCP_ASSIGN_OR_RETURN(NodePtr next, Child(*cur, cur_path, parts[i]));
      cur_path = ChildPath(cur_path, parts[i]);
      cur = std::move(next);
    }
    r.node = cur;
    return r;
  }

  // Discovers every entry below `dir` (before the directory moves).
  absl::Status DiscoverAll(Node& dir, const std::string& path) {
    if (!dir.complete) {
      DCP_ASSIGN_OR_RETURN(std::vector<std::string> names,
                           base_->GetChildren(path));
      for (const std::string& name : names) {
        DCP_RETURN_IF_ERROR(Child(dir, path, name).status());
      }
      dir.complete = true;
    }
    for (const auto& [name, child] : dir.children) {
      if (child->is_dir) {
        DCP_RETURN_IF_ERROR(DiscoverAll(*child, ChildPath(path, name)));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> ReadPrefix(const std::string& path, uint64_t n) {
    std::string data;
    if (n == 0) return data;
    DCP_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                         base_->NewRandomAccessFile(path));
    data.resize(n);
    DCP_RETURN_IF_ERROR(file->ReadInto(0, absl::MakeSpan(data)));
    return data;
  }

  // The durable bytes of file `node`, live at `path`.
  absl::StatusOr<std::string> DurableBytes(const Node& node,
                                           const std::string& path) {
    return ReadPrefix(path, node.synced_size);
  }

  // --- Restart ---------------------------------------------------------------

  void CollectLivePaths(const NodePtr& node, const std::string& path,
                        std::map<const Node*, std::string>& out) {
    out[node.get()] = path;
    for (const auto& [name, child] : node->children) {
      CollectLivePaths(child, ChildPath(path, name), out);
    }
  }

  // Reads what will be needed to rewrite the durable state below `dir`,
  // which is the same directory live and durable at `path`.
  absl::Status Plan(const Node& dir, const std::string& path) {
    for (const std::string& name : EntryNames(dir)) {
      const std::string child_path = ChildPath(path, name);
      const NodePtr live = LiveChild(dir, name);
      const NodePtr durable = DurableChild(dir, name);
      if (durable == live) {
        if (durable == nullptr) continue;
        if (durable->is_dir) {
          DCP_RETURN_IF_ERROR(Plan(*durable, child_path));
          continue;
        }
        DCP_ASSIGN_OR_RETURN(uint64_t size, base_->FileSize(child_path));
        if (size > durable->synced_size) {
          DCP_ASSIGN_OR_RETURN(contents_[durable.get()],
                               DurableBytes(*durable, child_path));
        }
      } else if (durable != nullptr) {
        std::set<const Node*> active;
        DCP_RETURN_IF_ERROR(CaptureAll(durable, child_path, active));
      }
    }
    return absl::OkStatus();
  }

  // Reads the durable content of the subtree `node`, which must be
  // recreated at `path` from scratch.
  absl::Status CaptureAll(const NodePtr& node, const std::string& path,
                          std::set<const Node*>& active) {
    if (!node->is_dir) {
      if (contents_.count(node.get()) > 0) return absl::OkStatus();
      if (node->unlinked) {
        contents_[node.get()] = node->stash;
        return absl::OkStatus();
      }
      auto live = live_paths_.find(node.get());
      if (live == live_paths_.end()) {
        return absl::InternalError(absl::StrCat(
            "crash model lost track of the file to restore at \"", path, "\""));
      }
      DCP_ASSIGN_OR_RETURN(contents_[node.get()],
                           DurableBytes(*node, live->second));
      return absl::OkStatus();
    }
    if (active.count(node.get()) > 0) return absl::OkStatus();  // A cycle.
    if (!node->complete) {
      return absl::InternalError(
          absl::StrCat("crash model cannot restore directory \"", path,
                       "\": its entries are unknown"));
    }
    active.insert(node.get());
    for (const auto& [name, child] : DurableChildren(*node)) {
      DCP_RETURN_IF_ERROR(CaptureAll(child, ChildPath(path, name), active));
    }
    active.erase(node.get());
    return absl::OkStatus();
  }

  // Rewrites the entries below `dir` (same directory live and durable at
  // `path`) to their durable state. Mirrors `Plan`.
  absl::Status Reconcile(const Node& dir, const std::string& path) {
    for (const std::string& name : EntryNames(dir)) {
      const std::string child_path = ChildPath(path, name);
      const NodePtr live = LiveChild(dir, name);
      const NodePtr durable = DurableChild(dir, name);
      if (durable == live) {
        if (durable == nullptr) continue;
        if (durable->is_dir) {
          DCP_RETURN_IF_ERROR(Reconcile(*durable, child_path));
        } else if (auto it = contents_.find(durable.get());
                   it != contents_.end()) {
          DCP_RETURN_IF_ERROR(WriteFile(child_path, it->second));
        }
        continue;
      }
      if (live != nullptr) DCP_RETURN_IF_ERROR(RemoveAll(child_path));
      if (durable != nullptr) {
        std::set<const Node*> active;
        DCP_RETURN_IF_ERROR(Materialize(durable, child_path, active));
      }
    }
    return absl::OkStatus();
  }

  // Creates the durable subtree `node` at `path`. Mirrors `CaptureAll`.
  absl::Status Materialize(const NodePtr& node, const std::string& path,
                           std::set<const Node*>& active) {
    if (!node->is_dir) {
      auto it = contents_.find(node.get());
      if (it == contents_.end()) {
        return absl::InternalError(
            absl::StrCat("crash model has no content for \"", path, "\""));
      }
      return WriteFile(path, it->second);
    }
    if (active.count(node.get()) > 0) return absl::OkStatus();  // A cycle.
    DCP_RETURN_IF_ERROR(base_->CreateDir(path));
    active.insert(node.get());
    for (const auto& [name, child] : DurableChildren(*node)) {
      DCP_RETURN_IF_ERROR(Materialize(child, ChildPath(path, name), active));
    }
    active.erase(node.get());
    return absl::OkStatus();
  }

  absl::Status WriteFile(const std::string& path, const std::string& data) {
    return WriteStringToFile(*base_, path, data, /*sync=*/false);
  }

  absl::Status RemoveAll(const std::string& path) {
    absl::StatusOr<bool> is_dir = base_->IsDirectory(path);
    if (absl::IsNotFound(is_dir.status())) return absl::OkStatus();
    DCP_RETURN_IF_ERROR(is_dir.status());
    if (!*is_dir) return base_->RemoveFile(path);
    DCP_ASSIGN_OR_RETURN(std::vector<std::string> names,
                         base_->GetChildren(path));
    for (const std::string& name : names) {
      DCP_RETURN_IF_ERROR(RemoveAll(ChildPath(path, name)));
    }
    return base_->RemoveDir(path);
  }

  absl::Status RestoreDurableState() {
    live_paths_.clear();
    contents_.clear();
    for (const auto& [path, root] : roots_) {
      CollectLivePaths(root, path, live_paths_);
    }
    absl::Status status;
    for (const auto& [path, root] : roots_) {
      status.Update(Plan(*root, path));
    }
    if (status.ok()) {
      for (const auto& [path, root] : roots_) {
        status.Update(Reconcile(*root, path));
      }
    }
    live_paths_.clear();
    contents_.clear();
    return status;
  }

  mutable std::mutex mu_;
  const std::shared_ptr<FileSystem> base_;

  // All guarded by mu_.
  std::vector<Rule> rules_;
  RandomFaultOptions random_;
  std::mt19937 rng_;
  std::vector<std::pair<bool, std::string>> log_;  // (mutating, entry)
  int op_count_ = 0;
  bool crashed_ = false;
  int crash_countdown_ = -1;              // < 0: no crash scheduled.
  int64_t epoch_ = 0;                     // Incremented by each Restart.
  std::map<std::string, NodePtr> roots_;  // "/" and ".".
  std::set<FaultFileLock*> locks_;        // Live locks holding a base lock.
  // Scratch for RestoreDurableState.
  std::map<const Node*, std::string> live_paths_;
  std::map<const Node*, std::string> contents_;
};

namespace {

class FaultWritableFile final : public WritableFile {
 public:
  FaultWritableFile(std::shared_ptr<State> state, std::string path,
                    std::shared_ptr<Node> node,
                    std::unique_ptr<WritableFile> base, int64_t epoch)
      : state_(std::move(state)),
        path_(std::move(path)),
        node_(std::move(node)),
        base_(std::move(base)),
        epoch_(epoch) {}

  absl::Status Append(absl::string_view data) override {
    std::lock_guard<std::mutex> lock(state_->mu());
    DCP_RETURN_IF_ERROR(state_->Begin(
        FileOp::kAppend, absl::StrCat("append ", path_, " ", data.size()),
        path_, {}, epoch_));
    return base_->Append(data);
  }

  absl::Status WriteAt(uint64_t offset, absl::string_view data) override {
    std::lock_guard<std::mutex> lock(state_->mu());
    DCP_RETURN_IF_ERROR(state_->Begin(
        FileOp::kWriteAt,
        absl::StrCat("writeat ", path_, " ", offset, " ", data.size()), path_,
        {}, epoch_));
    DCP_RETURN_IF_ERROR(
        CheckWriteAtRange(path_, offset, data.size(), base_->size()));
    // Overwritten durable bytes are not durable again until the next Sync
    // (the crash model in the header).
    if (!data.empty() && offset < node_->synced_size) {
      node_->synced_size = offset;
    }
    return base_->WriteAt(offset, data);
  }

  absl::Status Sync() override {
    std::lock_guard<std::mutex> lock(state_->mu());
    DCP_RETURN_IF_ERROR(state_->Begin(
        FileOp::kSync, absl::StrCat("sync ", path_), path_, {}, epoch_));
    DCP_RETURN_IF_ERROR(base_->Sync());
    node_->synced_size = base_->size();
    return absl::OkStatus();
  }

  absl::Status Close() override {
    std::lock_guard<std::mutex> lock(state_->mu());
    DCP_RETURN_IF_ERROR(state_->Begin(
        FileOp::kClose, absl::StrCat("close ", path_), path_, {}, epoch_));
    return base_->Close();
  }

  uint64_t size() const override { return base_->size(); }

 private:
  const std::shared_ptr<State> state_;
  const std::string path_;
  const std::shared_ptr<Node> node_;  // Mutated under state_->mu().
  const std::unique_ptr<WritableFile> base_;
  const int64_t epoch_;
};

class FaultRandomAccessFile final : public RandomAccessFile {
 public:
  FaultRandomAccessFile(std::shared_ptr<State> state, std::string path,
                        std::unique_ptr<RandomAccessFile> base, int64_t epoch)
      : state_(std::move(state)),
        path_(std::move(path)),
        base_(std::move(base)),
        epoch_(epoch) {}

  absl::StatusOr<absl::string_view> Read(uint64_t offset, size_t n,
                                         char* scratch) const override {
    std::lock_guard<std::mutex> lock(state_->mu());
    DCP_RETURN_IF_ERROR(state_->Begin(
        FileOp::kRead, absl::StrCat("read ", path_, " ", offset, " ", n), path_,
        {}, epoch_));
    return base_->Read(offset, n, scratch);
  }

  uint64_t size() const override { return base_->size(); }

 private:
  const std::shared_ptr<State> state_;
  const std::string path_;
  const std::unique_ptr<RandomAccessFile> base_;
  const int64_t epoch_;
};

}  // namespace

// A lock taken through the wrapper. A crash releases the wrapped lock (the
// holder died); the object then only reports that.
class FaultFileLock final : public FileLock {
 public:
  FaultFileLock(std::shared_ptr<State> state, std::string path,
                std::unique_ptr<FileLock> base)
      : FileLock(std::move(path)),
        state_(std::move(state)),
        base_(std::move(base)) {}

  ~FaultFileLock() override {
    std::lock_guard<std::mutex> lock(state_->mu());
    state_->ForgetLock(this);
    if (base_ != nullptr) {
      state_->LogUnlock(path());
      base_.reset();
    }
  }

  absl::Status CheckHeld() const override {
    std::lock_guard<std::mutex> lock(state_->mu());
    if (base_ == nullptr) {
      return absl::AbortedError(absl::StrCat("simulated crash: the lock on ",
                                             path(),
                                             " was released by the crash"));
    }
    return base_->CheckHeld();
  }

  // With the state's mutex held.
  void ReleaseForCrash() { base_.reset(); }

 private:
  const std::shared_ptr<State> state_;
  std::unique_ptr<FileLock> base_;  // Guarded by state_->mu().
};

void State::Crash() {
  crashed_ = true;
  for (FaultFileLock* lock : locks_) lock->ReleaseForCrash();
  locks_.clear();
}

absl::StatusOr<std::unique_ptr<FileLock>> State::TryLockFile(
    const std::shared_ptr<State>& self, absl::string_view path,
    absl::string_view holder_info) {
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(
      Begin(FileOp::kLock, absl::StrCat("lock ", path), path, {}, -1));
  DCP_ASSIGN_OR_RETURN(Resolved r, Resolve(path));
  absl::StatusOr<std::unique_ptr<FileLock>> base =
      base_->TryLockFile(path, holder_info);
  // The lock file is modelled as a file written without a sync: new (the
  // attempt created it, even if it then failed) or rewritten by a
  // successful lock, with nothing durable until synced.
  if (r.node == nullptr) {
    if (r.parent != nullptr && base_->FileExists(path).ok()) {
      SetEntry(*r.parent, r.name, std::make_shared<Node>(/*is_dir=*/false));
    }
  } else if (base.ok() && !r.node->is_dir) {
    r.node->synced_size = 0;
  }
  DCP_RETURN_IF_ERROR(base.status());
  auto held = std::make_unique<FaultFileLock>(self, std::string(path),
                                              *std::move(base));
  locks_.insert(held.get());
  return std::unique_ptr<FileLock>(std::move(held));
}

absl::StatusOr<std::unique_ptr<WritableFile>> State::NewWritableFile(
    const std::shared_ptr<State>& self, absl::string_view path,
    const WritableFileOptions& options) {
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(
      Begin(FileOp::kCreate, absl::StrCat("create ", path), path, {}, -1));
  DCP_ASSIGN_OR_RETURN(Resolved r, Resolve(path));
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                       base_->NewWritableFile(path, options));
  NodePtr node = r.node;
  if (node != nullptr && !node->is_dir) {
    node->synced_size = 0;  // Truncated; durable at once (leveldb's model).
  } else {
    node = std::make_shared<Node>(/*is_dir=*/false);
    if (r.parent != nullptr) SetEntry(*r.parent, r.name, node);
  }
  return std::make_unique<FaultWritableFile>(
      self, std::string(path), std::move(node), std::move(file), epoch_);
}

absl::StatusOr<std::unique_ptr<RandomAccessFile>> State::NewRandomAccessFile(
    const std::shared_ptr<State>& self, absl::string_view path,
    const RandomAccessFileOptions& options) {
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(
      Begin(FileOp::kOpen, absl::StrCat("open ", path), path, {}, -1));
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                       base_->NewRandomAccessFile(path, options));
  return std::make_unique<FaultRandomAccessFile>(self, std::string(path),
                                                 std::move(file), epoch_);
}

absl::Status State::CreateDir(absl::string_view dir) {
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(
      Begin(FileOp::kCreateDir, absl::StrCat("createdir ", dir), dir, {}, -1));
  // Find the deepest existing level; the levels below it are new.
  const std::string clean = CleanPath(dir);
  std::string cur_path = clean.front() == '/' ? "/" : ".";
  NodePtr cur = roots_.at(cur_path);
  std::vector<std::string> missing;
  if (clean != "/" && clean != ".") {
    for (absl::string_view part :
         absl::StrSplit(clean, '/', absl::SkipEmpty())) {
      const std::string name(part);
      if (!missing.empty()) {
        missing.push_back(name);
        continue;
      }
      if (!cur->is_dir) break;  // The wrapped file system will refuse.
      DCP_ASSIGN_OR_RETURN(NodePtr next, Child(*cur, cur_path, name));
      if (next == nullptr) {
        missing.push_back(name);
        continue;
      }
      cur = std::move(next);
      cur_path = ChildPath(cur_path, name);
    }
  }
  const absl::Status status = base_->CreateDir(dir);
  // Record the levels that now exist, even if creating a deeper one failed.
  for (const std::string& name : missing) {
    const std::string path = ChildPath(cur_path, name);
    absl::StatusOr<bool> is_dir = base_->IsDirectory(path);
    if (!is_dir.ok() || !*is_dir) break;
    auto node = std::make_shared<Node>(/*is_dir=*/true);
    node->complete = true;  // Created empty, by us.
    SetEntry(*cur, name, node);
    cur = std::move(node);
    cur_path = path;
  }
  return status;
}

absl::Status State::RemoveFile(absl::string_view path) {
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(
      Begin(FileOp::kRemove, absl::StrCat("remove ", path), path, {}, -1));
  DCP_ASSIGN_OR_RETURN(Resolved r, Resolve(path));
  std::string stash;
  if (r.node != nullptr && !r.node->is_dir) {
    DCP_ASSIGN_OR_RETURN(stash, DurableBytes(*r.node, r.path));
  }
  DCP_RETURN_IF_ERROR(base_->RemoveFile(path));
  if (r.node != nullptr && r.parent != nullptr) {
    SetEntry(*r.parent, r.name, nullptr);
    r.node->unlinked = true;
    r.node->stash = std::move(stash);
  }
  return absl::OkStatus();
}

absl::Status State::RemoveDir(absl::string_view dir) {
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(
      Begin(FileOp::kRemoveDir, absl::StrCat("removedir ", dir), dir, {}, -1));
  DCP_ASSIGN_OR_RETURN(Resolved r, Resolve(dir));
  DCP_RETURN_IF_ERROR(base_->RemoveDir(dir));
  if (r.node != nullptr && r.parent != nullptr) {
    SetEntry(*r.parent, r.name, nullptr);
    r.node->children.clear();
    r.node->complete = true;  // It was empty.
  }
  return absl::OkStatus();
}

absl::Status State::Rename(absl::string_view from, absl::string_view to) {
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(Begin(
      FileOp::kRename, absl::StrCat("rename ", from, " ", to), from, to, -1));
  DCP_ASSIGN_OR_RETURN(Resolved rf, Resolve(from));
  DCP_ASSIGN_OR_RETURN(Resolved rt, Resolve(to));
  if (rf.node != nullptr && rf.node == rt.node) {
    return base_->Rename(from, to);  // Same entry: nothing changes.
  }
  if (rf.node != nullptr && rf.node->is_dir) {
    DCP_RETURN_IF_ERROR(DiscoverAll(*rf.node, rf.path));
  }
  std::string stash;
  if (rt.node != nullptr && !rt.node->is_dir) {
    DCP_ASSIGN_OR_RETURN(stash, DurableBytes(*rt.node, rt.path));
  }
  DCP_RETURN_IF_ERROR(base_->Rename(from, to));
  if (rf.node == nullptr) return absl::OkStatus();  // Unknown: not modelled.
  if (rf.parent != nullptr) SetEntry(*rf.parent, rf.name, nullptr);
  if (rt.parent != nullptr) SetEntry(*rt.parent, rt.name, rf.node);
  if (rt.node != nullptr) {
    if (rt.node->is_dir) {
      rt.node->children.clear();
      rt.node->complete = true;  // Only an empty directory can be replaced.
    } else {
      rt.node->unlinked = true;
      rt.node->stash = std::move(stash);
    }
  }
  return absl::OkStatus();
}

absl::Status State::SyncDir(absl::string_view dir) {
  std::lock_guard<std::mutex> lock(mu_);
  DCP_RETURN_IF_ERROR(
      Begin(FileOp::kSyncDir, absl::StrCat("syncdir ", dir), dir, {}, -1));
  DCP_ASSIGN_OR_RETURN(Resolved r, Resolve(dir));
  DCP_RETURN_IF_ERROR(base_->SyncDir(dir));
  if (r.node != nullptr && r.node->is_dir) r.node->durable.clear();
  return absl::OkStatus();
}

}  // namespace fault_injecting_file_system_internal

// -----------------------------------------------------------------------------
// FaultInjectingFileSystem
// -----------------------------------------------------------------------------

FaultInjectingFileSystem::FaultInjectingFileSystem(
    std::shared_ptr<FileSystem> base)
    : FileSystemWrapper(base),
      state_(std::make_shared<fault_injecting_file_system_internal::State>(
          std::move(base))) {}

FaultInjectingFileSystem::~FaultInjectingFileSystem() = default;

void FaultInjectingFileSystem::AddRule(FaultRule rule) {
  state_->AddRule(std::move(rule));
}

void FaultInjectingFileSystem::ClearRules() { state_->ClearRules(); }

void FaultInjectingFileSystem::SetRandomFaults(RandomFaultOptions options) {
  state_->SetRandomFaults(std::move(options));
}

void FaultInjectingFileSystem::SimulateCrash() { state_->SimulateCrash(); }

void FaultInjectingFileSystem::CrashAfterOps(int n) {
  state_->CrashAfterOps(n);
}

bool FaultInjectingFileSystem::crashed() const { return state_->crashed(); }

absl::Status FaultInjectingFileSystem::Restart() { return state_->Restart(); }

std::vector<std::string> FaultInjectingFileSystem::op_log() const {
  return state_->Log(/*mutating_only=*/false);
}

std::vector<std::string> FaultInjectingFileSystem::mutation_log() const {
  return state_->Log(/*mutating_only=*/true);
}

int FaultInjectingFileSystem::op_count() const { return state_->op_count(); }

void FaultInjectingFileSystem::ClearOpLog() { state_->ClearOpLog(); }

absl::StatusOr<std::unique_ptr<WritableFile>>
FaultInjectingFileSystem::NewWritableFile(absl::string_view path,
                                          const WritableFileOptions& options) {
  return state_->NewWritableFile(state_, path, options);
}

absl::StatusOr<std::unique_ptr<RandomAccessFile>>
FaultInjectingFileSystem::NewRandomAccessFile(
    absl::string_view path, const RandomAccessFileOptions& options) {
  return state_->NewRandomAccessFile(state_, path, options);
}

absl::StatusOr<uint64_t> FaultInjectingFileSystem::FileSize(
    absl::string_view path) {
  return state_->FileSize(path);
}

absl::Status FaultInjectingFileSystem::FileExists(absl::string_view path) {
  return state_->FileExists(path);
}

absl::StatusOr<bool> FaultInjectingFileSystem::IsDirectory(
    absl::string_view path) {
  return state_->IsDirectory(path);
}

absl::StatusOr<std::vector<std::string>> FaultInjectingFileSystem::GetChildren(
    absl::string_view dir) {
  return state_->GetChildren(dir);
}

absl::Status FaultInjectingFileSystem::CreateDir(absl::string_view dir) {
  return state_->CreateDir(dir);
}

absl::Status FaultInjectingFileSystem::RemoveFile(absl::string_view path) {
  return state_->RemoveFile(path);
}

absl::Status FaultInjectingFileSystem::RemoveDir(absl::string_view dir) {
  return state_->RemoveDir(dir);
}

absl::Status FaultInjectingFileSystem::Rename(absl::string_view from,
                                              absl::string_view to) {
  return state_->Rename(from, to);
}

absl::Status FaultInjectingFileSystem::SyncDir(absl::string_view dir) {
  return state_->SyncDir(dir);
}

absl::StatusOr<std::unique_ptr<FileLock>> FaultInjectingFileSystem::TryLockFile(
    absl::string_view path, absl::string_view holder_info) {
  return state_->TryLockFile(state_, path, holder_info);
}

}  // namespace dcp::test
