"""Evaluators: where a candidate's accuracy comes from.

=====================  ===================================================================================
``training``           proxy training on real images (CUDA, CPU fallback): ``Evaluator``, ``EvaluatorPool``
                       (also importable as ``hwnas.train``)
``tabular``            published accuracies of a tabular benchmark (NAS-Bench-201, NAS-Bench-Macro,
                       TransNAS-Bench-101 micro): ``TabularEvaluator``
``zero_cost``          zero-cost proxies of an untrained network from one minibatch (synflow, NASWOT, jacov,
                       snip, grad_norm, GRASP, Fisher, ZiCo, Zen-score): ``ZeroCostScorer``, ``Normalizer``
=====================  ===================================================================================

An evaluator maps an architecture of its space to an ``hwnas.search.run.EvalResult``; the search loop
never trains or looks up anything itself.
"""
