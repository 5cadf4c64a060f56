// tether.hpp - the whole toolkit: includes every public header, nothing else.
#pragma once

#include "tether/bounded_mpsc_queue.hpp"
#include "tether/channel.hpp"
#include "tether/mpsc_queue.hpp"
#include "tether/result.hpp"
#include "tether/select.hpp"
#include "tether/version.hpp"
