#!/usr/bin/env bash
# Installs the build tree into a temp prefix, then builds and runs tests/consumer twice:
# with CMake (find_package(luagent CONFIG)) and with pkg-config, moving nothing else.
# Usage: run_consumer_test.sh BUILD_DIR SOURCE_DIR [sanitize|plain]
# A sanitizer build installs an instrumented library; its consumer is built the same way.
set -euo pipefail
build=$1 source=$2 mode=${3:-plain}
sanitize_flags=""
[ "$mode" = sanitize ] && sanitize_flags="-fsanitize=address,undefined"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
for file in include/luagent/luagent.hpp lib/libluagent.a lib/cmake/luagent/luagentConfig.cmake \
  lib/pkgconfig/luagent.pc share/luagent/stdlib/luagent/prompt.lua share/luagent/meta/llm.lua \
  share/luagent/meta/host.lua bin/luagent; do
  [ -e "$work/prefix/$file" ] || { echo "not installed: $file"; exit 1; }
done
cmake -S "$source/tests/consumer" -B "$work/cmake-build" -G Ninja \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_FLAGS="$sanitize_flags" \
  -DCMAKE_EXE_LINKER_FLAGS="$sanitize_flags" >/dev/null
cmake --build "$work/cmake-build" >/dev/null
"$work/cmake-build/consumer" "$work/run-cmake"
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
# shellcheck disable=SC2046
c++ -std=c++20 $sanitize_flags -o "$work/consumer-pc" "$source/tests/consumer/main.cpp" \
  -DLUAGENT_INSTALLED_STDLIB="\"$(pkg-config --variable=stdlibdir luagent)\"" \
  $(pkg-config --cflags luagent) $(pkg-config --libs luagent)
"$work/consumer-pc" "$work/run-pkgconfig"
