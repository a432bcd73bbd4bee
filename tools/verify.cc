#include "tools/verify.h"

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/metadata.h"
#include "core/status.h"
#include "storage/verify.h"
#include "tools/tool_util.h"

namespace dcp::tools {
namespace {

// Rewrites one progress line at most once per interval (the callback is
// never called concurrently: see VerifyOptions::progress).
class ProgressLine {
 public:
  ProgressLine(std::ostream* out, absl::Duration interval)
      : out_(out), interval_(interval), last_(absl::Now()) {}

  void Update(const VerifyProgress& p) {
    if (out_ == nullptr) return;
    const absl::Time now = absl::Now();
    if (now - last_ < interval_) return;
    last_ = now;
    *out_ << "\rverifying... " << p.files_done << "/" << p.files_total
          << " files, " << HumanBytes(p.bytes_done) << " of "
          << HumanBytes(p.bytes_total) << std::flush;
    printed_ = true;
  }

  // Ends the line, if one was printed.
  void Finish() {
    if (out_ != nullptr && printed_) *out_ << "\n" << std::flush;
  }

 private:
  std::ostream* const out_;
  const absl::Duration interval_;
  absl::Time last_;
  bool printed_ = false;
};

std::string JsonOptionalString(const std::optional<std::string>& s) {
  return s.has_value() ? JsonString(*s) : "null";
}

template <typename T>
std::string JsonOptionalNumber(const std::optional<T>& n) {
  return n.has_value() ? absl::StrCat(*n) : "null";
}

std::string JsonOptionalShape(const std::optional<Shape>& shape) {
  return shape.has_value() ? absl::StrCat("[", absl::StrJoin(*shape, ", "), "]")
                           : "null";
}

std::string Plural(int64_t n, absl::string_view word) {
  return absl::StrCat(n, " ", word, n == 1 ? "" : "s");
}

void PrintFileText(const VerifyFileReport& f, absl::string_view details,
                   std::ostream& out) {
  if (f.ok()) {
    out << "OK  " << f.name << "  " << details << "\n";
    return;
  }
  for (size_t i = 0; i < f.problems.size(); ++i) {
    out << (i == 0 ? "BAD " : "    ") << f.name << ": "
        << f.problems[i].Describe() << "\n";
  }
}

void PrintText(const VerifyReport& report, std::ostream& out) {
  out << "checkpoint: " << report.dir << "\n";
  PrintFileText(
      report.metadata,
      absl::StrCat(Plural(report.tensors + report.values, "key"), " (",
                   report.tensors, " tensors, ", report.values,
                   " bytes values)  ", Plural(report.metadata.records, "record")),
      out);
  for (const VerifyFileReport& f : report.files) {
    PrintFileText(f,
                  absl::StrCat(Plural(f.records, "record"), "  ",
                               HumanBytes(f.size)),
                  out);
  }
  out << "summary: " << Plural(static_cast<int64_t>(report.files.size()),
                               "data file")
      << ", " << Plural(report.num_records(), "record") << ", "
      << HumanBytes(report.num_file_bytes()) << ": ";
  if (report.ok()) {
    out << "OK\n";
  } else {
    out << Plural(report.num_problems(), "problem") << " in "
        << Plural(report.num_bad_files(), "file") << "\n";
  }
}

void PrintJson(const VerifyReport& report, std::ostream& out) {
  std::vector<const VerifyFileReport*> files = {&report.metadata};
  for (const VerifyFileReport& f : report.files) files.push_back(&f);
  out << "{\n  \"checkpoint\": " << JsonString(report.dir)
      << ",\n  \"ok\": " << (report.ok() ? "true" : "false")
      << ",\n  \"files\": [";
  for (size_t i = 0; i < files.size(); ++i) {
    const VerifyFileReport& f = *files[i];
    out << (i == 0 ? "\n" : ",\n") << "    {\"name\": " << JsonString(f.name)
        << ", \"exists\": " << (f.exists ? "true" : "false")
        << ", \"size\": " << f.size << ", \"records\": " << f.records
        << ", \"record_bytes\": " << f.record_bytes
        << ", \"ok\": " << (f.ok() ? "true" : "false")
        << ", \"problems\": " << f.problems.size() << "}";
  }
  out << "\n  ],\n  \"problems\": [";
  bool first = true;
  for (const VerifyFileReport* f : files) {
    for (const VerifyProblem& p : f->problems) {
      out << (first ? "\n" : ",\n") << "    {\"file\": " << JsonString(p.file)
          << ", \"kind\": " << JsonString(VerifyProblemKindName(p.kind))
          << ", \"message\": " << JsonString(p.message)
          << ", \"description\": " << JsonString(p.Describe())
          << ", \"key\": " << JsonOptionalString(p.key)
          << ", \"chunk_offsets\": " << JsonOptionalShape(p.chunk_offsets)
          << ", \"record_offset\": " << JsonOptionalNumber(p.record_offset)
          << ", \"entry\": " << JsonOptionalString(p.entry)
          << ", \"byte_offset\": " << JsonOptionalNumber(p.byte_offset)
          << ", \"detail\": " << JsonString(p.detail) << "}";
      first = false;
    }
  }
  out << (first ? "],\n" : "\n  ],\n");
  out << "  \"totals\": {\"files\": " << report.files.size()
      << ", \"bad_files\": " << report.num_bad_files()
      << ", \"records\": " << report.num_records()
      << ", \"bytes\": " << report.num_file_bytes()
      << ", \"problems\": " << report.num_problems() << "}\n}\n";
}

}  // namespace

absl::StatusOr<bool> VerifyCommand(const VerifyCommandOptions& options,
                                   std::ostream& out) {
  if (options.dir.empty()) {
    return absl::InvalidArgumentError("no checkpoint directory given");
  }
  ProgressLine progress(options.progress, options.progress_interval);
  VerifyOptions verify;
  verify.thread_count = options.thread_count;
  verify.allow_symlinks = options.allow_symlinks;
  verify.progress = [&progress](const VerifyProgress& p) {
    progress.Update(p);
  };
  absl::StatusOr<VerifyReport> report = VerifyCheckpoint(options.dir, verify);
  progress.Finish();
  DCP_RETURN_IF_ERROR(report.status());
  if (options.json) {
    PrintJson(*report, out);
  } else {
    PrintText(*report, out);
  }
  return report->ok();
}

int VerifyExitCode(const absl::StatusOr<bool>& result) {
  if (!result.ok()) return 2;
  return *result ? 0 : 1;
}

}  // namespace dcp::tools
