// DCP_FORWARDING_HEADER: moved to core/state_dict.h (target //core:state_dict).
// Kept for one release so that old includes and labels still build;
// include "core/state_dict.h" instead.
#ifndef DCP_CHECKPOINT_STATE_DICT_H_
#define DCP_CHECKPOINT_STATE_DICT_H_

#include "core/state_dict.h"  // IWYU pragma: export

#endif  // DCP_CHECKPOINT_STATE_DICT_H_
