"""The lexical layer of the formula language: formula text to tokens.

Owns the token kinds (ws, float, int, name, op, end) and the caret that error messages
use to point at a position in the text; the grammar is in parser.py.
"""

import re
from collections import namedtuple

from ..errors import formula_error

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<float>(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
  | (?P<int>\d+)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<op>\*\*|[-+*/|,()\[\]])
""", re.VERBOSE)

Token = namedtuple("Token", "kind text pos")


def caret(text, pos):
    """Two lines pointing at the offending character, so long formulas stay readable."""
    return f"\n    {text}\n    {' ' * pos}^ (position {pos})"


def tokenize(text):
    """Split a formula into tokens, ending with an 'end' token."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise formula_error(text, f"unexpected character {text[pos]!r}",
                                f"not part of the formula language{caret(text, pos)}")
        if m.lastgroup != "ws":
            tokens.append(Token(m.lastgroup, m.group(), pos))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens
