// Drives an EventLoop from a test until a condition holds or a deadline passes.
#pragma once

#include <chrono>
#include <functional>

#include "event_loop.hpp"

namespace luagent::test {

/// Turns `loop` until `done()` is true or `limit` has passed; returns done().
inline bool run_loop_until(luagent::EventLoop& loop, const std::function<bool()>& done,
                           std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline)
    loop.turn(std::chrono::milliseconds(20));
  return done();
}

}  // namespace luagent::test
