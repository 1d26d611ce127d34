"""Compile every Triton kernel of PyTorch's eager CUDA path for a GPU, without one: Triton's
wheel ships NVIDIA's ptxas, and ``triton.compile`` takes an explicit target. Run by
tests/test_rows.py in a process of its own (TRITON_INTERPRET unset: under it the kernels are
the interpreter's functions, which compile nothing).

Triton's interpreter, which runs the kernels in the tests, accepts code the compiler refuses (a
global that is not constexpr, say); this catches that before a GPU session does. Prints one line
per kernel variant and the PTX instructions that matter to the declarations (correctly rounded
division and square root).

Usage: python tests/kernels_for_gpu.py [compute capability, default 90]
"""

from __future__ import annotations

import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from impl_torch._native import channel_kernels, fused_kernels, row_kernels, rows

P = "*fp32"
# Row lengths' blocks: the shortest, the benchmark's, the longest (rows.MAX_ROW), each with the
# warps rows.py gives it.
ROW_BLOCKS = (1, 1024, rows.MAX_ROW)
# channels.py's tiles (4096 elements, 1 to 64 channels wide), and the specialization Triton
# makes for a (batch, channels) input in one band: inner == bands == 1.
CHANNEL_TILES = [
    *({"BLOCK_R": 4096 // block_c, "BLOCK_C": block_c} for block_c in (1, 8, 64)),
    {"BLOCK_R": 64, "BLOCK_C": 64, "inner": 1, "bands": 1},
]
# Each kernel with its runtime arguments' types and the constexpr variants the host code launches
# (impl_torch/_native/fused.py, rows.py and channels.py).
KERNELS = {
    fused_kernels.elementwise: (
        {"x_ptr": P, "y_ptr": P, "d_ptr": P, "n": "i32", **{f"p{i}": "fp32" for i in range(6)}},
        [{"KIND": k, "DERIVATIVE": d, "BLOCK": 1024} for k in range(6) for d in (True, False)],
    ),
    row_kernels.norm_forward: (
        {
            "x_ptr": P,
            "w_ptr": P,
            "b_ptr": P,
            "y_ptr": P,
            "stats_ptr": P,
            "rows": "i32",
            "n": "i32",
            "eps": "fp32",
            "bound": "fp32",
        },
        [
            {"CENTRED": c, "WEIGHT": w, "BIAS": w and c, "BLOCK": block}
            for c in (True, False)
            for w in (True, False)
            for block in ROW_BLOCKS
        ],
    ),
    row_kernels.norm_backward: (
        {
            "x_ptr": P,
            "w_ptr": P,
            "g_ptr": P,
            "stats_ptr": P,
            "dx_ptr": P,
            "dw_ptr": P,
            "db_ptr": P,
            "rows": "i32",
            "n": "i32",
            "band": "i32",
        },
        [
            {"CENTRED": c, "WEIGHT": w, "DX": dx, "DW": w, "DB": w and c, "BLOCK": block}
            for c in (True, False)
            for w in (True, False)
            for dx in (True, False)
            for block in ROW_BLOCKS
            if dx or w  # a backward asks for something
        ],
    ),
    row_kernels.simplex_forward: (
        {"x_ptr": P, "y_ptr": P, "finite_ptr": P, "n": "i32"},
        [{"LOG": log, "BLOCK": block} for log in (True, False) for block in ROW_BLOCKS],
    ),
    row_kernels.sparsemax_forward: (
        {"x_ptr": P, "y_ptr": P, "finite_ptr": P, "n": "i32"},
        [{"BLOCK": block} for block in ROW_BLOCKS],
    ),
    row_kernels.sparsemax_backward: (
        {"y_ptr": P, "g_ptr": P, "finite_ptr": P, "dx_ptr": P, "n": "i32"},
        [{"BLOCK": block} for block in ROW_BLOCKS],
    ),
    row_kernels.simplex_backward: (
        {"y_ptr": P, "g_ptr": P, "finite_ptr": P, "dx_ptr": P, "n": "i32"},
        [{"LOG": log, "BLOCK": block} for log in (True, False) for block in ROW_BLOCKS],
    ),
    # batch_norm's.
    channel_kernels.statistics: (
        {"x_ptr": P, "part_ptr": P, **{name: "i32" for name in ("m", "c", "inner", "bands", "band")}},
        CHANNEL_TILES,
    ),
    channel_kernels.finish: (
        {"part_ptr": P, "channel_ptr": P, **{name: "i32" for name in ("m", "c", "bands")}},
        [{"BLOCK_C": block_c} for block_c in (1, 8, 64)],
    ),
    channel_kernels.spread: (
        {
            "x_ptr": P,
            "channel_ptr": P,
            "square_ptr": P,
            **{name: "i32" for name in ("m", "c", "inner", "bands", "band")},
        },
        CHANNEL_TILES,
    ),
    channel_kernels.normalize: (
        {
            **{name: P for name in ("x_ptr", "w_ptr", "b_ptr", "y_ptr", "channel_ptr", "square_ptr", "rule_ptr")},
            **{name: P for name in ("mean_ptr", "var_ptr", "new_ptr")},
            **{name: "i32" for name in ("m", "c", "inner", "bands", "band")},
            **{name: "fp32" for name in ("eps", "keep_old", "take_new", "unbias")},
        },
        CHANNEL_TILES,
    ),
    channel_kernels.gradient_sums: (
        {
            **{name: P for name in ("x_ptr", "g_ptr", "rule_ptr", "part_ptr")},
            **{name: "i32" for name in ("m", "c", "inner", "bands", "band")},
        },
        CHANNEL_TILES,
    ),
    channel_kernels.gradient: (
        {
            **{name: P for name in ("x_ptr", "g_ptr", "w_ptr", "rule_ptr", "part_ptr", "dx_ptr", "dw_ptr", "db_ptr")},
            **{name: "i32" for name in ("m", "c", "inner", "bands", "band")},
        },
        CHANNEL_TILES,
    ),
}


def main(capability: int) -> None:
    target = GPUTarget("cuda", capability, 32)
    count = 0
    for kernel, (arguments, variants) in KERNELS.items():
        for constants in variants:
            signature = {**arguments, **dict.fromkeys(constants, "constexpr")}
            source = ASTSource(
                kernel, signature=signature, constexprs={(kernel.arg_names.index(k),): v for k, v in constants.items()}
            )
            warps = rows._warps(constants["BLOCK"]) if "BLOCK" in constants else 4
            options = {"enable_fp_fusion": False, "num_warps": warps}
            ptx = triton.compile(source, target=target, options=options).asm["ptx"]
            rounded = [op for op in ("div.rn.f32", "sqrt.rn.f32") if op in ptx]
            print(kernel.fn.__name__, constants, f"{warps} warps compiled;", " ".join(rounded) or "no rounded division")
            count += 1
    print(f"{count} variants")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 90)
