#!/usr/bin/python3
"""Jupyter's kernel conformance suite (jupyter_kernel_test) against tether-guile-kernel.

Run with Debian's Python and the build's kernelspec:
  JUPYTER_PATH=<build dir>/share/jupyter /usr/bin/python3 test_conformance.py -v
"""
import unittest

import jupyter_kernel_test


class TetherGuileKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = "tether-guile"
    language_name = "scheme"
    file_extension = ".scm"

    code_hello_world = '(display "hello, world")'
    code_stderr = '(display "to stderr" (current-error-port))'
    code_generate_error = '(error "this cell fails")'
    code_execute_result = [
        {"code": "(+ 1 2)", "result": "3"},
        {"code": '(string-append "a" "b")', "result": '"ab"'},
        {"code": "(list 1 'two \"three\")", "result": '(1 two "three")'},
    ]
    completion_samples = [
        {"text": "(string-append/sh", "matches": {"string-append/shared"}},
        {"text": "(call-with-output-str", "matches": {"call-with-output-string"}},
    ]
    complete_code_samples = ["(+ 1 2)", "(define (f x)\n  (* x x))", "42", ""]
    incomplete_code_samples = ["(+ 1", '(display "abc', "(define (f x)\n  (if x"]
    invalid_code_samples = [")", "(a . b c)"]
    code_inspect_sample = "string-append"
    code_page_something = '(jupyter-page "a page of help")'
    code_clear_output = "(jupyter-clear-output)"
    code_display_data = [
        {"code": '(jupyter-display "text/html" "<b>bold</b>")', "mime": "text/html"},
        {"code": '(jupyter-display "text/plain" "plain")', "mime": "text/plain"},
    ]
    code_history_pattern = "(+ 1 2)"
    supported_history_operations = ("tail", "range", "search")


if __name__ == "__main__":
    unittest.main()
