// The autograd nodes of the elementwise kernels (squashes.c's, and the Triton ones of eager CUDA),
// of the clamps and of hardsigmoid in C++, so that a forward+backward through one of them crosses
// into Python once, for the call, as an ATen op's does. A Python torch.autograd.Function costs 15-20 us more
// per forward+backward (its forward, context and backward run as Python): a quarter of a
// 2^16-element sigmoid's forward+backward.
//
// The kernel comes as a function address and its float parameters as the address of their
// array, both from impl_torch/_native (the kernels are compiled per process with -march=native;
// this file is built for no particular machine: its one vector loop carries an AVX2 variant that
// the loader picks where the CPU has it. So one build serves every machine with the same torch
// and compiler, and may be cached). Private: the op trusts those addresses.
//
// First order is grad * d, d = dy/dx written by the kernel beside the output. Where the backward
// is itself differentiated (grad mode on in the backward: second order), the technique's rule in
// differentiable ATen ops takes over, through elementwise_rule, which impl_torch/_native/node.py
// implements in Python by its number.
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/clamp.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/hardsigmoid.h>
#include <ATen/ops/hardsigmoid_backward.h>
#include <ATen/ops/hardtanh_backward.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/where.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace {

using Kernel = void (*)(const float *, float *, float *, int64_t, const float *, int);
using torch::autograd::variable_list;

at::Tensor rule(const at::Tensor &x, const at::Tensor &grad, int64_t number) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("output_limits_native::elementwise_rule", "")
                         .typed<at::Tensor(const at::Tensor &, const at::Tensor &, int64_t)>();
    return op.call(x, grad, number);
}

// The nodes are written as ATen's generated ones are (a torch::autograd::Node holding its saved
// variables, locked while it runs), not as torch::autograd::Functions: a Function's apply wraps
// its outputs for views, in-place use and forward mode, keeps a context with a string-keyed map
// and checks its grads in the backward: 4 us more per forward+backward at 2^10 than this node
// (23 us against 27, a sigmoid's 20; Zen 4). None of that applies: each op makes one fresh output, and forward mode never reaches
// them (impl_torch/_common.py and impl_torch/clamps.py call them plainly eager, where autograd
// records). The nodes are c10::intrusive_ptr's, as torch 2.13's Node is; on a torch whose Node
// is held by std::shared_ptr the build fails and the Python Function serves (node.py warns).

// Compiled autograd (torch._dynamo.compiled_autograd) records a C++ node's backward as an opaque
// call only through machinery of torch::autograd::Function's (CppNode); a plain node's ATen calls
// would run on its placeholders. So these nodes refuse it with the way out, where the Function
// they replaced took it: the Python Function, which compiled autograd traces.
[[noreturn]] void no_compiled_autograd(const std::string &node) {
    TORCH_CHECK_NOT_IMPLEMENTED(false, node,
                                " (output-limits' C++ autograd node) does not support compiled autograd; set "
                                "OUTPUT_LIMITS_NATIVE_NODE=0 before the first call, and a Python autograd Function "
                                "records the same kernels and rules, which compiled autograd traces");
}

// The backward of an op that saved x and d = dy/dx: grad * d, or the technique's rule by its
// number where the backward is itself differentiated (grad mode on in it: second order).
struct TimesDerivative : public torch::autograd::Node {
    torch::autograd::SavedVariable x_, d_;
    int64_t number_ = 0;
    const char *name_;  // which op made it: the C kernel's (Elementwise) or a Triton one's (Recorded)

    explicit TimesDerivative(const char *name) : name_(name) {}

    variable_list apply(variable_list &&grads) override {
        // As ATen's nodes: the engine may run a graph's backward on several threads at once.
        std::lock_guard<std::mutex> lock(mutex_);
        at::Tensor dx;
        if (grads[0].defined())
            dx = at::GradMode::is_enabled() ? rule(x_.unpack(), grads[0], number_) : at::mul(grads[0], d_.unpack());
        return {dx};
    }

    std::string name() const override { return name_; }

    void compiled_args(torch::dynamo::autograd::CompiledNodeArgs &) const override { no_compiled_autograd(name()); }

    void release_variables() override {
        std::lock_guard<std::mutex> lock(mutex_);
        x_.reset_data();
        d_.reset_data();
    }
};

// ``out`` made the output of ``node``, whose input is ``x``, where autograd records (the
// callers decide it does; this checks again, as ATen's ops do).
template <class N>
void record(const at::Tensor &x, const at::Tensor &out, const c10::intrusive_ptr<N> &node) {
    node->set_next_edges(torch::autograd::collect_next_edges(x));
    torch::autograd::set_history(out, node);
}

// ``out`` made the output of a TimesDerivative node named ``name`` that saved x and d, where
// autograd records.
void record_times_derivative(const at::Tensor &x, const at::Tensor &out, const at::Tensor &d, int64_t number,
                             const char *name) {
    if (!torch::autograd::compute_requires_grad(x))
        return;
    auto node = c10::make_intrusive<TimesDerivative>(name);
    node->x_ = torch::autograd::SavedVariable(x, false);
    node->d_ = torch::autograd::SavedVariable(d, false);
    node->number_ = number;
    record(x, out, node);
}

at::Tensor elementwise(const at::Tensor &x, int64_t kernel, int64_t params, int64_t number) {
    at::Tensor y, d;
    {
        // Below autograd: a strided x's contiguous copy records no node of its own.
        at::AutoDispatchBelowADInplaceOrView below;
        at::Tensor xc = x.contiguous();
        y = at::empty_like(xc);
        d = at::empty_like(xc);
        if (xc.numel())
            reinterpret_cast<Kernel>(kernel)(xc.const_data_ptr<float>(), y.mutable_data_ptr<float>(),
                                             d.mutable_data_ptr<float>(), xc.numel(),
                                             reinterpret_cast<const float *>(params), at::get_num_threads());
    }
    record_times_derivative(x, y, d, number, "output_limits::ElementwiseBackward");
    return y;
}

// The same node for a kernel that ran elsewhere: the Triton kernels of eager CUDA
// (impl_torch/_native/fused.py) launch from Python and have written y and d = dy/dx; this op
// records them, so that the backward (grad * d) stays in C++ where a Python Function would
// cross into Python twice more. Any device: ATen's mul dispatches.
at::Tensor recorded(const at::Tensor &x, const at::Tensor &y, const at::Tensor &d, int64_t number) {
    // A tensor of its own over y's memory: the caller's y keeps no history.
    at::Tensor out = y.detach();
    record_times_derivative(x, out, d, number, "output_limits::RecordedBackward");
    return out;
}

// The output alone, where autograd records nothing: the node's forward without the derivative.
// From Python through its C++ entry it costs what an ATen op's call costs (about 1 us less than
// allocating the output and calling the kernel through ctypes).
at::Tensor elementwise_values(const at::Tensor &x, int64_t kernel, int64_t params) {
    at::Tensor xc = x.contiguous();
    at::Tensor y = at::empty_like(xc);
    if (xc.numel())
        reinterpret_cast<Kernel>(kernel)(xc.const_data_ptr<float>(), y.mutable_data_ptr<float>(), nullptr,
                                         xc.numel(), reinterpret_cast<const float *>(params), at::get_num_threads());
    return y;
}

// The backward of the clamps (clamp, hardtanh, relu6, bounded_relu) and of hardsigmoid: g * scale
// strictly inside (lo, hi), 0 at and beyond the bounds whatever g is, and NaN where x is NaN (the
// declaration's rule for a derivative at NaN). ATen's hardtanh_backward and hardsigmoid_backward
// compute the first two but give 0 at a NaN x in their vector lanes and g in their scalar tails;
// so on the CPU in float32 and float64 one loop of our own does all three in their one pass, and
// elsewhere (other dtypes and devices) ATen's op and a select. g * scale rounds once, as ATen's:
// hardsigmoid's scale is 1/6 in the input's dtype (ATen's float32 1/6 in float32; in float64 the
// rule's exact 1/6, where ATen's op would use float32's). Second order (grad mode on in the
// backward) takes the technique's rule, differentiable, by its number.
//
// The selects as bit masks, each product computed: written as branches (or as ternaries, which
// the compiler may not make selects of under its default trapping math), the loop branched per
// element and took 7 ns an element at 2^22, five times ATen's. As masks it vectorizes: O3 for
// this loop alone (the file builds at O2), and AVX2 where the CPU has it (a clone chosen at load
// time; the file has no other machine-specific code). 1.4 ms at 2^22 in float32 against
// hardtanh_backward's 1.5-1.6 (AMD EPYC, one thread).
template <class T>
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
__attribute__((target_clones("avx2", "default"), optimize("O3")))  // clones need glibc's ifunc
#endif
void inside_backward(const T *__restrict x, const T *__restrict g, T *__restrict dx, int64_t n, T lo, T hi,
                     T scale) {
    using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    for (int64_t i = 0; i < n; ++i) {
        T v = x[i], product = g[i] * scale;
        Bits keep = Bits(0) - Bits((v > lo) & (v < hi)), nan = Bits(0) - Bits(v != v), p, b;
        std::memcpy(&p, &product, sizeof(T));
        std::memcpy(&b, &v, sizeof(T));
        Bits out = (p & keep & ~nan) | (b & nan);
        std::memcpy(dx + i, &out, sizeof(T));
    }
}

struct InsideBackward : public torch::autograd::Node {
    torch::autograd::SavedVariable x_;
    double lo_ = 0.0, hi_ = 0.0;
    bool hardsigmoid_ = false;
    int64_t number_ = 0;

    at::Tensor first_order(const at::Tensor &x, const at::Tensor &g) const {
        auto type = x.scalar_type();
        // Memory to read: not the batched tensor autograd hands in for is_grads_batched, whose
        // batch dimension is hidden from its shape (ATen's ops take it).
        bool plain = x.has_storage() && g.has_storage() && x.is_cpu() && g.is_cpu();
        if (plain && g.scalar_type() == type && (type == at::kFloat || type == at::kDouble)) {
            at::Tensor xc = x.contiguous(), gc = g.contiguous();
            at::Tensor dx = at::empty_like(xc);
            AT_DISPATCH_FLOATING_TYPES(type, "inside_backward", [&] {
                const scalar_t *xp = xc.const_data_ptr<scalar_t>(), *gp = gc.const_data_ptr<scalar_t>();
                scalar_t *dp = dx.mutable_data_ptr<scalar_t>();
                auto lo = static_cast<scalar_t>(lo_), hi = static_cast<scalar_t>(hi_);
                auto scale = hardsigmoid_ ? static_cast<scalar_t>(1.0 / 6.0) : scalar_t(1);
                at::parallel_for(0, xc.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
                    inside_backward(xp + begin, gp + begin, dp + begin, end - begin, lo, hi, scale);
                });
            });
            return dx;
        }
        at::Tensor dx;
        if (!hardsigmoid_)
            dx = at::hardtanh_backward(g, x, lo_, hi_);
        else if (type == at::kDouble)  // ATen's op multiplies by float32's 1/6, also in float64
            dx = at::mul(at::hardtanh_backward(g, x, lo_, hi_), 1.0 / 6.0);
        else
            dx = at::hardsigmoid_backward(g, x);
        return at::where(at::isnan(x), x, dx);
    }

    variable_list apply(variable_list &&grads) override {
        // As ATen's nodes: the engine may run a graph's backward on several threads at once.
        std::lock_guard<std::mutex> lock(mutex_);
        at::Tensor dx;
        if (grads[0].defined()) {
            at::Tensor x = x_.unpack();
            dx = at::GradMode::is_enabled() ? rule(x, grads[0], number_) : first_order(x, grads[0]);
        }
        return {dx};
    }

    std::string name() const override {
        return hardsigmoid_ ? "output_limits::HardsigmoidBackward" : "output_limits::ClampInsideBackward";
    }

    void compiled_args(torch::dynamo::autograd::CompiledNodeArgs &) const override { no_compiled_autograd(name()); }

    void release_variables() override {
        std::lock_guard<std::mutex> lock(mutex_);
        x_.reset_data();
    }
};

void record_inside(const at::Tensor &x, const at::Tensor &y, double lo, double hi, bool hardsigmoid,
                   int64_t number) {
    if (!torch::autograd::compute_requires_grad(x))
        return;
    auto node = c10::make_intrusive<InsideBackward>();
    node->x_ = torch::autograd::SavedVariable(x, false);
    node->lo_ = lo;
    node->hi_ = hi;
    node->hardsigmoid_ = hardsigmoid;
    node->number_ = number;
    record(x, y, node);
}

// hardsigmoid: ATen's forward, which is the declaration bit for bit in every dtype (on the CPU;
// impl_torch/clamps.py's _Hardsigmoid is the same in Python).
at::Tensor hardsigmoid(const at::Tensor &x, int64_t number) {
    at::Tensor y;
    {
        // ATen's own op without its node: this one records instead.
        at::AutoDispatchBelowADInplaceOrView below;
        y = at::hardsigmoid(x);
    }
    record_inside(x, y, -3.0, 3.0, true, number);
    return y;
}

// clamp with the clamps' declared gradient (impl_torch/_common.py's _ClampInside in Python).
at::Tensor clamp_inside(const at::Tensor &x, double lo, double hi, int64_t number) {
    at::Tensor y;
    {
        at::AutoDispatchBelowADInplaceOrView below;
        y = at::clamp(x, lo, hi);
    }
    record_inside(x, y, lo, hi, false, number);
    return y;
}

}  // namespace

TORCH_LIBRARY(output_limits_native, m) {
    // x: a contiguous-able float32 CPU tensor; kernel and params: addresses from _native;
    // number: the technique's rule, for second order (impl_torch/_native/node.py).
    m.def("elementwise(Tensor x, int kernel, int params, int number) -> Tensor");
    m.def("elementwise_rule(Tensor x, Tensor grad, int number) -> Tensor");
    m.def("hardsigmoid(Tensor x, int number) -> Tensor");
    m.def("clamp_inside(Tensor x, float lo, float hi, int number) -> Tensor");
    m.def("elementwise_values(Tensor x, int kernel, int params) -> Tensor");
    // y and d: a kernel's output and derivative dy/dx, as x (any device); number as above.
    m.def("recorded(Tensor x, Tensor y, Tensor d, int number) -> Tensor");
}

// Autograd and every device alike: the node is the whole op (called only where autograd records,
// plainly eager: impl_torch/_common.native_elementwise and impl_torch/clamps.hardsigmoid decide;
// elementwise on CPU float32 only, since it calls a C kernel).
TORCH_LIBRARY_IMPL(output_limits_native, CompositeImplicitAutograd, m) {
    m.impl("elementwise", elementwise);
    m.impl("hardsigmoid", hardsigmoid);
    m.impl("clamp_inside", clamp_inside);
    m.impl("recorded", recorded);
}

// No derivative: called only where autograd records nothing (impl_torch/_common.py decides). On
// a tensor that requires grad with grad mode on, autograd's fallback for an op without a formula
// would warn and leave the input without a gradient: callers take `elementwise` there.
TORCH_LIBRARY_IMPL(output_limits_native, CPU, m) { m.impl("elementwise_values", elementwise_values); }
