"""Alias strings of the string API: "X = Vi(3)", "X = Vi(0, 3)", "G = Pm(1)",
"V = Var(pos, dim, cat)" and the 2018 KeOps spellings "Vx(3)" / "Vy(3)", to Alias tuples
(name, position, category, dim); duplicate names or positions are errors.
"""

import re
from collections import namedtuple

from ..errors import formula_error
from .node import CAT_I, CAT_J, CAT_P, var

Alias = namedtuple("Alias", "name pos cat dim")

# Variable constructors: name -> category. Vx/Vy are the 2018 KeOps spellings of Vi/Vj.
VAR_CATS = {"Vi": CAT_I, "Vx": CAT_I, "Vj": CAT_J, "Vy": CAT_J, "Pm": CAT_P}

# "NAME = Ctor(i, j, ...)": a flat pattern is enough for this fixed shape.
_ALIAS = re.compile(r"\s*([A-Za-z_]\w*)\s*=\s*([A-Za-z_]\w*)\s*"
                    r"\(\s*(-?\d+(?:\s*,\s*-?\d+)*)?\s*\)\s*$")
_ALIAS_FORMS = "'NAME = Vi(dim)', 'NAME = Vj(pos, dim)', 'NAME = Pm(dim)' or " \
               "'NAME = Var(pos, dim, cat)'"


def _alias_error(alias_text, formula, detail):
    return formula_error(formula, f"alias '{alias_text}'", detail)


def _var_spec(ctor, ints, text, formula):
    """(pos or None, cat, dim) from a constructor name and its integer arguments."""
    if ctor == "Var":
        if len(ints) != 3:
            raise _alias_error(text, formula, "Var takes (pos, dim, cat)")
        return ints[0], ints[2], ints[1]
    if ctor not in VAR_CATS:
        raise _alias_error(text, formula, f"unknown category '{ctor}': expected one of "
                           "Vi, Vj, Pm, Var (or the old Vx, Vy)")
    if len(ints) not in (1, 2):
        raise _alias_error(text, formula, f"{ctor} takes (dim) or (pos, dim)")
    pos = ints[0] if len(ints) == 2 else None
    return pos, VAR_CATS[ctor], ints[-1]


def _parse_one_alias(text, formula):
    """'NAME = Ctor(ints)' -> (name, pos or None, cat, dim), with the values checked."""
    m = _ALIAS.match(text) if isinstance(text, str) else None
    if m is None:
        raise _alias_error(text, formula, f"malformed alias, expected {_ALIAS_FORMS}")
    name, ctor, ints = m.group(1), m.group(2), m.group(3)
    ints = [int(x) for x in ints.split(",")] if ints else []
    pos, cat, dim = _var_spec(ctor, ints, text, formula)
    for bad, detail in (
            (cat not in (CAT_I, CAT_J, CAT_P),
             f"unknown category {cat}: expected 0 (i), 1 (j) or 2 (parameter)"),
            (dim < 1, f"dimension must be >= 1, got {dim}"),
            (pos is not None and pos < 0, f"position must be >= 0, got {pos}")):
        if bad:
            raise _alias_error(text, formula, detail)
    return name, pos, cat, dim


def parse_aliases(aliases, formula=""):
    """Alias strings -> list of Alias. Without an explicit position, an alias takes its
    index in the list (the pykeops convention)."""
    if isinstance(aliases, str):
        aliases = [aliases]
    result, by_name, by_pos = [], {}, {}
    for index, text in enumerate(aliases):
        name, pos, cat, dim = _parse_one_alias(text, formula)
        pos = index if pos is None else pos
        if name in by_name:
            raise _alias_error(text, formula, f"name '{name}' is already defined by "
                               f"'{by_name[name]}'")
        if pos in by_pos:
            raise _alias_error(text, formula, f"position {pos} is already taken by "
                               f"'{by_pos[pos]}'")
        by_name[name], by_pos[pos] = text, text
        result.append(Alias(name, pos, cat, dim))
    return result


def parse_output_alias(text, formula=""):
    """generic_sum's output string ("A = Vi(2)"): an Alias with pos -1, category i or j."""
    name, _, cat, dim = _parse_one_alias(text, formula)
    if cat not in (CAT_I, CAT_J):
        raise formula_error(formula, f"output alias '{text}'",
                            "the output must be indexed by i (Vi) or j (Vj)")
    return Alias(name, -1, cat, dim)


def alias_vars(aliases):
    """list of Alias -> {name: Var node}, the mapping parse_formula expects."""
    return {a.name: var(a.pos, a.dim, a.cat) for a in aliases}
