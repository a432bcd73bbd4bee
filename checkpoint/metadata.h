// DCP_FORWARDING_HEADER: moved to core/metadata.h (target //core:metadata).
// Kept for one release so that old includes and labels still build;
// include "core/metadata.h" instead.
#ifndef DCP_CHECKPOINT_METADATA_H_
#define DCP_CHECKPOINT_METADATA_H_

#include "core/metadata.h"  // IWYU pragma: export

#endif  // DCP_CHECKPOINT_METADATA_H_
