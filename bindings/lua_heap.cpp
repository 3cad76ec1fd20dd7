#include "lua_heap.hpp"

#include <dlfcn.h>

#include <cstdlib>

#include "luagent/error.hpp"

namespace luagent::lua {

namespace {

// The part of mimalloc's API the heap uses (mimalloc.h), resolved from the private copy.
struct MimallocApi {
  void* (*heap_new)() = nullptr;
  void (*heap_delete)(void* heap) = nullptr;
  void* (*heap_realloc)(void* heap, void* ptr, std::size_t size) = nullptr;
  void (*free)(void* ptr) = nullptr;
};

const MimallocApi* load_mimalloc() {
#if LUAGENT_LUA_HEAP_MIMALLOC
  // Loaded once and never unloaded: blocks it served may outlive any one heap.
  static const MimallocApi* api = []() -> const MimallocApi* {
    void* library = ::dlopen("libmimalloc.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!library) return nullptr;
    static MimallocApi loaded;
    loaded.heap_new = reinterpret_cast<void* (*)()>(::dlsym(library, "mi_heap_new"));
    loaded.heap_delete = reinterpret_cast<void (*)(void*)>(::dlsym(library, "mi_heap_delete"));
    loaded.heap_realloc =
        reinterpret_cast<void* (*)(void*, void*, std::size_t)>(::dlsym(library, "mi_heap_realloc"));
    loaded.free = reinterpret_cast<void (*)(void*)>(::dlsym(library, "mi_free"));
    if (!loaded.heap_new || !loaded.heap_delete || !loaded.heap_realloc || !loaded.free)
      return nullptr;
    return &loaded;
  }();
  return api;
#else
  return nullptr;  // sanitizer builds: ASan sees every Lua allocation through malloc
#endif
}

}  // namespace

LuaHeap::LuaHeap() {
  if (const MimallocApi* mimalloc = load_mimalloc()) {
    mimalloc_heap_ = mimalloc->heap_new();
    if (!mimalloc_heap_) throw Error(ErrorCode::internal, "cannot create the Lua heap");
    mimalloc_realloc_ = mimalloc->heap_realloc;
    mimalloc_free_ = mimalloc->free;
  }
}

LuaHeap::~LuaHeap() {
  // Blocks still allocated (none once the state is closed) move to mimalloc's default heap.
  if (mimalloc_heap_) load_mimalloc()->heap_delete(mimalloc_heap_);
}

void* LuaHeap::resize(void* ptr, std::size_t size) {
  if (mimalloc_heap_) return mimalloc_realloc_(mimalloc_heap_, ptr, size);
  return std::realloc(ptr, size);
}

void LuaHeap::release(void* ptr) {
  if (mimalloc_heap_)
    mimalloc_free_(ptr);
  else
    std::free(ptr);
}

const char* LuaHeap::allocator() const {
  return mimalloc_heap_ ? "mimalloc" : "malloc";
}

}  // namespace luagent::lua
