// SPDX-License-Identifier: MIT
// examples/jupyter/wire.cpp - message framing and headers.
#include "wire.hpp"

#include <openssl/rand.h>

#include <array>
#include <cstdio>
#include <ctime>
#include <stdexcept>

namespace tether_jupyter {

std::string message::msg_type() const {
  const auto it = header.find("msg_type");
  return it != header.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const char* to_string(refusal r) noexcept {
  switch (r) {
    case refusal::none: return "none";
    case refusal::no_delimiter: return "malformed frames";
    case refusal::bad_signature: return "bad signature";
    case refusal::bad_json: return "malformed JSON";
    case refusal::no_header: return "incomplete header";
  }
  return "unknown";
}

parse_result parse(const std::vector<std::string>& frames, const signer& s) {
  parse_result out;
  std::size_t d = 0;
  while (d < frames.size() && frames[d] != delimiter) ++d;
  if (d == frames.size() || frames.size() - d < 6) {
    out.why = refusal::no_delimiter;
    out.detail = std::to_string(frames.size()) + " frame(s), " +
                 (d == frames.size() ? "no delimiter" : std::to_string(frames.size() - d - 1) + " after the delimiter");
    return out;
  }
  const std::array<std::string_view, 4> signed_parts{frames[d + 2], frames[d + 3], frames[d + 4], frames[d + 5]};
  if (!s.verify(frames[d + 1], signed_parts)) {
    out.why = refusal::bad_signature;
    out.detail = frames[d + 1].empty() ? "missing signature" : "signature does not match";
    return out;
  }
  message m;
  m.identities.assign(frames.begin(), frames.begin() + static_cast<std::ptrdiff_t>(d));
  const auto object = [](const std::string& text) -> std::optional<json> {
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    return j;
  };
  auto header = object(frames[d + 2]);
  if (!header) {
    out.why = refusal::bad_json;
    out.detail = "the header is not a JSON object";
    return out;
  }
  m.header = std::move(*header);
  if (!m.header.contains("msg_id") || !m.header["msg_id"].is_string() || m.msg_type().empty()) {
    out.why = refusal::no_header;
    out.detail = "the header lacks msg_id or msg_type";
    return out;
  }
  for (std::size_t i = d + 6; i < frames.size(); ++i) m.buffers.push_back(frames[i]);
  auto parent = object(frames[d + 3]);
  auto metadata = object(frames[d + 4]);
  auto content = object(frames[d + 5]);
  if (!parent || !metadata || !content) {
    // The header is good: the kernel can still answer with an error reply.
    out.why = refusal::bad_json;
    out.detail = !content ? "the content is not a JSON object" : "the parent header or metadata is not a JSON object";
    if (parent) m.parent_header = std::move(*parent);
    if (metadata) m.metadata = std::move(*metadata);
    out.msg = std::move(m);
    return out;
  }
  m.parent_header = std::move(*parent);
  m.metadata = std::move(*metadata);
  m.content = std::move(*content);
  out.msg = std::move(m);
  return out;
}

std::vector<std::string> serialize(const message& m, const signer& s) {
  std::vector<std::string> frames = m.identities;
  frames.reserve(frames.size() + 6 + m.buffers.size());
  frames.emplace_back(delimiter);
  std::array<std::string, 4> parts{m.header.dump(-1, ' ', false, json::error_handler_t::replace),
                                   m.parent_header.dump(-1, ' ', false, json::error_handler_t::replace),
                                   m.metadata.dump(-1, ' ', false, json::error_handler_t::replace),
                                   m.content.dump(-1, ' ', false, json::error_handler_t::replace)};
  const std::array<std::string_view, 4> views{parts[0], parts[1], parts[2], parts[3]};
  frames.push_back(s.sign(views));
  for (std::string& p : parts) frames.push_back(std::move(p));
  for (const std::string& b : m.buffers) frames.push_back(b);
  return frames;
}

std::string new_uuid() {
  std::array<unsigned char, 16> b{};
  if (RAND_bytes(b.data(), static_cast<int>(b.size())) != 1) throw std::runtime_error("OpenSSL: RAND_bytes failed");
  b[6] = static_cast<unsigned char>((b[6] & 0x0F) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3F) | 0x80);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(hex[b[i] >> 4]);
    out.push_back(hex[b[i] & 15]);
  }
  return out;
}

namespace {

std::string now_iso8601() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() % 1000000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(us));
  return buf;
}

}  // namespace

json make_header(std::string_view msg_type, std::string_view session) {
  return json{{"msg_id", new_uuid()},     {"session", std::string(session)}, {"username", "kernel"},
              {"date", now_iso8601()},     {"msg_type", std::string(msg_type)}, {"version", protocol_version}};
}

message make_reply(const message& parent, std::string_view msg_type, json content, std::string_view session) {
  message m;
  m.identities = parent.identities;
  m.header = make_header(msg_type, session);
  m.parent_header = parent.header;
  m.content = std::move(content);
  return m;
}

message make_iopub(const message& parent, std::string_view msg_type, json content, std::string_view session) {
  message m;
  m.identities = {"kernel." + std::string(msg_type)};  // the topic
  m.header = make_header(msg_type, session);
  m.parent_header = parent.header;
  m.content = std::move(content);
  return m;
}

}  // namespace tether_jupyter
