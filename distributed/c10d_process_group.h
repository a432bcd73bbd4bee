// -----------------------------------------------------------------------------
// File: distributed/c10d_process_group.h
// -----------------------------------------------------------------------------
//
// `C10dProcessGroup`: the `ProcessGroup` of real multi-process runs, over
// libtorch's c10d with the Gloo backend (TCP, CPU). This header does not
// include c10d or torch headers; only c10d_process_group.cc does. To wrap a
// c10d process group you already have, see
// distributed/c10d_process_group_wrap.h.
//
// Creating a group (collective: every rank must call it, within
// `C10dOptions::timeout` of each other):
//
//   dcp::C10dOptions options;
//   options.rank = rank;
//   options.world_size = world_size;
//   options.master_addr = "10.0.0.1";   // rank 0 hosts the TCPStore
//   options.master_port = 29500;
//   DCP_ASSIGN_OR_RETURN(std::unique_ptr<dcp::C10dProcessGroup> pg,
//                        dcp::C10dProcessGroup::Create(options));
//
// or, under torchrun, `C10dProcessGroup::CreateFromEnv()`.
//
// How collectives work. Each call numbers itself (call #0, #1, ... per
// group) and runs in two Gloo phases:
//   1. A header allgather of 4 int64 per rank: a hash of (kind, tag, root),
//      the call number, the payload size and, for Scatter, the root's
//      largest payload. Every rank checks that all ranks make the same call
//      (FailedPrecondition otherwise) and learns every payload size.
//   2. The payload as uint8 tensors. Gloo needs equal sizes, so payloads are
//      padded to the largest one:
//        AllGather  allgather;    every rank receives size() x max bytes
//        Gather     gather;       the root receives size() x max bytes
//        Scatter    scatter;      each rank receives max + 8 bytes
//        Broadcast  broadcast of the root's payload (no padding)
//        Barrier    phase 1 only
//      Phase 2 is skipped when every payload is empty. Cost: one extra
//      round trip per call, and padding: a Gather where one rank sends 100 MB
//      and the others nothing moves size() x 100 MB.
//   Before phase 1 each rank records its arrival ("call #k ...") in the c10d
//   store: one small `set` per call, so that errors can name the ranks that
//   did not arrive. Creating a group (Create, Fork) also runs one alltoall
//   and publishes each rank's ends of its Gloo connections in the store, so
//   that a Gloo connection error, which names the remote end's address,
//   names the rank.
//
// Deadlines: every call waits for Gloo until `deadline` (capped at
// `C10dOptions::timeout`), and every 100 ms checks the store for a failure
// reported by another rank. For groups this class creates (Create, Fork),
// Gloo's own timeout for each operation is set to the same deadline, so an
// abandoned operation ends in Gloo too and destroying the group does not
// block.
//
// Errors (the message names the call, e.g. `Gather(tag="plan", root=0) call
// #3`, plus " on group dcp/world/f1" on forks):
//   DeadlineExceeded    the deadline passed; "rank 1 did not arrive" (or
//                       "every rank arrived, but ...")
//   Aborted             a peer failed or left: "lost rank 2 (its connection
//                       failed; gloo: <Gloo's message>)" when the rank can
//                       be told (always in a world of 2; otherwise when
//                       Gloo's message names a known connection end), else
//                       "a peer rank was lost or failed (gloo: ...); rank 2
//                       had not arrived at this call"; or "rank 3 failed at
//                       <its call>: <its error>" when another rank reported
//                       first; or "the process group failed earlier: ..."
//   FailedPrecondition  ranks disagree on the call (kind, tag, root or call
//                       number): "ranks disagree on the collective: rank 0
//                       calls AllGather(tag="a") (call #3), rank 1 calls
//                       Broadcast(tag="a", root=0) (call #3)", the same on
//                       every rank
//   InvalidArgument     root out of range, or the Scatter root did not pass
//                       size() payloads. Local to the caller; the other
//                       ranks get Aborted promptly
// After any error the group is unusable: every later call returns Aborted
// at once. The first failing rank reports its error in the store, which
// ends the other ranks' waits on that group within 100 ms.
//
// Signals: creating or wrapping a group sets SIGPIPE to ignored if it still
// has the default action, so a peer that exits mid-send fails the call
// (Aborted) instead of killing this process, as in Python.
//
// Thread safety: `rank()` and `size()` may be called from any thread.
// Collectives on one group come from one thread at a time (the
// `ProcessGroup` contract). Groups returned by `Fork` are independent and
// may be used from another thread while this one is in use.
//
// Ownership: a forked group shares the store with its parent and may
// outlive it. Destroying a group whose operation was abandoned by a
// deadline waits for Gloo to end that operation, which it does at the same
// deadline (for wrapped groups: when the peers join or leave, or at the
// wrapped group's own Gloo timeout).
#ifndef DCP_DISTRIBUTED_C10D_PROCESS_GROUP_H_
#define DCP_DISTRIBUTED_C10D_PROCESS_GROUP_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "distributed/process_group.h"

namespace dcp {

namespace c10d_process_group_internal {
class Communicator;
struct Access;
}  // namespace c10d_process_group_internal

// How to reach the other ranks.
struct C10dOptions {
  // This process's rank in [0, world_size).
  int rank = 0;
  // Number of processes, >= 1.
  int world_size = 1;

  // Rendezvous over a c10d TCPStore, hosted by rank 0 on `master_port`
  // (rank 0 listens on all interfaces; the others connect to `master_addr`).
  // The port must be in [1, 65535] unless world_size is 1.
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  // If set: rendezvous over a c10d FileStore at this path instead (a file on
  // a file system every rank sees; it must not be left over from an
  // earlier run). `master_addr` and `master_port` are then ignored.
  std::string file_store_path;

  // Upper bound on the rendezvous in `Create` and on any single collective
  // or Fork (like torch's process-group timeout). > 0.
  absl::Duration timeout = absl::Minutes(5);

  // Address of this host that the other ranks can reach, for Gloo's TCP
  // device. Empty: Gloo's default device (this host's name, resolved). The
  // default, loopback, only works when every rank runs on this host.
  std::string interface_hostname = "127.0.0.1";
};

// Reads torchrun-style variables through `lookup` (which returns the
// variable's value, or nullopt if unset):
//   RANK, WORLD_SIZE           required
//   MASTER_ADDR, MASTER_PORT   required unless DCP_FILE_STORE is set
//   DCP_FILE_STORE             optional: FileStore path instead of TCPStore
//   DCP_GLOO_HOSTNAME          optional: `interface_hostname`; default
//                              "127.0.0.1" if DCP_FILE_STORE is used or
//                              MASTER_ADDR is a loopback address, else
//                              empty (Gloo's default)
//   DCP_C10D_TIMEOUT_SECONDS   optional: `timeout` (default 300)
// An empty DCP_FILE_STORE counts as unset. InvalidArgument naming the
// variable if one is missing or malformed (not an integer, RANK outside
// [0, WORLD_SIZE), WORLD_SIZE below 1, MASTER_PORT outside [1, 65535], a
// DCP_C10D_TIMEOUT_SECONDS that is not positive).
absl::StatusOr<C10dOptions> C10dOptionsFromEnv(
    absl::FunctionRef<std::optional<std::string>(absl::string_view name)>
        lookup);
// The same, from the process environment.
absl::StatusOr<C10dOptions> C10dOptionsFromEnv();

class C10dProcessGroup : public ProcessGroup {
 public:
  // Collective. Creates the store (rank 0 hosts the TCPStore server; or
  // opens the FileStore) and a Gloo group; returns once every rank has
  // connected.
  // Errors: InvalidArgument for bad options (world_size below 1, rank out
  // of range, a timeout that is not positive, an empty master_addr or a
  // master_port outside [1, 65535] without a file_store_path);
  // DeadlineExceeded if the other ranks did not all arrive within
  // `options.timeout`; Unavailable if the store or the Gloo device cannot be
  // set up (e.g. port in use). Setup errors name the rank and the store.
  static absl::StatusOr<std::unique_ptr<C10dProcessGroup>> Create(
      const C10dOptions& options);

  // `Create(C10dOptionsFromEnv())`: the errors of either.
  static absl::StatusOr<std::unique_ptr<C10dProcessGroup>> CreateFromEnv();

  C10dProcessGroup(const C10dProcessGroup&) = delete;
  C10dProcessGroup& operator=(const C10dProcessGroup&) = delete;
  ~C10dProcessGroup() override;

  int rank() const override;
  int size() const override;

  absl::Status Barrier(absl::string_view tag, absl::Time deadline) override;
  absl::StatusOr<std::string> Broadcast(absl::string_view tag, int root,
                                        std::string payload,
                                        absl::Time deadline) override;
  absl::StatusOr<std::vector<std::string>> Gather(absl::string_view tag,
                                                  int root, std::string payload,
                                                  absl::Time deadline) override;
  absl::StatusOr<std::string> Scatter(absl::string_view tag, int root,
                                      std::vector<std::string> payloads,
                                      absl::Time deadline) override;
  absl::StatusOr<std::vector<std::string>> AllGather(
      absl::string_view tag, std::string payload, absl::Time deadline) override;

  // A new Gloo group over the same store, under a key prefix derived from
  // this group's prefix and the call number (so every rank, calling Fork in
  // the same order, derives the same one). Runs phase 1 on this group
  // first, so the ranks agree on the tag. The result is a
  // `C10dProcessGroup`. Errors: as any collective (see above); failing to
  // create the new group fails this group too.
  absl::StatusOr<std::shared_ptr<ProcessGroup>> Fork(
      absl::string_view tag, absl::Time deadline) override;

  // The store key prefix of this group, e.g. "dcp/world" or
  // "dcp/world/f3" (the fork made by call #3), for logs.
  const std::string& name() const;

 private:
  friend struct c10d_process_group_internal::Access;
  explicit C10dProcessGroup(
      std::unique_ptr<c10d_process_group_internal::Communicator> comm);

  std::unique_ptr<c10d_process_group_internal::Communicator> comm_;
};

}  // namespace dcp

#endif  // DCP_DISTRIBUTED_C10D_PROCESS_GROUP_H_
