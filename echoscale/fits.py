"""Fitting the two scaling laws to loss points, robustly on few points.

* the data law of one network size, ``L(D) = E + B * D**(-beta)``;
* the joint law of all sizes, ``L(N, D) = E + A * N**(-alpha) + B * D**(-beta)``.

Every fit returns a :class:`FitResult`, which says ``success=False`` with a plain reason
instead of raising when the data cannot support the law. :mod:`echoscale.laws` builds
the bootstrap, the backtest and the transfer on top of these fits.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats

DATA_PARAMS = ("E", "B", "beta")
JOINT_PARAMS = ("E", "A", "alpha", "B", "beta")
EXPONENT_MAX = 3.0
# (coefficient, exponent, variable) of each power-law term.
_TERMS = {
    "data": (("B", "beta", "D"),),
    "joint": (("A", "alpha", "N"), ("B", "beta", "D")),
}
_EXPONENTS = ("alpha", "beta")
# Start grids over each exponent (the joint law takes all 20 x 20 pairs).
_GRID = {
    "data": np.geomspace(0.01, EXPONENT_MAX, 60),
    "joint": np.geomspace(0.01, 3, 20),
}
_MAX_STARTS = {"data": 2, "joint": 3}
_TOL = 1e-12  # ftol, xtol (and gtol) of the solvers, on an objective rescaled to ~1
_CONVERGED = 1e-8  # most that one more Gauss-Newton step may lower the cost, relatively


@dataclass
class FitResult:
    """The outcome of one scaling-law fit; falsy when the fit failed.

    Attributes
    ----------
    model : {"data", "joint"}
        ``"data"``: ``L(D) = E + B * D**(-beta)``; ``"joint"``:
        ``L(N, D) = E + A * N**(-alpha) + B * D**(-beta)``.
    params : dict of str to float
        E, B, A in loss units (B and A times D**beta and N**alpha) and the exponents
        beta, alpha; fixed ones included. nan where the fit was not attempted; a
        failed attempt keeps its numbers for inspection (``predict`` gives nan).
    stderr : dict of str to float
        Standard errors from the ``curve_fit`` covariance (delta method for B and
        A); nan for fixed parameters, parameters on a bound, and without residual
        degrees of freedom.
    success : bool
        Whether the data determine the law and the optimiser converged.
    message : str
        The solver's message, or the plain reason the fit failed.
    rms : float
        Root-mean-square residual in loss units.
    n_points : int
        Points used, after dropping non-finite ones.
    active_bounds : list of str
        Parameters sitting on a bound.
    flags : list of str
        Warnings, some of which fail the fit ("losses rise with D") and some not
        ("beta at upper bound").
    diagnostics : dict of str to float
        ``cost`` (sum or mean of squared log residuals), ``predicted_decrease``
        (relative cost decrease one more Gauss-Newton step promises),
        ``cost_change`` (relative change made by a restart; nan without one),
        ``grad_norm`` (projected, of the rescaled objective), ``n_starts``,
        ``n_restarts``, ``nfev``, ``bounded_solver`` (1 if TRF with bounds was
        needed), ``dof``.
    fixed : list of str
        Parameters held at given values rather than fitted.
    """

    model: str
    params: dict[str, float]
    stderr: dict[str, float]
    success: bool
    message: str
    rms: float = math.nan
    n_points: int = 0
    active_bounds: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    diagnostics: dict[str, float] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.success

    def predict(self, D: Any, N: Any = None) -> np.ndarray:
        """Return the law's loss at data sizes ``D`` (and parameter counts ``N``).

        Parameters
        ----------
        D : array_like
            Training-set sizes, in the unit the law was fitted in.
        N : array_like, optional
            Parameter counts, broadcast against ``D``; required by the joint law.

        Returns
        -------
        ndarray
            Predicted losses; all nan when the fit failed.
        """
        p = self.params
        with np.errstate(all="ignore"):
            out = p["E"] + p["B"] * np.asarray(D, dtype=float) ** -p["beta"]
            if self.model == "joint":
                if N is None:
                    raise ValueError("the joint law needs N (parameters) as well as D")
                out = out + p["A"] * np.asarray(N, dtype=float) ** -p["alpha"]
        out = np.asarray(out, dtype=float)
        return out if self.success else np.full(out.shape, np.nan)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (nan and inf become None)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FitResult:
        """Rebuild a result from :meth:`to_dict` output (None becomes nan)."""
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        for name in ("params", "stderr", "diagnostics"):
            kw[name] = {k: _float(v) for k, v in (kw.get(name) or {}).items()}
        kw["rms"] = _float(kw.get("rms"))
        return cls(**kw)


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars and arrays to plain Python; nan and inf to None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


# ------------------------------------------------------------------ fitting engine


def _nnls_batch(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Solve ``min ||X c - y||, c >= 0`` for a stack of small problems at once.

    ``X`` has shape (G, n, k) with k <= 3, ``y`` shape (G, n). The non-negative
    solution is the least-squares solution on its support, so trying every support
    (2**k - 1 of them) and keeping the best feasible one is exact: the answer of
    ``scipy.optimize.nnls``, for hundreds of grid points in a few numpy calls.
    """
    G, _, k = X.shape
    gram = np.einsum("gni,gnj->gij", X, X)
    xty = np.einsum("gni,gn->gi", X, y)
    best, best_rss = np.zeros((G, k)), np.einsum("gn,gn->g", y, y)
    for size in range(1, k + 1):
        for cols in itertools.combinations(range(k), size):
            ix = np.array(cols)
            c = np.einsum(
                "gij,gj->gi", np.linalg.pinv(gram[:, ix[:, None], ix]), xty[:, ix]
            )
            r = y - np.einsum("gni,gi->gn", X[:, :, ix], c)
            rss = np.einsum("gn,gn->g", r, r)
            ok = np.all(c >= 0, axis=1) & (rss < best_rss)
            best[ok] = 0.0
            best[np.ix_(ok, ix)] = c[ok]
            best_rss = np.where(ok, rss, best_rss)
    return best


class _Problem:
    """One law on one set of points, in the parameters the optimiser sees.

    A free coefficient is carried as its term's level at the geometric mean of the
    variable, ``c = B * D_ref**(-beta)``: in loss units like E, and far less
    correlated with the exponent than B, which keeps the Jacobian well scaled.
    """

    def __init__(self, model: str, X: dict[str, np.ndarray], L: np.ndarray, fixed):
        self.model, self.fixed, self.L, self.y = model, fixed, L, np.log(L)
        self.names = DATA_PARAMS if model == "data" else JOINT_PARAMS
        self.free = [n for n in self.names if n not in fixed]
        self.col = {n: i for i, n in enumerate(self.free)}
        self.terms = []
        for coef, expo, var in _TERMS[model]:
            lx = np.log(X[var])
            self.terms.append((coef, expo, lx, float(lx.mean())))
        self.lower = np.zeros(len(self.free))
        self.upper = np.array(
            [EXPONENT_MAX if n in _EXPONENTS else np.inf for n in self.free]
        )

    def value(self, name: str, theta: np.ndarray) -> Any:
        return theta[..., self.col[name]] if name in self.col else self.fixed[name]

    def model_and_jac(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the modelled losses, shape (n,), and their Jacobian, (n, p)."""
        f = np.full(self.L.shape, float(self.value("E", theta)))
        J = np.zeros((self.L.size, len(self.free)))
        if "E" in self.col:
            J[:, self.col["E"]] = 1.0
        for coef, expo, lx, lref in self.terms:
            # A fixed coefficient is in public units; a free one is a level at ref.
            u = lx - lref if coef in self.col else lx
            basis = np.exp(-self.value(expo, theta) * u)
            term = self.value(coef, theta) * basis
            if coef in self.col:
                J[:, self.col[coef]] = basis
            if expo in self.col:
                J[:, self.col[expo]] = -u * term
            f = f + term
        return f, J

    def public(self, theta: np.ndarray) -> dict[str, float]:
        out = {n: float(self.value(n, theta)) for n in self.names}
        for coef, expo, _, lref in self.terms:
            if coef in self.col:
                out[coef] *= math.exp(out[expo] * lref)
        return out

    def internal(self, params: Mapping[str, float]) -> np.ndarray:
        """The optimiser's parameters for public ``params``."""
        theta = np.array([float(params[n]) for n in self.free])
        for coef, expo, _, lref in self.terms:
            if coef in self.col:
                theta[self.col[coef]] *= math.exp(-float(params[expo]) * lref)
        return np.clip(theta, self.lower, self.upper)

    def public_stderr(self, theta: np.ndarray, cov: np.ndarray) -> dict[str, float]:
        """Standard errors of the public parameters, by the delta method."""
        G, pub = np.eye(len(self.free)), self.public(theta)
        for coef, expo, _, lref in self.terms:
            if coef in self.col:
                G[self.col[coef], self.col[coef]] = math.exp(pub[expo] * lref)
                if expo in self.col:
                    G[self.col[coef], self.col[expo]] = pub[coef] * lref
        with np.errstate(invalid="ignore"):
            var = np.diag(G @ cov @ G.T)
        se = dict.fromkeys(self.names, math.nan)
        for n, v in zip(self.free, var, strict=True):
            se[n] = math.sqrt(v) if np.isfinite(v) and v >= 0 else math.nan
        return se

    def starts(self) -> list[np.ndarray]:
        """Local minima of a grid over the exponents, levels by weighted NNLS."""
        exps = [e for _, e, _, _ in self.terms if e in self.col]
        mesh = np.meshgrid(*([_GRID[self.model]] * len(exps)), indexing="ij")
        shape = mesh[0].shape if exps else (1,)
        theta = np.zeros((int(np.prod(shape)), len(self.free)))
        for e, m in zip(exps, mesh, strict=True):
            theta[:, self.col[e]] = m.ravel()

        # For fixed exponents the law is linear in its levels: fit those by NNLS
        # on residuals relative to L, the linearisation of the log-space objective.
        target = np.tile(self.L, (theta.shape[0], 1))
        cols = [np.ones_like(target)] if "E" in self.col else []
        target -= 0.0 if "E" in self.col else self.fixed["E"]
        for coef, expo, lx, lref in self.terms:
            g = np.reshape(self.value(expo, theta), (-1, 1))
            if coef in self.col:
                cols.append(np.exp(-g * (lx - lref)) * np.ones_like(target))
            else:
                target -= self.fixed[coef] * np.exp(-g * lx)
        f = self.L - target  # the fixed terms
        if cols:
            X = np.stack(cols, axis=2)
            c = _nnls_batch(X / self.L[:, None], target / self.L)
            theta[:, [self.col[n] for n in self.free if n not in _EXPONENTS]] = c
            f = f + np.einsum("gnk,gk->gn", X, c)
        with np.errstate(all="ignore"):
            cost = np.sum((self.y - np.log(f)) ** 2, axis=1)
        cost = np.where(np.isfinite(cost), cost, np.inf).reshape(shape)

        padded = np.pad(cost, 1, constant_values=np.inf)
        is_min = np.ones(shape, dtype=bool)
        for shift in itertools.product((-1, 0, 1), repeat=cost.ndim):
            window = tuple(
                slice(1 + s, 1 + s + n) for s, n in zip(shift, shape, strict=True)
            )
            is_min &= cost <= padded[window]
        order = [i for i in np.argsort(cost, axis=None) if is_min.flat[i]]
        order = [i for i in order if np.isfinite(cost.flat[i])] or [0]
        return [theta[i] for i in order[: _MAX_STARTS[self.model]]]

    def refine(self, theta0: np.ndarray, objective: str) -> dict[str, Any]:
        """Least squares on log L from ``theta0`` (``curve_fit``), then checks."""
        n = self.L.size
        weight = 1.0 if objective == "sum" else 1.0 / math.sqrt(n)
        with np.errstate(all="ignore"):
            r0 = (self.y - np.log(self.model_and_jac(theta0)[0])) * weight
        # Rescale the objective to unit size at the start, so that the solvers'
        # tolerances mean the same whether squares are summed or averaged and
        # however small the losses (Besiroglu et al. 2024).
        scale = math.sqrt(np.mean(r0**2)) if np.all(np.isfinite(r0)) else weight
        sigma = np.full(n, max(scale, 1e-12 * weight) / weight)

        def func(_x, *theta):
            return np.log(self.model_and_jac(np.asarray(theta))[0])

        def jac(_x, *theta):
            f, J = self.model_and_jac(np.asarray(theta))
            return J / f[:, None]

        x0 = np.clip(theta0, self.lower, self.upper)
        kw = {"p0": x0, "sigma": sigma, "jac": jac, "full_output": True, "ftol": _TOL}
        # Unbounded Levenberg-Marquardt first (MINPACK, ~10 times faster than TRF
        # here): a minimum it finds inside the bounds is the bounded minimum too.
        # If it leaves them, a bound binds, and TRF solves with the bounds.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # covariance warnings; handled below
            try:
                popt, pcov, info, mesg, _ = optimize.curve_fit(
                    func, None, self.y, method="lm", xtol=_TOL, gtol=0.0, **kw
                )
                f = self.model_and_jac(popt)[0]
                inside = np.all((popt >= self.lower) & (popt <= self.upper))
                bounded = not (inside and np.all(f > 0))
            except (RuntimeError, ValueError, np.linalg.LinAlgError):
                bounded = True
            if bounded:
                bounds = (self.lower, self.upper)
                kw.update(xtol=_TOL, gtol=_TOL, max_nfev=200 * len(x0))
                popt, pcov, info, mesg, _ = optimize.curve_fit(
                    func, None, self.y, method="trf", bounds=bounds, **kw
                )

        # Convergence check: the decrease one more Gauss-Newton step on the free
        # parameters promises, and the gradient projected on the bounds.
        f, J = self.model_and_jac(popt)
        r = (self.y - np.log(f)) / sigma
        Jr = -J / (f * sigma)[:, None]
        g = Jr.T @ r
        at_lo, at_hi = self.at_bounds(popt)
        free = ~((at_lo & (g > 0)) | (at_hi & (g < 0)))
        cost = 0.5 * float(r @ r)
        decrease = 0.0
        if free.any() and cost > 0:
            step = np.linalg.lstsq(Jr[:, free], -r, rcond=None)[0]
            decrease = 0.5 * float(np.sum((Jr[:, free] @ step) ** 2)) / cost
        return {
            "theta": popt,
            "pcov": pcov,
            "message": " ".join(str(mesg).split()),
            "nfev": int(info["nfev"]),
            "sse": float(np.sum((self.y - np.log(f)) ** 2)),
            "predicted_decrease": decrease,
            "grad_norm": float(np.max(np.abs(g[free]), initial=0.0)),
            "bounded_solver": float(bounded),
        }

    def at_bounds(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scale = np.array([1.0 if n in _EXPONENTS else self.L.max() for n in self.free])
        return theta - self.lower <= 1e-6 * scale, self.upper - theta <= 1e-6 * scale


def _check_fixed(fixed: Mapping[str, float] | None, names: Sequence[str]) -> dict:
    fixed = {k: float(v) for k, v in (fixed or {}).items()}
    for name, value in fixed.items():
        if name not in names:
            raise ValueError(
                f"fixed: unknown parameter {name!r}; expected one of {names}"
            )
        hi = EXPONENT_MAX if name in _EXPONENTS else math.inf
        if not (0 < value <= hi or (name == "E" and value == 0)):
            raise ValueError(f"fixed: {name} = {value} is outside its bounds")
    if len(fixed) == len(names):
        raise ValueError("fixed: every parameter is fixed; there is nothing to fit")
    return fixed


@functools.lru_cache(maxsize=256)
def _t_limit(dof: int) -> float:
    """Two-sided 5% critical value of Student's t."""
    return float(stats.t.ppf(0.975, dof))


def _trend_t(Z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """t statistics of the slopes of ``y`` regressed on the columns of ``Z``."""
    X = np.column_stack([np.ones(len(y)), Z])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    r = y - X @ coef
    s2 = float(r @ r) / (len(y) - X.shape[1])
    se = np.sqrt(np.maximum(np.diag(s2 * np.linalg.pinv(X.T @ X))[1:], 0.0))
    if np.ptp(y) <= 1e-12 * max(1.0, float(np.abs(y).max())):
        return np.zeros(Z.shape[1])
    with np.errstate(all="ignore"):
        return np.where(se > 0, coef[1:] / se, np.sign(coef[1:]) * np.inf)


def _screen(
    model: str, X: Mapping[str, np.ndarray], L: np.ndarray, free: list, flags: list
) -> tuple[str, str] | None:
    """Apply the data rules; return (reason, flag) when the law cannot be fitted."""
    n = L.size
    if n < len(free):
        return (
            f"needs at least {len(free)} points, got {n}",
            f"fewer than {len(free)} points",
        )
    # Each term needs one more distinct value of its variable than it has free
    # parameters (the level E takes the last one); the data law needs one per
    # free parameter.
    for coef, expo, var in _TERMS[model]:
        k = (coef in free) + (expo in free)
        need = len(free) if model == "data" else k + 1
        got = len(np.unique(X[var]))
        if k and got < need:
            reason = f"needs at least {need} distinct {var}, got {got}"
            if model == "joint":
                reason += f"; {' and '.join(p for p in (coef, expo) if p in free)}"
                reason += " cannot be identified"
            if got == 1:
                reason += f" (every point at {var} = {X[var][0]:g})"
            return reason, f"fewer than {need} distinct {var}"
    # Losses must fall with D (and N): t test of the slope of log L on log D.
    axes = [t for t in _TERMS[model] if t[0] in free or t[1] in free]
    if not axes or n <= len(axes) + 1:
        return None
    tstat = _trend_t(np.column_stack([np.log(X[v]) for *_, v in axes]), np.log(L))
    crit = _t_limit(n - len(axes) - 1)
    for (_, expo, var), t in zip(axes, tstat, strict=True):
        how = f"slope of log L on log {var}: t = {t:.3g}, 95% limit {crit:.3g}"
        if t > crit:
            return f"losses rise with {var} ({how})", f"losses rise with {var}"
        if not t < -crit:
            flags.append(f"flat losses in {var}")
            if expo in free:
                reason = (
                    f"losses are flat in {var} ({how}); {expo} cannot be identified"
                )
                return reason, f"{expo} unidentifiable"
    return None


def _fit(
    model: str,
    X: Mapping[str, Any],
    L: Any,
    fixed: Mapping[str, float] | None,
    objective: str = "mean",
    start: Mapping[str, float] | None = None,
) -> FitResult:
    """Fit ``model`` to losses ``L`` at ``X`` (D, and N for the joint law).

    ``start`` (public parameters) replaces the grid: bootstrap refits start from
    the fit to the full data, whose basin they share.
    """
    names = DATA_PARAMS if model == "data" else JOINT_PARAMS
    if objective not in ("sum", "mean"):
        raise ValueError(f"objective must be 'sum' or 'mean', got {objective!r}")
    fixed = _check_fixed(fixed, names)
    free = [n for n in names if n not in fixed]
    L = np.asarray(L, dtype=float).ravel()
    X = {k: np.asarray(v, dtype=float).ravel() for k, v in X.items()}
    for k, v in X.items():
        if v.shape != L.shape:
            raise ValueError(f"{k} has {v.size} values but L has {L.size}")

    flags: list[str] = []
    ok = np.isfinite(L) & (L > 0)
    drops = [("non-finite loss", ~np.isfinite(L)), ("loss <= 0", L <= 0)]
    for k, v in X.items():
        drops.append((f"non-positive {k}", ~(np.isfinite(v) & (v > 0))))
        ok &= np.isfinite(v) & (v > 0)
    for what, bad in drops:
        if bad.any():
            count = int(bad.sum())
            flags.append(f"dropped {count} point{'s' * (count > 1)} with {what}")
    L, X = L[ok], {k: v[ok] for k, v in X.items()}
    result = FitResult(
        model=model,
        params={p: fixed.get(p, math.nan) for p in names},
        stderr=dict.fromkeys(names, math.nan),
        success=False,
        message="",
        n_points=int(L.size),
        flags=flags,
        fixed=sorted(fixed),
    )
    rejected = _screen(model, X, L, free, flags)
    if rejected:
        result.message = rejected[0]
        flags.extend(f for f in rejected[1:] if f and f not in flags)
        return result

    # Refine from the best grid starts, keep the lowest cost; restart (twice at
    # most) while one more Gauss-Newton step still promises a decrease.
    prob = _Problem(model, X, L, fixed)
    starts = prob.starts() if start is None else [prob.internal(start)]
    best, errors = None, []
    for theta0 in starts:
        try:
            fit = prob.refine(theta0, objective)
            for restart in (1, 2):
                if fit["predicted_decrease"] <= _CONVERGED:
                    break
                again = prob.refine(fit["theta"], objective)
                again["cost_change"] = (fit["sse"] - again["sse"]) / max(
                    fit["sse"], 1e-300
                )
                again["n_restarts"] = restart
                fit = again
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
            errors.append(str(exc))
            continue
        if best is None or fit["sse"] < best["sse"]:
            best = fit
    if best is None:
        result.message = f"optimiser failed from every start: {errors[0]}"
        flags.append("optimiser failed")
        return result

    theta = best["theta"]
    result.params, result.stderr = (
        prob.public(theta),
        prob.public_stderr(theta, best["pcov"]),
    )
    for name, lo, hi in zip(prob.free, *prob.at_bounds(theta), strict=True):
        if lo or hi:
            result.active_bounds.append(name)
            flags.append(f"{name} at {'lower' if lo else 'upper'} bound")
            result.stderr[name] = math.nan  # the covariance does not hold on a bound
    result.diagnostics = {
        "cost": best["sse"] if objective == "sum" else best["sse"] / L.size,
        "predicted_decrease": best["predicted_decrease"],
        "cost_change": best.get("cost_change", math.nan),
        "grad_norm": best["grad_norm"],
        "n_starts": float(len(starts)),
        "n_restarts": float(best.get("n_restarts", 0)),
        "nfev": float(best["nfev"]),
        "bounded_solver": best["bounded_solver"],
        "dof": float(L.size - len(free)),
    }
    result.success = True  # for predict(); decided below
    result.rms = float(np.sqrt(np.mean((L - result.predict(X["D"], X.get("N"))) ** 2)))
    vague = [e for e in _EXPONENTS if e in free and result.stderr[e] > result.params[e]]
    converged = best["predicted_decrease"] <= _CONVERGED or (
        abs(best.get("cost_change", math.inf)) <= _CONVERGED
    )
    if vague:
        result.message = "; ".join(
            f"{e} cannot be identified: its standard error {result.stderr[e]:.2g} "
            f"exceeds the estimate {result.params[e]:.2g}"
            for e in vague
        )
        flags.extend(f"{e} unidentifiable" for e in vague)
    elif not converged:
        result.message = (
            "optimiser did not converge: one more Gauss-Newton step would lower the "
            f"cost by {best['predicted_decrease']:.2g} of itself"
        )
        flags.append("optimiser did not converge")
    else:
        result.message = best["message"]
    result.success = not vague and converged
    return result


def fit_data_law(
    D: Any,
    L: Any,
    *,
    fixed: Mapping[str, float] | None = None,
    objective: Literal["mean", "sum"] = "mean",
) -> FitResult:
    """Fit the data scaling law of one network size to its losses.

    Parameters
    ----------
    D : array_like, shape (n,)
        Training-set size of each point (patients or images); every seed's point.
    L : array_like, shape (n,)
        Loss of each point. Non-finite and non-positive losses are dropped, with a
        flag saying how many.
    fixed : dict of str to float, optional
        Parameters held at given values (transfer keeps ``beta``).
    objective : {"mean", "sum"}
        Whether the reported cost averages or sums the squared log residuals. The
        fitted parameters do not depend on it (see Notes).

    Returns
    -------
    FitResult
        ``model="data"``; ``success`` False, with the reason in ``message``, when
        the data cannot determine the law.

    Raises
    ------
    ValueError
        For arrays of different lengths or an unknown or out-of-bounds ``fixed``.

    Notes
    -----
    The model is ``L(D) = E + B * D**(-beta)``: E >= 0 the irreducible loss, B > 0
    the scale of the reducible part (loss units times D**beta) and 0 < beta <= 3
    the data exponent.

    The fit is least squares on log L, so every point counts by its relative error
    (seed-to-seed scatter of a loss is roughly proportional to it). For fixed beta
    the model is linear in (E, B): a log-spaced grid of 60 beta from 0.01 to 3 with
    non-negative least squares on relative residuals gives the starts, and up to 2
    local minima of the grid are refined with ``scipy.optimize.curve_fit``
    (analytic Jacobian; Levenberg-Marquardt, or TRF with the bounds E, B >= 0,
    0 <= beta <= 3 when a bound binds), B being carried as the level at the
    geometric mean of D. The objective is rescaled to unit size at the start, so
    summed and averaged squares give the same iterates, and the tolerances are
    1e-12. Convergence is checked, not assumed: while one more Gauss-Newton step
    would still lower the cost by over 1e-8 of itself the fit restarts (twice at
    most), then fails as "optimiser did not converge".

    Rules, checked first: as many points and distinct D as free parameters ("needs
    at least 3 distinct D, got 2"); a significant trend of log L on log D (t test,
    5% two-sided), failing "losses rise with D" and, with beta free, "losses are
    flat in D ... beta cannot be identified" (with beta fixed, flat losses only
    raise the flag "flat losses in D"). After fitting, an exponent whose standard
    error exceeds it fails as unidentifiable; a parameter on a bound is flagged
    ("beta at upper bound") without failing.

    Examples
    --------
    >>> D = np.array([25, 50, 100, 200, 400])
    >>> fit = fit_data_law(D, 0.1 + 2.0 * D**-0.5)
    >>> fit.success, round(fit.params["beta"], 6)
    (True, 0.5)
    """
    return _fit("data", {"D": D}, L, fixed, objective)


def fit_joint_law(
    N: Any,
    D: Any,
    L: Any,
    *,
    fixed: Mapping[str, float] | None = None,
    objective: Literal["mean", "sum"] = "mean",
) -> FitResult:
    """Fit the joint scaling law in parameters and data to the losses of all sizes.

    Parameters
    ----------
    N : array_like, shape (n,)
        Parameter count of each point's network.
    D : array_like, shape (n,)
        Training-set size of each point.
    L : array_like, shape (n,)
        Loss of each point; non-finite and non-positive ones are dropped and flagged.
    fixed : dict of str to float, optional
        Parameters held at given values (transfer keeps ``alpha`` and ``beta``).
    objective : {"mean", "sum"}
        Reduction of the squared log residuals; the answer does not depend on it.

    Returns
    -------
    FitResult
        ``model="joint"``.

    Notes
    -----
    The model is ``L(N, D) = E + A * N**(-alpha) + B * D**(-beta)`` (Hoffmann et al.
    2022, approach 3): E >= 0 the irreducible loss, A, B > 0 the scales of the
    parameter- and data-limited terms, 0 < alpha, beta <= 3 their exponents. It is
    fitted as :func:`fit_data_law` is, from a 20 x 20 log grid of (alpha, beta)
    with (E, A, B) by non-negative least squares, refining up to 3 local minima of
    the grid and keeping the lowest cost. Besiroglu et al. (2024) showed that a
    poorly scaled objective stops the optimiser early; here it is rescaled before
    refining, and the decrease one more Gauss-Newton step promises is reported
    (``diagnostics["predicted_decrease"]``, with ``grad_norm``) and must be below
    1e-8 of the cost.

    Each term needs one more distinct value of its variable than it has free
    parameters: 3 distinct N for (A, alpha), 3 distinct D for (B, beta). Losses
    must fall significantly with both N and D (t tests on log L regressed on log N
    and log D), else the fit fails with the reason.
    """
    return _fit("joint", {"N": N, "D": D}, L, fixed, objective)


# ------------------------------------------------------------------ sweep points
