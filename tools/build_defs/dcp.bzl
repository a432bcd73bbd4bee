"""dcp's cc rule wrappers: project-wide copts and test plumbing, in one place."""

DCP_COPTS = [
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Werror=unused-result",
    "-Werror=return-type",
]

def dcp_cc_library(name, copts = [], **kwargs):
    native.cc_library(name = name, copts = DCP_COPTS + copts, **kwargs)

def dcp_cc_binary(name, copts = [], **kwargs):
    native.cc_binary(name = name, copts = DCP_COPTS + copts, **kwargs)

def dcp_cc_test(name, copts = [], deps = [], size = "small", gtest_main = True, **kwargs):
    """A cc_test with dcp's copts, its gtest main and the TSan suppressions.

    Set `gtest_main = False` for a test that brings its own main().
    """
    extra = [str(Label("//tools/sanitizers:tsan_suppressions"))]
    if gtest_main:
        extra.append(str(Label("//testing:gtest_main")))
    native.cc_test(
        name = name,
        copts = DCP_COPTS + copts,
        deps = deps + extra,
        size = size,
        **kwargs
    )
