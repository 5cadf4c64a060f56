// SPDX-License-Identifier: MIT
// tether.hpp - the whole toolkit: includes every public header, nothing else.
#pragma once

#include "tether/bounded_mpsc_queue.hpp"
#include "tether/channel.hpp"
#include "tether/confined.hpp"
#include "tether/context_guard.hpp"
#include "tether/coroutine.hpp"
#include "tether/errors.hpp"
#include "tether/executor.hpp"
#include "tether/executor_options.hpp"
#include "tether/executor_stats.hpp"
#include "tether/fd_source.hpp"
#include "tether/mpsc_queue.hpp"
#include "tether/receiver.hpp"
#include "tether/result.hpp"
#include "tether/router.hpp"
#include "tether/router_messages.hpp"
#include "tether/select.hpp"
#include "tether/thread_checker.hpp"
#include "tether/version.hpp"
