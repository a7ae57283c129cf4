#include "io/interrupt.h"

#include <atomic>
#include <csignal>

#include <fmt/format.h>

#include "sdrt/error.h"

namespace sdrt::io {

namespace {

std::atomic<int> g_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "request_interrupt must be async-signal-safe");

const char* signal_name(int signo) {
  switch (signo) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "a signal";
  }
}

}  // namespace

void request_interrupt(int signo) noexcept {
  int expected = 0;
  g_signal.compare_exchange_strong(expected, signo > 0 ? signo : SIGINT);
}

int interrupt_signal() noexcept {
  return g_signal.load();
}

void clear_interrupt() noexcept {
  g_signal.store(0);
}

void throw_if_interrupted(std::string_view what) {
  const int signo = interrupt_signal();
  if (signo == 0) return;
  throw Error(ErrorKind::kCancelled,
              fmt::format("{}: interrupted by {} (signal {})", what, signal_name(signo), signo));
}

}  // namespace sdrt::io
