// libFuzzer: a router driven by create / delete / send / list operations, against a model.
//
// Invariants: list_subshells() names exactly the children created and not deleted;
// delete_subshell() is true only for a live child; send() is accepted until shutdown; after
// shutdown and join every accepted message has exactly one reply (the handler's value - the
// payload itself - or a routing error), value replies of one subshell come in send order, and
// replies() is closed.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <tether/router.hpp>

#include "fuzz_input.hpp"

namespace {
using tether_fuzz::require;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  tether_fuzz::input in(data, size);
  tether::executor parent{{.name = "fuzz-parent"}};
  std::vector<std::uint64_t> accepted;  // tag -> payload (tags are indexes)
  std::vector<std::uint64_t> live;      // ids of children created and not deleted
  std::vector<std::uint64_t> ever;      // ids of every child created
  {
    tether::router<std::uint64_t, std::uint64_t> r(parent, [](tether::subshell_id) {
      return [](std::uint64_t&& v) { return v * 3 + 1; };
    });
    std::size_t steps = 0;
    while (!in.empty() && steps++ < 200) {
      switch (in.below(8)) {
        case 0:
          if (live.size() < 4) {
            auto created = r.create_subshell();
            require(static_cast<bool>(created), "create_subshell() failed");
            const tether::subshell_id id = *created;
            require(!id.is_parent(), "create_subshell() returned the parent");
            require(std::find(ever.begin(), ever.end(), id.value()) == ever.end(), "create_subshell() reused an id");
            live.push_back(id.value());
            ever.push_back(id.value());
          }
          break;
        case 1: {
          // a live child, a deleted one, the parent or an unknown id
          const std::size_t pick = in.below(ever.size() + 2);
          const std::uint64_t id = pick < ever.size() ? ever[pick] : pick == ever.size() ? 0 : 1000;
          const bool was_live = std::find(live.begin(), live.end(), id) != live.end();
          const bool gone = static_cast<bool>(r.delete_subshell(tether::subshell_id(id), in.below(2) == 0 ? tether::stop_mode::drain
                                                                                         : tether::stop_mode::cancel));
          require(gone == was_live, "delete_subshell() result wrong", (long long)id, was_live);
          if (gone) live.erase(std::find(live.begin(), live.end(), id));
          break;
        }
        case 2: {
          auto listed_result = r.list_subshells();
          require(static_cast<bool>(listed_result), "list_subshells() failed");
          const std::vector<tether::subshell_id>& listed = *listed_result;
          std::vector<std::uint64_t> ids;
          for (const auto& s : listed) ids.push_back(s.value());
          std::vector<std::uint64_t> expected = live;
          std::sort(expected.begin(), expected.end());
          require(ids == expected, "list_subshells() differs from the children alive", (long long)ids.size(),
                  (long long)expected.size());
          break;
        }
        default: {  // a run of sends
          const std::size_t n = 1 + in.below(16);
          const std::size_t pick = in.below(ever.size() + 2);
          const std::uint64_t id = pick < ever.size() ? ever[pick] : pick == ever.size() ? 0 : 1000;
          for (std::size_t i = 0; i < n; ++i) {
            const std::uint64_t tag = accepted.size();
            const std::uint64_t payload = tag * 7 + 5;
            require(static_cast<bool>(r.send(tether::subshell_id(id), std::uint64_t(payload), tag)),
                    "send() refused before shutdown");
            accepted.push_back(payload);
          }
          break;
        }
      }
    }
    r.stop(in.below(2) == 0 ? tether::stop_mode::drain : tether::stop_mode::cancel);
    r.join();
    std::vector<int> replies(accepted.size(), 0);
    std::vector<std::pair<std::uint64_t, std::uint64_t>> last_value_tag;  // subshell -> last tag
    for (;;) {
      auto rep = r.replies().try_pop();
      if (!rep) {
        require(rep.is_closed(), "replies() not closed after join()");
        break;
      }
      const std::uint64_t tag = rep->tag();
      require(tag < accepted.size(), "a reply to a message never sent", (long long)tag);
      ++replies[tag];
      if (rep->has_value()) {
        require(**rep == accepted[tag] * 3 + 1, "a value reply that is not the handler's", (long long)tag);
        const std::uint64_t sub = rep->subshell().value();
        auto it = std::find_if(last_value_tag.begin(), last_value_tag.end(), [&](auto& e) { return e.first == sub; });
        if (it == last_value_tag.end()) last_value_tag.emplace_back(sub, tag);
        else {
          require(it->second < tag, "a subshell's replies out of send order", (long long)it->second, (long long)tag);
          it->second = tag;
        }
      }
    }
    for (std::size_t tag = 0; tag < accepted.size(); ++tag)
      require(replies[tag] == 1, "an accepted message without exactly one reply", (long long)tag, replies[tag]);
  }
  return 0;
}
