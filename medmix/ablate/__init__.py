"""`medmix ablate`: what each source of a mixture contributes, and better weights.

The normalize cache is content-keyed, so a mixture with other weights (or without a source) re-runs
only the mix stage; this package turns that into leave-one-out and RegMix-style ablations with small
proxy models from the bundled trainer. Modules, one job each:

  variants   the plan: which weight vectors, written as recipe files
  holdout    held-out evaluation rows, and each variant's token-budgeted training subset
  proxy      proxy training runs (one tokenizer, same steps, seed and schedule for every variant)
  evaluate   per-row answer-token loss of a trained proxy on the held-out rows
  analyze    loo contributions with bootstrap intervals; ridge regression and weight search
  report     report.md, plots, suggested.yaml
  runner     the units (build, subset, train, eval) with completion markers, local
  distributed  the same units as Ray tasks (`--executor ray`)
  view       `medmix view` of an ablation folder; cli: the `medmix ablate` command
"""
