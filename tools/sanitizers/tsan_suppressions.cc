// ThreadSanitizer suppressions: named functions of the uninstrumented
// libtorch and Gloo only, each for one false report that was seen.
//
// How they match: TSan records the frames of instrumented code (ours) and,
// for code it does not instrument (libtorch, c10, gloo, libgomp), only the
// immediate caller of an intercepted call (malloc/free, pthread_*, memcpy,
// read/write). A `race:` line matches a function name in any frame of the
// report's stacks: the two accesses, the allocation of the memory, and the
// creation of the threads. So a libtorch function named here can only
// match where it called an intercepted function itself, which keeps each
// line to that function's own memory. Do not name allocation helpers such
// as c10::alloc_cpu: every tensor's storage is allocated there, and such a
// line would hide every race on tensor memory.
//
// Most false reports from libtorch come from its reference counts, which
// TSan cannot see: whoever drops the last reference frees the object, and
// TSan sees no order between that free and the other thread's last use.
// dcp avoids them in its own groups rather than suppressing them (see
// Communicator::KeepUntilNextOperation in distributed/c10d_process_group.cc):
// those reports had no named frame at all, only hidden libtorch functions,
// and could not be suppressed without naming all of libtorch_cpu.so.
//
// The remaining lines cover Gloo groups that callers create themselves and
// wrap (C10dProcessGroup::Wrap) with more than one worker thread, where
// that ordering does not hold. Seen in
// //distributed:c10d_process_group_test
// (C10dProcessGroupThreadsTest.WrappedGlooGroupsRunEveryCollective) under
// --config=tsan.
//
// To find what a new report needs: run the threaded tests with
//   bazel test --config=tsan --test_tag_filters=threaded
//     --test_env=TSAN_OPTIONS=halt_on_error=0 //...
// and read the stacks in the test logs. A report whose only library frames
// are `<null>` cannot be suppressed by name: fix the ordering in our code.
//
// Linked statically into every test (see BUILD.bazel): a suppressions
// function in a shared library would load after libtsan and be ignored.

extern "C" const char* __tsan_default_suppressions() {
  return
      // c10d::Work::finish() locks the work's mutex, marks it completed and
      // notifies its condition variable after unlocking. When a waiter
      // (our thread, in Work::wait or through the work's future) then drops
      // the last reference, the Work is destroyed while TSan has seen no
      // order after the finishing thread's mutex and condition-variable
      // calls: "data race: operator delete in
      // intrusive_ptr<c10d::Work>::reset_ / previous atomic read in
      // pthread_mutex_lock called from c10d::Work::finish".
      "race:c10d::Work::finish\n"
      // The same for ProcessGroupGloo's asynchronous work: finishWorkGloo()
      // completes the future and broadcasts on a condition variable that
      // the work (allocated in ProcessGroupGloo::allgather, ::broadcast,
      // ...) owns, and the waiter destroys it: "data race:
      // pthread_cond_destroy / previous read in pthread_cond_broadcast
      // called from c10d::ProcessGroupGloo::AsyncWork::finishWorkGloo".
      "race:c10d::ProcessGroupGloo::AsyncWork::finishWorkGloo\n"
      // And when the worker thread holds the last reference: runLoop()
      // deletes the finished work after our thread dropped its reference
      // (an atomic decrement TSan sees) without an order TSan can see:
      // "data race: operator delete called from
      // c10d::ProcessGroupGloo::runLoop / previous atomic write in
      // intrusive_ptr<c10d::Work>::reset_ in Communicator::Gather".
      "race:c10d::ProcessGroupGloo::runLoop\n"
      // Gloo itself, when a peer dies mid-collective: the pair's I/O thread
      // hands the error to a pending receive buffer
      // (UnboundBuffer::signalException broadcasts the buffer's condition
      // variable under its mutex); the waiting thread wakes, fails the
      // collective and destroys the buffer: "data race: pthread_cond_destroy
      // in gloo::transport::tcp::UnboundBuffer::~UnboundBuffer / previous
      // read in pthread_cond_broadcast called from
      // gloo::transport::tcp::UnboundBuffer::signalException". Seen in
      // //distributed:c10d_process_group_test
      // (C10dLostRankTest.SigkilledRankFailsTheOthersPromptly, four ranks).
      "race:gloo::transport::tcp::UnboundBuffer::signalException\n";
}
