// DCP_FORWARDING_HEADER: moved to core/torch_status.h (target
// //core:torch_status). Kept for one release so that old includes and labels
// still build; include "core/torch_status.h" instead.
#ifndef DCP_CHECKPOINT_TORCH_STATUS_H_
#define DCP_CHECKPOINT_TORCH_STATUS_H_

#include "core/torch_status.h"  // IWYU pragma: export

#endif  // DCP_CHECKPOINT_TORCH_STATUS_H_
