// SPDX-License-Identifier: MIT
// examples/jupyter/wire.hpp - Jupyter messages on the wire: multipart framing, signature
// check before parsing, and new headers.
//
// A message on a ROUTER socket is: the routing identities, the delimiter "<IDS|MSG>", the
// HMAC signature, then four JSON frames (header, parent_header, metadata, content) and any
// binary buffers. parse() checks the signature over the four raw frames before it parses a
// byte of JSON; what fails is refused with a reason, never partly parsed.
//
// Who may call what: plain values and pure functions; any thread.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "connection.hpp"

namespace tether_jupyter {

using json = nlohmann::json;

inline constexpr std::string_view delimiter = "<IDS|MSG>";
inline constexpr const char* protocol_version = "5.4";

struct message {
  std::vector<std::string> identities;  // routing prefix (ROUTER sockets); the topic on iopub
  json header = json::object();
  json parent_header = json::object();
  json metadata = json::object();
  json content = json::object();
  std::vector<std::string> buffers;

  std::string msg_type() const;  // header.msg_type, or "" when absent
};

enum class refusal {
  none,
  no_delimiter,     // no "<IDS|MSG>" frame, or too few frames after it
  bad_signature,    // wrong or missing signature: never parsed further
  bad_json,         // a frame that is not a JSON object
  no_header,        // the header lacks msg_type / msg_id
};
const char* to_string(refusal r) noexcept;

struct parse_result {
  std::optional<message> msg;  // set when the whole message is good, or when only the content is bad
  refusal why = refusal::none;
  std::string detail;  // what was wrong, for the log
};

// Parses frames received on a ROUTER socket, checking the signature first.
parse_result parse(const std::vector<std::string>& frames, const signer& s);

// The frames to send: identities, delimiter, signature, the four JSON frames, buffers.
std::vector<std::string> serialize(const message& m, const signer& s);

// A new header for a message this kernel sends.
json make_header(std::string_view msg_type, std::string_view session);

// A new message of msg_type answering (or published on behalf of) parent: its parent_header is
// parent's header and, for a reply, its identities are parent's.
message make_reply(const message& parent, std::string_view msg_type, json content, std::string_view session);
message make_iopub(const message& parent, std::string_view msg_type, json content, std::string_view session);

// A random version-4 UUID, as text.
std::string new_uuid();

}  // namespace tether_jupyter
