// DCP_FORWARDING_HEADER: moved to core/executor.h (target //core:executor).
// Kept for one release so that old includes and labels still build;
// include "core/executor.h" instead.
#ifndef DCP_CHECKPOINT_EXECUTOR_H_
#define DCP_CHECKPOINT_EXECUTOR_H_

#include "core/executor.h"  // IWYU pragma: export

#endif  // DCP_CHECKPOINT_EXECUTOR_H_
