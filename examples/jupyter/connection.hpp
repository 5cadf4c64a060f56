// SPDX-License-Identifier: MIT
// examples/jupyter/connection.hpp - the connection file a Jupyter client writes, and the
// HMAC-SHA256 signer every message is checked with.
//
// The client starts the kernel with the path of a JSON file naming the transport, the address,
// five ports and the signing key. Every message either way carries a signature: HMAC-SHA256,
// keyed with that key, over the header, parent header, metadata and content frames, in hex.
// A kernel listening on tcp must check it before it parses anything else: whoever reaches the
// port could otherwise run code. An empty key means "unsigned" (the spec allows it); the
// kernel then accepts only an empty signature.
//
// Who may call what: connection_info is a plain value; a signer is immutable after
// construction and may be used from any thread (each call makes its own OpenSSL context).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace tether_jupyter {

struct connection_info {
  std::string transport = "tcp";
  std::string ip = "127.0.0.1";
  std::uint16_t shell_port = 0;
  std::uint16_t control_port = 0;
  std::uint16_t iopub_port = 0;
  std::uint16_t stdin_port = 0;
  std::uint16_t hb_port = 0;
  std::string signature_scheme = "hmac-sha256";
  std::string key;

  // "tcp://127.0.0.1:<port>"
  std::string endpoint(std::uint16_t port) const;
};

// Reads and checks a connection file; throws std::runtime_error naming the file and the field.
connection_info read_connection_file(const std::string& path);

class signer {
 public:
  explicit signer(std::string key) : key_(std::move(key)) {}

  // The hex signature of the concatenated parts ("" when the key is empty).
  std::string sign(std::span<const std::string_view> parts) const;

  // True when signature is the signature of parts. Compares in constant time.
  bool verify(std::string_view signature, std::span<const std::string_view> parts) const;

  bool enabled() const noexcept { return !key_.empty(); }

 private:
  std::string key_;
};

}  // namespace tether_jupyter
