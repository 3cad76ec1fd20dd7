// placeholder, replaced by the runtime
namespace luagent {}
