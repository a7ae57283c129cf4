// A process-wide "stop" request, set from a signal handler (the CLI's SIGINT / SIGTERM / SIGHUP) and honoured
// by the long operations: atomic writes stop between chunks and before the rename (the temporary file is
// removed), checkpoint conversion between files (its temporary folder is removed), and a front end's step
// callback can return false when it is set.
#pragma once

#include <string_view>

namespace sdrt::io {

// Records the request; async-signal-safe (a lock-free atomic store). `signo` > 0 (the first one wins).
void request_interrupt(int signo) noexcept;
// The signal given to request_interrupt, 0 when none.
int interrupt_signal() noexcept;
// Forgets the request (a long-running process that has handled it; tests).
void clear_interrupt() noexcept;
// Throws sdrt::Error (kCancelled) "<what>: interrupted by signal N (SIGINT)" when a request is pending.
void throw_if_interrupted(std::string_view what);

}  // namespace sdrt::io
