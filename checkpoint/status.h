// DCP_FORWARDING_HEADER: moved to core/status.h (target //core:status).
// Kept for one release so that old includes and labels still build;
// include "core/status.h" instead.
#ifndef DCP_CHECKPOINT_STATUS_H_
#define DCP_CHECKPOINT_STATUS_H_

#include "core/status.h"  // IWYU pragma: export

#endif  // DCP_CHECKPOINT_STATUS_H_
