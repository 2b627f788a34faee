"""What differs between Keras backends: compiling, gradients, and which backends are supported.

Everything else in tb-cnnviz is written once, in `keras.ops` and NumPy. Three things cannot be:

* **Compiling** a function that calls a model: `tf.function` on TensorFlow, `jax.jit` on JAX
  (the model's variables are passed in as arguments through a `keras.StatelessScope`, so a
  compiled function sees the weights of *now*, not those it was traced with), and plain eager
  calls on PyTorch, which has no graph to trace into.
* **Gradients** with respect to an input: `tf.GradientTape`, `jax.value_and_grad`,
  `torch.autograd.grad`.
* **Which backend runs**, and a clear message where one cannot do something.
* **Which process writes** when training is spread over several (`is_chief`).
* **How a compiled loop runs fastest** (`compile_loop`): one compiled step called from Python.
* **Native kernels worth using** (`native_resampler`): TensorFlow's projective image transform.

`compile` counts each compiled function's own traces (`tracing_count`), so tests can pin that a
callback reuses its traces across epochs and `fit()` calls on every backend.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from tb_cnnviz import profile

__all__ = [
    "SUPPORTED",
    "batch_size",
    "check_supported",
    "compile",
    "compile_loop",
    "has_accelerator",
    "is_chief",
    "name",
    "process_count",
    "native_resampler",
    "ready",
    "stateless_normal",
    "tensor_spec",
    "to_numpy",
    "tracing_count",
    "value_and_grad",
]

#: The Keras backends tb-cnnviz draws on.
SUPPORTED = ("tensorflow", "jax", "torch")


def name() -> str:
    """The Keras backend in use (`"tensorflow"`, `"jax"`, `"torch"`, ...).

    Example:
        >>> name() in SUPPORTED
        True
    """
    return keras.backend.backend()


def check_supported(what: str = "tb-cnnviz") -> str:
    """Returns the backend's name, or raises a `ValueError` naming it and the supported ones.

    Args:
        what: What needs a supported backend, for the message (a callback's name).

    Example:
        >>> check_supported("CNNViz") in SUPPORTED
        True
    """
    backend = name()
    if backend not in SUPPORTED:
        raise ValueError(
            f"{what} does not support the Keras backend {backend!r}: it needs one of "
            f"{', '.join(SUPPORTED)} (set KERAS_BACKEND before importing keras)."
        )
    return backend


def to_numpy(x: Any) -> np.ndarray:
    """A backend tensor (or anything array-like) as a NumPy array (the profile's `copy` phase:
    it waits for the device).

    Example:
        >>> to_numpy(keras.ops.ones((2,))).tolist()
        [1.0, 1.0]
    """
    with profile.phase("copy"):
        return np.asarray(keras.ops.convert_to_numpy(x))


def ready(x: Any) -> Any:
    """`x` (tensors, nested) once the device has computed it: what timing a call needs.

    JAX dispatches a compiled call asynchronously, as TensorFlow and PyTorch do on an
    accelerator: the call returns at once, and the time it takes falls on whatever reads its
    outputs first. On JAX this waits without a copy. With an accelerator, TensorFlow and
    PyTorch read back the smallest of the tensors (the outputs of one compiled call are ready
    together); on CPU their calls have finished when they return, and `x` is returned as is.

    Example:
        >>> out = ready(keras.ops.ones((2,)))
        >>> to_numpy(out).tolist()
        [1.0, 1.0]
    """
    if name() == "jax":
        import jax

        return jax.block_until_ready(x)
    if has_accelerator():
        flat = [t for t in keras.tree.flatten(x) if hasattr(t, "shape")]
        if flat:
            smallest = min(flat, key=lambda t: int(np.prod(tuple(t.shape))))
            keras.ops.convert_to_numpy(smallest)
    return x


def compile(
    fn: Callable,
    variables: Sequence[keras.Variable] = (),
    *,
    input_signature: Sequence[Any] | None = None,
) -> Callable:
    """Compiles `fn` where the backend compiles; the result reads `variables` at call time.

    On TensorFlow, a `tf.function` (without autograph: loops are `keras.ops` loops) whose
    retracing TensorFlow judges on its own traces (`tb_cnnviz.compiled.function`). On JAX, a
    `jax.jit` taking the current values of `variables` (give every variable `fn` reads: a
    model's `variables`) as an argument, so later weights need no retrace. On PyTorch, `fn`
    itself.

    Args:
        fn: A function of backend tensors (nested tuples allowed) returning tensors.
        variables: The Keras variables `fn` reads.
        input_signature: TensorFlow only: the `tf.TensorSpec`s `fn` is traced for (ignored by
            JAX, which traces once per shape).

    Returns:
        A callable with `fn`'s signature; `tracing_count(result)` tells how often it traced.

    Example:
        >>> square = compile(lambda x: x * x)
        >>> float(to_numpy(square(keras.ops.convert_to_tensor(3.0))))
        9.0
        >>> tracing_count(square) == (0 if name() == "torch" else 1)
        True
    """
    traces = [0]

    @functools.wraps(fn)
    def traced(*args):
        traces[0] += 1
        return fn(*args)

    backend = check_supported()
    if backend == "tensorflow":
        from tb_cnnviz import compiled

        options = {"autograph": False}
        if input_signature is not None:
            options["input_signature"] = input_signature
        run = compiled.function(traced, **options)
    elif backend == "jax":
        import jax

        variables = list(variables)

        def stateless(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return traced(*args)

        jitted = jax.jit(stateless)

        def run(*args):
            return jitted([v.value for v in variables], *args)

    else:  # PyTorch: eager calls, nothing traces (the count stays 0)

        def run(*args):
            return fn(*args)

    def timed(*args):
        # A call that traced (and compiled) is the `trace` phase of the kind being profiled.
        before = traces[0]
        with profile.phase("compute") as timing:
            out = run(*args)
            if traces[0] != before:
                timing.name = "trace"
        return out

    timed.traces = traces  # type: ignore[attr-defined]
    return timed


def compile_loop(
    step: Callable,
    variables: Sequence[keras.Variable] = (),
) -> Callable:
    """Compiles `n` repetitions of `step`: `run(n, state, *constants)` returns the final state.

    `step(state, *constants) -> state` maps a (nested) state of tensors to one of the same
    structure and shapes. `run(n, state, *constants, inputs=xs)` passes step `i` one more
    argument, `xs[i]` (all of one shape): what changes from step to step but is cheaper made on
    the host, once for all steps, than traced into the step.

    On TensorFlow and JAX, `step` is compiled once (`compile`) and called `n` times from
    Python: a compiled loop (`tf.while_loop`, `fori_loop`, `scan`) runs the convolutions of a
    forward and backward pass several times slower than the top level of a compiled call
    (measured on CPU: 6x for a two-conv model and 2.4x for MobileNetV2 at 224 on TensorFlow
    2.21; 5x for the demo CNN on jax 0.10), and it traces about twice as long. The calls cost a
    few milliseconds each; JAX dispatches them asynchronously. On PyTorch, `n` eager steps.

    Args:
        step: The loop body, written in `keras.ops`.
        variables: The Keras variables `step` reads (a model's `variables`), as for `compile`.

    Returns:
        `run(n, state, *constants, inputs=None)`; `tracing_count(run)` tells how often it
        traced.

    Example:
        >>> double = compile_loop(lambda x: x * 2.0)
        >>> float(to_numpy(double(3, keras.ops.convert_to_tensor(1.0))))
        8.0
        >>> tracing_count(double) == (0 if name() == "torch" else 1)  # later n reuse it
        True
        >>> add = compile_loop(lambda x, dx: x + dx)
        >>> xs = keras.ops.convert_to_tensor([1.0, 2.0, 3.0])  # tensors: no retrace per value
        >>> float(to_numpy(add(3, keras.ops.convert_to_tensor(0.0), inputs=xs)))
        6.0
    """
    check_supported()
    compiled_step = compile(step, variables)

    def run(n, state, *constants, inputs=None):
        n = int(n)
        if inputs is not None and len(inputs) != n:
            raise ValueError(f"inputs must hold one value per step ({n}). Received: {len(inputs)}")
        for i in range(n):
            extra = () if inputs is None else (inputs[i],)
            state = compiled_step(state, *constants, *extra)
        return state

    run.traces = compiled_step.traces  # type: ignore[attr-defined]
    return run


def native_resampler() -> Callable | None:
    """The backend's own bilinear resampling of images at projective transforms, if it is fast.

    On TensorFlow, `fn(images, transforms, size, fill)` runs `ImageProjectiveTransformV3` (a
    native kernel with a registered gradient; `transforms` `[n, 8]` map output to input pixel
    coordinates, `size` is the output's `(h, w)`, `fill` a value outside the image or None to
    reflect it). Elsewhere None: Keras' `affine_transform` on JAX interpolates in three
    dimensions through `map_coordinates` (12x slower forward and backward than four gathers in
    `keras.ops`, which `tb_cnnviz.actmax.transforms` uses there, and 4x longer to compile).

    Example:
        >>> fn = native_resampler()
        >>> fn is None or callable(fn)
        True
    """
    if name() != "tensorflow":
        return None
    import tensorflow as tf

    def resample(images, transforms, size, fill):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=tf.cast(transforms, tf.float32),
            output_shape=tf.constant(list(size), tf.int32),
            fill_value=tf.constant(0.0 if fill is None else fill, tf.float32),
            interpolation="BILINEAR",
            fill_mode="REFLECT" if fill is None else "CONSTANT",
        )

    return resample


def tracing_count(compiled_fn: Callable) -> int:
    """How many times a function made by `compile` traced (0 on PyTorch, which runs eagerly).

    Example:
        >>> f = compile(lambda x: x + 1)
        >>> _ = f(keras.ops.ones((2,))); _ = f(keras.ops.zeros((2,)))
        >>> tracing_count(f) == (0 if name() == "torch" else 1)
        True
    """
    return compiled_fn.traces[0]  # type: ignore[attr-defined]


def value_and_grad(fn: Callable) -> Callable:
    """`fn(x, *args) -> (value, aux)` made into `(x, *args) -> ((value, aux), d value / d x)`.

    `value` is a scalar tensor; `x` a tensor or a tuple of tensors (the gradient has its
    structure). Works eagerly and inside `compile` on every supported backend.

    Example:
        >>> grad = value_and_grad(lambda x: (keras.ops.sum(x * x), None))
        >>> (value, _), g = grad(keras.ops.convert_to_tensor([1.0, 2.0]))
        >>> float(to_numpy(value)), to_numpy(g).tolist()
        (5.0, [2.0, 4.0])
    """
    backend = check_supported()
    if backend == "tensorflow":
        import tensorflow as tf

        def run(x, *args):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value, aux = fn(x, *args)
            grad = tape.gradient(value, x)
            grad = keras.tree.map_structure(
                lambda g, t: tf.zeros_like(t) if g is None else g, grad, x
            )
            return (value, aux), grad

        return run
    if backend == "jax":
        import jax

        inner = jax.value_and_grad(fn, has_aux=True)

        def run(x, *args):
            (value, aux), grad = inner(x, *args)
            return (value, aux), grad

        return run

    import torch

    def run(x, *args):
        leaves = keras.tree.flatten(x)
        leaves = [t.detach().requires_grad_(True) for t in leaves]
        with torch.enable_grad():
            value, aux = fn(keras.tree.pack_sequence_as(x, leaves), *args)
            grads = torch.autograd.grad(value, leaves, allow_unused=True)
        pairs = zip(grads, leaves, strict=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in pairs]
        aux = keras.tree.map_structure(
            lambda a: a.detach() if isinstance(a, torch.Tensor) else a, aux
        )
        return (value.detach(), aux), keras.tree.pack_sequence_as(x, grads)

    return run


def is_chief(model: keras.Model | None = None) -> bool:
    """Whether this process should write summaries when training runs in several processes.

    TensorFlow: under a multi-worker `tf.distribute` strategy the chief writes, or worker 0
    when the cluster has no chief; single-worker strategies (default, Mirrored, OneDevice)
    always write. JAX (`keras.distribution` across hosts): process 0. PyTorch
    (`torch.distributed`): rank 0. A single process always writes.

    Args:
        model: The model being trained (its `distribute_strategy` on TensorFlow).

    Example:
        >>> is_chief()
        True
    """
    backend = name()
    if backend == "jax":
        import jax

        return jax.process_index() == 0
    if backend == "torch":
        import torch.distributed as dist

        return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    if backend != "tensorflow":
        return True
    import tensorflow as tf

    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type or task_type == "chief":
        return True
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return task_type == "worker" and not has_chief and (resolver.task_id or 0) == 0


def process_count(model: keras.Model | None = None) -> int:
    """How many processes train the model together (1 for a single process).

    JAX: `jax.process_count()` (`keras.distribution` across hosts). PyTorch: the world size of
    an initialized `torch.distributed`. TensorFlow: the chief and workers of a multi-worker
    `tf.distribute` strategy's cluster.

    Args:
        model: The model being trained (its `distribute_strategy` on TensorFlow).

    Example:
        >>> process_count()
        1
    """
    backend = name()
    if backend == "jax":
        import jax

        return int(jax.process_count())
    if backend == "torch":
        import torch.distributed as dist

        initialized = dist.is_available() and dist.is_initialized()
        return int(dist.get_world_size()) if initialized else 1
    if backend != "tensorflow":
        return 1
    import tensorflow as tf

    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return 1
    spec = resolver.cluster_spec().as_dict() or {}
    return max(1, sum(len(spec.get(job, ())) for job in ("chief", "worker")))


@functools.cache
def has_accelerator() -> bool:
    """Whether the backend computes on a GPU or TPU (not the CPU the host code runs on).

    Where it does, the callbacks' background encoding does not compete with training for the
    same processor; on a CPU-only machine it does, and its time counts against their budget.

    Example:
        >>> isinstance(has_accelerator(), bool)
        True
    """
    backend = name()
    try:
        if backend == "jax":
            import jax

            return jax.default_backend() != "cpu"
        if backend == "torch":
            import torch

            return bool(torch.cuda.is_available())
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(
                tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU")
            )
    except Exception:  # a broken driver: count the background time, as on a CPU
        return False
    return False


def batch_size(n: int) -> int:
    """The batch to pad `n` rows to before calling a function made by `compile`.

    TensorFlow traces once for any batch (give `input_signature` a `None` batch) and PyTorch
    does not trace: `n`. JAX traces once per shape: the next power of two, at least 8, so that
    a few traces serve every batch a callback meets (its rows change from epoch to epoch).

    Example:
        >>> batch_size(5) in (5, 8)
        True
    """
    if name() != "jax":
        return int(n)
    return max(8, 1 << max(int(n) - 1, 0).bit_length())


def stateless_normal(shape: Sequence[Any], seed: Any, dtype: str = "float32") -> Any:
    """Standard normal noise drawn from `seed`, an int32 tensor `[2]` that may be traced.

    The same seed gives the same noise; it works eagerly and inside `compile` (Keras' own
    `keras.random.normal` takes a traced seed on JAX only). Each backend draws its own numbers.

    Example:
        >>> seed = keras.ops.convert_to_tensor([0, 1], "int32")
        >>> a, b = stateless_normal((3,), seed), stateless_normal((3,), seed)
        >>> bool((to_numpy(a) == to_numpy(b)).all())
        True
    """
    backend = check_supported()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.random.stateless_normal(shape, tf.cast(seed, tf.int32), dtype=dtype)
    if backend == "jax":
        return keras.random.normal(shape, dtype=dtype, seed=keras.ops.cast(seed, "uint32"))
    first, second = (int(v) for v in to_numpy(seed))
    return keras.random.normal(
        tuple(int(s) for s in shape), dtype=dtype, seed=first * 1_000_003 + second
    )


def tensor_spec(shape: Sequence[int | None], dtype: str = "float32") -> Any:
    """One entry of `compile`'s `input_signature`, written once for every backend.

    A `tf.TensorSpec` on TensorFlow (`None` dimensions trace once for any size); None on the
    other backends, whose `compile` ignores the signature.

    Example:
        >>> spec = tensor_spec([None, 8], "int32")
        >>> spec is None or tuple(spec.shape) == (None, 8)
        True
    """
    if name() != "tensorflow":
        return None
    import tensorflow as tf

    return tf.TensorSpec(list(shape), dtype)
