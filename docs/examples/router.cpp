// docs/examples/router.cpp - route by subshell id; errors, deletion and stop, nothing lost.
// Built and run by ctest (label "doc"); exits non-zero if a check fails.
#include <tether/router.hpp>

#include <cstdio>
#include <string>
#include <thread>

int main() {
  using namespace std::chrono_literals;
  tether::executor parent{{.name = "parent"}};  // often the adopted main thread instead

  // One handler per subshell, made on the subshell's own thread: here a counter of its own.
  tether::router<std::string, std::string> r{parent, [](tether::subshell_id id) {
    return [id, n = 0](std::string&& code) mutable {
      if (code == "raise") throw std::runtime_error("boom");
      return id.to_string() + " ran '" + code + "' as #" + std::to_string(++n);
    };
  }};

  const tether::routing_result<tether::subshell_id> made = r.create_subshell();  // its thread is "subshell-1"
  if (!made) return 1;  // made.code(): router_stopped, create_failed ...
  const tether::subshell_id child = *made;
  bool ok = true;
  ok &= static_cast<bool>(r.send({child, std::string("x = 1"), 1}));
  ok &= static_cast<bool>(r.send(tether::parent_subshell, "y = 2", 2));
  ok &= static_cast<bool>(r.send(child, "raise", 3));                     // the subshell keeps serving
  ok &= static_cast<bool>(r.send(tether::subshell_id{42}, "lost?", 4));   // no such subshell

  int values = 0, errors = 0;
  for (int i = 0; i < 4; ++i) {
    auto rep = r.replies().pop_for(10s);
    if (!rep) return 1;
    if (rep->has_value()) {
      ++values;
      std::printf("tag %llu: %s\n", static_cast<unsigned long long>(rep->tag()), (*rep)->c_str());
    } else {
      ++errors;
      const std::string* back = rep->returned_payload();  // only when it never reached a handler
      std::printf("tag %llu: %s: %s%s\n", static_cast<unsigned long long>(rep->tag()),
                  tether::to_string(rep->error().code()), rep->error().message().c_str(),
                  back != nullptr ? (" (payload back: '" + *back + "')").c_str() : "");
    }
  }

  // Delete with cancel: queued messages are answered subshell_deleted, payload handed back.
  const bool deleted = r.delete_subshell(child, tether::stop_mode::cancel).code() == tether::routing_errc::ok;
  ok &= static_cast<bool>(r.send(child, "after delete", 5));
  auto late = r.replies().pop_for(10s);
  ok &= late && late->error().code() == tether::routing_errc::subshell_deleted;

  // Stop: no more sends; every accepted message answered; then the outbox closes.
  r.stop(tether::stop_mode::drain);
  const bool refused = r.send(tether::parent_subshell, "too late").is_closed();
  r.join();
  const bool closed = r.replies().try_pop().is_closed();

  std::printf("values %d, errors %d, deleted %d, refused %d, closed %d\n", values, errors, deleted, refused, closed);
  return (ok && values == 2 && errors == 2 && deleted && refused && closed) ? 0 : 1;
}
