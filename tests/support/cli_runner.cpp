#include "support/cli_runner.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>

#include "support/test_paths.hpp"

namespace luagent::test {

CliResult run_cli(const std::vector<std::string>& args, const std::string& cwd,
                  const std::map<std::string, std::string>& env, const std::string& stdin_path) {
  return run_program(cli_path(), args, cwd, env, stdin_path);
}

CliResult run_program(const std::filesystem::path& program, const std::vector<std::string>& args,
                      const std::string& cwd, const std::map<std::string, std::string>& env,
                      const std::string& stdin_path, std::chrono::milliseconds timeout) {
  int out_pipe[2], err_pipe[2];
  if (pipe(out_pipe) != 0 || pipe(err_pipe) != 0) throw std::runtime_error("pipe failed");
  std::string binary = program.string();
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    // Its own group: a timeout kills the children it forked too, which hold the pipes.
    if (timeout.count() > 0) setpgid(0, 0);
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(err_pipe[1], STDERR_FILENO);
    int input = open(stdin_path.c_str(), O_RDONLY);
    if (input < 0) _exit(127);
    dup2(input, STDIN_FILENO);
    close(out_pipe[0]);
    close(err_pipe[0]);
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(127);
    for (const auto& [name, value] : env) {
      if (value.empty())
        unsetenv(name.c_str());
      else
        setenv(name.c_str(), value.c_str(), 1);
    }
    std::vector<char*> argv{binary.data()};
    std::vector<std::string> copies(args);
    for (auto& arg : copies) argv.push_back(arg.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  // Also here: the child may not have run yet when the timeout comes.
  if (timeout.count() > 0) setpgid(pid, pid);
  CliResult result;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buffer[4096];
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (open_fds > 0) {
    int wait_ms = -1;
    if (timeout.count() > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      wait_ms = static_cast<int>(std::max<std::int64_t>(left.count(), 0));
    }
    int ready = poll(fds, 2, wait_ms);
    if (ready < 0) break;
    if (ready == 0 && !result.timed_out) {
      result.timed_out = true;
      kill(-pid, SIGKILL);
      deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);  // to drain
      continue;
    }
    if (ready == 0) break;  // killed, yet something still holds the pipes open
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      ssize_t n = read(fds[i].fd, buffer, sizeof buffer);
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? result.out : result.err).append(buffer, static_cast<size_t>(n));
      }
    }
  }
  for (pollfd& fd : fds)
    if (fd.fd >= 0) close(fd.fd);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

}  // namespace luagent::test
