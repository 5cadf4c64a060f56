// SPDX-License-Identifier: MIT
// examples/jupyter/connection.cpp - connection file parsing and HMAC-SHA256 signing.
#include "connection.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <nlohmann/json.hpp>

#include <array>
#include <fstream>
#include <memory>
#include <stdexcept>

namespace tether_jupyter {

std::string connection_info::endpoint(std::uint16_t port) const {
  return transport + "://" + ip + ":" + std::to_string(port);
}

connection_info read_connection_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open the connection file '" + path + "'");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("the connection file '" + path + "' is not JSON: " + e.what());
  }
  connection_info c;
  const auto port = [&](const char* field) -> std::uint16_t {
    if (!j.contains(field) || !j[field].is_number_integer())
      throw std::runtime_error("the connection file '" + path + "' has no integer '" + field + "'");
    const auto v = j[field].get<long long>();
    if (v <= 0 || v > 65535) throw std::runtime_error("the connection file '" + path + "': bad port in '" + field + "'");
    return static_cast<std::uint16_t>(v);
  };
  c.transport = j.value("transport", std::string("tcp"));
  c.ip = j.value("ip", std::string("127.0.0.1"));
  c.shell_port = port("shell_port");
  c.control_port = port("control_port");
  c.iopub_port = port("iopub_port");
  c.stdin_port = port("stdin_port");
  c.hb_port = port("hb_port");
  c.signature_scheme = j.value("signature_scheme", std::string("hmac-sha256"));
  c.key = j.value("key", std::string());
  if (c.transport != "tcp")
    throw std::runtime_error("the connection file '" + path + "' asks for transport '" + c.transport +
                             "'; this kernel speaks tcp only");
  if (!c.key.empty() && c.signature_scheme != "hmac-sha256")
    throw std::runtime_error("the connection file '" + path + "' asks for signature scheme '" + c.signature_scheme +
                             "'; this kernel supports hmac-sha256 only");
  return c;
}

namespace {

// The raw 32-byte HMAC-SHA256 of the concatenated parts (OpenSSL 3's EVP_MAC interface).
std::array<unsigned char, 32> hmac(const std::string& key, std::span<const std::string_view> parts) {
  std::unique_ptr<EVP_MAC, decltype(&EVP_MAC_free)> mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr), &EVP_MAC_free);
  if (!mac) throw std::runtime_error("OpenSSL: no HMAC implementation");
  std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx(EVP_MAC_CTX_new(mac.get()), &EVP_MAC_CTX_free);
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
  if (!ctx || EVP_MAC_init(ctx.get(), reinterpret_cast<const unsigned char*>(key.data()), key.size(), params) != 1)
    throw std::runtime_error("OpenSSL: cannot set up HMAC-SHA256");
  for (std::string_view p : parts)
    if (EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(p.data()), p.size()) != 1)
      throw std::runtime_error("OpenSSL: HMAC update failed");
  std::array<unsigned char, 32> out{};
  std::size_t len = 0;
  if (EVP_MAC_final(ctx.get(), out.data(), &len, out.size()) != 1 || len != out.size())
    throw std::runtime_error("OpenSSL: HMAC final failed");
  return out;
}

}  // namespace

std::string signer::sign(std::span<const std::string_view> parts) const {
  if (key_.empty()) return {};
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(64);
  for (unsigned char b : hmac(key_, parts)) {
    out.push_back(hex[b >> 4]);
    out.push_back(hex[b & 15]);
  }
  return out;
}

bool signer::verify(std::string_view signature, std::span<const std::string_view> parts) const {
  if (key_.empty()) return signature.empty();
  if (signature.size() != 64) return false;  // the length is no secret
  // Decode without branching on the digits' values, then compare in constant time.
  std::array<unsigned char, 32> given{};
  unsigned bad = 0;
  for (std::size_t i = 0; i < 64; ++i) {
    const unsigned c = static_cast<unsigned char>(signature[i]);
    const unsigned lower = c | 0x20u;
    const bool digit = c >= '0' && c <= '9';
    const bool letter = lower >= 'a' && lower <= 'f';
    bad |= static_cast<unsigned>(!(digit || letter));
    const unsigned v = digit ? c - '0' : lower - 'a' + 10;
    given[i / 2] = static_cast<unsigned char>(given[i / 2] | ((v & 15u) << (i % 2 == 0 ? 4 : 0)));
  }
  const std::array<unsigned char, 32> expected = hmac(key_, parts);
  return (CRYPTO_memcmp(given.data(), expected.data(), expected.size()) == 0) && bad == 0;
}

}  // namespace tether_jupyter
