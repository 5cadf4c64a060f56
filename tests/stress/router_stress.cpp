// Stress tests for tether::router: 16 subshells fed by 4 senders (exactly once, FIFO per
// subshell and sender, sums); subshells created and deleted (both policies) while senders
// keep sending to them; a seeded random sequence of sends, creates, deletes, lists and stats
// from several threads, with the control channel and the direct calls, ended by a stop
// that races the senders. Counts prove that every accepted message got exactly one reply.
//
// Workers record what they did in their own vectors; the test thread asserts after joining.
#include <tether/router.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tether::control_request;
using tether::parent_subshell;
using tether::routing_errc;
using tether::stop_mode;
using tether::subshell_id;

using u64 = std::uint64_t;
using int_router = tether::router<u64, u64>;

// A message's tag and payload: the sending worker and its sequence number.
constexpr u64 tag_of(u64 worker, u64 seq) { return (worker << 40) | seq; }
constexpr u64 worker_of(u64 tag) { return tag >> 40; }
constexpr u64 seq_of(u64 tag) { return tag & ((u64{1} << 40) - 1); }

auto answer_factory() {
  return [](subshell_id) { return [](u64&& v) { return 2 * v + 1; }; };
}

// Collects every reply until the outbox closes (one thread: the outbox's one consumer).
template <class R>
class collector {
 public:
  explicit collector(R& r)
      : thread_([this, &r] {
          for (;;) {
            auto x = r.replies().pop();
            if (!x) return;
            replies_.push_back(std::move(*x));
          }
        }) {}
  std::vector<typename R::reply_type>& join() {
    thread_.join();
    return replies_;
  }

 private:
  std::vector<typename R::reply_type> replies_;
  std::thread thread_;
};

// Checks the replies against what each worker recorded as accepted: exactly one reply per
// accepted tag and none for a refused one; value replies correct and, per (subshell,
// worker), in sending order. Returns the counts per routing_errc (0: value replies).
template <class Reply>
std::map<int, u64> check_exactly_once(std::vector<Reply>& replies, const std::vector<std::vector<char>>& accepted) {
  std::vector<std::vector<int>> seen(accepted.size());
  for (std::size_t w = 0; w < accepted.size(); ++w) seen[w].assign(accepted[w].size(), 0);
  std::map<std::pair<u64, u64>, u64> last_value_seq;  // (subshell, worker) -> last seq answered by a value
  std::map<int, u64> codes;
  u64 bad_value = 0, out_of_order = 0, unknown_tag = 0;
  for (auto& rep : replies) {
    const u64 w = worker_of(rep.tag()), seq = seq_of(rep.tag());
    if (w >= seen.size() || seq >= seen[w].size()) {
      ++unknown_tag;
      continue;
    }
    ++seen[w][seq];
    if (rep.has_value()) {
      ++codes[0];
      if (*rep != 2 * rep.tag() + 1) ++bad_value;
      u64& last = last_value_seq[{rep.subshell().value(), w}];
      if (seq <= last && last != 0) ++out_of_order;
      last = seq;
    } else {
      ++codes[static_cast<int>(rep.error().code())];
      const routing_errc c = rep.error().code();
      // Never run: the payload comes back.
      if (c != routing_errc::handler_threw && c != routing_errc::no_reply &&
          (rep.returned_payload() == nullptr || *rep.returned_payload() != rep.tag()))
        ++bad_value;
    }
  }
  u64 missing = 0, duplicated = 0, unexpected = 0;
  for (std::size_t w = 0; w < accepted.size(); ++w)
    for (std::size_t s = 0; s < accepted[w].size(); ++s) {
      if (accepted[w][s] && seen[w][s] == 0) ++missing;
      if (seen[w][s] > 1) ++duplicated;
      if (!accepted[w][s] && seen[w][s] != 0) ++unexpected;
    }
  CHECK(unknown_tag == 0);
  CHECK(missing == 0);
  CHECK(duplicated == 0);
  CHECK(unexpected == 0);
  CHECK(bad_value == 0);
  CHECK(out_of_order == 0);
  return codes;
}

}  // namespace

TEST_CASE("router stress: 16 subshells x 4 senders, exactly once, FIFO per subshell and sender", "[router][stress]") {
  constexpr u64 senders = 4;
  const u64 per_sender = tether_test::scaled(200'000) / senders;
  tether::executor parent{{.name = "parent"}};
  int_router r{parent, answer_factory()};
  std::vector<subshell_id> ids{parent_subshell};
  for (int i = 1; i < 16; ++i) ids.push_back(*r.create_subshell());

  collector<int_router> c(r);
  std::vector<std::vector<char>> accepted(senders, std::vector<char>(per_sender + 1, 0));
  std::vector<std::thread> threads;
  for (u64 w = 0; w < senders; ++w)
    threads.emplace_back([&, w] {
      for (u64 seq = 1; seq <= per_sender; ++seq) {
        const u64 tag = tag_of(w, seq);
        accepted[w][seq] = static_cast<bool>(r.send(ids[(seq + w) % ids.size()], u64{tag}, tag));
      }
    });
  for (auto& t : threads) t.join();
  r.stop();
  r.join();
  auto& replies = c.join();
  CHECK(replies.size() == senders * per_sender);
  auto codes = check_exactly_once(replies, accepted);
  CHECK(codes[0] == senders * per_sender);
}

TEST_CASE("router stress: subshells created and deleted while senders feed them", "[router][stress]") {
  constexpr u64 senders = 3;
  const u64 per_sender = tether_test::scaled(60'000);
  const int rounds = static_cast<int>(tether_test::scaled(400, 40));
  tether::executor parent{{.name = "parent"}};
  int_router r{parent, answer_factory()};

  std::mutex m;
  std::vector<subshell_id> live{parent_subshell};  // guarded by m
  u64 ever = 0;                                     // guarded by m: the highest id created
  std::atomic<int> failed_deletes{0};
  collector<int_router> c(r);
  std::vector<std::vector<char>> accepted(senders, std::vector<char>(per_sender + 1, 0));
  std::vector<std::thread> threads;
  for (u64 w = 0; w < senders; ++w)
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(1234 + w);
      for (u64 seq = 1; seq <= per_sender; ++seq) {
        subshell_id to;
        {
          std::lock_guard lock(m);
          // Mostly live ids; now and then one that was deleted.
          to = rng() % 8 == 0 ? subshell_id{rng() % (ever + 1)} : live[rng() % live.size()];
        }
        const u64 tag = tag_of(w, seq);
        accepted[w][seq] = static_cast<bool>(r.send(to, u64{tag}, tag));
      }
    });
  std::thread manager([&] {
    std::mt19937_64 rng(99);
    for (int i = 0; i < rounds; ++i) {
      const subshell_id id = *r.create_subshell();
      subshell_id victim;
      {
        std::lock_guard lock(m);
        live.push_back(id);
        ever = std::max(ever, id.value());
        if (live.size() > 8) {
          const std::size_t k = 1 + rng() % (live.size() - 1);  // never the parent
          victim = live[k];
          live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
        }
      }
      if (!victim.is_parent() && !r.delete_subshell(victim, rng() % 2 ? stop_mode::cancel : stop_mode::drain).has_value())
        failed_deletes.fetch_add(1);
    }
  });
  for (auto& t : threads) t.join();
  manager.join();
  r.stop();
  r.join();
  auto& replies = c.join();
  CHECK(failed_deletes.load() == 0);
  auto codes = check_exactly_once(replies, accepted);
  INFO("values " << codes[0] << ", deleted " << codes[static_cast<int>(routing_errc::subshell_deleted)]);
  CHECK(codes[0] > 0);
  CHECK(codes[static_cast<int>(routing_errc::unknown_subshell)] == 0);  // ids below `ever` only
  CHECK(codes[0] + codes[static_cast<int>(routing_errc::subshell_deleted)] == replies.size());
}

TEST_CASE("router stress: a seeded random sequence of operations across threads", "[router][stress][random]") {
  const std::uint64_t seed = GENERATE(1, 2);
  constexpr u64 workers = 4;
  const u64 ops_per_worker = tether_test::scaled(100'000) / workers;
  tether::executor parent{{.name = "parent"}};
  // The handler throws for one payload in 97 and stays silent for one in 89 (sender form).
  int_router r{parent, [](subshell_id) {
    return [](u64&& v, tether::reply_sender<u64, u64>& reply) {
      if (v % 97 == 5) throw std::runtime_error("unlucky");
      if (v % 89 == 7) return;
      reply.send(2 * v + 1);
    };
  }};

  std::mutex m;
  std::vector<subshell_id> live{parent_subshell};  // guarded by m
  collector<int_router> c(r);
  std::vector<std::vector<char>> accepted(workers, std::vector<char>(ops_per_worker + 1, 0));
  std::atomic<u64> stopped_seen{0}, control_ops{0}, worker_errors{0};
  std::atomic<bool> go_stop{false};
  std::vector<std::thread> threads;
  for (u64 w = 0; w < workers; ++w)
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(seed * 1000 + w);
      u64 control_tag = 0;
      // Worker 0 drives the control channel (its one consumer); the others call directly.
      const auto control = [&](control_request q) -> std::optional<tether::control_reply> {
        q.tag = ++control_tag;
        if (!r.send_control(q)) return std::nullopt;
        auto rep = r.control_replies().pop();
        if (!rep) return std::nullopt;
        control_ops.fetch_add(1);
        if (rep->tag != q.tag) worker_errors.fetch_add(1);
        return std::move(*rep);
      };
      for (u64 seq = 1; seq <= ops_per_worker; ++seq) {
        if (w == 1 && seq == ops_per_worker * 3 / 4) go_stop.store(true);
        const u64 dice = rng() % 100;
        try {
          if (dice < 80) {  // send: to a live id, a deleted one or one never made
            subshell_id to;
            {
              std::lock_guard lock(m);
              to = dice < 75 ? live[rng() % live.size()] : subshell_id{rng() % 5000};
            }
            const u64 tag = tag_of(w, seq);
            accepted[w][seq] = static_cast<bool>(r.send(to, u64{tag}, tag));
          } else if (dice < 87) {  // create
            subshell_id id;
            if (w == 0) {
              auto rep = control(control_request::create());
              if (!rep || !rep->ok()) continue;
              id = rep->subshell;
            } else {
              auto made = r.create_subshell();
              if (made.code() == routing_errc::router_stopped) {
                stopped_seen.fetch_add(1);
                continue;
              }
              id = made.value();
            }
            std::lock_guard lock(m);
            live.push_back(id);
          } else if (dice < 94) {  // delete, either policy
            subshell_id victim;
            {
              std::lock_guard lock(m);
              if (live.size() < 2) continue;
              const std::size_t k = 1 + rng() % (live.size() - 1);
              victim = live[k];
              live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
            }
            const stop_mode policy = rng() % 2 ? stop_mode::cancel : stop_mode::drain;
            if (w == 0)
              (void)control(control_request::remove(victim, policy));
            else if (r.delete_subshell(victim, policy).code() == routing_errc::router_stopped)
              stopped_seen.fetch_add(1);
          } else if (dice < 98) {  // list
            if (w == 0)
              (void)control(control_request::list());
            else if (r.list_subshells().code() == routing_errc::router_stopped)
              stopped_seen.fetch_add(1);
          } else {  // stats
            if (w == 0)
              (void)control(control_request::stats());
            else if (auto st = r.stats(); st.code() == routing_errc::router_stopped)
              stopped_seen.fetch_add(1);
            else if (!st || st->empty())
              worker_errors.fetch_add(1);
          }
        } catch (const std::exception&) {  // no call throws for an outcome any more
          worker_errors.fetch_add(1);
        }
      }
    });
  // The stop races the workers: sends after it are refused, calls return router_stopped.
  while (!go_stop.load()) std::this_thread::sleep_for(1ms);
  r.stop(seed % 2 ? stop_mode::cancel : stop_mode::drain);
  for (auto& t : threads) t.join();
  r.join();
  auto& replies = c.join();
  auto codes = check_exactly_once(replies, accepted);
  u64 accepted_count = 0;
  for (auto& a : accepted) accepted_count += static_cast<u64>(std::count(a.begin(), a.end(), 1));
  INFO("seed " << seed << ": " << accepted_count << " accepted; values " << codes[0] << ", unknown "
               << codes[int(routing_errc::unknown_subshell)] << ", deleted " << codes[int(routing_errc::subshell_deleted)]
               << ", threw " << codes[int(routing_errc::handler_threw)] << ", no reply "
               << codes[int(routing_errc::no_reply)] << ", stopped " << codes[int(routing_errc::router_stopped)]
               << "; control ops " << control_ops.load() << ", refused calls " << stopped_seen.load());
  CHECK(worker_errors.load() == 0);
  CHECK(replies.size() == accepted_count);
  CHECK(codes[0] > 0);
  CHECK(codes[int(routing_errc::handler_threw)] > 0);
  CHECK(codes[int(routing_errc::no_reply)] > 0);
  CHECK(codes[int(routing_errc::unknown_subshell)] + codes[int(routing_errc::subshell_deleted)] > 0);
  CHECK(codes[int(routing_errc::subshell_stopped)] == 0);
  CHECK(control_ops.load() > 0);
  CHECK(r.control_replies().try_pop().is_closed());
}

TEST_CASE("router stress: a deep queue deleted at once, both policies", "[router][stress]") {
  const bool cancel = GENERATE(false, true);
  const u64 n = tether_test::scaled(50'000);
  tether::executor parent{{.name = "parent"}};
  int_router r{parent, answer_factory()};
  for (int round = 0; round < 5; ++round) {
    const subshell_id id = *r.create_subshell();
    for (u64 i = 1; i <= n; ++i) REQUIRE(r.send(id, u64{i}, i));
    CHECK(r.delete_subshell(id, cancel ? stop_mode::cancel : stop_mode::drain));
    u64 values = 0, deleted = 0, sum = 0;
    for (u64 i = 0; i < n; ++i) {
      auto x = r.replies().pop_for(30s);
      REQUIRE(x);
      sum += x->tag();
      if (x->has_value()) {
        CHECK(**x == 2 * x->tag() + 1);
        ++values;
      } else {
        CHECK(x->error().code() == routing_errc::subshell_deleted);
        ++deleted;
      }
    }
    CHECK(sum == n * (n + 1) / 2);
    CHECK(values + deleted == n);
    if (!cancel) CHECK(values == n);
  }
  r.stop();
  r.join();
  CHECK(r.replies().try_pop().is_closed());
}
