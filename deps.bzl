"""Declares every external repository dcp needs, for dcp and its consumers.

A consumer workspace does:

    local_repository(name = "dcp", path = "/path/to/dcp")
    load("@dcp//:deps.bzl", "dcp_dependencies")
    dcp_dependencies()

and then depends on `@dcp//checkpoint:...` targets. Nothing is downloaded:
libraries come from Debian 12 packages (see tools/install_deps.sh) and the
repositories Bazel 4.2.3 insists on fetching are replaced by local stand-ins.
Labels below are resolved relative to this file, so they name dcp's own
files whether dcp is the main workspace or an external one.
"""

def _stub_repository_impl(ctx):
    # Lays out a stand-in repository from files kept in dcp's third_party/.
    ctx.file("WORKSPACE", "workspace(name = \"%s\")\n" % ctx.name)
    for dest, src in ctx.attr.files.items():
        ctx.symlink(ctx.path(Label(src)), dest)

_stub_repository = repository_rule(
    implementation = _stub_repository_impl,
    attrs = {"files": attr.string_dict()},
    local = True,
    doc = "A repository made of dcp's own files: {path in the repo: label}.",
)

def _stub(name, files):
    # Resolve labels here, relative to this file, so that they keep naming
    # dcp's files when dcp is an external repository.
    _stub_repository(
        name = name,
        files = {dest: str(Label(src)) for dest, src in files.items()},
    )

def _maybe(rule, name, **kwargs):
    if name not in native.existing_rules():
        rule(name = name, **kwargs)

def dcp_dependencies():
    """Declares the system-library and stand-in repositories dcp uses."""

    # Stand-ins. Debian's bazel-rules-cc 0.0.4 is too new for Bazel 4.2.3,
    # rules_java is needed even by C++-only builds, and every *_test depends
    # on remote_coverage_tools (coverage is unavailable offline).
    _maybe(_stub, "rules_cc", files = {
        "BUILD": "//third_party/bazel:empty.BUILD",
        "cc/BUILD": "//third_party/bazel:empty.BUILD",
        "cc/defs.bzl": "//third_party/bazel:rules_cc_defs.bzl",
    })
    _maybe(_stub, "rules_java", files = {
        "BUILD": "//third_party/bazel:empty.BUILD",
        "java/BUILD": "//third_party/bazel:empty.BUILD",
        "java/defs.bzl": "//third_party/bazel:rules_java_defs.bzl",
    })
    _maybe(_stub, "remote_coverage_tools", files = {
        "BUILD": "//third_party/bazel:remote_coverage_tools.BUILD",
        "unavailable.sh": "//third_party/bazel:coverage_unavailable.sh",
    })

    # Debian 12 system libraries. Headers are under /usr/include, which the
    # autoconfigured gcc toolchain already searches; the BUILD files only add
    # link options (and, for libtorch's C++ API, one -isystem directory).
    for name, build_file in [
        ("com_google_absl", "//third_party:absl.BUILD"),
        ("com_google_googletest", "//third_party:googletest.BUILD"),
        ("com_github_google_glog", "//third_party:glog.BUILD"),
        ("com_github_gflags_gflags", "//third_party:gflags.BUILD"),
        ("libtorch", "//third_party:libtorch.BUILD"),
        ("isal", "//third_party:isal.BUILD"),
    ]:
        _maybe(
            native.new_local_repository,
            name,
            path = "/usr",
            build_file = str(Label(build_file)),
        )
