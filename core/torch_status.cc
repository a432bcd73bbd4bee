#include "core/torch_status.h"

#include <exception>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"
#include "c10/util/Exception.h"

namespace dcp {
namespace {

absl::Status WithContext(absl::StatusCode code, absl::string_view context,
                         absl::string_view message) {
  if (context.empty()) return absl::Status(code, message);
  return absl::Status(code, absl::StrCat(context, ": ", message));
}

}  // namespace

absl::Status StatusFromCurrentException(absl::string_view context) {
  // Most specific types first: the c10 subclasses all derive from c10::Error.
  try {
    throw;
  } catch (const c10::IndexError& e) {
    return WithContext(absl::StatusCode::kOutOfRange, context,
                       e.what_without_backtrace());
  } catch (const c10::ValueError& e) {
    return WithContext(absl::StatusCode::kInvalidArgument, context,
                       e.what_without_backtrace());
  } catch (const c10::TypeError& e) {
    return WithContext(absl::StatusCode::kInvalidArgument, context,
                       e.what_without_backtrace());
  } catch (const c10::NotImplementedError& e) {
    return WithContext(absl::StatusCode::kUnimplemented, context,
                       e.what_without_backtrace());
  } catch (const c10::OutOfMemoryError& e) {
    return WithContext(absl::StatusCode::kResourceExhausted, context,
                       e.what_without_backtrace());
  } catch (const c10::Error& e) {
    return WithContext(absl::StatusCode::kInternal, context,
                       e.what_without_backtrace());
  } catch (const std::bad_alloc& e) {
    return WithContext(absl::StatusCode::kResourceExhausted, context, e.what());
  } catch (const std::exception& e) {
    return WithContext(absl::StatusCode::kInternal, context, e.what());
  } catch (...) {
    return WithContext(absl::StatusCode::kInternal, context,
                       "unknown exception");
  }
}

}  // namespace dcp
