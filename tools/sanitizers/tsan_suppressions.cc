// ThreadSanitizer suppressions for the uninstrumented system libraries only.
//
// libtorch, c10, gloo and libgomp are not built with -fsanitize=thread, so
// TSan sees their synchronisation partially and reports false races (for
// example pthread_cond_destroy in ProcessGroupGloo's AsyncWork). Races whose
// stacks are entirely in dcp's own code are still reported.

extern "C" const char* __tsan_default_suppressions() {
  return "called_from_lib:libtorch_cpu.so\n"
         "called_from_lib:libc10.so\n"
         "called_from_lib:libgloo.so.0\n"
         "called_from_lib:libgomp.so.1\n"
         "race:libtorch_cpu.so\n"
         "race:libc10.so\n"
         "race:libgloo.so\n"
         "race:libgomp.so\n"
         "mutex:libtorch_cpu.so\n"
         "mutex:libgloo.so\n"
         "deadlock:libtorch_cpu.so\n"
         "deadlock:libgloo.so\n";
}
