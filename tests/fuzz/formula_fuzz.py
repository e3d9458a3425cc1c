"""Differential fuzzing of LazyTensor reductions against dense torch (issue 11).

This file is the driver. It owns the run: the schedule of groups, drawing each group's
configuration and formulas, checking it and narrowing each failure down to one formula,
the tally and its report, and the command line:

    python tests/fuzz/formula_fuzz.py --seed S --count N [--group G]

The fuzzer's parts: fuzz_ops (the Expr node and the op tables), fuzz_dense (dense torch
evaluation and fragility), fuzz_generator and fuzz_rules (random formulas), fuzz_inputs
(the variables), fuzz_reductions (reference reductions and tolerances) and fuzz_checks
(one run of a group against the reference).

- Formulas (`Expr`) are trees whose nodes know their public-API spelling (`text`), how to
  build their LazyTensor from their children's (`lazy`) and how to compute the same values
  densely with torch (`dense`). Leaves are i-variables, j-variables and parameters of dims
  1-4 (values in [-1.5, 1.5] or in [0.5, 2], with or without batch dims), sorted knot
  vectors, Python numbers and lists.
- Every node is evaluated densely on broadcast (..., N, M, D) tensors twice, in float64
  (the reference) and in float32: their difference measures how much rounding moves each
  value, which scales the tolerances. An entry is *fragile* where an argument sits within
  rounding reach of a discontinuity or kink (Floor, comparisons, Abs, ties of Max, knots,
  ...): the library may then legitimately land on the other side, so it is not compared.
- Inputs are drawn before the formulas, so the generator measures the actual range of
  every subexpression and keeps each op's arguments inside its domain: an argument of Log
  that is not safely positive is wrapped in Exp, Square + c, ... ; values above LIMIT are
  squashed (scaled, Atan, Sin, Clamp).
- Groups share kernels (each distinct formula compiles one, ~1 s): the reductions act on
  each component separately, so a group concatenates ~24 formulas into one LazyTensor,
  reduces it once, maps the failing components back to their formula and re-runs that
  formula alone. A group is one (reduction, axis, batch dims, dtype). Weighted reductions
  (logsumexp with weight=, sumsoftmaxweight) share one scalar formula and concatenate the
  weights. Gradient groups compare torch.autograd.grad of a reduction with respect to all
  variables with the same on the dense reference, and bisect a failing group down to one
  formula.
"""

import argparse
import dataclasses
import os
import random
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from lazykeops.tensor.lazy_reduce import lower

from fuzz_checks import Group, forward_run, grad_ready, grad_run
from fuzz_dense import Dense
from fuzz_generator import Generator
from fuzz_inputs import Inputs
from fuzz_ops import to_lazy
from fuzz_reductions import ACCS, BASE, CALLS, GRAD_REDUCTIONS, INDICES_ONLY, REDUCTIONS, \
    SUM_SCHEMES, WEIGHTED

FORWARD_SIZE, GRAD_SIZE = 24, 6   # formulas per group


FORWARD_SLOTS, GRAD_SLOTS = len(REDUCTIONS), 3   # groups per period of the schedule


def schedule(index):
    """(kind, reduction) of group `index`: each period runs every reduction once, then
    three gradient groups (rotating over GRAD_REDUCTIONS)."""
    period, slot = divmod(index, FORWARD_SLOTS + GRAD_SLOTS)
    if slot < FORWARD_SLOTS:
        return "forward", REDUCTIONS[slot]
    turn = period * GRAD_SLOTS + slot - FORWARD_SLOTS
    return "grad", GRAD_REDUCTIONS[turn % len(GRAD_REDUCTIONS)]


def plan(count, forward_size=FORWARD_SIZE, grad_size=GRAD_SIZE):
    """The group indices and sizes that together hold `count` formulas."""
    out, total, index = [], 0, 0
    while total < count:
        full = forward_size if schedule(index)[0] == "forward" else grad_size
        size = min(full, count - total)
        out.append((index, size))
        total, index = total + size, index + 1
    return out


def draw_sizes(rng):
    """(outputs, reduced terms): mostly small, but also several tiles of j, several blocks
    of rows and enough work for the engine's OpenMP path."""
    x = rng.random()
    if x < 0.6:
        return tuple(rng.choice((1, 2, 3, 3, 4, 5, 6, 7, 8)) for _ in range(2))
    if x < 0.85:
        return rng.randint(9, 40), rng.randint(20, 120)
    if x < 0.9:
        return rng.randint(40, 90), rng.randint(40, 90)
    return (rng.randint(200, 700), rng.randint(2, 12)) if x < 0.95 else \
        (rng.randint(2, 12), rng.randint(200, 700))


def make_group(seed, index, size):
    """Group `index` of the run `seed`: its configuration, inputs and formulas, all drawn
    from its own random stream (so that --group G replays it alone)."""
    kind, reduction = schedule(index)
    rng = random.Random(f"{seed}/{index}")
    axis, dtype = rng.randrange(2), rng.choice(("float64", "float32"))
    n_out, n_red = draw_sizes(rng)
    batch = rng.choice(((), (), (2,), (2, 3)) if n_out * n_red <= 2000 else ((), (2,)))
    n, m = (n_out, n_red) if axis == 1 else (n_red, n_out)
    k = rng.randint(1, min(3, n_red)) if BASE[reduction] == "kmin" else None
    group = Group(index, kind, reduction, axis, dtype, batch, n, m, k, rng.getrandbits(31), rng)
    group.options = {name: value for name, value in
                     (("sum_scheme", rng.choice(SUM_SCHEMES)), ("dtype_acc", rng.choice(ACCS)))
                     if value != "auto"}
    group.spelling = (rng.randrange(len(CALLS[reduction])), rng.random() < 0.3)
    group.inputs = Inputs(group.seed, dtype, batch, n, m, requires_grad=(kind == "grad"))
    gen = Generator(rng, group.inputs, Dense(group.inputs.env, dtype), smooth=(kind == "grad"),
                    pool=group.inputs.pool(rng) if kind == "grad" else None)
    dims, depths = ((1, 2, 3, 4), (1, 2, 3, 4)) if kind == "forward" else ((1, 2, 3), (1, 2, 3))
    if kind == "grad" and BASE[reduction] in ("min", "max", "kmin"):
        dims = (1,)  # their backward compiles one kernel per component of the formula
    draw = lambda options, weights: rng.choices(options, weights[:len(options)])[0]  # noqa: E731
    if reduction in WEIGHTED:
        for _ in range(5):
            group.f = gen.expr(1, draw(depths, (2, 3.5, 3, 1.5)))
            if kind == "forward" or grad_ready(group, group.f):
                break
        else:
            group.f = group.inputs.leaf(rng, 1, False)
    for _ in range(size if kind == "forward" else 3 * size):
        dim, depth = draw(dims, (4, 2.5, 2, 1.5)), draw(depths, (2, 3.5, 3, 1.5))
        e = gen.positive(dim, depth) if reduction == "LogSumExpWeight" else gen.expr(dim, depth)
        if kind == "forward" or grad_ready(group, e):
            group.formulas.append(e)
        if len(group.formulas) == size:
            break
    return group


@dataclass
class Failure:
    kind: str
    group: str
    formula: str
    detail: str
    call: str
    code: str
    note: str = ""

    def __str__(self):
        lines = [f"FAIL [{self.kind}] {self.group}", f"  formula: {self.formula}",
                 f"  call:    {self.call}", f"  {self.detail}"]
        if self.note:
            lines.append(f"  {self.note}")
        lines += ["  variables:"] + [f"    {line}" for line in self.code.splitlines()]
        return "\n".join(lines)


@dataclass
class Tally:
    seed: int = 0
    formulas: int = 0            # checked: at least one entry compared
    skipped_formulas: int = 0    # every entry fragile, or dropped from a gradient group
    entries: int = 0
    skipped_entries: int = 0
    groups: Counter = field(default_factory=Counter)
    by_reduction: Counter = field(default_factory=Counter)
    by_op: Counter = field(default_factory=Counter)
    failures: list = field(default_factory=list)
    seconds: float = 0.0
    replay: str = ""
    exceptional: int = 0         # formulas checked again on inputs holding NaN / inf

    def report(self):
        lines = [f"lazykeops differential fuzz, seed {self.seed}: {self.formulas} formulas "
                 f"checked in {sum(self.groups.values())} groups "
                 f"({self.groups['forward']} forward, {self.groups['grad']} gradient), "
                 f"{self.seconds:.1f} s",
                 f"  entries compared {self.entries}, skipped {self.skipped_entries} "
                 f"(fragile); formulas skipped {self.skipped_formulas}; formulas checked "
                 f"again with NaN/inf inputs {self.exceptional}",
                 "  by reduction: " + ", ".join(f"{k} {v}" for k, v in
                                                sorted(self.by_reduction.items())),
                 "  by op: " + ", ".join(f"{k} {v}" for k, v in self.by_op.most_common())]
        kinds = Counter(f.kind for f in self.failures)
        lines.append(f"  failures: {len(self.failures)}" +
                     (" (" + ", ".join(f"{k} {v}" for k, v in kinds.items()) + ")"
                      if kinds else ""))
        if self.failures:
            lines.append(f"  replay one group: {self.replay}")
        return "\n".join(lines + [str(f) for f in self.failures])


def formula_text(group, e):
    if group.f is None:
        return e.text
    return f"F = {group.f.text}; W = {e.text}"


def run_group(group, size, tally, log=None):
    """Check one group, narrowing each failure down to one formula; half the forward
    groups are then checked again on inputs holding NaN or infinities (the same kernel)."""
    forward = group.kind == "forward"
    start, failures = time.time(), len(tally.failures)
    out = _check(group, tally)
    label = group.reduction if forward else f"grad {group.reduction}"
    for n, e in enumerate(group.formulas):
        checked = out.compared.get(n, 0) > 0 or out.error is not None
        tally.formulas += checked
        tally.skipped_formulas += not checked
        tally.entries += out.compared.get(n, 0)
        if checked:
            tally.by_reduction[label] += 1
            tally.by_op.update(_ops(group, e))
    if group.f is not None:
        tally.by_op.update(_ops(group, group.f))
    tally.skipped_entries += out.skipped
    tally.skipped_formulas += (size - len(group.formulas)) if not forward else 0
    tally.groups[group.kind] += 1
    if forward and group.rng.random() < 0.5:
        used = sorted(frozenset().union(*[e.leaves for e in group.formulas]) -
                      {n for n in group.inputs.leaves if n.endswith("k")})
        names = group.rng.sample(used, min(2, len(used)))
        inputs, notes = group.inputs.with_exceptions(group.rng, names)
        nan = _check(dataclasses.replace(group, inputs=inputs, exceptional=notes), tally)
        tally.exceptional += sum(1 for n in nan.compared.values() if n > 0)
    if log:
        log(f"{group.describe()}: {len(group.formulas)} formulas, "
            f"{len(tally.failures) - failures} failures, {time.time() - start:.1f} s")


def _check(group, tally):
    """Run a group once; narrow and record its failures. Returns the Outcome."""
    runner = forward_run if group.kind == "forward" else grad_run
    out = runner(group, group.formulas)
    if out.error or (out.bad and group.kind != "forward"):
        _narrow_whole(group, runner, out, tally)
        return out
    for n, detail in list(out.bad.items())[:3]:
        _narrow_one(group, runner, group.formulas[n], detail, out.call, tally)
    for n, detail in list(out.bad.items())[3:]:
        tally.failures.append(_failure(group, group.formulas[n], detail, out.call,
                                       "not re-run alone (more than 3 failures in group)"))
    return out


def _failure(group, e, detail, call, note=""):
    kind = ("index" if group.reduction in INDICES_ONLY else "value") \
        if group.kind == "forward" else "grad"
    if detail.startswith(("values:", "indices:")):
        kind = "output"
    elif detail.startswith("error:"):
        kind = "error" if group.kind == "forward" else "grad error"
    if group.exceptional:
        kind = f"NaN/inf {kind}"
    everything = [e] + ([group.f] if group.f is not None else [])
    return Failure(kind, group.describe(), formula_text(group, e), detail, call,
                   group.inputs.code(everything), note)


def _narrow_one(group, runner, e, detail, call, tally):
    alone = runner(group, [e])
    if alone.error:
        note = f"alone: {alone.error}"
    elif alone.bad:
        detail, note = alone.bad[0], "reproduces with the formula alone"
    else:
        note = "passes alone: fails only inside the concatenated group"
    tally.failures.append(_failure(group, e, detail, alone.call or call, note))


def _narrow_whole(group, runner, out, tally):
    """A run that raised (or a gradient run that failed): bisect to one formula."""
    budget = [10]
    found = _isolate(group, runner, group.formulas, budget)
    if not found:
        detail = f"error: {out.error}" if out.error else next(iter(out.bad.values()))
        tally.failures.append(Failure(
            "error" if out.error else "grad", group.describe(),
            f"{len(group.formulas)} formulas together (no single one fails alone): "
            + " ; ".join(formula_text(group, e) for e in group.formulas),
            detail, out.call, group.inputs.code(group.formulas)))
        return
    e, alone = found
    detail = f"error: {alone.error}" if alone.error else next(iter(alone.bad.values()))
    tally.failures.append(_failure(group, e, detail, alone.call,
                                   "isolated by bisection: fails alone"))


def _isolate(group, runner, formulas, budget):
    """(formula, outcome) of one formula that fails on its own, or None."""
    if len(formulas) == 1:
        budget[0] -= 1
        out = runner(group, formulas)
        return (formulas[0], out) if out.error or out.bad else None
    half = len(formulas) // 2
    for part in (formulas[:half], formulas[half:]):
        if budget[0] <= 0:
            return None
        if len(part) > 1:
            budget[0] -= 1
            out = runner(group, part)
            if not (out.error or out.bad):
                continue
        found = _isolate(group, runner, part, budget)
        if found:
            return found
    return None


def _ops(group, e):
    """The registry ops of a formula once lowered (each counted once per formula)."""
    try:
        (node,), _ = lower([to_lazy(e, group.inputs.lazy, {})])
    except Exception:  # noqa: BLE001  (a failure the checks report)
        return set()
    return {n.op for n in node.walk() if n.op != "Var"}


def run(seed, count, only=None, log=None, forward_size=FORWARD_SIZE, grad_size=GRAD_SIZE):
    """Check `count` formulas of the run `seed` (or only group `only`); returns a Tally."""
    tally, start = Tally(seed=seed), time.time()
    tally.replay = (f"python tests/fuzz/formula_fuzz.py --seed {seed} --count {count} "
                    f"--forward-size {forward_size} --grad-size {grad_size} --group G")
    for index, size in plan(count, forward_size, grad_size):
        if only is not None and index != only:
            continue
        try:
            group = make_group(seed, index, size)
        except Exception:  # noqa: BLE001  (the generator's own bug: say so, loudly)
            tally.failures.append(Failure("generator", f"group {index}", "", traceback
                                          .format_exc(limit=3), "", ""))
            continue
        run_group(group, size, tally, log)
    tally.seconds = time.time() - start
    return tally


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=300, help="formulas to check")
    parser.add_argument("--group", type=int, default=None, help="replay only this group")
    parser.add_argument("--forward-size", type=int, default=FORWARD_SIZE,
                        help="formulas per forward group (the CI test uses 16)")
    parser.add_argument("--grad-size", type=int, default=GRAD_SIZE,
                        help="formulas per gradient group (the CI test uses 5)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per group")
    args = parser.parse_args(argv)
    os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")  # hundreds of kernels: no chatter
    log = (lambda s: print(s, flush=True)) if args.verbose else None
    tally = run(args.seed, args.count, args.group, log, args.forward_size, args.grad_size)
    print(tally.report())
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
