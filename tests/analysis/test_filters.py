import builtins
import re

import pytest

from peftbench.errors import UserError
from peftbench.analysis.filters import BOOL, MAX_CHARS, MAX_DEPTH, NUMBER, TEXT, compile_filter

COLUMNS = {"family": TEXT, "experiment": TEXT, "test_acc": NUMBER, "mem_max": NUMBER,
           "near_best": BOOL, "error": TEXT, "status": TEXT}
ROWS = [
    {"family": "LoRA", "experiment": "lora/llama-rank32", "test_acc": 0.48, "mem_max": 2.1e10,
     "near_best": True, "error": None, "status": "success"},
    {"family": "IA3", "experiment": "ia3/default", "test_acc": 0.31, "mem_max": 1.9e10,
     "near_best": False, "error": None, "status": "success"},
    {"family": "LoRA", "experiment": "lora/oom", "test_acc": None, "mem_max": float("nan"),
     "near_best": False, "error": "CUDA out of memory", "status": "failed"},
]


def matching(expression):
    f = compile_filter(expression, COLUMNS)
    return [row["experiment"] for row in ROWS if f.matches(row)]


@pytest.mark.parametrize("expression, expected", [
    ('family == "LoRA" and test_acc > 0.4', ["lora/llama-rank32"]),
    ('"rank32" in experiment', ["lora/llama-rank32"]),
    ('family in ("LoRA", "IA3")', ["lora/llama-rank32", "ia3/default", "lora/oom"]),
    ("family in ('IA3',)", ["ia3/default"]),
    ('family not in ("IA3")', ["lora/llama-rank32", "lora/oom"]),
    ('"lora" not in experiment', ["ia3/default"]),
    ("0.3 < test_acc < 0.4", ["ia3/default"]),
    ("test_acc > -1 and mem_max < 2e10", ["ia3/default"]),
    ("family in ['IA3']", ["ia3/default"]),
    ("near_best == True or error != None", ["lora/llama-rank32", "lora/oom"]),
    ("near_best", ["lora/llama-rank32"]),
    ("not near_best", ["ia3/default", "lora/oom"]),
    ("test_acc >= 0.31 and test_acc <= 0.31", ["ia3/default"]),
    ("test_acc < 0.4 or mem_max > 2e10", ["lora/llama-rank32", "ia3/default"]),
    ('NOT (family == "LoRA") OR status != "success"', ["ia3/default", "lora/oom"]),
    ("error != null", ["lora/oom"]),
    ("error == null and test_acc > 0", ["lora/llama-rank32", "ia3/default"]),
    ("near_best == true", ["lora/llama-rank32"]),
    ('family == "LoRA" and (test_acc > 0.4 or "memory" in error)', ["lora/llama-rank32", "lora/oom"]),
    (r'experiment == "lora/llama-rank32" or family == "it\'s"', ["lora/llama-rank32"]),
])
def test_filters_select_the_expected_rows(expression, expected):
    assert matching(expression) == expected


def test_missing_values_fail_ordering_comparisons_but_equal_null():
    assert matching("test_acc < 1") == ["lora/llama-rank32", "ia3/default"]
    assert matching("test_acc == null") == ["lora/oom"]
    assert matching("test_acc != 0.48") == ["ia3/default", "lora/oom"]


def test_and_binds_tighter_than_or():
    # a or (b and c), not (a or b) and c
    assert matching('family == "IA3" or family == "LoRA" and test_acc > 0.4') == ["lora/llama-rank32", "ia3/default"]


@pytest.mark.parametrize("attack", [
    "__import__('os').system('touch /tmp/pwned')",
    "__import__",
    "open('/etc/passwd')",
    "exec('print(1)')",
    "eval('1')",
    "family.__class__",
    "family.upper() == 'LORA'",
    "experiment[0] == 'l'",
    "lambda: 1",
    "(lambda x: x)(1) == 1",
    "[c for c in ()]",
    "{'a': 1}",
    "test_acc > 0.4; import os",
    "import os",
    "globals()",
    "family == 'x' if True else 1",
    "test_acc + 1 > 0",
    "test_acc ** 2 > 0",
    "`ls`",
    "family == \"LoRA\" and os.system('x')",
])
def test_code_is_rejected_with_a_user_error(attack):
    with pytest.raises(UserError, match="bad filter expression"):
        compile_filter(attack, COLUMNS)


def test_filters_are_parsed_to_a_tree_and_never_compiled_to_code_or_run(monkeypatch):
    import ast

    def forbidden(*args, **kwargs):
        raise AssertionError("the filter language must not call eval/exec")

    real_compile = builtins.compile

    def tree_only(source, filename, mode, flags=0, *args, **kwargs):
        # ast.parse calls compile with PyCF_ONLY_AST: a tree, no code object
        assert flags & ast.PyCF_ONLY_AST, "a filter must never be compiled to code"
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    for name in ("eval", "exec"):
        monkeypatch.setattr(builtins, name, forbidden)
    monkeypatch.setattr(builtins, "compile", tree_only)
    assert matching('family == "LoRA" and test_acc > 0.4') == ["lora/llama-rank32"]
    with pytest.raises(UserError):
        compile_filter("__import__('os')", COLUMNS)


@pytest.mark.parametrize("expression, message", [
    ("famly == 'LoRA'", "did you mean 'family'"),
    ("test_ac > 0.4", "did you mean 'test_acc'"),
    ("speed > 3", "available: error, experiment, family"),
    ("open('x')", "function calls are not allowed"),
    ("family.upper", "attribute access is not allowed"),
    ("experiment[0]", "subscripts are not allowed"),
    ("lambda x: x", "lambda"),
    ("family = 'LoRA'", "use '=='"),
    ("family == 'LoRA' && test_acc > 0", "use 'and'"),
    ("test_acc > 'high'", "cannot compare"),
    ("family > 3", "cannot compare"),
    ("family < 'M'", "needs numbers"),
    ("'4' in test_acc", "substring test on text"),
    ("experiment contains 'x'", "'contains' is now written with 'in'"),
    ("error is None", "use '==' or '!='"),
    ("test_acc & 1", "use 'and'"),
    ("-test_acc > 0", "arithmetic"),
    ("f'{family}' == 'x'", "f-strings"),
    ("family in ('a', experiment)", "expected a number, a string"),
    ("family in ('LoRA', 3)", "cannot be in a list"),
    ("{1, 2}", "braces"),
    ("near_best and true", "not a condition"),
    ("test_acc", "not a condition"),
    ("test_acc > 40%", "fractions"),
    ("family == 'LoRA' and", "found the end"),
    ("(family == 'LoRA'", "expected ')'"),
    ("test_acc > 0.4 test_acc", "invalid syntax"),
    ("family == 'LoRA", "unterminated string"),
    ("", "empty expression"),
    ("family in 'LoRA'", "a list in parentheses"),
    ("import os", "Python, not part of the filter language"),
])
def test_bad_filters_explain_what_is_wrong(expression, message):
    with pytest.raises(UserError, match=re.escape(message)):
        compile_filter(expression, COLUMNS)


def test_error_message_points_at_the_offending_position():
    with pytest.raises(UserError) as info:
        compile_filter("family == 'x' and famly == 'y'", COLUMNS)
    lines = str(info.value).splitlines()
    assert lines[-1].index("^") == lines[-2].index("famly")


def test_type_errors_point_at_the_comparison():
    with pytest.raises(UserError) as info:
        compile_filter("near_best and family > 3", COLUMNS)
    lines = str(info.value).splitlines()
    assert lines[-1].index("^") == lines[-2].index("family")


def test_keywords_are_case_insensitive_and_numbers_accept_exponents():
    assert matching("NOT near_best AND mem_max < 1.95E10 Or family In ('x') and error == NULL") == ["ia3/default"]
    assert matching("test_acc > 4.8e-1 or near_best == TRUE") == ["lora/llama-rank32"]


def test_strings_keep_their_case_and_escapes():
    assert matching('family == "lora"') == []
    assert matching('"rank32" IN experiment and family == "Lo\\x52A"') == ["lora/llama-rank32"]
    assert compile_filter('error == "a\\"b" or error == "AND"', COLUMNS).matches({"error": 'a"b'})


@pytest.mark.parametrize("hostile", [
    "not (" * 200 + "near_best" + ")" * 200,
    "(" * 199 + "near_best" + ")" * 199 + " and" + " not" * 300 + " near_best",
    "- " * 900 + "1 == test_acc",
    "-" * 1990 + "1 == test_acc",
    "near_best and " * 1000 + "near_best",
    "(" * 1000 + "near_best" + ")" * 1000,
    "test_acc > 0 " + "or test_acc > 0 and not near_best " * 60,
])
def test_deep_or_long_filters_are_user_errors_not_recursion_errors(hostile):
    with pytest.raises(UserError, match="bad filter expression: ") as info:
        compile_filter(hostile, COLUMNS)
    assert len(str(info.value)) < 400, "the message shows a window of the filter, not all of it"


def test_the_depth_limit_leaves_room_for_real_filters():
    assert MAX_DEPTH >= 20 and MAX_CHARS >= 500
    nested = "(" * 10 + "not " * 10 + "near_best" + ")" * 10
    assert matching(nested) == ["lora/llama-rank32"]


@pytest.mark.parametrize("hostile", [
    "not (" * 200 + "near_best" + ")" * 200,
    "near_best and " * 1000 + "near_best",
    "__import__('os').system('touch /tmp/pwned')",
])
def test_compare_refuses_a_hostile_filter_with_exit_2_naming_it(hostile, make_result, write_run, tmp_path, capsys):
    from peftbench.cli import main

    write_run(tmp_path / "lora--a.json", make_result("lora/a", 0.5))
    assert main(["compare", str(tmp_path), "--filter", hostile]) == 2
    err = capsys.readouterr().err
    assert "bad filter expression" in err and hostile[:20] in err and "Traceback" not in err
