// SPDX-License-Identifier: MIT
// examples/jupyter/session.cpp - shell requests on a subshell's thread.
#include "session.hpp"

#include <libguile.h>

#include <fnmatch.h>

#include <algorithm>
#include <set>

#include "guile_runtime.hpp"

namespace tether_jupyter {

json kernel_info_content() {
  const std::string guile = std::to_string(SCM_MAJOR_VERSION) + "." + std::to_string(SCM_MINOR_VERSION) + "." +
                            std::to_string(SCM_MICRO_VERSION);
  return {{"status", "ok"},
          {"protocol_version", protocol_version},
          {"implementation", "tether-guile"},
          {"implementation_version", "0.1"},
          {"language_info",
           {{"name", "scheme"},
            {"version", guile},
            {"mimetype", "text/x-scheme"},
            {"file_extension", ".scm"},
            {"pygments_lexer", "scheme"},
            {"codemirror_mode", "scheme"}}},
          {"banner", "GNU Guile " + guile + " on tether: one thread per subshell (JEP 91)"},
          {"help_links", json::array()},
          {"supported_features", json::array({"kernel subshells"})}};
}

void shared_state::record_history(int line, const std::string& input, std::optional<std::string> output) {
  std::lock_guard lock(history_mutex_);
  history_.push_back({line, input, std::move(output)});
}

json shared_state::history(const json& request) {
  const std::string access = request.value("hist_access_type", std::string("tail"));
  const bool output = request.value("output", false);
  const auto n_of = [&](const char* key) -> std::size_t {
    const auto it = request.find(key);
    return it != request.end() && it->is_number_integer() && it->get<long long>() > 0
               ? static_cast<std::size_t>(it->get<long long>())
               : 0;
  };
  std::vector<history_entry> picked;
  {
    std::lock_guard lock(history_mutex_);
    if (access == "tail") {
      const std::size_t n = std::min(n_of("n"), history_.size());
      picked.assign(history_.end() - static_cast<std::ptrdiff_t>(n), history_.end());
    } else if (access == "range") {
      const long long start = request.value("start", 0LL), stop = request.value("stop", 0LL);
      for (const history_entry& e : history_)
        if (e.line >= start && (stop <= 0 || e.line < stop)) picked.push_back(e);
    } else if (access == "search") {
      const std::string pattern = request.value("pattern", std::string("*"));
      for (const history_entry& e : history_)
        if (fnmatch(pattern.c_str(), e.input.c_str(), 0) == 0) picked.push_back(e);
    }
  }
  if (access == "search") {
    if (request.value("unique", false)) {  // keep the latest of each input
      std::set<std::string> seen;
      std::vector<history_entry> unique;
      for (auto it = picked.rbegin(); it != picked.rend(); ++it)
        if (seen.insert(it->input).second) unique.push_back(*it);
      picked.assign(unique.rbegin(), unique.rend());
    }
    if (const std::size_t n = n_of("n"); n != 0 && picked.size() > n)
      picked.erase(picked.begin(), picked.end() - static_cast<std::ptrdiff_t>(n));
  }
  json out = json::array();
  for (const history_entry& e : picked) {
    if (output)
      out.push_back(json::array({1, e.line, json::array({e.input, e.output ? json(*e.output) : json(nullptr)})}));
    else
      out.push_back(json::array({1, e.line, e.input}));
  }
  return out;
}

void shared_state::interrupt(void* guile_thread, std::uint64_t cell) {
  (void)interrupter_.post([guile_thread, cell] { tether_jupyter::interrupt(guile_target{guile_thread}, cell); });
}

namespace {

json error_content(const std::string& ename, const std::string& evalue) {
  return {{"status", "error"}, {"ename", ename}, {"evalue", evalue}, {"traceback", json::array({ename + ": " + evalue})}};
}

std::string reply_type(const std::string& request_type) {
  const std::string suffix = "_request";
  if (request_type.size() > suffix.size() &&
      request_type.compare(request_type.size() - suffix.size(), suffix.size(), suffix) == 0)
    return request_type.substr(0, request_type.size() - suffix.size()) + "_reply";
  return request_type + "_reply";
}

// A field of the request's content: the value, or a description of what is missing.
template <class T>
std::optional<T> field(const json& content, const char* name) {
  const auto it = content.find(name);
  if (it == content.end()) return std::nullopt;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

}  // namespace

message session::handle(shell_request&& r, const std::function<std::stop_token()>& stop_of) {
  const std::string type = r.msg.msg_type();
  shared_.status(r.msg, "busy");
  const auto reply = [&](json content) { return make_reply(r.msg, reply_type(type), std::move(content), shared_.session); };
  const auto missing = [&](const char* what) {
    return reply(error_content("BadRequest", std::string("the ") + type + " has no valid '" + what + "' field"));
  };

  if (r.received < abort_before_) {  // stop_on_error: this subshell aborts what was queued
    json c = {{"status", "aborted"}};
    if (type == "execute_request") c["execution_count"] = shared_.execution_count();
    return reply(std::move(c));
  }
  if (type == "execute_request") return execute(r, stop_of);
  if (type == "kernel_info_request") return reply(kernel_info_content());
  if (type == "is_complete_request") {
    const auto code = field<std::string>(r.msg.content, "code");
    if (!code) return missing("code");
    const std::string status = completeness(*code);
    json c = {{"status", status}};
    if (status == "incomplete") c["indent"] = "  ";
    return reply(std::move(c));
  }
  if (type == "complete_request") {
    const auto code = field<std::string>(r.msg.content, "code");
    const auto pos = field<std::size_t>(r.msg.content, "cursor_pos");
    if (!code || !pos) return missing(!code ? "code" : "cursor_pos");
    const completion c = complete(*code, *pos);
    return reply({{"status", "ok"},
                  {"matches", c.matches},
                  {"cursor_start", c.cursor_start},
                  {"cursor_end", c.cursor_end},
                  {"metadata", json::object()}});
  }
  if (type == "inspect_request") {
    const auto code = field<std::string>(r.msg.content, "code");
    const auto pos = field<std::size_t>(r.msg.content, "cursor_pos");
    if (!code || !pos) return missing(!code ? "code" : "cursor_pos");
    const std::optional<std::string> text = inspect(*code, *pos);
    json data = json::object();
    if (text) data["text/plain"] = *text;
    return reply({{"status", "ok"}, {"found", text.has_value()}, {"data", data}, {"metadata", json::object()}});
  }
  if (type == "history_request") return reply({{"status", "ok"}, {"history", shared_.history(r.msg.content)}});
  if (type == "comm_info_request") return reply({{"status", "ok"}, {"comms", json::object()}});
  if (type == "comm_open") {  // no comm targets: close it again, as the spec asks
    if (const auto id = field<std::string>(r.msg.content, "comm_id"))
      shared_.publish(r.msg, "comm_close", {{"comm_id", *id}, {"data", json::object()}});
    return reply(error_content("CommError", "this kernel has no comm targets"));
  }
  return reply(error_content("UnknownMessageType", "'" + type + "' is not a request this kernel knows"));
}

message session::execute(shell_request& r, const std::function<std::stop_token()>& stop_of) {
  const json& content = r.msg.content;
  const auto code = field<std::string>(content, "code");
  const auto reply = [&](json c) { return make_reply(r.msg, "execute_reply", std::move(c), shared_.session); };
  if (!code) {
    json c = error_content("BadRequest", "the execute_request has no valid 'code' field");
    c["execution_count"] = shared_.execution_count();
    return reply(std::move(c));
  }
  if (shared_.shutting_down.load(std::memory_order_relaxed)) {  // relaxed: a hint; interrupts do the rest
    json c = error_content("KernelShuttingDown", "the kernel is shutting down; the cell was not run");
    c["execution_count"] = shared_.execution_count();
    return reply(std::move(c));
  }
  const bool silent = content.value("silent", false);
  const bool store_history = !silent && content.value("store_history", true);
  const bool stop_on_error = content.value("stop_on_error", true);
  const int count = store_history ? shared_.next_execution_count() : shared_.execution_count();
  if (!silent) shared_.publish(r.msg, "execute_input", {{"code", *code}, {"execution_count", count}});

  json payload = json::array();
  cell_io io;
  io.stream = [&](std::string_view name, std::string text) {
    if (!silent) shared_.publish(r.msg, "stream", {{"name", std::string(name)}, {"text", std::move(text)}});
  };
  io.display = [&](std::string mime, std::string text) {
    json data = {{mime, text}};
    if (mime != "text/plain") data["text/plain"] = "<" + mime + ">";
    shared_.publish(r.msg, "display_data", {{"data", std::move(data)}, {"metadata", json::object()}, {"transient", json::object()}});
  };
  io.clear_output = [&](bool wait) { shared_.publish(r.msg, "clear_output", {{"wait", wait}}); };
  io.page = [&](std::string text) {
    payload.push_back({{"source", "page"}, {"data", {{"text/plain", std::move(text)}}}, {"start", 0}});
  };
  const std::uint64_t cell = next_cell_id();
  void* const self = this_guile_thread().thread;
  // The callback runs on the thread that serves the interrupt (the router's): it only posts.
  std::stop_callback on_interrupt(stop_of(), [this, self, cell] { shared_.interrupt(self, cell); });
  cell_outcome out = run_cell(*code, cell, io);

  if (store_history) shared_.record_history(count, *code, out.ok ? out.result : std::nullopt);
  if (out.ok) {
    if (out.result && !silent)
      shared_.publish(r.msg, "execute_result",
                      {{"execution_count", count}, {"data", {{"text/plain", *out.result}}}, {"metadata", json::object()}});
    return reply({{"status", "ok"}, {"execution_count", count}, {"user_expressions", json::object()}, {"payload", std::move(payload)}});
  }
  if (!silent)
    shared_.publish(r.msg, "error", {{"ename", out.ename}, {"evalue", out.evalue}, {"traceback", out.traceback}});
  if (stop_on_error) abort_before_ = steady_clock::now();
  return reply({{"status", "error"},
                {"execution_count", count},
                {"ename", out.ename},
                {"evalue", out.evalue},
                {"traceback", out.traceback}});
}

}  // namespace tether_jupyter
