"""Zero-cost proxies: scores of an untrained network, computed at initialisation from one minibatch.

Higher is better for every score (the sign conventions of the papers). Each proxy builds the
architecture afresh with the same seed (``torch.manual_seed(seed)`` before ``space.build``), so one
proxy's changes to the network (synflow's |theta|, Zen's Gaussian init) never reach another, and a score
depends only on (architecture, proxy, images, seed). BatchNorm is in training mode (batch statistics), as
in every reference implementation. float32 except synflow (float64, as its authors).

============  =============================================================================================
``synflow``   Tanaka et al. 2020 as a zero-cost proxy (Abdelfattah et al. 2021): sum over conv/linear
              weights of |theta * dR/dtheta|, R = sum of the outputs of the network with |theta|, its
              BatchNorm removed, on one all-ones input, float64. Every pre-activation is then >= 0, where
              ReLU is the identity; ReLU, ReLU6 and swish are therefore replaced by the identity (ReLU6
              would clip at 6 and zero the flow); squeeze-excitation gates stay.
``naswot``    Mellor et al. 2021 (v2 of "NAS without training"): log|K|, K = c c^T + (1-c)(1-c)^T summed
              over the ReLU-family activations, c the binary code (input > 0) of each image.
``jacov``     Mellor et al. 2020 (v1), as Abdelfattah et al.: -sum(log(l + k) + 1 / (l + k)), k = 1e-5,
              over the eigenvalues l of the correlation matrix of the per-image input Jacobians of
              sum(logits).
``snip``      Lee et al. 2019: sum over conv/linear weights of |theta * dL/dtheta| (cross-entropy L).
``grad_norm`` sum over conv/linear layers of the L2 norm of dL/dtheta.
``grasp``     Wang et al. 2020 as Abdelfattah et al.: sum of -theta * (H g), g = dL/dtheta, H the Hessian
              (a Hessian-vector product by double backprop).
``fisher``    Theis et al. 2018 as Abdelfattah et al.: per conv/linear output channel,
              0.5 * mean over images of (sum over positions of activation * dL/dactivation)^2, summed.
``zico``      Li et al. 2023: sum over conv/linear layers of log(sum over weights of mean|g| / std(g)),
              g the weight gradients of the minibatch's two halves (population std; weights with std 0
              skipped; a layer whose sum is 0 adds nothing). The paper's definition: the gradients of the
              two halves are taken separately (the authors' script accumulates the second onto the first).
``zen``       Lin et al. 2021: log E|f(x) - f(x + 0.01 e)|_1 + sum over BatchNorm layers of
              log sqrt(mean batch variance), f the feature map before global pooling, x and e standard
              normal images (no data), weights re-drawn N(0, 1), BN scale 1 and shift 0. The BN variance
              is the batch variance of the first forward (the paper's definition; the authors' script
              reads ``running_var`` after two forwards at momentum 0.1). A BN whose input is all zero
              (downstream of an NB201 ``none`` edge; the paper's networks have none) is left out of the sum
              rather than adding log 0.
``flops``     the walker's multiply-adds at the scoring resolution (the baseline every paper reports).
``params``    the walker's parameter count.
============  =============================================================================================

Choices a paper leaves open, made once for all spaces: one seeded minibatch of ``batch_size`` = 64
training images (ZiCo: two halves of 64 each, 128 images), normalised as the proxy trainer normalises them,
no augmentation; the network's own default initialisation (hwnas's for MBConv and NAS-Bench-Macro
networks, PyTorch's for NAS-Bench-201's, as Abdelfattah et al. used); CPU float32.

``vote`` is the vote of Abdelfattah et al. (synflow, jacov, snip by default): over a set of scored
architectures, the sum of each proxy's rank (``vote_ranks``); in a search, which scores one architecture at a
time, the mean of the proxies' normalised scores (``Normalizer``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

PROXIES: tuple[str, ...] = ("synflow", "naswot", "jacov", "snip", "grad_norm", "grasp", "fisher", "zico", "zen",
                            "flops", "params")
VOTE_DEFAULT: tuple[str, ...] = ("synflow", "jacov", "snip")
BATCH_SIZE = 64


class ZeroCostError(ValueError):
    """An unknown proxy or an unusable setting (one line)."""


def parse_proxies(text: str) -> tuple[str, ...]:
    """``"zico,synflow"`` -> ("zico", "synflow"); ``"all"`` -> every proxy; a ZeroCostError naming an unknown one."""
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if names == ("all",):
        return PROXIES
    if not names:
        raise ZeroCostError("no proxy named (choose from " + ", ".join(PROXIES) + ")")
    bad = [p for p in names if p not in PROXIES]
    if bad:
        raise ZeroCostError(f"unknown zero-cost proxy {bad[0]!r} (choose from {', '.join(PROXIES)}, or all)")
    return names


def vote_ranks(scores: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Sum over the proxies of each architecture's rank (1 = lowest score; ties share their mean rank; a NaN
    score ranks lowest) among the architectures scored: the rank vote over a set."""
    from scipy.stats import rankdata

    total: np.ndarray | None = None
    for vals in scores.values():
        v = np.asarray(vals, dtype=float)
        r = rankdata(np.where(np.isfinite(v), v, -np.inf))
        total = r if total is None else total + r
    if total is None:
        raise ZeroCostError("a vote needs at least one proxy")
    return total


class ZeroCostScorer:
    """``score(arch, proxies) -> {proxy: value}`` for architectures of ``space`` (anything with ``build``,
    ``flops`` and ``params``), from a seeded minibatch of ``images`` (uint8 NHWC) and ``labels``. ``transform``
    (per image, e.g. a resize) is applied to the drawn minibatch only, not to every image."""

    def __init__(self, space: Any, images: np.ndarray, labels: np.ndarray, num_classes: int,
                 batch_size: int = BATCH_SIZE, seed: int = 0, device: str = "cpu",
                 transform: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        import torch

        from hwnas.evaluators.training import DeviceData

        if len(labels) < 2 * batch_size:
            raise ZeroCostError(f"{len(labels)} images are fewer than the {2 * batch_size} zero-cost scoring draws "
                                f"(two batches of {batch_size})")
        self.space, self.num_classes, self.seed, self.batch_size = space, num_classes, seed, batch_size
        self.device = torch.device(device)
        ix = np.random.default_rng(seed).choice(len(labels), size=2 * batch_size, replace=False)
        drawn = images[ix] if transform is None else transform(images[ix])
        data = DeviceData(drawn, labels[ix], self.device)
        # channels_last, as the proxy trainer: the same values, the convolutions faster on CPU
        self.x, self.y = data.plain(0, 2 * batch_size).contiguous(memory_format=torch.channels_last), data.y
        self.resolution = int(drawn.shape[1])

    def build(self, arch: Any) -> Any:
        import torch

        torch.manual_seed(self.seed)
        net = self.space.build(arch, num_classes=self.num_classes, input_size=self.resolution)
        return net.to(self.device, memory_format=torch.channels_last).train()

    def score(self, arch: Any, proxies: Sequence[str] = PROXIES) -> dict[str, float]:
        bad = [p for p in proxies if p not in PROXIES]
        if bad:
            raise ZeroCostError(f"unknown zero-cost proxy {bad[0]!r} (choose from {', '.join(PROXIES)})")
        out: dict[str, float] = {}
        want = set(proxies)
        for group, members in _GROUPS.items():
            if want & set(members):
                out |= _GROUPED[group](self.build(arch), self.x, self.y, self.batch_size, want & set(members))
        for p, fn in _SINGLE.items():
            if p in want:
                out[p] = float(fn(self.build(arch), self.x, self.y, self.batch_size, self.seed))
        if "flops" in want:
            out["flops"] = float(self.space.flops(arch, self.resolution, self.num_classes))
        if "params" in want:
            out["params"] = float(self.space.params(arch, self.num_classes))
        return {p: out[p] for p in proxies}


def cost_groups(proxies: Sequence[str]) -> list[tuple[str, ...]]:
    """``proxies`` in the groups that share their passes over one network (each group's cost is one figure)."""
    want, out = list(proxies), []
    for members in _GROUPS.values():
        got = tuple(p for p in want if p in members)
        if got:
            out.append(got)
    return out + [(p,) for p in want if not any(p in m for m in _GROUPS.values())]


class Normalizer:
    """A zero-cost score as a search objective in (0, 1): Phi((t(s) - mean) / std), t = log for the proxies
    whose scores are positive sums spanning orders of magnitude (``LOG_SCALED``), the mean and std those of
    t over a reference sample of the space's architectures. Strictly increasing in the score, so a search
    ranks and sorts exactly as the raw score would, and bounded like an accuracy (hypervolumes, rewards and
    the 0 of an infeasible trial keep their meaning). Several proxies: the mean of their values (the vote)."""

    def __init__(self, scorer: ZeroCostScorer, reference: Sequence[Any], proxies: Sequence[str]) -> None:
        if len(reference) < 2:
            raise ZeroCostError("a zero-cost objective needs at least 2 reference architectures")
        self.scorer, self.proxies = scorer, tuple(proxies)
        ref = [scorer.score(a, self.proxies) for a in reference]
        self.stats: dict[str, tuple[float, float]] = {}
        for p in self.proxies:
            t = np.array([_t(p, r[p]) for r in ref])
            t = t[np.isfinite(t)]
            if len(t) < 2 or float(np.std(t)) == 0.0:
                why = "all equal" if len(t) >= 2 else "too few to compare"
                raise ZeroCostError(f"{p} cannot rank this space: {len(t)} of {len(ref)} random architectures get a "
                                    f"finite score, {why}")
            self.stats[p] = (float(np.mean(t)), float(np.std(t)))

    def value(self, scores: Mapping[str, float]) -> float:
        """The objective of an architecture's raw ``scores`` (a score that is not finite counts as 0)."""
        from scipy.stats import norm

        parts = []
        for p in self.proxies:
            t = _t(p, scores[p])
            mean, std = self.stats[p]
            parts.append(float(norm.cdf((t - mean) / std)) if math.isfinite(t) else 0.0)
        return float(np.mean(parts))

    def score(self, arch: Any) -> tuple[float, dict[str, float]]:
        """(objective, raw scores) of ``arch``."""
        s = self.scorer.score(arch, self.proxies)
        return self.value(s), s


LOG_SCALED: frozenset[str] = frozenset({"synflow", "snip", "grad_norm", "fisher", "flops", "params"})


def _t(proxy: str, v: float) -> float:
    if proxy in LOG_SCALED:
        return math.log(v) if v > 0 and math.isfinite(v) else float("nan")
    return v if math.isfinite(v) else float("nan")


# ------------------------------------------------------------------------------------------------ the proxies

def _weighted(net: Any) -> list[Any]:
    from torch import nn

    return [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _ce_backward(net: Any, x: Any, y: Any) -> None:
    from torch import nn

    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()


def synflow(net: Any, x: Any, y: Any, batch: int, seed: int) -> float:
    import torch
    from torch import nn

    def strip(m: nn.Module) -> None:
        for name, child in m.named_children():
            if isinstance(child, nn.BatchNorm2d | nn.ReLU | nn.ReLU6 | nn.SiLU | nn.Hardswish):
                setattr(m, name, nn.Identity())
            else:
                strip(child)

    strip(net)
    net = net.double()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    net.zero_grad()
    net(torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)).sum().backward()
    return float(sum((m.weight.detach() * m.weight.grad).abs().sum() for m in _weighted(net)
                     if m.weight.grad is not None))


def _activation_codes(net: Any, x: Any, y: Any, batch: int, want: set[str]) -> dict[str, float]:
    """naswot and jacov from one forward pass of the minibatch (and, for jacov, one backward to the input)."""
    import torch
    from torch import nn

    x = x[:batch].clone().requires_grad_("jacov" in want)
    kernel = torch.zeros(len(x), len(x), dtype=torch.float64, device=x.device)

    def hook(_m: Any, inp: tuple[Any, ...], _out: Any) -> None:
        c = (inp[0].detach().flatten(1) > 0).double()
        kernel.add_(c @ c.T + (1 - c) @ (1 - c).T)

    acts = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish)
    hs = [m.register_forward_hook(hook) for m in net.modules() if "naswot" in want and isinstance(m, acts)]
    try:
        with torch.set_grad_enabled("jacov" in want):
            out = net(x)
    finally:
        for h in hs:
            h.remove()
    got: dict[str, float] = {}
    if "naswot" in want:
        got["naswot"] = float(torch.linalg.slogdet(kernel).logabsdet)
    if "jacov" in want:
        out.sum().backward()
        jac = x.grad.detach().flatten(1).double().cpu().numpy()
        with np.errstate(all="ignore"):
            corr = np.corrcoef(jac)
            s = float("nan")
            if np.all(np.isfinite(corr)):
                v = np.linalg.eigvalsh(corr)
                s = -float(np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5)))
        got["jacov"] = s if math.isfinite(s) else float("nan")
    return got


def _gradients(net: Any, x: Any, y: Any, batch: int, want: set[str]) -> dict[str, float]:
    """snip, grad_norm, fisher and zico from the cross-entropy gradients of the minibatch's first half
    (zico: and of its second half)."""
    import torch

    mods = _weighted(net)
    acts: list[Any] = []

    def hook(_m: Any, _inp: Any, out: Any) -> None:
        if out.requires_grad:
            out.retain_grad()
            acts.append(out)

    hs = [m.register_forward_hook(hook) for m in mods] if "fisher" in want else []
    try:
        _ce_backward(net, x[:batch], y[:batch])
    finally:
        for h in hs:
            h.remove()
    have = [m for m in mods if m.weight.grad is not None]
    got: dict[str, float] = {}
    if "snip" in want:
        got["snip"] = float(sum((m.weight.detach() * m.weight.grad).abs().sum() for m in have))
    if "grad_norm" in want:
        got["grad_norm"] = float(sum(m.weight.grad.norm() for m in have))
    if "fisher" in want:
        total = 0.0
        for a in acts:
            if a.grad is not None:
                g = a.detach() * a.grad
                g = g.sum(dim=tuple(range(2, g.dim()))) if g.dim() > 2 else g
                total += float(g.pow(2).mean(0).mul(0.5).sum())
        got["fisher"] = total
        acts.clear()
    if "zico" in want:
        first = [m.weight.grad.detach().flatten().double().clone() for m in have]
        _ce_backward(net, x[batch:2 * batch], y[batch:2 * batch])
        total = 0.0
        for m, g1 in zip(have, first, strict=True):
            if m.weight.grad is None:
                continue
            stack = torch.stack([g1, m.weight.grad.detach().flatten().double()])
            std, mean_abs = stack.std(0, correction=0), stack.abs().mean(0)
            keep = std > 0
            s = float((mean_abs[keep] / std[keep]).sum())
            if s > 0:
                total += math.log(s)
        got["zico"] = total
    return got


def grasp(net: Any, x: Any, y: Any, batch: int, seed: int) -> float:
    import torch
    from torch import nn

    ws = [m.weight for m in _weighted(net)]
    x, y = x[:batch], y[:batch]
    g = torch.autograd.grad(nn.functional.cross_entropy(net(x), y), ws, allow_unused=True)
    net.zero_grad()
    gf = torch.autograd.grad(nn.functional.cross_entropy(net(x), y), ws, create_graph=True, allow_unused=True)
    z = sum((a.detach() * b).sum() for a, b in zip(g, gf, strict=True) if a is not None and b is not None)
    if not isinstance(z, torch.Tensor):
        return 0.0
    z.backward()
    return float(sum((-w.detach() * w.grad).sum() for w in ws if w.grad is not None))


def zen(net: Any, x: Any, y: Any, batch: int, seed: int) -> float:
    import torch
    from torch import nn

    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
    pools = [m for m in net.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not pools:
        return float("nan")
    feats: list[Any] = []
    bn_log: list[float] = []
    record = [True]

    def pre_gap(_m: Any, inp: tuple[Any, ...]) -> None:
        feats.append(inp[0].detach())

    def bn_var(_m: Any, inp: tuple[Any, ...]) -> None:
        if record[0]:
            v = float(inp[0].detach().double().var(dim=(0, 2, 3), correction=0).mean())
            if v > 0:  # a BN whose input is all zero (after an NB201 `none` edge) carries no signal: left out
                bn_log.append(0.5 * math.log(v))

    hs = [pools[-1].register_forward_pre_hook(pre_gap)]
    hs += [m.register_forward_pre_hook(bn_var) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    shape = (batch, *x.shape[1:])
    a = torch.randn(shape, generator=gen).to(x.device)
    b = torch.randn(shape, generator=gen).to(x.device)
    try:
        with torch.no_grad():
            net(a)
            record[0] = False
            net(a + 0.01 * b)
    finally:
        for h in hs:
            h.remove()
    delta = float((feats[0] - feats[1]).abs().sum(dim=tuple(range(1, feats[0].dim()))).mean())
    s = (math.log(delta) if delta > 0 else float("-inf")) + sum(bn_log)
    return s if math.isfinite(s) else float("nan")


# proxies computed from the same passes over one network (the same definitions, fewer passes)
_GROUPS: dict[str, tuple[str, ...]] = {"codes": ("naswot", "jacov"), "grads": ("snip", "grad_norm", "fisher", "zico")}
_GROUPED: dict[str, Callable[[Any, Any, Any, int, set[str]], dict[str, float]]] = {
    "codes": _activation_codes, "grads": _gradients}
_SINGLE: dict[str, Callable[[Any, Any, Any, int, int], float]] = {"synflow": synflow, "grasp": grasp, "zen": zen}
