"""The query language (mmsearch.query.parse): what each query means, and errors that point at the term."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsearch.errors import UsageError
from mmsearch.query.parse import QuerySyntaxError, Term, parse


def _terms(query: str) -> list[tuple[str, float]]:
    return [(t.text, t.weight) for t in parse(query)]


@pytest.mark.parametrize("query, terms", [
    ("beach + sunset - people", [("beach", 1), ("sunset", 1), ("people", -1)]),
    ("2:dog + cat", [("dog", 2), ("cat", 1)]),
    ("0.5:x", [("x", 0.5)]),
    (".25:x - 3:y", [("x", 0.25), ("y", -3)]),
    ("2: dog", [("dog", 2)]),
    ("a red circle - red", [("a red circle", 1), ("red", -1)]),
    ("  spaced   +   out  ", [("spaced", 1), ("out", 1)]),
    ("tab\t-\tseparated", [("tab", 1), ("separated", -1)]),
    ("C++ - java", [("C++", 1), ("java", -1)]),
    ('dog + "a - b"', [("dog", 1), ("a - b", 1)]),
    ('"1 + 1"', [("1 + 1", 1)]),
    ('2:"x + y" - z', [("x + y", 2), ("z", -1)]),
    ('"hello" + world', [("hello", 1), ("world", 1)]),
    ('say "hi" + wave', [('say "hi"', 1), ("wave", 1)]),
    ("t-shirt - x-ray", [("t-shirt", 1), ("x-ray", -1)]),
], ids=lambda x: x if isinstance(x, str) else None)
def test_combined_queries_parse_into_signed_weighted_terms(query, terms):
    assert _terms(query) == terms


@pytest.mark.parametrize("query", [
    "a red bicycle", "t-shirt", "x-ray", "a t-shirt for x-ray day", "C++", "dog+cat", "dog -cat", "dog- cat",
    "-20% off", "+1 for this", "10:30 meeting", "2:1 ratio", "3:16", "2:", "psalm 23:4", '"hello"', 'a "quoted" word',
    '5" floppy', '5" floppy + disk', "  leading and trailing spaces  ", "e-mail", "---", "+++", "a+ grade",
    "naïve café – déjà vu", "红色的自行车", "one - two".replace(" - ", " – "),
])
def test_a_query_without_operators_is_the_text_exactly_as_typed(query):
    assert parse(query) == (Term(query, 1.0, 1),)


@pytest.mark.parametrize("query, column, says", [
    ("dog + + cat", 7, "empty term"),
    ("dog +", 6, "empty term"),
    ("dog -   ", 9, "empty term"),
    ("+ dog", 1, "empty term"),
    ("-", 1, "empty term"),
    ("+", 1, "empty term"),
    ('dog + ""', 7, "empty term"),
    ('dog + " "', 7, "empty term"),
    ("0:dog + cat", 1, 'zero weight "0:"'),
    ("cat - 0.0:dog", 7, 'zero weight "0.0:"'),
    ("9" * 400 + ":dog + cat", 1, 'weight "' + "9" * 20 + '…:" is too large'),  # float() gives inf, not an error
    ('dog + 5" floppy', 8, "unclosed quote"),
    ('2:"dog', 3, "unclosed quote"),
])
def test_errors_name_the_query_and_the_column_of_the_offending_term(query, column, says):
    with pytest.raises(QuerySyntaxError) as info:
        parse(query)
    assert isinstance(info.value, UsageError) and info.value.column == column
    assert str(info.value).startswith(f'query "{query}": {says} at column {column}')


def test_the_briefs_example_message():
    with pytest.raises(UsageError, match=re.escape('query "dog + + cat": empty term at column 7')):
        parse("dog + + cat")


def test_each_term_knows_its_column():
    assert [t.column for t in parse("beach + sunset - 2:people")] == [1, 9, 18]


# ---- properties -------------------------------------------------------------------------------------------
WORD = st.text(alphabet="abcxyz-+:'.0123", min_size=1, max_size=8).filter(lambda w: w not in ("+", "-"))
PHRASE = st.lists(WORD, min_size=1, max_size=4).map(" ".join).filter(lambda p: not re.match(r"[\d.]+:\D", p))


@given(PHRASE)
@settings(max_examples=300, deadline=None)
def test_text_whose_words_are_never_a_lone_plus_or_minus_is_one_term_as_typed(text):
    """Hyphens and pluses inside words (x-ray, C++, dog+cat), times (10:30): plain text, untouched."""
    assert parse(text) == (Term(text, 1.0, 1),)


@given(st.lists(st.tuples(st.sampled_from([1, -1]), st.sampled_from([1, 2, 0.5, 3.25]), PHRASE),
                min_size=2, max_size=5))
@settings(max_examples=300, deadline=None)
def test_terms_written_in_the_language_parse_back(terms):
    query = ""
    for n, (sign, weight, text) in enumerate(terms):
        op = "" if n == 0 else (" + " if sign > 0 else " - ")
        query += op + (f"{weight}:" if weight != 1 else "") + f'"{text}"'
    want = [(text, (1 if n == 0 else sign) * weight) for n, (sign, weight, text) in enumerate(terms)]
    assert _terms(query) == want


@given(st.text(alphabet='ab +-:"2. ', max_size=20))
@settings(max_examples=500, deadline=None)
def test_any_text_parses_or_fails_with_a_column_inside_it(text):
    try:
        terms = parse(text)
    except QuerySyntaxError as exc:
        assert 1 <= exc.column <= len(text) + 1
    else:
        assert terms and all(t.weight != 0 for t in terms)
