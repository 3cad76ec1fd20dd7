// The Lua state's heap. Lua makes and frees many small objects; glibc's consolidation of
// them showed up as multi-millisecond collector steps, so the heap is a mimalloc heap of
// the state's own when libmimalloc is installed. The library is loaded privately
// (dlopen, RTLD_LOCAL) rather than linked: a linked libmimalloc replaces malloc for the
// whole process, and luagent is embedded in games and tools that own their allocator.
#pragma once

#include <cstddef>

namespace luagent::lua {

class LuaHeap {
 public:
  LuaHeap();  // throws Error(internal) if mimalloc is loaded but cannot make a heap
  ~LuaHeap();
  LuaHeap(const LuaHeap&) = delete;
  LuaHeap& operator=(const LuaHeap&) = delete;

  /// realloc(ptr, size) for size > 0; nullptr when out of memory (ptr stays valid).
  void* resize(void* ptr, std::size_t size);
  void release(void* ptr);
  /// "mimalloc" or "malloc": what serves this heap.
  const char* allocator() const;

 private:
  void* mimalloc_heap_ = nullptr;  // mi_heap_t*, when mimalloc serves the heap
  // mimalloc's mi_heap_realloc and mi_free then, kept here to spare each call a lookup.
  void* (*mimalloc_realloc_)(void* heap, void* ptr, std::size_t size) = nullptr;
  void (*mimalloc_free_)(void* ptr) = nullptr;
};

}  // namespace luagent::lua
