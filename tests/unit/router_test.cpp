// Unit tests for tether::router: routing by id with per-subshell order, unknown and deleted
// ids, throwing and silent handlers, the reply_sender form, delete with queued messages under
// both policies, the control channel (JEP 91's create / delete / list, and stats), control
// served while the parent is busy, stop(drain | cancel), an adopted parent joined on its
// own thread, deadlock refusals, move-only payloads (nothing leaked), and zero CPU while 100
// subshells sit idle.
//
// Handlers record what they saw in atomics; the test thread asserts.
#include <tether/router.hpp>

#include <pthread.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tether::control_op;
using tether::control_request;
using tether::parent_subshell;
using tether::routing_errc;
using tether::stop_mode;
using tether::subshell_id;

using u64 = std::uint64_t;
using int_router = tether::router<u64, u64>;

tether::executor_options named(const char* name) { return {.name = name}; }

// Every handler answers 2 * payload + 1, so a reply proves which message it answers.
auto doubling_factory() {
  return [](subshell_id) { return [](u64&& v) { return 2 * v + 1; }; };
}

// A handler blocks in pass() until the test opens the gate.
struct gate {
  std::atomic<int> entered{0};
  std::atomic<bool> opened{false};
  void pass() {
    entered.fetch_add(1);
    entered.notify_all();
    opened.wait(false);
  }
  void wait_entered(int n) {
    for (int v = entered.load(); v < n; v = entered.load()) entered.wait(v);
  }
  void open() {
    opened.store(true);
    opened.notify_all();
  }
};

// The next reply, or a failed test after 10 s (never a hang).
template <class R>
typename R::reply_type next_reply(R& r) {
  auto x = r.replies().pop_for(10s);
  REQUIRE(x);
  return std::move(*x);
}

template <class R>
tether::control_reply next_control(R& r) {
  auto x = r.control_replies().pop_for(10s);
  REQUIRE(x);
  return std::move(*x);
}

// After stop: every reply until the outbox closes.
template <class R>
std::vector<typename R::reply_type> all_replies(R& r) {
  std::vector<typename R::reply_type> out;
  for (;;) {
    auto x = r.replies().pop_for(10s);
    if (x.is_closed()) return out;
    REQUIRE(x);
    out.push_back(std::move(*x));
  }
}

// CPU time (user + system) of the whole process.
std::chrono::microseconds process_cpu_time() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return std::chrono::seconds(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         std::chrono::microseconds(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

// Blocks until the predicate holds; the sleep only paces the check.
template <class F>
bool eventually(F&& f) {
  for (int i = 0; i < 10000; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return f();
}

}  // namespace

TEST_CASE("router: subshell_id names the parent by default and children by number", "[router][smoke]") {
  STATIC_REQUIRE(subshell_id{} == parent_subshell);
  STATIC_REQUIRE(parent_subshell.is_parent());
  STATIC_REQUIRE(!subshell_id{3}.is_parent());
  STATIC_REQUIRE(subshell_id{2} < subshell_id{3});
  CHECK(parent_subshell.to_string() == "parent");
  CHECK(subshell_id{7}.to_string() == "subshell-7");
  CHECK(std::string(tether::to_string(routing_errc::subshell_deleted)) == "subshell_deleted");
}

TEST_CASE("router: parent and child answer through one outbox, tagged with id and tag", "[router][smoke]") {
  tether::executor parent{named("parent")};
  tether::router<std::string, std::string> r{parent, [](subshell_id id) {
    return [id, n = 0](std::string&& p) mutable { return id.to_string() + "/" + p + "/" + std::to_string(n++); };
  }};
  const subshell_id child = *r.create_subshell();
  CHECK(child == subshell_id{1});
  REQUIRE(r.send({child, std::string("a"), 10}));
  REQUIRE(r.send(parent_subshell, std::string("b"), 20));
  REQUIRE(r.send(child, "c", 11));
  std::map<u64, std::string> got;
  for (int i = 0; i < 3; ++i) {
    auto rep = next_reply(r);
    REQUIRE(rep.has_value());
    got[rep.tag()] = *rep;
    CHECK(rep.subshell() == (rep.tag() >= 20 ? parent_subshell : child));
  }
  CHECK(got[10] == "subshell-1/a/0");
  CHECK(got[11] == "subshell-1/c/1");  // the child's own state
  CHECK(got[20] == "parent/b/0");
  CHECK(*r.list_subshells() == std::vector<subshell_id>{child});
}

TEST_CASE("router: N subshells x M messages keep per-subshell, per-sender order", "[router][order]") {
  constexpr int subshells = 8, senders = 2;
  constexpr u64 per_sender = 400;
  tether::executor parent{named("parent")};
  std::atomic<int> order_violations{0};
  int_router r{parent, [&](subshell_id) {
    // Confined to its subshell's thread: no synchronisation needed.
    return [&, last = std::vector<u64>(senders, 0)](u64&& v) mutable {
      const u64 sender = v >> 32, seq = v & 0xffffffff;
      if (seq != last[sender] + 1) order_violations.fetch_add(1);
      last[sender] = seq;
      return v;
    };
  }};
  std::vector<subshell_id> ids{parent_subshell};
  for (int i = 1; i < subshells; ++i) ids.push_back(*r.create_subshell());

  std::vector<std::thread> threads;
  for (u64 s = 0; s < senders; ++s)
    threads.emplace_back([&, s] {
      for (u64 seq = 1; seq <= per_sender; ++seq)
        for (std::size_t k = 0; k < ids.size(); ++k) (void)r.send(ids[k], (s << 32) | seq, k);
    });
  const u64 total = per_sender * senders * subshells;
  std::map<std::pair<u64, u64>, u64> last;  // (subshell, sender) -> last seq seen in replies
  u64 sum = 0, count = 0, out_of_order = 0;
  for (; count < total; ++count) {
    auto rep = next_reply(r);
    REQUIRE(rep.has_value());
    REQUIRE(ids[rep.tag()] == rep.subshell());
    const u64 sender = *rep >> 32, seq = *rep & 0xffffffff;
    u64& prev = last[{rep.subshell().value(), sender}];
    if (seq != prev + 1) ++out_of_order;
    prev = seq;
    sum += seq;
  }
  for (auto& t : threads) t.join();
  CHECK(out_of_order == 0);
  CHECK(order_violations.load() == 0);
  CHECK(sum == u64{senders} * subshells * per_sender * (per_sender + 1) / 2);
  CHECK(r.replies().try_pop().is_empty());
  REQUIRE(eventually([&] {
    const auto all = r.stats();
    for (const tether::subshell_stats& s : all.value())
      if (s.replied != s.accepted) return false;
    return true;
  }));
  auto all = r.stats();
  REQUIRE(all);
  for (const tether::subshell_stats& s : *all) {
    CHECK(s.accepted == per_sender * senders);
    CHECK(s.replied == s.accepted);
    CHECK(s.failed == 0);
  }
}

TEST_CASE("router: unknown and deleted ids get an error naming the id, with the payload back", "[router][errors]") {
  tether::executor parent{named("parent")};
  tether::router<std::string, u64> r{parent, [](subshell_id) { return [](std::string&& s) { return u64(s.size()); }; },
                                     {.name = "kernel"}};
  REQUIRE(r.send(subshell_id{42}, "never routed", 1));
  auto unknown = next_reply(r);
  REQUIRE_FALSE(unknown.has_value());
  CHECK(unknown.tag() == 1);
  CHECK(unknown.subshell() == subshell_id{42});
  CHECK(unknown.error().code() == routing_errc::unknown_subshell);
  CHECK(unknown.error().subshell() == subshell_id{42});
  CHECK(unknown.error().message().find("subshell-42") != std::string::npos);
  CHECK(unknown.error().message().find("kernel") != std::string::npos);
  REQUIRE(unknown.returned_payload() != nullptr);
  CHECK(*unknown.returned_payload() == "never routed");
  CHECK_THROWS_AS(unknown.value(), std::logic_error);

  const subshell_id child = *r.create_subshell();
  CHECK(r.delete_subshell(child).code() == routing_errc::ok);
  CHECK(r.delete_subshell(child).code() == routing_errc::subshell_deleted);             // already deleted
  CHECK(r.delete_subshell(subshell_id{1000}).code() == routing_errc::unknown_subshell);  // never created
  CHECK(r.delete_subshell(parent_subshell).code() == routing_errc::invalid_request);     // the parent stays
  CHECK(r.stats(subshell_id{1000}).code() == routing_errc::unknown_subshell);
  REQUIRE(r.send(child, "too late", 2));
  auto deleted = next_reply(r);
  CHECK(deleted.error().code() == routing_errc::subshell_deleted);
  CHECK(deleted.error().message().find(child.to_string()) != std::string::npos);
  CHECK(*deleted.returned_payload() == "too late");
  CHECK(r.list_subshells()->empty());
}

TEST_CASE("router: a throwing handler answers handler_threw and keeps serving", "[router][errors]") {
  tether::executor parent{named("parent")};
  int_router r{parent, [](subshell_id) {
    return [](u64&& v) -> u64 {
      if (v == 1) throw std::runtime_error("bad input 1");
      if (v == 2) throw 2;  // not a std::exception
      return v * 10;
    };
  }};
  const subshell_id child = *r.create_subshell();
  for (subshell_id id : {parent_subshell, child})
    for (u64 v : {1, 2, 3}) REQUIRE(r.send(id, u64{v}, v));
  std::map<std::pair<u64, u64>, std::string> outcome;
  for (int i = 0; i < 6; ++i) {
    auto rep = next_reply(r);
    outcome[{rep.subshell().value(), rep.tag()}] =
        rep.has_value() ? std::to_string(*rep) : tether::to_string(rep.error().code());
    if (!rep.has_value()) {
      CHECK(rep.returned_payload() == nullptr);  // it reached the handler
      if (rep.tag() == 1) CHECK(rep.error().message().find("bad input 1") != std::string::npos);
    }
  }
  for (u64 id : {u64{0}, child.value()}) {
    CHECK(outcome[{id, 1}] == "handler_threw");
    CHECK(outcome[{id, 2}] == "handler_threw");
    CHECK(outcome[{id, 3}] == "30");
  }
  // replied counts a message once its handler has returned: a moment after its reply left.
  REQUIRE(eventually([&] { return r.stats(child)->replied == 3; }));
  auto s = r.stats(child);
  REQUIRE(s);
  CHECK(s->accepted == 3);
  CHECK(s->failed == 2);
}

TEST_CASE("router: reply_sender - early reply, no reply, one reply only", "[router][sender]") {
  tether::executor parent{named("parent")};
  std::atomic<int> second_send_refused{0}, after_reply_work{0};
  int_router r{parent, [&](subshell_id) {
    return [&](u64&& v, tether::reply_sender<u64, u64>& reply) {
      if (v == 0) return;  // forgets to reply
      reply.send(v + 100);
      if (!reply.send(v + 200)) second_send_refused.fetch_add(1);
      after_reply_work.fetch_add(1);  // still running after its reply left
      if (v == 2) throw std::runtime_error("after the reply: changes nothing");
    };
  }};
  const subshell_id child = *r.create_subshell();
  for (u64 v : {0, 1, 2}) REQUIRE(r.send(child, u64{v}, v));
  std::map<u64, std::string> got;
  for (int i = 0; i < 3; ++i) {
    auto rep = next_reply(r);
    got[rep.tag()] = rep.has_value() ? std::to_string(*rep) : tether::to_string(rep.error().code());
  }
  CHECK(got[0] == "no_reply");
  CHECK(got[1] == "101");
  CHECK(got[2] == "102");
  r.stop();
  r.join();
  CHECK(second_send_refused.load() == 2);
  CHECK(after_reply_work.load() == 2);
  CHECK(all_replies(r).empty());  // exactly one reply each
}

TEST_CASE("router: delete with queued messages - drain runs them, cancel answers subshell_deleted", "[router][delete]") {
  const bool cancel = GENERATE(false, true);
  constexpr u64 queued = 20;
  tether::executor parent{named("parent")};
  gate g;
  tether::router<std::unique_ptr<u64>, u64> r{parent, [&](subshell_id) {
    return [&](std::unique_ptr<u64>&& p) {
      if (*p == 0) g.pass();
      return *p;
    };
  }};
  const subshell_id child = *r.create_subshell();
  for (u64 i = 0; i < queued; ++i) REQUIRE(r.send(child, std::make_unique<u64>(i), i));
  g.wait_entered(1);  // message 0 runs; 1..19 are queued behind it
  REQUIRE(eventually([&] { return r.stats(child)->accepted == queued; }));
  // Returns while the subshell's handler is still blocked: deleting never waits for it.
  CHECK(r.delete_subshell(child, cancel ? stop_mode::cancel : stop_mode::drain));
  CHECK(r.list_subshells()->empty());
  REQUIRE(r.send(child, std::make_unique<u64>(99), 99));  // after the delete: refused by the router
  auto late = next_reply(r);
  CHECK(late.error().code() == routing_errc::subshell_deleted);
  CHECK(**late.returned_payload() == 99);
  g.open();

  std::set<u64> tags;
  u64 values = 0, deleted = 0;
  for (u64 i = 0; i < queued; ++i) {
    auto rep = next_reply(r);
    CHECK(rep.subshell() == child);
    CHECK(tags.insert(rep.tag()).second);
    if (rep.has_value()) {
      CHECK(*rep == rep.tag());
      ++values;
    } else {
      CHECK(rep.error().code() == routing_errc::subshell_deleted);
      REQUIRE(rep.returned_payload() != nullptr);
      CHECK(**rep.returned_payload() == rep.tag());
      ++deleted;
    }
  }
  CHECK(tags.size() == queued);
  CHECK(values == (cancel ? 1 : queued));  // cancel: only the message that was running
  CHECK(deleted == (cancel ? queued - 1 : 0));
  r.stop();
  r.join();
  CHECK(all_replies(r).empty());
}

TEST_CASE("router: the control channel creates, lists, reports and deletes", "[router][control]") {
  tether::executor parent{named("parent")};
  gate g;
  int_router r{parent, [&](subshell_id) {
    return [&](u64&& v) {
      if (v == 7) g.pass();
      return v;
    };
  }};
  REQUIRE(r.send_control(control_request::create(1)));
  REQUIRE(r.send_control(control_request::create(2)));
  subshell_id a, b;
  for (int i = 0; i < 2; ++i) {
    auto rep = next_control(r);
    REQUIRE(rep.ok());
    CHECK(rep.op == control_op::create_subshell);
    (rep.tag == 1 ? a : b) = rep.subshell;
  }
  CHECK(a != b);
  REQUIRE(r.send_control(control_request::list(3)));
  auto listed = next_control(r);
  CHECK(listed.tag == 3);
  REQUIRE(listed.subshells.size() == 2);
  CHECK(listed.subshells[0].id == std::min(a, b));
  CHECK(listed.subshells[1].id == std::max(a, b));
  CHECK(listed.subshells[0].executor_name == std::min(a, b).to_string());

  // Busy / idle per subshell, as stats.
  REQUIRE(r.send(a, u64{7}, 7));
  g.wait_entered(1);
  REQUIRE(r.send_control(control_request::stats(4)));
  auto st = next_control(r);
  REQUIRE(st.subshells.size() == 3);
  CHECK(st.subshells[0].id == parent_subshell);
  CHECK(st.subshells[0].executor_name == "parent");
  for (const auto& s : st.subshells) CHECK(s.busy == (s.id == a));

  // A control delete is answered once the subshell has finished (its running handler too).
  REQUIRE(r.send(a, u64{8}, 8));
  REQUIRE(r.send_control(control_request::remove(a, stop_mode::drain, 5)));
  CHECK(r.control_replies().pop_for(50ms).is_timeout());  // a is still blocked
  g.open();
  auto removed = next_control(r);
  CHECK(removed.ok());
  CHECK(removed.tag == 5);
  CHECK(removed.subshell == a);
  // Both of a's messages were answered before the delete reply was sent.
  CHECK(r.replies().size_approx() == 2);

  // Refused requests.
  REQUIRE(r.send_control(control_request::remove(parent_subshell, stop_mode::drain, 6)));
  auto parent_del = next_control(r);
  REQUIRE_FALSE(parent_del.ok());
  CHECK(parent_del.error->code() == routing_errc::invalid_request);
  REQUIRE(r.send_control(control_request::remove(a, stop_mode::drain, 7)));
  CHECK(next_control(r).error->code() == routing_errc::subshell_deleted);
  REQUIRE(r.send_control(control_request::remove(subshell_id{77}, stop_mode::drain, 8)));
  CHECK(next_control(r).error->code() == routing_errc::unknown_subshell);
  CHECK(*r.list_subshells() == std::vector<subshell_id>{b});
}

TEST_CASE("router: control and children are served while the parent is busy (JEP 91)", "[router][control]") {
  tether::executor parent{named("parent")};
  gate g;
  int_router r{parent, [&](subshell_id id) {
    return [&, id](u64&& v) {
      if (id.is_parent()) g.pass();  // the parent's long task
      return v;
    };
  }};
  REQUIRE(r.send(parent_subshell, u64{1}, 1));
  g.wait_entered(1);
  REQUIRE(r.send_control(control_request::create(1)));
  const subshell_id child = next_control(r).subshell;
  for (u64 i = 0; i < 5; ++i) REQUIRE(r.send(child, i, 100 + i));
  for (u64 i = 0; i < 5; ++i) {
    auto rep = next_reply(r);
    CHECK(rep.subshell() == child);
    CHECK(rep.tag() == 100 + i);  // FIFO
  }
  REQUIRE(r.send_control(control_request::remove(child, stop_mode::drain, 2)));
  CHECK(next_control(r).ok());
  CHECK(r.stats(parent_subshell)->busy);
  g.open();
  auto last = next_reply(r);
  CHECK(last.subshell() == parent_subshell);
  CHECK(last.tag() == 1);
}

TEST_CASE("router: stop answers everything exactly once and closes the outboxes", "[router][stop]") {
  const bool cancel = GENERATE(false, true);
  constexpr u64 per = 6;
  tether::executor parent{named("parent")};
  gate g;
  int_router r{parent, [&](subshell_id) {
    return [&](u64&& v) {
      if (v % per == 0) g.pass();  // the first message of each subshell blocks
      return v;
    };
  }};
  const subshell_id child = *r.create_subshell();
  for (u64 i = 0; i < per; ++i) {
    REQUIRE(r.send(parent_subshell, i, i));
    REQUIRE(r.send(child, per + i, per + i));
  }
  g.wait_entered(2);
  CHECK(r.stop(cancel ? stop_mode::cancel : stop_mode::drain));
  CHECK_FALSE(r.stop());
  CHECK(r.is_stopped());
  u64 kept = 5;
  CHECK(r.send(parent_subshell, std::move(kept)).is_closed());
  CHECK(r.create_subshell().code() == routing_errc::router_stopped);
  CHECK(r.list_subshells().code() == routing_errc::router_stopped);
  CHECK(r.delete_subshell(child).code() == routing_errc::router_stopped);
  CHECK(r.stats().code() == routing_errc::router_stopped);
  CHECK(r.send_control(control_request::list()).is_closed());
  CHECK_FALSE(r.join_for(20ms));  // both subshells are blocked
  g.open();
  r.join();
  CHECK(r.is_finished());

  auto replies = all_replies(r);
  REQUIRE(replies.size() == 2 * per);
  std::set<u64> tags;
  u64 values = 0;
  for (auto& rep : replies) {
    CHECK(tags.insert(rep.tag()).second);
    if (rep.has_value()) {
      ++values;
    } else {
      CHECK(rep.error().code() == routing_errc::router_stopped);
      CHECK(*rep.returned_payload() == rep.tag());
    }
  }
  CHECK(values == (cancel ? 2 : 2 * per));
  CHECK(r.control_replies().pop_for(10s).is_closed());
}

TEST_CASE("router: a factory that throws fails the create; the router carries on", "[router][errors]") {
  tether::executor parent{named("parent")};
  std::atomic<int> made{0};
  int_router r{parent, [&](subshell_id id) {
    if (id == subshell_id{2} || id == subshell_id{3}) throw std::runtime_error("no interpreter for you");
    made.fetch_add(1);
    return [](u64&& v) { return v; };
  }};
  const subshell_id one = *r.create_subshell();
  CHECK(one == subshell_id{1});
  auto refused = r.create_subshell();  // id 2
  REQUIRE_FALSE(refused);
  CHECK(refused.code() == routing_errc::create_failed);
  CHECK(refused.error().message().find("no interpreter for you") != std::string::npos);
  CHECK_THROWS_AS(refused.value(), std::logic_error);
  REQUIRE(r.send_control(control_request::create(9)));               // id 3
  auto failed = next_control(r);
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.error->code() == routing_errc::create_failed);
  CHECK(failed.error->message().find("no interpreter for you") != std::string::npos);
  CHECK(*r.list_subshells() == std::vector<subshell_id>{one});  // removed before the create failed
  CHECK(*r.create_subshell() == subshell_id{4});
  CHECK(*r.list_subshells() == std::vector<subshell_id>{one, subshell_id{4}});
  CHECK(made.load() == 3);  // the parent, 1 and 4
}

TEST_CASE("router: a child runs on its own thread, named after its id", "[router][threads]") {
  tether::executor parent{named("parent")};
  std::atomic<int> wrong_thread{0};
  std::mutex m;
  std::map<u64, std::string> factory_thread;
  int_router r{parent, [&](subshell_id id) {
    char buf[16] = {};
    pthread_getname_np(pthread_self(), buf, sizeof buf);
    {
      std::lock_guard lock(m);
      factory_thread[id.value()] = buf;
    }
    return [&, made_on = std::this_thread::get_id()](u64&& v) {
      if (std::this_thread::get_id() != made_on && v != 0) wrong_thread.fetch_add(1);
      return v;
    };
  }};
  const subshell_id a = *r.create_subshell(), b = *r.create_subshell();
  for (u64 i = 1; i <= 50; ++i)
    for (subshell_id id : {a, b}) REQUIRE(r.send(id, u64{i}));
  for (int i = 0; i < 100; ++i) CHECK(next_reply(r).has_value());
  CHECK(wrong_thread.load() == 0);
  std::lock_guard lock(m);
  CHECK(factory_thread[a.value()] == "subshell-1");
  CHECK(factory_thread[b.value()] == "subshell-2");
}

TEST_CASE("router: a subshell may delete itself, and create others, from its handler", "[router][delete]") {
  tether::executor parent{named("parent")};
  int_router* self = nullptr;
  std::atomic<u64> created{0};
  // The delete waits until message 3 is sent: both go through the router's one inbox, so 3
  // is then ahead of the delete. (Without this wait the handler could delete before the
  // test thread sent 3, which is then answered subshell_deleted - correct, but not this test.)
  std::atomic<bool> third_sent{false};
  int_router r{parent, [&](subshell_id id) {
    return [&, id](u64&& v) -> u64 {
      if (v == 1) created.store(self->create_subshell()->value());
      if (v == 2) {
        third_sent.wait(false);
        return self->delete_subshell(id).code() == routing_errc::ok ? 1 : 0;
      }
      return v;
    };
  }};
  self = &r;
  const subshell_id child = *r.create_subshell();
  REQUIRE(r.send(child, u64{1}, 1));
  REQUIRE(r.send(child, u64{2}, 2));
  const bool sent = static_cast<bool>(r.send(child, u64{3}, 3));  // queued before the delete: drained
  third_sent.store(true);
  third_sent.notify_one();
  REQUIRE(sent);
  std::map<u64, u64> got;
  for (int i = 0; i < 3; ++i) {
    auto rep = next_reply(r);
    REQUIRE(rep.has_value());
    got[rep.tag()] = *rep;
  }
  CHECK(got[2] == 1);
  CHECK(got[3] == 3);
  CHECK(*r.list_subshells() == std::vector<subshell_id>{subshell_id{created.load()}});
}

TEST_CASE("router: a stopped parent executor answers subshell_stopped with the payload back", "[router][errors]") {
  tether::executor parent{named("main")};
  int_router r{parent, doubling_factory()};
  REQUIRE(r.send(parent_subshell, u64{1}, 1));
  CHECK(*next_reply(r) == 3);
  parent.stop();
  parent.join();
  REQUIRE(r.send(parent_subshell, u64{2}, 2));
  auto rep = next_reply(r);
  CHECK(rep.error().code() == routing_errc::subshell_stopped);
  CHECK(rep.error().message().find("'main'") != std::string::npos);
  CHECK(*rep.returned_payload() == 2);
}

TEST_CASE("router: an adopted parent is run by join() on its own thread", "[router][adopt]") {
  tether::executor main_ex{tether::adopt_current_thread, named("main")};
  std::atomic<u64> ran_on_main{0};
  const auto main_id = std::this_thread::get_id();
  int_router r{main_ex, [&](subshell_id id) {
    return [&, id](u64&& v) -> u64 {
      if (id.is_parent() && std::this_thread::get_id() == main_id) ran_on_main.fetch_add(1);
      // A child that needs the main thread (a GUI call, say) while join() runs there.
      if (!id.is_parent()) return main_ex.call([v] { return v + 1000; });
      return v;
    };
  }};
  const subshell_id child = *r.create_subshell();
  for (u64 i = 0; i < 10; ++i) {
    REQUIRE(r.send(parent_subshell, i, i));
    REQUIRE(r.send(child, i, 100 + i));
  }
  // Nobody runs main_ex: join() on this thread must.
  r.stop();
  r.join();
  CHECK(ran_on_main.load() == 10);
  auto replies = all_replies(r);
  REQUIRE(replies.size() == 20);
  for (auto& rep : replies) {
    REQUIRE(rep.has_value());
    CHECK(*rep == (rep.tag() >= 100 ? rep.tag() - 100 + 1000 : rep.tag()));
  }
}

TEST_CASE("router: destroyed on its adopted parent's thread, it answers what it accepted", "[router][adopt]") {
  tether::executor main_ex{tether::adopt_current_thread, named("main")};
  std::atomic<int> handled{0};
  {
    int_router r{main_ex, [&](subshell_id) {
      return [&](u64&& v) {
        handled.fetch_add(1);
        return v;
      };
    }};
    for (u64 i = 0; i < 25; ++i) REQUIRE(r.send(parent_subshell, i));
  }
  CHECK(handled.load() == 25);
}

TEST_CASE("router: join() before stop() throws instead of waiting forever", "[router][deadlock]") {
  tether::executor parent{named("parent")};
  int_router r{parent, doubling_factory()};
  CHECK_THROWS_AS(r.join(), std::logic_error);
  CHECK_THROWS_AS(r.join_for(1ms), std::logic_error);
  r.stop();
  CHECK(r.join_for(10s));
  r.join();
}

TEST_CASE("router: join() from a child's handler throws deadlock_error", "[router][deadlock]") {
  tether::executor parent{named("parent")};
  int_router* self = nullptr;
  std::atomic<int> deadlock_seen{0};
  gate g;
  int_router r{parent, [&](subshell_id) {
    return [&](u64&& v) -> u64 {
      g.pass();
      try {
        self->join();
      } catch (const tether::deadlock_error& e) {
        if (std::string(e.what()).find("subshell-1") != std::string::npos) deadlock_seen.fetch_add(1);
      }
      return v;
    };
  }};
  self = &r;
  const subshell_id child = *r.create_subshell();
  REQUIRE(r.send(child, u64{1}));
  g.wait_entered(1);
  r.stop();
  g.open();
  r.join();
  CHECK(deadlock_seen.load() == 1);
  CHECK(all_replies(r).size() == 1);
}

TEST_CASE("router: move-only payloads are never leaked or destroyed twice", "[router][drops]") {
  using tether_test::counted;
  const long live_before = counted::live.load();
  const bool cancel = GENERATE(false, true);
  {
    tether::executor parent{named("parent")};
    gate g;
    tether::router<std::unique_ptr<counted>, std::unique_ptr<counted>> r{parent, [&](subshell_id) {
      return [&](std::unique_ptr<counted>&& p) {
        if (p->value == 0) g.pass();
        return std::make_unique<counted>(p->value + 1);
      };
    }};
    const subshell_id a = *r.create_subshell();
    for (u64 i = 0; i < 50; ++i) {
      REQUIRE(r.send(a, std::make_unique<counted>(i)));
      REQUIRE(r.send(subshell_id{9}, std::make_unique<counted>(i)));
    }
    g.wait_entered(1);
    r.stop(cancel ? stop_mode::cancel : stop_mode::drain);
    g.open();
    r.join();
    CHECK(all_replies(r).size() == 100);  // replies (and returned payloads) destroyed here
  }
  CHECK(counted::live.load() == live_before);
  CHECK(counted::destroyed_twice.load() == 0);
}

TEST_CASE("router: 100 idle subshells use (next to) no CPU", "[router][idle]") {
  tether::executor parent{named("parent")};
  int_router r{parent, doubling_factory()};
  std::vector<subshell_id> ids;
  for (int i = 0; i < 100; ++i) ids.push_back(*r.create_subshell());
  for (subshell_id id : ids) REQUIRE(r.send(id, u64{1}));
  for (std::size_t i = 0; i < ids.size(); ++i) CHECK(*next_reply(r) == 3);
  std::this_thread::sleep_for(100ms);  // every thread is past its brief spin and parked

  const auto cpu0 = process_cpu_time();
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(500ms);
  const auto cpu = process_cpu_time() - cpu0;
  const auto wall = std::chrono::steady_clock::now() - t0;
  INFO("process CPU over " << std::chrono::duration_cast<std::chrono::milliseconds>(wall).count()
                           << " ms idle: " << cpu.count() << " us");
  CHECK(cpu < 50ms);
  CHECK(r.stats()->size() == 101);
}

namespace {
// A payload whose move constructor throws on every third move (counted over all instances).
std::atomic<int> flaky_moves{0};
struct flaky {
  explicit flaky(u64 x) : v(x) {}
  flaky(flaky&& o) : v(o.v) {  // NOLINT: throwing on purpose
    if (flaky_moves.fetch_add(1) % 3 == 2) throw std::runtime_error("flaky move");
  }
  u64 v;
};
}  // namespace

TEST_CASE("router: a payload whose move throws never takes the router down; one reply per accepted message",
          "[router][errors][exceptions]") {
  tether::executor parent{named("parent")};
  tether::router<flaky, u64> r{parent, [](subshell_id) {
    return [](flaky&& f) {
      flaky mine(std::move(f));  // may throw: handler_threw
      return mine.v;
    };
  }};
  const subshell_id child = *r.create_subshell();
  const subshell_id gone = *r.create_subshell();
  REQUIRE(r.delete_subshell(gone));
  constexpr u64 messages = 3000;
  std::set<u64> accepted;
  u64 refused = 0;
  for (u64 i = 0; i < messages; ++i) {
    const subshell_id to = i % 4 == 0 ? parent_subshell : i % 4 == 1 ? child : i % 4 == 2 ? gone : subshell_id{99};
    try {
      if (r.send(to, flaky(i), i)) accepted.insert(i);
    } catch (const std::runtime_error&) {  // the move into the inbox threw: not accepted
      ++refused;
    }
  }
  r.stop();
  r.join();
  auto replies = all_replies(r);
  std::set<u64> answered;
  std::map<routing_errc, u64> codes;
  u64 returned = 0;
  for (auto& rep : replies) {
    CHECK(answered.insert(rep.tag()).second);  // exactly once
    ++codes[rep.code()];
    if (rep.has_value()) CHECK(*rep == rep.tag());
    if (!rep.has_value() && rep.returned_payload() != nullptr) {
      CHECK(rep.returned_payload()->v == rep.tag());
      ++returned;
    }
  }
  CHECK(answered == accepted);
  CHECK(refused > 0);
  CHECK(codes[routing_errc::ok] > 0);
  CHECK(codes[routing_errc::handler_threw] > 0);
  CHECK(codes[routing_errc::subshell_deleted] + codes[routing_errc::unknown_subshell] > 0);
  CHECK(returned > 0);
  CHECK(codes[routing_errc::ok] + codes[routing_errc::handler_threw] + codes[routing_errc::subshell_deleted] +
            codes[routing_errc::unknown_subshell] ==
        accepted.size());
}

TEST_CASE("router: a handler throwing std::bad_alloc gets its error reply; stop and join finish",
          "[router][errors][exceptions]") {
  tether::executor parent{named("parent")};
  int_router r{parent, [](subshell_id) {
    return [](u64&& v) -> u64 {
      if (v % 2 == 1) throw std::bad_alloc();
      return v;
    };
  }};
  const subshell_id child = *r.create_subshell();
  constexpr u64 per = 200;
  for (u64 i = 0; i < per; ++i) {
    REQUIRE(r.send(parent_subshell, u64{i}, i));
    REQUIRE(r.send(child, u64{i}, per + i));
  }
  r.stop();
  r.join();
  auto replies = all_replies(r);
  REQUIRE(replies.size() == 2 * per);
  std::set<u64> tags;
  u64 threw = 0, values = 0;
  for (auto& rep : replies) {
    CHECK(tags.insert(rep.tag()).second);
    if (rep.has_value()) {
      ++values;
    } else {
      CHECK(rep.code() == routing_errc::handler_threw);
      ++threw;
    }
  }
  CHECK(threw == per);
  CHECK(values == per);
}

TEST_CASE("router: join_for and poller waits take a huge timeout as no deadline", "[router][timeouts]") {
  tether::executor parent{named("parent")};
  int_router r{parent, doubling_factory()};
  REQUIRE(r.send(parent_subshell, u64{4}, 1));
  tether::poller p;
  p.add(r.replies());
  auto ready = p.wait_for(std::chrono::nanoseconds::max());
  REQUIRE(ready);
  CHECK(ready->is(r.replies()));
  CHECK(*next_reply(r) == 9);
  CHECK(r.stop());
  CHECK(r.join_for(std::chrono::hours::max()));
  CHECK(r.join_until(std::chrono::system_clock::time_point::max()));
  CHECK(r.try_join());
  CHECK(p.remove(r.replies()));
}
