"""The --where expression language: grammar, precedence, missing values, and errors without eval."""

import pytest

from perceptlite.datasets.query import QueryError, compile_where, tokenize

GOOD = {"iaa": 55.0, "iqa": 70.0, "ista": 20.0, "width": 640, "height": 480}
FAILED = {"iaa": None, "iqa": None, "ista": None, "width": None, "height": None}


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("iqa >= 60 and iaa >= 50", True),
        ("iqa >= 60 and iaa >= 60", False),
        ("iqa > 80 or ista < 25", True),
        ("not iaa > 50", False),
        ("NOT (iaa > 50 AND iqa < 60)", True),
        ("iaa > 60 or iqa > 60 and ista > 50", False),  # and binds tighter than or
        ("(iaa > 60 or iqa > 60) and ista > 10", True),
        ("40 <= iaa < 60", True),
        ("40 <= iaa < 50", False),
        ("width == 640 and height != 640", True),
        ("width = 640", True),
        ("width * 2 > 1", None),
        ("iaa > -1e3 and iqa < .5e3", True),
        ("width > height", True),
        ("not not iaa == 55", True),
    ],
)
def test_expressions_evaluate_as_documented(expression, expected):
    if expected is None:
        with pytest.raises(QueryError):
            compile_where(expression)
        return
    assert compile_where(expression)(GOOD) is expected


def test_a_failed_record_matches_no_comparison():
    assert compile_where("iaa >= 0")(FAILED) is False
    assert compile_where("iaa < 0 or iaa >= 0")(FAILED) is False


@pytest.mark.parametrize(
    "expression, fragment",
    [
        ("", "empty"),
        ("iqa >=", "end of the expression"),
        ("iqa >= 60 and", "end of the expression"),
        ("(iqa >= 60", "expected ')'"),
        ("iqa >= 60)", "unexpected ')'"),
        ("quality > 5", "unknown name 'quality'"),
        ("iqa", "expected a comparison"),
        ("__import__('os').system('true')", "unexpected character"),
        ("__import__ > 1", "unknown name '__import__'"),
        ("iaa > 5; rm", "unexpected character ';'"),
        ("iaa > 5 # comment", "unexpected character '#'"),
        ("iaa > '5'", "unexpected character"),
    ],
)
def test_bad_expressions_give_one_line_errors(expression, fragment):
    with pytest.raises(QueryError) as error:
        compile_where(expression)
    message = str(error.value)
    assert fragment in message
    assert "\n" not in message


def test_tokens_report_positions():
    tokens = tokenize("iaa>=1.5 AND not(x)")
    assert [(t.kind, t.text, t.position) for t in tokens] == [
        ("name", "iaa", 0),
        ("op", ">=", 3),
        ("number", "1.5", 5),
        ("keyword", "and", 9),
        ("keyword", "not", 13),
        ("paren", "(", 16),
        ("name", "x", 17),
        ("paren", ")", 18),
        ("end", "", 19),
    ]
