// SPDX-License-Identifier: MIT
// examples/jupyter/kernel.cpp - sockets, routing and control of the tether-guile kernel.
#include "kernel.hpp"

#include <tether/executor.hpp>
#include <tether/fd_source.hpp>
#include <tether/router.hpp>
#include <tether/select.hpp>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "guile_runtime.hpp"
#include "session.hpp"
#include "wire.hpp"

namespace tether_jupyter {

namespace {

using namespace std::chrono_literals;

void log(const std::string& what) { std::fprintf(stderr, "tether-guile-kernel: %s\n", what.c_str()); }

using router_type = tether::router<shell_request, message>;
using routed = router_type::reply_type;

// JEP 91 names subshells with strings; tether numbers them. subshell_id::to_string()
// ("subshell-<n>") is the name, from_string() the way back; "parent" is not a child's name.
std::string subshell_name(tether::subshell_id id) { return id.to_string(); }
std::optional<tether::subshell_id> parse_subshell(const std::string& s) {
  const std::optional<tether::subshell_id> id = tether::subshell_id::from_string(s);
  if (!id || id->is_parent()) return std::nullopt;
  return id;
}

json error_content(const std::string& ename, const std::string& evalue) {
  return {{"status", "error"}, {"ename", ename}, {"evalue", evalue}, {"traceback", json::array({ename + ": " + evalue})}};
}

std::string reply_type_of(const std::string& request_type) {
  const std::string suffix = "_request";
  if (request_type.size() > suffix.size() &&
      request_type.compare(request_type.size() - suffix.size(), suffix.size(), suffix) == 0)
    return request_type.substr(0, request_type.size() - suffix.size()) + "_reply";
  return request_type + "_reply";
}

// The subshell a request's header names: parent when absent or null; nullopt when it names
// none this kernel could have made.
std::optional<tether::subshell_id> target_of(const json& header) {
  const auto it = header.find("subshell_id");
  if (it == header.end() || it->is_null()) return tether::parent_subshell;
  if (!it->is_string()) return std::nullopt;
  return parse_subshell(it->get<std::string>());
}

}  // namespace

struct kernel::impl {
  explicit impl(const connection_info& c)
      : info(c),
        sign(c.key),
        shell(ctx, zmq::socket_type::router),
        control(ctx, zmq::socket_type::router),
        stdin_socket(ctx, zmq::socket_type::router),
        iopub(ctx, zmq::socket_type::pub),
        hb(ctx, zmq::socket_type::router) {
    for (zmq::socket_t* s : {&shell, &control, &stdin_socket, &iopub, &hb}) s->set(zmq::sockopt::linger, 1000);
    shell.bind(info.endpoint(info.shell_port));
    control.bind(info.endpoint(info.control_port));
    stdin_socket.bind(info.endpoint(info.stdin_port));
    iopub.bind(info.endpoint(info.iopub_port));
    hb.bind(info.endpoint(info.hb_port));
    // The heartbeat socket belongs to its own thread from here on: it echoes every message
    // back to its sender and does nothing else, so it answers while every subshell is busy.
    heartbeat = std::thread([this] {
      try {
        zmq::proxy(hb, hb);
      } catch (const zmq::error_t&) {  // ETERM: the context is shutting down
      }
      hb.close();
    });
    (void)parent_ex.call([] {});  // the parent's thread is in Guile mode before the first request
    router = std::make_unique<router_type>(
        parent_ex,
        [this](tether::subshell_id id) {
          if (!id.is_parent()) enter_guile_mode();  // on the child's own thread, once
          return [this, s = session(shared)](shell_request&& r, auto& reply) mutable {
            const message request_header = header_only(r.msg);
            message m = s.handle(std::move(r), [&reply] { return reply.stop_token(); });
            reply.send(std::move(m));
            shared.status(request_header, "idle");
          };
        },
        tether::router_options{.name = "shell-router"});
  }

  // ---- sending (main thread) -----------------------------------------------------------------

  void send(zmq::socket_t& s, const message& m) {
    const std::vector<std::string> frames = serialize(m, sign);
    std::vector<zmq::const_buffer> parts;
    parts.reserve(frames.size());
    for (const std::string& f : frames) parts.emplace_back(f.data(), f.size());
    try {
      if (!zmq::send_multipart(s, parts, zmq::send_flags::dontwait)) log("dropped an outgoing " + m.msg_type() + " (socket full)");
    } catch (const zmq::error_t& e) {
      log("could not send " + m.msg_type() + ": " + e.what());
    }
    recheck(s);
  }

  // ZMQ_FD is edge-triggered: a send (or receive) may take in the socket's pending commands,
  // and with them the edge that announced an incoming message. After each, read ZMQ_EVENTS
  // and, when a message waits, have the poller serve the socket at its next turn.
  void recheck(zmq::socket_t& s) {
    for (watched_socket& w : watched)
      if (w.socket == &s && w.source != nullptr && (s.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0) w.source->notify();
  }

  // The poller's handler for a socket's descriptor: receive a batch; if more may wait, come back.
  template <class Handle>
  void serve(zmq::socket_t& s, tether::fd_source& src, Handle&& handle) {
    if (drain(s, handle) || (s.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0) src.notify();
  }
  void publish(const message& m) { send(iopub, m); }
  void status(const message& parent, const char* state) { publish(make_iopub(parent, "status", {{"execution_state", state}}, shared.session)); }

  // An error reply to request on socket s, with busy / idle around it.
  void answer_error(zmq::socket_t& s, const message& request, const std::string& ename, const std::string& evalue) {
    status(request, "busy");
    json c = error_content(ename, evalue);
    if (request.msg_type() == "execute_request") c["execution_count"] = shared.execution_count();
    send(s, make_reply(request, reply_type_of(request.msg_type()), std::move(c), shared.session));
    status(request, "idle");
  }

  static message header_only(const message& m) {
    message h;
    h.identities = m.identities;
    h.header = m.header;
    return h;
  }

  // ---- receiving (main thread) ---------------------------------------------------------------

  // Receives what the socket holds, up to a batch; true if it may hold more.
  template <class Handle>
  bool drain(zmq::socket_t& s, Handle&& handle) {
    for (int n = 0; n < 64; ++n) {
      std::vector<zmq::message_t> parts;
      std::optional<std::size_t> got;
      try {
        got = zmq::recv_multipart(s, std::back_inserter(parts), zmq::recv_flags::dontwait);
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        throw;
      }
      if (!got) return false;
      std::vector<std::string> frames;
      frames.reserve(parts.size());
      for (zmq::message_t& p : parts) frames.emplace_back(p.to_string());
      handle(std::move(frames));
    }
    return true;
  }

  // Parses and checks; nullopt (logged) when the message must be dropped.
  std::optional<message> accept(const char* channel, std::vector<std::string>&& frames, zmq::socket_t& s) {
    parse_result p = parse(frames, sign);
    if (p.why == refusal::none) return std::move(p.msg);
    if (!p.msg) {
      log(std::string("dropped a message on ") + channel + ": " + to_string(p.why) + " (" + p.detail + ")");
      return std::nullopt;
    }
    log(std::string("refused a ") + p.msg->msg_type() + " on " + channel + ": " + p.detail);
    answer_error(s, *p.msg, "BadRequest", p.detail);
    return std::nullopt;
  }

  void on_shell(std::vector<std::string>&& frames) {
    std::optional<message> m = accept("shell", std::move(frames), shell);
    if (!m) return;
    if (stopping) {
      answer_error(shell, *m, "KernelShuttingDown", "the kernel is shutting down");
      return;
    }
    if (m->msg_type() == "shutdown_request") {  // older clients send it on shell
      on_control_request(shell, std::move(*m));
      return;
    }
    const std::optional<tether::subshell_id> target = target_of(m->header);
    if (!target) {
      answer_error(shell, *m, "SubshellNotFound", "no subshell " + m->header["subshell_id"].dump());
      return;
    }
    const std::uint64_t tag = next_tag++;
    shell_pending.emplace(tag, header_only(*m));
    if (!router->send(*target, shell_request{std::move(*m), steady_clock::now()}, tag)) {
      shell_pending.erase(tag);  // stopped: unreachable while !stopping
    }
  }

  void on_control(std::vector<std::string>&& frames) {
    std::optional<message> m = accept("control", std::move(frames), control);
    if (m) on_control_request(control, std::move(*m));
  }

  void on_control_request(zmq::socket_t& s, message&& m) {
    const std::string type = m.msg_type();
    const auto reply = [&](json c) {
      send(s, make_reply(m, reply_type_of(type), std::move(c), shared.session));
      status(m, "idle");
    };
    status(m, "busy");
    if (type == "kernel_info_request") return reply(kernel_info_content());
    if (type == "shutdown_request") {
      reply({{"status", "ok"}, {"restart", m.content.value("restart", false)}});
      begin_shutdown();
      return;
    }
    if (stopping) return reply(error_content("KernelShuttingDown", "the kernel is shutting down"));
    if (type == "interrupt_request") {
      json where = m.header.contains("subshell_id") ? m.header["subshell_id"] : m.content.value("subshell_id", json());
      const std::optional<tether::subshell_id> id = target_of(json{{"subshell_id", where}});
      if (!id) return reply(error_content("SubshellNotFound", "no subshell " + where.dump()));
      const std::uint64_t tag = next_tag++;
      control_pending.emplace(tag, std::make_pair(&s, std::move(m)));
      (void)router->send_control(tether::control_request::interrupt(*id, tag));  // answered in on_control_reply()
      return;
    }
    if (type == "create_subshell_request" || type == "delete_subshell_request" || type == "list_subshell_request") {
      const std::uint64_t tag = next_tag++;
      tether::control_request q = tether::control_request::list(tag);
      if (type == "create_subshell_request") {
        q = tether::control_request::create(tag);
      } else if (type == "delete_subshell_request") {
        const json id = m.content.value("subshell_id", json());
        const std::optional<tether::subshell_id> sid = id.is_string() ? parse_subshell(id.get<std::string>()) : std::nullopt;
        if (!sid) return reply(error_content("SubshellNotFound", "no subshell " + id.dump()));
        // A running cell would keep the subshell alive: interrupt it first (the control channel
        // keeps the order); queued requests are answered subshell_deleted.
        (void)router->send_control(tether::control_request::interrupt(*sid, 0));
        q = tether::control_request::remove(*sid, tether::stop_mode::cancel, tag);
      }
      control_pending.emplace(tag, std::make_pair(&s, std::move(m)));
      (void)router->send_control(std::move(q));  // answered in on_control_reply()
      return;
    }
    reply(error_content("UnknownMessageType", "'" + type + "' is not a request this kernel knows"));
  }

  void on_stdin(std::vector<std::string>&&) {}  // input_request is never sent (allow_stdin unsupported)

  // ---- what the router and the subshells send back (main thread) -------------------------------

  void on_reply(routed&& r) {
    const auto it = shell_pending.find(r.tag());
    if (r) {
      send(shell, *r);
    } else if (it != shell_pending.end()) {
      const tether::routing_errc code = r.error().code();
      const bool no_such = code == tether::routing_errc::unknown_subshell || code == tether::routing_errc::subshell_deleted;
      answer_error(shell, it->second, no_such ? "SubshellNotFound" : "KernelError", r.error().message());
    } else {
      log("a reply for an unknown request: " + r.error().message());
    }
    if (it != shell_pending.end()) shell_pending.erase(it);
  }

  void on_control_reply(tether::control_reply&& r) {
    const auto it = control_pending.find(r.tag);
    if (it == control_pending.end()) return;
    auto [s, request] = std::move(it->second);
    control_pending.erase(it);
    const std::string type = request.msg_type();
    json c;
    if (!r.ok()) {
      const tether::routing_errc code = r.error->code();
      const bool no_such = code == tether::routing_errc::unknown_subshell || code == tether::routing_errc::subshell_deleted;
      c = error_content(no_such ? "SubshellNotFound" : "KernelError", r.error->message());
    } else if (r.op == tether::control_op::create_subshell) {
      live.insert(r.subshell.value());
      c = {{"status", "ok"}, {"subshell_id", subshell_name(r.subshell)}};
    } else if (r.op == tether::control_op::delete_subshell) {
      live.erase(r.subshell.value());
      c = {{"status", "ok"}};
    } else if (r.op == tether::control_op::interrupt) {
      c = {{"status", "ok"}};
    } else {
      json ids = json::array();
      for (const tether::subshell_stats& st : r.subshells) ids.push_back(subshell_name(st.id));
      c = {{"status", "ok"}, {"subshell_id", ids}};
    }
    send(*s, make_reply(request, reply_type_of(type), std::move(c), shared.session));
    status(request, "idle");
  }

  // ---- shutdown --------------------------------------------------------------------------------

  // Cells not yet started are refused, running ones interrupted (the parent and every live
  // child), queued requests answered; then the router finishes and the loop ends.
  void begin_shutdown() {
    if (stopping) return;
    stopping = true;
    shared.shutting_down.store(true, std::memory_order_relaxed);  // relaxed: the interrupts below do the rest
    (void)router->interrupt(tether::parent_subshell);
    for (const std::uint64_t id : live) (void)router->interrupt(tether::subshell_id(id));
    router->stop(tether::stop_mode::cancel);
  }

  // ---- the loop ----------------------------------------------------------------------------------

  int run();

  connection_info info;
  signer sign;
  zmq::context_t ctx;
  zmq::socket_t shell, control, stdin_socket, iopub, hb;
  std::thread heartbeat;

  tether::executor interrupter{tether::executor_options{.name = "guile-interrupt", .on_start = [] { enter_guile_mode(); }}};
  shared_state shared{new_uuid(), interrupter};
  tether::executor parent_ex{tether::executor_options{.name = "parent", .on_start = [] { enter_guile_mode(); }}};

  std::unique_ptr<router_type> router;  // last: its handlers use everything above

  // Main thread only.
  std::unordered_map<std::uint64_t, message> shell_pending;  // tag -> the request's header
  std::unordered_map<std::uint64_t, std::pair<zmq::socket_t*, message>> control_pending;
  std::set<std::uint64_t> live;  // the children created and not deleted
  std::uint64_t next_tag = 1;
  bool stopping = false;

  // The sockets the main thread waits on, with their descriptors as poller sources.
  struct watched_socket {
    zmq::socket_t* socket;
    tether::fd_source* source;
  };
  std::vector<watched_socket> watched;
};

// The main thread's one loop: a tether::poller over the three sockets' descriptors (ZMQ_FD),
// the router's replies and control replies, and the subshells' iopub queue. It parks - zero
// CPU - until one of them has work; no other thread touches these sockets.
int kernel::impl::run() {
  tether::fd_source shell_fd(shell.get(zmq::sockopt::fd));
  tether::fd_source control_fd(control.get(zmq::sockopt::fd));
  tether::fd_source stdin_fd(stdin_socket.get(zmq::sockopt::fd));
  watched = {{&shell, &shell_fd}, {&control, &control_fd}, {&stdin_socket, &stdin_fd}};
  bool replies_open = true, control_open = true;
  tether::poller p;
  p.on(control_fd, [&](tether::fd_events) { serve(control, control_fd, [this](auto&& f) { on_control(std::move(f)); }); })
      .on(shell_fd, [&](tether::fd_events) { serve(shell, shell_fd, [this](auto&& f) { on_shell(std::move(f)); }); })
      .on(stdin_fd, [&](tether::fd_events) { serve(stdin_socket, stdin_fd, [this](auto&& f) { on_stdin(std::move(f)); }); })
      .on(router->replies(), [this](routed&& r) { on_reply(std::move(r)); }, [&] { replies_open = false; })
      .on(router->control_replies(), [this](tether::control_reply&& r) { on_control_reply(std::move(r)); },
          [&] { control_open = false; })
      .on(shared.iopub, [this](message&& m) { publish(m); });
  // Messages may have arrived before the first wait (the descriptors' edges are gone).
  for (watched_socket& w : watched) w.source->notify();
  while (replies_open || control_open) (void)p.run_one();
  watched.clear();
  return 0;
}

kernel::kernel(const connection_info& info) : impl_(std::make_unique<impl>(info)) {}

kernel::~kernel() = default;

int kernel::run() {
  const int status = impl_->run();
  // Every request is answered; stop what is left, in order, with a bound on the wait.
  std::thread watchdog([] {
    std::this_thread::sleep_for(10s);
    log("shutdown took longer than 10 s; exiting without waiting further");
    std::_Exit(0);
  });
  watchdog.detach();
  impl_->router->join();
  while (auto m = impl_->shared.iopub.try_pop()) impl_->publish(*m);
  impl_->router.reset();
  impl_->parent_ex.stop();
  impl_->parent_ex.join();
  impl_->interrupter.stop();
  impl_->interrupter.join();
  impl_->ctx.shutdown();
  impl_->heartbeat.join();
  return status;
}

}  // namespace tether_jupyter
