"""Recursive algorithms without Python recursion.

Formulas built in loops (a sum of 10,000 terms, 10,000 nested ops) are far deeper than
Python's recursion limit, and the recursive-descent parser and the top-down rewrites
(slicing, chunk planning) follow their depth. Such a function is written as a generator
that *yields* each recursive call (a generator object) and receives its result:

    def depth(node):
        below = 0
        for a in node.args:
            below = max(below, (yield depth(a)))
        return 1 + below

    trampoline(depth(root))

`trampoline` keeps the pending calls on a list, so the depth is bounded by memory only.
An exception raised by a call propagates out of `trampoline` (no caller catches one
around a `yield`).
"""

from types import GeneratorType


def trampoline(call):
    """The return value of the generator `call`, running the calls it yields."""
    stack, result = [call], None
    while stack:
        try:
            sub = stack[-1].send(result)
        except StopIteration as done:
            stack.pop()
            result = done.value
            continue
        if type(sub) is not GeneratorType:
            raise TypeError(f"trampoline: a call yielded {type(sub).__name__}, not a "
                            "generator")  # a programming error, not a user's
        stack.append(sub)
        result = None
    return result
