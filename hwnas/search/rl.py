"""A reinforcement-learning controller as an ask/tell strategy (Zoph & Le 2017, NASNet, MnasNet; the factorised
policy of NAS-Bench-201's REINFORCE baseline). torch is imported here only, when a controller is made.

The policy proposes one token per categorical dimension of the space (``space.dims``, in order):

* ``lstm``: an LSTM cell reads the embedding of the previous token (a learned start token first) and a linear
  head per dimension gives that dimension's logits, as the NAS and MnasNet controllers do;
* ``factorised``: independent logits per dimension (the NAS-Bench-201 paper's REINFORCE baseline).

Logits are divided by ``temperature`` before the softmax. Training is REINFORCE: after every ``batch`` told
samples, one Adam step on ``-(R - b) * log p(x) - entropy * H(p)`` averaged over the batch, where ``b`` is an
exponential moving average of the rewards (``baseline_decay``) taken before the batch is added to it.

Rewards (higher is better, ``tell`` receives minimisation values ``f`` and constraint values ``g``):

* one objective (accuracy alone, or the MnasNet reward of ``--reward mnas-soft|mnas-hard``): ``-f[0]``;
* several objectives (Pareto mode): a (plain, not augmented) Tchebycheff scalarisation ``1 - max_i w_i f'_i`` of the
  objectives ``f'`` normalised to [0, 1] by the range of every value told so far, with weights ``w`` drawn
  from a flat Dirichlet once per update (ParEGO's scheme): successive updates pull the policy towards
  different parts of the front, and no scale of accuracy against FLOPs or latency has to be chosen;
* a proposal that breaks a budget (``g`` > 0) gets the penalty 0, the lowest reward.

``ask`` draws up to ``max_attempts`` samples for a feasible architecture it has not been told of. Each sample
on the way is still learnt from, at no cost: an infeasible one with the penalty (so the policy moves off what
the budgets rule out), one told before with its known result (a converging policy keeps drawing its favourites:
they count as samples of the policy, but take no trial or evaluation). After ``MAX_REPEATS`` known ones in one
ask, the proposal is a new feasible architecture drawn uniformly (then learnt from like any sample): a policy
that has converged on a few architectures keeps exploring instead of proposing repeats, which would cost the
search trials without evaluations.

Everything is a deterministic function of the seed and of the sequence of asks and tells (samples are drawn
with a numpy generator from the policy's probabilities; torch runs on the CPU in float64), so a search resumed
by replaying its study into a fresh controller (``VectorSampler``) continues exactly as the uninterrupted one.
Samples the controller did not propose (enqueued seeds, other workers' trials) are learnt from like its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hwnas.spaces.base import CategoricalSpace

KINDS = ("lstm", "factorised")
# Adam's learning rate by policy, chosen on NAS-Bench-201 CIFAR-10 (3 seeds, best accuracy at 200 and 1,000
# evaluations: LSTM 0.001 / 0.003 / 0.01 -> 93.96 / 94.07 / 93.95 and 94.25 / 94.25 / 94.15; factorised 0.01 / 0.03
# -> 94.06 / 94.06 and 94.24 / 94.28; 0.1 collapses the policy within 200 evaluations)
DEFAULT_LR = {"lstm": 0.003, "factorised": 0.03}
MAX_REPEATS = 10  # draws of known architectures an ask learns from before it proposes one again


@dataclass(frozen=True)
class ControllerSettings:
    """The recipe's ``[controller]`` table (every key optional)."""

    lr: float | None = None  # Adam's learning rate; None: the kind's (``DEFAULT_LR``)
    batch: int = 4  # told samples per policy update
    entropy: float = 1e-3  # weight of the entropy bonus
    temperature: float = 1.0  # logits are divided by it
    baseline_decay: float = 0.9  # of the moving-average reward baseline
    hidden: int = 64  # LSTM size (and token embedding size)

    def check(self) -> None:
        """``ValueError`` naming the first setting out of range (or of the wrong type)."""
        rules = (("lr", 0, 10, False, "a number in (0, 10]"), ("batch", 1, 10_000, True, "an integer from 1 to 10000"),
                 ("entropy", 0, 100, False, "a number in [0, 100]"),
                 ("temperature", 0.01, 100, False, "a number in [0.01, 100]"),
                 ("baseline_decay", 0, 1, False, "a number in [0, 1)"),
                 ("hidden", 1, 4096, True, "an integer from 1 to 4096"))
        for name, low, high, whole, what in rules:
            v = getattr(self, name)
            if name == "lr" and v is None:
                continue
            ok = not isinstance(v, bool) and isinstance(v, int if whole else int | float) and low <= v <= high
            if ok and ((name == "lr" and v == 0) or (name == "baseline_decay" and v == 1)):  # open ends
                ok = False
            if not ok:
                raise ValueError(f"[controller] {name} must be {what}, got {v!r}"[:200])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Controller:
    """REINFORCE over an autoregressive (``lstm``) or factorised policy; see the module docstring."""

    def __init__(self, space: CategoricalSpace, seed: int, feasible: Callable[[np.ndarray], bool],
                 kind: str = "lstm", settings: ControllerSettings | None = None, n_obj: int = 1,
                 max_attempts: int = 100) -> None:
        import torch

        if kind not in KINDS:
            raise ValueError(f"unknown controller {kind!r} (choose from {', '.join(KINDS)})")
        self.settings = settings or ControllerSettings()
        self.settings.check()
        self.space, self.feasible, self.kind, self.n_obj = space, feasible, kind, n_obj
        self.sizes = [len(opts) for _, opts in space.dims]
        self.rng = np.random.default_rng(seed)
        self.max_attempts = max_attempts
        gen = torch.Generator().manual_seed(int(seed))
        h = self.settings.hidden

        def init(*shape: int) -> Any:
            return torch.nn.Parameter((torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * 0.1)

        if kind == "factorised":  # uniform at the start, as in NAS-Bench-201's baseline
            self.params = [torch.nn.Parameter(torch.zeros(n, dtype=torch.float64)) for n in self.sizes]
        else:
            self.cell = torch.nn.LSTMCell(h, h).double()
            with torch.no_grad():
                for p in self.cell.parameters():
                    p.copy_(init(*p.shape))
            self.start = init(h)
            self.embed = [init(n, h) for n in self.sizes]
            self.heads = [(init(n, h), init(n)) for n in self.sizes]
            self.params = [*self.cell.parameters(), self.start, *self.embed, *[w for pair in self.heads for w in pair]]
        self.opt = torch.optim.Adam(self.params, lr=self.settings.lr or DEFAULT_LR[kind])
        self.buffer: list[tuple[np.ndarray, np.ndarray, float]] = []  # (x, f, penalty-or-nan) awaiting an update
        self.baseline: float | None = None
        self.f_low: np.ndarray | None = None  # range of the objectives told so far (Pareto mode)
        self.f_high: np.ndarray | None = None
        self.history: list[dict[str, float]] = []  # per update: mean reward, baseline, entropy, told samples
        self.known: dict[bytes, np.ndarray | None] = {}  # told architectures: their objectives (None: infeasible)

    # ---- the policy ---------------------------------------------------------------------------------------
    def _logits(self, x: np.ndarray | None) -> tuple[list[Any], np.ndarray | None]:
        """Each dimension's temperature-scaled logits along ``x`` (teacher-forced), or, with ``x`` None, along a
        sample drawn with ``self.rng`` (returned too)."""
        t = self.settings.temperature
        if self.kind == "factorised":
            logits = [p / t for p in self.params]
            if x is None:
                x = np.array([self._draw(lg) for lg in logits], dtype=np.int64)
            return logits, x
        out, drawn = [], []
        inp, state = self.start.unsqueeze(0), None
        for i, (w, b) in enumerate(self.heads):
            state = self.cell(inp, state)
            lg = (state[0][0] @ w.T + b) / t
            out.append(lg)
            k = int(x[i]) if x is not None else self._draw(lg)
            drawn.append(k)
            inp = self.embed[i][k].unsqueeze(0)
        return out, (x if x is not None else np.array(drawn, dtype=np.int64))

    def _log_prob_entropy(self, xs: Any) -> tuple[Any, Any]:
        """log p(x) and the policy's entropy along each row of ``xs`` (teacher-forced), batched."""
        import torch

        t, n = self.settings.temperature, xs.shape[0]
        logp = torch.zeros(n, dtype=torch.float64)
        ent = torch.zeros(n, dtype=torch.float64)
        inp, state = (self.start.expand(n, -1) if self.kind == "lstm" else None), None
        for i in range(len(self.sizes)):
            if self.kind == "factorised":
                lg = (self.params[i] / t).expand(n, -1)
            else:
                w, b = self.heads[i]
                state = self.cell(inp, state)
                lg = (state[0] @ w.T + b) / t
                inp = self.embed[i][xs[:, i]]
            lsm = torch.log_softmax(lg, 1)
            logp = logp + lsm.gather(1, xs[:, i:i + 1]).squeeze(1)
            ent = ent - (lsm.exp() * lsm).sum(1)
        return logp, ent

    def _draw(self, logits: Any) -> int:
        """A token from softmax(``logits``) with the numpy generator (the same draw on every machine)."""
        import torch

        p = torch.softmax(logits.detach(), 0).numpy()
        return int(min(np.searchsorted(np.cumsum(p), self.rng.random() * p.sum(), side="right"), len(p) - 1))

    def probabilities(self) -> list[np.ndarray]:
        """Each dimension's choice probabilities (``lstm``: along the most likely path), for reports and tests."""
        import torch

        with torch.no_grad():
            if self.kind == "factorised":
                return [torch.softmax(lg, 0).numpy() for lg in self._logits(np.zeros(len(self.sizes)))[0]]
            x: list[int] = []
            probs = []
            for i in range(len(self.sizes)):
                lg, _ = self._logits(np.array([*x, *([0] * (len(self.sizes) - i))], dtype=np.int64))
                p = torch.softmax(lg[i], 0).numpy()
                probs.append(p)
                x.append(int(np.argmax(p)))
            return probs

    # ---- ask / tell -----------------------------------------------------------------------------------------
    def ask(self) -> np.ndarray:
        import torch

        x = None
        repeats = 0
        for _ in range(self.max_attempts):
            with torch.no_grad():
                _, x = self._logits(None)
            assert x is not None
            key = x.tobytes()
            if key in self.known:  # told before: a sample whose reward is known, learnt from again at no cost
                self._learn(x, self.known[key], penalty=None if self.known[key] is not None else 0.0)
                repeats += 1
                if repeats >= MAX_REPEATS:  # a policy this sure of itself: a new architecture, drawn uniformly
                    return self._explore(x)
                continue
            if self.feasible(x):
                return x
            self._learn(x, None, penalty=0.0)  # ruled out by a budget: the lowest reward, never evaluated
        assert x is not None
        return x  # nothing new and feasible in ``max_attempts``: proposed anyway (priced, or a known repeat)

    def _explore(self, fallback: np.ndarray) -> np.ndarray:
        """A feasible architecture not told of yet, uniformly at random (bounded); ``fallback`` if none is found."""
        for _ in range(self.max_attempts):
            x = self.space.sample(self.rng)
            if x.tobytes() not in self.known and self.feasible(x):
                return x
        return fallback

    def tell(self, x: np.ndarray, f: Sequence[float], g: Sequence[float]) -> None:
        x = np.asarray(x, dtype=np.int64)
        if any(v > 0 for v in g):
            self.known[x.tobytes()] = None
            self._learn(x, None, penalty=0.0)
        else:
            self.known[x.tobytes()] = np.asarray(f, dtype=float)
            self._learn(x, self.known[x.tobytes()], penalty=None)

    def _learn(self, x: np.ndarray, f: np.ndarray | None, penalty: float | None) -> None:
        if f is not None:
            self.f_low = f.copy() if self.f_low is None else np.minimum(self.f_low, f)
            self.f_high = f.copy() if self.f_high is None else np.maximum(self.f_high, f)
        self.buffer.append((x, f if f is not None else np.full(self.n_obj, np.nan),
                            float("nan") if penalty is None else penalty))
        if len(self.buffer) >= self.settings.batch:
            self._update()

    def _rewards(self) -> np.ndarray:
        penalties = np.array([p for _, _, p in self.buffer])
        fs = np.array([f for _, f, _ in self.buffer])
        if self.n_obj == 1:
            r = -fs[:, 0]
        else:
            w = self.rng.dirichlet(np.ones(self.n_obj))  # this update's direction on the front
            if self.f_low is None or self.f_high is None:  # nothing feasible told yet: penalties only
                return penalties
            span = np.where(self.f_high > self.f_low, self.f_high - self.f_low, 1.0)
            r = 1.0 - np.max(w * (fs - self.f_low) / span, axis=1)
        return np.where(np.isnan(penalties), r, penalties)

    def _update(self) -> None:
        import torch

        rewards = self._rewards()
        if self.baseline is None:
            self.baseline = float(rewards.mean())
        xs = torch.as_tensor(np.stack([x for x, _, _ in self.buffer]))  # (batch, dims), one pass for all
        logp_t, ent_t = self._log_prob_entropy(xs)
        adv = torch.tensor(rewards - self.baseline, dtype=torch.float64)
        loss = -(adv * logp_t).mean() - self.settings.entropy * ent_t.mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        d = self.settings.baseline_decay
        for r in rewards:  # the baseline moves after the update it served
            self.baseline = d * self.baseline + (1 - d) * float(r)
        self.history.append({"reward": float(rewards.mean()), "baseline": float(self.baseline),
                             "entropy": float(ent_t.mean().detach()), "samples": float(len(rewards))})
        self.buffer = []
