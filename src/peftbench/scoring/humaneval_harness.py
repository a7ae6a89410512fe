"""The program that runs one HumanEval candidate against its tests, inside the sandbox.

`humaneval.grade_detailed` runs this file's text as the sandbox's main.py. Standard library only;
importing this module does nothing. Its inputs come on fd 3 (the sandbox's secret), JSON:
{nonce, program, context, test, counter, entry_point}; its one verdict goes on fd 4 as the line
"<nonce> <reason> <asserts executed> <repr(detail)>". It reads fd 3 and closes it before anything
of the candidate runs, so a program that prints, exits or writes on fd 4 cannot produce a line
that starts with the nonce.

How it proves the tests ran:

* The tests come from a namespace the candidate never had: the prompt (the dataset's trusted
  text, with helpers some tests call: `poly`, `encode_cyclic`, `encode_shift`) and the test code
  are executed in a fresh namespace with a copy of the builtins taken before the candidate ran.
  `check` is taken from there; a candidate that defines its own `check`, `poly` or `assert`-less
  tests changes nothing.
* Every `assert` of the test code counts itself when it runs (`humaneval.count_asserts` rewrites
  the test code before it comes here: each assert calls the function named `counter` first); a
  check that returns without having run one is no pass.
* The candidate's function is called through a guard: a returned value must be made of built-in
  types (bool, int, float, complex, str, bytes, None, list, tuple, dict, set, frozenset, and
  collections' OrderedDict, defaultdict, Counter, deque), so that an object whose `__eq__`
  always says True cannot pass an `assert candidate(x) == y`.
* The modules the tests import (builtins, math, random, copy, string) are compared after the
  tests with their state before the candidate ran: a candidate that replaced `math.fabs` or a
  builtin, or put another module into sys.modules, fails as "tampered".
* Only a verdict written by this program counts: a candidate that exits (sys.exit, os._exit, a
  signal to itself) before its tests finish leaves no verdict, and the caller grades it a failure.
  Everything used after the candidate started (os.write, repr, the exception classes...) is bound
  to local variables first: replacing `os.write` or a builtin, or importing `__main__`, does not
  reach them.

What it does not claim: the candidate runs in this process, so a program written against this
harness, that walks the interpreter's frames or objects (sys._getframe, gc, a signal handler's
frame) to find the nonce or the counter, can forge a pass. The sandbox still holds such a program."""

from __future__ import annotations


def main() -> None:
    import builtins
    import collections
    import copy
    import json
    import math
    import os
    import random
    import string
    import sys

    write, exit_now, str_exact = os.write, os._exit, str.__str__
    type_, repr_, str_, len_, id_, vars_, getattr_, set_ = type, repr, str, len, id, vars, getattr, set
    BaseException_, AssertionError_, MemoryError_, SystemExit_ = BaseException, AssertionError, MemoryError, SystemExit
    TypeError_ = TypeError
    modules = sys.modules

    with os.fdopen(3, "rb") as f:
        spec = json.loads(f.read())
    nonce = spec["nonce"]

    def text(value) -> str:
        try:
            return str_exact(str_(value))[:500]
        except BaseException_:  # noqa: BLE001  (a candidate's __str__ may raise anything)
            return "<unprintable>"

    def describe(error) -> str:
        message = text(error)
        return text(type_(error).__name__) + (": " + message if message else "")

    def verdict(reason: str, asserts: int = 0, detail: str = "") -> None:
        line = nonce + " " + reason + " " + str_(asserts) + " " + repr_(str_exact(detail)[:500]) + "\n"
        write(4, line.encode("utf-8", "backslashreplace"))
        exit_now(0)

    # The tests, from the trusted prompt and test code; the caller rewrote each assert of the
    # test code to call the counter first.
    executed = [0]

    def count_assert() -> None:
        executed[0] += 1

    try:
        tests = {"__name__": "humaneval_tests", "__builtins__": dict(vars(builtins)), spec["counter"]: count_assert}
        exec(compile(spec["context"], "prompt.py", "exec"), tests)
        exec(compile(spec["test"], "test.py", "exec"), tests)
        check = tests["check"]
    except BaseException as error:  # noqa: BLE001
        verdict("harness_error", 0, "the row's prompt or test does not run: " + describe(error))

    watched = {"builtins": builtins, "math": math, "random": random, "copy": copy, "string": string}
    before = {name: dict(vars(module)) for name, module in watched.items()}

    def tampered() -> str:
        for name, module in watched.items():
            if modules.get(name) is not module:
                return "sys.modules[" + repr_(name) + "] was replaced"
            now, then = vars_(module), before[name]
            if len_(now) != len_(then):
                return name + " gained or lost attributes"
            for key, value in then.items():
                if now.get(key, count_assert) is not value:
                    return name + "." + str_exact(key) + " was replaced"
        return ""

    plain_types = (bool, int, float, complex, str, bytes, type(None), list, tuple, dict, set, frozenset,
                   collections.OrderedDict, collections.defaultdict, collections.Counter, collections.deque)
    mappings = (dict, collections.OrderedDict, collections.defaultdict, collections.Counter)
    dict_items = dict.items

    def one_of(kind, types) -> bool:
        for t in types:  # `is`, not `in`: a metaclass's __eq__ or __hash__ cannot fake it
            if kind is t:
                return True
        return False

    def plain(value) -> str:
        """"" when `value` is made of built-in types only, else the name of the first other type."""
        stack, seen = [value], set_()
        while stack:
            item = stack.pop()
            kind = type_(item)
            if not one_of(kind, plain_types):
                return text(getattr_(kind, "__qualname__", "?"))
            if one_of(kind, mappings):
                if id_(item) not in seen:
                    seen.add(id_(item))
                    for key, val in dict_items(item):
                        stack.append(key)
                        stack.append(val)
            elif not one_of(kind, plain_types[:7]):  # a container
                if id_(item) not in seen:
                    seen.add(id_(item))
                    stack.extend(item)
        return ""

    # The candidate.
    try:
        code = compile(spec["program"], "candidate.py", "exec")
    except BaseException as error:  # noqa: BLE001  (SyntaxError, ValueError for NUL bytes, ...)
        verdict("syntax_error", 0, describe(error))
    namespace = {"__name__": "candidate", "__builtins__": builtins}
    try:
        exec(code, namespace)
    except MemoryError_ as error:
        verdict("memory", 0, describe(error) + " (while the program was being defined)")
    except SystemExit_ as error:
        verdict("exited_early", 0, describe(error) + " (while the program was being defined)")
    except BaseException_ as error:  # noqa: BLE001
        verdict("exception", 0, describe(error) + " (while the program was being defined)")
    candidate = namespace.get(spec["entry_point"])
    if candidate is None:
        verdict("missing_function", 0, "the program defines no " + spec["entry_point"])

    def guarded(*args, **kwargs):
        result = candidate(*args, **kwargs)
        other = plain(result)
        if other:
            raise TypeError_("returned a " + other + ", not a value of built-in types")
        return result

    # Some tests call the function by its name (HumanEval/33 compares it with itself): in the
    # tests' namespace that name is the candidate's function, as in human-eval's one namespace.
    tests[spec["entry_point"]] = guarded
    try:
        check(guarded)
    except AssertionError_ as error:
        verdict("failed_assertion", executed[0], text(error))
    except MemoryError_ as error:
        verdict("memory", executed[0], describe(error))
    except SystemExit_ as error:
        verdict("exited_early", executed[0], describe(error) + " (during the tests)")
    except BaseException_ as error:  # noqa: BLE001
        verdict("exception", executed[0], describe(error))
    changed = tampered()
    if changed:
        verdict("tampered", executed[0], changed)
    if executed[0] == 0:
        verdict("no_test_ran", 0, "check returned without running an assert")
    verdict("passed", executed[0])


if __name__ == "__main__":
    main()
