"""Recall's query syntax, turned into the query objects LanceDB's full-text search takes.

Plain words (``push to github``) stay a plain string: LanceDB matches any of them (BM25) and recall
puts exact-phrase hits first. Anything else becomes a LanceDB ``FullTextQuery``:

| you write              | LanceDB query                                                           |
|------------------------|-------------------------------------------------------------------------|
| ``"push to github"``   | ``PhraseQuery`` (the words in this order; the index keeps positions)     |
| ``deploy*``            | ``MatchQuery`` with a fixed prefix: words starting ``deploy`` and at most |
|                        | 2 letters longer (LanceDB has no open-ended prefix query)               |
| ``+word``, ``a AND b`` | the term must occur (``Occur.MUST``)                                     |
| ``-word``, ``NOT word``| the term must not occur (``Occur.MUST_NOT``)                            |
| ``a OR b``, ``a b``    | either may occur (``Occur.SHOULD``), more matches rank higher            |

``AND``, ``OR`` and ``NOT`` are operators only in capitals. A query LanceDB could not run (an
unclosed quote, an operator with nothing after it, parentheses, only excluded terms) raises
`QuerySyntaxError` with one line that says what to change; nothing is searched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TEXT_COLUMN = "text"
PREFIX_EXTRA_LETTERS = 2
"""``term*`` matches words of the prefix plus at most this many letters (LanceDB's fuzzy distance cap)."""
_OPERATORS = {"AND", "OR", "NOT"}
_TOKEN = re.compile(r'"[^"]*"|\S+')
_WORD = re.compile(r"\w+", re.UNICODE)


class QuerySyntaxError(ValueError):
    """A recall query LanceDB's full-text search cannot run; the message is the line a user sees."""


@dataclass(frozen=True)
class ParsedQuery:
    """``fts``: what to hand LanceDB (the plain string, or a ``FullTextQuery``); ``words``: the words
    looked for (snippets highlight them, an embedder embeds them); ``plain``: no operators at all."""

    fts: object
    words: tuple[str, ...]
    plain: bool

    @property
    def text(self) -> str:
        return " ".join(self.words)


def parse_query(query: str, for_lancedb: bool = False) -> ParsedQuery:
    """The query for ``query`` (see the module doc); `QuerySyntaxError` when it cannot run.

    Its query objects are pylance's (``lance.query``, what a dataset scan takes, without importing
    lancedb); ``for_lancedb`` makes them LanceDB's classes of the same names (its hybrid search takes
    only its own)."""
    query = (query or "").strip()
    if query.count('"') % 2:
        raise QuerySyntaxError(f"unclosed quote in {query!r}: a phrase is written \"like this\"")
    if any(c in query for c in "()"):
        raise QuerySyntaxError(f"parentheses are not supported in {query!r}: use +word, -word, \"a phrase\", "
                               "AND, OR, NOT")
    tokens = _TOKEN.findall(query)
    if not any(t.startswith('"') or t in _OPERATORS or t[0] in "+-" or t.endswith("*") for t in tokens):
        return ParsedQuery(query, tuple(_WORD.findall(query)), True)
    return _structured(query, tokens, for_lancedb)


def _structured(query: str, tokens: list[str], for_lancedb: bool) -> ParsedQuery:
    if for_lancedb:
        from lancedb.query import BooleanQuery, MatchQuery, Occur, PhraseQuery
    else:
        from lance.query import BooleanQuery, MatchQuery, Occur, PhraseQuery

    clauses: list[tuple[Occur, object]] = []
    words: list[str] = []
    pending: str | None = None  # the operator waiting for its term
    previous_must = False
    for token in tokens:
        if token in _OPERATORS:
            if pending is not None or (token != "NOT" and not clauses):
                raise QuerySyntaxError(f"{token} needs a term on each side in {query!r}")
            pending = token
            continue
        occur = Occur.SHOULD
        if token[0] in "+-" and len(token) > 1 and not token.startswith('"'):
            occur = Occur.MUST if token[0] == "+" else Occur.MUST_NOT
            token = token[1:]
        if pending == "NOT":
            occur = Occur.MUST_NOT
        elif pending == "AND":
            occur = Occur.MUST
            if clauses and clauses[-1][0] == Occur.SHOULD and not previous_must:
                clauses[-1] = (Occur.MUST, clauses[-1][1])
        pending = None
        term = _term(token, query, MatchQuery, PhraseQuery)
        if term is None:
            continue
        clauses.append((occur, term))
        previous_must = occur == Occur.MUST
        if occur != Occur.MUST_NOT:
            words.extend(_WORD.findall(token))
    if pending is not None:
        raise QuerySyntaxError(f"{pending} at the end of {query!r} has no term after it")
    if not any(occur != Occur.MUST_NOT for occur, _ in clauses):
        raise QuerySyntaxError(f"{query!r} only excludes: add at least one word to look for")
    if len(clauses) == 1:
        return ParsedQuery(clauses[0][1], tuple(words), False)
    return ParsedQuery(BooleanQuery(clauses), tuple(words), False)


def _term(token: str, query: str, match, phrase):
    """One term's query: a phrase, a prefix or a word; None for a token with no word in it."""
    if token.startswith('"'):
        inner = token.strip('"')
        if not _WORD.search(inner):
            raise QuerySyntaxError(f"empty phrase in {query!r}")
        return phrase(inner, TEXT_COLUMN)
    if token.endswith("*"):
        stem = token.rstrip("*")
        if not re.fullmatch(r"\w+", stem):
            raise QuerySyntaxError(f"{token!r} in {query!r}: a prefix is letters or digits followed by *")
        return match(stem, TEXT_COLUMN, fuzziness=PREFIX_EXTRA_LETTERS, prefix_length=len(stem))
    if not _WORD.search(token):
        return None
    return match(token, TEXT_COLUMN)
