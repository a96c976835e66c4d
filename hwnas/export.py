"""ONNX export of a genotype, checked: ``onnx.checker``, onnxruntime-vs-PyTorch parity, and latency.

* Export: ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``; opset 17) of the model in eval
  mode (dropout and stochastic depth are identities), input ``"input"`` (N, 3, R, R) float32, output
  ``"logits"`` (N, classes), the batch axis dynamic.
* Untrained networks (no weights given) get BatchNorm running statistics from one forward pass in train
  mode on seeded random inputs first (``calibrate_batchnorm``): with the initial statistics (mean 0,
  var 1) activations shrink layer after layer and the logits of an EfficientNet come out near 1e-14,
  which makes a parity check meaningless and PyTorch CPU timing slow (denormals). The batch is large
  enough for stable statistics and variances are floored (see ``calibrate_batchnorm``).
* Parity: onnxruntime's CPU provider against PyTorch (CPU, fp32) on seeded random inputs of batch 2
  (exercising the dynamic axis). ``max_rel_error = max|ort - torch| / max|torch|`` over all logits; the
  export passes when it is <= ``PARITY_TOLERANCE``.
* Latency, batch 1: the median of repeated onnxruntime runs on the chosen provider
  (``CUDAExecutionProvider`` when onnxruntime offers it and torch sees a GPU, else CPU) and of PyTorch
  eager runs on CPU (and on CUDA when the CUDA provider is used), after warm-up.

The result is a sidecar dict (written as ``NAME.json`` next to ``NAME.onnx``) with everything needed to
reproduce and judge the file.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas import __version__
from hwnas.atomic import atomic_path, write_atomic
from hwnas.genotype import Genotype
from hwnas.latency.table import predicted_latency
from hwnas.model import build_model
from hwnas.units import dumps_strict
from hwnas.walker import flops, params

OPSET = 17
PARITY_TOLERANCE = 1e-4
PARITY_BATCH = 2
VAR_FLOOR = 1e-2  # calibrated BatchNorm variances below this are raised to it (see calibrate_batchnorm)
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ExportError(RuntimeError):
    """The exporter, the checker or onnxruntime failed (one line)."""


def calibration_batch(resolution: int) -> int:
    """Images per calibration batch: enough that the last stage's (about resolution/32 square) maps give
    each BatchNorm channel >= ~64 values, so no variance comes from a handful of numbers (2..32)."""
    last = max(1, resolution // 32)
    return max(2, min(32, math.ceil(64 / last ** 2)))


def calibrate_batchnorm(model: nn.Module, resolution: int, seed: int = 0, batch: int | None = None) -> None:
    """Set every BatchNorm's running statistics to those of one batch of seeded random inputs.

    Variances are floored at ``VAR_FLOOR``: a channel that is (nearly) constant on the batch (a dead ReLU6
    channel of a deep random network) would otherwise divide by sqrt(eps) in eval mode and amplify float
    rounding ~300x per layer, an ill-conditioned network no trained model resembles."""
    batch = batch or calibration_batch(resolution)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.train()
    with torch.no_grad():
        model(torch.randn(batch, 3, resolution, resolution, generator=gen))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
        m.running_var.clamp_(min=VAR_FLOOR)
    model.train(was_training)


def onnx_bytes(model: nn.Module, x: torch.Tensor, dynamic_batch: bool = True) -> bytes:
    """``model`` (put in eval mode) as ONNX traced on ``x``: TorchScript exporter, opset 17, batch axis
    dynamic or (for timing a fixed shape) static."""
    buf = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model.eval(), (x,), buf, dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=axes)
    return buf.getvalue()


def export_onnx(model: nn.Module, path: Path, resolution: int) -> None:
    """Write ``model`` (put in eval mode) as ONNX with a dynamic batch axis (atomically: ``hwnas.atomic``)."""
    write_atomic(path, onnx_bytes(model, torch.zeros(1, 3, resolution, resolution)))


def check_onnx(path: Path, shown: Path | None = None) -> None:
    """``onnx.checker`` (full check) of the file ``path``; an error names ``shown`` (default ``path``)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected {shown or path}: {str(e).splitlines()[0]}") from None


def choose_provider() -> str:
    """onnxruntime's CUDA provider when it is installed (onnxruntime-gpu) and torch sees a GPU, else CPU."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        return "CUDAExecutionProvider"
    return "CPUExecutionProvider"


def ort_session(model: Path | bytes, provider: str, threads: int | None = None) -> Any:
    """An onnxruntime session (its defaults: all graph optimisations, sequential execution) for an ONNX file
    or its bytes, with ``threads`` intra-op threads (None: onnxruntime's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts, providers=[provider])


def ort_runner(session: Any, x: torch.Tensor, bind_device: str | None = None) -> Callable[[torch.Tensor], Any]:
    """A call that runs ``session`` on an input like ``x``, for the timers. ``bind_device`` None: ``session.run``
    on the tensor it is given (its numpy view: no copy on CPU). ``"cuda"`` (the CUDA provider): ``x`` is copied
    to the GPU once and input and output stay there (IO binding, bound once; the call ignores its argument),
    so the time is the network's, not host<->device copies -- as in the torch CUDA timings beside it."""
    if bind_device is None:
        return lambda t: session.run([OUTPUT_NAME], {INPUT_NAME: t.numpy()})
    return _BoundRun(session, x, bind_device)


class _BoundRun:
    """``session`` with input ``x`` and its output bound on ``device``; calling it runs the network and
    returns the outputs (OrtValues on ``device``)."""

    def __init__(self, session: Any, x: torch.Tensor, device: str) -> None:
        self.session, self.x = session, x.to(device).contiguous()  # the bound memory lives as long as this
        device_id = self.x.device.index or 0
        self.binding = session.io_binding()
        self.binding.bind_input(name=INPUT_NAME, device_type=device, device_id=device_id,
                                element_type=np.float16 if self.x.dtype == torch.float16 else np.float32,
                                shape=tuple(self.x.shape), buffer_ptr=self.x.data_ptr())
        self.binding.bind_output(OUTPUT_NAME, device, device_id)

    def __call__(self, _: torch.Tensor) -> Any:
        self.session.run_with_iobinding(self.binding)  # returns once the provider has synchronised (the default)
        return self.binding.get_outputs()


def parity(model: nn.Module, path: Path, resolution: int, batch: int = PARITY_BATCH, seed: int = 0) -> dict[str, Any]:
    """onnxruntime (CPU provider) against PyTorch (CPU, fp32) on seeded random inputs."""
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, 3, resolution, resolution, generator=gen)
    model = model.eval()
    with torch.inference_mode():
        ref = model(x).numpy()
    out = ort_session(path, "CPUExecutionProvider").run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    if out.shape != ref.shape:
        raise ExportError(f"onnxruntime output shape {out.shape} != PyTorch {ref.shape}")
    diff = float(np.abs(out.astype(np.float64) - ref).max())
    scale = float(np.abs(ref).max())
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    return {"provider": "CPUExecutionProvider", "batch": batch, "max_abs_error": diff, "max_abs_logit": scale,
            "max_rel_error": rel, "definition": "max|ort - torch| / max|torch| over all logits",
            "tolerance": PARITY_TOLERANCE, "ok": bool(rel <= PARITY_TOLERANCE)}


def latency(model: nn.Module, path: Path, resolution: int, provider: str, runs: int = 20) -> dict[str, Any]:
    """Batch-1 latency: onnxruntime on ``provider`` and PyTorch eager on CPU (and CUDA with the CUDA provider),
    with the latency tables' timers (median of repeats after warm-up; CUDA events on the GPU)."""
    from hwnas.latency.measure import CpuTimer, CudaEagerTimer

    def timed(timer: Any, fn: Callable[[torch.Tensor], Any], x: torch.Tensor) -> dict[str, Any]:
        t = timer.time(fn, x)
        return {"median_ms": round(t.ms, 4), "runs": t.n}

    cpu = CpuTimer(min_repeats=3, max_repeats=max(3, runs), target_s=3.0, warmup=2)
    x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(2))
    run = ort_runner(ort_session(path, provider), x, "cuda" if provider == "CUDAExecutionProvider" else None)
    out: dict[str, Any] = {"batch": 1, "threads": torch.get_num_threads(), "onnxruntime": {
        "provider": provider, **timed(cpu, run, x)}}
    model = model.eval()
    out["torch_cpu"] = timed(cpu, model, x)
    if provider == "CUDAExecutionProvider":  # pragma: no cover - needs onnxruntime-gpu and a GPU
        out["torch_cuda"] = timed(CudaEagerTimer(replays=max(3, runs), warmup=2), model.to("cuda"), x.to("cuda"))
        model.to("cpu")
    ort_ms, torch_ms = out["onnxruntime"]["median_ms"], out["torch_cpu"]["median_ms"]
    out["torch_cpu_over_ort"] = round(torch_ms / ort_ms, 3) if ort_ms > 0 else None
    return out


def export_genotype(genotype: Genotype, path: Path, resolution: int = 224, num_classes: int = 1000, *,
                    state_dict: Mapping[str, torch.Tensor] | None = None, dropout: float = 0.0,
                    drop_path: float = 0.0, table: Any = None, runs: int = 20, measure: bool = True,
                    info: Mapping[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """Build, export, check and time ``genotype``; write ``path`` and its sidecar ``path.with_suffix('.json')``.

    Returns the sidecar. ``sidecar["parity"]["ok"]`` says whether the parity check passed (the files are
    written either way, so a failure can be inspected). ``info`` adds keys (accuracy, source, ...)."""
    torch.manual_seed(seed)
    model = build_model(genotype, num_classes, input_size=resolution, dropout=dropout, drop_path=drop_path)
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as e:
            detail = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]  # torch: a header, then the keys
            raise ExportError(f"weights do not fit the network: {(detail or str(e).splitlines() or ['?'])[0][:300]}"
                              ) from None
        weights = "checkpoint"
    else:
        calibrate_batchnorm(model, resolution, seed)
        weights = "random (seeded), BatchNorm statistics from one random batch"
    model.eval()
    try:
        data = onnx_bytes(model, torch.zeros(1, 3, resolution, resolution))
    except Exception as e:
        raise ExportError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    # checked, compared and timed under a temporary name: a failure or interrupt leaves the user's files as they
    # were; both files replace theirs once everything is done (a failed parity check included: inspectable)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        sidecar = _check_and_describe(genotype, model, tmp, path, resolution, num_classes, dropout, weights, table,
                                      runs, measure, seed)
        sidecar.update(info or {})
        write_atomic(sidecar_path(path), dumps_strict(sidecar, indent=2) + "\n")
    return sidecar


def _check_and_describe(genotype: Genotype, model: nn.Module, tmp: Path, path: Path, resolution: int,
                        num_classes: int, dropout: float, weights: str, table: Any, runs: int, measure: bool,
                        seed: int) -> dict[str, Any]:
    """The sidecar of the ONNX file ``tmp`` (to be renamed ``path``), once the checker passed."""
    check_onnx(tmp, shown=path)
    par = parity(model, tmp, resolution, seed=seed)
    provider = choose_provider()
    sidecar: dict[str, Any] = {
        "hwnas_version": __version__,
        "onnx": path.name,
        "genotype": genotype.to_string(),
        "genotype_json": genotype.to_dict(),
        "resolution": resolution,
        "num_classes": num_classes,
        "flops": flops(genotype, resolution, num_classes),
        "flops_unit": "multiply-adds",
        "params": params(genotype, num_classes),
        "dropout": dropout,
        "weights": weights,
        "accuracy": None,
        "opset": OPSET,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, resolution, resolution], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", num_classes]},
        "checker": "passed",
        "parity": par,
        "predicted_latency": predicted_latency(table, genotype, resolution),
        "measured_latency": latency(model, tmp, resolution, provider, runs) if measure else None,
    }
    return sidecar


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")
