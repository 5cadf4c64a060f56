// bench/peers/zmq.hpp - a ZeroMQ inproc PAIR connection used as a one-way queue (packages
// libzmq3-dev + cppzmq-dev), built when CMake found them (TETHER_BENCH_HAVE_ZMQ).
//
// One adapter is one connected pair of PAIR sockets on `inproc://`: producers send on one,
// the consumer receives on the other. A PAIR socket serves one thread, so the adapter has a
// single producer: it takes part in pingpong and wakeup, never in mpsc. High-water marks
// are off (unbounded); each item is one message of sizeof(T) bytes.
#pragma once

#if defined(TETHER_BENCH_HAVE_ZMQ)

#include <atomic>
#include <cstddef>
#include <string>
#include <type_traits>

#include <zmq.hpp>

namespace tether_bench::peers {

template <class T>
class zmq_pair {
  static_assert(std::is_trivially_copyable_v<T>, "zmq_pair sends T as raw bytes");

 public:
  using value_type = T;
  static constexpr const char* name = "zmq_pair";
  static constexpr bool bounded = false;

  explicit zmq_pair(std::size_t /*capacity: high-water marks off*/)
      : rx_(context(), zmq::socket_type::pair), tx_(context(), zmq::socket_type::pair) {
    static std::atomic<unsigned> next_id{0};
    const std::string endpoint = "inproc://tether-bench-" + std::to_string(next_id.fetch_add(1));
    for (zmq::socket_t* s : {&rx_, &tx_}) {
      s->set(zmq::sockopt::sndhwm, 0);
      s->set(zmq::sockopt::rcvhwm, 0);
      s->set(zmq::sockopt::linger, 0);
    }
    rx_.bind(endpoint);
    tx_.connect(endpoint);
  }

  bool try_push(T&& v) { return tx_.send(zmq::const_buffer(&v, sizeof(T)), zmq::send_flags::dontwait).has_value(); }
  bool try_pop(T& out) { return receive(out, zmq::recv_flags::dontwait); }
  bool pop(T& out) { return receive(out, zmq::recv_flags::none); }

 private:
  static zmq::context_t& context() {
    static zmq::context_t ctx;
    return ctx;
  }

  bool receive(T& out, zmq::recv_flags flags) {
    const auto r = rx_.recv(zmq::mutable_buffer(&out, sizeof(T)), flags);
    return r.has_value() && r->size == sizeof(T);
  }

  zmq::socket_t rx_;  // consumer thread only
  zmq::socket_t tx_;  // the one producer thread only
};

}  // namespace tether_bench::peers

#endif  // TETHER_BENCH_HAVE_ZMQ
