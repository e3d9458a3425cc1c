"""Compare the compiled CPU engine loops of the same kernels built from two trees.

    python benchmarks/compare_cpu_kernels.py OLD_CACHE NEW_CACHE

OLD_CACHE and NEW_CACHE are kernel caches (LAZYKEOPS_CACHE_DIR) that hold the same
formulas built by two checkouts, e.g. the two caches bench_reductions_cpu.py prints. For
each reduction policy found in both, prints the instruction count of the engine's
`cpu_run` functions (the OpenMP bodies included) in each, whether the two instruction
streams are identical, and whether they are the same operations up to register choice.
Where they are identical, any time difference between the trees is the machine's noise:
this is how a timing difference smaller than that noise can still be ruled in or out.
"""

import glob
import os
import re
import subprocess
import sys

POLICY = re.compile(r"lk::\w+Red<[^;]*?>")
TARGET = re.compile(r"[0-9a-f]+ <[^>]*>")          # a jump or call target's address
OPERANDS = re.compile(r"%[a-z0-9]+|0x[0-9a-f]+|[(),]")  # registers and offsets


def policies(kernel_dir):
    with open(os.path.join(kernel_dir, "kernel.cpp")) as source:
        return tuple(sorted(set(POLICY.findall(source.read()))))


def engine_instructions(kernel_dir):
    library = glob.glob(os.path.join(kernel_dir, "lk_*.so"))[0]
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", library],
                             capture_output=True, text=True, check=True).stdout
    instructions, inside = [], False
    for line in listing.splitlines():
        if line.endswith(">:"):
            inside = "cpu_run" in line
        elif inside and "\t" in line:
            instructions.append(TARGET.sub("ADDR", line.split("\t", 1)[1]))
    return instructions


def main(old_cache, new_cache):
    old = {policies(d): d for d in glob.glob(os.path.join(old_cache, "*/"))}
    new = {policies(d): d for d in glob.glob(os.path.join(new_cache, "*/"))}
    print("| policy | old instructions | new | identical | same up to registers |")
    print("|---|---|---|---|---|")
    for key in sorted(old.keys() & new.keys()):
        a, b = engine_instructions(old[key]), engine_instructions(new[key])
        ops = lambda listing: [OPERANDS.sub("", i) for i in listing]  # noqa: E731
        print(f"| {', '.join(key)} | {len(a)} | {len(b)} | {a == b} | {ops(a) == ops(b)} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
