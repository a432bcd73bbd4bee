// DCP_FORWARDING_HEADER: moved to distributed/fake_process_group.h (target
// //distributed:fake_process_group). Kept for one release so that old includes
// and labels still build; include "distributed/fake_process_group.h" instead.
#ifndef DCP_TESTING_FAKE_PROCESS_GROUP_H_
#define DCP_TESTING_FAKE_PROCESS_GROUP_H_

#include "distributed/fake_process_group.h"  // IWYU pragma: export

#endif  // DCP_TESTING_FAKE_PROCESS_GROUP_H_
