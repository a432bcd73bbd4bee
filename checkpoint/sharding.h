// DCP_FORWARDING_HEADER: moved to core/sharding.h (target //core:sharding).
// Kept for one release so that old includes and labels still build;
// include "core/sharding.h" instead.
#ifndef DCP_CHECKPOINT_SHARDING_H_
#define DCP_CHECKPOINT_SHARDING_H_

#include "core/sharding.h"  // IWYU pragma: export

#endif  // DCP_CHECKPOINT_SHARDING_H_
