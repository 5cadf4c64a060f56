// SPDX-License-Identifier: MIT
// examples/jupyter/guile_runtime.cpp - Guile mode per thread, cells, completion, inspection
// and interruption.
//
// Every call into Scheme goes through scm_internal_catch, so that no Scheme error (nor an
// interrupt arriving between two cells) unwinds through C++ frames.
#include "guile_runtime.hpp"

#include <libguile.h>

// libguile's SCM_UNPACK type-checks its argument with an assignment to a volatile SCM in a
// branch never taken (scm.h); clang 14 in C++20 flags every expansion in this file.
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wdeprecated-volatile"
#endif

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace tether_jupyter {

namespace {

// The kernel's helpers, defined once in the module (tether kernel) so that they stay out of the
// users' namespace (and out of completions).
constexpr const char* helpers = R"scm(
(use-modules (ice-9 documentation) (srfi srfi-1))

(define (eval-forms code module)
  (let ((port (open-input-string code)))
    (let loop ((vals (list *unspecified*)))
      (let ((form (read port)))
        (if (eof-object? form)
            vals
            (loop (call-with-values (lambda () (eval form module)) list)))))))

(define (text-of key args)
  (string-trim-right
   (call-with-output-string (lambda (p) (print-exception p #f key args)))
   #\newline))

; The frames of the user's code: those after the kernel's own (eval form module).
(define (backtrace-lines stack)
  (if stack
      (catch #t
        (lambda ()
          (let* ((s (call-with-output-string (lambda (p) (display-backtrace stack p #f 12))))
                 (lines (filter (lambda (l) (not (string-null? l))) (string-split s #\newline)))
                 (user (member-if (lambda (l) (string-contains l "(eval ")) lines)))
            (if (and user (pair? (cdr user))) (cdr user) '())))
        (lambda _ '()))
      '()))

(define (member-if pred l)
  (cond ((null? l) #f) ((pred (car l)) l) (else (member-if pred (cdr l)))))

;; (ok . written-value-or-#f) or (error key text backtrace-lines)
(define (tether-run-cell code module)
  (let ((stack #f))
    (catch #t
      (lambda ()
        (let ((vals (eval-forms code module)))
          (cons 'ok (if (or (null? vals) (unspecified? (car vals)))
                        #f
                        (object->string (car vals))))))
      (lambda (key . args)
        (list 'error key (text-of key args) (backtrace-lines stack)))
      (lambda (key . args)
        (unless (eq? key 'kernel-interrupt)
          (set! stack (make-stack #t 3)))))))

(define (tether-completeness code)
  (catch 'read-error
    (lambda ()
      (let ((port (open-input-string code)))
        (let loop ()
          (if (eof-object? (read port)) "complete" (loop)))))
    (lambda (key subr message . rest)
      (if (and (string? message) (string-contains message "unexpected end of input"))
          "incomplete"
          "invalid"))))

(define (tether-names prefix module)
  (let ((out '()))
    (define (add! sym var)
      (let ((s (symbol->string sym)))
        (when (string-prefix? prefix s) (set! out (cons s out)))))
    (module-for-each add! module)
    (for-each (lambda (i) (catch #t (lambda () (module-for-each add! i)) (lambda _ #f)))
              (module-uses module))
    (sort (delete-duplicates out) string<?)))

(define (tether-describe name module)
  (let ((var (module-variable module (string->symbol name))))
    (and var (variable-bound? var)
         (let* ((v (variable-ref var))
                (doc (catch #t (lambda () (object-documentation v)) (lambda _ #f))))
           (string-append name " = " (object->string v)
                          (if (string? doc) (string-append "\n\n" doc) ""))))))

(define (tether-make-port kind)
  (make-soft-port (vector (lambda (c) (%tether-write kind (string c)))
                          (lambda (s) (%tether-write kind s))
                          (lambda () (%tether-flush kind))
                          #f #f)
                  "w"))

(define (tether-interrupt-thunk cell)
  (lambda ()
    (when (%tether-running? cell)
      (throw 'kernel-interrupt "the cell was interrupted (interrupt_request)"))))
)scm";

SCM user_module = SCM_BOOL_F;
SCM run_cell_proc = SCM_BOOL_F;
SCM completeness_proc = SCM_BOOL_F;
SCM names_proc = SCM_BOOL_F;
SCM describe_proc = SCM_BOOL_F;
SCM make_port_proc = SCM_BOOL_F;
SCM interrupt_thunk_proc = SCM_BOOL_F;
std::once_flag helpers_once;

// The evaluating thread's state: the running cell (0: none) and its output.
thread_local std::uint64_t running_cell = 0;
thread_local const cell_io* io_of_cell = nullptr;
thread_local std::string pending[2];  // stdout, stderr: written, not yet handed to the sink
thread_local int last_kind = 0;

const char* stream_name(int kind) { return kind == 0 ? "stdout" : "stderr"; }

void flush_kind(int kind) {
  std::string& buf = pending[kind];
  if (buf.empty()) return;
  if (io_of_cell != nullptr && io_of_cell->stream) io_of_cell->stream(stream_name(kind), std::move(buf));
  buf.clear();
}

std::string to_std(SCM s) {
  std::size_t len = 0;
  char* p = scm_to_utf8_stringn(s, &len);
  std::string out(p, len);
  std::free(p);
  return out;
}

SCM to_scm(std::string_view s) { return scm_from_utf8_stringn(s.data(), s.size()); }

// (%tether-write kind string): the capturing ports' output. Line-buffered per stream; a write
// to the other stream first hands over what this one holds, so the order survives.
SCM tether_write(SCM kind_scm, SCM text) {
  const int kind = scm_to_int(kind_scm) == 0 ? 0 : 1;
  if (kind != last_kind) flush_kind(last_kind);
  last_kind = kind;
  std::string s = to_std(text);
  const bool newline = s.find('\n') != std::string::npos;
  pending[kind] += s;
  if (newline || pending[kind].size() > 64 * 1024) flush_kind(kind);
  return SCM_UNSPECIFIED;
}

SCM tether_flush(SCM kind_scm) {
  flush_kind(scm_to_int(kind_scm) == 0 ? 0 : 1);
  return SCM_UNSPECIFIED;
}

SCM tether_running_p(SCM cell) { return scm_from_bool(running_cell != 0 && scm_to_uint64(cell) == running_cell); }

// The rich-output procedures: they hand over what is pending on the streams first, so the
// order of a cell's output survives.
void flush_streams() {
  flush_kind(last_kind);
  flush_kind(0);
  flush_kind(1);
}
SCM jupyter_display(SCM mime, SCM text) {
  const std::string m = to_std(scm_object_to_string(mime, SCM_UNDEFINED));
  std::string t = to_std(scm_is_string(text) ? text : scm_object_to_string(text, SCM_UNDEFINED));
  flush_streams();
  if (io_of_cell != nullptr && io_of_cell->display) io_of_cell->display(scm_is_string(mime) ? to_std(mime) : m, std::move(t));
  return SCM_UNSPECIFIED;
}
SCM jupyter_clear_output(SCM wait) {
  flush_streams();
  if (io_of_cell != nullptr && io_of_cell->clear_output)
    io_of_cell->clear_output(!SCM_UNBNDP(wait) && scm_is_true(wait));
  return SCM_UNSPECIFIED;
}
SCM jupyter_page(SCM text) {
  std::string t = to_std(scm_is_string(text) ? text : scm_object_to_string(text, SCM_UNDEFINED));
  if (io_of_cell != nullptr && io_of_cell->page) io_of_cell->page(std::move(t));
  return SCM_UNSPECIFIED;
}

SCM lookup(SCM module, const char* name) { return scm_variable_ref(scm_c_module_lookup(module, name)); }

void define_in_kernel_module(void*) {
  scm_c_define_gsubr("%tether-write", 2, 0, 0, reinterpret_cast<scm_t_subr>(&tether_write));
  scm_c_define_gsubr("%tether-flush", 1, 0, 0, reinterpret_cast<scm_t_subr>(&tether_flush));
  scm_c_define_gsubr("%tether-running?", 1, 0, 0, reinterpret_cast<scm_t_subr>(&tether_running_p));
  scm_c_eval_string(helpers);
}

void define_helpers() {
  SCM m = scm_c_define_module("tether kernel", &define_in_kernel_module, nullptr);
  const auto keep = [&](SCM& slot, const char* name) { slot = scm_gc_protect_object(lookup(m, name)); };
  keep(run_cell_proc, "tether-run-cell");
  keep(completeness_proc, "tether-completeness");
  keep(names_proc, "tether-names");
  keep(describe_proc, "tether-describe");
  keep(make_port_proc, "tether-make-port");
  keep(interrupt_thunk_proc, "tether-interrupt-thunk");
  user_module = scm_gc_protect_object(scm_c_resolve_module("guile-user"));
  // The rich-output procedures, for users: defined in guile-user.
  const SCM previous = scm_set_current_module(user_module);
  scm_c_define_gsubr("jupyter-display", 2, 0, 0, reinterpret_cast<scm_t_subr>(&jupyter_display));
  scm_c_define_gsubr("jupyter-clear-output", 0, 1, 0, reinterpret_cast<scm_t_subr>(&jupyter_clear_output));
  scm_c_define_gsubr("jupyter-page", 1, 0, 0, reinterpret_cast<scm_t_subr>(&jupyter_page));
  scm_set_current_module(previous);
}

// scm_internal_catch plumbing: a body taking a std::function, a handler returning #f.
SCM call_body(void* data) { return (*static_cast<std::function<SCM()>*>(data))(); }
SCM catch_all(void*, SCM, SCM) { return SCM_BOOL_F; }
SCM guarded(std::function<SCM()> body) {
  return scm_internal_catch(SCM_BOOL_T, &call_body, &body, &catch_all, nullptr);
}

// Code points <-> bytes of UTF-8 text.
std::size_t byte_offset(std::string_view s, std::size_t code_points) {
  std::size_t i = 0;
  for (std::size_t n = 0; i < s.size() && n < code_points; ++n) {
    ++i;
    while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) ++i;
  }
  return i;
}
std::size_t code_points(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool delimiter(char c) { return std::strchr(" \t\r\n()[]\"';`,", c) != nullptr || c == '\0'; }

// The identifier around (or just before) byte offset pos: [start, end).
std::pair<std::size_t, std::size_t> word_at(std::string_view s, std::size_t pos, bool extend_right) {
  std::size_t start = pos, end = pos;
  while (start > 0 && !delimiter(s[start - 1])) --start;
  if (extend_right)
    while (end < s.size() && !delimiter(s[end])) ++end;
  return {start, end};
}

}  // namespace

void enter_guile_mode() {
  thread_local bool entered = false;
  if (entered) return;
  // The first thread initialises Guile and defines the helpers while the others wait: Guile's
  // own start-up is not safe to enter from two threads at once.
  std::call_once(helpers_once, [] {
    scm_init_guile();
    define_helpers();
  });
  scm_init_guile();  // no-op on the thread that initialised
  scm_set_current_module(user_module);
  scm_set_current_output_port(scm_call_1(make_port_proc, scm_from_int(0)));
  scm_set_current_error_port(scm_call_1(make_port_proc, scm_from_int(1)));
  entered = true;
}

cell_outcome run_cell(std::string_view code, std::uint64_t cell, const cell_io& io) {
  io_of_cell = &io;
  running_cell = cell;
  const SCM code_scm = to_scm(code);
  const SCM r = guarded([&] { return scm_call_2(run_cell_proc, code_scm, user_module); });
  running_cell = 0;  // an interrupt queued from now on finds no cell to stop
  scm_force_output(scm_current_output_port());
  scm_force_output(scm_current_error_port());
  flush_streams();
  io_of_cell = nullptr;

  cell_outcome out;
  if (scm_is_pair(r) && scm_is_eq(scm_car(r), scm_from_utf8_symbol("ok"))) {
    const SCM v = scm_cdr(r);
    if (scm_is_string(v)) out.result = to_std(v);
    return out;
  }
  out.ok = false;
  if (!scm_is_pair(r)) {  // the helper itself was interrupted before its own catch
    out.interrupted = true;
    out.ename = "KeyboardInterrupt";
    out.evalue = "the cell was interrupted (interrupt_request)";
    out.traceback = {out.ename + ": " + out.evalue};
    return out;
  }
  const SCM key = scm_cadr(r);
  out.interrupted = scm_is_eq(key, scm_from_utf8_symbol("kernel-interrupt"));
  out.ename = out.interrupted ? "KeyboardInterrupt" : to_std(scm_symbol_to_string(key));
  out.evalue = out.interrupted ? "the cell was interrupted (interrupt_request)" : to_std(scm_caddr(r));
  out.traceback.push_back(out.ename + ": " + out.evalue);
  for (SCM l = scm_cadddr(r); scm_is_pair(l); l = scm_cdr(l)) out.traceback.push_back(to_std(scm_car(l)));
  return out;
}

std::string completeness(std::string_view code) {
  const SCM c = to_scm(code);
  const SCM r = guarded([&] { return scm_call_1(completeness_proc, c); });
  return scm_is_string(r) ? to_std(r) : "unknown";
}

completion complete(std::string_view code, std::size_t cursor_pos) {
  const std::size_t pos = byte_offset(code, cursor_pos);
  const auto [start, end] = word_at(code, pos, false);
  completion out;
  out.cursor_start = code_points(code.substr(0, start));
  out.cursor_end = code_points(code.substr(0, pos));
  const SCM prefix = to_scm(code.substr(start, end - start));
  const SCM r = guarded([&] { return scm_call_2(names_proc, prefix, user_module); });
  for (SCM l = r; scm_is_pair(l); l = scm_cdr(l)) out.matches.push_back(to_std(scm_car(l)));
  return out;
}

std::optional<std::string> inspect(std::string_view code, std::size_t cursor_pos) {
  std::size_t pos = byte_offset(code, cursor_pos);
  if (pos == code.size() && pos > 0 && delimiter(code[pos - 1])) --pos;  // "(car|)" -> car
  auto [start, end] = word_at(code, pos, true);
  if (start == end) return std::nullopt;
  const SCM name = to_scm(code.substr(start, end - start));
  const SCM r = guarded([&] { return scm_call_2(describe_proc, name, user_module); });
  if (!scm_is_string(r)) return std::nullopt;
  return to_std(r);
}

guile_target this_guile_thread() {
  thread_local SCM self = scm_gc_protect_object(scm_current_thread());
  return guile_target{reinterpret_cast<void*>(SCM_UNPACK(self))};
}

void interrupt(guile_target target, std::uint64_t cell) {
  if (!target) return;
  const SCM thread = SCM_PACK(reinterpret_cast<scm_t_bits>(target.thread));
  (void)guarded([&] {
    return scm_system_async_mark_for_thread(scm_call_1(interrupt_thunk_proc, scm_from_uint64(cell)), thread);
  });
}

std::uint64_t next_cell_id() {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);  // relaxed: only uniqueness matters
}

}  // namespace tether_jupyter
