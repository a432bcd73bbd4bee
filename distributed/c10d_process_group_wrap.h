// -----------------------------------------------------------------------------
// File: distributed/c10d_process_group_wrap.h
// -----------------------------------------------------------------------------
//
// For programs that already have a c10d process group (and its store):
// `WrapC10dProcessGroup` adapts it to dcp's `ProcessGroup`. This header
// includes c10d headers; include it only where you hold c10d objects.
// Everything else uses distributed/c10d_process_group.h.
//
//   c10::intrusive_ptr<c10d::Store> store = ...;  // shared by all ranks
//   auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, n);
//   DCP_ASSIGN_OR_RETURN(std::unique_ptr<dcp::C10dProcessGroup> pg,
//                        dcp::WrapC10dProcessGroup(gloo, store));
//
// The wrapped group carries the collectives of the returned object, with
// the semantics described in c10d_process_group.h, except that its Gloo
// timeout is the one it was created with: an operation abandoned at a
// deadline keeps running in the wrapped group until the peers join or
// leave, or until that timeout (destroying the group waits for it).
//
// `store` is used for the small bookkeeping keys (arrival records, failure
// reports) under `key_prefix`, and for the Gloo groups that `Fork` creates.
// Wrapping two groups over one store needs two different key prefixes.
//
// Thread safety: as for `C10dProcessGroup`. Do not run other collectives on
// the wrapped c10d group while dcp uses it.
#ifndef DCP_DISTRIBUTED_C10D_PROCESS_GROUP_WRAP_H_
#define DCP_DISTRIBUTED_C10D_PROCESS_GROUP_WRAP_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "c10/util/intrusive_ptr.h"
#include "distributed/c10d_process_group.h"
#include "torch/csrc/distributed/c10d/ProcessGroup.hpp"
#include "torch/csrc/distributed/c10d/Store.hpp"

namespace dcp {

struct C10dWrapOptions {
  // Prefix of every store key dcp writes; unique per wrapped group.
  std::string key_prefix = "dcp";
  // Gloo device host for the groups `Fork` creates. Empty: Gloo's default
  // device (this host's name, resolved).
  std::string interface_hostname;
  // Gloo timeout of the groups `Fork` creates, and upper bound on any
  // single collective. > 0.
  absl::Duration timeout = absl::Minutes(5);
};

// Wraps `pg` (which must support allgather, gather, scatter and broadcast
// of CPU uint8/int64 tensors, e.g. Gloo). Not collective; cheap.
// Errors: InvalidArgument if `pg` or `store` is null, or options are bad.
absl::StatusOr<std::unique_ptr<C10dProcessGroup>> WrapC10dProcessGroup(
    c10::intrusive_ptr<c10d::ProcessGroup> pg,
    c10::intrusive_ptr<c10d::Store> store, C10dWrapOptions options = {});

}  // namespace dcp

#endif  // DCP_DISTRIBUTED_C10D_PROCESS_GROUP_WRAP_H_
