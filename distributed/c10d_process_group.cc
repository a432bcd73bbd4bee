// The only dcp translation unit that includes c10d and Gloo headers.
//
// Store keys, under a group's prefix P ("dcp/world", "dcp/world/f3", ...):
//   P/gloo/...          Gloo's own rendezvous (through a c10d PrefixStore)
//   P/addrs/<r>         rank r's ends of its Gloo connections (groups we
//                       create), to name a lost peer from a Gloo error
//   P/call/<k>/<r>      rank r arrived at call #k; value: the call, e.g.
//                       `Gather(tag="plan", root=0)`
//   P/abort             the first failure any rank reported on P
#include "distributed/c10d_process_group.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/status.h"
#include "core/torch_status.h"
#include "distributed/c10d_process_group_wrap.h"
#include "glog/logging.h"
#include "gloo/common/error.h"
#include "gloo/context.h"
#include "gloo/transport/address.h"
#include "gloo/transport/pair.h"
#include "torch/csrc/distributed/c10d/FileStore.hpp"
#include "torch/csrc/distributed/c10d/PrefixStore.hpp"
#include "torch/csrc/distributed/c10d/ProcessGroupGloo.hpp"
#include "torch/csrc/distributed/c10d/TCPStore.hpp"
#include "torch/csrc/distributed/c10d/Types.hpp"

namespace dcp {
namespace c10d_process_group_internal {
namespace {

// How often a waiting rank checks the store for failures reported by
// other ranks.
constexpr absl::Duration kAbortPollInterval = absl::Milliseconds(100);
// How long a failed call waits for slower live ranks to arrive, to tell
// the lost rank from them when Gloo's message does not name it.
constexpr absl::Duration kLostRankGrace = absl::Seconds(3);
// The root group's key prefix for groups made by Create.
constexpr absl::string_view kRootPrefix = "dcp";
// Header words per rank: call hash, call number, payload size, aux.
constexpr int kHeaderWords = 4;
// Where the first failure on a group is reported (under the group prefix).
constexpr char kAbortKey[] = "abort";
// Scatter chunks end with the payload length, little-endian.
constexpr int64_t kScatterLengthBytes = 8;

using Kind = CollectiveKind;

// FNV-1a: stable across processes (absl::Hash is seeded per process).
uint64_t Fnv1a(absl::string_view bytes) {
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

// For c10d/Gloo timeouts: at least 1 ms, and at most a week (Gloo adds
// timeouts to the current time, so an infinite one would overflow).
std::chrono::milliseconds ToMillis(absl::Duration d) {
  const absl::Duration clamped =
      std::clamp(d, absl::Milliseconds(1), absl::Hours(24 * 7));
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(clamped));
}

std::vector<uint8_t> ToBytes(absl::string_view s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

std::string FromBytes(const std::vector<uint8_t>& bytes) {
  return std::string(bytes.begin(), bytes.end());
}

// "rank 2" / "ranks 1, 3".
std::string Ranks(const std::vector<int>& ranks) {
  return absl::StrCat(ranks.size() == 1 ? "rank " : "ranks ",
                      absl::StrJoin(ranks, ", "));
}

bool LooksLikeTimeout(absl::string_view message) {
  std::string lower = absl::AsciiStrToLower(message);
  return absl::StrContains(lower, "timed out") ||
         absl::StrContains(lower, "timeout");
}

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

// Under TSan, ignores this thread's memory accesses for the scope. Used only
// where we touch objects that a Gloo worker thread made and handed over
// through libtorch's uninstrumented synchronisation (futures, thread
// joins), which TSan cannot see: the exception of a failed operation, and
// the destruction of a Gloo group.
class IgnoreTsanScope {
 public:
#if defined(__SANITIZE_THREAD__)
  IgnoreTsanScope() { __tsan_ignore_thread_begin(); }
  ~IgnoreTsanScope() { __tsan_ignore_thread_end(); }
#else
  IgnoreTsanScope() {}
#endif
  IgnoreTsanScope(const IgnoreTsanScope&) = delete;
  IgnoreTsanScope& operator=(const IgnoreTsanScope&) = delete;
};

// The message of the exception in `eptr` (Gloo's exceptions are plain
// std::runtime_errors).
std::string ExceptionText(std::exception_ptr eptr) {
  try {
    std::rethrow_exception(eptr);
  } catch (...) {
    return std::string(StatusFromCurrentException("").message());
  }
}

const absl::Status& StatusOf(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

// `TorchCall`, with the codes this file needs: an exception that
// `TorchCall` calls Internal (any c10::Error, and Gloo's exceptions)
// becomes DeadlineExceeded if its text says it timed out, else `code`.
template <typename Fn>
auto GuardedCall(absl::string_view context, absl::StatusCode code, Fn&& fn)
    -> decltype(TorchCall(context, std::forward<Fn>(fn))) {
  auto result = TorchCall(context, std::forward<Fn>(fn));
  const absl::Status& status = StatusOf(result);
  if (status.code() == absl::StatusCode::kInternal) {
    result = absl::Status(LooksLikeTimeout(status.message())
                              ? absl::StatusCode::kDeadlineExceeded
                              : code,
                          status.message());
  }
  return result;
}

// A byte tensor over `bytes`'s buffer that keeps `bytes` alive, so Gloo may
// keep using it after an abandoned call returns.
at::Tensor BytesTensor(const std::shared_ptr<std::string>& bytes) {
  return at::from_blob(
      bytes->data(), {static_cast<int64_t>(bytes->size())}, [bytes](void*) {},
      at::TensorOptions().dtype(at::kByte));
}

// Gloo group whose per-operation timeout we can change (contexts_ is
// protected). Only ever used from the thread that owns the dcp group.
class GlooGroup : public c10d::ProcessGroupGloo {
 public:
  using ProcessGroupGloo::ProcessGroupGloo;

  void SetOperationTimeout(std::chrono::milliseconds timeout) {
    for (auto& context : contexts_) context->setTimeout(timeout);
  }

  // This rank's Gloo pair addresses, indexed by peer ("" for itself). Gloo
  // resets a pair's address to its socket's local end once connected, and
  // names the remote end in its errors ("Connection closed by peer
  // [127.0.0.1]:41234"), so the remote's published address identifies it.
  // Read only after data has flowed on every pair.
  std::vector<std::string> PairAddresses() {
    std::vector<std::string> addresses(getSize());
    if (contexts_.empty()) return addresses;
    for (int peer = 0; peer < getSize(); ++peer) {
      if (peer == getRank()) continue;
      auto& pair = contexts_[0]->getPair(peer);
      if (pair != nullptr) addresses[peer] = pair->address().str();
    }
    return addresses;
  }
};

// Set when a call is signalled done from a Gloo worker thread.
class Waiter {
 public:
  void Notify() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
  }
  // True once notified; false if `until` passed first.
  bool WaitUntil(absl::Time until) {
    std::unique_lock<std::mutex> lock(mu_);
    absl::Duration left = std::max(until - absl::Now(), absl::ZeroDuration());
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(left),
                        [this] { return done_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

struct GroupConfig {
  // Gloo device host for forks; empty: Gloo's default device.
  std::string hostname;
  // Gloo timeout of forks; cap on every call.
  absl::Duration timeout;
  // Said when the store fails, e.g. "the TCPStore is hosted by rank 0".
  std::string store_note;
};

std::shared_ptr<gloo::transport::Device> MakeDevice(
    const std::string& hostname) {
  if (hostname.empty()) return c10d::ProcessGroupGloo::createDefaultDevice();
  return c10d::ProcessGroupGloo::createDeviceForHostname(hostname);
}

// Header of one rank in phase 1.
struct Header {
  uint64_t hash = 0;
  int64_t call = 0;
  int64_t size = 0;
  int64_t aux = 0;
};

}  // namespace

// One group: a c10d process group plus the store keys under `prefix`. Does
// the work of `C10dProcessGroup` (which only forwards to it).
class Communicator {
 public:
  Communicator(c10::intrusive_ptr<c10d::ProcessGroup> pg, GlooGroup* own_gloo,
               c10::intrusive_ptr<c10d::Store> store, std::string prefix,
               bool is_fork, GroupConfig config,
               std::vector<std::vector<std::string>> peer_addresses)
      : pg_(std::move(pg)),
        own_gloo_(own_gloo),
        store_(std::move(store)),
        prefix_(std::move(prefix)),
        meta_(c10::make_intrusive<c10d::PrefixStore>(prefix_, store_)),
        is_fork_(is_fork),
        config_(std::move(config)),
        rank_(pg_->getRank()),
        size_(pg_->getSize()),
        peer_addresses_(std::move(peer_addresses)) {}

  ~Communicator() {
    if (!broken_.ok()) {
      VLOG(1) << "destroying failed group " << prefix_ << ": " << broken_;
    }
    // Destroying a Gloo group joins its worker threads (in libtorch, which
    // TSan does not see) and frees what they made, e.g. exceptions; then
    // the operations kept by KeepUntilNextOperation go.
    IgnoreTsanScope ignore;
    own_gloo_ = nullptr;
    pg_.reset();
    kept_.clear();
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return prefix_; }

  // Keeps `work` (and the tensors and future it holds) alive until a later
  // operation of this group completes, or the group is destroyed.
  //
  // Why: libtorch's reference counts are not instrumented, so when Gloo's
  // worker thread drops the last reference to an operation and frees it,
  // TSan sees a free that races with our earlier accesses to its tensors
  // (and when we drop the last one, our free races with the worker's
  // finishing touches). Gloo runs our operations on one worker thread, in
  // order (GroupConfig: threads = 1); once a later operation's completion
  // callback has reached us (through Waiter, which TSan sees), the worker
  // is done with every earlier operation and ours are the last references.
  // Dropping them then frees everything on this thread, after all the
  // worker did: no report, and no suppression that would hide real races
  // on tensor memory. Costs the memory of one operation per group.
  void KeepUntilNextOperation(c10::intrusive_ptr<c10d::Work> work) {
    kept_.push_back(std::move(work));
  }

  absl::Status Barrier(absl::string_view tag, absl::Time deadline);
  absl::StatusOr<std::string> Broadcast(absl::string_view tag, int root,
                                        std::string payload,
                                        absl::Time deadline);
  absl::StatusOr<std::vector<std::string>> Gather(absl::string_view tag,
                                                  int root, std::string payload,
                                                  absl::Time deadline);
  absl::StatusOr<std::string> Scatter(absl::string_view tag, int root,
                                      std::vector<std::string> payloads,
                                      absl::Time deadline);
  absl::StatusOr<std::vector<std::string>> AllGather(absl::string_view tag,
                                                     std::string payload,
                                                     absl::Time deadline);
  absl::StatusOr<std::unique_ptr<Communicator>> Fork(absl::string_view tag,
                                                     absl::Time deadline);

  // Creates a Gloo group of `size` ranks under `prefix` of `store`.
  // Collective.
  static absl::StatusOr<std::unique_ptr<Communicator>> CreateGloo(
      c10::intrusive_ptr<c10d::Store> store, std::string prefix, bool is_fork,
      int rank, int size, GroupConfig config, absl::Time deadline);

 private:
  struct Call {
    Kind kind;
    int root;
    int64_t number;
    std::string desc;   // `Gather(tag="plan", root=0)`
    std::string label;  // desc + " call #3" [+ " on group dcp/world/f1"]
    absl::Time deadline;
  };

  static std::string CallKey(int64_t number, int rank) {
    return absl::StrCat("call/", number, "/", rank);
  }

  // Numbers the call, checks earlier failures and records the arrival.
  absl::StatusOr<Call> Start(Kind kind, absl::string_view tag, int root,
                             absl::Time deadline);
  // Records `status` as the group's failure; unless it came from another
  // rank's report, reports it to the other ranks through the store.
  absl::Status Fail(const Call& call, absl::Status status, bool report = true);

  // Phase 1: allgather of headers, then agreement check.
  absl::StatusOr<std::vector<Header>> ExchangeHeaders(const Call& call,
                                                      int64_t size,
                                                      int64_t aux);
  // Waits for `work` until the call's deadline, polling failure reports.
  absl::Status Await(const Call& call,
                     const c10::intrusive_ptr<c10d::Work>& work);
  // Runs `issue` (which starts a Gloo operation), then awaits it.
  template <typename Issue>
  absl::Status Run(const Call& call, Issue&& issue);

  absl::Status TimedOut(const Call& call, absl::string_view gloo_text);
  absl::Status GlooFailed(const Call& call, const std::string& text);
  std::optional<std::string> ReadReport();
  // Ranks whose arrival at `call` is not recorded; nullopt if unknown.
  std::optional<std::vector<int>> MissingRanks(const Call& call);
  std::string RemoteCallDesc(int rank, int64_t number);
  // The peer whose Gloo address appears in `text`, if any.
  std::optional<int> RankOfAddressIn(const std::string& text) const;

  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
  GlooGroup* own_gloo_;  // == pg_ when we created it, else nullptr
  c10::intrusive_ptr<c10d::Store> store_;
  const std::string prefix_;
  // store_ under prefix_ + "/". All our keys go through it (which also keeps
  // TSan from seeing the TCPStore's locking half-instrumented).
  const c10::intrusive_ptr<c10d::Store> meta_;
  const bool is_fork_;
  const GroupConfig config_;
  const int rank_;
  const int size_;
  // peer_addresses_[p][q]: rank p's end of its connection with rank q
  // (empty when unknown, e.g. for wrapped groups).
  const std::vector<std::vector<std::string>> peer_addresses_;

  // See KeepUntilNextOperation.
  std::vector<c10::intrusive_ptr<c10d::Work>> kept_;
  // Used by the one thread calling collectives (ProcessGroup contract).
  int64_t next_call_ = 0;
  absl::Status broken_;
  bool store_polling_failed_ = false;
};

absl::StatusOr<Communicator::Call> Communicator::Start(Kind kind,
                                                       absl::string_view tag,
                                                       int root,
                                                       absl::Time deadline) {
  Call call;
  call.kind = kind;
  call.root = root;
  call.number = next_call_++;
  call.desc = absl::StrFormat("%s(tag=\"%s\"", CollectiveKindName(kind),
                              absl::CEscape(tag));
  if (CollectiveHasRoot(kind)) {
    absl::StrAppend(&call.desc, ", root=", root);
  }
  absl::StrAppend(&call.desc, ")");
  call.label = absl::StrCat(call.desc, " call #", call.number);
  if (is_fork_) absl::StrAppend(&call.label, " on group ", prefix_);
  call.deadline = std::min(deadline, absl::Now() + config_.timeout);

  if (!broken_.ok()) {
    return absl::AbortedError(absl::StrCat(
        call.label,
        ": the process group failed earlier: ", broken_.ToString()));
  }
  absl::Status recorded = GuardedCall(
      absl::StrCat(call.label, ": cannot record the arrival in the store",
                   config_.store_note.empty()
                       ? ""
                       : absl::StrCat(" (", config_.store_note, ")")),
      absl::StatusCode::kAborted,
      [&] { meta_->set(CallKey(call.number, rank_), ToBytes(call.desc)); });
  if (!recorded.ok()) {
    // The store is unreachable (for a TCPStore: rank 0 is gone).
    return Fail(call, absl::AbortedError(recorded.message()),
                /*report=*/false);
  }
  return call;
}

absl::Status Communicator::Fail(const Call& call, absl::Status status,
                                bool report) {
  if (broken_.ok()) broken_ = status;
  if (report) {
    std::string text = absl::StrCat("rank ", rank_, " failed at ", call.label,
                                    ": ", status.ToString());
    // First report wins; a lost store only loses the report.
    absl::Status posted =
        GuardedCall("report", absl::StatusCode::kUnavailable, [&] {
          if (!meta_->check({kAbortKey})) {
            meta_->set(kAbortKey, ToBytes(text));
          }
        });
    if (!posted.ok()) VLOG(1) << "cannot report failure: " << posted;
  }
  return status;
}

std::optional<std::string> Communicator::ReadReport() {
  if (store_polling_failed_) return std::nullopt;
  absl::StatusOr<std::optional<std::string>> report =
      GuardedCall("read report", absl::StatusCode::kUnavailable,
                  [&]() -> std::optional<std::string> {
                    if (!meta_->check({kAbortKey})) return std::nullopt;
                    return FromBytes(meta_->get(kAbortKey));
                  });
  if (!report.ok()) {
    store_polling_failed_ = true;
    return std::nullopt;
  }
  return *report;
}

std::optional<std::vector<int>> Communicator::MissingRanks(const Call& call) {
  absl::StatusOr<std::vector<int>> missing =
      GuardedCall("check arrivals", absl::StatusCode::kUnavailable, [&] {
        std::vector<int> ranks;
        for (int r = 0; r < size_; ++r) {
          if (!meta_->check({CallKey(call.number, r)})) ranks.push_back(r);
        }
        return ranks;
      });
  if (!missing.ok()) return std::nullopt;
  return *missing;
}

std::string Communicator::RemoteCallDesc(int rank, int64_t number) {
  absl::StatusOr<std::string> desc =
      GuardedCall("read call", absl::StatusCode::kUnavailable, [&] {
        std::string key = CallKey(number, rank);
        if (!meta_->check({key})) return std::string("an unknown call");
        return FromBytes(meta_->get(key));
      });
  return desc.ok() ? *desc : std::string("an unknown call");
}

std::optional<int> Communicator::RankOfAddressIn(
    const std::string& text) const {
  for (int peer = 0; peer < static_cast<int>(peer_addresses_.size()); ++peer) {
    if (peer == rank_) continue;
    const std::vector<std::string>& addresses = peer_addresses_[peer];
    if (rank_ >= static_cast<int>(addresses.size())) continue;
    absl::string_view address = addresses[rank_];
    address = address.substr(0, address.find('$'));  // Drop a "$seq".
    if (address.empty()) continue;
    for (size_t pos = text.find(address.data(), 0, address.size());
         pos != std::string::npos;
         pos = text.find(address.data(), pos + 1, address.size())) {
      const size_t end = pos + address.size();
      if (end == text.size() || !absl::ascii_isdigit(text[end])) return peer;
    }
  }
  return std::nullopt;
}

absl::Status Communicator::TimedOut(const Call& call,
                                    absl::string_view gloo_text) {
  std::string why;
  std::optional<std::vector<int>> missing = MissingRanks(call);
  if (!missing.has_value()) {
    why = "could not tell which ranks arrived (store unreachable)";
  } else if (!missing->empty()) {
    why = absl::StrCat(Ranks(*missing), " did not arrive");
  } else {
    why = "every rank arrived, but the collective did not finish";
  }
  std::string message =
      absl::StrCat(call.label, " timed out at its deadline: ", why);
  if (!gloo_text.empty()) absl::StrAppend(&message, " (gloo: ", gloo_text, ")");
  return Fail(call, absl::DeadlineExceededError(message));
}

absl::Status Communicator::GlooFailed(const Call& call,
                                      const std::string& text) {
  if (LooksLikeTimeout(text) &&
      absl::Now() >= call.deadline - absl::Seconds(1)) {
    return TimedOut(call, text);
  }
  if (std::optional<std::string> report = ReadReport(); report.has_value()) {
    return Fail(
        call,
        absl::AbortedError(absl::StrCat(call.label, " aborted: ", *report,
                                        " (here, gloo said: ", text, ")")),
        /*report=*/false);
  }
  std::string message;
  if (std::optional<int> lost = RankOfAddressIn(text); lost.has_value()) {
    message = absl::StrCat(call.label, " aborted: lost rank ", *lost,
                           " (its connection failed; gloo: ", text, ")");
  } else if (size_ == 2) {
    message = absl::StrCat(call.label, " aborted: lost rank ", 1 - rank_,
                           " (its connection failed; gloo: ", text, ")");
  } else {
    // Gloo named an address we cannot map (it prints the accepting side's
    // view of a connection). The lost rank is one that has not arrived at
    // this call; live ones that are merely slower (still writing, say)
    // arrive soon, so wait briefly for them to tell the ranks apart.
    std::optional<std::vector<int>> missing = MissingRanks(call);
    const absl::Time give_up =
        std::min(call.deadline, absl::Now() + kLostRankGrace);
    while (missing.has_value() && missing->size() > 1 &&
           absl::Now() < give_up) {
      if (std::optional<std::string> report = ReadReport();
          report.has_value()) {
        return Fail(call,
                    absl::AbortedError(absl::StrCat(
                        call.label, " aborted: ", *report,
                        " (here, gloo said: ", text, ")")),
                    /*report=*/false);
      }
      absl::SleepFor(absl::Milliseconds(20));
      missing = MissingRanks(call);
    }
    if (missing.has_value() && missing->size() == 1) {
      message = absl::StrCat(call.label, " aborted: lost rank ",
                             missing->front(),
                             " (it never arrived at this call; gloo: ", text,
                             ")");
    } else {
      message = absl::StrCat(
          call.label, " aborted: a peer rank was lost or failed (gloo: ",
          text, ")");
      if (missing.has_value() && !missing->empty()) {
        absl::StrAppend(&message, "; ", Ranks(*missing),
                        " had not arrived at this call");
      }
    }
  }
  return Fail(call, absl::AbortedError(message));
}

absl::Status Communicator::Await(const Call& call,
                                 const c10::intrusive_ptr<c10d::Work>& work) {
  absl::StatusOr<c10::intrusive_ptr<c10::ivalue::Future>> future =
      GuardedCall(call.label, absl::StatusCode::kUnimplemented,
                  [&] { return work->getFuture(); });
  if (!future.ok()) return Fail(call, future.status());
  auto waiter = std::make_shared<Waiter>();
  (*future)->addCallback(
      [waiter](c10::ivalue::Future& /*future*/) { waiter->Notify(); });
  while (true) {
    absl::Time until =
        std::min(call.deadline, absl::Now() + kAbortPollInterval);
    if (waiter->WaitUntil(until)) break;
    if (absl::Now() >= call.deadline) return TimedOut(call, "");
    if (std::optional<std::string> report = ReadReport(); report.has_value()) {
      return Fail(
          call,
          absl::AbortedError(absl::StrCat(call.label, " aborted: ", *report)),
          /*report=*/false);
    }
  }
  if ((*future)->hasError()) {
    std::string text;
    {
      IgnoreTsanScope ignore;
      text = ExceptionText((*future)->exception_ptr());
      future->reset();
    }
    return GlooFailed(call, text);
  }
  return absl::OkStatus();
}

template <typename Issue>
absl::Status Communicator::Run(const Call& call, Issue&& issue) {
  if (own_gloo_ != nullptr) {
    // Gloo's own timeout ends the operation at the same deadline, so an
    // abandoned operation does not outlive it.
    own_gloo_->SetOperationTimeout(
        ToMillis(call.deadline - absl::Now() + absl::Milliseconds(50)));
  }
  absl::StatusOr<c10::intrusive_ptr<c10d::Work>> work = GuardedCall(
      call.label, absl::StatusCode::kInternal, std::forward<Issue>(issue));
  if (!work.ok()) return Fail(call, work.status());
  absl::Status status = Await(call, *work);
  // On success the worker is done with every earlier operation (see
  // KeepUntilNextOperation). A failed one may still run: it is kept until
  // the group is destroyed, which joins the worker.
  if (status.ok()) kept_.clear();
  KeepUntilNextOperation(*std::move(work));
  return status;
}

absl::StatusOr<std::vector<Header>> Communicator::ExchangeHeaders(
    const Call& call, int64_t size, int64_t aux) {
  const uint64_t hash = Fnv1a(call.desc);
  std::vector<at::Tensor> input = {at::empty({kHeaderWords}, at::kLong)};
  int64_t* mine = input[0].data_ptr<int64_t>();
  mine[0] = static_cast<int64_t>(hash);
  mine[1] = call.number;
  mine[2] = size;
  mine[3] = aux;
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < size_; ++r) {
    output[0].push_back(at::empty({kHeaderWords}, at::kLong));
  }
  DCP_RETURN_IF_ERROR(Run(call, [&] { return pg_->allgather(output, input); }));

  std::vector<Header> headers(size_);
  for (int r = 0; r < size_; ++r) {
    const int64_t* words = output[0][r].data_ptr<int64_t>();
    headers[r] =
        Header{static_cast<uint64_t>(words[0]), words[1], words[2], words[3]};
  }
  // Every rank sees the same headers, so every rank reaches the same
  // verdict and the same message (apart from its own label).
  for (int r = 1; r < size_; ++r) {
    if (headers[r].hash == headers[0].hash &&
        headers[r].call == headers[0].call) {
      continue;
    }
    std::string desc0 =
        rank_ == 0 ? call.desc : RemoteCallDesc(0, headers[0].call);
    std::string desc_r =
        rank_ == r ? call.desc : RemoteCallDesc(r, headers[r].call);
    return Fail(
        call,
        absl::FailedPreconditionError(absl::StrFormat(
            "%s: ranks disagree on the collective: rank 0 calls %s "
            "(call #%d), rank %d calls %s (call #%d)",
            call.label, desc0, headers[0].call, r, desc_r, headers[r].call)),
        /*report=*/false);
  }
  for (int r = 0; r < size_; ++r) {
    if (headers[r].size < 0 || headers[r].aux < 0) {
      return Fail(call,
                  absl::InternalError(absl::StrFormat(
                      "%s: rank %d sent a negative size", call.label, r)));
    }
  }
  return headers;
}

absl::Status Communicator::Barrier(absl::string_view tag, absl::Time deadline) {
  DCP_ASSIGN_OR_RETURN(Call call, Start(Kind::kBarrier, tag, -1, deadline));
  return ExchangeHeaders(call, 0, 0).status();
}

absl::StatusOr<std::string> Communicator::Broadcast(absl::string_view tag,
                                                    int root,
                                                    std::string payload,
                                                    absl::Time deadline) {
  DCP_ASSIGN_OR_RETURN(Call call, Start(Kind::kBroadcast, tag, root, deadline));
  if (root < 0 || root >= size_) {
    return Fail(call, absl::InvalidArgumentError(absl::StrFormat(
                          "%s: root %d is out of range for %d ranks",
                          call.label, root, size_)));
  }
  DCP_ASSIGN_OR_RETURN(
      std::vector<Header> headers,
      ExchangeHeaders(call, static_cast<int64_t>(payload.size()), 0));
  const int64_t root_size = headers[root].size;
  if (root_size == 0) return std::string();
  auto bytes = std::make_shared<std::string>(
      rank_ == root ? std::move(payload) : std::string(root_size, '\0'));
  std::vector<at::Tensor> tensors = {BytesTensor(bytes)};
  c10d::BroadcastOptions options;
  options.rootRank = root;
  DCP_RETURN_IF_ERROR(
      Run(call, [&] { return pg_->broadcast(tensors, options); }));
  return std::move(*bytes);
}

absl::StatusOr<std::vector<std::string>> Communicator::Gather(
    absl::string_view tag, int root, std::string payload, absl::Time deadline) {
  DCP_ASSIGN_OR_RETURN(Call call, Start(Kind::kGather, tag, root, deadline));
  if (root < 0 || root >= size_) {
    return Fail(call, absl::InvalidArgumentError(absl::StrFormat(
                          "%s: root %d is out of range for %d ranks",
                          call.label, root, size_)));
  }
  DCP_ASSIGN_OR_RETURN(
      std::vector<Header> headers,
      ExchangeHeaders(call, static_cast<int64_t>(payload.size()), 0));
  int64_t max_size = 0;
  for (const Header& h : headers) max_size = std::max(max_size, h.size);
  if (rank_ != root && max_size == 0) return std::vector<std::string>();
  if (max_size == 0) return std::vector<std::string>(size_);

  payload.resize(max_size);
  std::vector<at::Tensor> input = {
      BytesTensor(std::make_shared<std::string>(std::move(payload)))};
  std::vector<std::shared_ptr<std::string>> received;
  std::vector<std::vector<at::Tensor>> output;
  if (rank_ == root) {
    output.emplace_back();
    for (int r = 0; r < size_; ++r) {
      received.push_back(
          std::make_shared<std::string>(static_cast<size_t>(max_size), '\0'));
      output[0].push_back(BytesTensor(received.back()));
    }
  }
  c10d::GatherOptions options;
  options.rootRank = root;
  DCP_RETURN_IF_ERROR(
      Run(call, [&] { return pg_->gather(output, input, options); }));
  std::vector<std::string> result;
  if (rank_ != root) return result;
  result.reserve(size_);
  for (int r = 0; r < size_; ++r) {
    std::string bytes = std::move(*received[r]);
    bytes.resize(headers[r].size);
    result.push_back(std::move(bytes));
  }
  return result;
}

absl::StatusOr<std::string> Communicator::Scatter(
    absl::string_view tag, int root, std::vector<std::string> payloads,
    absl::Time deadline) {
  DCP_ASSIGN_OR_RETURN(Call call, Start(Kind::kScatter, tag, root, deadline));
  if (root < 0 || root >= size_) {
    return Fail(call, absl::InvalidArgumentError(absl::StrFormat(
                          "%s: root %d is out of range for %d ranks",
                          call.label, root, size_)));
  }
  int64_t max_size = 0;
  if (rank_ == root) {
    if (static_cast<int>(payloads.size()) != size_) {
      return Fail(call, absl::InvalidArgumentError(absl::StrFormat(
                            "%s: the root passed %d payloads for %d ranks",
                            call.label, payloads.size(), size_)));
    }
    for (const std::string& p : payloads) {
      max_size = std::max<int64_t>(max_size, p.size());
    }
  }
  DCP_ASSIGN_OR_RETURN(std::vector<Header> headers,
                       ExchangeHeaders(call, 0, max_size));
  max_size = headers[root].aux;
  if (max_size == 0) return std::string();

  const int64_t chunk = max_size + kScatterLengthBytes;
  std::vector<std::vector<at::Tensor>> input;
  if (rank_ == root) {
    input.emplace_back();
    for (std::string& p : payloads) {
      uint64_t length = p.size();
      p.resize(chunk);
      for (int i = 0; i < kScatterLengthBytes; ++i) {
        p[max_size + i] = static_cast<char>((length >> (8 * i)) & 0xff);
      }
      input[0].push_back(
          BytesTensor(std::make_shared<std::string>(std::move(p))));
    }
  }
  auto received =
      std::make_shared<std::string>(static_cast<size_t>(chunk), '\0');
  std::vector<at::Tensor> output = {BytesTensor(received)};
  c10d::ScatterOptions options;
  options.rootRank = root;
  DCP_RETURN_IF_ERROR(
      Run(call, [&] { return pg_->scatter(output, input, options); }));
  uint64_t length = 0;
  for (int i = 0; i < kScatterLengthBytes; ++i) {
    length |= static_cast<uint64_t>(
                  static_cast<unsigned char>((*received)[max_size + i]))
              << (8 * i);
  }
  if (length > static_cast<uint64_t>(max_size)) {
    return Fail(call,
                absl::InternalError(absl::StrFormat(
                    "%s: received a chunk claiming %d bytes of at most %d",
                    call.label, length, max_size)));
  }
  std::string result = std::move(*received);
  result.resize(length);
  return result;
}

absl::StatusOr<std::vector<std::string>> Communicator::AllGather(
    absl::string_view tag, std::string payload, absl::Time deadline) {
  DCP_ASSIGN_OR_RETURN(Call call, Start(Kind::kAllGather, tag, -1, deadline));
  DCP_ASSIGN_OR_RETURN(
      std::vector<Header> headers,
      ExchangeHeaders(call, static_cast<int64_t>(payload.size()), 0));
  int64_t max_size = 0;
  for (const Header& h : headers) max_size = std::max(max_size, h.size);
  if (max_size == 0) return std::vector<std::string>(size_);

  payload.resize(max_size);
  std::vector<at::Tensor> input = {
      BytesTensor(std::make_shared<std::string>(std::move(payload)))};
  std::vector<std::shared_ptr<std::string>> received;
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < size_; ++r) {
    received.push_back(
        std::make_shared<std::string>(static_cast<size_t>(max_size), '\0'));
    output[0].push_back(BytesTensor(received.back()));
  }
  DCP_RETURN_IF_ERROR(Run(call, [&] { return pg_->allgather(output, input); }));
  std::vector<std::string> result;
  result.reserve(size_);
  for (int r = 0; r < size_; ++r) {
    std::string bytes = std::move(*received[r]);
    bytes.resize(headers[r].size);
    result.push_back(std::move(bytes));
  }
  return result;
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Fork(
    absl::string_view tag, absl::Time deadline) {
  DCP_ASSIGN_OR_RETURN(Call call, Start(Kind::kFork, tag, -1, deadline));
  DCP_RETURN_IF_ERROR(ExchangeHeaders(call, 0, 0).status());
  absl::StatusOr<std::unique_ptr<Communicator>> child =
      CreateGloo(store_, absl::StrCat(prefix_, "/f", call.number),
                 /*is_fork=*/true, rank_, size_, config_, call.deadline);
  if (!child.ok()) {
    return Fail(call, Annotate(child.status(), call.label));
  }
  return child;
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::CreateGloo(
    c10::intrusive_ptr<c10d::Store> store, std::string prefix, bool is_fork,
    int rank, int size, GroupConfig config, absl::Time deadline) {
  const std::string context = absl::StrFormat(
      "creating Gloo group %s (rank %d of %d, device %s)", prefix, rank, size,
      config.hostname.empty() ? "default" : config.hostname);
  DCP_ASSIGN_OR_RETURN(
      std::shared_ptr<gloo::transport::Device> device,
      GuardedCall(context, absl::StatusCode::kUnavailable,
                  [&] { return MakeDevice(config.hostname); }));
  // Gloo's rendezvous waits for the other ranks with the group's timeout,
  // so construct with the time left, then switch to the group timeout.
  const absl::Duration left = std::min(deadline - absl::Now(), config.timeout);
  if (left <= absl::ZeroDuration()) {
    return absl::DeadlineExceededError(
        absl::StrCat(context, ": the deadline passed"));
  }
  DCP_ASSIGN_OR_RETURN(
      c10::intrusive_ptr<GlooGroup> gloo,
      GuardedCall(context, absl::StatusCode::kUnavailable, [&] {
        auto options = c10d::ProcessGroupGloo::Options::create(ToMillis(left));
        options->devices.push_back(device);
        options->threads = 1;
        auto gloo_store = c10::make_intrusive<c10d::PrefixStore>(
            absl::StrCat(prefix, "/gloo"), store);
        return c10::make_intrusive<GlooGroup>(gloo_store, rank, size, options);
      }));
  gloo->SetOperationTimeout(ToMillis(config.timeout));

  auto meta = c10::make_intrusive<c10d::PrefixStore>(prefix, store);
  // Send a little on every pair (alltoall), so every connection is
  // complete on both ends, then exchange pair addresses.
  std::vector<std::vector<std::string>> peer_addresses(size);
  c10::intrusive_ptr<c10d::Work> exchange;
  DCP_RETURN_IF_ERROR(GuardedCall(
      absl::StrCat(context, ": exchanging pair addresses"),
      absl::StatusCode::kUnavailable, [&] {
        at::Tensor in = at::zeros({size}, at::kLong);
        at::Tensor out = at::empty({size}, at::kLong);
        std::vector<int64_t> counts;
        exchange = gloo->alltoall_base(out, in, counts, counts);
        exchange->wait(ToMillis(deadline - absl::Now()));
        peer_addresses[rank] = gloo->PairAddresses();
        meta->set(absl::StrCat("addrs/", rank),
                  ToBytes(absl::StrJoin(peer_addresses[rank], "\n")));
        for (int r = 0; r < size; ++r) {
          if (r == rank) continue;
          const std::string key = absl::StrCat("addrs/", r);
          meta->wait({key}, ToMillis(deadline - absl::Now()));
          peer_addresses[r] = absl::StrSplit(FromBytes(meta->get(key)), '\n');
        }
      }));
  VLOG(1) << "group " << prefix << " rank " << rank
          << " pair addresses: " << absl::StrJoin(peer_addresses[rank], " ");
  GlooGroup* own = gloo.get();
  auto comm = std::make_unique<Communicator>(
      std::move(gloo), own, std::move(store), std::move(prefix), is_fork,
      std::move(config), std::move(peer_addresses));
  comm->KeepUntilNextOperation(std::move(exchange));
  return comm;
}

struct Access {
  static std::unique_ptr<C10dProcessGroup> Make(
      std::unique_ptr<Communicator> comm) {
    return std::unique_ptr<C10dProcessGroup>(
        new C10dProcessGroup(std::move(comm)));
  }
};

namespace {

absl::Status ValidateCommon(absl::Duration timeout) {
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the timeout must be positive, got ", absl::FormatDuration(timeout)));
  }
  return absl::OkStatus();
}

absl::Status Validate(const C10dOptions& options) {
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "world_size must be at least 1, got ", options.world_size));
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("rank %d is out of range for world_size %d",
                        options.rank, options.world_size));
  }
  DCP_RETURN_IF_ERROR(ValidateCommon(options.timeout));
  if (options.file_store_path.empty()) {
    if (options.master_addr.empty()) {
      return absl::InvalidArgumentError(
          "master_addr is empty and no file_store_path is set");
    }
    const int min_port = options.world_size == 1 ? 0 : 1;
    if (options.master_port < min_port || options.master_port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrFormat("master_port %d is not a port number in [%d, 65535]",
                          options.master_port, min_port));
    }
  }
  return absl::OkStatus();
}

bool IsLoopback(absl::string_view host) {
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

absl::StatusOr<int> ParseIntVar(absl::string_view name,
                                const std::optional<std::string>& value) {
  int parsed = 0;
  if (!value.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "environment variable ", name,
        " is not set (expected torchrun-style RANK, WORLD_SIZE, MASTER_ADDR, "
        "MASTER_PORT, or DCP_FILE_STORE instead of the last two)"));
  }
  if (!absl::SimpleAtoi(*value, &parsed)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("environment variable %s=\"%s\" is not an integer",
                        name, absl::CEscape(*value)));
  }
  return parsed;
}

}  // namespace
}  // namespace c10d_process_group_internal

using c10d_process_group_internal::Access;
using c10d_process_group_internal::Communicator;
using c10d_process_group_internal::GroupConfig;

absl::StatusOr<C10dOptions> C10dOptionsFromEnv(
    absl::FunctionRef<std::optional<std::string>(absl::string_view name)>
        lookup) {
  using c10d_process_group_internal::IsLoopback;
  using c10d_process_group_internal::ParseIntVar;
  C10dOptions options;
  DCP_ASSIGN_OR_RETURN(options.rank, ParseIntVar("RANK", lookup("RANK")));
  DCP_ASSIGN_OR_RETURN(options.world_size,
                       ParseIntVar("WORLD_SIZE", lookup("WORLD_SIZE")));
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("environment variable WORLD_SIZE=%d must be at least 1",
                        options.world_size));
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "environment variable RANK=%d is out of range for WORLD_SIZE=%d",
        options.rank, options.world_size));
  }
  std::optional<std::string> file_store = lookup("DCP_FILE_STORE");
  std::optional<std::string> master_addr = lookup("MASTER_ADDR");
  if (file_store.has_value() && !file_store->empty()) {
    options.file_store_path = *file_store;
  } else {
    if (!master_addr.has_value() || master_addr->empty()) {
      return absl::InvalidArgumentError(
          "environment variable MASTER_ADDR is not set (and DCP_FILE_STORE "
          "is not set either)");
    }
    options.master_addr = *master_addr;
    DCP_ASSIGN_OR_RETURN(options.master_port,
                         ParseIntVar("MASTER_PORT", lookup("MASTER_PORT")));
    if (options.master_port < 1 || options.master_port > 65535) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "environment variable MASTER_PORT=%d is not a port number in "
          "[1, 65535]",
          options.master_port));
    }
  }
  if (std::optional<std::string> host = lookup("DCP_GLOO_HOSTNAME");
      host.has_value()) {
    options.interface_hostname = *host;
  } else if (master_addr.has_value() && !master_addr->empty() &&
             options.file_store_path.empty() && !IsLoopback(*master_addr)) {
    options.interface_hostname.clear();
  }
  if (std::optional<std::string> seconds = lookup("DCP_C10D_TIMEOUT_SECONDS");
      seconds.has_value()) {
    DCP_ASSIGN_OR_RETURN(int parsed,
                         ParseIntVar("DCP_C10D_TIMEOUT_SECONDS", seconds));
    if (parsed <= 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "environment variable DCP_C10D_TIMEOUT_SECONDS=%d must be positive",
          parsed));
    }
    options.timeout = absl::Seconds(parsed);
  }
  return options;
}

absl::StatusOr<C10dOptions> C10dOptionsFromEnv() {
  return C10dOptionsFromEnv(
      [](absl::string_view name) -> std::optional<std::string> {
        const char* value = std::getenv(std::string(name).c_str());
        if (value == nullptr) return std::nullopt;
        return std::string(value);
      });
}

C10dProcessGroup::C10dProcessGroup(std::unique_ptr<Communicator> comm)
    : comm_(std::move(comm)) {}

namespace {

// Gloo writes to sockets without MSG_NOSIGNAL, so a peer that exits while we
// send would kill this process with SIGPIPE instead of failing the call
// (Python, where PyTorch usually runs, ignores SIGPIPE at startup). Ignore
// it, but only if nobody installed a handler of their own.
void IgnoreSigpipeUnlessHandled() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current;
    if (sigaction(SIGPIPE, nullptr, &current) == 0 &&
        current.sa_handler == SIG_DFL) {
      signal(SIGPIPE, SIG_IGN);
    }
  });
}

}  // namespace

C10dProcessGroup::~C10dProcessGroup() = default;

absl::StatusOr<std::unique_ptr<C10dProcessGroup>> C10dProcessGroup::Create(
    const C10dOptions& options) {
  IgnoreSigpipeUnlessHandled();
  DCP_RETURN_IF_ERROR(Annotate(c10d_process_group_internal::Validate(options),
                               "C10dProcessGroup::Create"));
  const absl::Time deadline = absl::Now() + options.timeout;
  const std::string context =
      options.file_store_path.empty()
          ? absl::StrFormat(
                "C10dProcessGroup::Create(rank %d of %d, TCPStore %s:%d%s)",
                options.rank, options.world_size, options.master_addr,
                options.master_port, options.rank == 0 ? ", server" : "")
          : absl::StrFormat(
                "C10dProcessGroup::Create(rank %d of %d, FileStore \"%s\")",
                options.rank, options.world_size,
                absl::CEscape(options.file_store_path));
  using c10d_process_group_internal::GuardedCall;
  using c10d_process_group_internal::ToMillis;
  DCP_ASSIGN_OR_RETURN(
      c10::intrusive_ptr<c10d::Store> store,
      GuardedCall(context, absl::StatusCode::kUnavailable,
                  [&]() -> c10::intrusive_ptr<c10d::Store> {
                    if (!options.file_store_path.empty()) {
                      auto file_store = c10::make_intrusive<c10d::FileStore>(
                          options.file_store_path, options.world_size);
                      file_store->setTimeout(ToMillis(options.timeout));
                      return file_store;
                    }
                    c10d::TCPStoreOptions tcp;
                    tcp.port = static_cast<uint16_t>(options.master_port);
                    tcp.isServer = options.rank == 0;
                    tcp.numWorkers = options.world_size;
                    tcp.waitWorkers = false;
                    tcp.timeout = ToMillis(options.timeout);
                    return c10::make_intrusive<c10d::TCPStore>(
                        options.master_addr, tcp);
                  }));
  GroupConfig config{options.interface_hostname, options.timeout, ""};
  if (options.file_store_path.empty() && options.world_size > 1) {
    config.store_note = "the TCPStore is hosted by rank 0; is it lost?";
  }
  absl::StatusOr<std::unique_ptr<Communicator>> comm = Communicator::CreateGloo(
      std::move(store),
      std::string(c10d_process_group_internal::kRootPrefix) + "/world",
      /*is_fork=*/false, options.rank, options.world_size, std::move(config),
      deadline);
  if (!comm.ok()) return Annotate(comm.status(), context);
  return Access::Make(*std::move(comm));
}

absl::StatusOr<std::unique_ptr<C10dProcessGroup>>
C10dProcessGroup::CreateFromEnv() {
  DCP_ASSIGN_OR_RETURN(C10dOptions options, C10dOptionsFromEnv());
  return Create(options);
}

int C10dProcessGroup::rank() const { return comm_->rank(); }
int C10dProcessGroup::size() const { return comm_->size(); }
const std::string& C10dProcessGroup::name() const { return comm_->name(); }

absl::Status C10dProcessGroup::Barrier(absl::string_view tag,
                                       absl::Time deadline) {
  return comm_->Barrier(tag, deadline);
}

absl::StatusOr<std::string> C10dProcessGroup::Broadcast(absl::string_view tag,
                                                        int root,
                                                        std::string payload,
                                                        absl::Time deadline) {
  return comm_->Broadcast(tag, root, std::move(payload), deadline);
}

absl::StatusOr<std::vector<std::string>> C10dProcessGroup::Gather(
    absl::string_view tag, int root, std::string payload, absl::Time deadline) {
  return comm_->Gather(tag, root, std::move(payload), deadline);
}

absl::StatusOr<std::string> C10dProcessGroup::Scatter(
    absl::string_view tag, int root, std::vector<std::string> payloads,
    absl::Time deadline) {
  return comm_->Scatter(tag, root, std::move(payloads), deadline);
}

absl::StatusOr<std::vector<std::string>> C10dProcessGroup::AllGather(
    absl::string_view tag, std::string payload, absl::Time deadline) {
  return comm_->AllGather(tag, std::move(payload), deadline);
}

absl::StatusOr<std::shared_ptr<ProcessGroup>> C10dProcessGroup::Fork(
    absl::string_view tag, absl::Time deadline) {
  DCP_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> child,
                       comm_->Fork(tag, deadline));
  return std::shared_ptr<ProcessGroup>(Access::Make(std::move(child)));
}

absl::StatusOr<std::unique_ptr<C10dProcessGroup>> WrapC10dProcessGroup(
    c10::intrusive_ptr<c10d::ProcessGroup> pg,
    c10::intrusive_ptr<c10d::Store> store, C10dWrapOptions options) {
  IgnoreSigpipeUnlessHandled();
  if (!pg) return absl::InvalidArgumentError("WrapC10dProcessGroup: null pg");
  if (!store) {
    return absl::InvalidArgumentError("WrapC10dProcessGroup: null store");
  }
  if (options.key_prefix.empty()) {
    return absl::InvalidArgumentError("WrapC10dProcessGroup: empty key_prefix");
  }
  DCP_RETURN_IF_ERROR(
      Annotate(c10d_process_group_internal::ValidateCommon(options.timeout),
               "WrapC10dProcessGroup"));
  GroupConfig config{std::move(options.interface_hostname), options.timeout,
                     ""};
  auto comm = std::make_unique<Communicator>(
      std::move(pg), /*own_gloo=*/nullptr, std::move(store),
      options.key_prefix + "/world", /*is_fork=*/false, std::move(config),
      std::vector<std::vector<std::string>>());
  return Access::Make(std::move(comm));
}

}  // namespace dcp
