// DCP_FORWARDING_HEADER: moved to core/future.h (target //core:future).
// Kept for one release so that old includes and labels still build;
// include "core/future.h" instead.
#ifndef DCP_CHECKPOINT_FUTURE_H_
#define DCP_CHECKPOINT_FUTURE_H_

#include "core/future.h"  // IWYU pragma: export

#endif  // DCP_CHECKPOINT_FUTURE_H_
