// DCP_FORWARDING_HEADER: moved to distributed/c10d_process_group.h (target
// //distributed:c10d_process_group). Kept for one release so that old includes
// and labels still build; include "distributed/c10d_process_group.h" instead.
#ifndef DCP_CHECKPOINT_C10D_PROCESS_GROUP_H_
#define DCP_CHECKPOINT_C10D_PROCESS_GROUP_H_

#include "distributed/c10d_process_group.h"  // IWYU pragma: export

#endif  // DCP_CHECKPOINT_C10D_PROCESS_GROUP_H_
