#include "event_loop.hpp"

#include <algorithm>

namespace luagent {

void EventLoop::post(Task task) {
  bool sleeping;
  {
    std::lock_guard lock(mutex_);
    posted_.push_back(std::move(task));
    sleeping = sleeping_;
  }
  // A loop that is not blocked (or about to be) sees the task before it next waits: turn()
  // checks posted_ under the same lock before it sets sleeping_. So a post from the loop's
  // own thread, or while it runs, costs no wakeup (an eventfd write).
  if (!sleeping) return;
  posted_cv_.notify_one();
  // Reading drivers_ without the lock is safe: sleeping_ is true only while the loop's
  // thread (the one writer of drivers_) is inside turn()'s wait.
  for (IoDriver* driver : drivers_) driver->wakeup();
}

EventLoop::TimerId EventLoop::after(std::chrono::milliseconds delay, Task task) {
  TimerId id = next_timer_++;
  timers_.emplace(Clock::now() + delay, std::make_pair(id, std::move(task)));
  return id;
}

void EventLoop::cancel_timer(TimerId id) {
  for (auto it = timers_.begin(); it != timers_.end(); ++it) {
    if (it->second.first == id) {
      timers_.erase(it);
      return;
    }
  }
}

void EventLoop::add_driver(IoDriver* driver) {
  drivers_.push_back(driver);
}

void EventLoop::remove_driver(IoDriver* driver) {
  drivers_.erase(std::remove(drivers_.begin(), drivers_.end(), driver), drivers_.end());
}

bool EventLoop::busy() const {
  if (!timers_.empty()) return true;
  for (const IoDriver* driver : drivers_)
    if (driver->active()) return true;
  std::lock_guard lock(mutex_);
  return !posted_.empty();
}

std::vector<EventLoop::Task> EventLoop::take_posted() {
  std::lock_guard lock(mutex_);
  std::vector<Task> tasks;
  tasks.swap(posted_);
  return tasks;
}

void EventLoop::requeue_front(std::vector<Task>& tasks, std::size_t first) {
  std::lock_guard lock(mutex_);
  posted_.insert(posted_.begin(), std::make_move_iterator(tasks.begin() + first),
                 std::make_move_iterator(tasks.end()));
}

int EventLoop::turn(std::chrono::milliseconds max_wait, std::optional<Clock::time_point> deadline) {
  auto wait = max_wait;
  if (!timers_.empty()) {
    auto until_timer =
        std::chrono::ceil<std::chrono::milliseconds>(timers_.begin()->first - Clock::now());
    wait = std::clamp(until_timer, std::chrono::milliseconds(0), wait);
  }
  for (const IoDriver* driver : drivers_)
    if (driver->has_queued_work()) wait = std::chrono::milliseconds(0);
  if (wait.count() > 0) {
    std::unique_lock lock(mutex_);
    if (!posted_.empty()) wait = std::chrono::milliseconds(0);
    sleeping_ = wait.count() > 0;  // from here on a post must wake us
  }

  IoDriver* active_driver = nullptr;
  for (IoDriver* driver : drivers_)
    if (driver->active()) active_driver = driver;
  if (wait.count() > 0) {
    if (active_driver) {
      active_driver->wait(wait);
    } else {
      std::unique_lock lock(mutex_);
      posted_cv_.wait_for(lock, wait, [&] { return !posted_.empty(); });
    }
    std::lock_guard lock(mutex_);
    sleeping_ = false;
  }

  int ran = 0;
  for (IoDriver* driver : drivers_) ran += static_cast<int>(driver->perform(deadline));
  std::vector<Task> tasks = take_posted();
  for (std::size_t next = 0; next < tasks.size();) {
    try {
      tasks[next++]();
    } catch (...) {
      // The exception is the caller's (Host::pump, run), but the tasks behind the one that
      // threw are not its to lose: host-internal ones (a tool's answer, a provider's reply)
      // are a run's only way on. They go back ahead of anything posted since, in order.
      requeue_front(tasks, next);
      throw;
    }
    ++ran;
  }
  auto now = Clock::now();
  while (!timers_.empty() && timers_.begin()->first <= now) {
    Task task = std::move(timers_.begin()->second.second);
    timers_.erase(timers_.begin());
    task();
    ++ran;
  }
  return ran;
}

}  // namespace luagent
